-- bench/fleet_sim.lua: token requests of a fleet, in virtual time.
--
-- 10,000 nodes with 2 workers each, steady traffic, one credential, 1 h
-- tokens, over 24 h, cold start included.  Every worker is a real
-- oauth2.client (the real policy: refresh at 80% less up to 5% jitter,
-- margins, cool-downs) on a clock of the simulation, and every token
-- comes through the real exchange from a canned session, which counts
-- the requests per minute.  Nothing sleeps and nothing leaves the process.
--
-- The stores, all on the store contract (oauth2.store):
--   memory  each worker keeps its own token (no store)
--   shm     the workers of a node share one store (a memory store stands
--           in for the node's lua_shared_dict: same contract, one lock)
--   redis   every worker of the fleet shares one store (a memory store on
--           the simulation's clock stands in for Redis: get, set with a
--           time to live, a lock with a lease, compare-and-delete)
--   budget  1,000 credentials of one organization on one Redis with the
--           fleet's budget (60 token requests a minute, the default), each
--           on BENCH_BUDGET_NODES nodes (10) of one worker: a cold start
--           of every credential at once
--   redis, 10 min outage   the same with the store unreachable for the 10
--           minutes around the fleet's first refresh point after mid-run
--           (every call fails as when Redis is down): the nodes keep their
--           valid tokens, then fall back to fetches of their own at points
--           spread over the window from the refresh point to the expiry
--
-- Fetches take no virtual time, so no two workers race for a lease: the
-- races are the fleet spec's (real processes, real Redis).  A worker asks
-- for its token whenever its client would do more than a cache hit (its
-- refresh point, a look at the store, a cool-down's end) and at least
-- once a second of virtual time while it has none: that is every call a
-- busy worker makes that can cost a request.  With the redis store the
-- workers look at it every 15 min here instead of every 4 s (looks only
-- read; invalidations, which the looks are for, are not simulated), and
-- so do the workers of a node with the shm stand-in (nginx's shared dict
-- needs no looks: every worker reads it on every request).
--
-- Run with `make bench-fleet`; BENCH_NODES and BENCH_HOURS change the size.

local build = jit and "luajit" or _VERSION:match("%d+%.%d+")
package.path = "lua/?.lua;" .. package.path
package.cpath = "build/" .. build .. "/?.so;" .. package.cpath

-- the simulation's clock, for the clients and the stores (before they load)
local core = require "oauth2.core"
local now = 0
local EPOCH = 1.8e9 -- the wall clock's reading at the start
core.now = function() return now end
core.time = function() return EPOCH + now end

local stores = require "oauth2.store"
-- a wait for a slot of the budget passes virtual time
require("oauth2.transport").sleep = function(seconds) now = now + seconds end
local client_module = require "oauth2.client"

local NODES = tonumber(os.getenv("BENCH_NODES")) or 10000
local WORKERS = 2
local HOURS = tonumber(os.getenv("BENCH_HOURS")) or 24
local LIFETIME = 3600
local END = HOURS * 3600

-- --------------------------------------------------------------- a heap

-- Workers by the time they next ask: a binary min-heap of {at, worker}.
local function heap_push(heap, at, item)
    local n = #heap + 1
    heap[n] = { at, item }
    while n > 1 do
        local parent = math.floor(n / 2)
        if heap[parent][1] <= heap[n][1] then break end
        heap[parent], heap[n] = heap[n], heap[parent]
        n = parent
    end
end

local function heap_pop(heap)
    local top = heap[1]
    local last = heap[#heap]
    heap[#heap] = nil
    local n = #heap
    if n > 0 then
        heap[1] = last
        local i = 1
        while true do
            local left, right, small = 2 * i, 2 * i + 1, i
            if left <= n and heap[left][1] < heap[small][1] then small = left end
            if right <= n and heap[right][1] < heap[small][1] then small = right end
            if small == i then break end
            heap[i], heap[small] = heap[small], heap[i]
            i = small
        end
    end
    return top[1], top[2]
end

-- ------------------------------------------------------------ a scenario

-- The outage's start and end once it is known (seconds of the simulation).
local outage_window

-- A store that is unreachable for `length` seconds around the first
-- refresh point after `after` (the time of the simulation): down from
-- half of `length` before it.
local function with_outage(store, after, length)
    local from, to = math.huge, math.huge
    local function down()
        if from == math.huge and now >= after then
            for _, held in pairs(store.entries) do
                from = held.record.refresh_at - EPOCH - length / 2
                to = from + length
            end
        end
        return now >= from and now < to
    end
    outage_window = function() return from, to end
    return setmetatable({
        get = function(_, ...)
            if down() then return nil, "unreachable" end
            return store:get(...)
        end,
        set = function(_, ...)
            if down() then return nil, "unreachable" end
            return store:set(...)
        end,
        try_lock = function(_, ...)
            if down() then return nil, "unreachable" end
            return store:try_lock(...)
        end,
        delete_token_if = function(_, ...)
            if down() then return false end
            return store:delete_token_if(...)
        end,
    }, { __index = store })
end

-- Run one scenario; the token requests per minute.
local function simulate(kind)
    local minutes = {}
    for m = 0, math.floor(END / 60) do minutes[m] = 0 end
    local issued = 0
    local session = {
        request = function()
            local minute = math.floor(now / 60)
            minutes[minute] = minutes[minute] + 1
            issued = issued + 1
            return { status = 200, headers = {},
                     body = ('{"access_token":"fleet-token-%d","token_type":"Bearer",'
                         .. '"expires_in":%d}'):format(issued, LIFETIME) }
        end,
    }
    local fleet_store
    if kind == "budget" then
        fleet_store = stores.memory { lease = 60, budget = 60 }
        fleet_store.look_every = 900
    elseif kind == "redis" or kind == "outage" then
        fleet_store = stores.memory { lease = 60 }
        fleet_store.look_every = 900
        if kind == "outage" then
            -- 10 minutes around the first refresh point after mid-run
            fleet_store = with_outage(fleet_store, END / 2, 600)
        end
    end
    local heap, workers = {}, {}
    local nodes, credentials, per_node = NODES, 1, WORKERS
    if kind == "budget" then
        nodes, credentials, per_node = tonumber(os.getenv("BENCH_BUDGET_NODES")) or 10, 1000, 1
    end
    for n = 1, nodes * credentials do
        local node_store = fleet_store
        if kind == "shm" then
            node_store = stores.memory { lease = 60 }
            node_store.look_every = 900
        end
        for _ = 1, per_node do
            -- a clock of its own: clients on distinct clocks share no entry,
            -- so each worker holds its own, as a worker process does
            local worker = assert(client_module.new {
                client_id = "fleet-" .. (n % credentials), client_secret = "fleet-secret",
                session = session, retries = 0, store = node_store,
                clock = function() return now end,
            })
            worker.engine.quiet_until = math.huge -- a warning per worker is noise here
            workers[#workers + 1] = worker
            -- the fleet starts within its first minute
            heap_push(heap, math.random() * 60, worker)
        end
    end
    while #heap > 0 do
        local at, worker = heap_pop(heap)
        if at >= END then break end
        now = at
        worker:token()
        local entry = worker.entry
        -- the earlier of the next point a refresh may be tried and the next look
        local next_at = entry.serve_until
        if entry.token == nil then
            -- without a token: the end of its cool-down
            local record = worker.engine:record()
            next_at = record and record.next_try or now + 1
        end
        -- a worker with traffic asks at least once a second
        heap_push(heap, math.max(next_at, now + 1), worker)
    end
    for _, worker in ipairs(workers) do worker:close() end
    return minutes
end

-- -------------------------------------------------------------- report

local NAMES = {
    memory = "memory store (per worker)",
    shm = "shared dict (per node)",
    redis = "Redis (fleet)",
    outage = "Redis (fleet), 10 min outage",
    budget = "Redis (fleet), 1,000 credentials, budget 60/min",
}

print(("%d nodes x %d workers, %d h, %d s tokens, virtual time, %s"):format(NODES, WORKERS,
    HOURS, LIFETIME, jit and jit.version or _VERSION))
print("")
print("| store | requests | per hour: mean | per hour: max | worst minute | first minute "
    .. "| per token lifetime (after the first hour) |")
print("| --- | --- | --- | --- | --- | --- | --- |")
local outage_line
-- BENCH_ONLY=outage (a comma list) runs only those scenarios
local only = os.getenv("BENCH_ONLY")
for _, kind in ipairs { "memory", "shm", "redis", "outage", "budget" } do
    if only and not ("," .. only .. ","):find("," .. kind .. ",", 1, true) then goto skip end
    local started = os.clock()
    local minutes = simulate(kind)
    local total, worst, hours = 0, 0, {}
    for m = 0, math.floor(END / 60) - 1 do
        local n = minutes[m]
        total = total + n
        if n > worst then worst = n end
        local h = math.floor(m / 60)
        hours[h] = (hours[h] or 0) + n
    end
    local max_hour, later = 0, 0
    for h = 0, HOURS - 1 do
        if hours[h] > max_hour then max_hour = hours[h] end
        if h > 0 then later = later + hours[h] end
    end
    print(("| %s | %d | %.1f | %d | %d | %d | %.2f |"):format(NAMES[kind], total,
        total / HOURS, max_hour, worst, minutes[0],
        HOURS > 1 and later / (HOURS - 1) * LIFETIME / 3600 or 0))
    io.stderr:write(("  (%s: %.1f s of CPU)\n"):format(kind, os.clock() - started))
    if kind == "outage" then
        -- the fetches alone happen while the store is down: its minutes
        -- from the first minute anyone fetched alone (the earliest refresh
        -- point in the outage) to the outage's end
        local from, to = outage_window()
        local first, last = math.floor(from / 60), math.ceil(to / 60) - 1
        while first < last and minutes[first] == 0 do first = first + 1 end
        local sum, peak = 0, 0
        for m = first, last do
            sum = sum + minutes[m]
            if minutes[m] > peak then peak = minutes[m] end
        end
        local span = last - first + 1
        outage_line = ("Fallback window: minutes %d to %d (%d min), %d token requests, "
            .. "%.0f a minute on average, worst minute %d = %.2fx the average"):format(
            first, last, span, sum, sum / span, peak, peak / (sum / span))
    end
    ::skip::
end
if outage_line then print("") print(outage_line) end
