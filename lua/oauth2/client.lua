-- oauth2.client: a cached, self-refreshing access token.
--
--   local client = oauth2.client { client_id = ..., client_secret = ... }
--   local header, err = client:header()      -- "Bearer ..." at almost no cost
--
-- A configuration of oauth2.cache: its first layer is this Lua state's
-- memory (clients with the same key and policy share one entry), its
-- shared layer the `store` option (file, Redis, an object), its source
-- the token endpoint.  The engine fetches, refreshes ahead, serves the
-- old token while a refresh fails (stale while revalidate), cools down
-- after failures and spreads invalidations; the client keeps its hot
-- path (one compare on its own clock, monotonic by default), its
-- counters and its words.  A User API token (api_token) is served as it
-- is by oauth2.static instead.

local core = require "oauth2.core"
local options = require "oauth2.options"
local endpoint = require "oauth2.endpoint"
local bearer = require "oauth2.bearer"
local stores = require "oauth2.store"
local cache = require "oauth2.cache"
local policy_rules = require "oauth2.policy"
local errors = require "oauth2.error"
local transport = require "oauth2.transport"
local static = require "oauth2.static"

local type, pairs, error, pcall, setmetatable, tostring =
      type, pairs, error, pcall, setmetatable, tostring
local max, min, floor, huge = math.max, math.min, math.floor, math.huge
local format = string.format

local _M = { _VERSION = core._VERSION }

local checks = options.checks

-- The stores a client takes.
local STORES = { memory = true, file = true, redis = true, object = true,
    phrase = '"memory", "file", a directory, a redis:// URL (or its table) or a store object' }

-- The client's own options beside oauth2.token's and the cache policy's:
-- name = { default, check } (oauth2.options.split).
local OWN = {
    aid = { false, checks.aid },
    headers = { false, checks.headers },
    clock = { false, checks.callable() },
    on_event = { false, checks.callable("(event, info)") },
    -- API requests wait out an exhausted rate limit instead of drawing a 429
    pace = { false, checks.boolean },
    store = { false, function(value) return stores.option(value, STORES) end },
}

-- Seconds past a fetch's deadline after which it counts as abandoned.
local FETCH_GRACE = 1

-- ---------------------------------------------------------- first layers

-- What a client's hot path reads, made at every write of its entry's
-- record (times on the layer's clock): the token object, its header, and
-- serve_until, the earlier of the next point a refresh may be tried and
-- the next look at a shared store.
local function viewer(clock)
    return function(entry, record)
        local token = record and record.access_token
        if type(token) == "string" and type(record.expire_at) == "number" then
            if entry.access_token ~= token then
                local expires_in = type(record.expires_in) == "number"
                    and floor(record.expires_in) or nil
                entry.token = bearer.new {
                    access_token = token, token_type = record.token_type,
                    scope = record.scope, expires_in = expires_in,
                    -- whole seconds since the epoch, as oauth2.token gives it
                    expires_at = expires_in and floor(core.time() - clock()
                        + record.fetched_at + expires_in) or nil,
                }
                entry.header = bearer.header(token)
                entry.access_token = token
            end
            entry.fetched_at, entry.lifetime = record.fetched_at, record.lifetime or 0
            entry.refresh_at, entry.expire_at = record.refresh_at, record.expire_at
            entry.next_at = policy_rules.next_try(record)
        else
            entry.token, entry.header, entry.access_token = nil, nil, nil
            entry.refresh_at, entry.expire_at, entry.next_at = -huge, -huge, -huge
        end
        entry.retry_at = record and record.next_try or -huge
        entry.serve_until = min(entry.next_at, entry.look_at or huge)
    end
end

-- The first layer of the clients on one clock: entries by key, each
-- alive while a client holds it.
local firsts = setmetatable({}, { __mode = "k" })

local function first_layer(clock)
    local store = firsts[clock]
    if not store then
        store = stores.memory { clock = clock, weak = true, view = viewer(clock) }
        firsts[clock] = store
    end
    return store
end

-- The key of an entry: the token's cache key (oauth2.policy) and the
-- policy that times it.
local function entry_key(token_key, policy)
    return format("%s\n%s %.17g %.17g %.17g %.17g %.17g", token_key, tostring(policy.margin),
        policy.refresh_ratio, policy.refresh_jitter, policy.default_lifetime,
        policy.cooldown, policy.invalidate_cooldown)
end

-- ---------------------------------------------------------------- client

local Client = {}
Client.__index = Client

-- oauth2.api, loaded on first use: it takes a client as its token source
-- and never loads this module.
local function api()
    return require "oauth2.api"
end

-- Everything but the fresh-token case: looks, refreshes, stale serving,
-- cool-downs, all decided by the engine.
local function slow_token(self, now)
    local entry = self.entry
    local look_at = entry.look_at
    if look_at and now >= look_at and entry.token then
        -- another process may hold a newer token or a cool-down, or have
        -- seen this one rejected: looked at every look_every seconds (the
        -- bound moves on also for a client of the entry that has no
        -- store, so its hot path stays a hit)
        entry.look_at = now + self.look_every
        entry.serve_until = min(entry.next_at, entry.look_at)
        if self.shared then self.engine:look() end
        if now < entry.serve_until then
            self.hits = self.hits + 1
            return entry.token
        end
    end
    local record, err, how = self.engine:get()
    if record then
        now = self.clock()
        if entry.token and now < entry.expire_at then
            if how ~= "fetched" then self.hits = self.hits + 1 end
            if how == "stale" then self.counters.stale = self.counters.stale + 1 end
            return entry.token
        end
        -- it lapsed while it was taken: never served past its expiry
        return nil, self.last_error or errors.new { kind = "timeout", retryable = true,
            retry_after = 1, message = "the shared token expired while it was taken" }
    end
    return nil, err
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

--- Drop the token (the API answered 401 with it) here and in the store.
-- The next fetch waits until invalidate_cooldown has passed since the
-- last one, so a 401 loop cannot hammer the token endpoint.  Returns true
-- if a token was dropped.
function Client:invalidate()
    return self.engine:invalidate()
end

--- What is cached for this client, never the token itself: token_type,
-- scope, fetched_at, refresh_at and expires_at (Unix times: when it was
-- asked for, when a call refreshes it, when it stops being served) and
-- `store` (where it is kept); nil when no valid token is cached; nil and
-- the reason when the shared store failed.  Nothing is fetched.
function Client:cached()
    local record, why, now = self.engine:record(self.shared and "shared" or "first")
    if why then return nil, why end
    if not (record and type(record.access_token) == "string"
            and type(record.expire_at) == "number" and now < record.expire_at) then
        return nil
    end
    local delta = core.time() - now
    return { token_type = record.token_type, scope = record.scope,
             fetched_at = floor(record.fetched_at + delta),
             refresh_at = floor(record.refresh_at + delta),
             expires_at = floor(record.expire_at + delta),
             store = self.shared and tostring(self.shared) or "memory" }
end

--- Forget the token: in this process and in the shared store, for every
-- holder of a copy, with no cool-down; the next call fetches.  A lock
-- another process holds is waited for within the deadline.  Returns
-- whether a token was forgotten; nil and why when it could not be (the
-- store failed, or its lock stayed held).
function Client:forget()
    return self.engine:forget()
end

--- Counters and state: fetches, hits, refreshes, retries, failures, stale
-- (old token served while its refresh failed or ran elsewhere),
-- invalidations, store_errors, budget_waits (fetches the fleet's budget
-- put off), last_error, expires_in (seconds until the
-- token's real expiry, nil without one), and with a Redis store, `store`:
-- its hits, misses, lease_wins, lease_losses and errors.
function Client:stats()
    local stats = {}
    for k, v in pairs(self.counters) do stats[k] = v end
    local engine = self.engine.counters
    stats.invalidations, stats.store_errors = engine.invalidations, engine.store_errors
    stats.budget_waits = engine.budget_waits
    stats.hits = self.hits
    stats.last_error = self.last_error
    local shared = self.shared
    if shared and shared.stats then stats.store = shared:stats() end
    local entry = self.entry
    if entry.token then stats.expires_in = entry.fetched_at + entry.lifetime - self.clock() end
    return stats
end

-- Tell the on_event hook (if any) what happened; the hook never sees a
-- secret or a token, and an error it raises is not the caller's.
function Client:emit(event, info)
    local hook = self.on_event
    if hook then pcall(hook, event, info) end
end

--- An authenticated API request with this client's token (oauth2.api):
-- res {status, headers, body, json} or nil and an error.
function Client:request(method, target, opts)
    local call, why = api().check(self.conf, method, target, opts, self)
    if not call then error(why, 2) end
    return api().send(self, call)
end

--- An iterator over the pages of an API listing (oauth2.api).
function Client:pages(target, opts)
    local pages, why = api().pages(self, target, opts)
    if not pages then error(why, 2) end
    return pages
end

--- An iterator over the items of an API listing (oauth2.api): the
-- elements of `field` on every page.
function Client:items(target, field, opts)
    local items, why = api().items(self, target, field, opts)
    if not items then error(why, 2) end
    return items
end

--- Close the client; idempotent.  It holds no connection between fetches
-- (each fetch opens and closes its own, unless opts.session was given,
-- which stays the caller's); its API connection, if any, is closed.  The
-- shared token stays for other clients with the same key.
function Client:close()
    local loaded = package.loaded["oauth2.api"]
    if loaded then loaded.close(self) end
    static.closed(self)
end
Client.__close = Client.close

-- The client's state in a word, for tostring.
local function state(self)
    local entry = self.entry
    if entry.token == nil then return self.last_error and "failing" or "empty" end
    local now = self.clock()
    if now < entry.refresh_at then return "valid" end
    if now < entry.expire_at then return "refreshing" end
    return "expired"
end

function Client:__tostring()
    local text = format("oauth2.client host=%s client_id=%s state=%s",
        options.url_origin(self.conf.url), self.conf.client_id, state(self))
    local entry = self.entry
    if entry.token then
        text = text .. format(" expires_in=%d",
            floor(max(0, entry.fetched_at + entry.lifetime - self.clock())))
    end
    return text
end

-- One fetch through the endpoint for the engine, within `deadline`
-- seconds (a refresh's) or the configured one; counted and told.
local function source(self)
    return function(deadline)
        local stats = self.counters
        local ok, token, err, attempts = pcall(self.endpoint.token, self.endpoint, deadline)
        if not ok then error(token, 0) end
        stats.fetches = stats.fetches + 1
        stats.retries = stats.retries + (attempts or 1) - 1
        if (attempts or 1) > 1 then self:emit("retry", { attempts = attempts }) end
        if token then
            if deadline then stats.refreshes = stats.refreshes + 1 end
            self:emit(deadline and "refresh" or "fetch", { attempts = attempts or 1,
                expires_in = token.expires_in })
            return token
        end
        stats.failures = stats.failures + 1
        self.last_error = err
        return nil, err
    end
end

--- Check a configuration without fetching or connecting: oauth2.token's
-- options, the cache policy and the client's own (a Redis URL is parsed,
-- not reached).  Raises at the caller's line on a mistake; returns true.
-- For a check command.
function _M.check(opts)
    local conf, why = options.split(opts, OWN, true)
    if not conf then error(why, 2) end
    return true
end

--- A new client; opts are oauth2.token's options plus the cache policy.
-- Returns the client, or nil and a message for bad options.
function _M.new(opts)
    local conf, policy, own = options.split(opts, OWN, true)
    if not conf then return nil, policy end
    if conf.api_token then return static.new(conf, own, Client) end
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
    local self = {
        conf = conf,
        endpoint = prepared,
        policy = policy,
        clock = clock,
        entry = entry,       -- the first layer's view: what the hot path reads
        shared = shared,     -- a store shared with other processes, or nil
        look_every = shared and shared.look_every or policy_rules.LOOK_EVERY,
        hits = 0,            -- calls served from the cache (a field: the hot path)
        counters = { fetches = 0, refreshes = 0, retries = 0, failures = 0, stale = 0 },
        last_error = nil,
        on_event = own.on_event or nil,
        aid = own.aid or nil,          -- added to API requests that name no aid
        headers = own.headers or nil,  -- sent with every API request
        pace = own.pace,               -- API requests wait out an exhausted rate limit
        -- the hot path's method in the object itself: one table lookup
        -- fewer per call than through the metatable (about 10 ns on 5.4)
        token = Client.token,
    }
    self.engine = cache.new {
        source = source(self), policy = policy, secret = conf.client_secret or conf.access_token,
        first = first, first_key = key, shared = shared, key = token_key,
        clock = clock, deadline = conf.deadline, lease = cache.lease_for(conf),
        -- a fetch of another light thread of this worker holds callers
        -- without a token until it lapses; elsewhere none can wait
        first_lease = conf.deadline + FETCH_GRACE, first_patience = conf.deadline + FETCH_GRACE,
        first_pace = { 0.002, 0.02 },
        first_wait = function(seconds)
            if not transport.can_yield() then return false end
            transport.sleep(seconds)
            return true
        end,
        wait = function(seconds)
            transport.sleep(seconds)
            return true
        end,
        log = transport.log, place = "process",
        emit = function(event, info) self:emit(event, info) end,
    }
    return setmetatable(self, Client)
end

return _M
