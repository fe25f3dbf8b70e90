-- oauth2.exchange: what a token endpoint's answer means, and the retries.
--
-- One call of fetch() is one oauth2.token: attempts through a session in
-- oauth2.retry's loop, each response turned into the token table or an
-- error table.

local cjson = require "cjson.safe"
local core = require "oauth2.core"
local options = require "oauth2.options"
local errors = require "oauth2.error"
local transport = require "oauth2.transport"
local retry = require "oauth2.retry"
local bearer = require "oauth2.bearer"
local trace = require "oauth2.trace"

local type, pairs, pcall, error = type, pairs, pcall, error
local floor = math.floor
local time = os.time
local format, lower = string.format, string.lower
local decode = cjson.decode
local is_b64token = core.is_b64token
local json_null = cjson.null
local ngx = ngx -- luacheck: ignore (nil outside OpenResty)

local _M = {
    _VERSION = core._VERSION,
    -- the clock, sleep and random source of retries (oauth2.retry's)
    runtime = retry.runtime,
}

-- A server's text as an error keeps it (oauth2.error.text).
local server_text = errors.text

-- Decode a JSON body; nil unless it is a JSON object.
local function decode_object(body)
    if body == nil or body == "" then return nil end
    local data = decode(body)
    if type(data) ~= "table" then return nil end
    return data
end

-- Turn a non-2xx response of `session` into the error table.
local function http_error(res, session)
    local status = res.status
    local data = decode_object(res.body)
    local err = {
        kind = "http",
        status = status,
        retryable = retry.STATUS[status] == true,
        -- a session of the caller's making may have no header method
        rate_limit = session.header and retry.rate_limit(function(name)
            return session:header(name)
        end),
        body = data,
    }
    if data then
        err.code, err.message, err.title, err.detail, err.errors = errors.problem(data)
    end
    err.retry_after = retry.server_wait(res.retry_after,
        status == 429 and err.rate_limit and err.rate_limit.reset or nil)
    err.message = err.message or format("the token endpoint answered HTTP %d", status)
    return err
end

-- The longest access token accepted, in characters.
local MAX_TOKEN = options.MAX_TOKEN

-- The longest lifetime taken at face value: ten years.
local MAX_LIFETIME = 10 * 365 * 86400

-- Turn a 2xx response into the token table, or a protocol error.
local function token_from(res, sent_at, sent_mono)
    local body = res.body
    local data = body ~= nil and body ~= "" and decode(body) or nil
    if type(data) ~= "table" then
        return nil, { kind = "protocol", status = res.status,
                      message = "the token response is not a JSON object" }
    end
    local problem = server_text(data.error)
    if problem ~= nil then
        return nil, { kind = "protocol", status = res.status, code = problem,
                      message = server_text(data.error_description)
                          or "the token response carries an error", body = data }
    end
    local access = data.access_token
    if type(access) ~= "string" or access == "" then
        return nil, { kind = "protocol", status = res.status,
                      message = "the token response has no access_token string" }
    end
    -- the token goes into an Authorization header as it is: only an RFC
    -- 6750 b64token of sane length can never inject anything there
    if not is_b64token(access, MAX_TOKEN) then
        return nil, { kind = "protocol", status = res.status,
                      message = format("the token response's access_token is not a bearer "
                          .. "token (RFC 6750 b64token of at most %d characters)", MAX_TOKEN) }
    end
    -- we send the token as Bearer: a token of another type would not work
    local token_type, scope = data.token_type, data.scope
    if token_type == nil or token_type == json_null or token_type == "" then
        token_type = "Bearer"
    elseif token_type ~= "Bearer" then
        if type(token_type) ~= "string" or lower(token_type) ~= "bearer" then
            return nil, { kind = "protocol", status = res.status,
                          message = "the token response's token_type is not Bearer" }
        end
        token_type = "Bearer"
    end
    -- kept, printed (thousandeyes-token info) and stored: no control
    -- character of the server's reaches a terminal or a log
    scope = server_text(scope)
    -- expires_in: whole seconds (an integer on Lua 5.3+) from 1 s to ten
    -- years; a string, a negative, zero or absurd lifetime says the
    -- endpoint is not speaking RFC 6749
    local expires_in = data.expires_in
    if expires_in == json_null then expires_in = nil end
    if expires_in ~= nil then
        if type(expires_in) ~= "number" or expires_in ~= expires_in or expires_in < 1
                or expires_in > MAX_LIFETIME then
            return nil, { kind = "protocol", status = res.status,
                          message = "the token response has an invalid expires_in "
                              .. "(not a number of seconds from 1 to ten years)" }
        end
        expires_in = floor(expires_in)
    end
    return bearer.new({
        access_token = access,
        token_type = token_type,
        scope = scope,
        expires_in = expires_in,
        expires_at = expires_in and sent_at + expires_in,
    }, expires_in and sent_mono + expires_in)
end

--- The request the C core sends for a validated configuration, prepared
-- once (core.prepare) and sent again and again with each attempt's
-- timeouts; or nil and why.  The few headers read (rate limits) are
-- asked of the session, and only on an error.
function _M.build_request(conf)
    local form = { grant_type = conf.grant_type }
    for name, value in pairs(conf.params or {}) do form[name] = value end
    form.scope = conf.scope
    form.thousandeyes_bearer_token = conf.thousandeyes_bearer_token
    local req = {
        url = conf.url,
        form = form,
        -- the form goes out as application/x-www-form-urlencoded already
        headers = { ["Accept"] = "application/json, application/problem+json" },
        connect_timeout = conf.connect_timeout,
        timeout = conf.timeout,
        verify = conf.verify,
        ca_file = conf.ca_file,
        ca_path = conf.ca_path,
        cert = conf.cert,
        key = conf.key,
        proxy = conf.proxy,
        no_proxy = conf.no_proxy,
        user_agent = conf.user_agent,
        max_body = conf.max_body,
    }
    if conf.auth_method == "client_secret_basic" then
        -- RFC 6749 2.3.1: form-urlencode id and secret, then Basic-encode
        req.username = core.escape(conf.client_id)
        req.password = core.escape(conf.client_secret)
    else
        form.client_id = conf.client_id
        form.client_secret = conf.client_secret
    end
    if conf.x_tenant_id then req.headers["x-tenant-id"] = conf.x_tenant_id end
    if conf.access_token then
        req.headers["Authorization"] = bearer.header(conf.access_token)
    end
    local prepared, err = core.prepare(req)
    if not prepared then return nil, "oauth2: the token request cannot be sent: " .. err.message end
    return prepared
end

-- The attempts through `session` within `deadline`: the token or nil and
-- a raw error table, and the number of attempts made.
local function attempt_all(conf, request, session, deadline, on_wait)
    local now = retry.runtime.now
    return retry.run(conf, deadline, function(_, timeout, connect_timeout)
        local sent_at, sent_mono = time(), now()
        local res, err = session:request(request, timeout, connect_timeout)
        if not res then
            err = retry.transport_error(err, conf, conf.url)
        elseif res.status >= 200 and res.status < 300 then
            local token
            token, err = token_from(res, sent_at, sent_mono)
            if token then return token end
        else
            err = http_error(res, session)
        end
        return nil, err, err.retryable, err.retry_after
    end, on_wait)
end

-- The same, with `deadline` (seconds) shortening conf.deadline, and
-- traced when the configuration's debug trace is on (oauth2.trace): the
-- session is then watched, and the loop's waits told.
local function exchange(conf, request, session, deadline)
    if not deadline or deadline > conf.deadline then deadline = conf.deadline end
    if not conf.trace then return attempt_all(conf, request, session, deadline) end
    local watched = trace.watch(conf.trace, options.secrets(conf), "POST", conf.url, session)
    return attempt_all(conf, request, watched, deadline, watched.on_wait)
end

--- One token for a validated configuration (see oauth2.options) and its
-- request (build_request), through `session`, or a connection of its own
-- when nil, within `deadline` seconds when given (at most conf.deadline).
-- Returns the token, or nil and the error (secrets scrubbed); then the
-- number of attempts made.
function _M.fetch(conf, request, session, deadline)
    local token, err, attempts
    if session == nil then
        -- a connection of its own, closed before returning whatever
        -- happens: dropped sessions would hold sockets until a collection
        session = transport.session()
        local ok
        ok, token, err, attempts = pcall(exchange, conf, request, session, deadline)
        session:close()
        if not ok then error(token, 0) end
    else
        token, err, attempts = exchange(conf, request, session, deadline)
    end
    if token then return token, nil, attempts end
    return nil, errors.new(err, options.secrets(conf)), attempts
end

--- The exchange in an nginx thread pool's own Lua state, where blocking
-- is the point: plain tables in (in_pool's `plain`), plain tables out.
function _M.in_thread(conf)
    _M.runtime.sleep = core.sleep
    local session = core.session()
    local blocking = {
        request = function(_, req, ...) return session:request(req, ...) end,
        header = function(_, name) return session:header(name) end,
    }
    local ok, token, err, attempts = pcall(function()
        return _M.fetch(conf, assert(_M.build_request(conf)), blocking)
    end)
    session:close()
    if not ok then return nil, { kind = "config", message = tostring(token) } end
    if token then
        return { access_token = token.access_token, token_type = token.token_type,
                 expires_in = token.expires_in, scope = token.scope }, nil, attempts
    end
    return nil, errors.plain(err), attempts
end

--- What a thread pool's Lua state gets of a configuration: plain values
-- (and params, a table of strings); no function (a clock, the trace's
-- sink) crosses into it.
function _M.plain(conf)
    local plain = {}
    for name, value in pairs(conf) do
        local kind = type(value)
        if name == "params" or kind ~= "table" and kind ~= "userdata" and kind ~= "function" then
            plain[name] = value
        end
    end
    return plain
end

--- One token fetched in the nginx thread pool `pool` (ngx.run_worker_thread)
-- for `conf` and its plain form: the token, or nil and the error; then
-- the attempts made.
function _M.in_pool(pool, conf, plain)
    local ok, token, err, attempts = ngx.run_worker_thread(pool, "oauth2.exchange",
        "in_thread", plain)
    if not ok then
        token, err = nil, { kind = "config", message = "thread pool '" .. pool .. "': "
            .. tostring(token) }
    end
    if token then return token, nil, attempts end
    return nil, errors.new(err, options.secrets(conf)), attempts
end

return _M

