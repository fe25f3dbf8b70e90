-- bench/soak.lua: a fleet under steady traffic for an hour (SOAK_SECONDS),
-- and what its memory did.
--
-- One redis-server, the fake token endpoint handing out 5-minute tokens
-- (so the soak crosses a dozen refreshes), 3 nginx nodes with 2 workers
-- each (oauth2.openresty on the Redis store) and 6 plain Lua processes
-- (oauth2.client on the same store), all on loopback ports picked here.
-- Every node gets a request and every process asks for its token every
-- 0.25 s.  Printed: the answers (good, failed), token requests per token
-- life, the RSS of the nginx workers and the Lua processes and Redis's
-- used_memory at the start (after the first minute) and at the end,
-- and the error-log lines; and the same every SOAK_EVERY seconds (600)
-- between, to tell growth that levels off from a leak.
--
-- Run with `make soak` (SOAK_SECONDS=300 for a short one).

package.path = "spec/support/?.lua;lua/?.lua;" .. package.path
local build = jit and "luajit" or _VERSION:match("%d+%.%d+")
package.cpath = "build/" .. build .. "/?.so;" .. package.cpath

local core = require "oauth2.core"
local fake = require "server"
local nginx = require "nginx"
local shell = require "shell"
local redis_server = require "redis"
local fleet = require "fleet"

local SECONDS = tonumber(os.getenv("SOAK_SECONDS")) or 3600
local LIFETIME = 300
local SECRET = "soak-Secret-9f41"

nginx.build_module()
local server = fake.start()
server:reset { clients = { ["nginx-id"] = SECRET } }
server:control { expires_in = LIFETIME }
local redis = redis_server.start()
local dir = shell.temp_dir()
local nodes = {}
for i = 1, 3 do
    nodes[i] = nginx.start_test(server, SECRET, {
        OPTIONS = ('store = { url = "%s" },'):format(redis.url) })
end

-- RSS in KiB of the processes `wanted(pid, parent, command line)` picks
-- (read from /proc: no procps needed).
local function rss(wanted)
    local sizes = {}
    local _, pids = shell.run("ls /proc")
    for pid in pids:gmatch("%d+") do
        local stat = shell.read_file("/proc/" .. pid .. "/stat") or ""
        local parent = stat:match("^%d+ %b() %S (%d+)")
        local command = (shell.read_file("/proc/" .. pid .. "/cmdline") or ""):gsub("%z", " ")
        if parent and wanted(pid, parent, command) then
            local status = shell.read_file("/proc/" .. pid .. "/status") or ""
            sizes[#sizes + 1] = tonumber(status:match("VmRSS:%s*(%d+)"))
        end
    end
    return sizes
end

-- the nginx nodes' masters
local masters = {}
for _, node in ipairs(nodes) do
    masters[(shell.read_file(node.prefix .. "/logs/nginx.pid") or ""):match("%d+") or "?"] = true
end

local function sum(list)
    local total = 0
    for _, v in ipairs(list) do total = total + v end
    return total
end

local function redis_memory()
    local _, out = redis:cli("INFO memory")
    return tonumber(out:match("used_memory:(%d+)"))
end

local function snapshot()
    return {
        workers = rss(function(_, parent) return masters[parent] end),
        -- (ours: their environment names this soak's token endpoint)
        processes = rss(function(pid, _, command)
            return command:match("^%S*lua%S* spec/support/store_child%.lua loop") ~= nil
                and (shell.read_file("/proc/" .. pid .. "/environ") or ""):find(
                    "OAUTH2_SPEC_HOST=" .. server.http_url .. "%z") ~= nil
        end),
        redis = redis_memory(),
    }
end

local EVERY = tonumber(os.getenv("SOAK_EVERY")) or 600
local started = core.now()
local finish = fleet.traffic(nodes, dir, fleet.env(server, SECRET, redis.url), SECONDS, 6)
core.sleep(math.min(60, SECONDS / 4))
local samples = { { at = core.now() - started, snapshot() } }
while true do
    local left = SECONDS - (core.now() - started) - 5
    if left <= 0 then break end
    core.sleep(math.min(EVERY, left))
    samples[#samples + 1] = { at = core.now() - started, snapshot() }
end
local good, bad = finish()
local elapsed = core.now() - started
local requests = server:stats().token_requests
local log_lines = 0
for _, node in ipairs(nodes) do
    for line in node:error_log():gmatch("[^\n]+") do
        if line:match("%[warn%]") or line:match("%[error%]") or line:match("%[crit%]")
                or line:match("%[alert%]") then
            log_lines = log_lines + 1
        end
    end
    node:stop()
end
redis:stop()
server:stop()
shell.run("rm -rf " .. shell.quote(dir))

local function kib(list) return ("%d KiB (%d)"):format(sum(list), #list) end
local first, last = samples[1][1], samples[#samples][1]
print(("soak: %.0f s, 3 nginx nodes x 2 workers and 6 Lua processes on one Redis, "
    .. "%d s tokens"):format(elapsed, LIFETIME))
print("")
print(("answers: %d good, %d failed; token requests: %d over %.1f token lives; "
    .. "error.log warnings and errors: %d"):format(good, bad, requests, elapsed / LIFETIME,
    log_lines))
print("")
print("| what | at the start | at the end |")
print("| --- | --- | --- |")
print(("| nginx workers, RSS (count) | %s | %s |"):format(kib(first.workers), kib(last.workers)))
print(("| Lua processes, RSS (count) | %s | %s |"):format(kib(first.processes),
    kib(last.processes)))
print(("| Redis used_memory | %d B | %d B |"):format(first.redis or -1, last.redis or -1))
print("")
print("| seconds | nginx workers, RSS | Lua processes, RSS | Redis used_memory |")
print("| --- | --- | --- | --- |")
for _, sample in ipairs(samples) do
    local taken = sample[1]
    print(("| %.0f | %s | %s | %d B |"):format(sample.at, kib(taken.workers),
        kib(taken.processes), taken.redis or -1))
end
