-- spec/support/redis.lua: a real redis-server for the specs, on a free
-- loopback port, with a configuration of its own (no persistence, a
-- temporary directory).  stop() ends it; so does the end of the Lua
-- process that started it (a watcher), so a crashed run leaves nothing.

local shell = require "shell"
local nginx = require "nginx"
local core = require "oauth2.core"

local _M = {}

local Redis = {}
Redis.__index = Redis

-- Run redis-cli against this server; its exit code and output.
function Redis:cli(args)
    return shell.run("redis-cli -h 127.0.0.1 -p " .. self.port .. " " .. args)
end

-- Whether the server answers PING.
function Redis:alive()
    local code, out = self:cli("PING")
    return code == 0 and out:match("PONG") ~= nil
end

-- Stop the server (it may be started again with start_again).
function Redis:halt()
    if self.pid then
        shell.run("kill " .. self.pid .. " 2>/dev/null")
        for _ = 1, 100 do
            if not self:alive() then break end
            core.sleep(0.05)
        end
        self.pid = nil
    end
end

-- Start it again on the same port, empty.
function Redis:start_again()
    local tls = ""
    if self.tls_port then
        tls = ("--tls-port %d --tls-cert-file %s --tls-key-file %s --tls-ca-cert-file %s "
            .. "--tls-auth-clients no "):format(self.tls_port, shell.quote(self.tls.cert_file),
            shell.quote(self.tls.key_file), shell.quote(self.tls.ca_file))
    end
    local code, out = shell.run("redis-server --port " .. self.port .. " --bind 127.0.0.1 "
        .. tls .. "--save '' --appendonly no --dir " .. shell.quote(self.dir) .. " --logfile "
        .. shell.quote(self.dir .. "/redis.log") .. " >/dev/null 2>&1 & pid=$!; "
        .. shell.watchdog("$pid") .. " echo $pid")
    assert(code == 0, out)
    self.pid = out:match("%d+")
    for _ = 1, 100 do
        if self:alive() then return self end
        core.sleep(0.05)
    end
    error("redis-server did not start:\n" .. (shell.read_file(self.dir .. "/redis.log") or ""))
end

function Redis:stop()
    self:halt()
    if self.dir then
        shell.run("rm -rf " .. shell.quote(self.dir))
        self.dir = nil
    end
end

--- Start a redis-server; returns the handle with port and url.  With
-- `tls` (cert_file, key_file, ca_file: a certificate for 127.0.0.1), it
-- also speaks TLS on tls_port, at tls_url (rediss://).
function _M.start(tls)
    local port = nginx.free_port()
    local server = setmetatable({ port = port, dir = shell.temp_dir(),
                                  url = "redis://127.0.0.1:" .. port, tls = tls }, Redis)
    if tls then
        server.tls_port = nginx.free_port()
        server.tls_url = "rediss://127.0.0.1:" .. server.tls_port
    end
    return server:start_again()
end

--- A fake Redis that trickles its reply a byte at a time (spec/support/
-- trickle_server.py; `mode` nil, or "auth": a slow +OK to AUTH) on a
-- free port, its output in `dir`: the port, and said(pattern), which
-- waits (10 s at most: a busy machine) for what it says to match and
-- returns it.
function _M.trickle(dir, mode)
    local port = nginx.free_port()
    local out_file = dir .. "/trickle-" .. port .. ".out"
    local code, out = shell.run("python3 spec/support/trickle_server.py " .. port .. " "
        .. (mode or "") .. " > " .. shell.quote(out_file) .. " 2>&1 &")
    assert(code == 0, out)
    local function said(pattern)
        local text
        for _ = 1, 200 do
            text = shell.read_file(out_file) or ""
            if text:match(pattern) then break end
            core.sleep(0.05)
        end
        return text
    end
    said("ready")
    return port, said
end

return _M
