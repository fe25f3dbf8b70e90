-- oauth2.client: a cached, self-refreshing access token.
--
--   local client = oauth2.client { client_id = ..., client_secret = ... }
--   local header, err = client:header()      -- "Bearer ..." at almost no cost
--
-- A client fetches a token when it has none, serves it from memory while it
-- is fresh, refreshes it ahead of expiry, and keeps serving the old token
-- while a refresh fails and the old one is still valid (stale while
-- revalidate).  Lifetimes run on a monotonic clock from the moment the
-- request was sent, so neither a slow answer nor a wall-clock jump can make
-- a token look fresher than it is.  Tokens live in a per-process store
-- keyed by host, client_id, scope, tenant, (hashed) secrets and the cache
-- policy, so clients with the same key share one token and clients with
-- different keys never see each other's.

local core = require "oauth2.core"
local options = require "oauth2.options"
local endpoint = require "oauth2.endpoint"
local bearer = require "oauth2.bearer"
local stores = require "oauth2.store"
local cache = require "oauth2.cache"
local policy_rules = require "oauth2.policy"
local errors = require "oauth2.error"
local transport = require "oauth2.transport"

local type, pairs, error, pcall, setmetatable, tostring =
      type, pairs, error, pcall, setmetatable, tostring
local max, min, floor, huge = math.max, math.min, math.floor, math.huge
local concat, format = table.concat, string.format

local _M = { _VERSION = core._VERSION }

-- A store option as the client keeps it: false (memory), a store object
-- (Redis, or the caller's) or the file store's directory ("file": the
-- default one); or nil and why.  Nothing is opened or reached here.
local function check_store(value)
    local kind = value ~= false and stores.kind_of(value)
    if value == false or kind == "memory" then return false end
    if kind == "redis" then
        local redis, problem = stores.redis(value)
        if not redis then return nil, ": " .. problem end
        return redis
    end
    if not kind then
        return nil, 'must be "memory", "file", a directory, a redis:// URL (or its table) '
            .. "or a store object"
    end
    return value
end

-- The client's own options beside oauth2.token's and the cache policy's:
-- name = { default, check } (oauth2.options.split).
-- The account group of API requests that name none: digits, as a string.
local function check_aid(value)
    if value == false then return false end
    if type(value) == "number" and value >= 0 and value == floor(value) then
        value = format("%d", value)
    end
    if type(value) ~= "string" or not value:find("^%d+$") then
        return nil, "must be an account group id (digits, such as \"1234\")"
    end
    return value
end

-- Headers sent with every API request (a call's own go over them): a
-- table of names and values, never Authorization.
local function check_headers(value)
    if value == false then return false end
    if type(value) ~= "table" then
        return nil, 'must map header names to values, such as { ["X-Trace"] = "on" }'
    end
    local headers = {}
    for name, text in pairs(value) do
        if type(name) ~= "string" or not name:find("^[%w!#$%%&'*+.^_`|~-]+$") then
            return nil, "must map header names (tokens such as X-Trace) to values"
        end
        if name:lower() == "authorization" then
            return nil, "must not set Authorization: the client does"
        end
        -- RFC 9110 5.5: no control character but a tab in a field value
        if type(text) ~= "string" or text:find("[%z\1-\8\10-\31\127]") then
            return nil, "must map header names to strings without control characters"
        end
        headers[name] = text
    end
    return headers
end

local OWN = {
    aid = { false, check_aid },
    headers = { false, check_headers },
    clock = { false, options.checks.callable },
    on_event = { false, options.checks.hook },
    -- API requests wait out an exhausted rate limit instead of drawing a 429
    pace = { false, options.checks.boolean },
    store = { false, check_store },
}

-- Numbers for clock functions, so clients on different clocks (whose
-- timelines cannot be compared) never share an entry.
local clock_ids = setmetatable({}, { __mode = "k" })
local clock_count = 0

local function clock_id(clock)
    if clock_ids[clock] == nil then
        clock_count = clock_count + 1
        clock_ids[clock] = clock_count
    end
    return clock_ids[clock]
end

-- The key of the process's entries: the token's cache key (oauth2.policy),
-- and the policy that times it, so thresholds can live in the shared entry.
local function entry_key(token_key, policy)
    return concat({
        token_key,
        format("%s %.17g %.17g %.17g %.17g %.17g %d", tostring(policy.margin),
            policy.refresh_ratio, policy.refresh_jitter, policy.default_lifetime,
            policy.cooldown, policy.invalidate_cooldown, clock_id(policy.clock)),
    }, "\n")
end

-- Entries by key; an entry lives as long as a client holds it.
local store = setmetatable({}, { __mode = "v" })

local function new_entry()
    return {
        token = nil,           -- the current token table
        header = nil,          -- "Bearer <access_token>", made once per token
        refresh_after = -huge, -- monotonic time from which a call refreshes
        look_at = huge,        -- with a shared store: the next look at it
        serve_until = -huge,   -- the hot path serves the token until then:
                               -- the earlier of refresh_after and look_at
        expire_after = -huge,  -- ... and from which the token counts as expired
        fetched_at = -huge,    -- monotonic time the successful request was sent
        lifetime = 0,          -- seconds the token is valid from fetched_at
        next_try = -huge,      -- no fetch before this (cool-downs)
        last_error = nil,      -- why the last fetch failed, until one succeeds
        shared_fetched_at = -huge, -- fetched_at (wall clock) of the token taken
                                   -- from or given to the shared store
        fetching_until = -huge, -- a fetch is under way (a yielding caller) until
                                -- then at the latest: a fetch whose owner never
                                -- comes back (a killed light thread) lapses
        alone_at = nil,        -- with the shared store unreachable, the point
                               -- from which this process fetches on its own
        failures = 0,          -- failed fetches in a row
        quiet_until = -huge,   -- another process fetches (or the store is
                               -- away): no look at the store before then
    }
end

-- A closed client points here: its token is never fresh, so the hot path
-- falls through to the slow path, which raises.
local CLOSED = new_entry()

local Client = {}
Client.__index = Client

-- oauth2.api, loaded on first use: it takes a client as its token source
-- and never loads this module.
local function api()
    return require "oauth2.api"
end

-- The hot path's one bound, after a change of refresh_after or look_at.
local function retime(entry)
    entry.serve_until = min(entry.refresh_after, entry.look_at)
end

-- Seconds until the entry's token really expires (margin not deducted).
local function seconds_left(self, entry)
    return entry.fetched_at + entry.lifetime - self.clock()
end

-- Seconds past a fetch's deadline after which it counts as abandoned.
local FETCH_GRACE = 1

-- A warning on stderr, or in nginx's error.log.
local function warn(text)
    transport.log("WARN", text)
end

-- Say a problem with the shared store once per cool-down, naming the
-- store (never its password); the client goes on as without a store
-- (oauth2.cache) meanwhile.
local function warn_store(self, why)
    self.counters.store_errors = self.counters.store_errors + 1
    local now = self.clock()
    if now < self.store_quiet_until then return end
    self.store_quiet_until = now + self.policy.cooldown
    warn("oauth2: " .. tostring(self.shared) .. " failed (" .. tostring(why)
        .. "): this process serves the token it holds and fetches alone when it must")
end

-- Forget the entry's token (rejected by the API).
local function drop_token(entry)
    entry.token, entry.header = nil, nil
    entry.refresh_after, entry.expire_after = -huge, -huge
    retime(entry)
end

-- Remember a failure (or a cool-down) until `wait` seconds from `now`.
local function remember(entry, err, now, wait)
    entry.last_error = err
    if now + wait > entry.next_try then entry.next_try = now + wait end
    if err.failures then entry.failures = err.failures end
end

-- Take a shared record into the entry: its token when newer than the
-- entry's, its cool-down when one runs, and the rejection of the entry's
-- token when another process saw it rejected.  Record times are the wall
-- clock's (processes share no other); the entry's are the client's
-- clock, so each time moves over as a distance from now.
local function take_record(self, entry, record, now, fetched)
    local wall = self.ctx.wall()
    if record.rejected and entry.token
            and stores.token_id(self.secret, entry.token.access_token) == record.rejected then
        drop_token(entry)
    end
    -- a token this call fetched is new, though a coarse clock may give it
    -- the fetch time of the last one
    if cache.usable(record, wall) and type(record.fetched_at) == "number"
            and (fetched or record.fetched_at > entry.shared_fetched_at) then
        entry.token = bearer.new {
            access_token = record.access_token, token_type = record.token_type,
            scope = record.scope,
            expires_in = type(record.expires_in) == "number" and floor(record.expires_in) or nil,
            -- whole seconds since the epoch, as oauth2.token gives it
            expires_at = type(record.expires_in) == "number"
                and floor(record.fetched_at + record.expires_in) or nil,
        }
        entry.header = bearer.header(record.access_token)
        -- never after now: an invalidation's cool-down (fetched_at + 0 s)
        -- must not start in the future
        entry.fetched_at = min(now, now - (wall - record.fetched_at))
        entry.lifetime = record.lifetime or 0
        entry.refresh_after = now + (record.refresh_at - wall)
        retime(entry)
        entry.expire_after = now + (record.expire_at - wall)
        entry.shared_fetched_at = record.fetched_at
        entry.last_error, entry.next_try, entry.alone_at = nil, -huge, nil
        entry.failures = 0
    end
    local failure = cache.cooling(record, wall)
    if failure then remember(entry, failure, now, failure.retry_after) end
end

-- Look at the shared store (the hot path's periodic look).
local function adopt(self, entry, now)
    local record, why = cache.look(self.ctx)
    if why then warn_store(self, why) end
    if record then take_record(self, entry, record, now) end
end

-- One fetch through the endpoint, within `deadline` seconds (or the
-- configured one), counted and told: the token, or nil and the error.
local function run_fetch(self, deadline, refreshing)
    local stats = self.counters
    local ok, token, err, attempts = pcall(self.endpoint.token, self.endpoint, deadline)
    if not ok then error(token, 0) end
    stats.fetches = stats.fetches + 1
    stats.retries = stats.retries + (attempts or 1) - 1
    if (attempts or 1) > 1 then self:emit("retry", { attempts = attempts }) end
    if token then
        if refreshing then stats.refreshes = stats.refreshes + 1 end
        self:emit(refreshing and "refresh" or "fetch", { attempts = attempts or 1,
            expires_in = token.expires_in })
        return token
    end
    stats.failures = stats.failures + 1
    self.last_error = err
    return nil, err
end

-- Seconds a refresh may hold a caller whose token is valid: the policy's
-- refresh_timeout, and never past the token's expiry.
local function refresh_deadline(self, entry, now)
    if entry.token and now < entry.expire_after then
        return min(self.policy.refresh_timeout, entry.expire_after - now)
    end
    return nil
end

-- Fetch through oauth2.cache: with a shared store one process of all
-- fetches, and the others take its token or serve theirs while it is
-- valid; without one, a fetch here under the same rules (cool-downs
-- that grow with failures in a row).
local function fetch(self, entry, refreshing)
    local clock = self.clock
    local now = clock()
    local wall = self.ctx.wall() -- the record's clock (core.time with a store)
    local held
    if entry.token and now < entry.expire_after then
        local alone_at = entry.alone_at
        if not alone_at then
            alone_at = policy_rules.alone_at(entry.refresh_after, entry.expire_after)
            entry.alone_at = alone_at
        end
        held = { expire_at = wall + (entry.expire_after - now),
                 alone_at = wall + (alone_at - now),
                 deadline = refresh_deadline(self, entry, now) }
    end
    local ctx = self.ctx
    ctx.failures, ctx.refreshing = entry.failures, refreshing
    entry.fetching_until = now + self.conf.deadline + FETCH_GRACE
    local ok, record, err, how = pcall(self.shared and cache.obtain or cache.fetch_alone,
        ctx, held)
    entry.fetching_until = -huge
    if not ok then error(record, 0) end
    now = clock()
    if record then
        take_record(self, entry, record, now, how == "fetched")
        if how ~= "fetched" and entry.token then self.hits = self.hits + 1 end
        if entry.token and now < entry.expire_after then return entry.token end
        return nil, entry.last_error or errors.new { kind = "timeout", retryable = true,
            retry_after = 1, message = "the shared token expired while it was taken" }
    end
    if record == false then
        -- another process fetches, or the store is away: serve ours
        entry.quiet_until = now + err
        return entry.token
    end
    remember(entry, err, now, err.retry_after or self.policy.cooldown)
    if how == nil and err.failures then
        self:emit("failure", { kind = err.kind, status = err.status, code = err.code,
            attempts = err.attempts or 1, retry_after = err.retry_after })
    end
    return nil, err
end

-- Wait (yielding) for the fetch another caller of this Lua state runs,
-- at most until it lapses; its token, or the error it left.
local function wait_for_fetch(self, entry)
    local clock, pause = self.clock, 0.002
    while true do
        transport.sleep(pause)
        pause = min(pause * 2, 0.02)
        local now = clock()
        if entry.token and now < entry.expire_after then return entry.token end
        if now >= entry.fetching_until then
            -- it failed (its error stands), or its owner is gone: fetch here
            if entry.last_error and now < entry.next_try then return nil, entry.last_error end
            return fetch(self, entry, false)
        end
    end
end

-- Everything but the fresh-token case: refresh, stale serving, cool-downs.
local function slow_token(self, now)
    local entry = self.entry
    if now >= entry.look_at then
        -- another process may hold a fresher token, or a cool-down, or
        -- have seen this one rejected; looked at every look_every seconds
        -- (a refresh looks anyway: oauth2.cache reads the record first)
        entry.look_at = now + (self.shared and self.shared.look_every or stores.LOOK_EVERY)
        retime(entry)
        if self.shared then adopt(self, entry, now) end
    end
    if now < entry.refresh_after then
        self.hits = self.hits + 1
        return entry.token
    end
    if entry.token and now < entry.expire_after then
        -- due for refresh but still valid: try (for at most refresh_timeout),
        -- and serve the old one on failure while it is valid
        if now >= entry.next_try and now >= entry.fetching_until
                and now >= entry.quiet_until then
            local token = fetch(self, entry, true)
            if token then return token end
            now = self.clock()
            if not (entry.token and now < entry.expire_after) then
                -- it lapsed during the refresh: never served past its expiry
                return nil, entry.last_error
            end
        end
        self.hits = self.hits + 1
        self.counters.stale = self.counters.stale + 1
        return entry.token
    end
    if now < entry.fetching_until then
        if transport.can_yield() then
            -- another light thread of this worker fetches: wait for it
            return wait_for_fetch(self, entry)
        end
        return nil, errors.new { kind = "timeout", retryable = true, retry_after = 1,
            message = "another caller is fetching the token right now" }
    end
    if now < entry.next_try and entry.last_error then
        local err = entry.last_error
        err.retry_after = entry.next_try - now
        return nil, err
    end
    return fetch(self, entry, entry.token ~= nil)
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
    if entry == CLOSED then error("oauth2: use of a closed client", 2) end
    return slow_token(self, now)
end

--- "Bearer <access_token>", or nil and an error.
function Client:header()
    if self.entry == CLOSED then error("oauth2: use of a closed client", 2) end
    local token, err = self:token()
    if not token then return nil, err end
    return self.entry.header
end

--- Drop the token (the API answered 401 with it).  The next fetch waits
-- until invalidate_cooldown has passed since the last one, so a 401 loop
-- cannot hammer the token endpoint.  Returns true if a token was dropped.
function Client:invalidate()
    local entry = self.entry
    if entry == CLOSED then error("oauth2: use of a closed client", 2) end
    if entry.token == nil then return false end
    local rejected = entry.token.access_token
    drop_token(entry)
    local not_before = entry.fetched_at + self.policy.invalidate_cooldown
    if not_before > entry.next_try then
        entry.next_try = not_before
        entry.last_error = errors.new {
            kind = "http", status = 401, code = "invalidated", retryable = true,
            message = format("the token was invalidated; a new one is fetched no sooner "
                .. "than %g s after the last", self.policy.invalidate_cooldown),
        }
    end
    self.counters.invalidations = self.counters.invalidations + 1
    self:emit("invalidation", { cooldown = self.policy.invalidate_cooldown })
    if self.shared then
        -- in the store too, only if it still holds the rejected token, with
        -- the cool-down for every process of the store (oauth2.cache)
        local now = self.clock()
        cache.invalidate(self.ctx, stores.token_id(self.secret, rejected),
            core.time() + (not_before - now))
    end
    return true
end

--- What is cached for this client, never the token itself: token_type,
-- scope, fetched_at, refresh_at and expires_at (Unix times: when it was
-- asked for, when a call refreshes it, when it stops being served) and
-- `store` (where it is kept); nil when no valid token is cached; nil and
-- the reason when the shared store failed.  Nothing is fetched.
function Client:cached()
    local entry = self.entry
    if entry == CLOSED then error("oauth2: use of a closed client", 2) end
    if self.shared then
        local record, why = cache.look(self.ctx)
        if why then return nil, why end
        local wall = core.time()
        if not cache.usable(record, wall) then return nil end
        return { token_type = record.token_type, scope = record.scope,
                 fetched_at = floor(record.fetched_at), refresh_at = floor(record.refresh_at),
                 expires_at = floor(record.expire_at), store = tostring(self.shared) }
    end
    local now = self.clock()
    if not (entry.token and now < entry.expire_after) then return nil end
    local wall = core.time()
    return { token_type = entry.token.token_type, scope = entry.token.scope,
             fetched_at = floor(wall - (now - entry.fetched_at)),
             refresh_at = floor(wall + (entry.refresh_after - now)),
             expires_at = floor(wall + (entry.expire_after - now)), store = "memory" }
end

--- Forget the token: in this process and in the shared store, for every
-- holder of a copy, with no cool-down; the next call fetches.  Returns
-- whether a token was forgotten; nil and why when the store failed.
function Client:forget()
    local entry = self.entry
    if entry == CLOSED then error("oauth2: use of a closed client", 2) end
    local dropped = entry.token ~= nil
    drop_token(entry)
    entry.last_error, entry.next_try, entry.failures = nil, -huge, 0
    if self.shared then
        local record, why = cache.look(self.ctx)
        if why then return nil, why end
        if record and type(record.access_token) == "string" then
            cache.invalidate(self.ctx, stores.token_id(self.secret, record.access_token),
                core.time())
            dropped = true
        end
    end
    return dropped
end

--- Counters and state: fetches, hits, refreshes, retries, failures, stale
-- (old token served while its refresh failed), invalidations, last_error,
-- expires_in (seconds until the token's real expiry, nil without one),
-- and with a Redis store, `store`: its hits, misses, lease_wins,
-- lease_losses and errors.
function Client:stats()
    local stats = {}
    for k, v in pairs(self.counters) do stats[k] = v end
    stats.hits = self.hits
    local entry = self.entry
    stats.last_error = self.last_error
    local shared = self.shared
    if shared and shared.stats then stats.store = shared:stats() end
    if entry ~= CLOSED and entry.token then
        stats.expires_in = seconds_left(self, entry)
    end
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
    if self.entry == CLOSED then error("oauth2: use of a closed client", 2) end
    local call, why = api().check(self.conf, method, target, opts, self)
    if not call then error(why, 2) end
    return api().send(self, call)
end

--- An iterator over the pages of an API listing (oauth2.api).
function Client:pages(target, opts)
    if self.entry == CLOSED then error("oauth2: use of a closed client", 2) end
    local pages, why = api().pages(self, target, opts)
    if not pages then error(why, 2) end
    return pages
end

--- An iterator over the items of an API listing (oauth2.api): the
-- elements of `field` on every page.
function Client:items(target, field, opts)
    if self.entry == CLOSED then error("oauth2: use of a closed client", 2) end
    local items, why = api().items(self, target, field, opts)
    if not items then error(why, 2) end
    return items
end

--- Close the client; idempotent.  It holds no connection between fetches
-- (each fetch opens and closes its own, unless opts.session was given,
-- which stays the caller's); its API connection, if any, is closed.  The
-- shared token stays for other clients with the same key.
function Client:close()
    self.entry = CLOSED
    -- its API connection, if oauth2.api keeps one for it
    local loaded = package.loaded["oauth2.api"]
    if loaded then loaded.close(self) end
end
Client.__close = Client.close

-- The client of a static api_token (below).
local static_client

-- The client's state in a word, for tostring.
local function state(self)
    local entry = self.entry
    if entry == CLOSED then return "closed" end
    if entry.token == nil then return entry.last_error and "failing" or "empty" end
    local now = self.clock()
    if now < entry.refresh_after then return "valid" end
    if now < entry.expire_after then return "refreshing" end
    return "expired"
end

function Client:__tostring()
    local url = options.url_origin(self.conf.url)
    local text = format("oauth2.client host=%s client_id=%s state=%s",
        url, self.conf.client_id, state(self))
    local entry = self.entry
    if entry ~= CLOSED and entry.token then
        text = text .. format(" expires_in=%d", floor(max(0, seconds_left(self, entry))))
    end
    return text
end

-- A client of a static token (api_token: a User API token of the
-- dashboard).  No token endpoint, nothing cached, stored or refreshed:
-- the token is served as it is, and a 401 is the caller's answer
-- (oauth2.api does not try again: there is nothing to renew).
local Static = setmetatable({}, { __index = Client })
Static.__index = Static
Static.__close = Client.close

function Static:token()
    if self.entry == CLOSED then error("oauth2: use of a closed client", 2) end
    self.hits = self.hits + 1
    return self.static_token
end

function Static:header()
    if self.entry == CLOSED then error("oauth2: use of a closed client", 2) end
    self.hits = self.hits + 1
    return self.entry.header
end

--- Nothing to drop, cache or forget: a static token is the same after a
-- 401, and lives in no store.
function Static:invalidate()
    if self.entry == CLOSED then error("oauth2: use of a closed client", 2) end
    return false
end
Static.forget = Static.invalidate

function Static:cached()
    if self.entry == CLOSED then error("oauth2: use of a closed client", 2) end
    return nil
end

function Static:__tostring()
    return format("oauth2.client host=%s api_token state=%s", options.url_origin(self.conf.url),
        self.entry == CLOSED and "closed" or "static")
end

function static_client(conf, own)
    local token = bearer.new { access_token = conf.api_token, token_type = "Bearer" }
    return setmetatable({
        conf = conf,
        static = true,
        static_token = token,
        -- never fresh or expiring: stats() has no expires_in to give
        entry = { header = bearer.header(conf.api_token) },
        hits = 0,
        counters = { fetches = 0, refreshes = 0, retries = 0, failures = 0,
                     stale = 0, invalidations = 0, store_errors = 0 },
        on_event = own.on_event or nil,
        aid = own.aid or nil,
        headers = own.headers or nil,
        pace = own.pace,
    }, Static)
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
    if conf.api_token then return static_client(conf, own) end
    policy.clock = own.clock or transport.now
    -- no connection kept between fetches an hour apart, unless the caller
    -- passes a session of theirs
    local prepared, why = endpoint.prepare(conf, false)
    if not prepared then return nil, why end
    local token_key = policy_rules.cache_key(conf)
    local key = entry_key(token_key, policy)
    local entry = store[key]
    if entry == nil then
        entry = new_entry()
        store[key] = entry
    end
    local self = {
        conf = conf,
        endpoint = prepared,
        policy = policy,
        clock = policy.clock,
        entry = entry,
        hits = 0,            -- calls served from the cache (a field: the hot path)
        counters = { fetches = 0, refreshes = 0, retries = 0, failures = 0,
                     stale = 0, invalidations = 0, store_errors = 0 },
        last_error = nil,
        shared = nil,        -- a store shared with other processes (oauth2.store)
        ctx = nil,           -- oauth2.cache's context for it
        secret = conf.client_secret or conf.access_token,
        store_quiet_until = -huge, -- no word about a failing store before then
        on_event = own.on_event or nil,
        aid = own.aid or nil,  -- added to API requests that name no aid
        headers = own.headers or nil, -- sent with every API request
        pace = own.pace,       -- API requests wait out an exhausted rate limit
        -- the hot path's method in the object itself: one table lookup
        -- fewer per call than through the metatable (about 10 ns on 5.4)
        token = Client.token,
    }
    if type(own.store) == "table" then
        self.shared = own.store
    elseif own.store then
        local shared, problem = stores.file(own.store ~= "file" and own.store or nil)
        -- a store that cannot be used never fails a token: memory, and a word
        if not shared then
            warn("oauth2: the token cache is not shared (" .. tostring(problem)
                .. "); this process keeps its own")
        end
        self.shared = shared
    end
    if self.shared then
        -- the first call looks at the store (and so do the entry's next)
        entry.look_at = -huge
        retime(entry)
    end
    -- oauth2.cache's context: the shared store, if any.  A record's times
    -- are the wall clock's, which processes share; without a store, the
    -- client's own clock moved to the epoch's scale (a spec's fake clock
    -- times the whole fetch), the entry's are the client's clock
    local wall = core.time
    if not self.shared then
        local clock, offset = policy.clock, nil
        wall = function()
            local now = clock()
            offset = offset or core.time() - now
            return now + offset
        end
    end
    self.ctx = {
        store = self.shared, key = token_key, secret = self.secret,
        policy = policy, lease = cache.lease_for(conf), deadline = conf.deadline,
        wall = wall, sleep = transport.sleep, failures = 0,
        exchange = function(deadline)
            return run_fetch(self, deadline, self.ctx.refreshing)
        end,
        store_failed = function(problem) warn_store(self, problem) end,
    }
    return setmetatable(self, Client)
end

return _M
