-- oauth2.store.memory: records in this Lua state's memory (one process;
-- the specs, and the engine's virtual clock).  The contract is
-- oauth2.store's.

local core = require "oauth2.core"
local stores = require "oauth2.store"

local pairs, setmetatable = pairs, setmetatable

local Memory = {}
Memory.__index = Memory

local Lock = {}
Lock.__index = Lock

function Lock:unlock()
    local held = self.store.locks[self.key]
    if held and held.lock == self then self.store.locks[self.key] = nil end
end

function Memory:get(key)
    local entry = self.records[key]
    if not entry then return nil end
    if entry.until_at and self.clock() >= entry.until_at then
        self.records[key] = nil
        return nil
    end
    -- a copy: the caller may change it
    local record = {}
    for k, v in pairs(entry.record) do record[k] = v end
    return record
end

function Memory:set(key, _, record, ttl)
    local copy = {}
    for k, v in pairs(record) do copy[k] = v end
    self.records[key] = { record = copy, until_at = ttl and self.clock() + ttl }
    return true
end

function Memory:try_lock(key, lease)
    local held = self.locks[key]
    local now = self.clock()
    if held and now < held.until_at then return false end
    local lock = setmetatable({ store = self, key = key }, Lock)
    self.locks[key] = { lock = lock, until_at = now + (lease or self.lease) }
    return lock
end

Memory.delete_token_if = stores.delete_token_if

function Memory.__tostring()
    return "oauth2.store memory"
end

--- A store in memory; `lease` (seconds) is the default lease of a lock,
-- `clock` the clock of leases and times to live (core.now by default).
return function(lease, clock)
    return setmetatable({ records = {}, locks = {}, lease = lease or stores.LEASE,
                          clock = clock or core.now, kind = "memory" }, Memory)
end
