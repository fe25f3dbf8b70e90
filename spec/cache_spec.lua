-- oauth2.cache, the engine of shared tokens, on a virtual clock.
--
-- A world holds a virtual clock, a scheduler of coroutines (one per
-- process or node), a fake endpoint that takes virtual time, and a store:
-- the memory store on the virtual clock, or a stand-in for Redis on the
-- same contract that can fail the way a Redis does (error replies,
-- timeouts, a lease taken whose reply never came back).  Each rule of
-- oauth2.cache is specified once here; the real nginx, Redis and process
-- specs keep only a few smoke tests.

local cache = require "oauth2.cache"
local stores = require "oauth2.store"
local policy_rules = require "oauth2.policy"

local SECRET = "sentinel-Secret-cache1"

-- A new world: clock, scheduler, endpoint, store.
local function world(opts)
    opts = opts or {}
    local w = { t = 1000, queue = {}, requests = {}, commands = 0 }
    function w.now() return w.t end
    -- sleep: inside a coroutine, yield to the scheduler; outside, advance
    function w.sleep(seconds)
        local co, main = coroutine.running() -- (nil in 5.1's main thread)
        if co and not main then coroutine.yield(w.t + seconds)
        else w.t = w.t + seconds end
    end
    -- the endpoint: `script` answers in order, then tokens
    w.script = {}
    w.latency = opts.latency or 0.1
    w.issued = 0
    function w.exchange(deadline)
        w.requests[#w.requests + 1] = { at = w.t, deadline = deadline }
        local answer = table.remove(w.script, 1)
        local latency = answer and answer.latency or w.latency
        if deadline and latency > deadline then
            w.sleep(deadline)
            return nil, { kind = "timeout", message = "the attempt timed out" }
        end
        w.sleep(latency)
        if answer and answer.kind then
            return nil, { kind = answer.kind, status = answer.status,
                          retry_after = answer.retry_after, message = "it failed" }
        end
        w.issued = w.issued + 1
        return { access_token = "token-" .. w.issued, token_type = "Bearer",
                 expires_in = opts.expires_in or 3600 }
    end
    local memory = stores.memory(60, w.now)
    -- the store, wrapped so faults can be injected and commands counted
    w.fault = nil -- nil, "error" (an error reply), "lost" (SET NX done, reply lost)
    w.store = {
        atomic = false,
        get = function(_, ...)
            w.commands = w.commands + 1
            if w.fault == "error" then return nil, "redis: READONLY You can't write" end
            return memory:get(...)
        end,
        set = function(_, ...)
            w.commands = w.commands + 1
            if w.fault == "error" then return nil, "redis: OOM command not allowed" end
            return memory:set(...)
        end,
        try_lock = function(_, ...)
            w.commands = w.commands + 1
            if w.fault == "error" then return nil, "redis: NOAUTH Authentication required" end
            local lock = memory:try_lock(...)
            if w.fault == "lost" and lock then
                -- the lease was taken, but its reply came after the timeout
                return nil, "redis: the command timed out"
            end
            return lock
        end,
        delete_token_if = function(_, ...)
            w.commands = w.commands + 1
            return memory:delete_token_if(...)
        end,
    }
    w.memory = memory
    w.policy = assert(policy_rules.check(opts.policy or { refresh_jitter = 0 }))
    return w
end

-- A process or node of the world: a first layer (its record) over the
-- engine, the way oauth2.client and oauth2.openresty use it.
local function node(w, conf)
    conf = conf or {}
    local n = { store_errors = 0, record = nil, cool_until = -math.huge }
    n.ctx = {
        store = w.store, key = "key", secret = SECRET, policy = w.policy,
        lease = cache.lease_for { timeout = conf.timeout or 10, deadline = conf.deadline or 30 },
        deadline = conf.deadline or 30, failures = 0,
        wall = w.now, sleep = w.sleep, exchange = w.exchange,
        store_failed = function() n.store_errors = n.store_errors + 1 end,
    }
    -- the token (a record), or nil and an error
    function n.token()
        local now = w.now()
        local record = n.record
        if record and now < record.refresh_at then return record end
        if now < n.cool_until and not (record and now < record.expire_at) then
            return nil, n.err
        end
        local held
        if record and now < record.expire_at then
            n.alone_at = n.alone_at or policy_rules.alone_at(record.refresh_at, record.expire_at)
            held = { expire_at = record.expire_at, alone_at = n.alone_at,
                     deadline = w.policy.refresh_timeout }
        end
        local got, err = cache.obtain(n.ctx, held)
        if got then
            if got ~= n.record then n.alone_at = nil end
            n.record, n.ctx.failures = got, 0
            return got
        end
        if got == false then return n.record end
        n.err, n.cool_until = err, w.now() + err.retry_after
        if err.failures then n.ctx.failures = err.failures end
        -- a failed refresh: the old token serves while it is valid
        if record and w.now() < record.expire_at then return record end
        return nil, err
    end
    -- the periodic look of a holder of a fresh copy
    function n.look()
        local record = cache.look(n.ctx)
        if record and n.record and record.rejected
                and stores.token_id(SECRET, n.record.access_token) == record.rejected then
            n.record = nil
        end
    end
    return n
end

-- Run functions as coroutines on the virtual clock until all are done.
local function run(w, fns)
    local ready = {}
    for i, fn in ipairs(fns) do ready[i] = { at = w.t, co = coroutine.create(fn) } end
    while #ready > 0 do
        table.sort(ready, function(a, b) return a.at < b.at end)
        local item = table.remove(ready, 1)
        if item.at > w.t then w.t = item.at end
        local ok, wake = coroutine.resume(item.co)
        assert(ok, wake)
        if coroutine.status(item.co) ~= "dead" then
            ready[#ready + 1] = { at = wake or w.t, co = item.co }
        end
    end
end

describe("oauth2.cache", function()
    it("makes one token request for many nodes at a cold start", function()
        local w = world()
        local nodes, fns = {}, {}
        for i = 1, 20 do
            nodes[i] = node(w)
            fns[i] = function() assert(nodes[i].token()) end
        end
        run(w, fns)
        assert.equals(1, #w.requests)
        for i = 2, 20 do assert.equals(nodes[1].record.access_token, nodes[i].record.access_token) end
    end)

    it("writes every record with a time to live", function()
        local w = world()
        local n = node(w)
        assert(n.token())
        local entry = w.memory.records.key
        assert.is_number(entry.until_at)
        -- the token's expiry (3600 s, 10% margin), not forever
        assert.near(w.t + 3240, entry.until_at, 1)
        -- a failure's record lives as long as its cool-down at least
        w.t = w.t + 3600
        w.script = { { kind = "http", status = 503 } }
        assert.is_nil(n.token())
        entry = w.memory.records.key
        assert.is_true(entry.until_at >= w.t + w.policy.cooldown - 1)
    end)

    it("takes a store's error reply for a store failure, never a held lease", function()
        local w = world()
        w.fault = "error"
        local a, b = node(w), node(w)
        run(w, { function() assert(a.token()) end, function() assert(b.token()) end })
        -- each fetched alone, nobody waited for a lease nobody holds
        assert.equals(2, #w.requests)
        assert.is_true(w.t < 1001, "waited " .. (w.t - 1000) .. " s")
        assert.is_true(a.store_errors >= 1)
        -- a holder of a valid token keeps serving it with the store failing
        w.fault = nil
        w.t = w.t + 2900 -- past the refresh point
        w.fault = "error"
        local requests = #w.requests
        assert(a.token())
        assert.is_true(#w.requests <= requests + 1)
    end)

    it("lets a fleet go on within a lease when a lease holder was killed", function()
        local w = world()
        -- a holder took the lease and died before fetching
        assert(w.memory:try_lock("key", node(w).ctx.lease))
        local n = node(w)
        run(w, { function() assert(n.token()) end })
        assert.equals(1, #w.requests)
        -- within one lease (one attempt's timeout and 5 s), not 60 s
        assert.is_true(w.requests[1].at - 1000 <= 15.5, tostring(w.requests[1].at - 1000))
    end)

    it("does not wait out a lease whose reply was lost", function()
        local w = world()
        w.fault = "lost"
        local n = node(w)
        run(w, { function() assert(n.token()) end })
        -- the lost reply is a store failure: fetched alone at once
        assert.equals(1, #w.requests)
        assert.is_true(w.t < 1001)
        -- the orphaned lease lapses within one lease for the others
        w.fault = nil
        w.memory.records.key = nil
        local other = node(w)
        run(w, { function() assert(other.token()) end })
        assert.is_true(w.t - 1000 <= 16, tostring(w.t - 1000))
    end)

    it("never lets an old holder's unlock release a newer lease", function()
        local w = world()
        local old = assert(w.memory:try_lock("key", 1))
        w.t = w.t + 2
        local new = assert(w.memory:try_lock("key", 15))
        old:unlock()
        assert.is_false(w.memory:try_lock("key", 15))
        new:unlock()
        assert.truthy(w.memory:try_lock("key", 15))
    end)

    for _, kind in ipairs { "protocol", "network", "timeout", "tls", "http", "config" } do
        it("remembers a failure of kind " .. kind .. " for its cool-down", function()
            local w = world()
            local n = node(w)
            w.script = { { kind = kind, status = kind == "http" and 400 or nil } }
            for _ = 1, 50 do
                assert.is_nil(n.token())
                w.t = w.t + 0.05
            end
            assert.equals(1, #w.requests)
            -- fleet-wide, except a node's own config mistake
            local other = node(w)
            if kind == "config" then
                assert(other.token())
                assert.equals(2, #w.requests)
            else
                assert.is_nil(other.token())
                assert.equals(1, #w.requests)
            end
        end)
    end

    it("lengthens the cool-down across failures in a row, fleet-wide", function()
        local w = world()
        for i = 1, 1000 do w.script[i] = { kind = "http", status = 503 } end
        local nodes = {}
        for i = 1, 5 do nodes[i] = node(w) end
        -- ten minutes of calls, every node once a second
        for _ = 1, 600 do
            for _, n in ipairs(nodes) do n.token() end
            w.t = w.t + 1
        end
        -- 5 s doubling (jittered) up to 300 s: a handful, not 120
        assert.is_true(#w.requests >= 5 and #w.requests <= 9, tostring(#w.requests))
        -- and the first success ends it
        w.script = {}
        w.t = w.t + 300
        assert(nodes[1].token())
        assert.equals(0, nodes[1].ctx.failures)
    end)

    it("keeps waiters to O(1) store commands per second", function()
        local w = world()
        w.latency = 12 -- a slow endpoint (within the 15 s lease)
        local holder, waiter = node(w), node(w)
        local commands
        run(w, {
            function() assert(holder.token()) end,
            function()
                w.sleep(0.01)
                commands = w.commands
                assert(waiter.token())
                commands = w.commands - commands
            end,
        })
        assert.equals(1, #w.requests)
        -- about two commands a second, not 38
        assert.is_true(commands <= 2 * 12 + 12, tostring(commands))
    end)

    it("serves a holder's valid token while another holds the lease", function()
        local w = world { latency = 20 }
        local a, b = node(w), node(w)
        assert(a.token())
        b.record = a.record
        -- the store lost its record (evicted, flushed): only b's copy is left
        w.memory.records.key = nil
        w.t = w.t + 2900 -- past the refresh point
        local served
        run(w, {
            function() assert(a.token()) end,
            function()
                w.sleep(0.01)
                local started = w.t
                served = b.token()
                assert.is_true(w.t - started < 0.01)
            end,
        })
        assert.equals(b.record, served)
    end)

    it("gives a refresh of a valid token its own short deadline", function()
        local w = world()
        local n = node(w)
        assert(n.token())
        assert.is_nil(w.requests[1].deadline)
        w.t = w.t + 2900
        w.latency = 60 -- a hanging endpoint
        local started = w.t
        assert(n.token())
        assert.equals(5, w.requests[2].deadline)
        assert.is_true(w.t - started <= 5)
    end)

    it("spreads the points of fetching alone over the whole window", function()
        local buckets = {}
        for i = 1, 8 do buckets[i] = 0 end
        for _ = 1, 4000 do
            local at = policy_rules.alone_at(2800, 3240)
            assert.is_true(at >= 2800 and at <= 3240)
            local i = math.floor((at - 2800) / 55) + 1
            buckets[i] = buckets[i] + 1
        end
        -- even: 500 a bucket; none far above (the old second half had 1000)
        for i = 1, 8 do assert.is_true(buckets[i] < 650, table.concat(buckets, " ")) end
    end)

    it("publishes no older token over a newer one", function()
        local w = world()
        local slow, fast = node(w), node(w)
        w.script = { { latency = 30 } } -- the first holder's fetch hangs past its lease
        run(w, {
            function() assert(slow.token()) end,
            function()
                w.sleep(16) -- the lease lapsed: another fetches
                assert(fast.token())
            end,
        })
        assert.equals(2, #w.requests)
        -- the record keeps the token fetched later (issued first)
        local record = assert(w.memory:get("key"))
        assert.equals("token-1", fast.record.access_token)
        assert.equals("token-1", record.access_token)
        assert.equals("token-1", slow.record.access_token)
    end)

    describe("a layer over another (an nginx node over the fleet's store)", function()
        -- a node's context: its own store, whose fetch is the fleet's obtain
        local function layered(w, fleet)
            local own = stores.memory(60, w.now)
            local ctx = {}
            for k, v in pairs(fleet.ctx) do ctx[k] = v end
            ctx.store = own
            ctx.exchange = function(_, held) return cache.obtain(fleet.ctx, held) end
            return ctx, own
        end

        it("makes one request for the workers of many nodes, keeping the fleet's times", function()
            local w = world()
            local nodes, fns = {}, {}
            for i = 1, 3 do
                nodes[i] = { layered(w, node(w)) }
                for _ = 1, 4 do
                    fns[#fns + 1] = function() assert(cache.obtain(nodes[i][1])) end
                end
            end
            run(w, fns)
            -- and a node that comes later takes the fleet's record as it is
            w.t = w.t + 100
            nodes[4] = { layered(w, node(w)) }
            assert(cache.obtain(nodes[4][1]))
            assert.equals(1, #w.requests)
            local fleet = assert(w.memory:get("key", SECRET))
            for i = 1, 4 do
                local record = assert(nodes[i][2]:get("key", SECRET))
                assert.equals(fleet.access_token, record.access_token)
                assert.equals(fleet.fetched_at, record.fetched_at)
                assert.equals(fleet.refresh_at, record.refresh_at)
            end
        end)

        it("keeps the fleet's cool-down, neither counted again nor lengthened", function()
            local w = world()
            local ctx, own = layered(w, node(w))
            w.script = { { kind = "http", status = 503 } }
            local _, err = cache.obtain(ctx)
            assert.equals(1, err.failures)
            local fleet = w.memory:get("key", SECRET)
            assert.equals(fleet.next_try, own:get("key", SECRET).next_try)
            -- another node, later, takes what is left of the fleet's cool-down
            w.t = w.t + 2
            local other, other_own = layered(w, node(w))
            _, err = cache.obtain(other)
            assert.equals(503, err.status)
            local record = other_own:get("key", SECRET)
            assert.equals(fleet.next_try, record.next_try)
            assert.is_nil(record.failures)
            -- the node's other workers get the cool-down without a request
            _, err = cache.obtain(other)
            assert.equals(503, err.status)
            assert.equals(1, #w.requests)
        end)

        it("lets a node with a valid token serve it while another node fetches", function()
            local w = world()
            local ctx, own = layered(w, node(w))
            assert(cache.obtain(ctx))
            w.t = w.t + 3000 -- past the refresh point, before the expiry
            local lease = assert(w.memory:try_lock("key", 15))
            local record = own:get("key", SECRET)
            local got, again = cache.obtain(ctx, { expire_at = record.expire_at,
                alone_at = record.expire_at })
            assert.is_false(got)
            assert.is_true(again > 0 and again <= 1)
            assert.equals(1, #w.requests)
            lease:unlock()
        end)
    end)

    describe("invalidation", function()
        it("holds one cool-down for every node, and drops copies at their next look", function()
            local w = world()
            local a, b = node(w), node(w)
            assert(a.token())
            assert(b.token())
            assert.equals(1, #w.requests)
            w.t = w.t + 2
            local id = stores.token_id(SECRET, a.record.access_token)
            assert.is_true(cache.invalidate(a.ctx, id, a.record.fetched_at + 10))
            a.record = nil
            -- b still holds a copy: its next look drops it
            b.look()
            assert.is_nil(b.record)
            -- nobody fetches within the cool-down (10 s after the fetch)
            local _, err = a.token()
            assert.equals("invalidated", err.code)
            _, err = b.token()
            assert.equals("invalidated", err.code)
            assert.equals(1, #w.requests)
            -- then one request for all
            w.t = w.t + 9
            assert(a.token())
            assert(b.token())
            assert.equals(2, #w.requests)
            assert.equals(a.record.access_token, b.record.access_token)
        end)

        it("does not drop a token fetched after the rejected one", function()
            local w = world()
            local a = node(w)
            assert(a.token())
            local old = stores.token_id(SECRET, a.record.access_token)
            w.t = w.t + 20
            assert(cache.invalidate(a.ctx, old, a.record.fetched_at + 10))
            a.record = nil
            assert(a.token())
            assert.equals(2, #w.requests)
            -- a late invalidation of the old token
            assert.is_false(cache.invalidate(a.ctx, old, w.t))
            assert.equals("token-2", w.memory:get("key").access_token)
        end)
    end)
end)
