-- oauth2.store.memory: records in this Lua state's memory.
--
-- The first layer of oauth2.client, and the specs' shared store on their
-- virtual clock.  Each key has one entry table: its record, its lock and
-- what the caller's hot path reads, filled in by `view(entry, record)` at
-- every write (as lua-resty-mlcache's l1_serializer), so a cached read is
-- a field of a table the caller already holds.

local core = require "oauth2.core"
local record_codec = require "oauth2.record"
local policy_rules = require "oauth2.policy"

local setmetatable = setmetatable
local huge = math.huge

local Memory = {}
Memory.__index = Memory

local Lock = {}
Lock.__index = Lock

function Lock:unlock()
    local entry = self.entry
    if entry.lock == self then entry.lock, entry.lock_until = nil, nil end
end

--- The entry of `key`, made on first use (what peek gives).
function Memory:entry(key)
    local entry = self.entries[key]
    if entry == nil then
        entry = { serve_until = -huge }
        self.entries[key] = entry
    end
    return entry
end
Memory.peek = Memory.entry

function Memory:get(key)
    local entry = self.entries[key]
    local record = entry and entry.record
    if not record then return nil end
    if entry.until_at and self.clock() >= entry.until_at then
        self:set(key, nil, nil)
        return nil
    end
    return record_codec.shift(record, 0) -- a copy: the caller may change it
end

-- (a nil record empties the entry)
function Memory:set(key, _, record, ttl)
    local entry = self:entry(key)
    local copy = record and record_codec.shift(record, 0)
    entry.record, entry.until_at = copy, copy and ttl and self.clock() + ttl or nil
    if self.view then self.view(entry, copy) end
    return true
end

function Memory:try_lock(key, lease)
    local entry = self:entry(key)
    local now = self.clock()
    if entry.lock and now < entry.lock_until then return false end
    local lock = setmetatable({ entry = entry }, Lock)
    entry.lock, entry.lock_until = lock, now + (lease or self.lease)
    return lock
end

--- Whether another holds the lock of `key` (a lapsed lock is free).
function Memory:locked(key)
    local entry = self.entries[key]
    return entry ~= nil and entry.lock ~= nil and self.clock() < entry.lock_until
end

Memory.delete_token_if = record_codec.drop_if

--- One token request drawn from the budget (opts.budget a minute): the
-- seconds to wait for the slot taken, or false and the seconds until one.
function Memory:draw(max_wait)
    local next_at, delay = policy_rules.budget_draw(self.budget_at, self.clock(), self.budget,
        max_wait)
    if not next_at then return false, delay end
    self.budget_at = next_at
    return delay
end

function Memory.__tostring()
    return "oauth2.store memory"
end

local _M = {}

--- A store in memory.  opts: lease (a lock's default), clock (core.now),
-- view(entry, record), weak (an entry goes when nobody holds it), budget
-- (token requests a minute, for draw).
function _M.new(opts)
    opts = opts or {}
    return setmetatable({
        entries = opts.weak and setmetatable({}, { __mode = "v" }) or {},
        lease = opts.lease or policy_rules.LEASE, clock = opts.clock or core.now,
        view = opts.view, kind = "memory", budget = opts.budget,
        -- a get, compare and set of this Lua state runs without a yield
        atomic = true,
    }, Memory)
end

return _M
