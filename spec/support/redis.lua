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
    local auth = self.auth and "-a " .. shell.quote(self.auth) .. " --no-auth-warning " or ""
    return shell.run("redis-cli -h 127.0.0.1 -p " .. self.port .. " " .. auth .. args)
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

-- Start it again on the same port, empty (with `extra`, more arguments
-- for redis-server, kept for the next start).
function Redis:start_again(extra)
    self.extra = extra or self.extra or ""
    local tls = ""
    if self.tls_port then
        tls = ("--tls-port %d --tls-cert-file %s --tls-key-file %s --tls-ca-cert-file %s "
            .. "--tls-auth-clients no "):format(self.tls_port, shell.quote(self.tls.cert_file),
            shell.quote(self.tls.key_file), shell.quote(self.tls.ca_file))
    end
    local code, out = shell.run("redis-server --port " .. self.port .. " --bind 127.0.0.1 "
        .. tls .. self.extra .. " --save '' --appendonly no --dir " .. shell.quote(self.dir)
        .. " --logfile "
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

--- A primary, its replica and two sentinels watching them as `master`
-- (quorum 1, a primary down after 1 s): { primary, replica, sentinels,
-- url (redis+sentinel://, both sentinels), stop() }.  `auth` (a
-- password) protects the data nodes.
function _M.sentinel(master, auth)
    local pass = auth and (" --requirepass %s --masterauth %s"):format(auth, auth) or ""
    local primary = setmetatable({ port = nginx.free_port(), dir = shell.temp_dir(),
                                   auth = auth }, Redis)
    primary:start_again(pass .. " --repl-diskless-sync-delay 0")
    local replica = setmetatable({ port = nginx.free_port(), dir = shell.temp_dir(),
                                   auth = auth }, Redis)
    replica:start_again(pass .. " --replicaof 127.0.0.1 " .. primary.port)
    -- its first sync is done before anything is written (and starts at
    -- once: no 5 s wait for other replicas to join it)
    local synced = false
    for _ = 1, 200 do
        local _, info = replica:cli("INFO replication")
        if info:match("master_link_status:up") then synced = true break end
        core.sleep(0.05)
    end
    assert(synced, "the replica did not sync")
    local set = { primary = primary, replica = replica, sentinels = {}, master = master }
    local hosts = {}
    for i = 1, 2 do
        local sentinel = setmetatable({ port = nginx.free_port(), dir = shell.temp_dir() }, Redis)
        local conf = sentinel.dir .. "/sentinel.conf"
        local f = assert(io.open(conf, "w"))
        f:write(("port %d\nbind 127.0.0.1\nsentinel monitor %s 127.0.0.1 %d 1\n"
            .. "sentinel down-after-milliseconds %s 1000\nsentinel failover-timeout %s 10000\n"
            .. "%s"):format(sentinel.port, master, primary.port, master, master,
            auth and ("sentinel auth-pass %s %s\n"):format(master, auth) or ""))
        f:close()
        sentinel.start_again = function(self)
            local code, out = shell.run("redis-server " .. shell.quote(conf) .. " --sentinel "
                .. "--logfile " .. shell.quote(self.dir .. "/redis.log")
                .. " >/dev/null 2>&1 & pid=$!; " .. shell.watchdog("$pid") .. " echo $pid")
            assert(code == 0, out)
            self.pid = out:match("%d+")
            for _ = 1, 100 do
                if self:alive() then return self end
                core.sleep(0.05)
            end
            error("redis sentinel did not start")
        end
        sentinel:start_again()
        set.sentinels[i] = sentinel
        hosts[i] = "127.0.0.1:" .. sentinel.port
    end
    set.url = "redis+sentinel://" .. table.concat(hosts, ",") .. "/" .. master
    -- the primary a sentinel names now ("host:port")
    function set.named()
        local _, out = set.sentinels[1]:cli("SENTINEL get-master-addr-by-name " .. master)
        local host, port = out:match("(%S+)\n(%d+)")
        return host and host .. ":" .. port
    end
    function set.stop()
        for _, server in ipairs { primary, replica, set.sentinels[1], set.sentinels[2] } do
            server:stop()
        end
    end
    -- the sentinels know the replica before a failover is asked for
    for _ = 1, 200 do
        local _, out = set.sentinels[1]:cli("SENTINEL replicas " .. master)
        if out:match(tostring(replica.port)) then break end
        core.sleep(0.05)
    end
    return set
end

-- A free loopback port whose cluster bus port (10000 above) is free too.
local function bus_port()
    local code, out = shell.run("python3 -c 'import socket\nwhile True:\n    a = socket.socket()\n"
        .. "    a.bind((\"127.0.0.1\", 0))\n    p = a.getsockname()[1]\n    if p > 55000: continue\n"
        .. "    b = socket.socket()\n    try:\n        b.bind((\"127.0.0.1\", p + 10000))\n"
        .. "    except OSError:\n        continue\n    print(p)\n    break'")
    assert(code == 0, out)
    return tonumber(out:match("%d+"))
end

--- A Redis Cluster of three primaries, each with a replica (a node down
-- after 1 s): { nodes, url (redis+cluster://, one node named), cli(args)
-- against the first node, owner(key) (the node serving key's slot),
-- stop() }.
function _M.cluster()
    local set = { nodes = {} }
    local addresses = {}
    for i = 1, 6 do
        local node = setmetatable({ port = bus_port(), dir = shell.temp_dir() }, Redis)
        node:start_again("--cluster-enabled yes --cluster-config-file nodes.conf "
            .. "--cluster-node-timeout 1000 --cluster-replica-validity-factor 0 "
            .. "--repl-diskless-sync-delay 0")
        set.nodes[i] = node
        addresses[i] = "127.0.0.1:" .. node.port
    end
    local code, out = shell.run("redis-cli --cluster create " .. table.concat(addresses, " ")
        .. " --cluster-replicas 1 --cluster-yes")
    assert(code == 0, out)
    -- every node agrees the cluster is up, and on who serves each slot
    local up = false
    for _ = 1, 400 do
        up = true
        for _, node in ipairs(set.nodes) do
            local _, info = node:cli("CLUSTER INFO")
            if not info:match("cluster_state:ok") then up = false end
        end
        if up then
            local _, check = shell.run("redis-cli --cluster check " .. addresses[1])
            up = check:match("%[OK%] All 16384 slots covered") ~= nil
                and not check:match("%[ERR%]") and not check:match("%[WARNING%]")
        end
        if up then break end
        core.sleep(0.05)
    end
    assert(up, "the cluster did not come up")
    -- every replica has had its first sync
    for _, node in ipairs(set.nodes) do
        for _ = 1, 200 do
            local _, info = node:cli("INFO replication")
            if info:match("role:master") or info:match("master_link_status:up") then break end
            core.sleep(0.05)
        end
    end
    set.url = "redis+cluster://" .. addresses[1]
    -- a node of the cluster that answers
    function set.alive()
        for _, node in ipairs(set.nodes) do
            if node.pid and node:alive() then return node end
        end
    end
    function set.owner(key)
        local any = set.alive()
        local _, slot = any:cli("CLUSTER KEYSLOT " .. shell.quote(key))
        slot = tonumber(slot:match("%d+"))
        local _, map = any:cli("CLUSTER NODES")
        -- id host:port@bus flags primary ping pong epoch state slots...
        for line in map:gmatch("[^\n]+") do
            local port, flags, slots = line:match("^%x+ [%d.]+:(%d+)@%d+ (%S+) %S+ %d+ %d+ %d+ "
                .. "%S+(.*)$")
            if port and flags:match("master") and not flags:match("fail") then
                for range in slots:gmatch("%S+") do
                    local from, to = range:match("^(%d+)%-(%d+)$")
                    from = tonumber(from or range:match("^%d+$"))
                    to = tonumber(to) or from
                    if from and slot >= from and slot <= to then
                        for _, node in ipairs(set.nodes) do
                            if node.port == tonumber(port) then return node, slot end
                        end
                    end
                end
            end
        end
    end
    -- empty every primary
    function set.flush()
        for _, node in ipairs(set.nodes) do
            if node.pid then node:cli("FLUSHALL") end
        end
    end
    function set.stop()
        for _, node in ipairs(set.nodes) do node:stop() end
    end
    return set
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
