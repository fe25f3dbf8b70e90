-- oauth2.store: where tokens are shared beyond one Lua state.
--
-- A store keeps one record per cache key (oauth2.policy.cache_key) and
-- offers this contract, which every store follows:
--
--   store:get(key, secret)           the record, or nil (none, or unusable)
--   store:set(key, secret, record)   true, or nil and why
--   store:try_lock(key)              a lock (lock:unlock()), false while
--                                    another holds it, or nil and why; a
--                                    lock lasts no longer than its holder
--   store:delete_token_if(key, secret, token_id)
--                                    drop the record's token only if it is
--                                    still token_id (compare before delete)
--
-- (store:set takes a fourth argument, ttl: seconds the record may be kept;
-- the memory and shared-dict stores drop it then, the file store keeps
-- it, as its record carries its own times.)
--
-- The stores: memory() (one Lua state), shm(dict) (every worker of an
-- nginx, through a lua_shared_dict), file(dir) (every process of a user
-- on a machine) and redis(url) (processes on many machines; outside nginx
-- for now).  oauth2.client takes any of them as `store`;
-- oauth2.openresty keeps its own layout in its dict, tuned for its hot
-- path of one read, under the same policy (oauth2.policy).
--
-- A record is a table of plain values: access_token, token_type, scope,
-- expires_in, fetched_at, refresh_at, expire_at (seconds since the epoch:
-- processes share no other clock), and, after a failure or an
-- invalidation, next_try (no fetch before then) with the error's fields;
-- after an invalidation, rejected: the id (token_id) of the token that was
-- dropped, so processes holding a copy drop theirs when they look again.
--
-- The file store keeps each record in a file of its own, named by the key
-- (a keyed hash: no secret in a name), in a directory only this user can
-- enter; the file is sealed with AES-256-GCM under a key derived from the
-- client secret, bound to its key (every store seals a record for the
-- name it is kept under), so it is useless to anyone without the secret,
-- and a file that does not open (corrupt, truncated, another secret's,
-- moved from another key) counts as missing and is replaced.  Single
-- flight across processes is an flock on a lock file beside it, which the
-- kernel releases if its process dies.
-- Mechanism (files, locks, sealing) is the C core's; this is the policy.

local core = require "oauth2.core"
local cjson = require "cjson.safe"

local type, pairs, ipairs, setmetatable, tostring, tonumber, getenv =
      type, pairs, ipairs, setmetatable, tostring, tonumber, os.getenv
local ngx = ngx -- luacheck: ignore (nil outside OpenResty)
local encode, decode = cjson.encode, cjson.decode

local _M = { _VERSION = core._VERSION }

-- Drop the token of a record (compare before delete is the caller's);
-- `rejected` keeps its id, so every holder of a copy learns to drop it.
local function without_token(record, token_id)
    record.access_token, record.token_type, record.scope, record.expires_in = nil, nil, nil, nil
    record.refresh_at, record.expire_at = nil, nil
    record.rejected = token_id
    return record
end

-- delete_token_if for the stores whose get and set run under the
-- caller's lock (memory, shared dict, file): read, compare, write back.
local function delete_token_if(self, key, secret, token_id)
    local record = self:get(key, secret)
    if not record or type(record.access_token) ~= "string"
            or _M.token_id(secret, record.access_token) ~= token_id then
        return false
    end
    return self:set(key, secret, without_token(record, token_id))
end


-- The directory of the file store when none is given: per user, in
-- memory where the system has a runtime directory, else in the cache.
function _M.default_dir()
    local runtime = getenv("XDG_RUNTIME_DIR")
    if runtime and runtime ~= "" then return runtime .. "/lua-oauth2" end
    local cache = getenv("XDG_CACHE_HOME")
    if cache and cache ~= "" then return cache .. "/lua-oauth2" end
    local home = getenv("HOME")
    if home and home ~= "" then return home .. "/.cache/lua-oauth2" end
    return nil
end

local File = {}
File.__index = File

function File:path(key)
    return self.dir .. "/" .. key
end

function File:get(key, secret)
    local sealed, why = core.read_private(self:path(key))
    if sealed == false then return nil end
    if not sealed then
        -- a file that is not ours alone is never trusted (and replaced)
        self.problem = why
        return nil
    end
    local text = core.open(secret, sealed, key)
    local record = text and decode(text)
    if type(record) ~= "table" then return nil end
    return record
end

function File:set(key, secret, record)
    local text = encode(record)
    if not text then return nil, "the record cannot be encoded" end
    return core.write_private(self:path(key), core.seal(secret, text, key))
end

function File:try_lock(key)
    return core.try_lock(self:path(key) .. ".lock")
end

File.delete_token_if = delete_token_if

function File:__tostring()
    return "oauth2.store file " .. self.dir
end

--- A file store in `dir` (default_dir() when nil): the store, or nil and
-- why (no directory to use, or one that is not private to this user).
function _M.file(dir)
    dir = dir or _M.default_dir()
    if not dir then return nil, "no cache directory: set XDG_RUNTIME_DIR or HOME" end
    local ok, why = core.private_dir(dir)
    if not ok then return nil, why .. " (" .. dir .. ")" end
    return setmetatable({ dir = dir, kind = "file" }, File)
end

-- The default lease of a lock in the memory and shared-dict stores: a
-- holder that never unlocks (a killed light thread) frees it after this.
local LEASE = 60

-- The clock of the memory and shared-dict stores' expiries.
local now = core.now

local Memory = {}
Memory.__index = Memory

local MemoryLock = {}
MemoryLock.__index = MemoryLock

function MemoryLock:unlock()
    local held = self.store.locks[self.key]
    if held and held.lock == self then self.store.locks[self.key] = nil end
end

function Memory:get(key)
    local entry = self.records[key]
    if not entry then return nil end
    if entry.until_at and now() >= entry.until_at then
        self.records[key] = nil
        return nil
    end
    -- a copy: the caller may change it
    local record = {}
    for k, v in pairs(entry.record) do record[k] = v end
    return record
end

function Memory:set(key, _, record, ttl)
    local copy = {}
    for k, v in pairs(record) do copy[k] = v end
    self.records[key] = { record = copy, until_at = ttl and now() + ttl }
    return true
end

function Memory:try_lock(key)
    local held = self.locks[key]
    if held and now() < held.until_at then return false end
    local lock = setmetatable({ store = self, key = key }, MemoryLock)
    self.locks[key] = { lock = lock, until_at = now() + self.lease }
    return lock
end

Memory.delete_token_if = delete_token_if

--- A store in this Lua state's memory (for one process; specs).
function _M.memory(lease)
    return setmetatable({ records = {}, locks = {}, lease = lease or LEASE, kind = "memory" },
        Memory)
end

local Shm = {}
Shm.__index = Shm

local ShmLock = {}
ShmLock.__index = ShmLock

function ShmLock:unlock()
    -- compare before delete: a lock that lapsed may be another's now
    if self.dict:get(self.key) == self.owner then self.dict:delete(self.key) end
end

function Shm:get(key, secret)
    local name = self.prefix .. key
    local sealed = self.dict:get(name)
    if type(sealed) ~= "string" then return nil end
    local text = core.open(secret, sealed, name)
    local record = text and decode(text)
    if type(record) ~= "table" then return nil end
    return record
end

function Shm:set(key, secret, record, ttl)
    local text = encode(record)
    if not text then return nil, "the record cannot be encoded" end
    local name = self.prefix .. key
    return self.dict:set(name, core.seal(secret, text, name), ttl or 0)
end

function Shm:try_lock(key)
    self.nonce = self.nonce + 1
    local owner = ("%d %d %.0f"):format(ngx.worker.pid(), -- luacheck: ignore
        self.nonce, core.random() * 2^53)
    local lock_key = self.prefix .. key .. ":lock"
    local ok, why = self.dict:safe_add(lock_key, owner, self.lease)
    if ok then return setmetatable({ dict = self.dict, key = lock_key, owner = owner }, ShmLock) end
    if why == "exists" then return false end
    return nil, "lua_shared_dict: " .. tostring(why)
end

Shm.delete_token_if = delete_token_if

--- A store in the lua_shared_dict named `dict_name`, for every worker of
-- an nginx: the store, or nil and why.
function _M.shm(dict_name, lease)
    local shared = ngx and ngx.shared -- luacheck: ignore
    local dict = shared and shared[dict_name]
    if not dict then
        return nil, "there is no lua_shared_dict '" .. tostring(dict_name) .. "'"
    end
    return setmetatable({ dict = dict, prefix = "oauth2-store:", lease = lease or LEASE,
                          nonce = 0, kind = "shm" }, Shm)
end

-- ------------------------------------------------------------------ redis

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
-- record's time to live.
local DELETE_TOKEN_IF = [[
local value = redis.call("GET", KEYS[1])
if not value or string.sub(value, 1, 64) ~= ARGV[1] then return 0 end
local ttl = redis.call("PTTL", KEYS[1])
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

-- Seconds between attempts to reach a Redis that is down: no storm
-- against one that restarts.
local RECONNECT_PAUSE = 2

-- Seconds between two looks at the store by a holder of a fresh copy.
local LOOK_EVERY = 4

local Redis = {}
Redis.__index = Redis

local RedisLock = {}
RedisLock.__index = RedisLock

-- The connection, (re)made at most once per RECONNECT_PAUSE; nil and why.
function Redis:connection()
    local conn = self.conn
    if conn and conn:is_open() then return conn end
    local at = now()
    if at < self.retry_at then return nil, self.last_problem end
    local why
    conn, why = core.redis(self.host, self.port, self.connect_timeout, self.timeout)
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
    if not conn then
        self.retry_at, self.last_problem = at + RECONNECT_PAUSE, why
        self.errors = self.errors + 1
        return nil, why
    end
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

-- One command over a cosocket (inside nginx, never blocking a worker);
-- the connection goes back to the pool after it.
function Redis:cosocket_command(redis, name, ...)
    local at = now()
    if at < self.retry_at then return nil, self.last_problem end
    local red = redis:new()
    red:set_timeout(math.ceil(self.timeout * 1000))
    -- a pool of this store's own: AUTH and SELECT run on new connections
    -- only, so a connection never serves another database or user
    local ok, why = red:connect(self.host, self.port, { pool = self.pool })
    if ok and red:get_reused_times() == 0 then
        if self.password then
            if self.user then ok, why = red:auth(self.user, self.password)
            else ok, why = red:auth(self.password) end
        end
        if ok and self.db and self.db ~= 0 then ok, why = red:select(self.db) end
    end
    if not ok then
        red:close()
        self.retry_at, self.last_problem = at + RECONNECT_PAUSE, "redis: " .. tostring(why)
        self.errors = self.errors + 1
        return nil, self.last_problem
    end
    local reply
    reply, why = red[name:lower()](red, ...)
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
-- phases, which may block) through hiredis in the C core.
function Redis:command(...)
    if ngx and ngx.get_phase and COSOCKET_PHASES[ngx.get_phase()] then
        local redis = cosocket_redis()
        if redis then return self:cosocket_command(redis, ...) end
    end
    local conn, why = self:connection()
    if not conn then return nil, why end
    local reply
    reply, why = conn:command(...)
    if reply == nil then
        self.errors = self.errors + 1
        if not conn:is_open() then self.retry_at = now() + RECONNECT_PAUSE end
        self.last_problem = why
    end
    return reply, why
end

function Redis:get(key, secret)
    local name = self.prefix .. key
    local value = self:command("EVAL", GET_BOUNDED, 1, name, MAX_RECORD)
    if type(value) ~= "string" then
        if value == false then self.misses = self.misses + 1 end
        return nil
    end
    local text = core.open(secret, value:sub(65), name)
    local record = text and decode(text)
    if type(record) ~= "table" then return nil end
    self.hits = self.hits + 1
    return record
end

-- The value for a record kept at `name`: its token's id (a hash: no
-- token), the record sealed for that name.  Nil and why when the record
-- cannot be encoded.
local function redis_value(secret, record, name)
    local text = encode(record)
    if not text then return nil, "the record cannot be encoded" end
    local token_id = type(record.access_token) == "string"
        and _M.token_id(secret, record.access_token) or NO_TOKEN_ID
    return token_id .. core.seal(secret, text, name)
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

function Redis:try_lock(key)
    local name = self.prefix .. key .. ":lock"
    self.nonce = self.nonce + 1
    local owner = core.sha256(tostring(core.time()) .. " " .. self.nonce .. " "
        .. ("%.0f"):format(core.random() * 2^53) .. tostring(self))
    local reply, why = self:command("SET", name, owner, "NX", "PX",
        math.ceil(self.lease * 1000))
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

function Redis:delete_token_if(key, secret, token_id)
    local record = self:get(key, secret)
    if not record then return false end
    local value = redis_value(secret, without_token(record, token_id), self.prefix .. key)
    if not value then return false end
    return self:command("EVAL", DELETE_TOKEN_IF, 1, self.prefix .. key, token_id, value) == 1
end

--- Counters: hits, misses, lease_wins, lease_losses, errors.
function Redis:stats()
    return { hits = self.hits, misses = self.misses, lease_wins = self.lease_wins,
             lease_losses = self.lease_losses, errors = self.errors }
end

function Redis:__tostring()
    return ("oauth2.store redis %s:%d/%d"):format(self.host, self.port, self.db or 0)
end

-- Store URLs of a scheme this library does not speak, and what to do.
local UNSUPPORTED_SCHEMES = {
    rediss = "TLS to Redis (rediss://) is not supported: reach Redis on a trusted "
        .. "network, or through a TLS tunnel on loopback, with redis://",
    unix = "a Redis unix socket is not supported: use redis://127.0.0.1:port",
    ["redis+socket"] = "a Redis unix socket is not supported: use redis://127.0.0.1:port",
}

--- The scheme of a store given as a URL, in lower case ("redis"), or nil
-- for a text that is no URL (a directory).
function _M.url_scheme(text)
    local scheme = text:match("^(%a[%w+.-]+):")
    return scheme and scheme:lower()
end

--- A Redis store outside nginx (hiredis in the C core), from
-- "redis://[user:password@]host[:port][/db]" or a table { url = ...,
-- prefix =, connect_timeout =, timeout = (seconds, default 1), lease =,
-- pool_size =, look_every = (seconds between two looks of a process or
-- nginx node at the store while its own copy is fresh, default 4: how
-- soon a token rejected elsewhere is dropped everywhere) }: the store, or
-- nil and why.  The password is never shown.
function _M.redis(spec)
    if type(spec) == "string" then spec = { url = spec } end
    if type(spec) ~= "table" or type(spec.url) ~= "string" then
        return nil, "a redis store needs a redis://host:port URL"
    end
    -- (no message repeats the URL: it may carry a password)
    local scheme = _M.url_scheme(spec.url)
    if scheme ~= "redis" then
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
        pool = ("oauth2:%s:%d/%d:%s"):format(host, port, db,
            core.hmac_sha256("redis pool", (user or "") .. "\n" .. (password or "")):sub(1, 16)),
        prefix = spec.prefix or "oauth2:",
        connect_timeout = spec.connect_timeout or 1, timeout = spec.timeout or 1,
        lease = spec.lease or LEASE, pool_size = pool_size or 4,
        look_every = spec.look_every or LOOK_EVERY,
        conn = nil, retry_at = -math.huge, last_problem = nil, nonce = 0, kind = "redis",
        hits = 0, misses = 0, lease_wins = 0, lease_losses = 0, errors = 0,
    }, Redis)
end

--- An identifier of a token that names it without showing it: a keyed
-- hash with the client secret, so that even someone who holds a token
-- cannot tell which entry of a store holds it.
function _M.token_id(secret, access_token)
    return core.hmac_sha256(secret, "token id\n" .. access_token)
end

return _M
