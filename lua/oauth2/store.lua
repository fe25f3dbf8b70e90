-- oauth2.store: where records live, and the one reader of the `store`
-- option.  Every store keeps one record (oauth2.record) per key:
--
--   get(key, secret)          the record; nil (none, or corrupt, another
--                             key's); nil and why (the store failed); a
--                             third value says why a record was unusable
--   set(key, secret, record, ttl)   true, or nil and why
--   try_lock(key, lease)      a lock (lock:unlock()), false while another
--                             holds it, or nil and why; it lasts `lease`
--                             seconds at most, and no longer than its holder
--   delete_token_if(key, secret, token_id, cooldown, ttl)
--                             drop the token only while it is token_id, and
--                             set cooldown's fields; `atomic` when that
--                             needs no lock
--
-- A first layer (oauth2.cache) also has peek(key), what its hot path
-- reads, and locked(key).  One module each: store.memory (one Lua state),
-- .shm (the workers of an nginx), .file (a user's processes on one
-- machine), .redis (many machines); they never require this module.

local core = require "oauth2.core"

local type = type

local _M = { _VERSION = core._VERSION }

-- The scheme of a store given as a URL, in lower case ("redis"), or nil
-- for a text that is no URL (a directory).
local function url_scheme(text)
    local scheme = text:match("^(%a[%w+.-]+):")
    return scheme and scheme:lower()
end

--- What a `store` option names: "object" (a store the caller made),
-- "redis" (a table, or a URL of any scheme: never taken for a
-- directory), "memory" or "file" (a directory); nil for anything else.
function _M.kind_of(value)
    local t = type(value)
    if t == "table" then return type(value.get) == "function" and "object" or "redis" end
    if t ~= "string" or value == "" then return nil end
    if value == "memory" then return "memory" end
    return url_scheme(value) and "redis" or "file"
end

--- The one reader of the `store` option: false (this Lua state's
-- memory), a store (Redis, reached on first use; the caller's object) or
-- a file store's directory ("file": the default one), as `allowed` (a set
-- of kinds) permits; or nil and a phrase after the option's name.
function _M.option(value, allowed)
    local kind = value == false and "memory" or _M.kind_of(value)
    if not allowed[kind] then return nil, "must be " .. allowed.phrase end
    if kind == "memory" then return false end
    if kind == "redis" then
        local redis, problem = _M.redis(value)
        if not redis then return nil, ": " .. problem end
        return redis
    end
    return value
end

--- The stores, by name; each loaded on first use (hiredis only for Redis).
function _M.memory(opts) return require("oauth2.store.memory").new(opts) end
function _M.file(dir) return require("oauth2.store.file").new(dir) end
function _M.shm(dict_name, lease, header)
    return require("oauth2.store.shm").new(dict_name, lease, header)
end
function _M.redis(spec) return require("oauth2.store.redis").new(spec) end

return _M
