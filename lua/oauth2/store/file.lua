-- oauth2.store.file: every process of a user on a machine.
--
-- A record is a sealed file named by its key, in a directory only this
-- user can enter; a file that does not open (corrupt, another secret's,
-- moved from another key) counts as missing and is replaced.  Single
-- flight is an flock beside it, which the kernel frees with its process.
-- The mechanism (files, locks, sealing) is the C core's.

local core = require "oauth2.core"
local record_codec = require "oauth2.record"

local setmetatable, getenv = setmetatable, os.getenv

local File = {}
File.__index = File

function File:path(key)
    return self.dir .. "/" .. key
end

function File:get(key, secret)
    local sealed, why = core.read_private(self:path(key))
    if sealed == false then return nil end
    -- a file that is not ours alone is never trusted: no record (it is
    -- replaced), and a word why (the third value)
    if not sealed then return nil, nil, why end
    return record_codec.open(secret, sealed, key)
end

function File:set(key, secret, record)
    local sealed, why = record_codec.seal(secret, record, key)
    if not sealed then return nil, why end
    return core.write_private(self:path(key), sealed)
end

-- (the flock needs no lease: the kernel frees it with its process)
function File:try_lock(key)
    return core.try_lock(self:path(key) .. ".lock")
end

-- (under the caller's lock: a get, compare and set is no single step here)
File.delete_token_if = record_codec.drop_if

function File:__tostring()
    return "oauth2.store file " .. self.dir
end

local _M = {}

-- The directory when none is given: the user's runtime (memory), else cache.
function _M.default_dir()
    local runtime = getenv("XDG_RUNTIME_DIR")
    if runtime and runtime ~= "" then return runtime .. "/lua-oauth2" end
    local cache = getenv("XDG_CACHE_HOME")
    if cache and cache ~= "" then return cache .. "/lua-oauth2" end
    local home = getenv("HOME")
    if home and home ~= "" then return home .. "/.cache/lua-oauth2" end
    return nil
end

--- A file store in `dir` (default_dir() when nil): the store, or nil and
-- why (no directory to use, or one that is not private to this user).
function _M.new(dir)
    dir = dir or _M.default_dir()
    if not dir then return nil, "no cache directory: set XDG_RUNTIME_DIR or HOME" end
    local ok, why = core.private_dir(dir)
    if not ok then return nil, why .. " (" .. dir .. ")" end
    return setmetatable({ dir = dir, kind = "file", atomic = false }, File)
end

return _M
