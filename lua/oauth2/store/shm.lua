-- oauth2.store.shm: every worker of an nginx, through a lua_shared_dict.
--
-- Records are sealed as in the file store.  A lock names its owner
-- (worker pid and a nonce); it is deleted only by its owner, and taken
-- over at once when its owner's process is gone (killed, crashed) rather
-- than waited out for its lease.

local core = require "oauth2.core"
local cjson = require "cjson.safe"
local stores = require "oauth2.store"

local type, setmetatable, tostring, tonumber, pcall = type, setmetatable, tostring, tonumber, pcall
local ngx = ngx -- luacheck: ignore (nil outside OpenResty)
local encode, decode = cjson.encode, cjson.decode

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

--- Whether the lock at `lock_key` of `dict` is held by a live process;
-- a lock whose owner is gone is deleted (compare before delete).
function _M.lock_held(dict, lock_key)
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

function Shm:get(key, secret)
    local name = self.prefix .. key
    local sealed = self.dict:get(name)
    if type(sealed) ~= "string" then return nil end
    local text = core.open(secret, sealed, name)
    local record = text and decode(text)
    if type(record) ~= "table" then return nil end
    return record
end

function Shm:set(key, secret, record, ttl)
    local text = encode(record)
    if not text then return nil, "the record cannot be encoded" end
    local name = self.prefix .. key
    return self.dict:set(name, core.seal(secret, text, name), ttl or 0)
end

function Shm:try_lock(key, lease)
    self.nonce = self.nonce + 1
    local owner = ("%d %d %.0f"):format(ngx.worker.pid(), self.nonce, core.random() * 2^53)
    local lock_key = self.prefix .. key .. ":lock"
    for _ = 1, 2 do
        local ok, why = self.dict:safe_add(lock_key, owner, lease or self.lease)
        if ok then
            return setmetatable({ dict = self.dict, key = lock_key, owner = owner }, Lock)
        end
        if why ~= "exists" then return nil, "lua_shared_dict: " .. tostring(why) end
        -- held: by a live process, or free now that its dead owner's is gone
        if _M.lock_held(self.dict, lock_key) then return false end
    end
    return false
end

Shm.delete_token_if = stores.delete_token_if

function Shm:__tostring()
    return "oauth2.store shm " .. self.name
end

--- A store in the lua_shared_dict named `dict_name`: the store, or nil
-- and why.
function _M.new(dict_name, lease)
    local shared = ngx and ngx.shared
    local dict = shared and shared[dict_name]
    if not dict then
        return nil, "there is no lua_shared_dict '" .. tostring(dict_name) .. "'"
    end
    return setmetatable({ dict = dict, name = dict_name, prefix = "oauth2-store:",
                          lease = lease or stores.LEASE, nonce = 0, kind = "shm" }, Shm)
end

return _M
