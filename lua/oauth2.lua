-- oauth2: access tokens from the ThousandEyes API v7 token endpoint.
--
--   local oauth2 = require "oauth2"
--   local token, err = oauth2.token { client_id = ..., client_secret = ... }
--   local client = oauth2.client { client_id = ..., client_secret = ... }
--   local header = client:header()           -- "Bearer ..."
--
-- The public API.  The way of one token, module by module:
--   oauth2.options    checks the options and fills in defaults
--   oauth2.endpoint   holds them, with the request built once (exchange)
--   oauth2.exchange   sends it with retries and reads the answer
--   oauth2.transport  drives the C core (oauth2.core) without blocking nginx
--   oauth2.error      gives every failure one shape, secrets scrubbed
-- and oauth2.client and oauth2.openresty cache tokens by oauth2.policy.
-- Misuse (bad options) raises here, at the caller's line; failures at run
-- time return nil and an error.

local core = require "oauth2.core"
local options = require "oauth2.options"
local endpoint = require "oauth2.endpoint"
local exchange = require "oauth2.exchange"
local errors = require "oauth2.error"
local transport = require "oauth2.transport"
local client = require "oauth2.client"

local pairs, sort, error, type, pcall = pairs, table.sort, error, type, pcall

local _M = {
    _VERSION = core._VERSION,
    -- the clock, sleep and random source of retries (specs may replace them)
    runtime = exchange.runtime,
}

--- Fetch one access token.
-- opts: the endpoint's parameters and transport options (see README).
-- Returns the token table {access_token, token_type, expires_in, scope,
-- expires_at} or nil and an error table; raises on bad options.
function _M.token(opts)
    -- the one-shot form of an endpoint: no connection kept
    local prepared, why = endpoint.new(opts, false)
    if not prepared then error(why, 2) end
    local token, err = prepared:token()
    return token, err
end

--- A prepared endpoint: options checked and the request built once, and a
-- connection of its own, for many tokens (see oauth2.endpoint).
function _M.endpoint(opts)
    local prepared, why = endpoint.new(opts)
    if not prepared then error(why, 2) end
    return prepared
end

--- A cached, self-refreshing token (see oauth2.client).
function _M.client(opts)
    local cached, why = client.new(opts)
    if not cached then error(why, 2) end
    return cached
end

--- One authenticated API request (oauth2.api) with a token of its own:
-- opts are oauth2.client's options plus the request's (query, json, body,
-- content_type, headers, idempotent, allow_other_host, ...).  With a
-- `store` ("file", say) the token is shared with later calls; without
-- one, each call costs a token request.  Returns res or nil and an error.
function _M.request(method, target, opts)
    if type(opts) ~= "table" then error("oauth2: options must be a table", 2) end
    local api = require "oauth2.api"
    local request_opts, client_opts = options.take(opts, api.REQUEST_ONLY)
    local cached, why = client.new(client_opts)
    if not cached then error(why, 2) end
    local call
    call, why = api.check(cached.conf, method, target, request_opts, cached)
    if not call then
        cached:close()
        error(why, 2)
    end
    local ok, res, err = pcall(api.send, cached, call)
    cached:close()
    if not ok then error(res, 0) end
    return res, err
end

--- A reusable connection to pass as opts.session, so consecutive calls
-- share one keep-alive connection and TLS session.  Close it when done.
_M.session = transport.session

--- JSON values the API needs and a Lua table cannot say (oauth2.json):
-- `empty_array` is sent as `[]`, and a table whose metatable is
-- `array_mt` is sent as an array even when empty; decoded answers mark
-- their arrays with it, so a GET, modify, PUT round trip keeps them.
local json = require "oauth2.json"
_M.empty_array = json.empty_array
_M.array_mt = json.array_mt

--- Whether a value is an error returned by this library.
_M.is_error = errors.is_error

-- Names of all options oauth2.token accepts (for tools and documentation).
_M.option_names = {}
for name in pairs(options.schema) do _M.option_names[#_M.option_names + 1] = name end
sort(_M.option_names)

return _M
