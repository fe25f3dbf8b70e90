-- oauth2.cache: the engine of a cached token, every layer in it.
--
--   local engine = cache.new { source = fetch, first = memory_store,
--                              shared = redis_store, policy = policy, ... }
--   local record, err, how = engine:get()
--
-- As lua-resty-mlcache holds its L1 over a shared L2 and a callback
-- behind a lock: the same obtain loop runs at each layer, and
-- oauth2.client and oauth2.openresty configure it with their hooks.
-- docs/cache.md says the rules in prose.

local core = require "oauth2.core"
local policy_rules = require "oauth2.policy"
local records = require "oauth2.record"
local errors = require "oauth2.error"
local transport = require "oauth2.transport"

local type, pairs, ipairs, tostring, error, setmetatable, pcall =
      type, pairs, ipairs, tostring, error, setmetatable, pcall
local max, min, huge = math.max, math.min, math.huge
local format = string.format

local fresh, usable, cooling = records.fresh, records.usable, records.cooling
local protected = transport.pcall

local _M = { _VERSION = core._VERSION }

-- Seconds a lease outlives one attempt's timeout.
local LEASE_SLACK = 5
-- How soon a caller with a valid token looks again when another holds
-- the lease, and at most when the store fails.
local LOOK_AGAIN, STORE_AGAIN = 1, 2
-- A waiter's first pause and its longest, in seconds, by default: at
-- the first layer (another caller of this place fetches), at the shared.
local FIRST_PACE, PACE = { 0.002, 0.02 }, { 0.05, 1 }
-- The longest a caller without a token waits for a slot of the budget.
local BUDGET_WAIT = 4
-- How often callers waiting for a place's fetch look at the shared store
-- meanwhile (once for all of them), in seconds.
local WAIT_LOOK = 0.5

--- The lease of a fetch for a validated configuration: one attempt's
-- timeout (within the deadline) and a little.
function _M.lease_for(conf)
    return min(conf.timeout, conf.deadline) + LEASE_SLACK
end

local Engine = {}
Engine.__index = Engine

local function count(self, name, n)
    self.counters[name] = self.counters[name] + (n or 1)
    if self.count then self.count(name, n or 1) end
end

-- One fetch from the source, counted and told: a token, or nil and the
-- error (kept as last_error).
local function from_source(self, deadline)
    local token, err, attempts = self.source(deadline)
    attempts = attempts or 1
    count(self, "fetches")
    if attempts > 1 then
        count(self, "retries", attempts - 1)
        self.emit("retry", { attempts = attempts })
    end
    if not token then
        count(self, "failures")
        self.last_error = err
        return nil, err
    end
    if deadline then count(self, "refreshes") end
    self.emit(deadline and "refresh" or "fetch", { attempts = attempts,
        expires_in = token.expires_in })
    return token
end

-- ------------------------------------------------------------ store access

-- Say a store's failure once per cool-down (naming the store, never its
-- password) and count it; the engine goes on as without it.
local function store_failed(self, layer, why)
    count(self, "store_errors")
    local now = self.first.clock()
    if now < self.quiet_until then return end
    self.quiet_until = now + self.policy.cooldown
    self.log("WARN", format("oauth2: %s failed (%s): this %s serves the token it holds and "
        .. "fetches alone when it must", tostring(layer.store), tostring(why), self.place))
end

-- A layer's record (false for none), or nil and why the store failed.  A
-- token `rejected` names is not served (and purged again there).
local function read(self, layer, rejected)
    local record, why, note = layer.store:get(layer.key, self.secret)
    if why then return nil, why end
    if note then store_failed(self, layer, note) end
    if not record then return false end
    -- a shared record is judged by the shared clock, never by its writer's
    if not layer.first then record = records.believable(record, layer.clock()) end
    if rejected and type(record.access_token) == "string"
            and records.token_id(self.secret, record.access_token) == rejected then
        layer.store:delete_token_if(layer.key, self.secret, rejected, nil, 60)
        record.access_token, record.refresh_at, record.expire_at = nil, nil, nil
    end
    return record
end

-- Write a record with its time to live; a failure is the store's, told.
local function write(self, layer, record)
    local ok, why = layer.store:set(layer.key, self.secret, record,
        records.ttl(record, layer.clock()))
    if not ok then store_failed(self, layer, why) end
end

-- Publish a token into a layer, unless the layer holds another, fetched
-- later and still valid (a holder whose lease lapsed never undoes a newer
-- token), or names this one rejected.  The record that stands, or nil
-- (the token was rejected meanwhile).
local function publish_token(self, layer, record)
    local current = read(self, layer)
    if current then
        if usable(current, layer.clock()) and current.access_token ~= record.access_token
                and type(current.fetched_at) == "number"
                and current.fetched_at > record.fetched_at then
            return current
        end
        if records.rejects(current, self.secret, record.access_token) then return nil end
        if current.rejected then record.rejected = current.rejected end
    end
    if layer.first and layer.below then
        -- the point from which this place fetches without the shared
        -- store, drawn once per token
        record.alone_at = policy_rules.alone_at(record.refresh_at, record.expire_at)
    end
    write(self, layer, record)
    return record
end

-- Publish a failure's cool-down into a layer, keeping a token it holds.
local function publish_failure(self, layer, err)
    local record = read(self, layer)
    if record == nil then return end
    record = record or {}
    local fields = records.failure(err, layer.clock() + err.retry_after, err.failures)
    for k, v in pairs(fields) do record[k] = v end
    record.quiet_until = nil
    write(self, layer, record)
    layer.failed = { next_try = fields.next_try, err = err }
end

-- Drop a token (by id) from a layer while it is still the one there,
-- with a cool-down (fields, or nil): atomic where the store is, else
-- under its lock (a holder of it is fetching: its token is new anyway).
local function drop(self, layer, token_id, cooldown)
    local store = layer.store
    local ttl = max(60, cooldown and cooldown.next_try - layer.clock() or 0)
    if store.atomic then
        return store:delete_token_if(layer.key, self.secret, token_id, cooldown, ttl) == true
    end
    local lock = store:try_lock(layer.key, layer.lease)
    if not lock then return false end
    local dropped = store:delete_token_if(layer.key, self.secret, token_id, cooldown, ttl)
    lock:unlock()
    return dropped == true
end

-- ------------------------------------------------------------ the loop

local obtain

-- What the caller of a layer brings: its valid token's expiry, the point
-- from which it fetches alone and how long a refresh may hold it (when
-- it has one), the id of a token it saw rejected, its failures in a row.
-- Its times move to another layer's clock as a record's do.
local function caller_of(self, record, now)
    local caller = { rejected = record and record.rejected,
                     failures = record and record.failures }
    if usable(record, now) then
        caller.expire_at = record.expire_at
        caller.alone_at = record.alone_at or record.expire_at
        caller.deadline = min(self.policy.refresh_timeout, record.expire_at - now)
    end
    return caller
end

-- A record just fetched for a layer, published there when `publish`:
-- the record that stands and how, or nil and why (its token was named
-- rejected meanwhile: never served again).
local function fetched(self, layer, record, publish, how)
    if publish then
        record = publish_token(self, layer, record)
        if not record then
            return nil, errors.new { kind = "http", status = 401, code = "invalidated",
                retryable = true, retry_after = 0,
                message = "the token was rejected while it was fetched" }
        end
    end
    return record, nil, how
end

-- Draw a token request from the budget of a shared layer's store: true
-- to go on (once the slot taken has come), false, nil and seconds (serve
-- your valid token: a caller with one never waits), or nil and the error
-- (remembered in this place only).  A store that fails takes no budget.
local function draw(self, layer, caller)
    local valid = caller.expire_at and layer.clock() < caller.expire_at
    local delay, seconds = layer.store:draw(valid and 0 or BUDGET_WAIT)
    if delay == nil then
        store_failed(self, layer, seconds)
        return true
    end
    if delay then
        if delay > 0 then layer.wait(delay) end
        return true
    end
    count(self, "budget_waits")
    if valid then return false, nil, max(0.05, seconds) end
    return nil, errors.new { kind = "timeout", code = "budget", retryable = true,
        retry_after = seconds, failures = caller.failures,
        message = format("the token requests a minute that %s allows the fleet (budget) are "
            .. "spent: the next in %.1f s", tostring(layer.store), seconds) }
end

-- Fetch now, for a layer: from the layer below, or from the source.
-- Returns the record (published when `publish`), how (see obtain), or nil
-- and the error (its cool-down in retry_after, its count in failures),
-- or false, nil and the seconds after which to look again (serve your
-- own token: the layer below is away, or another fetches there).
local function fetch(self, layer, prior, caller, publish)
    local below = layer.below
    local err
    if below then
        local delta = layer.clock() - below.clock()
        local record, problem, how = obtain(self, below, records.shift(caller, -delta))
        if record then
            return fetched(self, layer, records.shift(record, delta), publish,
                how == "fetched" and "fetched" or "store")
        end
        if record == false then return false, nil, how end
        err = problem
    else
        if publish and not layer.first and layer.store.budget then
            local go, refused, seconds = draw(self, layer, caller)
            if go ~= true then return go, refused, seconds end
        end
        local sent_at = layer.clock()
        local token
        token, err = from_source(self, caller.deadline)
        if token then
            return fetched(self, layer, records.of_token(self.policy, token, sent_at, prior),
                publish, "fetched")
        end
        if publish and not layer.first then
            -- another may have published while this fetch failed: serve
            -- that, and remember no failure
            local current = read(self, layer, caller.rejected)
            if current and usable(current, layer.clock())
                    and current.access_token ~= (prior and prior.access_token) then
                return current, nil, "fresh"
            end
        end
        if not err.cached then
            local failures = max(caller.failures or 0,
                prior and type(prior.failures) == "number" and prior.failures or 0) + 1
            err.failures = failures
            err.retry_after = policy_rules.failure_wait(self.policy, err, failures)
            self.emit("failure", { kind = err.kind, status = err.status, code = err.code,
                attempts = err.attempts or 1, retry_after = err.retry_after })
        end
    end
    if publish and not (err.kind == "config" and not layer.first) then
        publish_failure(self, layer, err)
    end
    return nil, err
end

-- A layer's cool-down as an error while it runs: the very error of the
-- failure this engine published there (retry_after counted down), or one
-- made from the record.
local function cooled(layer, record, now)
    local failure = cooling(record, now)
    local last = layer.failed
    if failure and last and last.next_try == record.next_try then
        last.err.retry_after = failure.retry_after
        return last.err
    end
    return failure
end

-- Without the store of `layer`: serve a valid token until the caller's
-- own point, then fetch alone (publishing nothing: the store is away).
local function without_store(self, layer, why, caller, now)
    store_failed(self, layer, why)
    if caller.expire_at and now < caller.expire_at and now < caller.alone_at then
        return false, nil, min(STORE_AGAIN, caller.alone_at - now)
    end
    return fetch(self, layer, nil, caller, false)
end

-- A record that serves, and how: "fresh", or "stale" (due for refresh,
-- served while another refreshes or a cool-down runs).
local function serving(record, now)
    return record, nil, fresh(record, now) and "fresh" or "stale"
end

-- Read a layer and judge it for a caller: true and the answer when the
-- record settles the call (fresh; cooling; valid and told to wait), "away"
-- and why (the shared store failed), or false, the record (false for
-- none), the caller and the time: a fetch is due.
local function judge(self, layer, caller)
    local record, why = read(self, layer, caller and caller.rejected)
    local now = layer.clock()
    if record == nil then
        if not layer.first then return "away", why end
        record = false
    end
    if layer.first then caller = caller_of(self, record, now) end
    if fresh(record, now) then return true, record, nil, "fresh" end
    local failure = cooled(layer, record, now)
    if failure then
        if usable(record, now) then return true, serving(record, now) end
        return true, nil, failure
    end
    if usable(record, now) and type(record.quiet_until) == "number"
            and now < record.quiet_until then
        return true, serving(record, now)
    end
    return false, record, caller, now
end

-- Fetch under a layer's lease.  A first layer serves its valid token when
-- the refresh fails, or when the layer below is away or another fetches
-- there (and asks again after the seconds it was told).
local function fetch_held(self, layer, record, caller, now)
    local result, err, how = fetch(self, layer, record or nil, caller, true)
    if not layer.first or result then return result, err, how end
    if result == nil then
        if usable(record, layer.clock()) then return serving(record, now) end
        return nil, err
    end
    record = read(self, layer) or record
    if not usable(record, now) then
        return nil, errors.new { kind = "timeout", retryable = true, retry_after = 1,
            message = "the token expired while another fetched" }
    end
    record.quiet_until = now + how
    write(self, layer, record)
    return serving(record, now)
end

--- Obtain a token at `layer` for a caller (caller_of; its times on this
-- layer's clock).  Returns
--   record, nil, how    a record with a valid token (how: "fresh" or
--                       "stale" when the layer had it, "store" when a
--                       layer below had it, "fetched" when this call did),
--                       possibly with a cool-down (record.next_try)
--   nil, err            no valid token: the failure or the cool-down
--   false, nil, seconds serve your own token; look again after seconds
function obtain(self, layer, caller)
    local store, clock = layer.store, layer.clock
    -- a holder that cannot let go (stopped: an flock never lapses) holds
    -- nobody past its patience
    local give_up = clock() + layer.patience
    local pace, pause = layer.pace, layer.pace[1]
    while true do
        local settled, a, b, c = judge(self, layer, caller)
        if settled == "away" then return without_store(self, layer, a, caller, clock()) end
        if settled then return a, b, c end
        local record
        record, caller = a, b
        local lease, why = store:try_lock(layer.key, layer.lease)
        if lease == nil then
            if not layer.first then return without_store(self, layer, why, caller, clock()) end
            -- a first layer that cannot lock (a full dict): fetch anyway
            store_failed(self, layer, why)
            return fetch(self, layer, record or nil, caller, true)
        end
        if lease then
            -- the last holder may have published between the read and the
            -- lease; a source that raises must not leave the lock held
            local ok
            ok, settled, a, b, c = protected(judge, self, layer, caller)
            if ok and settled == false then
                ok, a, b, c = protected(fetch_held, self, layer, a, b, c)
                if not ok then settled = a end
            end
            lease:unlock()
            if not ok then error(settled, 0) end
            if settled == "away" then return without_store(self, layer, a, caller, clock()) end
            return a, b, c
        end
        -- another holds the lease: a caller with a valid token serves it
        -- and looks again soon; one without waits, at most its patience
        local now = clock()
        if not layer.first and caller.expire_at and now < caller.expire_at then
            return false, nil, max(0.05, min(LOOK_AGAIN, caller.expire_at - now))
        end
        if usable(record, now) then return serving(record, now) end
        -- waited long enough: fetch alone (publishing over no newer token)
        if now >= give_up then return fetch(self, layer, record or nil, caller, true) end
        if not layer.wait(min(pause, give_up - now)) then
            return nil, errors.new { kind = "timeout", retryable = true, retry_after = 1,
                message = "another caller is fetching the token right now" }
        end
        pause = min(pause * 2, pace[2])
    end
end

-- ------------------------------------------------------------ the engine

--- A token through the layers: the first layer's record with a valid
-- token and how (see obtain), or nil and an error.  The caller runs the
-- fetch when one is due.
function Engine:get()
    local record, err, how = obtain(self, self.first)
    if how == "store" then count(self, "hits") end
    return record, err, how
end

--- One run of the obtain loop at the first layer, for a place that runs
-- fetches apart from requests (a timer in nginx): its outcome, then the
-- waiters woken.  A raise comes back as a `config` error.
function Engine:run()
    local first = self.first
    local before = read(self, first)
    local ok, record, err, how = protected(obtain, self, first)
    if not ok then
        err = errors.new { kind = "config", message = "the fetch raised: " .. tostring(record),
            retry_after = self.policy.cooldown, failures = 1 }
        record = nil
        publish_failure(self, first, err)
    end
    self.running = false
    if how == "store" then count(self, "hits") end
    if self.wake then self.wake() end
    if err and before and usable(before, first.clock()) then
        self.log("WARN", "oauth2: refresh ahead failed: " .. tostring(err))
    end
    return record, err
end

--- Start a run apart from the caller (schedule), unless one is under way
-- here or a live process holds the first layer's lock.
function Engine:refresh()
    local first = self.first
    if self.running or first.store:locked(first.key) then return false end
    self.running = true
    local ok, why = self.schedule(function(premature)
        if premature then
            self.running = false
            return
        end
        self:run()
    end)
    if not ok then
        self.running = false
        self.log("ERR", "oauth2: cannot start the fetch timer: " .. tostring(why))
    end
    return ok
end

--- The cool-down the first layer remembers as an error, or nil.
function Engine:failure()
    local first = self.first
    local record = read(self, first)
    return record and cooling(record, first.clock()) or nil
end

--- Start a run and wait for its token at most `seconds`: the view
-- (peek), or nil and an error (the run's failure), or nil, an error and
-- true (the wait ended first).
function Engine:wait_for(seconds)
    local first, shared = self.first, self.shared
    local clock = first.clock
    self:refresh()
    local deadline = clock() + seconds
    local pause = first.pace[1]
    while true do
        local left = deadline - clock()
        if left < 0.001 then break end
        first.wait(min(pause, left), shared and min(left, WAIT_LOOK) or left)
        pause = min(pause * 2, first.pace[2])
        local a, b = first.store:peek(first.key)
        if a then return a, b end
        if shared and clock() >= self.looked_until then
            -- this place's fetch may be stuck while another published: take it
            self.looked_until = clock() + WAIT_LOOK
            self:look()
            a, b = first.store:peek(first.key)
            if a then return a, b end
        end
        local failure = self:failure()
        if failure then return nil, failure end
        -- the fetcher is gone without an outcome: run one ourselves
        self:refresh()
    end
    return nil, errors.new { kind = "timeout", retryable = true, retry_after = 1,
        message = format("no token yet: waited %g s for the fetch in progress "
            .. "(it goes on in the background)", seconds) }, true
end

--- One look at the shared store: a newer valid token there is taken, a
-- copy it names rejected is dropped, a cool-down there is kept.  Returns
-- "taken", "dropped" or nil.
function Engine:look()
    local shared, first = self.shared, self.first
    if not shared then return nil end
    local store = shared.store
    local mine = read(self, first) or nil
    -- a holder of a valid copy reads the record only when it was written
    -- since, where the store tells (Redis)
    if store.changed and usable(mine, first.clock()) then
        local changed, problem = store:changed(shared.key)
        if changed == nil then store_failed(self, shared, problem) end
        if not changed then return nil end
    end
    local record, why = read(self, shared, mine and mine.rejected)
    if record == nil then
        store_failed(self, shared, why)
        return nil
    end
    if store.saw then store:saw(shared.key) end
    if not record then return nil end
    local token = mine and mine.access_token
    if type(token) == "string" and records.rejects(record, self.secret, token) then
        drop(self, first, record.rejected, nil)
        count(self, "drops")
        return "dropped"
    end
    local now = shared.clock()
    local delta = first.clock() - now
    local taken
    if usable(record, now) and record.access_token ~= token then
        local standing = publish_token(self, first, records.shift(record, delta))
        if standing and standing.access_token == record.access_token then
            count(self, "hits")
            taken = "taken"
        end
    end
    local failure = cooling(record, now)
    if failure and not (mine and type(mine.next_try) == "number"
            and mine.next_try >= record.next_try + delta - 0.01) then
        publish_failure(self, first, failure)
    end
    return taken
end

--- Drop the first layer's token (the API answered 401 with it; with
-- `rejected`, only while that access token is still the current one) in
-- every layer, with a cool-down for every holder: no fetch before
-- invalidate_cooldown has passed since the rejected token's fetch.
-- Whether a token was dropped here.
function Engine:invalidate(rejected)
    local first, shared = self.first, self.shared
    local record = read(self, first)
    local token = record and record.access_token
    if type(token) ~= "string" or rejected and rejected ~= token then return false end
    local token_id = records.token_id(self.secret, token)
    local now = first.clock()
    local not_before = (type(record.fetched_at) == "number" and record.fetched_at or now)
        + self.policy.invalidate_cooldown
    local cooldown = not_before > now and records.invalidated(self.policy, not_before) or nil
    if not drop(self, first, token_id, cooldown) then return false end
    count(self, "invalidations")
    self.emit("invalidation", { cooldown = self.policy.invalidate_cooldown })
    if shared then
        local cooldown_there = records.invalidated(self.policy,
            not_before + (shared.clock() - now))
        self.spread(function() drop(self, shared, token_id, cooldown_there) end)
    end
    return true
end

--- Forget the token in every layer, with no cool-down: the next get
-- fetches, and the forgotten token is never taken back.  A lock another
-- holds (a fetch in progress) is waited for, within the deadline.
-- Whether a token was forgotten; nil and why when it could not be.
function Engine:forget()
    local first, shared = self.first, self.shared
    local mine = read(self, first)
    local dropped = mine and type(mine.access_token) == "string" or false
    first.store:set(first.key, self.secret, {}, 1)
    if not shared then return dropped end
    local give_up = shared.clock() + self.deadline
    local pause = shared.pace[1]
    while true do
        local record, why = read(self, shared)
        if record == nil then return nil, why end
        if not (record and type(record.access_token) == "string") then return dropped end
        if drop(self, shared, records.token_id(self.secret, record.access_token),
                { next_try = shared.clock() }) then
            return true
        end
        -- another holds the lock (or the store failed): look again until
        -- the deadline
        local now = shared.clock()
        if now >= give_up or not shared.wait(min(pause, give_up - now)) then
            return nil, format("the token in %s could not be forgotten: another process "
                .. "holds its lock (a fetch in progress, or a stopped process) past the "
                .. "%g s deadline", tostring(shared.store), self.deadline)
        end
        pause = min(pause * 2, shared.pace[2])
    end
end

--- What the first layer's hot path reads (its store's peek).
function Engine:peek()
    return self.first.store:peek(self.first.key)
end

--- The record a layer holds ("first" or "shared") and that layer's time,
-- or nil; nil and why when that store failed.  Nothing is fetched.
function Engine:record(which)
    local layer = self[which or "first"]
    if not layer then return nil end
    local record, why = read(self, layer)
    if record == nil then return nil, why end
    return record or nil, nil, layer.clock()
end

--- Counters: fetches, refreshes, retries, failures, hits (tokens another
-- process or node fetched), drops (copies dropped as rejected elsewhere),
-- invalidations, store_errors, budget_waits.
function Engine:stats()
    local stats = {}
    for k, v in pairs(self.counters) do stats[k] = v end
    return stats
end

local function layer(store, key, clock, lease, patience, wait, pace, first)
    return { store = store, key = key, clock = clock, lease = lease,
             patience = min(patience, lease), wait = wait, pace = pace, first = first }
end

local function no_op() end
-- How a caller waits by default: for the shared store, it sleeps; at the
-- first layer, only where it may yield (elsewhere no other caller of this
-- process could be fetching meanwhile).
local function sleep(seconds)
    transport.sleep(seconds)
    return true
end
local function yield_wait(seconds) return transport.can_yield() and sleep(seconds) end

--- A new engine.  opts:
--   source(deadline)   one fetch (deadline: seconds a refresh may hold its
--                      caller): a token table, or nil and an error; then
--                      its attempts
--   conf, policy       the validated configuration (its secret seals
--                      records, its timeout and deadline time the leases),
--                      oauth2.policy's
--   first, first_key   the first layer's store (with peek and locked), key
--   shared, key        a shared store (or nil), the key there
--   clock, wall        the first layer's clock, the shared layer's
--   first_lease, first_pace {first, max}, first_wait(pause, left) -> bool
--                      the first layer's lock (waited for as long as it
--                      lasts) and how a caller waits there (false: cannot)
--   wait(seconds) -> bool   how a caller waits for the shared store
--   schedule(fn), wake()    run fn(premature) apart (timers); wake waiters
--   spread(fn)         run fn where the shared store may be reached
--   log(level, text), place, on_event(event, info), count(name, n)
--   counters           a table the engine's counters join (its own else)
-- The lease and waits of a first layer default to a Lua state's (above).
function _M.new(opts)
    local conf, policy, deadline = opts.conf, opts.policy, opts.conf.deadline
    local clock, wall = opts.clock or core.now, opts.wall or core.time
    local first = layer(opts.first, opts.first_key or opts.key, clock,
        opts.first_lease or deadline + 1, huge,
        opts.first_wait or yield_wait, opts.first_pace or FIRST_PACE, true)
    local self = setmetatable({
        secret = conf.client_secret or conf.access_token, policy = policy,
        source = opts.source, deadline = deadline,
        first = first, shared = nil, schedule = opts.schedule, wake = opts.wake,
        spread = opts.spread or function(fn) fn() end,
        log = opts.log or no_op, place = opts.place or "process",
        count = opts.count,
        -- the hook runs where it is called (in nginx a timer, a header
        -- filter: it must not yield), and its errors are not ours
        emit = opts.on_event and function(event, info) pcall(opts.on_event, event, info) end
            or no_op,
        running = false, quiet_until = -huge, looked_until = -huge,
        counters = opts.counters or {},
    }, Engine)
    for _, name in ipairs { "fetches", "refreshes", "retries", "failures", "hits", "drops",
                            "invalidations", "store_errors", "budget_waits" } do
        self.counters[name] = 0
    end
    local store = opts.shared
    if store then
        -- a store with a clock of its own (Redis) times records alike for
        -- every node; another (a file: one machine) by the wall's
        local shared_clock = store.now and function() return store:now() end or wall
        self.shared = layer(store, opts.key, shared_clock, _M.lease_for(conf),
            deadline, opts.wait or sleep, PACE, false)
        first.below = self.shared
    end
    return self
end

return _M
