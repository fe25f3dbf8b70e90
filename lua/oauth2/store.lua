-- oauth2.store: where records live, and the one reader of the `store`
-- option.
--
-- A store keeps one record (oauth2.record) per key and offers this
-- contract, which every store follows:
--
--   store:get(key, secret)           the record, nil (none, or unusable:
--                                    corrupt, another key's), or nil and
--                                    why when the store failed; a third
--                                    value says why a record was unusable
--                                    when that needs a word (a file open
--                                    to others)
--   store:set(key, secret, record, ttl)
--                                    true, or nil and why; ttl: seconds
--                                    the record may be kept (the file
--                                    store keeps it: its record carries
--                                    its own times)
--   store:try_lock(key, lease)       a lock (lock:unlock()), false while
--                                    another holds it, or nil and why; a
--                                    lock lasts `lease` seconds at most,
--                                    and no longer than its holder
--   store:delete_token_if(key, secret, token_id, cooldown, ttl)
--                                    drop the record's token only if it is
--                                    still token_id (compare before
--                                    delete), and set cooldown's fields;
--                                    `store.atomic` when that needs no lock
--
-- A first layer (oauth2.cache) also has peek(key), what its hot path
-- reads, and locked(key).  One file each, each a module with new():
-- oauth2.store.memory (one Lua state), .shm (every worker of an nginx),
-- .file (every process of a user on a machine) and .redis (processes and
-- nginx nodes on many machines).  They require oauth2.record, never this
-- module.

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
-- "redis" (oauth2.store.redis's table, or a URL: one of another scheme is
-- refused there, never taken for a directory), "memory" or "file" (the
-- default directory, or the one given); nil for anything else.
function _M.kind_of(value)
    local t = type(value)
    if t == "table" then return type(value.get) == "function" and "object" or "redis" end
    if t ~= "string" or value == "" then return nil end
    if value == "memory" then return "memory" end
    return url_scheme(value) and "redis" or "file"
end

--- The one reader of the `store` option, for the modules that take one:
-- false (none: this Lua state's memory), a store (Redis, made from its
-- URL or table, reached on first use; the caller's object), or the file
-- store's directory ("file": the default one), as `allowed` (a set of
-- kinds) permits; or nil and why, a phrase after the option's name.
function _M.option(value, allowed)
    local kind = value ~= false and _M.kind_of(value)
    if value == false or kind == "memory" then
        if allowed.memory then return false end
        kind = "memory"
    end
    if kind and not allowed[kind] then
        return nil, "must be " .. allowed.phrase
    end
    if kind == "redis" then
        local redis, problem = _M.redis(value)
        if not redis then return nil, ": " .. problem end
        return redis
    end
    if not kind then return nil, "must be " .. allowed.phrase end
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
