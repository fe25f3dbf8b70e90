-- oauth2.store.redis: processes and nginx nodes on many machines.
--
-- Outside nginx (and in its init phases) through hiredis (oauth2.redis),
-- one total deadline per command and a bound on a reply's size; inside
-- nginx through cosockets (lua-resty-redis), never blocking a worker.  A
-- record's value is the id of its token, then the record sealed for its
-- key; the lease is SET NX PX with an owner nonce, let go by a
-- compare-and-delete script.  An error reply (-READONLY, -OOM, -NOAUTH)
-- is a store failure like a broken connection, never a held lease.

local core = require "oauth2.core"
local record_codec = require "oauth2.record"
local policy_rules = require "oauth2.policy"
local transport = require "oauth2.transport"

local type, ipairs, setmetatable, tostring, tonumber, pcall, select, rawget =
      type, ipairs, setmetatable, tostring, tonumber, pcall, select, rawget
local unpack = table.unpack or unpack -- luacheck: ignore (5.1)
local ngx = ngx -- luacheck: ignore (nil outside OpenResty)
local now = core.now

local _M = {}

-- Compare-and-delete, in Redis so no other client runs in between: the
-- key goes only if it still holds ARGV[1].
local DELETE_IF_SAME = [[
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
end
return 0
]]

-- A record's value in Redis: the id of the token it holds (token_id: 64
-- hex digits, or 64 dashes for none), then the sealed record.  One key, so a
-- reader or the compare-and-delete below never meets a record and an id
-- from two different writes.
local NO_TOKEN_ID = ("-"):rep(64)

-- Drop a record's token only if its id is still ARGV[1]: ARGV[2] (the
-- record without its token, sealed, with no id) takes its place, with the
-- record's time to live, or ARGV[3] milliseconds when that is longer.
local DELETE_TOKEN_IF = [[
local value = redis.call("GET", KEYS[1])
if not value or string.sub(value, 1, 64) ~= ARGV[1] then return 0 end
local ttl = redis.call("PTTL", KEYS[1])
local wanted = tonumber(ARGV[3]) or 0
if ttl > 0 and ttl < wanted then ttl = wanted end
if ttl > 0 then
    redis.call("SET", KEYS[1], ARGV[2], "PX", ttl)
else
    redis.call("SET", KEYS[1], ARGV[2])
end
return 1
]]

-- A record's value, read by Redis itself only while it is small: a value
-- planted at a record's key never reaches a client whole (lua-resty-redis
-- in nginx would read any size).  Records are a few KiB.
local GET_BOUNDED = [[
local value = redis.call("GET", KEYS[1])
if value and #value > tonumber(ARGV[1]) then
    return redis.error_reply("oauth2: the record is larger than the store takes")
end
return value
]]
local MAX_RECORD = 65536

-- Why a rediss:// store works in nginx only.
-- Outside nginx without oauth2.redis (built where libhiredis is).
local NO_HIREDIS = "the Redis store outside nginx needs the module oauth2.redis, which is "
    .. "built with libhiredis (Debian: libhiredis-dev; LuaRocks: the lua-oauth2-redis rock)"

local NO_TLS = "TLS to Redis (rediss://) runs inside nginx only (lua-resty-redis over "
    .. "cosockets, in timers and requests); hiredis here has no TLS: reach Redis with "
    .. "redis:// on a trusted network or through a TLS tunnel on loopback"

-- Seconds between attempts to reach a Redis that is down: no storm
-- against one that restarts.
local RECONNECT_PAUSE = 2

-- Seconds between two readings of the store's clock (TIME), and how far
-- this host's clock may be off it before that is said.
local CLOCK_EVERY = 60
local SKEW_SAID = 5

-- The offset of the store's clock from this host's wall clock, from a
-- TIME reply ({seconds, microseconds}) and the wall clock when it was
-- asked and answered (the middle of the round trip); nil for a reply
-- that is no time.
local function offset_of(reply, sent, received)
    if type(reply) ~= "table" then return nil end
    local seconds, micro = tonumber(reply[1]), tonumber(reply[2])
    if not seconds or not micro then return nil end
    return seconds + micro / 1e6 - (sent + received) / 2
end

local Redis = {}
Redis.__index = Redis

--- The store's clock: seconds since the epoch by Redis's own time (this
-- host's wall clock moved by the offset last read), so that every node
-- and process times shared records alike, whatever its own clock says.
function Redis:now()
    return core.time() + self.offset
end

-- Whether the store's clock is due for a reading.
function Redis:clock_due()
    return now() >= self.offset_at + CLOCK_EVERY
end

-- Take a reading of the store's clock; a host more than a few seconds
-- off is said once.
function Redis:note_clock(reply, sent, received)
    local offset = offset_of(reply, sent, received)
    if not offset then return end
    self.offset, self.offset_at = offset, now()
    if math.abs(offset) > SKEW_SAID and not self.skew_said then
        self.skew_said = true
        transport.log("WARN", ("oauth2: this host's clock is %.1f s %s %s's: shared tokens "
            .. "are timed by the store's clock"):format(math.abs(offset),
            offset > 0 and "behind" or "ahead of", tostring(self)))
    end
end

local RedisLock = {}
RedisLock.__index = RedisLock

-- The connection, (re)made at most once per RECONNECT_PAUSE; nil and why.
function Redis:connection()
    local conn = self.conn
    if conn and conn:is_open() then return conn end
    local at = now()
    if at < self.retry_at then return nil, self.last_problem end
    local why
    local found, hiredis = pcall(require, "oauth2.redis")
    if not found then return nil, NO_HIREDIS end
    -- connecting, AUTH and SELECT share one bound, the command's own after
    -- them: a server that trickles its replies walks through no step
    local deadline = at + self.connect_timeout + self.timeout
    conn, why = hiredis.connect(self.host, self.port, self.connect_timeout, self.timeout)
    if conn then conn:set_timeout(deadline - now()) end
    if conn and self.password then
        local ok, auth_why
        if self.user then
            ok, auth_why = conn:command("AUTH", self.user, self.password)
        else
            ok, auth_why = conn:command("AUTH", self.password)
        end
        if not ok then conn:close(); conn, why = nil, "redis AUTH: " .. tostring(auth_why) end
    end
    if conn and self.db and self.db ~= 0 then
        local ok, db_why = conn:command("SELECT", self.db)
        if not ok then conn:close(); conn, why = nil, "redis SELECT: " .. tostring(db_why) end
    end
    if conn then
        -- the store's clock, read with the connection
        local sent = core.time()
        local reply = conn:command("TIME")
        if reply then self:note_clock(reply, sent, core.time()) end
    end
    if conn and (not conn:is_open() or now() >= deadline) then
        conn:close()
        conn, why = nil, "redis: connecting timed out (in all, with AUTH and SELECT)"
    end
    if not conn then
        self.retry_at, self.last_problem = at + RECONNECT_PAUSE, why
        self.errors = self.errors + 1
        return nil, why
    end
    conn:set_timeout(self.timeout)
    self.conn = conn
    return conn
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

-- What the alarm of a command returns when it rings first.
local TIMED_OUT = {}

-- Run fn() in a light thread for at most `seconds` in all: its first
-- two results, or TIMED_OUT (the thread killed, its socket with it).
-- A cosocket's timeout is per read, so a reply trickled in time for
-- every read would run on; this bounds the whole.  The thread tells it
-- is done through a semaphore, so only a thread past its time is killed.
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

-- Connect (a pool of this store's own: AUTH and SELECT run on new
-- connections only, so a connection never serves another database or
-- user): true, or nil and why.
function Redis:cosocket_connect(red)
    red:set_timeout(math.ceil(self.connect_timeout * 1000))
    local ok, why = red:connect(self.host, self.port, { pool = self.pool })
    red:set_timeout(math.ceil(self.timeout * 1000))
    if ok and red:get_reused_times() == 0 then
        if self.tls then
            -- the server's certificate checked against nginx's
            -- lua_ssl_trusted_certificate, for server_name (both
            -- lua-resty-redis and Debian's keep the cosocket in _sock)
            -- (a failed check may raise in some lua-resty-core versions)
            local sock = rawget(red, "_sock")
            local ran, done, problem = pcall(sock.sslhandshake, sock, nil, self.server_name, true)
            ok, why = ran and done, ran and problem or done
            if not ok then why = "TLS: " .. tostring(why) end
        end
        if ok and self.password then
            if self.user then ok, why = red:auth(self.user, self.password)
            else ok, why = red:auth(self.password) end
        end
        if ok and self.db and self.db ~= 0 then ok, why = red:select(self.db) end
    end
    return ok, why
end

-- One command over a cosocket (inside nginx, never blocking a worker):
-- connecting (TLS, AUTH, SELECT on a new connection) and the command's
-- reply within one bound, connect_timeout + timeout, as a whole; the
-- connection goes back to the pool after it.
function Redis:cosocket_command(redis, name, ...)
    local at = now()
    if at < self.retry_at then return nil, self.last_problem end
    local red = redis:new()
    local args = { n = select("#", ...), ... }
    local connected, refused = false, nil
    local reply, why = within(self.connect_timeout + self.timeout, function()
        local ok, problem = self:cosocket_connect(red)
        if not ok then
            refused = problem
            return nil, problem
        end
        connected = true
        if self:clock_due() then
            -- the store's clock, read on the way (time() is any command)
            local sent = core.time()
            local reply = red:time()
            if reply then self:note_clock(reply, sent, core.time()) end
        end
        return red[name:lower()](red, unpack(args, 1, args.n))
    end)
    if reply == TIMED_OUT then
        reply, why = nil, connected and "the command timed out"
            or "connecting timed out (in all, with TLS, AUTH and SELECT)"
    end
    if not connected then
        red:close()
        self.retry_at = at + RECONNECT_PAUSE
        self.last_problem = "redis: " .. tostring(refused or why)
        self.errors = self.errors + 1
        return nil, self.last_problem
    end
    if not reply then
        -- nil: the connection broke; false: an error reply (-READONLY
        -- after a failover, -OOM, -NOAUTH), a store failure all the same,
        -- never a held lease
        red:close()
        self.errors = self.errors + 1
        self.last_problem = "redis: " .. tostring(why)
        return nil, self.last_problem
    end
    red:set_keepalive(10000, self.pool_size)
    if reply == ngx.null then return false end
    return reply
end

-- One command; its reply, or nil and why (counted in errors).  Inside
-- nginx where cosockets work, through them; elsewhere (and in nginx's init
-- phases, which may block) through hiredis (oauth2.redis).
function Redis:command(...)
    if ngx and ngx.get_phase and COSOCKET_PHASES[ngx.get_phase()] then
        local redis = cosocket_redis()
        if redis then return self:cosocket_command(redis, ...) end
    end
    if self.tls then
        self.errors = self.errors + 1
        return nil, "redis: " .. NO_TLS
    end
    local conn, why = self:connection()
    if not conn then return nil, why end
    local reply
    if self:clock_due() then
        local sent = core.time()
        reply, why = conn:command("TIME")
        if reply then self:note_clock(reply, sent, core.time()) end
    end
    -- (a TIME that broke the connection fails this command as its own)
    if conn:is_open() then reply, why = conn:command(...) end
    if reply == nil then
        self.errors = self.errors + 1
        if not conn:is_open() then self.retry_at = now() + RECONNECT_PAUSE end
        self.last_problem = why
    end
    return reply, why
end

function Redis:get(key, secret)
    local name = self.prefix .. key
    local value, why = self:command("EVAL", GET_BOUNDED, 1, name, MAX_RECORD)
    if value == nil then return nil, why or "redis: no reply" end
    if type(value) ~= "string" then
        self.misses = self.misses + 1
        return nil
    end
    local record = record_codec.open(secret, value:sub(65), name)
    if not record then return nil end
    self.hits = self.hits + 1
    return record
end

-- The value for a record kept at `name`: its token's id (a hash: no
-- token), the record sealed for that name.  Nil and why when the record
-- cannot be encoded.
local function redis_value(secret, record, name)
    local sealed, why = record_codec.seal(secret, record, name)
    if not sealed then return nil, why end
    local token_id = type(record.access_token) == "string"
        and record_codec.token_id(secret, record.access_token) or NO_TOKEN_ID
    return token_id .. sealed
end

function Redis:set(key, secret, record, ttl)
    local value, why = redis_value(secret, record, self.prefix .. key)
    if not value then return nil, why end
    local ok
    if ttl and ttl > 0 then
        ok, why = self:command("SET", self.prefix .. key, value, "PX", math.ceil(ttl * 1000))
    else
        ok, why = self:command("SET", self.prefix .. key, value)
    end
    if not ok then return nil, why end
    return true
end

function Redis:try_lock(key, lease)
    local name = self.prefix .. key .. ":lock"
    self.nonce = self.nonce + 1
    local owner = core.sha256(tostring(core.time()) .. " " .. self.nonce .. " "
        .. ("%.0f"):format(core.random() * 2^53) .. tostring(self))
    local reply, why = self:command("SET", name, owner, "NX", "PX",
        math.ceil((lease or self.lease) * 1000))
    if reply == nil then return nil, why end
    if reply == false then
        self.lease_losses = self.lease_losses + 1
        return false
    end
    self.lease_wins = self.lease_wins + 1
    return setmetatable({ store = self, key = name, owner = owner }, RedisLock)
end

function RedisLock:unlock()
    -- compare and delete: a lease that lapsed may be another's by now
    self.store:command("EVAL", DELETE_IF_SAME, 1, self.key, self.owner)
end

function Redis:delete_token_if(key, secret, token_id, cooldown, ttl)
    local record = self:get(key, secret)
    if not record then return false end
    local value = redis_value(secret, record_codec.without_token(record, token_id, cooldown),
        self.prefix .. key)
    if not value then return false end
    return self:command("EVAL", DELETE_TOKEN_IF, 1, self.prefix .. key, token_id, value,
        math.ceil((ttl or 0) * 1000)) == 1
end

--- Counters: hits, misses, lease_wins, lease_losses, errors.
function Redis:stats()
    return { hits = self.hits, misses = self.misses, lease_wins = self.lease_wins,
             lease_losses = self.lease_losses, errors = self.errors }
end

function Redis:__tostring()
    return ("oauth2.store %s %s:%d/%d"):format(self.tls and "rediss" or "redis", self.host,
        self.port, self.db or 0)
end

-- Store URLs of a scheme this library does not speak, and what to do.
local UNSUPPORTED_SCHEMES = {
    unix = "a Redis unix socket is not supported: use redis://127.0.0.1:port",
    ["redis+socket"] = "a Redis unix socket is not supported: use redis://127.0.0.1:port",
}

--- A Redis store, from "redis://[user:password@]host[:port][/db]" (or
-- rediss://, TLS, in nginx only: its certificate is checked against
-- lua_ssl_trusted_certificate for server_name, by default the URL's
-- host; nginx checks DNS names, not IP addresses) or a
-- table { url = ..., prefix =, connect_timeout =, timeout = (seconds,
-- default 1), lease = (of a try_lock(key) that names none: oauth2.cache
-- always names its own, one attempt's timeout and 5 s), pool_size =,
-- look_every = (seconds between two looks of a process or nginx node at
-- the store while its own copy is fresh, default 4: how soon a token
-- rejected elsewhere is dropped everywhere) }: the store, or nil and why.
-- The password is never shown.
function _M.new(spec)
    if type(spec) == "string" then spec = { url = spec } end
    if type(spec) ~= "table" or type(spec.url) ~= "string" then
        return nil, "a redis store needs a redis://host:port URL"
    end
    -- (no message repeats the URL: it may carry a password)
    local scheme = spec.url:match("^(%a[%w+.-]+):")
    scheme = scheme and scheme:lower()
    if scheme ~= "redis" and scheme ~= "rediss" then
        return nil, UNSUPPORTED_SCHEMES[scheme] or "a redis store needs a "
            .. "redis://[user:password@]host[:port][/db] URL"
    end
    local rest = spec.url:match("^%a+://(.*)$")
    if not rest then
        return nil, "a redis store needs a redis://[user:password@]host[:port][/db] URL"
    end
    local userinfo, hostport = rest:match("^(.*)@([^@]*)$")
    if not userinfo then hostport = rest end
    local host, port, db = hostport:match("^([^:/]+):(%d+)/?(%d*)$")
    if not host then
        host, db = hostport:match("^([^:/]+)/?(%d*)$")
        port = "6379"
    end
    if not host or tonumber(port) < 1 or tonumber(port) > 65535 then
        return nil, "a redis store needs a redis://[user:password@]host[:port][/db] URL"
    end
    local tls = scheme == "rediss"
    if tls and not ngx then return nil, NO_TLS end
    -- outside nginx the connection is hiredis's, a C module of its own
    if not ngx and not pcall(require, "oauth2.redis") then return nil, NO_HIREDIS end
    for _, name in ipairs { "connect_timeout", "timeout", "lease", "look_every" } do
        local value = spec[name]
        if value ~= nil and (type(value) ~= "number" or value ~= value or value <= 0
                or value > 3600) then
            return nil, "redis store option '" .. name .. "' must be a number of seconds "
                .. "above 0 and at most 3600"
        end
    end
    local pool_size = spec.pool_size
    if pool_size ~= nil and (type(pool_size) ~= "number" or pool_size ~= math.floor(pool_size)
            or pool_size < 1 or pool_size > 1000) then
        return nil, "redis store option 'pool_size' must be a whole number from 1 to 1000"
    end
    if spec.prefix ~= nil and type(spec.prefix) ~= "string" then
        return nil, "redis store option 'prefix' must be a string"
    end
    if spec.server_name ~= nil and (type(spec.server_name) ~= "string"
            or not spec.server_name:match("^[%w.-]+$")) then
        return nil, "redis store option 'server_name' must be a host name"
    end
    local user, password
    if userinfo and userinfo ~= "" then
        user, password = userinfo:match("^([^:]*):(.*)$")
        if not user then password = userinfo end
        if user == "" then user = nil end
    end
    port, db = tonumber(port), tonumber(db) or 0
    return setmetatable({
        host = host, port = port, db = db,
        user = user, password = password,
        -- nginx's keepalive pool: one per address, database and
        -- credentials (a keyed hash: no password in the name)
        pool = ("oauth2:%s%s:%d/%d:%s"):format(
            tls and "tls " .. (spec.server_name or host) .. ":" or "", host, port, db,
            core.hmac_sha256("redis pool", (user or "") .. "\n" .. (password or "")):sub(1, 16)),
        tls = tls, server_name = spec.server_name or host,
        prefix = spec.prefix or "oauth2:",
        connect_timeout = spec.connect_timeout or 1, timeout = spec.timeout or 1,
        lease = spec.lease or policy_rules.LEASE, pool_size = pool_size or 4,
        look_every = spec.look_every or policy_rules.LOOK_EVERY,
        conn = nil, retry_at = -math.huge, last_problem = nil, nonce = 0, kind = "redis",
        offset = 0, offset_at = -math.huge, skew_said = false,
        atomic = true, -- delete_token_if runs in Redis: no lock needed
        hits = 0, misses = 0, lease_wins = 0, lease_losses = 0, errors = 0,
    }, Redis)
end

return _M
