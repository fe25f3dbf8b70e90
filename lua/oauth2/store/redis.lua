-- oauth2.store.redis: processes and nginx nodes on many machines.
--
-- Through oauth2.link (one server, Sentinel or Cluster; cosockets or
-- hiredis).  A record's value is its token's id, then the record sealed
-- for its key; a lease is SET NX PX with an owner nonce, let go by a
-- compare-and-delete script.  An error reply (-READONLY, -OOM) is a store
-- failure like a broken connection, never a held lease.

local core = require "oauth2.core"
local record_codec = require "oauth2.record"
local policy_rules = require "oauth2.policy"
local link = require "oauth2.link"

local type, ipairs, setmetatable, tostring =
      type, ipairs, setmetatable, tostring
local unpack = table.unpack or unpack -- luacheck: ignore (5.1)

local _M = {}

-- Compare-and-delete: the key goes only while it holds ARGV[1].
local DELETE_IF_SAME = [[
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
end
return 0
]]

-- The id part of a record's value without a token (ids are 64 hex
-- digits): id and record in one key, so none meets an id and a record of
-- two writes.
local NO_TOKEN_ID = ("-"):rep(64)

-- Drop a record's token only while its id is ARGV[1]: ARGV[2] takes its
-- place, with the record's time to live or ARGV[3] ms when longer.
local DELETE_TOKEN_IF = [[
local value = redis.call("GET", KEYS[1])
if not value or string.sub(value, 1, 64) ~= ARGV[1] then return 0 end
local ttl = redis.call("PTTL", KEYS[1])
if ttl > 0 then
    redis.call("SET", KEYS[1], ARGV[2], "PX", math.max(ttl, tonumber(ARGV[3]) or 0))
else
    redis.call("SET", KEYS[1], ARGV[2])
end
return 1
]]

-- A record's value only while it is small: a value planted at its key
-- never reaches a client whole.  Records are a few KiB.
local GET_BOUNDED = [[
local value = redis.call("GET", KEYS[1])
if value and #value > tonumber(ARGV[1]) then
    return redis.error_reply("oauth2: the record is larger than the store takes")
end
return value
]]
local MAX_RECORD = 65536

-- A record's version moves on at every write: a field per key in one hash
-- that lives VERSIONS_LIFE seconds past its last write.
local BUMP = [[
redis.call("HINCRBY", KEYS[1], ARGV[1], 1)
redis.call("EXPIRE", KEYS[1], ARGV[2])
return 1
]]

-- Seconds a record's version stays known after a write, and the most
-- versions asked in one command.
local VERSIONS_LIFE = 86400
local VERSIONS_AT_ONCE = 1000

-- The keys this Lua state watches in each store (by URL and prefix) and
-- their versions as last read: one HMGET for all, every look_every.
local watched = setmetatable({}, { __mode = "v" })

-- oauth2.policy.budget_draw in Redis, by its clock, so no two draws meet.
-- ARGV: seconds between slots, the longest wait.  {1, seconds to wait for
-- the slot taken} or {0, seconds until one}.
local DRAW = [[
local t = redis.call("TIME")
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local at = math.max(tonumber(redis.call("GET", KEYS[1]) or "") or now, now)
if at - now > tonumber(ARGV[2]) then return {0, tostring(at - now)} end
local next_at = at + tonumber(ARGV[1])
redis.call("SET", KEYS[1], string.format("%.6f", next_at), "PX",
    math.ceil((next_at - now) * 1000) + 1000)
return {1, tostring(at - now)}
]]

local Redis = {}
Redis.__index = Redis

--- The store's clock: every node times shared records alike.
function Redis:now()
    return self.link:now()
end

local RedisLock = {}
RedisLock.__index = RedisLock

-- The name of a key's record (its lock's adds ":lock"): in a Cluster with
-- the key as hash tag, so both share a slot.
function Redis:name_of(key)
    if self.link.mode == "cluster" then return self.prefix .. "{" .. key .. "}" end
    return self.prefix .. key
end

function Redis:get(key, secret)
    local name = self:name_of(key)
    local value, why = self.link:call(name, "EVAL", GET_BOUNDED, 1, name, MAX_RECORD)
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

-- The value of a record kept at `name`: its token's id, then the record
-- sealed for that name; or nil and why.
local function redis_value(secret, record, name)
    local sealed, why = record_codec.seal(secret, record, name)
    if not sealed then return nil, why end
    local token_id = type(record.access_token) == "string"
        and record_codec.token_id(secret, record.access_token) or NO_TOKEN_ID
    return token_id .. sealed
end

function Redis:set(key, secret, record, ttl)
    local name = self:name_of(key)
    local value, why = redis_value(secret, record, name)
    if not value then return nil, why end
    local ok
    if ttl and ttl > 0 then
        ok, why = self.link:call(name, "SET", name, value, "PX", math.ceil(ttl * 1000))
    else
        ok, why = self.link:call(name, "SET", name, value)
    end
    if not ok then return nil, why end
    self:bump(key)
    return true
end

-- Move a key's version on after a write (a failure is a look missed).
function Redis:bump(key)
    local versions = self.prefix .. "versions"
    self.link:call(versions, "EVAL", BUMP, 1, versions, key, VERSIONS_LIFE)
end

--- Whether the record of `key` may have been written since saw(key), by
-- the versions of every key watched here, read in one command at most
-- every look_every; nil and why when the store failed.
function Redis:changed(key)
    local watch = self.watch
    if not watch.keys[key] then
        -- (read with the others from the next time on)
        watch.keys[key] = true
        watch.list[#watch.list + 1] = key
    end
    local at = core.now()
    if at >= watch.at + self.look_every * 0.9 then
        local versions, list = self.prefix .. "versions", watch.list
        for first = 1, #list, VERSIONS_AT_ONCE do
            local last = math.min(first + VERSIONS_AT_ONCE - 1, #list)
            local reply, why = self.link:call(versions, "HMGET", versions,
                unpack(list, first, last))
            if type(reply) ~= "table" then return nil, why or "redis: no versions" end
            for i = first, last do watch.versions[list[i]] = reply[i - first + 1] or false end
        end
        watch.at = at
    end
    local version = watch.versions[key]
    self.pending[key] = version
    -- (not known yet: read; false: no write since versions were kept)
    return version == nil or version ~= self.seen[key]
end

--- The record of `key` was read after changed(key).
function Redis:saw(key)
    self.seen[key] = self.pending[key]
end

function Redis:try_lock(key, lease)
    local name = self:name_of(key) .. ":lock"
    self.nonce = self.nonce + 1
    local owner = core.sha256(tostring(core.time()) .. " " .. self.nonce .. " "
        .. ("%.0f"):format(core.random() * 2^53) .. tostring(self))
    local reply, why = self.link:call(name, "SET", name, owner, "NX", "PX",
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
    self.store.link:call(self.key, "EVAL", DELETE_IF_SAME, 1, self.key, self.owner)
end

function Redis:delete_token_if(key, secret, token_id, cooldown, ttl)
    local record = self:get(key, secret)
    if not record then return false end
    local name = self:name_of(key)
    local value = redis_value(secret, record_codec.without_token(record, token_id, cooldown),
        name)
    if not value then return false end
    local dropped = self.link:call(name, "EVAL", DELETE_TOKEN_IF, 1, name, token_id, value,
        math.ceil((ttl or 0) * 1000)) == 1
    if dropped then self:bump(key) end
    return dropped
end

--- One token request drawn from the budget of every credential under
-- `budget_key`: the seconds to wait for the slot taken, false and the
-- seconds until one, or nil and why (the store failed).
function Redis:draw(max_wait)
    local name = self.prefix .. "budget:" .. self.budget_key
    local reply, why = self.link:call(name, "EVAL", DRAW, 1, name, 60 / self.budget,
        ("%.3f"):format(max_wait))
    if type(reply) ~= "table" then return nil, why or "redis: a budget reply that is no list" end
    local seconds = tonumber(reply[2]) or 0
    if reply[1] == 1 then return seconds end
    return false, seconds
end

--- Counters: hits, misses, lease_wins, lease_losses, errors.
function Redis:stats()
    return { hits = self.hits, misses = self.misses, lease_wins = self.lease_wins,
             lease_losses = self.lease_losses, errors = self.link.errors }
end

function Redis:__tostring()
    return "oauth2.store " .. tostring(self.link)
end

-- The table form's options beside `url` (docs/stores.md): each check
-- says what is wrong with a value, or nothing.
local function seconds(v)
    return not (type(v) == "number" and v > 0 and v <= 3600)
        and "must be a number of seconds above 0 and at most 3600"
end
local function text(v) return type(v) ~= "string" and "must be a string" end
local OPTIONS = {
    { "budget", function(v)
        return v ~= false and not (type(v) == "number" and v >= 1 and v <= 100000)
            and "must be a number of token requests a minute (1 to 100000), or false for none"
    end },
    { "budget_key", function(v) return (type(v) ~= "string" or v == "") and "must be a name" end },
    { "connect_timeout", seconds }, { "lease", seconds }, { "look_every", seconds },
    { "pool_size", function(v)
        return not (type(v) == "number" and v == math.floor(v) and v >= 1 and v <= 1000)
            and "must be a whole number from 1 to 1000"
    end },
    { "prefix", text },
    { "sentinel_password", text }, { "sentinel_user", text },
    { "server_name", function(v)
        return not (type(v) == "string" and v:match("^[%w.-]+$")) and "must be a host name"
    end },
    { "timeout", seconds },
}

--- A Redis store, from a URL (oauth2.link's forms: redis://, rediss://,
-- redis+sentinel://, redis+cluster://) or a table { url = ..., ... } with
-- the options above (docs/stores.md): the store, or nil and why.  No
-- password is ever shown.
function _M.new(spec)
    if type(spec) == "string" then spec = { url = spec } end
    if type(spec) ~= "table" or type(spec.url) ~= "string" then
        return nil, "a redis store needs a redis://host:port URL"
    end
    for _, option in ipairs(OPTIONS) do
        local name, value = option[1], spec[option[1]]
        local why = value ~= nil and option[2](value)
        if why then return nil, "redis store option '" .. name .. "' " .. why end
    end
    local budget = spec.budget
    local connection, why = link.new(spec)
    if not connection then return nil, why end
    local prefix = spec.prefix or "oauth2:"
    local identity = tostring(connection) .. " " .. prefix
    local watch = watched[identity] or { keys = {}, list = {}, versions = {}, at = -math.huge }
    watched[identity] = watch
    return setmetatable({
        watch = watch, seen = {}, pending = {},
        link = connection,
        prefix = prefix,
        lease = spec.lease or policy_rules.LEASE,
        look_every = spec.look_every or policy_rules.LOOK_EVERY,
        nonce = 0, kind = "redis",
        budget = budget == nil and policy_rules.BUDGET or budget or nil,
        budget_key = spec.budget_key or "budget",
        atomic = true, -- delete_token_if runs in Redis: no lock needed
        hits = 0, misses = 0, lease_wins = 0, lease_losses = 0,
    }, Redis)
end

return _M
