-- oauth2.link: a link to Redis, however it is run: one server, the
-- primary a set of Sentinels names, or a Cluster.
--
--   local link = assert(require("oauth2.link").new("redis+sentinel://s1:26379,s2/mymaster"))
--   local reply, why = link:call(key, "GET", key)
--
-- Outside nginx (and in its init phases) through hiredis (oauth2.redis),
-- inside nginx through cosockets (lua-resty-redis), never blocking a
-- worker.  Each exchange with one server (connect, TLS, AUTH, SELECT,
-- the command and its whole reply) runs within one bound,
-- connect_timeout + timeout; a call to Sentinels or a Cluster, which may
-- ask several servers, starts no exchange past two bounds, so it ends
-- within three.
--
-- Sentinel: the primary is asked of the sentinels in turn and its role
-- checked (ROLE says "master"); it is asked again after any failure at
-- it (a failover closes connections, or answers -READONLY).  Cluster:
-- the slot map (CLUSTER SLOTS) is read from any known node, a command
-- goes to its slot's primary, MOVED updates the map and is followed,
-- ASK is followed once with ASKING; a node that fails has the map read
-- again.  The store keeps a credential's keys in one slot (a hash tag).

local core = require "oauth2.core"
local transport = require "oauth2.transport"

local type, ipairs, pairs, setmetatable, tostring, tonumber, pcall, select, rawget =
      type, ipairs, pairs, setmetatable, tostring, tonumber, pcall, select, rawget
local unpack = table.unpack or unpack -- luacheck: ignore (5.1)
local concat = table.concat
local ngx = ngx -- luacheck: ignore (nil outside OpenResty)
local now = core.now

local _M = {}

local NO_HIREDIS = "the Redis store outside nginx needs the module oauth2.redis, which is "
    .. "built with libhiredis (Debian: libhiredis-dev; LuaRocks: the lua-oauth2-redis rock)"

local NO_TLS = "TLS to Redis (rediss://) runs inside nginx only (lua-resty-redis over "
    .. "cosockets, in timers and requests); hiredis here has no TLS: reach Redis with "
    .. "redis:// on a trusted network or through a TLS tunnel on loopback"

-- Seconds between attempts to reach a server that is down: no storm
-- against one that restarts.
local RECONNECT_PAUSE = 2

-- Seconds between two readings of the store's clock (TIME), and how far
-- this host's clock may be off it before that is said.
local CLOCK_EVERY = 60
local SKEW_SAID = 5

local FORMS = "redis://[user:password@]host[:port][/db], "
    .. "redis+sentinel://[user:password@]host[:port][,host[:port]...]/master[/db] or "
    .. "redis+cluster://[user:password@]host[:port][,host[:port]...] (rediss for TLS)"

local Link = {}
Link.__index = Link

-- ------------------------------------------------------------ the clock

--- The store's clock: seconds since the epoch by Redis's own time (this
-- host's wall clock moved by the offset last read), so that every node
-- and process times shared records alike, whatever its own clock says.
function Link:now()
    return core.time() + self.offset
end

-- Take a reading of the store's clock from a TIME reply and the wall
-- clock around it; a host more than a few seconds off is said once.
local function note_clock(self, reply, sent, received)
    if type(reply) ~= "table" then return end
    local seconds, micro = tonumber(reply[1]), tonumber(reply[2])
    if not seconds or not micro then return end
    local offset = seconds + micro / 1e6 - (sent + received) / 2
    self.offset, self.offset_at = offset, now()
    if math.abs(offset) > SKEW_SAID and not self.skew_said then
        self.skew_said = true
        transport.log("WARN", ("oauth2: this host's clock is %.1f s %s %s's: shared tokens "
            .. "are timed by the store's clock"):format(math.abs(offset),
            offset > 0 and "behind" or "ahead of", tostring(self)))
    end
end

_M.note_clock = note_clock

-- Read the store's clock through `send(name)` when due (once a minute).
local function read_clock(self, send)
    if now() < self.offset_at + CLOCK_EVERY then return end
    local sent = core.time()
    local reply = send("TIME")
    if reply then note_clock(self, reply, sent, core.time()) end
end

-- ------------------------------------------------------------ one server

-- An address: { host, port, id = "host:port" }.
local function address(host, port)
    return { host = host, port = port, id = host .. ":" .. port }
end

-- The hello of a new connection to `addr`: AUTH and SELECT for a data
-- node, the sentinels' own AUTH for a sentinel; `run(name, ...)` sends.
local function hello(self, sentinel, run)
    local user, password = self.user, self.password
    if sentinel then user, password = self.sentinel_user, self.sentinel_password end
    if password then
        local ok, why
        if user then ok, why = run("AUTH", user, password) else ok, why = run("AUTH", password) end
        if not ok then return nil, "AUTH: " .. tostring(why) end
    end
    if not sentinel and self.db ~= 0 then
        local ok, why = run("SELECT", self.db)
        if not ok then return nil, "SELECT: " .. tostring(why) end
    end
    return true
end

-- A hiredis connection to `addr`, (re)made at most once per
-- RECONNECT_PAUSE: the connection, or nil and why.
local function hiredis_connection(self, addr, sentinel)
    local conn = self.conns[addr.id]
    if conn and conn:is_open() then return conn end
    local at = now()
    if at < (self.paused[addr.id] or -math.huge) then return nil, self.problems[addr.id] end
    local hiredis = require "oauth2.redis"
    -- connecting and the hello share one bound, the command's own after them
    local deadline = at + self.connect_timeout + self.timeout
    local why
    conn, why = hiredis.connect(addr.host, addr.port, self.connect_timeout, self.timeout)
    if conn then
        conn:set_timeout(deadline - now())
        local ok, problem = hello(self, sentinel, function(...) return conn:command(...) end)
        if not ok then conn:close(); conn, why = nil, "redis " .. addr.id .. " " .. problem end
    end
    if conn and (not conn:is_open() or now() >= deadline) then
        conn:close()
        conn, why = nil, "redis " .. addr.id .. ": connecting timed out (in all, with AUTH "
            .. "and SELECT)"
    end
    if not conn then
        self.paused[addr.id], self.problems[addr.id] = at + RECONNECT_PAUSE, why
        return nil, why
    end
    conn:set_timeout(self.timeout)
    self.conns[addr.id] = conn
    return conn
end

-- One command at `addr` through hiredis (ASKING before it when `asking`):
-- its reply (false for a nil reply), or nil, why and whether the
-- connection failed (not an error reply).
local function hiredis_send(self, addr, sentinel, args, asking)
    local conn, why = hiredis_connection(self, addr, sentinel)
    if not conn then return nil, why, true end
    if not sentinel then read_clock(self, function(name) return conn:command(name) end) end
    if asking and conn:is_open() then conn:command("ASKING") end
    -- (a TIME or ASKING that broke the connection fails this command)
    local reply
    if conn:is_open() then reply, why = conn:command(unpack(args, 1, args.n)) end
    if reply == nil then
        if conn:is_open() then return nil, why, false end
        why = "redis " .. addr.id .. ": " .. tostring(why or "connection lost"):gsub("^redis: ", "")
        self.paused[addr.id], self.problems[addr.id] = now() + RECONNECT_PAUSE, why
        return nil, why, true
    end
    return reply
end

-- The nginx module that speaks Redis over cosockets: OpenResty's, or
-- Debian's lua-nginx-redis.
local function cosocket_redis()
    local ok, redis = pcall(require, "resty.redis")
    if ok then return redis end
    ok, redis = pcall(require, "nginx.redis")
    if ok then return redis end
    return nil
end

-- Whether this nginx phase may use cosockets (timers, access, content).
local COSOCKET_PHASES = { rewrite = true, access = true, content = true, timer = true }

-- What within() returns when its alarm rings first.
local TIMED_OUT = {}

-- Run fn() in a light thread for at most `seconds` in all: its first
-- two results, or TIMED_OUT (the thread killed, its socket with it).  A
-- cosocket's timeout is per read, so a reply trickled in time for every
-- read would run on; this bounds the whole.
local function within(seconds, fn)
    local done = require("ngx.semaphore").new(0)
    local ok, reply, why
    local worker = ngx.thread.spawn(function()
        ok, reply, why = pcall(fn)
        done:post(1)
    end)
    if not done:wait(seconds) then
        ngx.thread.kill(worker)
        return TIMED_OUT
    end
    ngx.thread.wait(worker)
    if not ok then return nil, reply end
    return reply, why
end

-- Connect a cosocket to `addr` (a pool per address, database and
-- credentials: the hello runs on new connections only): true, or nil and why.
local function cosocket_connect(self, red, addr, sentinel)
    red:set_timeout(math.ceil(self.connect_timeout * 1000))
    local ok, why = red:connect(addr.host, addr.port,
        { pool = self.pool .. addr.id .. (sentinel and " sentinel" or "") })
    red:set_timeout(math.ceil(self.timeout * 1000))
    if ok and red:get_reused_times() == 0 then
        if self.tls then
            -- the certificate checked against lua_ssl_trusted_certificate
            -- for server_name (both modules keep the cosocket in _sock; a
            -- failed check may raise in some lua-resty-core versions)
            local sock = rawget(red, "_sock")
            local ran, done, problem = pcall(sock.sslhandshake, sock, nil,
                self.server_name or addr.host, true)
            ok, why = ran and done, ran and problem or done
            if not ok then why = "TLS: " .. tostring(why) end
        end
        if ok then
            ok, why = hello(self, sentinel, function(name, ...)
                return red[name:lower()](red, ...)
            end)
        end
    end
    return ok, why
end

-- One command at `addr` over a cosocket: as hiredis_send.
local function cosocket_send(self, redis, addr, sentinel, args, asking)
    local at = now()
    if at < (self.paused[addr.id] or -math.huge) then return nil, self.problems[addr.id], true end
    local red = redis:new()
    local connected, refused = false, nil
    local reply, why = within(self.connect_timeout + self.timeout, function()
        local ok, problem = cosocket_connect(self, red, addr, sentinel)
        if not ok then
            refused = problem
            return nil, problem
        end
        connected = true
        if not sentinel then read_clock(self, function() return red:time() end) end
        if asking then red:asking() end
        return red[args[1]:lower()](red, unpack(args, 2, args.n))
    end)
    if reply == TIMED_OUT then
        reply, why = nil, connected and "the command timed out"
            or "connecting timed out (in all, with TLS, AUTH and SELECT)"
    end
    if not connected then
        red:close()
        self.paused[addr.id] = at + RECONNECT_PAUSE
        self.problems[addr.id] = "redis " .. addr.id .. ": " .. tostring(refused or why)
        return nil, self.problems[addr.id], true
    end
    if not reply then
        -- nil: the connection broke; false: an error reply
        red:close()
        return nil, (reply == nil and "redis " .. addr.id .. ": " or "") .. tostring(why),
            reply == nil
    end
    red:set_keepalive(10000, self.pool_size)
    if reply == ngx.null then return false end
    return reply
end

-- One command at `addr`, through cosockets where nginx allows them, else
-- hiredis: the reply, or nil, why and whether the connection failed.
local function send(self, addr, sentinel, args, asking)
    if args.until_at and now() >= args.until_at then
        return nil, "redis: no time left for " .. addr.id .. " (the call's bound passed)", false
    end
    if ngx and ngx.get_phase and COSOCKET_PHASES[ngx.get_phase()] then
        local redis = cosocket_redis()
        if redis then return cosocket_send(self, redis, addr, sentinel, args, asking) end
    end
    if self.tls then return nil, "redis: " .. NO_TLS, true end
    return hiredis_send(self, addr, sentinel, args, asking)
end

-- ------------------------------------------------------------ Sentinel

-- The primary the sentinels name, its role checked: its address, or nil
-- and why.
local function primary(self, until_at)
    if self.primary then return self.primary end
    local problems = {}
    for _, sentinel in ipairs(self.nodes) do
        local reply, why = send(self, sentinel, true,
            { n = 3, until_at = until_at, "SENTINEL", "get-master-addr-by-name", self.master })
        local port = type(reply) == "table" and tonumber(reply[2])
        if port then
            local addr = address(tostring(reply[1]), port)
            local role
            role, why = send(self, addr, false, { n = 1, until_at = until_at, "ROLE" })
            if type(role) == "table" and role[1] == "master" then
                self.primary = addr
                return addr
            end
            why = why or ("%s is a %s, not the primary (a failover in progress)"):format(
                addr.id, tostring(type(role) == "table" and role[1]))
        elseif reply ~= nil then
            why = "no primary named '" .. self.master .. "'"
        end
        problems[#problems + 1] = sentinel.id .. ": " .. tostring(why)
    end
    return nil, "redis sentinel: no primary (" .. concat(problems, "; ") .. ")"
end

-- ------------------------------------------------------------ Cluster

-- Read the slot map from the first known node that answers.
local function read_slots(self, until_at)
    local problems = {}
    local seen = {}
    local candidates = {}
    for _, addr in ipairs(self.nodes) do candidates[#candidates + 1] = addr end
    for _, addr in pairs(self.known) do candidates[#candidates + 1] = addr end
    for _, addr in ipairs(candidates) do
        if not seen[addr.id] then
            seen[addr.id] = true
            local reply, why = send(self, addr, false,
                { n = 2, until_at = until_at, "CLUSTER", "SLOTS" })
            if type(reply) == "table" then
                local owners, known = {}, {}
                for _, range in ipairs(reply) do
                    local node = type(range[3]) == "table" and range[3]
                    local host = node and node[1] ~= "" and tostring(node[1]) or addr.host
                    local port = node and tonumber(node[2])
                    if port then
                        local owner = address(host, port)
                        known[owner.id] = owner
                        owners[#owners + 1] = { tonumber(range[1]), tonumber(range[2]), owner }
                    end
                end
                self.slots, self.known, self.stale, self.moved = owners, known, false, {}
                return true
            end
            problems[#problems + 1] = addr.id .. ": " .. tostring(why)
        end
    end
    return nil, "redis cluster: no node gave its slot map (" .. concat(problems, "; ") .. ")"
end

-- The primary of `slot`, or nil and why.
local function owner_of(self, slot, until_at)
    if self.stale or not self.slots then
        local ok, why = read_slots(self, until_at)
        if not ok then return nil, why end
    end
    local moved = self.moved[slot]
    if moved then return moved end
    for _, range in ipairs(self.slots) do
        if slot >= range[1] and slot <= range[2] then return range[3] end
    end
    return nil, "redis cluster: no node serves slot " .. slot
end

-- ------------------------------------------------------------ a call

--- One command for `key` (its slot in a Cluster): the reply (false for a
-- nil reply), or nil and why (counted in errors).
function Link:call(key, ...)
    -- however many sentinels or nodes are asked, a call ends within three
    -- bounds: no exchange starts past two
    local args = { n = select("#", ...), ... }
    if self.mode ~= "single" then
        args.until_at = now() + 2 * (self.connect_timeout + self.timeout)
    end
    local reply, why, broken
    if self.mode == "single" then
        reply, why = send(self, self.nodes[1], false, args)
    elseif self.mode == "sentinel" then
        local addr
        addr, why = primary(self, args.until_at)
        if addr then
            reply, why, broken = send(self, addr, false, args)
            -- a failover: the old primary gone, or answering as a replica
            if reply == nil and (broken or tostring(why):find("^READONLY")) then
                self.primary = nil
            end
        end
    else
        local slot = core.redis_slot(key)
        local addr, asking
        for _ = 1, 3 do
            if not asking then addr, why = owner_of(self, slot, args.until_at) end
            if not addr then break end
            reply, why, broken = send(self, addr, false, args, asking)
            asking = false
            if reply ~= nil then break end
            if broken then
                self.stale = true
                break
            end
            local kind, host, port = tostring(why):match("^(%u+) %d+ (%S*):(%d+)$")
            if not kind then break end
            if host == "" then host = addr.host end
            addr = address(host, tonumber(port))
            if kind == "MOVED" then
                self.moved[slot], self.stale = addr, true
            elseif kind == "ASK" then
                asking = true
            else
                break
            end
        end
    end
    if reply == nil then
        self.errors = self.errors + 1
        why = tostring(why or "no reply")
        -- (an error reply, -OOM, -READONLY, comes as Redis says it)
        return nil, why:find("^redis") and why or "redis: " .. why
    end
    return reply
end

function Link:__tostring()
    local scheme = (self.tls and "rediss" or "redis")
        .. (self.mode == "single" and "" or "+" .. self.mode)
    local ids = {}
    for i, addr in ipairs(self.nodes) do ids[i] = addr.id end
    return ("%s://%s%s"):format(scheme, concat(ids, ","),
        self.mode == "sentinel" and "/" .. self.master .. "/" .. self.db
        or self.mode == "single" and "/" .. self.db or "")
end

-- ------------------------------------------------------------ the URL

-- Store URLs of a scheme this library does not speak, and what to do.
local UNSUPPORTED = {
    unix = "a Redis unix socket is not supported: use redis://127.0.0.1:port",
    ["redis+socket"] = "a Redis unix socket is not supported: use redis://127.0.0.1:port",
}

local MODES = { redis = "single", ["redis+sentinel"] = "sentinel", ["redis+cluster"] = "cluster" }

--- What a URL names: { mode, tls, nodes, user, password, master, db },
-- or nil and why (never repeating the URL: it may carry a password).
function _M.parse(url)
    local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
    scheme = scheme and scheme:lower()
    local tls = scheme and scheme:match("^rediss") ~= nil
    local mode = scheme and MODES[tls and "redis" .. scheme:sub(7) or scheme]
    if not mode then
        return nil, UNSUPPORTED[scheme or url:match("^(%a[%w+.-]*):") or ""]
            or "a redis store needs a URL: " .. FORMS
    end
    local userinfo, tail = rest:match("^(.*)@([^@]*)$")
    if not userinfo then tail = rest end
    local hosts, path = tail:match("^([^/]*)(.*)$")
    local parsed = { mode = mode, tls = tls, nodes = {}, db = 0 }
    local default_port = mode == "sentinel" and 26379 or 6379
    for item in hosts:gmatch("[^,]+") do
        local host, port = item:match("^([^:]+):(%d+)$")
        if not host then host, port = item:match("^([^:]+)$"), default_port end
        port = tonumber(port)
        if not host or port < 1 or port > 65535 then
            return nil, "a redis store needs a URL: " .. FORMS
        end
        parsed.nodes[#parsed.nodes + 1] = address(host, port)
    end
    if #parsed.nodes == 0 or mode == "single" and #parsed.nodes > 1 then
        return nil, "a redis store needs a URL: " .. FORMS
    end
    local db
    if mode == "sentinel" then
        parsed.master, db = path:match("^/([%w._-]+)/?(%d*)$")
        if not parsed.master then
            return nil, "a redis+sentinel URL names its master after the hosts: " .. FORMS
        end
    else
        db = path:match("^/?(%d*)$")
        if not db then return nil, "a redis store needs a URL: " .. FORMS end
    end
    parsed.db = tonumber(db) or 0
    if mode == "cluster" and parsed.db ~= 0 then
        return nil, "a Redis Cluster has database 0 only"
    end
    if userinfo and userinfo ~= "" then
        local user, password = userinfo:match("^([^:]*):(.*)$")
        if not user then password = userinfo end
        parsed.user, parsed.password = user ~= "" and user or nil, password
    end
    return parsed
end

--- A link for spec { url, connect_timeout, timeout, pool_size,
-- server_name, sentinel_user, sentinel_password } (checked by the
-- store): the link, or nil and why.
function _M.new(spec)
    local parsed, why = _M.parse(spec.url)
    if not parsed then return nil, why end
    if parsed.tls and not ngx then return nil, NO_TLS end
    -- outside nginx the connection is hiredis's, a C module of its own
    if not ngx and not pcall(require, "oauth2.redis") then return nil, NO_HIREDIS end
    local link = setmetatable(parsed, Link)
    link.server_name = spec.server_name
    link.sentinel_user, link.sentinel_password = spec.sentinel_user, spec.sentinel_password
    link.connect_timeout, link.timeout = spec.connect_timeout or 1, spec.timeout or 1
    link.pool_size = spec.pool_size or 4
    -- nginx's keepalive pools: one per address, database and credentials
    -- (a keyed hash: no password in the name)
    link.pool = ("oauth2:%s%d:%s:"):format(parsed.tls and "tls " .. (spec.server_name or "")
        .. ":" or "", parsed.db, core.hmac_sha256("redis pool", (parsed.user or "") .. "\n"
        .. (parsed.password or "")):sub(1, 16))
    link.conns, link.paused, link.problems = {}, {}, {}
    link.known, link.moved, link.stale = {}, {}, true
    link.offset, link.offset_at, link.skew_said = 0, -math.huge, false
    link.errors = 0
    return link
end

return _M
