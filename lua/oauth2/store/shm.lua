-- oauth2.store.shm: every worker of an nginx, through a lua_shared_dict.
--
-- Records are sealed.  Beside each, its view for the hot path (as
-- lua-resty-mlcache's l1_serializer): the ready-made header until the
-- token's expiry, flagged with the next point a refresh may be tried in
-- whole seconds (the exact point is a key of its own, read only in that
-- second), so a request with a fresh token is one dict read (peek).  A
-- lock names its owner (pid and nonce) and is taken over at once when
-- that process is gone.  A dict too small for a record leaves this worker
-- a copy of its own, said once.

local core = require "oauth2.core"
local record_codec = require "oauth2.record"
local policy_rules = require "oauth2.policy"

local type, setmetatable, tostring, tonumber, pcall =
      type, setmetatable, tostring, tonumber, pcall
local floor, max = math.floor, math.max
local ngx = ngx -- luacheck: ignore (nil outside OpenResty)

local _M = {}

--- Whether process `pid` still exists (true where that cannot be told).
local process_alive
do
    local ok, ffi = pcall(require, "ffi")
    if ok then
        pcall(ffi.cdef, "int kill(int pid, int sig);")
        process_alive = function(pid)
            if ffi.C.kill(pid, 0) == 0 then return true end
            return ffi.errno() ~= 3 -- ESRCH: no such process
        end
    else
        process_alive = function() return true end
    end
end
_M.process_alive = process_alive

-- Seconds since the epoch, freshly read (ngx.now() is cached per loop turn).
local function wall_now()
    ngx.update_time()
    return ngx.now()
end
_M.now = wall_now

--- Whether the lock at `lock_key` of `dict` is held by a live process;
-- a lock whose owner is gone is deleted (compare before delete).
local function lock_held(dict, lock_key)
    local owner = dict:get(lock_key)
    if owner == nil then return false end
    local pid = tonumber(owner:match("^(%d+) "))
    if pid and pid ~= ngx.worker.pid() and not process_alive(pid) then
        if dict:get(lock_key) == owner then dict:delete(lock_key) end
        return false
    end
    return true
end

local Shm = {}
Shm.__index = Shm

local Lock = {}
Lock.__index = Lock

function Lock:unlock()
    -- compare before delete: a lock that lapsed may be another's now
    if self.dict:get(self.key) == self.owner then self.dict:delete(self.key) end
end

-- The names of a key's record, view, exact refresh point and lock.
local function names(self, key)
    local known = self.names[key]
    if not known then
        local name, view = self.prefix .. key, self.view_prefix .. key
        known = { record = name, view = view, at = view .. ":at", lock = name .. ":lock" }
        self.names[key] = known
    end
    return known
end

--- The view of `key`: the header and its refresh point in whole seconds.
function Shm:peek(key)
    local header, floor_at = self.dict:get((self.names[key] or names(self, key)).view)
    if header then return header, floor_at end
    local own = self.own[key]
    -- (a copy of this worker's own, with a token: a failure has none)
    if own and own.header and wall_now() < own.record.expire_at then
        return own.header, floor(own.next_at)
    end
    return nil
end

--- The exact next point at which a refresh of `key` may be tried, or nil.
function Shm:next_at(key)
    local next_at = self.dict:get(names(self, key).at)
    if next_at == nil then
        local own = self.own[key]
        next_at = own and own.next_at
    end
    return next_at
end

--- Whether a refresh may be tried now (its exact point has come).
function Shm:due(key)
    local next_at = self:next_at(key)
    return next_at == nil or ngx.now() >= next_at
end

function Shm:get(key, secret)
    local name = names(self, key).record
    local record = record_codec.open(secret, self.dict:get(name), name)
    if record then return record end
    local own = self.own[key]
    if own and wall_now() < own.until_at then return own.record end
    return nil
end

-- Write a record's view (its header until the token's expiry, or none);
-- false and why when the dict cannot hold it.
local function set_view(self, key, record)
    local known, dict = names(self, key), self.dict
    local view, at = known.view, known.at
    local ttl = type(record.access_token) == "string" and type(record.expire_at) == "number"
        and record.expire_at - wall_now() or 0
    if ttl <= 0.001 then
        dict:delete(view)
        return true
    end
    local next_at = policy_rules.next_try(record)
    -- the exact point first: the header's flags send readers to it
    local ok, why = dict:set(at, next_at, ttl)
    if ok then
        ok, why = dict:set(view, self.header(record.access_token), ttl, floor(next_at))
    end
    return ok, why
end

function Shm:set(key, secret, record, ttl)
    local name = names(self, key).record
    local sealed, why = record_codec.seal(secret, record, name)
    if not sealed then return nil, why end
    local ok
    ok, why = self.dict:set(name, sealed, ttl or 0)
    if ok then ok, why = set_view(self, key, record) end
    if ok then
        self.own[key] = nil
        return true
    end
    -- this worker keeps it at least, so it does not fetch on every request
    self.dict:delete(name)
    self.dict:delete(names(self, key).view)
    self.own[key] = { record = record, until_at = wall_now() + (ttl or 0),
                      header = type(record.access_token) == "string"
                          and self.header(record.access_token),
                      next_at = policy_rules.next_try(record) }
    if not self.warned then
        self.warned = true
        ngx.log(ngx.ERR, "oauth2: lua_shared_dict '", self.name, "' cannot hold the token (",
            tostring(why), "): make it larger (at least 32k, plus 4k per configured ",
            "token); each worker now keeps its own copy and fetches its own")
    end
    return true
end

function Shm:try_lock(key, lease)
    self.nonce = self.nonce + 1
    local owner = ("%d %d %.0f"):format(ngx.worker.pid(), self.nonce, core.random() * 2^53)
    local lock_key = names(self, key).lock
    for _ = 1, 2 do
        local ok, why = self.dict:safe_add(lock_key, owner, lease or self.lease)
        if ok then
            return setmetatable({ dict = self.dict, key = lock_key, owner = owner }, Lock)
        end
        if why ~= "exists" then return nil, "lua_shared_dict: " .. tostring(why) end
        -- held: by a live process, or free now that its dead owner's is gone
        if lock_held(self.dict, lock_key) then return false end
    end
    return false
end

--- Whether a live process holds the lock of `key`.
function Shm:locked(key)
    return lock_held(self.dict, names(self, key).lock)
end

--- The pid of the lock's holder, or nil.
function Shm:lock_owner(key)
    local owner = self.dict:get(names(self, key).lock)
    return owner and tonumber(owner:match("^(%d+) "))
end

-- Of many workers dropping one token at once (many 401s), the first to
-- mark it does: the mark makes a get, compare and set atomic across them.
function Shm:delete_token_if(key, secret, token_id, cooldown, ttl)
    local first, why = self.dict:add(names(self, key).record .. ":drop:" .. token_id, true,
        max(60, ttl or 0))
    if not first and why == "exists" then return false end
    return record_codec.drop_if(self, key, secret, token_id, cooldown, ttl)
end

function Shm:__tostring()
    return "oauth2.store shm " .. self.name
end

--- A store in the lua_shared_dict `dict_name` (or nil and why): `lease`
-- is a lock's default, `header(token)` makes a view (the token alone).
function _M.new(dict_name, lease, header)
    local shared = ngx and ngx.shared
    local dict = shared and shared[dict_name]
    if not dict then
        return nil, "there is no lua_shared_dict '" .. tostring(dict_name) .. "'"
    end
    return setmetatable({ dict = dict, name = dict_name, prefix = "oauth2-store:",
                          view_prefix = "oauth2:", own = {}, warned = false, names = {},
                          header = header or function(token) return token end,
                          lease = lease or policy_rules.LEASE, nonce = 0, kind = "shm",
                          atomic = true }, Shm)
end

return _M
