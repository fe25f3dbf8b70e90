-- bench/store_traffic.lua: Redis commands a process sends per second
-- while its tokens are fresh, against the number of credentials.
--
-- One process (a node) holds N clients of N credentials on one Redis
-- (a redis-server started here on a free loopback port), each asked for
-- its token every 50 ms, tokens from a canned session (nothing leaves
-- the machine).  Measured over 12 s of steady state with look_every = 1
-- (a look a second, to be quick), reported per look_every of 4 s, the
-- default: the commands Redis counted (INFO), divided by the time, with
-- and without the versions of records (one HMGET per look for all
-- credentials, and a read of a record only when it was written).
--
-- Run with `make bench-store-traffic`.

local build = jit and "luajit" or _VERSION:match("%d+%.%d+")
package.path = "lua/?.lua;" .. package.path
package.cpath = "build/" .. build .. "/?.so;" .. package.cpath

local core = require "oauth2.core"
local oauth2 = require "oauth2"
local stores = require "oauth2.store"

local LOOK_EVERY = 1
local DEFAULT_LOOK = 4
local SECONDS = 12

local function sh(command)
    local p = io.popen(command)
    local out = p:read("*a")
    p:close()
    return out
end

local port = tonumber(sh("python3 -c 'import socket; s = socket.socket(); "
    .. "s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'"))
local dir = sh("mktemp -d"):match("%S+")
local pid = sh(("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --dir %s "
    .. ">/dev/null 2>&1 & echo $!"):format(port, dir)):match("%d+")
local function cli(args) return sh(("redis-cli -p %d %s"):format(port, args)) end
for _ = 1, 100 do
    if cli("PING"):match("PONG") then break end
    core.sleep(0.05)
end

local function commands()
    return tonumber(cli("INFO stats"):match("total_commands_processed:(%d+)"))
end

local session = {
    request = function()
        return { status = 200, headers = {},
                 body = '{"access_token":"bench-token","token_type":"Bearer","expires_in":3600}' }
    end,
}

-- Commands a second Redis saw from one process with n credentials.
local function measure(n, versions)
    cli("FLUSHALL")
    local clients = {}
    for i = 1, n do
        local store = assert(stores.redis { url = "redis://127.0.0.1:" .. port,
            look_every = LOOK_EVERY, budget = false })
        if not versions then store.changed = false end
        clients[i] = oauth2.client { client_id = ("bench-%d-%s-%d"):format(n, versions, i),
            client_secret = "bench-secret",
            session = session, retries = 0, store = store }
        assert(clients[i]:token())
    end
    -- steady state: every client past its first looks
    local stop = core.now() + 2.5 * LOOK_EVERY
    while core.now() < stop do
        for i = 1, n do clients[i]:token() end
        core.sleep(0.05)
    end
    local before, started = commands(), core.now()
    stop = started + SECONDS
    while core.now() < stop do
        for i = 1, n do assert(clients[i]:token()) end
        core.sleep(0.05)
    end
    local seen = commands() - before - 1 -- (the INFO itself)
    for i = 1, n do clients[i]:close() end
    return seen / (core.now() - started) * LOOK_EVERY / DEFAULT_LOOK
end

print(("one process, look_every %d s, %s"):format(DEFAULT_LOOK, jit and jit.version or _VERSION))
print("")
print("| credentials | commands/s: a read per credential per look | commands/s: versions, "
    .. "one HMGET per look |")
print("| --- | --- | --- |")
for _, n in ipairs { 1, 10, 100 } do
    print(("| %d | %.2f | %.2f |"):format(n, measure(n, false), measure(n, true)))
end
sh("kill " .. pid .. "; rm -rf " .. dir)
