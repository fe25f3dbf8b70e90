-- oauth2.store.file: every process of a user on a machine.
--
-- Each record is a file of its own, named by the key (a keyed hash: no
-- secret in a name), in a directory only this user can enter; the file is
-- sealed with AES-256-GCM under a key derived from the client secret and
-- bound to its name, so it is useless to anyone without the secret, and a
-- file that does not open (corrupt, truncated, another secret's, moved
-- from another key) counts as missing and is replaced.  Single flight is
-- an flock on a lock file beside it, which the kernel releases when its
-- process dies.  Mechanism (files, locks, sealing) is the C core's.

local core = require "oauth2.core"
local cjson = require "cjson.safe"
local stores = require "oauth2.store"

local type, setmetatable = type, setmetatable
local encode, decode = cjson.encode, cjson.decode

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
    local text = core.open(secret, sealed, key)
    local record = text and decode(text)
    if type(record) ~= "table" then return nil end
    return record
end

function File:set(key, secret, record)
    local text = encode(record)
    if not text then return nil, "the record cannot be encoded" end
    return core.write_private(self:path(key), core.seal(secret, text, key))
end

-- (the flock needs no lease: the kernel frees it with its process)
function File:try_lock(key)
    return core.try_lock(self:path(key) .. ".lock")
end

File.delete_token_if = stores.delete_token_if

function File:__tostring()
    return "oauth2.store file " .. self.dir
end

--- A file store in `dir` (oauth2.store.default_dir() when nil): the
-- store, or nil and why (no directory to use, or one that is not private
-- to this user).
return function(dir)
    dir = dir or stores.default_dir()
    if not dir then return nil, "no cache directory: set XDG_RUNTIME_DIR or HOME" end
    local ok, why = core.private_dir(dir)
    if not ok then return nil, why .. " (" .. dir .. ")" end
    return setmetatable({ dir = dir, kind = "file" }, File)
end
