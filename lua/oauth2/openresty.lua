-- oauth2.openresty: one token for all nginx workers, never blocking one.
--
--   lua_shared_dict oauth2_tokens 1m;
--   init_by_lua_block {
--       require("oauth2.openresty").configure("thousandeyes", {
--           dict = "oauth2_tokens", scope = "tests:read",   -- credentials from env
--       })
--   }
--   access_by_lua_block { require("oauth2.openresty").authorize("thousandeyes") }
--
-- The token lives in a lua_shared_dict that all workers read: the value is
-- the ready-made "Bearer ..." header, the dict's flags hold the refresh
-- point and the dict's expiry is the token's (margin deducted), so the hot
-- path is one dict read.  Only one worker fetches at a time (a lock key
-- added with a timeout, so a worker that dies mid-fetch cannot wedge the
-- others), the others wait on the dict with ngx.sleep.  Past the refresh
-- point a timer refreshes while requests go on with the current token.  A
-- failed fetch is remembered in the dict for `cooldown` seconds so a dead
-- token endpoint is not hammered.  The exchange itself is the C core's,
-- stepped without blocking (oauth2.transport).

local options = require "oauth2.options"
local exchange = require "oauth2.exchange"
local errors = require "oauth2.error"
local transport = require "oauth2.transport"
local core = require "oauth2.core"
local cjson = require "cjson.safe"

local ngx = ngx
local type, pairs, error, pcall, tostring, setmetatable =
      type, pairs, error, pcall, tostring, setmetatable
local floor, ceil, max, min, random = math.floor, math.ceil, math.max, math.min, math.random
local format, concat = string.format, table.concat

local _M = { _VERSION = "0.1.0" }

-- Options of this module, beside oauth2.token's: name -> default.
_M.defaults = {
    dict = false,            -- name of the lua_shared_dict (required)
    margin = false,          -- as oauth2.client: the larger of 30 s and 10%
    refresh_ratio = 0.8,
    refresh_jitter = 0.05,
    default_lifetime = 300,
    cooldown = 5,            -- seconds a failed fetch is remembered
    wait_timeout = false,    -- seconds a request waits for another worker's
                             -- fetch; false: the deadline plus one second
    status = 503,            -- what authorize() answers when it has no token
}

local function fail(level, fmt, ...)
    error("oauth2: " .. fmt:format(...), level + 1)
end

local Token = {}
Token.__index = Token

-- Seconds since the epoch, freshly read (ngx.now() is cached per loop turn).
local function wall_now()
    ngx.update_time()
    return ngx.now()
end

-- An error remembered in the dict, as a table again.
local function decode_error(text)
    local fields = cjson.decode(text)
    if type(fields) ~= "table" or type(fields.kind) ~= "string" then
        fields = { kind = "network", message = "the last fetch failed" }
    end
    fields.cached = true
    return errors.new(fields)
end

-- An error as the dict keeps it: the fields that describe it, each text
-- bounded, so a failure always fits and never evicts a valid token.
local function encode_error(err)
    local text = exchange.server_text
    local retry_after = err.retry_after
    if type(retry_after) ~= "number" or retry_after ~= retry_after then retry_after = nil end
    return cjson.encode {
        kind = err.kind, status = err.status, code = text(err.code),
        message = text(err.message), detail = text(err.detail),
        retryable = err.retryable, attempts = err.attempts,
        retry_after = retry_after and min(retry_after, 86400),
    } or '{"kind":"network","message":"the last fetch failed"}'
end

-- Fetch now, holding the lock; store the outcome in the dict for everyone.
local function fetch_now(self)
    local dict = self.dict
    local policy = self.policy
    local sent_at = wall_now()
    -- a connection of the fetch's own: light threads never share one
    local ok, token, err = pcall(exchange.fetch, self.conf)
    if not ok then
        dict:delete(self.lock_key)
        error(token, 0)
    end
    if token then
        local lifetime = token.expires_in or policy.default_lifetime
        local margin = min(policy.margin or max(30, 0.1 * lifetime), lifetime / 2)
        local expire_after = sent_at + lifetime - margin
        local share = policy.refresh_ratio * (1 - policy.refresh_jitter * random())
        local refresh_at = min(sent_at + lifetime * share, expire_after)
        local header = "Bearer " .. token.access_token
        local ttl = expire_after - wall_now()
        if ttl > 0.001 then
            local stored, why = dict:set(self.key, header, ttl, floor(refresh_at))
            if not stored then
                ngx.log(ngx.ERR, "oauth2: cannot store the token in lua_shared_dict '",
                    self.dict_name, "': ", why)
            end
        end
        dict:delete(self.fail_key)
        dict:delete(self.lock_key)
        return header
    end
    local stored, why = dict:set(self.fail_key, encode_error(err), policy.cooldown)
    if not stored then
        ngx.log(ngx.ERR, "oauth2: cannot remember the failure in lua_shared_dict '",
            self.dict_name, "': ", why)
    end
    dict:delete(self.lock_key)
    return nil, err
end

-- Refresh in a timer, if no worker is fetching and none failed just now.
local function refresh_behind(self)
    local dict = self.dict
    if dict:get(self.fail_key) then return end
    if not dict:add(self.lock_key, ngx.worker.pid(), self.lock_ttl) then return end
    local ok, why = ngx.timer.at(0, function(premature)
        if premature then
            dict:delete(self.lock_key)
            return
        end
        local _, err = fetch_now(self)
        if err then ngx.log(ngx.WARN, "oauth2: refresh ahead failed: ", tostring(err)) end
    end)
    if not ok then
        dict:delete(self.lock_key)
        ngx.log(ngx.WARN, "oauth2: cannot start the refresh timer: ", why)
    end
end

-- No token in the dict: fetch it, or wait for the worker that does.
local function fetch_or_wait(self)
    local dict = self.dict
    local failure = dict:get(self.fail_key)
    if failure then return nil, decode_error(failure) end
    local phase = ngx.get_phase()
    if phase ~= "init" and not transport.can_yield() then
        -- checked before taking the lock: this refusal is no fetch failure
        return nil, errors.new { kind = "config", message = format("no token in lua_shared_dict "
            .. "'%s' yet, and nginx's %s phase can neither fetch nor wait (it cannot yield)",
            self.dict_name, phase) }
    end
    local added, why = dict:add(self.lock_key, ngx.worker.pid(), self.lock_ttl)
    if added then return fetch_now(self) end
    if why ~= "exists" then
        return nil, errors.new { kind = "config",
            message = format("lua_shared_dict '%s': %s", self.dict_name, tostring(why)) }
    end
    if phase == "init" then
        return nil, errors.new { kind = "config",
            message = "another process is fetching the token; init cannot wait for it" }
    end
    local waited, pause = 0, 0.002
    while waited < self.wait_timeout do
        ngx.sleep(pause)
        waited = waited + pause
        pause = min(pause * 2, 0.05)
        local header = dict:get(self.key)
        if header then return header end
        failure = dict:get(self.fail_key)
        if failure then return nil, decode_error(failure) end
        -- the fetcher is gone without an outcome (its lock expired): take over
        if dict:add(self.lock_key, ngx.worker.pid(), self.lock_ttl) then
            return fetch_now(self)
        end
    end
    return nil, errors.new { kind = "timeout", retryable = true, message = format(
        "waited %g s for another worker to fetch the token", self.wait_timeout) }
end

--- "Bearer <access_token>" for the upstream, or nil and an error.
-- The hot path is one shared-dict read.
function Token:header()
    local header, refresh_at = self.dict:get(self.key)
    if header then
        if ngx.now() >= refresh_at then refresh_behind(self) end
        return header
    end
    return fetch_or_wait(self)
end

--- Set the Authorization request header, or end the request with
-- `status` (503) and a JSON body when no token can be had.  The error
-- goes to error.log (without secrets); the client sees no detail of it.
function Token:authorize()
    local header, err = self:header()
    if header then
        ngx.req.set_header("Authorization", header)
        return true
    end
    ngx.log(ngx.ERR, "oauth2: no access token for the upstream: ", tostring(err))
    if err.retry_after then ngx.header["Retry-After"] = ceil(err.retry_after) end
    ngx.status = self.policy.status
    ngx.header["Content-Type"] = "application/json"
    ngx.header["Cache-Control"] = "no-store"
    ngx.say('{"error":"token_unavailable","message":"no access token for the upstream"}')
    return ngx.exit(self.policy.status)
end

--- Drop the token for all workers (the API answered 401 with it).
function Token:invalidate()
    self.dict:delete(self.key)
end

--- Fetch in a timer now, so the first request finds a token (init_worker).
function Token:warm()
    if self.dict:get(self.key) then return true end
    return ngx.timer.at(0, function(premature)
        if premature or self.dict:get(self.key) then return end
        if self.dict:add(self.lock_key, ngx.worker.pid(), self.lock_ttl) then
            local _, err = fetch_now(self)
            if err then ngx.log(ngx.WARN, "oauth2: warm-up fetch failed: ", tostring(err)) end
        end
    end)
end

function Token:__tostring()
    return format("oauth2.openresty host=%s client_id=%s dict=%s",
        options.url_origin(self.conf.url), self.conf.client_id, self.dict_name)
end

--- A shared token; opts are oauth2.token's options plus this module's.
function _M.new(opts, level)
    level = (level or 1) + 1
    if type(ngx) ~= "table" or not ngx.shared then
        fail(level, "oauth2.openresty needs OpenResty (ngx_http_lua_module)")
    end
    if type(opts) ~= "table" then
        fail(level, "options must be a table, got %s", options.describe(opts))
    end
    local token_opts, policy = {}, {}
    for name, value in pairs(opts) do
        if _M.defaults[name] == nil then token_opts[name] = value end
    end
    for name, default in pairs(_M.defaults) do
        local value = opts[name]
        if value == nil then value = default end
        policy[name] = value
    end
    if type(policy.dict) ~= "string" then
        fail(level, "option 'dict' must name a lua_shared_dict")
    end
    local dict = ngx.shared[policy.dict]
    if not dict then
        fail(level, "option 'dict': there is no 'lua_shared_dict %s' in nginx.conf", policy.dict)
    end
    for _, name in pairs { "refresh_ratio", "refresh_jitter", "default_lifetime", "cooldown",
                           "status" } do
        if type(policy[name]) ~= "number" or policy[name] < 0 then
            fail(level, "option '%s' must be a non-negative number", name)
        end
    end
    for _, name in pairs { "margin", "wait_timeout" } do
        if policy[name] and (type(policy[name]) ~= "number" or policy[name] < 0) then
            fail(level, "option '%s' must be a non-negative number", name)
        end
    end
    local conf = options.validate(token_opts, level)
    local key = "oauth2:" .. core.sha256(concat({
        conf.url, conf.client_id, conf.grant_type, conf.auth_method, conf.scope or "",
        conf.x_tenant_id or "", conf.client_secret or "", conf.access_token or "",
        conf.thousandeyes_bearer_token or "",
    }, "\n"))
    return setmetatable({
        conf = conf,
        policy = policy,
        dict = dict,
        dict_name = policy.dict,
        key = key,
        lock_key = key .. ":lock",
        fail_key = key .. ":fail",
        -- a lock outlives any fetch (deadline), then frees itself
        lock_ttl = conf.deadline + 5,
        wait_timeout = policy.wait_timeout or conf.deadline + 1,
    }, Token)
end

local registry = {}

--- Create the shared token `name` (in init_by_lua) and return it.
function _M.configure(name, opts)
    registry[name] = _M.new(opts, 2)
    return registry[name]
end

--- The shared token configured as `name`.
function _M.get(name)
    local token = registry[name]
    if not token then
        error("oauth2: no shared token '" .. tostring(name) .. "' was configured", 2)
    end
    return token
end

--- One-liner for access_by_lua: set Authorization for the upstream.
function _M.authorize(name)
    return _M.get(name):authorize()
end

return _M
