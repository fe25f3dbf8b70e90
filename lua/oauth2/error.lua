-- oauth2.error: the one error shape of the library.
--
-- Every runtime failure (network, TLS, HTTP status, malformed reply) is a
-- table with a __tostring and a __concat, returned as `nil, err`.  Before an error leaves
-- the library, every secret the caller gave us is scrubbed from all of its
-- strings, so printing or logging an error can never leak one.

local core = require "oauth2.core"

local type, pairs, ipairs, tostring, setmetatable, getmetatable =
      type, pairs, ipairs, tostring, setmetatable, getmetatable
local min = math.min
local concat, find, sub, gsub = table.concat, string.find, string.sub, string.gsub

local _M = { _VERSION = core._VERSION }

local KINDS = {
    config = true, network = true, timeout = true,
    tls = true, http = true, protocol = true,
}

local mt = {}
mt.__index = mt

-- "oauth2: http error 401 (invalid_client): Client authentication failed"
function mt.__tostring(err)
    local parts = { "oauth2: ", err.kind, " error" }
    if err.status then parts[#parts + 1] = " " .. tostring(err.status) end
    if err.code then parts[#parts + 1] = " (" .. tostring(err.code) .. ")" end
    parts[#parts + 1] = ": " .. tostring(err.message)
    if err.detail and err.detail ~= err.message then
        parts[#parts + 1] = " - " .. tostring(err.detail)
    end
    -- a 400's field errors: "scope: unknown scope"
    local list = err.errors
    if type(list) == "table" and #list > 0 then
        local each = {}
        for i = 1, #list do
            local item = list[i]
            if type(item) == "table" then
                local text = tostring(item.message or item.code or "invalid")
                each[#each + 1] = item.field and (tostring(item.field) .. ": " .. text) or text
            end
        end
        if #each > 0 then parts[#parts + 1] = " [" .. concat(each, "; ") .. "]" end
    end
    if err.attempts and err.attempts > 1 then
        parts[#parts + 1] = " (after " .. err.attempts .. " attempts)"
    end
    return concat(parts)
end

-- "failed: " .. err, and err .. "!": the text of tostring
function mt.__concat(a, b)
    return tostring(a) .. tostring(b)
end

-- Replace every plain occurrence of `secret` in `text`.
local function replace_plain(text, secret)
    local out, start = {}, 1
    while true do
        local i, j = find(text, secret, start, true)
        if not i then break end
        out[#out + 1] = sub(text, start, i - 1)
        out[#out + 1] = "[redacted]"
        start = j + 1
    end
    if start == 1 then return text end
    out[#out + 1] = sub(text, start)
    return concat(out)
end

local function scrub_string(text, secrets)
    for i = 1, #secrets do
        text = replace_plain(text, secrets[i])
    end
    return text
end

--- A text with every plain occurrence of the given secrets replaced.
function _M.scrub_text(text, secrets)
    if not secrets then return text end
    return scrub_string(text, secrets)
end

-- Scrub strings in place, through nested tables (the decoded body too).
local function scrub(value, secrets, seen)
    if type(value) == "string" then
        return scrub_string(value, secrets)
    elseif type(value) == "table" and not seen[value] then
        seen[value] = true
        local renamed = {}
        for k, v in pairs(value) do
            value[k] = scrub(v, secrets, seen)
            if type(k) == "string" then
                local clean = scrub_string(k, secrets)
                if clean ~= k then renamed[k] = clean end
            end
        end
        for old, new in pairs(renamed) do
            value[new], value[old] = value[old], nil
        end
    end
    return value
end

-- The longest text of a server an error keeps (a description, a code),
-- once its secrets are scrubbed.
local MAX_TEXT = 512

-- The longest text read from a server before that: the work of
-- scrubbing stays bounded.
local MAX_READ = 65536

-- The text with a tail that begins a secret (4 characters or more: a
-- secret a server cut, or that a cut would split) redacted.
local function redact_tail(text, secrets)
    if not secrets then return text end
    for i = 1, #secrets do
        local secret = secrets[i]
        for length = min(#secret - 1, #text), 4, -1 do
            if sub(text, -length) == sub(secret, 1, length) then
                return sub(text, 1, #text - length) .. "[redacted]"
            end
        end
    end
    return text
end

-- A server's text cut to MAX_TEXT bytes (scrubbed first: no piece of a
-- secret survives a cut).
local function bound(text, secrets)
    if type(text) ~= "string" then return text end
    if #text > MAX_TEXT then
        return redact_tail(sub(text, 1, MAX_TEXT), secrets) .. "..."
    end
    return redact_tail(text, secrets)
end

-- The fields of an error that hold a server's words.
local TEXT_FIELDS = { "message", "detail", "title", "code" }

-- Make `fields` an error: fill the defaults, scrub the given secrets (a
-- list of strings; very short ones are ignored as they would mangle
-- text), then bound its texts.
function _M.new(fields, secrets)
    assert(KINDS[fields.kind], "unknown error kind")
    if fields.retryable == nil then fields.retryable = false end
    fields.message = fields.message or fields.kind .. " error"
    local list
    if secrets and #secrets > 0 then
        list = {}
        for i = 1, #secrets do
            local s = secrets[i]
            if type(s) == "string" and #s >= 4 then list[#list + 1] = s end
        end
        if #list > 0 then scrub(fields, list, {}) else list = nil end
    end
    for _, name in ipairs(TEXT_FIELDS) do fields[name] = bound(fields[name], list) end
    local items = fields.errors
    if type(items) == "table" then
        for _, item in ipairs(items) do
            if type(item) == "table" then
                item.code, item.field = bound(item.code, list), bound(item.field, list)
                item.message = bound(item.message, list)
            end
        end
    end
    return setmetatable(fields, mt)
end

--- A server's text as the library keeps it: control characters dropped
-- (no forged log lines, no terminal escapes), at most MAX_READ bytes
-- (errors cut it to MAX_TEXT once scrubbed); nil when not a string or
-- empty.
function _M.text(value)
    if type(value) ~= "string" then return nil end
    if #value > MAX_READ then value = sub(value, 1, MAX_READ) end
    value = gsub(value, "[%c\127]", "")
    if value == "" then return nil end
    return value
end

-- The most field errors of a 400 kept in an error.
local MAX_FIELD_ERRORS = 20

-- The 400 list of {code, field, message}, keeping only well-formed entries.
local function field_errors(list)
    if type(list) ~= "table" then return nil end
    local out = {}
    for i = 1, #list do
        if #out == MAX_FIELD_ERRORS then break end
        local item = list[i]
        if type(item) == "table" then
            out[#out + 1] = {
                code = _M.text(item.code),
                field = _M.text(item.field),
                message = _M.text(item.message),
            }
        end
    end
    return #out > 0 and out or nil
end

--- What a non-2xx answer's decoded JSON says, the server's texts bounded:
-- OAuth's {error, error_description} (RFC 6749 5.2) or a problem
-- {type, title, detail, errors} (RFC 9457).  Returns code, message,
-- title, detail and the field errors; each may be nil.
function _M.problem(data)
    if type(data) ~= "table" then return nil end
    local text = _M.text
    local code, message = text(data.error), text(data.error_description)
    local title = text(data.title)
    if code == nil then
        local problem_type = text(data.type)
        if problem_type == "about:blank" then problem_type = nil end
        code = problem_type or title
    end
    return code, message or title or text(data.message), title, text(data.detail),
        field_errors(data.errors)
end

--- The fields that describe an error, plain values with bounded texts:
-- what crosses into a thread pool's Lua state and back, or waits in a
-- shared dict (_M.new makes an error of it again).
function _M.plain(err)
    local text = _M.text
    return { kind = err.kind, status = err.status, code = text(err.code),
             message = text(err.message), detail = text(err.detail),
             retryable = err.retryable, retry_after = err.retry_after,
             attempts = err.attempts }
end

-- Whether a value is an error made by this module.
function _M.is_error(value)
    return type(value) == "table" and getmetatable(value) == mt
end

return _M
