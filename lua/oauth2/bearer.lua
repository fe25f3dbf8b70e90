-- oauth2.bearer: the token object and the Authorization header.
--
-- A token table ({access_token, token_type, expires_in, expires_at,
-- scope}) prints redacted and knows how long it has left on the monotonic
-- clock; header() is the one place "Bearer <token>" is made.

local core = require "oauth2.core"
local transport = require "oauth2.transport"

local type, tostring, setmetatable = type, tostring, setmetatable
local sub, format = string.sub, string.format

local _M = { _VERSION = core._VERSION }

-- Tokens print redacted: the first four characters and the length.
local token_mt = {}
function token_mt.__tostring(token)
    local access = token.access_token
    local shown = #access > 12 and sub(access, 1, 4) .. "..." or "..."
    return format("oauth2 token %s %s (%d chars, expires_in=%s, scope=%s)",
        tostring(token.token_type), shown, #access, tostring(token.expires_in),
        tostring(token.scope))
end

-- Each token's expiry on the monotonic clock, where known.
local expiry = setmetatable({}, { __mode = "k" })

local methods = {}
token_mt.__index = methods

--- token:expires_in_now(): seconds left until the token expires (without
-- any margin), on the monotonic clock; nil when the endpoint gave no
-- lifetime.  Negative once it has expired.
function methods:expires_in_now()
    local at = expiry[self]
    if at == nil then
        -- a token from a store: its wall-clock expiry, moved over once
        if type(self.expires_at) ~= "number" then return nil end
        at = transport.now() + (self.expires_at - core.time())
        expiry[self] = at
    end
    return at - transport.now()
end

--- token:valid(leeway): whether the token has more than `leeway` seconds
-- (default 0) left.  A token without a lifetime counts as valid.
function methods:valid(leeway)
    local left = self:expires_in_now()
    return left == nil or left > (leeway or 0)
end

--- A token object from its fields, with its expiry on the monotonic clock
-- when known (a token just fetched); a token from a shared store moves
-- its wall-clock expiry over when first asked.
function _M.new(fields, expires_mono)
    local token = setmetatable(fields, token_mt)
    if expires_mono then expiry[token] = expires_mono end
    return token
end

--- The Authorization header's value for an access token.
function _M.header(access_token)
    return "Bearer " .. access_token
end

--- The access token of an Authorization header's value made by header(),
-- or nil for any other value.
function _M.token_of(header)
    if type(header) ~= "string" or sub(header, 1, 7) ~= "Bearer " then return nil end
    return sub(header, 8)
end

return _M
