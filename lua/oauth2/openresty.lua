-- oauth2.openresty: one token for all nginx workers, never blocking one.
--
--   lua_shared_dict oauth2_tokens 1m;
--   init_by_lua_block {   -- the credentials come from the environment
--       require("oauth2.openresty").configure("thousandeyes", { dict = "oauth2_tokens" })
--   }
--   access_by_lua_block { require("oauth2.openresty").authorize("thousandeyes") }
--
-- oauth2.cache configured for nginx: its first layer is the dict
-- (oauth2.store.shm, whose view is the ready-made header: a request is one
-- dict read), its shared layer the fleet's `store`, its source the token
-- endpoint (in a thread pool when one is named).  Fetches run in timers; a
-- request without a token waits at most `wait_timeout`, then gets 503.

local options = require "oauth2.options"
local exchange = require "oauth2.exchange"
local bearer = require "oauth2.bearer"
local errors = require "oauth2.error"
local policy_rules = require "oauth2.policy"
local transport = require "oauth2.transport"
local stores = require "oauth2.store"
local cache = require "oauth2.cache"
local core = require "oauth2.core"
local static = require "oauth2.static"

local ngx = ngx
local type, pairs, error, pcall, tostring, setmetatable =
      type, pairs, error, pcall, tostring, setmetatable
local ceil, max, min = math.ceil, math.max, math.min
local format = string.format

local _M = { _VERSION = core._VERSION }

local checks = options.checks

-- A name nginx.conf declares (a dict, a thread pool), or false when
-- `optional`.
local function nginx_name(what, optional)
    return function(value)
        if optional and value == false then return false end
        if type(value) ~= "string" or value == "" then return nil, "must name " .. what end
        return value
    end
end

-- This module's options (oauth2.options.split): name = { default, check }.
local OWN = {
    dict = { false, nginx_name("a lua_shared_dict") },
    -- seconds a request without a token waits for a fetch
    wait_timeout = { 3, checks.range(0, 3600, " of seconds") },
    -- what authorize() answers when it has no token
    status = { 503, function(value)
        if checks.integer(400, 599)(value) then return value end
        return nil, "must be an HTTP error status (400 to 599)"
    end },
    thread_pool = { false, nginx_name("an nginx thread_pool", true) },
    -- the fleet's store below the dict
    store = { false, function(value)
        if value == false then return false end
        return stores.option(value, { redis = true, phrase = 'a redis:// URL (or its table)' })
    end },
    on_event = { false, checks.callable("(event, info)") },
}

local Token = {}
Token.__index = Token

local wall_now = require("oauth2.store.shm").now -- (ngx.now(), freshly read)

-- Add to a counter of this worker and of the dict (every worker); the
-- engine's counters go by this module's names.
local RENAMED = { hits = "fleet_hits", drops = "fleet_drops", store_errors = "fleet_errors" }
local function count(self, name, n)
    name = RENAMED[name] or name
    self.counters[name] = self.counters[name] + n
    self.dict:incr(self.count_key .. name, n, 0)
end

-- No token in the dict: wait for a fetch, at most wait_timeout.  The
-- header, or nil and an error.
local function fetch_and_wait(self)
    local engine = self.engine
    local failure = engine:failure()
    if failure then return nil, failure end
    local phase = ngx.get_phase()
    if phase == "init" then
        -- in the master before serving: fetch inline (blocking is fine),
        -- but never wait there for a worker's fetch (a reload's old ones)
        if self.node:locked(self.key) then
            return nil, errors.new { kind = "config",
                message = "another process is fetching the token; init cannot wait for it" }
        end
        local _, err = engine:run()
        if err then return nil, err end
        return (self.node:peek(self.key))
    end
    if not transport.can_yield() then
        -- said before any fetch: this refusal is no fetch failure
        return nil, errors.new { kind = "config", message = format("no token in lua_shared_dict "
            .. "'%s' yet, and nginx's %s phase can neither fetch nor wait (it cannot yield)",
            self.dict_name, phase) }
    end
    count(self, "waits", 1)
    local header, err, timed_out = engine:wait_for(self.wait_timeout)
    if timed_out then count(self, "wait_timeouts", 1) end
    return header, err
end

-- One look at the fleet's store for the whole node every look_every
-- seconds (oauth2.cache's Engine:look).
local function look(premature, self)
    if premature or not self.node:peek(self.key) then return end
    if not self.dict:add(self.look_key, true, self.fleet.look_every) then return end
    self.engine:look()
end

-- What each worker's copy of the object (made in the master) starts at
-- its first request: the semaphore that requests waiting on its own fetch
-- sleep on (none where lua-resty-core has none), its looks at the fleet.
local function start_worker(self)
    self.started = true
    local ok, semaphore = pcall(require, "ngx.semaphore")
    self.semaphore = ok and semaphore.new(0) or nil
    if not self.fleet then return end
    local started, why = ngx.timer.every(1, look, self)
    if not started then ngx.log(ngx.ERR, "oauth2: cannot start the fleet store timer: ", why) end
end

--- "Bearer <access_token>" for the upstream, or nil and an error.  The
-- hot path is one shared-dict read.
function Token:header()
    local header, next_floor = self.node:peek(self.key)
    if not self.started and ngx.get_phase() ~= "init" then start_worker(self) end
    if header then
        if ngx.now() >= next_floor and self.node:due(self.key) then self.engine:refresh() end
        return header
    end
    return fetch_and_wait(self)
end

-- Log a failure to give a request a token once per cool-down per worker,
-- with the number of failures not logged since.
local function log_failure(self, err)
    local now = ngx.now()
    if now < self.log_quiet_until then
        self.log_suppressed = self.log_suppressed + 1
        return
    end
    local more = self.log_suppressed
    self.log_suppressed, self.log_quiet_until = 0, now + self.policy.cooldown
    ngx.log(ngx.ERR, "oauth2: no access token for the upstream: ", tostring(err),
        more > 0 and format(" (and %d more requests since the last message)", more) or "")
end

--- Set the Authorization request header, or end the request with
-- `status` (503), Retry-After and a JSON body without detail; the error
-- goes to error.log.
function Token:authorize()
    local header, err = self:header()
    if header then
        ngx.req.set_header("Authorization", header)
        return true
    end
    log_failure(self, err)
    if err.retry_after then
        ngx.header["Retry-After"] = format("%d",
            max(1, ceil(min(err.retry_after, core.MAX_SECONDS))))
    end
    ngx.status = self.status
    ngx.header["Content-Type"] = "application/json"
    ngx.header["Cache-Control"] = "no-store"
    ngx.say('{"error":"token_unavailable","message":"no access token for the upstream"}')
    return ngx.exit(self.status)
end

--- Drop the token for every worker and node (the API answered 401 with
-- it); with `rejected` (the Authorization value refused), only while it
-- is still the stored one.  The next fetch waits until
-- invalidate_cooldown has passed since the rejected token's fetch, so a
-- storm of 401s makes one token request.  Whether it was dropped.
function Token:invalidate(rejected)
    local token = rejected ~= nil and bearer.token_of(rejected)
    if token == nil then return false end
    return self.engine:invalidate(token or nil)
end

--- For header_filter_by_lua: on an upstream 401, drop the token this
-- request carried.  Never yields.
function Token:purge_on_401()
    if ngx.status ~= 401 then return false end
    local sent = ngx.req.get_headers()["authorization"]
    if type(sent) ~= "string" then return false end
    return self:invalidate(sent)
end

--- Fetch in a timer now, so the first request finds a token (init_worker).
function Token:warm()
    if self.node:peek(self.key) then return true end
    return self.engine:refresh()
end

--- Counters of this worker and, in `shared`, of all workers (fetches,
-- refreshes, retries, failures, waits, wait_timeouts, invalidations,
-- fleet_hits, fleet_errors, fleet_drops, budget_waits); last_error; what
-- the dict knows (has_token, refresh_at, failing, fetching_pid); `store`,
-- the fleet store's own.
function Token:stats()
    local node, key = self.node, self.key
    local stats = { shared = {}, last_error = self.engine.last_error,
        has_token = node:peek(key) ~= nil, refresh_at = node:next_at(key),
        failing = self.engine:failure() ~= nil, fetching_pid = node:lock_owner(key),
        store = self.fleet and self.fleet:stats() or nil }
    for name, value in pairs(self.counters) do
        stats[name] = value
        stats.shared[name] = self.dict:get(self.count_key .. name) or 0
    end
    return stats
end

function Token:__tostring()
    return format("oauth2.openresty host=%s client_id=%s dict=%s",
        options.url_origin(self.conf.url), self.conf.client_id, self.dict_name)
end

--- Check a configuration without nginx (a dict is not looked up): raises
-- at the caller's line on a mistake, else returns true.
_M.check = options.checker(OWN)

local function timer(fn) return ngx.timer.at(0, fn) end

--- A shared token; opts are oauth2.token's options plus this module's and
-- the cache policy's.  Returns it, or nil and a message for bad options.
function _M.new(opts)
    if type(ngx) ~= "table" or not ngx.shared then
        return nil, "oauth2: oauth2.openresty needs OpenResty (ngx_http_lua_module)"
    end
    local conf, policy, own = options.split(opts, OWN, true)
    if not conf then return nil, policy end
    if conf.api_token then return static.nginx(conf) end
    -- a node's lock outlives the longest a fetch may take (a wait for the
    -- fleet's lease, then the fetch) when its owner stops without dying
    local lock_ttl = cache.lease_for(conf) + conf.deadline + 5
    local node = stores.shm(own.dict, lock_ttl, bearer.header)
    if not node then
        return nil, format("oauth2: option 'dict': there is no 'lua_shared_dict %s' in "
            .. "nginx.conf", own.dict)
    end
    if own.thread_pool and type(ngx.run_worker_thread) ~= "function" then
        return nil, "oauth2: option 'thread_pool': this nginx lua module has no "
            .. "ngx.run_worker_thread"
    end
    local key = policy_rules.cache_key(conf)
    local request, problem = exchange.build_request(conf)
    if not request then return nil, problem end
    local thread_conf = own.thread_pool and exchange.plain(conf)
    local self = setmetatable({
        conf = conf, policy = policy, key = key,
        node = node,          -- the first layer: the node's record, lock and view
        fleet = own.store or nil,
        status = own.status, wait_timeout = own.wait_timeout,
        dict = node.dict, dict_name = own.dict,
        count_key = "oauth2:" .. key .. ":n:", look_key = "oauth2:" .. key .. ":look",
        started = false,      -- this worker's semaphore and looks
        log_quiet_until = 0, log_suppressed = 0,
        counters = { fetches = 0, refreshes = 0, retries = 0, failures = 0, waits = 0,
                     wait_timeouts = 0, invalidations = 0, fleet_hits = 0, fleet_errors = 0,
                     fleet_drops = 0, budget_waits = 0 },
    }, Token)
    self.engine = cache.new {
        -- one exchange: in the thread pool when one is named (not in the
        -- master), else stepped here on a connection of its own
        source = function(deadline)
            if thread_conf and ngx.get_phase() ~= "init" then
                return exchange.in_pool(own.thread_pool, conf, thread_conf)
            end
            return exchange.fetch(conf, request, nil, deadline)
        end,
        conf = conf, policy = policy,
        first = node, shared = own.store or nil, key = key,
        clock = wall_now, wall = wall_now,
        first_lease = lock_ttl, first_pace = { 0.002, 0.01 },
        -- a request waiting on this worker's fetch is woken by it; one
        -- waiting on another worker's polls the dict
        first_wait = function(pause, left)
            local semaphore = left and self.engine.running and self.semaphore
            if semaphore then semaphore:wait(left) else ngx.sleep(pause) end
            return true
        end,
        schedule = timer,
        wake = function()
            local semaphore = self.semaphore
            if semaphore and semaphore:count() < 0 then semaphore:post(-semaphore:count()) end
        end,
        -- the fleet's store in a timer: invalidate() may run where
        -- cosockets cannot (a header filter)
        spread = function(fn)
            timer(function(premature) if not premature then fn() end end)
        end,
        log = transport.log, place = "node", on_event = own.on_event or nil,
        count = function(name, n) count(self, name, n) end,
    }
    return self
end

local registry = {}

--- Create the shared token `name` (in init_by_lua) and return it; raises
-- on bad options, at the caller's line.
function _M.configure(name, opts)
    local token, why = _M.new(opts)
    if not token then error(why, 2) end
    registry[name] = token
    return token
end

--- The shared token configured as `name`.
function _M.get(name)
    return registry[name]
        or error("oauth2: no shared token '" .. tostring(name) .. "' was configured", 2)
end

--- The one-liners: set Authorization for the upstream (access_by_lua);
-- drop the token on an upstream 401 (header_filter_by_lua).
function _M.authorize(name) return _M.get(name):authorize() end
function _M.purge_on_401(name) return _M.get(name):purge_on_401() end

return _M
