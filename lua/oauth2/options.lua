-- oauth2.options: option names, defaults and validation, and the request
-- the C core sends for them.
--
-- Misuse raises at once, pointing at the caller's line, with a message that
-- names the option (never its value when the value may be secret).  What
-- comes out is a private, normalised copy: later changes to the caller's
-- table do not reach a client that holds it.

local core = require "oauth2.core"
local trace = require "oauth2.trace"

local type, pairs, ipairs, tostring, tonumber =
      type, pairs, ipairs, tostring, tonumber
local getenv = os.getenv
local concat, sort = table.concat, table.sort
local find, match, gsub, lower = string.find, string.match, string.gsub, string.lower
local floor = math.floor

local _M = { _VERSION = core._VERSION }

_M.DEFAULT_HOST = "https://api.thousandeyes.com"
_M.TOKEN_PATH = "/v7/oauth2/token"
_M.ENV_CLIENT_ID = "THOUSANDEYES_CLIENT_ID"
_M.ENV_CLIENT_SECRET = "THOUSANDEYES_CLIENT_SECRET"
-- ... or a file holding it (the *_FILE convention of container secrets)
_M.ENV_CLIENT_SECRET_FILE = "THOUSANDEYES_CLIENT_SECRET_FILE"
-- the API's host (option host) and a CA bundle (option ca_file)
_M.ENV_HOST = "THOUSANDEYES_HOST"
_M.ENV_CA_FILE = "THOUSANDEYES_CA_FILE"
-- a User API token from the dashboard, for API requests (oauth2.client)
_M.ENV_API_TOKEN = "THOUSANDEYES_API_TOKEN"

-- Defaults of everything that has one.
_M.defaults = {
    grant_type = "client_credentials",
    host = _M.DEFAULT_HOST,
    auth_method = "client_secret_post",
    timeout = 10,
    connect_timeout = 5,
    retries = 3,
    deadline = 30,
    backoff_base = 0.5,
    backoff_max = 8,
    verify = true,
    allow_http = false,
    max_body = 1024 * 1024,
    user_agent = "lua-oauth2/" .. _M._VERSION,
}

-- The options that hold secrets: never echoed, scrubbed from errors.
_M.SECRET_OPTIONS = {
    "client_secret", "access_token", "thousandeyes_bearer_token", "api_token",
}

-- Options whose values are never echoed in a message: the secrets, and
-- the proxy, whose URL may carry a password.
local SECRET = { proxy = true }
for _, name in ipairs(_M.SECRET_OPTIONS) do SECRET[name] = true end

-- A misuse message; the public function raises it at its caller's line.
local function misuse(fmt, ...)
    return nil, "oauth2: " .. fmt:format(...)
end

local function describe(value)
    local t = type(value)
    if t == "string" then return "a string" end
    if t == "number" then return "a number" end
    return t == "nil" and "nil" or "a " .. t
end

-- A value as a message may show it (never a secret's): numbers and
-- booleans as they are, strings quoted (control characters escaped, a
-- URL's userinfo hidden, at most 60 characters), other types by name.
local function show(value)
    local t = type(value)
    if t == "number" then return string.format("%.14g", value) end
    if t == "boolean" then return tostring(value) end
    if t ~= "string" then return describe(value) end
    local text = value:gsub("^(%a[%w+.-]*://)[^/@]*@", "%1[redacted]@")
    if #text > 60 then text = text:sub(1, 60) .. "..." end
    text = text:gsub("[%c\127\\\"]", function(c)
        if c == "\\" or c == '"' then return "\\" .. c end
        return "\\" .. c:byte()
    end)
    return '"' .. text .. '"'
end

local function has_control(s)
    return find(s, "[%z\r\n]") ~= nil
end

-- Checks by kind: each returns the normalised value, or nil and a phrase.
local check = {}

function check.string(value)
    if type(value) ~= "string" then return nil, "must be a string" end
    if value == "" then return nil, "must not be empty" end
    if find(value, "%z") then return nil, "must not contain a NUL byte" end
    return value
end

-- A string that becomes (part of) an HTTP header value.
function check.header(value)
    local v, why = check.string(value)
    if not v then return nil, why end
    if has_control(v) then return nil, "must not contain CR or LF (header injection)" end
    return v
end

-- The longest bearer token taken, in characters (as from the endpoint).
local MAX_TOKEN = 16384
_M.MAX_TOKEN = MAX_TOKEN

-- A static bearer token (a User API token): it goes into the
-- Authorization header as it is, so only an RFC 6750 b64token will do.
function check.api_token(value)
    if type(value) ~= "string" or not core.is_b64token(value, MAX_TOKEN) then
        return nil, "must be a bearer token (the User API token of the ThousandEyes "
            .. "dashboard: letters, digits and - . _ ~ + /)"
    end
    return value
end

function check.boolean(value)
    if type(value) ~= "boolean" then return nil, "must be a boolean" end
    return value
end

-- The one bound of every duration, the C core's (a day).
local DAY = core.MAX_SECONDS

-- A positive number of seconds, at most `limit` (NaN and infinity refused).
local function seconds(limit)
    return function(value)
        if type(value) ~= "number" or value ~= value then return nil, "must be a number" end
        if value <= 0 or value > limit then
            return nil, ("must be a positive number of seconds, at most %d"):format(limit)
        end
        return value
    end
end

-- A whole number from `low` to `high`.
local function integer(low, high)
    return function(value)
        if type(value) ~= "number" or value ~= floor(value) or value < low or value > high then
            return nil, ("must be an integer from %d to %d"):format(low, high)
        end
        return floor(value)
    end
end

-- Schemes libcurl takes for a proxy.
local PROXY_SCHEMES = {
    http = true, https = true, socks4 = true, socks4a = true, socks5 = true, socks5h = true,
}

-- A proxy URL with its scheme; its userinfo is a secret (never echoed).
function check.proxy(value)
    local v, why = check.string(value)
    if not v then return nil, why end
    local parts = core.parse_url(v)
    if not parts or not PROXY_SCHEMES[lower(parts.scheme or "")] or not parts.host
            or parts.host == "" then
        return nil, "must be a proxy URL: http, https, socks4, socks4a, socks5 or "
            .. "socks5h://host:port"
    end
    return v
end

-- params: extra form fields of the token request (RFC 8707 resource,
-- audience), names to strings; a copy.
function check.params(value)
    if type(value) ~= "table" then return nil, "must be a table of form fields" end
    local copy = {}
    for name, field in pairs(value) do
        if type(name) ~= "string" or not find(name, "^[%w_.~-]+$") then
            return nil, "must map field names (letters, digits, _ . ~ -) to strings"
        end
        if type(field) ~= "string" or has_control(field) then
            return nil, "must map field names to strings without CR, LF or NUL"
        end
        copy[name] = field
    end
    return copy
end

-- scope: "a b" or { "a", "b" }, sent space-separated.
function check.scope(value)
    if type(value) == "table" then
        local parts = {}
        for i, s in ipairs(value) do
            if type(s) ~= "string" or s == "" or find(s, "[%s%z]") then
                return nil, ("entry %d must be a non-empty string without spaces"):format(i)
            end
            parts[i] = s
        end
        if #parts == 0 then return nil, "must not be an empty list" end
        return concat(parts, " ")
    end
    local v = check.string(value)
    if not v then return nil, "must be a string or a list of strings" end
    if has_control(v) then return nil, "must not contain CR, LF or NUL" end
    return v
end

function check.auth_method(value)
    if value ~= "client_secret_post" and value ~= "client_secret_basic" then
        return nil, 'must be "client_secret_post" or "client_secret_basic"'
    end
    return value
end

-- A transport: anything with a request(self, req) method.
function check.session(value)
    local t = type(value)
    if (t ~= "table" and t ~= "userdata") or value.request == nil then
        return nil, "must be a session (an object with a request method)"
    end
    return value
end

-- A function the caller hands in (a clock; a hook, whose arguments
-- `shape` names), or absent: false.
function check.callable(shape)
    local phrase = shape and "must be a function " .. shape or "must be a function"
    return function(value)
        if value == nil or value == false then return false end
        if type(value) ~= "function" then return nil, phrase end
        return value
    end
end

-- The debug trace: true, false, or a function that takes each line.
function check.debug(value)
    if type(value) ~= "boolean" and type(value) ~= "function" then
        return nil, "must be a boolean or a function (line)"
    end
    return value
end

-- The account group of API requests that name none: digits, as a string.
function check.aid(value)
    if value == false then return false end
    if type(value) == "number" and value >= 0 and value == floor(value) then
        value = string.format("%d", value)
    end
    if type(value) ~= "string" or not value:find("^%d+$") then
        return nil, "must be an account group id (digits, such as \"1234\")"
    end
    return value
end

-- Headers sent with every API request (a call's own go over them): a
-- table of names and values, never Authorization.
function check.headers(value)
    if value == false then return false end
    if type(value) ~= "table" then
        return nil, 'must map header names to values, such as { ["X-Trace"] = "on" }'
    end
    local headers = {}
    for name, text in pairs(value) do
        if type(name) ~= "string" or not name:find("^[%w!#$%%&'*+.^_`|~-]+$") then
            return nil, "must map header names (tokens such as X-Trace) to values"
        end
        if name:lower() == "authorization" then
            return nil, "must not set Authorization: the client does"
        end
        -- RFC 9110 5.5: no control character but a tab in a field value
        if type(text) ~= "string" or text:find("[%z\1-\8\10-\31\127]") then
            return nil, "must map header names to strings without control characters"
        end
        headers[name] = text
    end
    return headers
end

-- A number from `low` to `high`, both included (NaN refused).
function check.range(low, high, unit)
    return function(value)
        if type(value) ~= "number" or value ~= value or value < low or value > high then
            return nil, ("must be a number%s from %g to %g"):format(unit or "", low, high)
        end
        return value
    end
end
check.integer = integer

-- The checks above, for the options of oauth2.client and oauth2.openresty.
_M.checks = check

-- A number from `low` (excluded unless low_ok) to `high`, with its
-- bounds as people write them (31536000, not 3.1536e+07).
local function bounded(low, high, low_ok)
    local function shown(bound)
        return bound == floor(bound) and ("%d"):format(bound) or ("%g"):format(bound)
    end
    local phrase = (low_ok and "must be a number from %s to %s"
        or "must be a number above %s and at most %s"):format(shown(low), shown(high))
    return function(value)
        if type(value) ~= "number" or value ~= value or value > high
                or value < low or (value == low and not low_ok) then
            return nil, phrase
        end
        return value
    end
end

-- The cache policy's options (oauth2.policy times tokens by them), as a
-- module's own: name = { default, check }.  A floor of 0.1 s where 0 (or
-- next to it) would fetch on every call or remember no failure.
local margin = bounded(0, DAY, true)
_M.POLICY = {
    -- seconds before expiry a token counts as expired; false: the larger
    -- of 30 s and 10% of its lifetime
    margin = { false, function(value)
        if value == false then return false end
        return margin(value)
    end },
    -- refresh once this share of the lifetime has passed, minus up to
    -- refresh_jitter of it, so caches spread out
    refresh_ratio = { 0.8, bounded(0, 1) },
    refresh_jitter = { 0.05, bounded(0, 0.99, true) },
    -- seconds, when the endpoint sends no expires_in
    default_lifetime = { 300, bounded(0.1, DAY * 365, true) },
    -- seconds a failed fetch is remembered, at least
    cooldown = { 5, bounded(0.1, DAY, true) },
    -- a fetch after invalidate() waits this long after the last
    invalidate_cooldown = { 10, bounded(0, DAY, true) },
    -- seconds a refresh may hold a caller who has a valid token
    refresh_timeout = { 5, bounded(0, DAY) },
}

-- Every option oauth2.token accepts, and how it is checked.
_M.schema = {
    client_id = check.string,
    client_secret = check.string,
    grant_type = check.string,
    scope = check.scope,
    thousandeyes_bearer_token = check.string,
    x_tenant_id = check.header,
    host = check.string,
    token_url = check.string,
    auth_method = check.auth_method,
    access_token = check.header,
    timeout = seconds(DAY),
    connect_timeout = seconds(DAY),
    retries = integer(0, 100),
    deadline = seconds(DAY),
    backoff_base = seconds(3600),
    backoff_max = seconds(3600),
    ca_file = check.string,
    ca_path = check.string,
    cert = check.string,
    key = check.string,
    proxy = check.proxy,
    verify = check.boolean,
    allow_http = check.boolean,
    user_agent = check.header,
    max_body = integer(1, 1024 * 1024 * 1024),
    session = check.session,
    params = check.params,
    api_token = check.api_token,
    debug = check.debug,
}

-- The token request's own form fields, which params may not set.
local FORM_FIELDS = {
    grant_type = "grant_type", scope = "scope", client_id = "client_id",
    client_secret = "client_secret", thousandeyes_bearer_token = "thousandeyes_bearer_token",
}

local LOOPBACK = { localhost = true, ["::1"] = true, ["[::1]"] = true }

local function is_loopback(host)
    host = lower(host)
    return LOOPBACK[host] or match(host, "^127%.%d+%.%d+%.%d+$") ~= nil
        or match(host, "%.localhost$") ~= nil
end
_M.is_loopback = is_loopback

-- The client secret from the environment: THOUSANDEYES_CLIENT_SECRET, or
-- the contents of the file THOUSANDEYES_CLIENT_SECRET_FILE names (without
-- a trailing newline); nil when neither is set; nil and why when both are,
-- or the file cannot be read or is empty.
local function env_secret()
    local secret = getenv(_M.ENV_CLIENT_SECRET)
    if secret == "" then secret = nil end
    local path = getenv(_M.ENV_CLIENT_SECRET_FILE)
    if path == nil or path == "" then return secret end
    if secret then
        return nil, "oauth2: set " .. _M.ENV_CLIENT_SECRET .. " or " .. _M.ENV_CLIENT_SECRET_FILE
            .. ", not both"
    end
    local text, why = _M.read_secret(path, _M.ENV_CLIENT_SECRET_FILE)
    if not text then return nil, "oauth2: " .. why end
    return text
end

-- The largest secret file read: a secret is a line.
local MAX_SECRET_FILE = 65536

--- The secret a file holds on one line (its trailing newline dropped),
-- read up to 64 KiB (`path` "-": standard input), or nil and why, named
-- by `name`.  A file others may write is read, with a warning: container
-- secret mounts are often 0644, seldom 0666.
function _M.read_secret(path, name)
    local file, why
    if path == "-" then
        file = io.stdin
    else
        file, why = io.open(path, "rb")
        if not file then return nil, name .. ": cannot read " .. tostring(why) end
        local mode = core.file_mode(path)
        if mode and mode % 8 >= 2 and mode % 8 ~= 4 and mode % 8 ~= 5 then
            io.stderr:write("oauth2: warning: ", name, ": ", path, " is writable by others ",
                "(chmod o-w): anyone on this machine may replace the secret\n")
        end
    end
    local text = file:read(MAX_SECRET_FILE + 1) or ""
    if file ~= io.stdin then file:close() end
    if #text > MAX_SECRET_FILE then
        return nil, name .. ": larger than 64 KiB: that is no secret"
    end
    text = gsub(text, "\r?\n$", "")
    if text == "" or find(text, "[%z\r\n]") then
        return nil, name .. ": " .. (path == "-" and "standard input" or "the file")
            .. " must hold the secret on one line"
    end
    return text
end

local defaults = _M.defaults

-- A configuration holding the defaults (host apart: it is filled in when
-- no token_url is given), made in one constructor sized for every field a
-- configuration gets, so that filling it in never grows it: on a one-shot
-- oauth2.token, growing a table field by field cost more than the checks.
local function new_conf()
    return {
        grant_type = defaults.grant_type, auth_method = defaults.auth_method,
        timeout = defaults.timeout, connect_timeout = defaults.connect_timeout,
        retries = defaults.retries, deadline = defaults.deadline,
        backoff_base = defaults.backoff_base, backoff_max = defaults.backoff_max,
        verify = defaults.verify, allow_http = defaults.allow_http,
        max_body = defaults.max_body, user_agent = defaults.user_agent,
        -- set below or by the caller's options: sized for, not set
        host = nil, token_url = nil, url = nil, client_id = nil, client_secret = nil,
        scope = nil, ca_file = nil, no_proxy = nil, proxy = nil, params = nil,
        params_key = nil, session = nil, access_token = nil, x_tenant_id = nil,
        api_token = nil, debug = nil, trace = nil, api_url = nil,
    }
end

-- Check a URL the way libcurl will read it; the URL, or nil and why.
local function check_url(url, name, allow_http)
    local parts, why = core.parse_url(url)
    if not parts then return misuse("option '%s' is not a valid URL (%s)", name, why) end
    local scheme = lower(parts.scheme or "")
    if scheme ~= "http" and scheme ~= "https" then
        return misuse("option '%s' must be an http:// or https:// URL, got %s", name, show(url))
    end
    if not parts.host or parts.host == "" then
        return misuse("option '%s' has no host", name)
    end
    if parts.userinfo then
        return misuse("option '%s' must not embed credentials; use client_id/client_secret", name)
    end
    if scheme == "http" and not allow_http and not is_loopback(parts.host) then
        return misuse("option '%s' uses plain http:// to %s: the credentials would travel "
            .. "unencrypted (use https, or set allow_http = true)", name, parts.host)
    end
    return url
end

-- Where the credentials come from: the options, else the environment's
-- client id and secret, else (for API requests) its API token.  Sets
-- conf.client_id and conf.client_secret, or conf.api_token; or returns
-- nil and why.
local function credentials(conf, for_api)
    if conf.api_token then
        if not for_api then
            return misuse("option 'api_token' is a User API token for API requests "
                .. "(oauth2.client, oauth2.request); a token request needs client_id and "
                .. "client_secret")
        end
        if conf.client_id or conf.client_secret or conf.access_token then
            return misuse("option 'api_token' is used as it is, with no token endpoint: give "
                .. "it or client_id and client_secret, not both")
        end
        return true
    end
    if conf.client_id == nil then
        conf.client_id = getenv(_M.ENV_CLIENT_ID)
        if conf.client_id == "" then conf.client_id = nil end
    end
    if conf.client_secret == nil then
        local secret, why = env_secret()
        if why then return nil, why end
        conf.client_secret = secret
    end
    if for_api and conf.client_id == nil and conf.client_secret == nil
            and conf.access_token == nil then
        local token = getenv(_M.ENV_API_TOKEN)
        if token and token ~= "" then
            if not check.api_token(token) then
                return misuse("%s must hold a bearer token (the User API token of the "
                    .. "ThousandEyes dashboard)", _M.ENV_API_TOKEN)
            end
            conf.api_token = token
            return true
        end
    end
    if conf.client_id == nil then
        return misuse("option 'client_id' is required (or set %s)%s", _M.ENV_CLIENT_ID,
            for_api and ", or option 'api_token' (or " .. _M.ENV_API_TOKEN .. ") for a "
                .. "User API token" or "")
    end
    if conf.client_secret == nil and conf.access_token == nil then
        return misuse("option 'client_secret' is required (or set %s or %s)",
            _M.ENV_CLIENT_SECRET, _M.ENV_CLIENT_SECRET_FILE)
    end
    return true
end

--- Validate opts: the normalised configuration, or nil and a message
-- (the public functions raise it, pointing at their caller).  With
-- `for_api` (oauth2.client) a static api_token may stand in for the
-- client credentials.
function _M.validate(opts, for_api)
    if type(opts) ~= "table" then
        return misuse("options must be a table, got %s", describe(opts))
    end
    -- one pass over what was given; unknown names are reported before bad
    -- values, and of several bad values the first by name, so a message
    -- does not depend on table order
    local conf, unknown, bad = new_conf(), nil, nil
    for name, value in pairs(opts) do
        local checker = type(name) == "string" and _M.schema[name]
        if not checker then
            unknown = unknown or {}
            unknown[#unknown + 1] = tostring(name)
        else
            local v = checker(value)
            if v == nil then
                if bad == nil or name < bad then bad = name end
            else
                conf[name] = v
            end
        end
    end
    if unknown then
        sort(unknown)
        return misuse("unknown option%s '%s'", #unknown > 1 and "s" or "", concat(unknown, "', '"))
    end
    if bad then
        local value = opts[bad]
        local _, why = _M.schema[bad](value)
        if SECRET[bad] then return misuse("option '%s' %s", bad, why) end
        return misuse("option '%s' %s, got %s", bad, why, show(value))
    end

    -- credentials may come from the environment so scripts hold no secret
    local found, problem = credentials(conf, for_api)
    if not found then return nil, problem end
    local host_from_env = false
    if conf.host == nil and conf.token_url == nil then
        local host = getenv(_M.ENV_HOST)
        if host and host ~= "" then conf.host, host_from_env = host, true end
    end
    if conf.ca_file == nil then
        local ca_file = getenv(_M.ENV_CA_FILE)
        if ca_file and ca_file ~= "" then conf.ca_file = ca_file end
    end

    if conf.auth_method == "client_secret_basic" then
        if conf.access_token then
            return misuse("options 'access_token' and auth_method 'client_secret_basic' "
                .. "both set the Authorization header; use one")
        end
        if conf.client_secret == nil then
            return misuse("auth_method 'client_secret_basic' needs 'client_secret'")
        end
    end
    if conf.params then
        local names = {}
        for name, value in pairs(conf.params) do
            if FORM_FIELDS[name] then
                return misuse("option 'params' must not set '%s': the request sets it (use "
                    .. "the option of that name)", name)
            end
            names[#names + 1] = name .. "=" .. value
        end
        sort(names)
        -- in the cache key: a token for another resource is another token
        conf.params_key = concat(names, "\n")
    end
    if conf.connect_timeout > conf.timeout then conf.connect_timeout = conf.timeout end
    -- where the debug trace goes, settled once: nil when it is off
    conf.trace = trace.sink(conf)
    if conf.backoff_max < conf.backoff_base then conf.backoff_max = conf.backoff_base end

    -- the host the caller named, if any: with token_url it is still the
    -- API's origin (a token server apart from the API)
    local named_host = conf.host
    if conf.host == nil then conf.host = _M.DEFAULT_HOST end
    local api_host
    if conf.token_url then
        local url, why = check_url(conf.token_url, "token_url", conf.allow_http)
        if not url then return nil, why end
        conf.url = url
    end
    if not conf.token_url or named_host ~= nil then
        local host = gsub(conf.host, "/+$", "")
        if not find(host, "^%a[%w+.-]*://") then
            local _, why = misuse("option 'host' must be a URL starting with https://, such "
                .. "as %s, got %s", _M.DEFAULT_HOST, show(host))
            return nil, host_from_env and why .. " (from " .. _M.ENV_HOST .. ")" or why
        end
        -- the API's base with its version, as ThousandEyes' SDKs take it
        host = gsub(host, "/v7$", "")
        local url, why = check_url(host, "host", conf.allow_http)
        if not url then
            return nil, host_from_env and why .. " (from " .. _M.ENV_HOST .. ")" or why
        end
        if find(host, "[?#]") then
            return misuse("option 'host' must not carry a query or fragment")
        end
        api_host = host
        if not conf.token_url then conf.url = host .. _M.TOKEN_PATH end
    end
    -- where API requests go: the host, else the token URL's origin
    conf.api_url = api_host or _M.url_origin(conf.url)
    -- plain http is allowed without allow_http only to this machine: no
    -- proxy, which may be anywhere, may see the secret travel in clear
    if not conf.allow_http and lower(match(conf.url, "^(%a+):") or "") == "http" then
        if conf.proxy then
            return misuse("option 'proxy' would carry the client secret over plain http:// "
                .. "(use https, or set allow_http = true)")
        end
        conf.no_proxy = true
    end

    return conf
end

-- The options `rules` describes (name = { default, check }) taken from
-- opts: the values kept, or nil and a message (of several bad values the
-- first by name, so the message is stable).
local function take_rules(opts, rules)
    local values, bad, why = {}, nil, nil
    for name, rule in pairs(rules) do
        local value = opts[name]
        if value == nil then value = rule[1] end
        local kept, phrase = rule[2](value)
        if kept == nil then
            if bad == nil or name < bad then bad, why = name, phrase end
        else
            values[name] = kept
        end
    end
    if not bad then return values end
    -- a phrase from a part of its own (a store) comes after a colon
    return misuse("option '%s'%s%s", bad, why:sub(1, 1) == ":" and "" or " ", why)
end

--- The cache policy in opts (a table of the caller's options): checked,
-- its defaults filled in; or nil and a message.
function _M.policy(opts)
    return take_rules(opts, _M.POLICY)
end

--- Split a module's options three ways and check each kind: oauth2.token's
-- (validated: the configuration), the cache policy's (defaults filled in)
-- and the module's own, which `own` describes as name = { default, check },
-- check(value) returning the value kept or nil and a phrase.  The one
-- checker of oauth2.client, oauth2.openresty and the command line;
-- `for_api` as for validate.  Returns conf, policy and the own values; or
-- nil and a message.
function _M.split(opts, own, for_api)
    if type(opts) ~= "table" then
        return misuse("options must be a table, got %s", describe(opts))
    end
    local token_opts = {}
    for name, value in pairs(opts) do
        if own[name] == nil and _M.POLICY[name] == nil then token_opts[name] = value end
    end
    local values, problem = take_rules(opts, own)
    if not values then return nil, problem end
    local policy
    policy, problem = _M.policy(opts)
    if not policy then return nil, problem end
    local conf
    conf, problem = _M.validate(token_opts, for_api)
    if not conf then return nil, problem end
    return conf, policy, values
end

--- The check() of a module with options of its own (`own`, as for
-- split): it raises at its caller's line on a mistake, else returns true.
-- Nothing is fetched or connected.
function _M.checker(own)
    return function(opts)
        local conf, why = _M.split(opts, own, true)
        if not conf then error(why, 2) end
        return true
    end
end

--- Two copies of opts: the options `names` lists (a set), and the rest.
function _M.take(opts, names)
    local taken, rest = {}, {}
    for name, value in pairs(opts) do
        if names[name] then taken[name] = value else rest[name] = value end
    end
    return taken, rest
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- Standard base64 (RFC 4648), for the Basic credential as it travels.
local function base64(text)
    local out = {}
    for i = 1, #text, 3 do
        local a, b, c = text:byte(i, i + 2)
        local n = a * 65536 + (b or 0) * 256 + (c or 0)
        local chars = {}
        for k = 1, 4 do
            local index = floor(n / 64 ^ (4 - k)) % 64
            chars[k] = B64:sub(index + 1, index + 1)
        end
        if not b then chars[3] = "=" end
        if not c then chars[4] = "=" end
        out[#out + 1] = concat(chars)
    end
    return concat(out)
end

local function percent_decode(text)
    return (gsub(text, "%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end))
end

-- The secrets of a configuration, as they are and in the encoded forms in
-- which they travel: what errors must never show.  Made only on failure.
function _M.secrets(conf)
    local secrets = {}
    local function add(value)
        if value and value ~= "" then
            secrets[#secrets + 1] = value
            local escaped = core.escape(value)
            if escaped ~= value then secrets[#secrets + 1] = escaped end
        end
    end
    for _, name in ipairs(_M.SECRET_OPTIONS) do add(conf[name]) end
    if conf.auth_method == "client_secret_basic" and conf.client_secret then
        -- the Authorization header a server may echo back
        secrets[#secrets + 1] = base64(core.escape(conf.client_id) .. ":"
            .. core.escape(conf.client_secret))
    end
    -- a proxy's user and password, encoded and decoded, and the Basic
    -- credential libcurl makes of them (a proxy may echo it back)
    local userinfo = conf.proxy and match(conf.proxy, "^[%w+.-]+://([^/]*)@")
    if userinfo then
        add(userinfo)
        for part in userinfo:gmatch("[^:]+") do
            add(part)
            add(percent_decode(part))
        end
        local user, password = match(userinfo, "^([^:]*):(.*)$")
        if user then
            add(base64(percent_decode(user) .. ":" .. percent_decode(password)))
        end
    end
    return secrets
end

_M.describe = describe

-- "https://host[:port]" of a URL already checked by validate, for display.
function _M.url_origin(url)
    local parts = core.parse_url(url)
    if not parts then return "?" end
    local origin = parts.scheme .. "://" .. parts.host
    local default = parts.scheme == "https" and "443" or "80"
    if parts.port and parts.port ~= default then origin = origin .. ":" .. parts.port end
    return origin
end

return _M
