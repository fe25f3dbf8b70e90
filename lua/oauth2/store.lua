-- oauth2.store: where tokens are shared beyond one Lua state.
--
-- A store keeps one record per cache key (oauth2.policy.cache_key) and
-- offers this contract, which every store follows:
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
--   store:delete_token_if(key, secret, token_id, cooldown)
--                                    drop the record's token only if it is
--                                    still token_id (compare before
--                                    delete), and set cooldown's fields
--
-- One file each: oauth2.store.memory (one Lua state), .shm (every worker
-- of an nginx), .file (every process of a user on a machine) and .redis
-- (processes and nginx nodes on many machines).  oauth2.cache is the one
-- module that reads and writes records; it states the rules.
--
-- A record is a table of plain values: access_token, token_type, scope,
-- expires_in, fetched_at, lifetime, refresh_at, expire_at (seconds since
-- the epoch: processes share no other clock), and, after a failure or an
-- invalidation, next_try (no fetch before then) with the error's fields
-- and `failures` (failed fetches in a row); after an invalidation,
-- rejected: the id (token_id) of the token that was dropped, so processes
-- holding a copy drop theirs when they look again.

local core = require "oauth2.core"

local type, pairs, getenv = type, pairs, os.getenv

local _M = { _VERSION = core._VERSION }

-- The default lease of a lock, in seconds, where the caller gives none.
_M.LEASE = 60

-- How often a holder of a fresh copy looks at a shared store, in seconds,
-- unless the store says (its look_every): how soon a token rejected
-- elsewhere is dropped everywhere.
_M.LOOK_EVERY = 4

--- Drop the token of a record (compare before delete is the caller's);
-- `rejected` keeps its id, so every holder of a copy learns to drop it;
-- `cooldown` (a table, or nil) sets next_try and the error's fields
-- unless the record's own cool-down runs longer.
function _M.without_token(record, token_id, cooldown)
    record.access_token, record.token_type, record.scope, record.expires_in = nil, nil, nil, nil
    record.refresh_at, record.expire_at = nil, nil
    record.rejected = token_id
    if cooldown and (type(record.next_try) ~= "number" or record.next_try < cooldown.next_try) then
        for k, v in pairs(cooldown) do record[k] = v end
    end
    return record
end

--- delete_token_if for the stores whose get and set run under the
-- caller's lock (memory, shared dict, file): read, compare, write back
-- with `ttl` (seconds, the caller's: the store keeps no wall clock).
function _M.delete_token_if(self, key, secret, token_id, cooldown, ttl)
    local record = self:get(key, secret)
    if not record or type(record.access_token) ~= "string"
            or _M.token_id(secret, record.access_token) ~= token_id then
        return false
    end
    return self:set(key, secret, _M.without_token(record, token_id, cooldown), ttl) == true
end

-- The directory of the file store when none is given: per user, in
-- memory where the system has a runtime directory, else in the cache.
function _M.default_dir()
    local runtime = getenv("XDG_RUNTIME_DIR")
    if runtime and runtime ~= "" then return runtime .. "/lua-oauth2" end
    local cache = getenv("XDG_CACHE_HOME")
    if cache and cache ~= "" then return cache .. "/lua-oauth2" end
    local home = getenv("HOME")
    if home and home ~= "" then return home .. "/.cache/lua-oauth2" end
    return nil
end

--- An identifier of a token that names it without showing it: a keyed
-- hash with the client secret, so that even someone who holds a token
-- cannot tell which entry of a store holds it.
function _M.token_id(secret, access_token)
    return core.hmac_sha256(secret, "token id\n" .. access_token)
end

--- The scheme of a store given as a URL, in lower case ("redis"), or nil
-- for a text that is no URL (a directory).
function _M.url_scheme(text)
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
    return _M.url_scheme(value) and "redis" or "file"
end

--- The stores, by name; each loaded on first use (hiredis only for Redis).
function _M.memory(lease, clock) return require("oauth2.store.memory")(lease, clock) end
function _M.file(dir) return require("oauth2.store.file")(dir) end
function _M.shm(dict_name, lease) return require("oauth2.store.shm").new(dict_name, lease) end
function _M.redis(spec) return require("oauth2.store.redis").new(spec) end

return _M
