-- oauth2.cache: the rules of a token shared through a store, written once.
--
-- oauth2.client (one Lua process) and oauth2.openresty (one nginx node)
-- keep a token of their own in a first layer (a Lua table, a shared
-- dict) and, with a store (oauth2.store: file, Redis, shared dict), share
-- it with every other process or node.  Everything about the sharing
-- happens here, once: read the shared record, take the lease, look again,
-- fetch, publish the token or the failure, let go, wait for a holder,
-- fall back when the store fails, spread an invalidation.  The decisions:
--
-- * A store that fails (down, an error reply, a timeout, a reply too
--   large) is a store failure, never a held lease: the caller is told
--   (store_failed, to log once per cool-down and count) and goes on as
--   if there were no store: it serves its valid token and fetches alone
--   from a point of its own (oauth2.policy.alone_at), spread over the
--   window from the refresh point to the expiry.
-- * A lease is short: one attempt's timeout and a little (lease_for).
--   When it lapses another may fetch too: a duplicate fetch costs one
--   request, a fleet without a token costs every request.  A caller
--   with a valid token never waits for a holder: it serves its token and
--   looks again within a second; one without waits at most a lease (or
--   its deadline), then fetches alone.
-- * A waiter costs O(1) store commands per second: it looks again after
--   50 ms, then doubling up to 1 s.
-- * Every failed fetch is remembered for its cool-down (oauth2.policy.
--   failure_wait), fleet-wide in the record, except a `config` failure
--   (this node's own mistake, made before any exchange); consecutive
--   failures lengthen it, counted in the record (`failures`).
-- * An invalidation drops the token from the record only if it is still
--   the rejected one, keeps its id (`rejected`, so every holder of a copy
--   drops it at its next look) and sets the cool-down for every process:
--   no fetch before invalidate_cooldown after the rejected token's fetch.
-- * A publish never undoes a newer token: a holder whose lease lapsed
--   while another fetched keeps the other's token.
-- * Every record written has a time to live: its token's expiry, or its
--   cool-down when that is later.
-- * Records carry wall-clock times (processes share no other clock); the
--   callers keep their own times on a monotonic clock.
--
-- The engine runs on hooks, so the same code runs in a plain Lua
-- process, in nginx's light threads and on the specs' virtual clock:
--
--   ctx.store, ctx.key, ctx.secret   where and under which key and secret
--   ctx.policy                       oauth2.policy's checked options
--   ctx.lease, ctx.deadline          seconds: a lease, a waiter's patience
--   ctx.wall()                       seconds since the epoch
--   ctx.sleep(seconds)               wait (yielding where it can)
--   ctx.exchange(deadline, held)     one fetch: token, or nil and err (or
--                                    a layer below's answer, see fetch)
--   ctx.store_failed(why)            the store failed (why names no secret)
--   ctx.failures                     failures in a row this caller saw
--   ctx.rejected                     id of a token this caller saw
--                                    rejected whose purge may not have
--                                    reached the store yet (or nil)

local core = require "oauth2.core"
local policy_rules = require "oauth2.policy"
local errors = require "oauth2.error"
local stores = require "oauth2.store"

local type, tonumber, floor, max, min = type, tonumber, math.floor, math.max, math.min
local format = string.format

local _M = { _VERSION = core._VERSION }

-- Seconds a lease outlives one attempt's timeout.
local LEASE_SLACK = 5

-- A waiter's first pause, and its longest, in seconds.
local POLL_FIRST, POLL_MAX = 0.05, 1

-- How soon a caller with a valid token looks again when another holds
-- the lease, and at most when the store fails.
local LOOK_AGAIN = 1
local STORE_AGAIN = 2

--- The lease of a fetch for a validated configuration: one attempt's
-- timeout (within the deadline) and a little.
function _M.lease_for(conf)
    return min(conf.timeout, conf.deadline) + LEASE_SLACK
end

--- Whether a record holds a token that serves at wall time `now`
-- (before its refresh point).
local function fresh(record, now)
    return record and type(record.access_token) == "string"
        and type(record.refresh_at) == "number" and type(record.expire_at) == "number"
        and now < record.refresh_at and now < record.expire_at or false
end
_M.fresh = fresh

--- Whether a record holds a token that is valid at `now` (refresh due
-- or not).
local function usable(record, now)
    return record and type(record.access_token) == "string"
        and type(record.expire_at) == "number" and now < record.expire_at or false
end
_M.usable = usable

--- A record's cool-down as an error while it runs, or nil.
local function cooling(record, now)
    if not record or type(record.next_try) ~= "number" or now >= record.next_try then
        return nil
    end
    return errors.new { kind = record.kind or "http", code = record.code,
        status = type(record.status) == "number" and floor(record.status) or nil,
        message = record.message or "the last fetch failed", retryable = true,
        retry_after = record.next_try - now, cached = true }
end
_M.cooling = cooling

--- The record of a token fetched with its request sent at wall time
-- `sent_at`, timed by the policy; `prior` (the record it replaces) lends
-- its `rejected`.
function _M.token_record(policy, token, sent_at, prior)
    local lifetime, refresh_at, expire_at = policy_rules.schedule(policy, token, sent_at)
    return { access_token = token.access_token, token_type = token.token_type,
             scope = token.scope, expires_in = token.expires_in,
             fetched_at = sent_at, lifetime = lifetime,
             refresh_at = refresh_at, expire_at = expire_at,
             rejected = prior and prior.rejected }
end

-- Seconds a record may be kept at wall time `now`: until its token's
-- expiry or its cool-down's end, whichever is later (at least 1).
local function ttl_of(record, now)
    return max(1, (record.expire_at or 0) - now, (record.next_try or 0) - now)
end

-- The shared record (false for none), or nil and why the store failed.
-- A token this caller saw rejected is not served (and purged again).
local function read(ctx)
    local record, why, note = ctx.store:get(ctx.key, ctx.secret)
    if why then return nil, why end
    if note then ctx.store_failed(note) end
    if not record then return false end
    local rejected = ctx.rejected
    if rejected and type(record.access_token) == "string"
            and stores.token_id(ctx.secret, record.access_token) == rejected then
        ctx.store:delete_token_if(ctx.key, ctx.secret, rejected)
        record.access_token, record.refresh_at, record.expire_at = nil, nil, nil
    end
    return record
end

-- Write a record with its time to live; a failure to write is a store
-- failure, told, never the caller's.
local function write(ctx, record)
    local ok, why = ctx.store:set(ctx.key, ctx.secret, record, ttl_of(record, ctx.wall()))
    if not ok then ctx.store_failed(why) end
end

-- Publish a token just fetched, unless the store holds another, fetched
-- later and still valid (a holder whose lease lapsed never undoes a newer
-- token).  The record that stands.
local function publish_token(ctx, record)
    local current = read(ctx)
    local now = ctx.wall()
    if current and usable(current, now) and current.access_token ~= record.access_token
            and type(current.fetched_at) == "number"
            and current.fetched_at > record.fetched_at then
        return current
    end
    if current and current.rejected then record.rejected = current.rejected end
    write(ctx, record)
    return record
end

-- Publish a failure's cool-down, keeping a token the record still holds.
local function publish_failure(ctx, err, wait, failures)
    local record = read(ctx)
    if record == nil then return end
    record = record or {}
    local now = ctx.wall()
    record.next_try = now + wait
    record.failures = failures
    record.kind, record.status, record.code = err.kind, err.status, err.code
    record.message = errors.text(err.message)
    write(ctx, record)
end

-- Fetch now: the token's record (published when `publish`), or nil and
-- the error, its cool-down in retry_after and its count in failures.
-- The exchange may be a layer below (nginx's node over the fleet's
-- store): its record keeps its times, its failure its cool-down, and its
-- `false, seconds` (serve your own token) passes up.
local function fetch(ctx, prior, held, publish)
    local sent_at = ctx.wall()
    local token, err, how = ctx.exchange(held and held.deadline, held)
    if token then
        local record = token
        if not token.refresh_at then
            record = _M.token_record(ctx.policy, token, sent_at, prior)
        end
        if publish then record = publish_token(ctx, record) end
        return record, nil, how or "fetched"
    end
    if token == false then return false, err end
    local failures, wait = err.failures, err.retry_after
    if not (failures or err.cached) then
        failures = max(ctx.failures or 0, prior and tonumber(prior.failures) or 0) + 1
        wait = policy_rules.failure_wait(ctx.policy, err, failures)
        err.retry_after, err.failures = wait, failures
    end
    if publish and err.kind ~= "config" then publish_failure(ctx, err, wait, failures) end
    return nil, err
end

-- The store failed: serve a valid token until this caller's own point,
-- then fetch alone (publishing nothing: the store is away).
local function without_store(ctx, why, held, now)
    ctx.store_failed(why)
    if held and now < held.expire_at and now < held.alone_at then
        return false, min(STORE_AGAIN, held.alone_at - now)
    end
    return fetch(ctx, nil, held, false)
end

--- Obtain a token through the store.  `held` describes the caller's own
-- token, if it has a valid one: { expire_at =, alone_at = (wall times),
-- deadline = (seconds a fetch may hold the caller, or nil) }.  Returns
--   record, nil, how   a record with a valid token (how: "store" when
--                      another fetched it, "fetched" when this call did),
--                      possibly with a cool-down (record.next_try)
--   nil, err           no valid token: the failure or the cool-down
--   false, seconds     serve your own token; look again after seconds
function _M.obtain(ctx, held)
    local store, wall = ctx.store, ctx.wall
    -- a holder that cannot let go (stopped: an flock never lapses) holds
    -- nobody past a lease, nor past the caller's own deadline
    local give_up = wall() + min(ctx.deadline, ctx.lease)
    local pause = POLL_FIRST
    while true do
        local record, why = read(ctx)
        local now = wall()
        if record == nil then return without_store(ctx, why, held, now) end
        if fresh(record, now) then return record, nil, "store" end
        local failure = cooling(record, now)
        if failure then
            if usable(record, now) then return record, nil, "store" end
            return nil, failure
        end
        local lease
        lease, why = store:try_lock(ctx.key, ctx.lease)
        now = wall()
        if lease == nil then return without_store(ctx, why, held, now) end
        if lease then
            -- the last holder may have published between the read and the lease
            record, why = read(ctx)
            if record == nil then
                lease:unlock()
                return without_store(ctx, why, held, wall())
            end
            now = wall()
            local result, err, how
            if fresh(record, now) then
                result, how = record, "store"
            else
                failure = cooling(record, now)
                if failure then
                    if usable(record, now) then result, how = record, "store"
                    else err = failure end
                else
                    result, err, how = fetch(ctx, record or nil, held, true)
                end
            end
            lease:unlock()
            return result, err, how
        end
        -- another holds the lease: a caller with a valid token serves it
        -- and looks again soon; one without waits, at most a lease
        if held and now < held.expire_at then
            return false, max(0.05, min(LOOK_AGAIN, held.expire_at - now))
        end
        if usable(record, now) then return record, nil, "store" end
        -- waited long enough: fetch alone (publishing over no newer token)
        if now >= give_up then return fetch(ctx, record or nil, held, true) end
        ctx.sleep(min(pause, give_up - now))
        pause = min(pause * 2, POLL_MAX)
    end
end

--- Publish a record (taken from another layer) unless the store holds a
-- newer token; the record that stands.
_M.publish = publish_token

--- Fetch without a store (or with the store away): the token's record,
-- or nil and the error, its cool-down grown by ctx.failures.
function _M.fetch_alone(ctx, held)
    return fetch(ctx, nil, held, false)
end

--- Spread the rejection of a token through the store: drop it from the
-- record if it is still the one rejected (token_id), keep its id there,
-- and set the fleet's cool-down: no fetch before `not_before` (wall).
-- Returns whether the record's token was dropped.
function _M.invalidate(ctx, token_id, not_before)
    local store = ctx.store
    local cooldown = {
        next_try = not_before, kind = "http", status = 401, code = "invalidated",
        message = format("the token was invalidated; a new one is fetched no sooner "
            .. "than %g s after the last", ctx.policy.invalidate_cooldown),
    }
    -- kept until the cool-down ends at least (the record's token is gone)
    local ttl = max(1, not_before - ctx.wall())
    if store.atomic then
        return store:delete_token_if(ctx.key, ctx.secret, token_id, cooldown, ttl) == true
    end
    -- read, compare and write under the store's lock; while another holds
    -- it, it is fetching (its token is new anyway)
    local lock = store:try_lock(ctx.key, ctx.lease)
    if not lock then return false end
    local dropped = store:delete_token_if(ctx.key, ctx.secret, token_id, cooldown, ttl)
    lock:unlock()
    return dropped == true
end

--- What a caller holding a fresh copy learns at its periodic look: the
-- record, which may hold a newer token or name the caller's token as
-- rejected; nil (none) or nil and why (the store failed).
function _M.look(ctx)
    local record, why = read(ctx)
    if record == nil then return nil, why end
    return record or nil
end

return _M
