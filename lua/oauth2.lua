-- oauth2: access tokens from the ThousandEyes API v7 token endpoint.
--
--   local oauth2 = require "oauth2"
--   local token, err = oauth2.token { client_id = ..., client_secret = ... }
--   local client = oauth2.client { client_id = ..., client_secret = ... }
--   local header = client:header()           -- "Bearer ..."
--
-- This facade holds the public API; the policy lives in its submodules:
-- oauth2.options (defaults and validation), oauth2.exchange (responses and
-- retries), oauth2.client (caching and refresh) and oauth2.error (the one
-- error shape).  The HTTP exchange itself is the C core's (oauth2.core),
-- driven by oauth2.transport.

local options = require "oauth2.options"
local exchange = require "oauth2.exchange"
local errors = require "oauth2.error"
local transport = require "oauth2.transport"
local client = require "oauth2.client"

local pairs, sort = pairs, table.sort

local _M = {
    _VERSION = "0.1.0",
    -- the clock, sleep and random source of retries (shared with the
    -- exchange; specs may replace its fields)
    runtime = exchange.runtime,
}

--- Fetch one access token.
-- opts: the endpoint's parameters and transport options (see README).
-- Returns the token table {access_token, token_type, expires_in, scope,
-- expires_at} or nil and an error table; raises on bad options.
function _M.token(opts)
    local conf = options.validate_cached(opts, 2)
    local token, err = exchange.fetch(conf, conf.session)
    return token, err
end

--- A cached, self-refreshing token (see oauth2.client).
function _M.client(opts)
    -- not a tail call: the frame count behind bad-option errors needs it
    local c = client.new(opts, 2)
    return c
end

--- A reusable connection to pass as opts.session, so consecutive calls
-- share one keep-alive connection and TLS session.  Close it when done.
_M.session = transport.session

--- Whether a value is an error returned by this library.
_M.is_error = errors.is_error

-- Names of all options oauth2.token accepts (for tools and documentation).
_M.option_names = {}
for name in pairs(options.schema) do _M.option_names[#_M.option_names + 1] = name end
sort(_M.option_names)

return _M
