-- oauth2.store: where tokens are shared beyond one Lua state.
--
-- A store keeps one record per cache key (oauth2.policy.cache_key) and
-- offers this contract, which every store follows:
--
--   store:get(key, secret)           the record, or nil (none, or unusable)
--   store:set(key, secret, record)   true, or nil and why
--   store:try_lock(key)              a lock (lock:unlock()), false while
--                                    another holds it, or nil and why; a
--                                    lock lasts no longer than its holder
--   store:delete_token_if(key, secret, token_id)
--                                    drop the record's token only if it is
--                                    still token_id (compare before delete)
--
-- A record is a table of plain values: access_token, token_type, scope,
-- expires_in, fetched_at, refresh_at, expire_at (seconds since the epoch:
-- processes share no other clock), and, after a failure or an
-- invalidation, next_try (no fetch before then) with the error's fields.
--
-- The file store keeps each record in a file of its own, named by the key
-- (a keyed hash: no secret in a name), in a directory only this user can
-- enter; the file is sealed with AES-256-GCM under a key derived from the
-- client secret, so it is useless to anyone without the secret, and a
-- file that does not open (corrupt, truncated, another secret's) counts as
-- missing and is replaced.  Single flight across processes is an flock on
-- a lock file beside it, which the kernel releases if its process dies.
-- Mechanism (files, locks, sealing) is the C core's; this is the policy.

local core = require "oauth2.core"
local cjson = require "cjson.safe"

local type, setmetatable, getenv = type, setmetatable, os.getenv
local encode, decode = cjson.encode, cjson.decode

local _M = { _VERSION = core._VERSION }

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

local File = {}
File.__index = File

function File:path(key)
    return self.dir .. "/" .. key
end

function File:get(key, secret)
    local sealed, why = core.read_private(self:path(key))
    if sealed == false then return nil end
    if not sealed then
        -- a file that is not ours alone is never trusted (and replaced)
        self.problem = why
        return nil
    end
    local text = core.open(secret, sealed)
    local record = text and decode(text)
    if type(record) ~= "table" then return nil end
    return record
end

function File:set(key, secret, record)
    local text = encode(record)
    if not text then return nil, "the record cannot be encoded" end
    return core.write_private(self:path(key), core.seal(secret, text))
end

function File:try_lock(key)
    return core.try_lock(self:path(key) .. ".lock")
end

function File:delete_token_if(key, secret, token_id)
    local record = self:get(key, secret)
    if not record or record.access_token == nil then return false end
    if core.sha256(record.access_token) ~= token_id then return false end
    record.access_token, record.token_type, record.scope, record.expires_in = nil, nil, nil, nil
    record.refresh_at, record.expire_at = nil, nil
    return self:set(key, secret, record)
end

function File:__tostring()
    return "oauth2.store file " .. self.dir
end

--- A file store in `dir` (default_dir() when nil): the store, or nil and
-- why (no directory to use, or one that is not private to this user).
function _M.file(dir)
    dir = dir or _M.default_dir()
    if not dir then return nil, "no cache directory: set XDG_RUNTIME_DIR or HOME" end
    local ok, why = core.private_dir(dir)
    if not ok then return nil, why .. " (" .. dir .. ")" end
    return setmetatable({ dir = dir, kind = "file" }, File)
end

--- An identifier of a token that names it without showing it.
function _M.token_id(access_token)
    return core.sha256(access_token)
end

return _M
