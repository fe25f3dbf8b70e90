-- oauth2.client: a cached, self-refreshing access token.
--
--   local client = oauth2.client { client_id = ..., client_secret = ... }
--   local header, err = client:header()      -- "Bearer ..." at almost no cost
--
-- oauth2.cache configured for one Lua state: its first layer is this
-- state's memory (clients of one key and policy share an entry), its
-- shared layer the `store` option, its source the token endpoint.  The
-- client keeps its hot path (one compare on its own clock) and words.

local core = require "oauth2.core"
local options = require "oauth2.options"
local endpoint = require "oauth2.endpoint"
local bearer = require "oauth2.bearer"
local stores = require "oauth2.store"
local cache = require "oauth2.cache"
local policy_rules = require "oauth2.policy"
local records = require "oauth2.record"
local errors = require "oauth2.error"
local transport = require "oauth2.transport"
local static = require "oauth2.static"

local type, pairs, setmetatable, tostring = type, pairs, setmetatable, tostring
local max, min, floor, huge = math.max, math.min, math.floor, math.huge
local format = string.format

local _M = { _VERSION = core._VERSION }

local checks = options.checks

-- The client's own options (oauth2.options.split): name = { default, check }.
local OWN = {
    aid = { false, checks.aid },
    headers = { false, checks.headers },
    clock = { false, checks.callable() },
    on_event = { false, checks.callable("(event, info)") },
    pace = { false, checks.boolean }, -- API requests wait out an exhausted rate limit
    store = { false, function(value)
        return stores.option(value, { memory = true, file = true, redis = true, object = true,
            phrase = '"memory", "file", a directory, a redis:// URL (or its table) or a '
                .. 'store object' })
    end },
}

-- What a client's hot path reads, made at every write of its entry's
-- record (entry.record, times on the layer's clock): the token object,
-- its header and serve_until, the earlier of the next point a refresh may
-- be tried and the next look at a shared store.
local function viewer(clock)
    return function(entry, record)
        local token = record and record.access_token
        if type(token) ~= "string" or type(record.expire_at) ~= "number" then
            entry.token, entry.header = nil, nil
        elseif not (entry.token and entry.token.access_token == token) then
            local expires_in = type(record.expires_in) == "number" and floor(record.expires_in)
                or nil
            entry.token = bearer.new {
                access_token = token, token_type = record.token_type,
                scope = record.scope, expires_in = expires_in,
                -- whole seconds since the epoch, as oauth2.token gives it
                expires_at = expires_in and floor(core.time() - clock()
                    + record.fetched_at + expires_in) or nil,
            }
            entry.header = bearer.header(token)
        end
        entry.next_at = entry.token and policy_rules.next_try(record) or -huge
        entry.serve_until = min(entry.next_at, entry.look_at or huge)
    end
end

-- The first layer of the clients on one clock: entries by key, each
-- alive while a client holds it.
local firsts = setmetatable({}, { __mode = "k" })

local function first_layer(clock)
    local store = firsts[clock] or stores.memory { clock = clock, weak = true,
                                                   view = viewer(clock) }
    firsts[clock] = store
    return store
end

-- The key of an entry: the token's cache key and the policy that times it.
local function entry_key(token_key, policy)
    return format("%s\n%s %.17g %.17g %.17g %.17g %.17g", token_key, tostring(policy.margin),
        policy.refresh_ratio, policy.refresh_jitter, policy.default_lifetime,
        policy.cooldown, policy.invalidate_cooldown)
end

-- API requests, emit and close come from every client's base.
local Client = setmetatable({}, { __index = static.Base })
Client.__index = Client

-- Everything but a fresh token: looks, refreshes, stale serving and
-- cool-downs, all decided by the engine.
local function slow_token(self, now)
    local entry = self.entry
    local look_at = entry.look_at
    if look_at and now >= look_at and entry.token then
        -- another process may hold a newer token, a cool-down, or have seen
        -- this one rejected (the bound moves on also for a client of the
        -- entry without a store, so its hot path stays a hit)
        entry.look_at = now + self.look_every
        entry.serve_until = min(entry.next_at, entry.look_at)
        if self.shared then self.engine:look() end
        if now < entry.serve_until then
            self.hits = self.hits + 1
            return entry.token
        end
    end
    local record, err, how = self.engine:get()
    if not record then return nil, err end
    if entry.token and self.clock() < entry.record.expire_at then
        if how ~= "fetched" then self.hits = self.hits + 1 end
        if how == "stale" then self.counters.stale = self.counters.stale + 1 end
        return entry.token
    end
    -- it lapsed while it was taken: never served past its expiry
    return nil, self.engine.last_error or errors.new { kind = "timeout", retryable = true,
        retry_after = 1, message = "the shared token expired while it was taken" }
end

--- The token table while valid; fetches when there is none or it expired,
-- refreshes ahead of expiry.  Returns the token or nil and an error.
function Client:token()
    local entry = self.entry
    local now = self.clock()
    if now < entry.serve_until then
        self.hits = self.hits + 1
        return entry.token
    end
    return slow_token(self, now)
end

--- "Bearer <access_token>", or nil and an error.
function Client:header()
    local token, err = self:token()
    if not token then return nil, err end
    return self.entry.header
end

--- Drop the token (the API answered 401 with it) here and in the store;
-- the next fetch waits until invalidate_cooldown has passed since the
-- last one.  Whether a token was dropped.
function Client:invalidate()
    return self.engine:invalidate()
end

--- What is cached, never the token itself: token_type, scope, fetched_at,
-- refresh_at, expires_at (Unix times) and `store`; nil without a valid
-- token; nil and why when the shared store failed.  Nothing is fetched.
function Client:cached()
    local record, why, now = self.engine:record(self.shared and "shared" or "first")
    if why then return nil, why end
    if not records.usable(record, now) then return nil end
    local delta = core.time() - now
    return { token_type = record.token_type, scope = record.scope,
             fetched_at = floor(record.fetched_at + delta),
             refresh_at = floor(record.refresh_at + delta),
             expires_at = floor(record.expire_at + delta),
             store = self.shared and tostring(self.shared) or "memory" }
end

--- Forget the token here and in the shared store, with no cool-down (a
-- lock another process holds is waited for within the deadline): whether
-- a token was forgotten, or nil and why it could not be.
function Client:forget()
    return self.engine:forget()
end

-- Seconds the token held lives on from `now` (lifetime from its fetch),
-- or nil.
local function expires_in(self, now)
    local record = self.entry.token and self.entry.record
    return record and record.fetched_at + (record.lifetime or 0) - now
end

--- Counters and state (docs/client.md): fetches, hits, refreshes,
-- retries, failures, stale, invalidations, drops, store_errors,
-- budget_waits, last_error, expires_in; `store`, a Redis store's own.
function Client:stats()
    local stats = {}
    for k, v in pairs(self.counters) do stats[k] = v end
    stats.hits, stats.last_error = self.hits, self.engine.last_error
    stats.store = self.shared and self.shared.stats and self.shared:stats() or nil
    stats.expires_in = expires_in(self, self.clock())
    return stats
end

Client.__close = static.Base.close

function Client:__tostring()
    local now = self.clock()
    local record, left = self.entry.token and self.entry.record, expires_in(self, now)
    local state = not record and (self.engine.last_error and "failing" or "empty")
        or now < record.refresh_at and "valid" or now < record.expire_at and "refreshing"
        or "expired"
    return format("oauth2.client host=%s client_id=%s state=%s%s",
        options.url_origin(self.conf.url), self.conf.client_id, state,
        left and format(" expires_in=%d", floor(max(0, left))) or "")
end

--- Check a configuration without fetching or connecting (a Redis URL is
-- parsed, not reached): raises at the caller's line on a mistake, else
-- returns true.
_M.check = options.checker(OWN)

--- A new client; opts are oauth2.token's options plus the cache policy.
-- Returns the client, or nil and a message for bad options.
function _M.new(opts)
    local conf, policy, own = options.split(opts, OWN, true)
    if not conf then return nil, policy end
    if conf.api_token then return static.new(conf, own) end
    local clock = own.clock or transport.now
    -- no connection kept between fetches an hour apart, unless the caller
    -- passes a session of theirs
    local prepared, why = endpoint.prepare(conf, false)
    if not prepared then return nil, why end
    local shared = own.store or nil
    if type(shared) == "string" then
        local problem
        shared, problem = stores.file(shared ~= "file" and shared or nil)
        -- a store that cannot be used never fails a token: memory, and a word
        if not shared then
            transport.log("WARN", "oauth2: the token cache is not shared (" .. tostring(problem)
                .. "); this process keeps its own")
        end
    end
    local token_key = policy_rules.cache_key(conf)
    local first = first_layer(clock)
    local key = entry_key(token_key, policy)
    local entry = first:entry(key)
    if shared and entry.look_at == nil then
        -- the first call looks at the store (and so do the entry's next)
        entry.look_at, entry.serve_until = -huge, -huge
    end
    local self = setmetatable({
        conf = conf, endpoint = prepared, policy = policy, clock = clock,
        entry = entry,       -- the first layer's view: what the hot path reads
        shared = shared,     -- a store shared with other processes, or nil
        look_every = shared and shared.look_every or policy_rules.LOOK_EVERY,
        hits = 0,            -- calls served from the cache (a field: the hot path)
        counters = { stale = 0 }, on_event = own.on_event or nil,
        aid = own.aid or nil, headers = own.headers or nil, pace = own.pace,
        -- the hot path's method in the object: one lookup fewer per call
        token = Client.token,
    }, Client)
    self.engine = cache.new {
        source = function(deadline) return prepared:token(deadline) end,
        conf = conf, policy = policy,
        first = first, first_key = key, shared = shared, key = token_key, clock = clock,
        counters = self.counters, log = transport.log, on_event = own.on_event or nil,
    }
    return self
end

return _M
