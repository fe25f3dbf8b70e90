-- oauth2.policy: the cache policy's rules, in one place for every cache.
--
-- When a cached token counts as due for refresh and when as expired, how
-- long a failed fetch is remembered, the fleet's budget and the cache
-- key.  Its options and their bounds are oauth2.options' (POLICY).

local core = require "oauth2.core"

local type, ipairs = type, ipairs
local concat = table.concat
local hmac_sha256 = core.hmac_sha256
local max, min = math.max, math.min
-- jitter from a generator every process seeds on its own (see core.random)
local random = core.random

local _M = { _VERSION = core._VERSION }

-- What a token depends on, in a fixed order (the cache key's inputs).
local KEY_FIELDS = {
    "url", "client_id", "grant_type", "auth_method", "scope", "x_tenant_id",
    "client_secret", "thousandeyes_bearer_token", "access_token", "params_key",
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

--- One draw from a budget of `per_minute` token requests, whose first
-- free slot is `next_at` (nil: none taken), for a caller who waits at most
-- `max_wait`: the next free slot and the seconds to wait for the one
-- taken, or nil and the seconds until one.  Slots are evenly spaced, so
-- no minute holds more than per_minute.  (Redis runs the same script.)
function _M.budget_draw(next_at, now, per_minute, max_wait)
    local at = max(next_at or now, now)
    if at - now > max_wait then return nil, at - now end
    return at + 60 / per_minute, at - now
end

-- Seconds between a holder's looks at a shared store, unless the store
-- says (look_every): how soon a token rejected elsewhere is dropped.
_M.LOOK_EVERY = 4

--- The cache key of a validated configuration: HMAC-SHA256, keyed with
-- the client secret, of every input that makes two tokens interchangeable.
-- No key shows a secret, nor whose it is.
function _M.cache_key(conf)
    local parts = {}
    for i, name in ipairs(KEY_FIELDS) do
        local value = conf[name]
        parts[i] = name .. "=" .. (value and #value .. ":" .. value or "-")
    end
    return hmac_sha256(conf.client_secret or conf.access_token or "", concat(parts, "\n"))
end

--- The lifetime, refresh point and expiry (margin deducted) of a token
-- whose request was sent at `sent_at`; the refresh point comes first
-- whenever the ratio is below 1, short lifetimes included.
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

--- The point from which a holder fetches on its own while the shared
-- store is away: uniform from the refresh point to the expiry, so a fleet
-- cut off from its store spreads its fetches evenly.
function _M.alone_at(refresh_at, expire_at)
    return refresh_at + (expire_at - refresh_at) * random()
end

return _M
