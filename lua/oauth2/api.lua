-- oauth2.api: authenticated ThousandEyes API requests with a client's token.
--
--   local res, err = client:request("GET", "/v7/tests", { query = { aid = "1" } })
--   for page, err in client:pages("/v7/tests") do ... end
--
-- A request goes through the same C core as the token (transport, TLS,
-- proxy and timeout options of the client), with the client's token in
-- Authorization, in oauth2.retry's loop.  A 401 drops that token
-- (client:invalidate(), with its store and its cool-down, which is waited
-- out within the deadline) and tries once more with a fresh one; a 429
-- waits for Retry-After or X-Organization-Rate-Limit-Reset when that fits
-- in the deadline; 5xx answers and network failures are retried with
-- backoff for idempotent methods only, unless the caller says the request
-- is safe to repeat.  Any HTTP answer is returned as res (the caller reads
-- res.status); nil and an error come when there is no answer (network,
-- TLS, deadline) or no token.
--
-- This module never raises and never loads oauth2.client: check() says
-- what is wrong with a call (client:request raises it at the caller's
-- line), send() runs it with any token source that has header(),
-- invalidate() and emit() (a client).  It owns its connections: one per
-- client outside nginx, kept between requests, and one per request in
-- nginx, where light threads never share one.

local core = require "oauth2.core"
local json = require "oauth2.json"
local bearer = require "oauth2.bearer"
local options = require "oauth2.options"
local retry = require "oauth2.retry"
local trace = require "oauth2.trace"
local errors = require "oauth2.error"
local transport = require "oauth2.transport"

local type, pairs, ipairs, tostring, tonumber, error, pcall, setmetatable =
      type, pairs, ipairs, tostring, tonumber, error, pcall, setmetatable
local min, floor = math.min, math.floor
local concat, sort = table.concat, table.sort
local find, lower, upper, format, gsub, match, sub, gmatch, char =
      string.find, string.lower, string.upper, string.format, string.gsub, string.match,
      string.sub, string.gmatch, string.char
local ngx = ngx -- luacheck: ignore (nil outside OpenResty)

local _M = { _VERSION = core._VERSION }

-- Methods a retry cannot repeat the effect of (RFC 9110 9.2.2).
local IDEMPOTENT = { GET = true, HEAD = true, PUT = true, DELETE = true, OPTIONS = true }

-- The options of one request, beside the client's.
local REQUEST_OPTIONS = {
    query = true, json = true, body = true, content_type = true, headers = true,
    path = true, idempotent = true, allow_other_host = true, deadline = true, timeout = true,
    max_body = true, retries = true, max_pages = true,
}
_M.REQUEST_OPTIONS = REQUEST_OPTIONS

-- Of those, the ones only a request has: the others (deadline, timeout,
-- retries, max_body) are a client's options too, and given to
-- oauth2.request they configure the client the request is made with.
_M.REQUEST_ONLY = {}
for name in pairs(REQUEST_OPTIONS) do
    if not options.schema[name] then _M.REQUEST_ONLY[name] = true end
end

-- The longest answer kept by default: 16 MiB (listings can be large).
local MAX_BODY = 16 * 1024 * 1024

-- Whether a content type is JSON (application/json, problem+json, hal+json...).
local function is_json(content_type)
    if type(content_type) ~= "string" then return false end
    local media = lower(match(content_type, "^%s*([^;%s]+)") or "")
    return media == "application/json" or find(media, "^application/[%w.%-]+%+json$") ~= nil
end
_M.is_json = is_json

-- "a=1&b=x%20y" from { a = 1, b = "x y", c = { "p", "q" } }, in name order.
local function encode_query(query)
    local names = {}
    for name in pairs(query) do
        if type(name) ~= "string" then return nil, "query names must be strings" end
        names[#names + 1] = name
    end
    sort(names)
    local parts = {}
    for _, name in ipairs(names) do
        local value = query[name]
        local list = type(value) == "table" and value or { value }
        for _, item in ipairs(list) do
            local t = type(item)
            if t ~= "string" and t ~= "number" and t ~= "boolean" then
                return nil, format("query '%s' must be a string, number, boolean or a list "
                    .. "of them", name)
            end
            parts[#parts + 1] = core.escape(name) .. "=" .. core.escape(tostring(item))
        end
    end
    return concat(parts, "&")
end

-- The full URL of `target` for a client whose API is at conf.api_url: a
-- path ("/v7/tests" or "v7/tests") joins it; a full URL must be on its
-- origin, or on a host `allow_other_host` names, and plain http:// only
-- where the client's own rule allows it (allow_http, or loopback), so
-- the token never leaves for a place the caller did not name.  The URL,
-- or nil and why.
local function target_url(conf, target, allow_other_host)
    local origin = options.url_origin(conf.api_url)
    if type(target) ~= "string" or target == "" then
        return nil, "the path or URL must be a non-empty string"
    end
    if find(target, "[%z\r\n ]") then return nil, "the path or URL contains a space or control" end
    if not find(target, "^%a[%w+.-]*://") then
        return conf.api_url .. "/" .. gsub(target, "^/+", "")
    end
    local parts = core.parse_url(target)
    local scheme = parts and lower(parts.scheme or "")
    if not parts or not parts.host or (scheme ~= "https" and scheme ~= "http") then
        return nil, "the URL is not an http(s) URL the token may go to"
    end
    local there = options.url_origin(target)
    if there ~= origin and not (allow_other_host and allow_other_host[lower(parts.host)]) then
        return nil, format("%s is not on the API's host %s; the token goes nowhere else",
            there, origin)
    end
    if scheme == "http" and not conf.allow_http and not options.is_loopback(parts.host) then
        return nil, format("%s is plain http://: the token does not travel in clear", there)
    end
    return target
end

-- A path parameter as one path segment: escaped whole (a "/" or "?" in
-- it stays inside it), never a dot segment; or nil and why.
local function path_segment(name, value)
    local t = type(value)
    if t == "number" then
        value = value == floor(value) and format("%d", value) or tostring(value)
    elseif t ~= "string" then
        return nil, format("path parameter '%s' must be a string or a number", name)
    end
    if value == "" or value == "." or value == ".." then
        return nil, format("path parameter '%s' must not be empty, \".\" or \"..\"", name)
    end
    return core.escape(value)
end

-- The target with its {name} parts filled from `path`, each value one
-- escaped segment; or nil and why (a part without a value, a value
-- without a part).
local function fill_path(target, path)
    if path == nil then
        -- a full URL (a server's link) is taken as it is
        local name = type(target) == "string" and not find(target, "^%a[%w+.-]*://")
            and match(target, "{([%w_%-]+)}")
        if name then
            return nil, format("the path names {%s}: give its value in the request option "
                .. "'path'", name)
        end
        return target
    end
    if type(path) ~= "table" then
        return nil, "request option 'path' must map the names in the path's {braces} to values"
    end
    if type(target) ~= "string" then return target end
    local used, why = {}, nil
    local filled = gsub(target, "{([^{}]*)}", function(name)
        if why then return nil end
        local value = path[name]
        if value == nil then
            why = format("the path names {%s} but the request option 'path' has no '%s'",
                name, name)
            return nil
        end
        used[name] = true
        local segment
        segment, why = path_segment(name, value)
        return segment
    end)
    if why then return nil, why end
    for name in pairs(path) do
        if not used[name] then
            return nil, format("request option 'path' has '%s', which the path does not name "
                .. "as {%s}", tostring(name), tostring(name))
        end
    end
    return filled
end

-- allow_other_host as a set of lower-case host names, or nil and why.
local function other_hosts(value)
    if value == nil then return {} end
    if type(value) == "string" then value = { value } end
    if type(value) ~= "table" then
        return nil, "request option 'allow_other_host' must list host names, such as "
            .. "{ \"other.example.com\" }"
    end
    local hosts = {}
    for _, host in ipairs(value) do
        if type(host) ~= "string" or not find(host, "^[%w.-]+$") then
            return nil, "request option 'allow_other_host' must list host names, such as "
                .. "{ \"other.example.com\" }"
        end
        hosts[lower(host)] = true
    end
    return hosts
end

-- The request table for the C core: the client's transport options, the
-- method, URL, headers (the client's, then the call's over them) and body
-- of this call.  Or nil and why.
local function build(conf, method, url, opts, defaults)
    local headers = {
        ["Accept"] = "application/hal+json, application/json, application/problem+json",
    }
    if conf.x_tenant_id then headers["x-tenant-id"] = conf.x_tenant_id end
    if defaults then
        -- checked by the client's options; a call's header of the same name
        -- (any case) replaces it
        for name, value in pairs(defaults) do headers[name] = value end
    end
    if opts.headers ~= nil then
        if type(opts.headers) ~= "table" then return nil, "option 'headers' must be a table" end
        for name, value in pairs(opts.headers) do
            if type(name) ~= "string" or type(value) ~= "string" then
                return nil, "option 'headers' must map names to strings"
            end
            if not find(name, "^[%w!#$%%&'*+.^_`|~-]+$") then
                return nil, "option 'headers' has a name that is no header name (a token "
                    .. "such as X-Trace)"
            end
            -- RFC 9110 5.5: no control character but a tab in a field value
            if find(value, "[%z\1-\8\10-\31\127]") then
                return nil, "option 'headers' has a value with a control character (CR, "
                    .. "LF, NUL...): refused, as header injection"
            end
            if lower(name) == "authorization" then
                return nil, "option 'headers' must not set Authorization: the client does"
            end
            for other in pairs(headers) do
                if lower(other) == lower(name) then headers[other] = nil end
            end
            headers[name] = value
        end
    end
    local body
    if opts.json ~= nil and opts.body ~= nil then
        return nil, "options 'json' and 'body' exclude each other"
    end
    if opts.json ~= nil then
        local text, why = json.encode(opts.json)
        if not text then return nil, "option 'json' cannot be encoded: " .. tostring(why) end
        body = text
        headers["Content-Type"] = "application/json"
    elseif opts.body ~= nil then
        if type(opts.body) ~= "string" then return nil, "option 'body' must be a string" end
        if type(opts.content_type) ~= "string" then
            return nil, "option 'body' needs 'content_type'"
        end
        body = opts.body
        headers["Content-Type"] = opts.content_type
    end
    if opts.query ~= nil then
        if type(opts.query) ~= "table" then return nil, "option 'query' must be a table" end
        local query, why = encode_query(opts.query)
        if not query then return nil, "option " .. why end
        if query ~= "" then url = url .. (find(url, "?", 1, true) and "&" or "?") .. query end
    end
    return {
        url = url, method = method, headers = headers, body = body,
        verify = conf.verify, ca_file = conf.ca_file, ca_path = conf.ca_path,
        cert = conf.cert, key = conf.key, proxy = conf.proxy,
        -- plain http:// goes only to loopback (or where allow_http said):
        -- never through a proxy that may be anywhere
        no_proxy = not conf.allow_http and lower(sub(url, 1, 5)) == "http:" or nil,
        user_agent = conf.user_agent, max_body = opts.max_body or MAX_BODY,
    }
end

-- What a response can do: res:error().
local Response = {}
Response.__index = Response

-- Each non-2xx response's error, made when it came (its secrets scrubbed).
local error_of = setmetatable({}, { __mode = "k" })

--- res:error(): nil for a 2xx answer; otherwise the library's error of
-- kind "http", with the status and what the problem said (code, title,
-- detail, field errors).
function Response:error()
    return error_of[self]
end

-- The error of a non-2xx answer, secrets scrubbed.
local function status_error(res, secrets, conf)
    local code, message, title, detail, list = errors.problem(res.json)
    if not message and res.status == 401 and conf.api_token then
        -- nothing to renew: the dashboard's token itself was refused
        message = "the API refused the API token (HTTP 401): it may have expired or been "
            .. "revoked"
    end
    return errors.new({ kind = "http", status = res.status, retryable = false, code = code,
        message = message or format("the API answered HTTP %d", res.status), title = title,
        detail = detail, errors = list }, secrets)
end

-- What no error of a request may carry: the client's secrets and the
-- token sent; made only for an error.
local function secrets_of(conf, header)
    local secrets = options.secrets(conf)
    secrets[#secrets + 1] = bearer.token_of(header) or header
    return secrets
end

-- The response as the caller gets it: status, ok, headers (lower-case
-- names), body, and json when the answer is JSON.
local function response(res, session, conf, header)
    local headers = session:headers() or {}
    local status = res.status
    local out = setmetatable({ status = status, ok = status >= 200 and status < 300,
        headers = headers, body = res.body or "",
        retry_after = res.retry_after and min(res.retry_after, core.MAX_SECONDS),
        rate_limit = retry.rate_limit(function(name) return headers[name] end) }, Response)
    if is_json(headers["content-type"]) and out.body ~= "" then
        out.json = json.decode(out.body)
    end
    if not out.ok then error_of[out] = status_error(out, secrets_of(conf, header), conf) end
    return out
end

-- Seconds added to a wait for a cool-down to end, for a sleep that ends
-- early on another clock.
local WAIT_GRACE = 0.005

-- The least time left in which a request is still sent, in seconds.
local MIN_SEND = 0.001

-- A duration option, or nil and why.
local function check_seconds(opts, name)
    local value = opts[name]
    if value ~= nil and (type(value) ~= "number" or value ~= value or value <= 0
            or value > core.MAX_SECONDS) then
        return nil, "oauth2: request option '" .. name .. "' must be a positive number of "
            .. "seconds, at most " .. core.MAX_SECONDS
    end
    return true
end

-- Whether a URL's query names an account group.
local function names_aid(url)
    return find(url, "[?&]aid=") ~= nil
end

--- A call checked against a client's configuration: {method, req (the
-- request table for the C core, without Authorization), plan (of the
-- retry loop), deadline, repeatable}; or nil and what is wrong, a message
-- starting "oauth2: ".  `client` lends its defaults: its account group
-- (aid) joins the query unless the call names one, its headers go under
-- the call's.
function _M.check(conf, method, target, opts, client)
    local aid = client and client.aid
    opts = opts or {}
    if type(opts) ~= "table" then return nil, "oauth2: request options must be a table" end
    for name in pairs(opts) do
        if not REQUEST_OPTIONS[name] then
            return nil, "oauth2: unknown request option '" .. tostring(name) .. "'"
        end
    end
    if type(method) ~= "string" or not find(method, "^%a+$") then
        return nil, "oauth2: the method must be an HTTP method such as \"GET\""
    end
    method = upper(method)
    local hosts, why = other_hosts(opts.allow_other_host)
    if not hosts then return nil, "oauth2: " .. why end
    target, why = fill_path(target, opts.path)
    if not target then return nil, "oauth2: " .. why end
    local url
    url, why = target_url(conf, target, hosts)
    if not url then return nil, "oauth2: " .. why end
    if aid and not names_aid(url) and not (type(opts.query) == "table" and opts.query.aid ~= nil)
            then
        url = url .. (find(url, "?", 1, true) and "&" or "?") .. "aid=" .. aid
    end
    local req
    req, why = build(conf, method, url, opts, client and client.headers)
    if not req then return nil, "oauth2: " .. why end
    for _, name in ipairs { "deadline", "timeout" } do
        local ok, problem = check_seconds(opts, name)
        if not ok then return nil, problem end
    end
    local retries = opts.retries or conf.retries
    if type(retries) ~= "number" or retries < 0 or retries > 100 or retries ~= floor(retries) then
        return nil, "oauth2: request option 'retries' must be an integer from 0 to 100"
    end
    return {
        method = method,
        req = req,
        deadline = opts.deadline or conf.deadline,
        repeatable = IDEMPOTENT[method] or opts.idempotent == true,
        plan = { timeout = opts.timeout or conf.timeout, connect_timeout = conf.connect_timeout,
                 retries = retries, backoff_base = conf.backoff_base,
                 backoff_max = conf.backoff_max },
    }
end

-- The connections kept for clients outside nginx, by client.
local kept = setmetatable({}, { __mode = "k" })

-- The connection of one request: the client's kept one outside nginx,
-- a new one in nginx (closed after the request).
local function connection(client)
    if ngx then return transport.session() end
    local session = kept[client]
    if session == nil then
        session = transport.session()
        kept[client] = session
    end
    return session
end

--- Close the connection kept for `client`, if any (client:close()).
function _M.close(client)
    local session = kept[client]
    if session then
        kept[client] = nil
        session:close()
    end
end

-- The client's header, waiting out the cool-down of a token just dropped
-- when the deadline allows.  The cool-down runs on the client's clock,
-- and a sleep may end a little early on it (nginx's clock is coarse): a
-- few ms more, and what is left asked again after each wait.
local function fresh_header(client, deadline_at)
    local now, sleep = retry.runtime.now, retry.runtime.sleep
    local header, err = client:header()
    for _ = 1, 3 do
        if header or err.code ~= "invalidated" or not err.retry_after
                or now() + err.retry_after + WAIT_GRACE >= deadline_at then
            break
        end
        sleep(err.retry_after + WAIT_GRACE)
        header, err = client:header()
    end
    return header, err
end

-- What the last answer to each client said of the organization's rate
-- limit, for pacing: nothing remaining until a monotonic time.
local exhausted = setmetatable({}, { __mode = "k" })

-- Note a response's rate limit for pacing.
local function note_limit(client, res)
    local limit = res.rate_limit
    if not limit then return end
    if limit.remaining and limit.remaining <= 0 then
        local wait = retry.until_reset(limit.reset)
        if wait then
            exhausted[client] = retry.runtime.now() + wait
            return
        end
    end
    exhausted[client] = nil
end

-- With pacing on, wait out an exhausted rate limit before sending, when
-- the deadline allows; otherwise send, and let the server decide.
local function pace(client, method, deadline_at)
    local until_at = client.pace and exhausted[client]
    if not until_at then return end
    local now = retry.runtime.now
    local wait = until_at - now()
    exhausted[client] = nil
    if wait <= 0 or now() + wait + WAIT_GRACE >= deadline_at then return end
    client:emit("api_pace", { method = method, wait = wait })
    retry.runtime.sleep(wait + WAIT_GRACE)
end

--- Send a checked call with the token of `client`: res or nil and an
-- error.  A raise inside (a hook, a broken session) closes the connection
-- and goes on up.
function _M.send(client, call)
    local conf, req, method = client.conf, call.req, call.method
    local now = retry.runtime.now
    local deadline_at = now() + call.deadline
    local session = connection(client)
    local renewed = false
    -- with the debug trace on, the requests go through a watched session
    local watched = conf.trace
        and trace.watch(conf.trace, options.secrets(conf), method, req.url, session)
    local via = watched or session
    local function attempt(_, timeout, connect_timeout)
        local res, err
        for _ = 1, 2 do
            -- once the token was rejected, fetch anew within the deadline
            local header
            if renewed then
                header, err = fresh_header(client, deadline_at)
            else
                header, err = client:header()
            end
            if not header then return nil, err, false end
            pace(client, method, deadline_at)
            -- the waits before sending (a token, a renewal, pacing) came out
            -- of the deadline: the attempt gets what is left, and nothing
            -- is sent when nothing is
            local left = deadline_at - now()
            if left < MIN_SEND then
                return nil, errors.new { kind = "timeout", retryable = false,
                    message = format("the %g s deadline passed before the request was sent",
                        call.deadline) }, false
            end
            timeout = min(timeout, left)
            connect_timeout = min(connect_timeout, timeout)
            req.headers.Authorization = header
            res, err = via:request(req, timeout, connect_timeout)
            req.headers.Authorization = nil
            if not res then
                err = errors.new(retry.transport_error(err, conf, req.url),
                    secrets_of(conf, header))
                return nil, err, err.retryable and call.repeatable
            end
            res = response(res, via, conf, header)
            note_limit(client, res)
            left = deadline_at - now()
            -- a static token (api_token) is the same token again: no renewal
            if res.status ~= 401 or renewed or left < 0.001 or client.static then break end
            -- the token was rejected: drop it (for every holder of the
            -- store) and try once more at once with a fresh one, in what
            -- is left of the deadline
            renewed = true
            client:invalidate()
            client:emit("api_401", { status = 401, method = method })
        end
        if res.status == 429 then
            -- Retry-After, else the reset of the family that refused it
            local headers = res.headers
            return res, nil, true, retry.server_wait(res.retry_after,
                retry.limit_reset(function(name) return headers[name] end))
        end
        return res, nil, retry.STATUS[res.status] and call.repeatable
    end
    -- every wait is told: a 429's, and a retry's after a 5xx or a
    -- transport failure
    local function on_wait(wait, res, err)
        if watched then watched.on_wait(wait, res, err) end
        if res and res.status == 429 then
            client:emit("api_429", { status = 429, method = method, wait = wait })
        else
            client:emit("api_retry", { status = res and res.status, kind = err and err.kind,
                method = method, wait = wait })
        end
    end
    local ok, res, err = pcall(retry.run, call.plan, call.deadline, attempt, on_wait)
    if ngx or not ok then
        session:close()
        if kept[client] == session then kept[client] = nil end
    end
    if not ok then error(res, 0) end
    return res, err
end

-- The options of pages() beside the request's.
local PAGES_OPTIONS = { max_pages = true }

-- The names a URL's query sets, percent-decoded.
local function query_names(url)
    local names = {}
    local query = match(url, "%?([^#]*)")
    if query then
        for pair in gmatch(query, "[^&]+") do
            local name = gsub(match(pair, "^[^=]*"), "%%(%x%x)", function(hex)
                return char(tonumber(hex, 16))
            end)
            names[name] = true
        end
    end
    return names
end

-- The URL of a next link: as it is on the API's origin (or a host the
-- call allows); on any other origin (the API's own name seen through a
-- gateway or a proxy, or anywhere else) its path and query asked of the
-- API's origin, so the token goes nowhere else.  Or nil and why.
local function next_url(conf, link, hosts)
    local url, why = target_url(conf, link, hosts)
    if url then return url end
    local parts = find(link, "^%a[%w+.-]*://") and core.parse_url(link)
    local scheme = parts and lower(parts.scheme or "")
    if not parts or (scheme ~= "https" and scheme ~= "http") then return nil, why end
    local path = match(link, "^%a[%w+.-]*://[^/?#]*(/[^#]*)") or "/"
    return target_url(conf, conf.api_url .. path, hosts)
end

--- The pages of a listing: an iterator (see client:pages), or nil and
-- what is wrong with the call.  A next link is asked with every query
-- parameter of the call that the link does not set itself (as
-- ThousandEyes' SDKs do), and the walk ends at a link already asked.
function _M.pages(client, target, opts)
    opts = opts or {}
    if type(opts) ~= "table" then return nil, "oauth2: request options must be a table" end
    local max_pages = opts.max_pages or 100
    if type(max_pages) ~= "number" or max_pages < 1 or max_pages ~= floor(max_pages) then
        return nil, "oauth2: request option 'max_pages' must be a positive integer"
    end
    local first, later = {}, {}
    for name, value in pairs(opts) do
        if not PAGES_OPTIONS[name] then
            first[name] = value
            -- the next pages are full URLs: no path parameters to fill
            if name ~= "query" and name ~= "path" then later[name] = value end
        end
    end
    local call, why = _M.check(client.conf, "GET", target, first, client)
    if not call then return nil, why end
    local hosts = other_hosts(opts.allow_other_host)
    local query = type(opts.query) == "table" and opts.query or nil
    local asked = { [call.req.url] = true }
    local count, refused = 0, nil
    return function()
        if refused then
            -- a link the server chose that the token may not follow: an
            -- error of the server's data, never a raise out of the loop
            local err = refused
            refused = nil
            return false, err
        end
        if call == nil then return nil end
        if count >= max_pages then
            -- more pages than asked for: said once, never silent
            call = nil
            return false, errors.new { kind = "config", code = "max_pages",
                message = format("the listing has more than max_pages (%d) pages; raise "
                    .. "max_pages or narrow the query", max_pages) }
        end
        count = count + 1
        local res, err = _M.send(client, call)
        call = nil
        if not res then return false, err end
        if not res.ok then return false, res:error() end
        local page = res.json
        if type(page) ~= "table" then
            return false, errors.new { kind = "protocol",
                message = "the API answered a listing without a JSON object" }
        end
        local links = type(page._links) == "table" and page._links or {}
        local nxt = type(links.next) == "table" and links.next.href or links.next
        if type(nxt) == "string" and nxt ~= "" then
            local url, problem = next_url(client.conf, nxt, hosts)
            if url then
                -- the call's query, less what the link sets
                if query then
                    local set = query_names(url)
                    local carried = {}
                    for name, value in pairs(query) do
                        if not set[name] then carried[name] = value end
                    end
                    later.query = carried
                end
                call, problem = _M.check(client.conf, "GET", url, later, client)
            end
            if call and asked[call.req.url] then
                -- a page asked already: the listing is read
                call = nil
            elseif call then
                asked[call.req.url] = true
            else
                refused = errors.new { kind = "protocol",
                    message = "the next page's link was not followed: "
                        .. (problem or ""):gsub("^oauth2: ", "") }
            end
        end
        return page, res
    end
end

--- The items of a listing's pages: the elements of each page's `field`
-- (such as "tests"), page after page; or nil and what is wrong with the
-- call.  A failure gives false and the error once, then the walk ends.
function _M.items(client, target, field, opts)
    if type(field) ~= "string" or field == "" then
        return nil, "oauth2: the field must name the list of items on each page, such as "
            .. "\"tests\""
    end
    local pages, why = _M.pages(client, target, opts)
    if not pages then return nil, why end
    local list, i, done = {}, 0, false
    return function()
        while not done do
            i = i + 1
            local item = list[i]
            if item ~= nil then return item end
            local page, err = pages()
            if page == nil then break end
            if page == false then
                done = true
                return false, err
            end
            list, i = page[field], 0
            if type(list) ~= "table" then
                done = true
                return false, errors.new { kind = "protocol",
                    message = format("a page of the listing has no list '%s'", field) }
            end
        end
        done = true
        return nil
    end
end

return _M
