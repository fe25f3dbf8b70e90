-- oauth2.record: what a cached token's record holds, in every layer.
--
--   access_token, token_type, scope, expires_in   the token, as fetched
--   fetched_at, lifetime, refresh_at, expire_at   its times (the expiry
--                                                 with the margin taken off)
--   next_try, kind, status, code, message, failures
--                                                 a cool-down and why
--   rejected                                      the id of a token the API
--                                                 refused: never served
--
-- Times are on the clock of the layer that keeps the record (a client's
-- monotonic clock in its memory, the shared store's clock below it);
-- `shift` moves them.  Shared records travel sealed (AES-256-GCM under a
-- key derived from the client secret, bound to the record's name).

local core = require "oauth2.core"
local cjson = require "cjson.safe"
local policy_rules = require "oauth2.policy"
local errors = require "oauth2.error"

local type, pairs, ipairs, floor, max = type, pairs, ipairs, math.floor, math.max
local format = string.format
local encode, decode = cjson.encode, cjson.decode

local _M = { _VERSION = core._VERSION }

-- The fields that are times, which shift() moves between clocks.
local TIMES = { "fetched_at", "refresh_at", "expire_at", "next_try", "alone_at", "quiet_until" }

--- Whether a record's token serves at `now`, before its refresh point.
function _M.fresh(record, now)
    return record and type(record.access_token) == "string"
        and type(record.refresh_at) == "number" and type(record.expire_at) == "number"
        and now < record.refresh_at and now < record.expire_at or false
end

--- Whether a record holds a token valid at `now` (refresh due or not).
function _M.usable(record, now)
    return record and type(record.access_token) == "string"
        and type(record.expire_at) == "number" and now < record.expire_at or false
end

--- A record's cool-down as an error while it runs, or nil.
function _M.cooling(record, now)
    if not record or type(record.next_try) ~= "number" or now >= record.next_try then
        return nil
    end
    return errors.new { kind = record.kind or "http", code = record.code,
        status = type(record.status) == "number" and floor(record.status) or nil,
        message = record.message or "the last fetch failed", retryable = true,
        retry_after = record.next_try - now, cached = true,
        failures = type(record.failures) == "number" and record.failures or nil }
end

--- The record of a token whose request was sent at `sent_at`; `prior`
-- (the record it replaces) lends `rejected`.
function _M.of_token(policy, token, sent_at, prior)
    local lifetime, refresh_at, expire_at = policy_rules.schedule(policy, token, sent_at)
    return { access_token = token.access_token, token_type = token.token_type,
             scope = token.scope, expires_in = token.expires_in,
             fetched_at = sent_at, lifetime = lifetime,
             refresh_at = refresh_at, expire_at = expire_at,
             rejected = prior and prior.rejected }
end

--- The fields of a failure's cool-down, until `next_try`.
function _M.failure(err, next_try, failures)
    return { next_try = next_try, failures = failures, kind = err.kind, status = err.status,
             code = err.code, message = errors.text(err.message) }
end

--- The cool-down of an invalidation: no fetch before `next_try`.
function _M.invalidated(policy, next_try)
    return { next_try = next_try, kind = "http", status = 401, code = "invalidated",
             message = format("the token was invalidated; a new one is fetched no sooner "
                 .. "than %g s after the last", policy.invalidate_cooldown) }
end

--- Seconds a record may be kept at `now`: until its token's expiry or its
-- cool-down's end (at least 1); a count of failures outlives its
-- cool-down by the longest backoff, so the next failure finds it.
function _M.ttl(record, now)
    local next_try = record.next_try or 0
    if record.failures then next_try = next_try + policy_rules.MAX_BACKOFF end
    return max(1, (record.expire_at or 0) - now, next_try - now)
end

--- A copy of a record with its times moved by `delta` seconds.
function _M.shift(record, delta)
    local copy = {}
    for k, v in pairs(record) do copy[k] = v end
    if delta ~= 0 then
        for _, name in ipairs(TIMES) do
            if type(copy[name]) == "number" then copy[name] = copy[name] + delta end
        end
    end
    return copy
end

--- A shared record as a reader may believe it at `now`: a writer whose
-- clock ran ahead has its times moved back to now, and no token lives
-- longer than its lifetime from its fetch.
function _M.believable(record, now)
    local fetched = record.fetched_at
    if type(fetched) == "number" and fetched > now then
        record = _M.shift(record, now - fetched)
        fetched = now
    end
    local lifetime = record.lifetime
    if type(fetched) == "number" and type(lifetime) == "number"
            and type(record.expire_at) == "number" and record.expire_at > fetched + lifetime then
        record.expire_at = fetched + lifetime
    end
    return record
end

--- A token's id: a hash keyed with the client secret, so even a holder
-- of the token cannot tell which entry of a store holds it.
function _M.token_id(secret, access_token)
    return core.hmac_sha256(secret, "token id\n" .. access_token)
end

--- Whether the record names `access_token` as rejected.
function _M.rejects(record, secret, access_token)
    return record and type(record.rejected) == "string" and type(access_token) == "string"
        and _M.token_id(secret, access_token) == record.rejected or false
end

--- The record without its token: `rejected` keeps its id, so every
-- holder of a copy drops it; `cooldown` (fields, or nil) sets next_try
-- and why unless the record's own cool-down runs longer.
function _M.without_token(record, token_id, cooldown)
    record.access_token, record.token_type, record.scope, record.expires_in = nil, nil, nil, nil
    record.refresh_at, record.expire_at = nil, nil
    record.rejected = token_id
    if cooldown and (type(record.next_try) ~= "number" or record.next_try < cooldown.next_try) then
        for k, v in pairs(cooldown) do record[k] = v end
    end
    return record
end

--- delete_token_if for a store whose get and set meet no other writer
-- (under the caller's lock, or atomic): whether the token was dropped.
function _M.drop_if(store, key, secret, token_id, cooldown, ttl)
    local record = store:get(key, secret)
    if not record or type(record.access_token) ~= "string"
            or _M.token_id(secret, record.access_token) ~= token_id then
        return false
    end
    return store:set(key, secret, _M.without_token(record, token_id, cooldown), ttl) == true
end

--- A record sealed for `name` under the secret: text no one without the
-- secret can read or move to another name; or nil and why.
function _M.seal(secret, record, name)
    local text = encode(record)
    if not text then return nil, "the record cannot be encoded" end
    return core.seal(secret, text, name)
end

--- The record a sealed text holds, or nil (corrupt, another secret's,
-- moved from another name).
function _M.open(secret, sealed, name)
    if type(sealed) ~= "string" then return nil end
    local text = core.open(secret, sealed, name)
    local record = text and decode(text)
    if type(record) ~= "table" then return nil end
    return record
end

return _M
