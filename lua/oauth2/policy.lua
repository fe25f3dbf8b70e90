-- oauth2.policy: the cache policy, in one place for every cache.
--
-- When a cached token counts as due for refresh and when as expired, how
-- long a failed fetch is remembered, and which policy options exist and
-- what values they take.  oauth2.client (one Lua state) and
-- oauth2.openresty (all workers of an nginx) both time their tokens here,
-- so the two cannot drift apart.

local core = require "oauth2.core"

local type, pairs, ipairs = type, pairs, ipairs
local concat = table.concat
local hmac_sha256 = core.hmac_sha256
local max, min, floor = math.max, math.min, math.floor
-- jitter from a generator every process seeds on its own (see core.random)
local random = core.random
local format = string.format

local _M = { _VERSION = core._VERSION }

-- What a token depends on, in a fixed order (the cache key's inputs).
local KEY_FIELDS = {
    "url", "client_id", "grant_type", "auth_method", "scope", "x_tenant_id",
    "client_secret", "thousandeyes_bearer_token", "access_token", "params_key",
}

-- The policy options and their defaults.
_M.defaults = {
    margin = false,           -- seconds before expiry a token counts as expired;
                              -- false: the larger of 30 s and 10% of its lifetime
    refresh_ratio = 0.8,      -- refresh once this share of the lifetime has passed
    refresh_jitter = 0.05,    -- ... minus up to this share, so caches spread out
    default_lifetime = 300,   -- seconds, when the endpoint sends no expires_in
    cooldown = 5,             -- seconds a failed fetch is remembered, at least
    invalidate_cooldown = 10, -- a fetch after invalidate() waits this long after the last
    refresh_timeout = 5,      -- seconds a refresh may hold a caller who has a valid token
}

-- The longest cool-down that consecutive failures grow to (unless the
-- cool-down itself, or the server, asks for longer).
_M.MAX_BACKOFF = 300

-- The longest a failure is remembered, whatever the server asks: a day.
_M.MAX_WAIT = core.MAX_SECONDS

-- The lease of a store's lock where the caller names none, in seconds.
_M.LEASE = 60

-- The token requests a minute a shared store allows its fleet by default,
-- for all the credentials it keeps: well under ThousandEyes' 240 requests
-- a minute per organization, which the API calls share.
_M.BUDGET = 60

--- One draw from a budget of `per_minute` token requests: `next_at`, the
-- first free slot (nil: none taken yet), at `now`, for a caller who waits
-- at most `max_wait` seconds.  Returns the next free slot and the seconds
-- to wait for the one taken, or nil and the seconds until a slot
-- (refused).  Slots are 60 / per_minute seconds apart, so no minute
-- holds more than per_minute.  (The Redis store runs the same in Redis.)
function _M.budget_draw(next_at, now, per_minute, max_wait)
    local at = max(next_at or now, now)
    if at - now > max_wait then return nil, at - now end
    return at + 60 / per_minute, at - now
end

-- How often a holder of a fresh copy looks at a shared store, in seconds,
-- unless the store says (its look_every): how soon a token rejected
-- elsewhere is dropped everywhere.
_M.LOOK_EVERY = 4

-- The shortest lifetime or cool-down taken, in seconds: a floor, since
-- 1e-300 is as good as 0 to a clock.
local MIN_SECONDS = 0.1

-- A bound as people write it: 31536000, not 3.1536e+07.
local function show(bound)
    return bound == floor(bound) and format("%d", bound) or format("%g", bound)
end

-- nil when policy[name] is a number from `low` (excluded unless low_ok)
-- to `high`, else the message.
local function number(policy, name, low, high, low_ok)
    local value = policy[name]
    if type(value) ~= "number" or value ~= value or value > high
            or value < low or (value == low and not low_ok) then
        return format(low_ok and "oauth2: option '%s' must be a number from %s to %s"
            or "oauth2: option '%s' must be a number above %s and at most %s", name,
            show(low), show(high))
    end
    return nil
end

--- Take the policy options out of opts (a table of the caller's options):
-- the checked policy with defaults filled in, or nil and a message.
function _M.check(opts)
    local policy = {}
    for name, default in pairs(_M.defaults) do
        local value = opts[name]
        if value == nil then value = default end
        policy[name] = value
    end
    local why = policy.margin ~= false and number(policy, "margin", 0, _M.MAX_WAIT, true)
        -- 0 would refresh on every call, back to back
        or number(policy, "refresh_ratio", 0, 1, false)
        or number(policy, "refresh_jitter", 0, 0.99, true)
        -- 0 (or next to it) would never store a token without expires_in:
        -- a fetch per call
        or number(policy, "default_lifetime", MIN_SECONDS, _M.MAX_WAIT * 365, true)
        -- 0 (or next to it) would remember no failure: a dead endpoint
        -- asked on every call
        or number(policy, "cooldown", MIN_SECONDS, _M.MAX_WAIT, true)
        or number(policy, "invalidate_cooldown", 0, _M.MAX_WAIT, true)
        or number(policy, "refresh_timeout", 0, _M.MAX_WAIT, false)
    if why then return nil, why end
    return policy
end

--- The cache key of a validated configuration: a keyed hash (HMAC-SHA256,
-- the client secret as key) of every input that makes two tokens
-- interchangeable (URL, client, grant, scope, tenant, and the secrets).
-- Equal keys may share a token; no key shows a secret, and nobody without
-- the secret can tell which key is whose.
function _M.cache_key(conf)
    local parts = {}
    for i, name in ipairs(KEY_FIELDS) do
        local value = conf[name]
        parts[i] = name .. "=" .. (value and #value .. ":" .. value or "-")
    end
    return hmac_sha256(conf.client_secret or conf.access_token or "", concat(parts, "\n"))
end

--- Whether `name` is a policy option.
function _M.is_option(name)
    return _M.defaults[name] ~= nil
end

--- The times of a token fetched with the request sent at `sent_at`:
-- the lifetime used, the refresh point and the expiry (margin deducted).
-- The refresh point lies before the expiry whenever the ratio is below 1,
-- short lifetimes included.
function _M.schedule(policy, token, sent_at)
    local lifetime = token.expires_in or policy.default_lifetime
    local margin = min(policy.margin or max(30, 0.1 * lifetime), lifetime / 2)
    local expire_at = sent_at + lifetime - margin
    local share = policy.refresh_ratio * (1 - policy.refresh_jitter * random())
    local refresh_at = sent_at + lifetime * share
    if refresh_at >= expire_at then
        -- a short token: refresh within the part of its life that is usable
        refresh_at = sent_at + (lifetime - margin) * share
    end
    return lifetime, refresh_at, expire_at
end

--- Seconds a failure is remembered when it is the `failures`-th in a
-- row (1 when nil): the cool-down, doubled for each failure before it
-- (jittered, so a fleet spreads out) up to MAX_BACKOFF, or longer when the
-- server asked for longer (Retry-After, the rate-limit reset), up to a day.
function _M.failure_wait(policy, err, failures)
    local wait = policy.cooldown
    if failures and failures > 1 then
        local grown = min(max(_M.MAX_BACKOFF, wait), wait * 2 ^ min(failures - 1, 30))
        wait = max(wait, grown * (0.75 + 0.25 * random()))
    end
    local asked = err and err.retry_after
    if type(asked) == "number" and asked == asked and asked > wait then
        wait = min(asked, _M.MAX_WAIT)
    end
    return wait
end

--- The next point at which a record's token may be refreshed: its
-- refresh point, or the end of a cool-down or a deferral that runs past
-- it; never past its expiry (nil without a token).
function _M.next_try(record)
    local expire_at = record.expire_at
    if type(expire_at) ~= "number" then return nil end
    local at = record.refresh_at or expire_at
    local next_try, quiet = record.next_try, record.quiet_until
    if type(next_try) == "number" and next_try > at then at = next_try end
    if type(quiet) == "number" and quiet > at then at = quiet end
    return min(at, expire_at)
end

--- With the shared store unreachable past the refresh point: the point
-- from which a holder of a token valid from refresh_at to expire_at
-- fetches on its own, uniform over the whole window from the refresh
-- point to the expiry, so a fleet cut off from its store spreads its
-- fetches evenly instead of making them all in its last minutes.
function _M.alone_at(refresh_at, expire_at)
    return refresh_at + (expire_at - refresh_at) * random()
end

return _M
