-- oauth2.endpoint: a token endpoint prepared once, in the spirit of
-- cjson.new(): the options validated, the request built, a connection of
-- its own.  Its fields are plain: conf (the validated options), request
-- (what the C core sends) and session.
--
--   local endpoint = oauth2.endpoint { client_id = ..., client_secret = ... }
--   local token, err = endpoint:token()     -- as often as needed
--   endpoint:close()
--
-- oauth2.token(opts) is its one-shot form; oauth2.client is built on it.

local core = require "oauth2.core"
local options = require "oauth2.options"
local exchange = require "oauth2.exchange"
local transport = require "oauth2.transport"

local setmetatable, error, format = setmetatable, error, string.format

local _M = { _VERSION = core._VERSION }

local Endpoint = {}
Endpoint.__index = Endpoint

--- One token: attempts with retries inside the deadline.  Returns the
-- token table, or nil and an error table; then the attempts made.
-- `deadline` (seconds) shortens the configured one for this call.
function Endpoint:token(deadline)
    if self.closed then error("oauth2: use of a closed endpoint", 2) end
    return exchange.fetch(self.conf, self.request, self.session, deadline)
end

--- Close its connection (not one the caller passed as opts.session);
-- idempotent.
function Endpoint:close()
    if self.own_session and self.session then self.session:close() end
    self.session = nil
    self.closed = true
end
Endpoint.__close = Endpoint.close

function Endpoint:__tostring()
    return format("oauth2.endpoint %s client_id=%s%s", options.url_origin(self.conf.url),
        self.conf.client_id, self.closed and " (closed)" or "")
end

--- A prepared endpoint from oauth2.token's options, or nil and a message
-- for bad options.  With `connection == false` it opens no connection of
-- its own: each token() then opens one and closes it (a one-shot call, or
-- a cache that fetches once an hour).
function _M.new(opts, connection)
    local conf, why = options.validate(opts)
    if not conf then return nil, why end
    return _M.prepare(conf, connection)
end

--- The same from a configuration oauth2.options has validated already.
function _M.prepare(conf, connection)
    local request, why = exchange.build_request(conf)
    if not request then return nil, why end
    local own = conf.session == nil and connection ~= false
    return setmetatable({
        conf = conf,
        request = request,
        session = own and transport.session() or conf.session,
        own_session = own,
        closed = false,
    }, Endpoint)
end

return _M
