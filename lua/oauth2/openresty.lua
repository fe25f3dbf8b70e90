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
-- An nginx adapter over oauth2.cache, the engine oauth2.client runs on
-- too.  The node's first layer is its lua_shared_dict: a sealed record
-- there (oauth2.store.shm: the node's record and its lock, taken over at
-- once from a dead worker) is what the engine reads and writes; beside
-- it, for the requests of every worker, the ready-made "Bearer ..."
-- header, its flags the refresh point in whole seconds (the exact point
-- is a key of its own, read only in that last second) and its expiry the
-- token's, so the hot path is one dict read.
--
-- The engine runs in an ngx.timer (inline in init_by_lua, where blocking
-- is fine), never in a request: requests without a token wait for it at
-- most `wait_timeout` (woken by a semaphore in the worker that runs it,
-- by a short poll in the others), then get 503 while it goes on.  Its
-- fetch is the fleet's store (`store`, Redis: one token for many nodes)
-- or the endpoint, in an nginx thread pool when one is named, else
-- stepped without blocking (oauth2.transport).
-- A failure is remembered for every worker for its cool-down, so a dead
-- or rate-limited endpoint is not hammered.  Timing rules are
-- oauth2.policy's, sharing rules oauth2.cache's.

local options = require "oauth2.options"
local exchange = require "oauth2.exchange"
local bearer = require "oauth2.bearer"
local errors = require "oauth2.error"
local policy_rules = require "oauth2.policy"
local transport = require "oauth2.transport"
local stores = require "oauth2.store"
local shm = require "oauth2.store.shm"
local cache = require "oauth2.cache"
local core = require "oauth2.core"
local cjson = require "cjson.safe"

local ngx = ngx
local type, pairs, error, pcall, tostring, setmetatable, tonumber =
      type, pairs, error, pcall, tostring, setmetatable, tonumber
local floor, ceil, max, min = math.floor, math.ceil, math.max, math.min
local format = string.format

local _M = { _VERSION = core._VERSION }

local checks = options.checks

-- A fleet store: false, or oauth2.store.redis's from a redis:// URL or
-- its table (parsed here, reached on first use).
local function check_fleet(value)
    if value == false then return false end
    local fleet, problem = stores.redis(value)
    if not fleet then return nil, ": " .. problem end
    return fleet
end

-- A name nginx.conf declares (a dict, a thread pool), or false when
-- `optional`.
local function nginx_name(what, optional)
    return function(value)
        if optional and value == false then return false end
        if type(value) ~= "string" or value == "" then return nil, "must name " .. what end
        return value
    end
end

-- Options of this module beside oauth2.token's and oauth2.policy's:
-- name = { default, check } (oauth2.options.split).
local OWN = {
    -- the lua_shared_dict (required)
    dict = { false, nginx_name("a lua_shared_dict") },
    -- seconds a request without a token waits for a fetch
    wait_timeout = { 3, checks.range(0, 3600, " of seconds") },
    -- what authorize() answers when it has no token
    status = { 503, function(value)
        if not checks.integer(400, 599)(value) then
            return nil, "must be an HTTP error status (400 to 599)"
        end
        return value
    end },
    -- an nginx thread_pool to run fetches in
    thread_pool = { false, nginx_name("an nginx thread_pool", true) },
    -- a fleet store: "redis://..." or oauth2.store.redis's table
    store = { false, check_fleet },
    -- function(event, info): fetch, failure, invalidation
    on_event = { false, checks.hook },
}

-- Seconds a node's lock outlives the longest a fetch may take (a wait
-- for the fleet's lease, then the fetch): it frees itself should its
-- owner stop without dying (a dead owner's is taken over at once).
local LOCK_SLACK = 5

-- A misuse message; configure() raises it at its caller's line.
local function misuse(fmt, ...)
    return nil, "oauth2: " .. fmt:format(...)
end

local Token = {}
Token.__index = Token

-- Seconds since the epoch, freshly read (ngx.now() is cached per loop turn).
local function wall_now()
    ngx.update_time()
    return ngx.now()
end

-- ---------------------------------------------------------------- failures

-- A failure as the dict keeps it: its plain fields (texts bounded, so it
-- always fits and never evicts a valid token) and when it ends.
local function encode_error(err, until_at)
    local fields = errors.plain(err)
    fields.until_at, fields.retry_after = until_at, nil
    return cjson.encode(fields) or '{"kind":"network"}'
end

-- A failure from the dict as an error again, its Retry-After counted down.
local function decode_error(text)
    local fields = cjson.decode(text)
    if type(fields) ~= "table" or type(fields.kind) ~= "string" then
        fields = { kind = "network", message = "the last fetch failed" }
    end
    if type(fields.until_at) == "number" then
        fields.retry_after = max(0, fields.until_at - ngx.now())
    end
    fields.until_at = nil
    fields.cached = true
    return errors.new(fields)
end

-- ------------------------------------------------------------ the node

-- Add one to a counter in the dict, shared by every worker.
local function count(self, name)
    self.counters[name] = self.counters[name] + 1
    self.dict:incr(self.count_key .. name, 1, 0)
end

-- Log a failure of a store once per cool-down per worker: it names the
-- store (never its password) and what it answered.
local function warn_store(self, store, why)
    if store == self.fleet then count(self, "fleet_errors") end
    local now = ngx.now()
    if now < self.store_quiet_until then return end
    self.store_quiet_until = now + self.policy.cooldown
    ngx.log(ngx.ERR, "oauth2: ", tostring(store), " failed (", tostring(why),
        "): this node serves the token it holds and fetches alone when it must")
end

-- Tell the on_event hook, if any; it runs where it is called (a timer,
-- a header filter: it must not yield) and its errors are not ours.
local function emit(self, event, info)
    local hook = self.on_event
    if hook then pcall(hook, event, info) end
end

--- The exchange, run in a thread pool's own Lua state: blocking there is
-- the point.  Plain tables go in and come out.
function _M.fetch_in_thread(conf)
    local runtime = exchange.runtime
    runtime.sleep = core.sleep
    local session = core.session()
    local blocking = {
        request = function(_, req, ...) return session:request(req, ...) end,
        header = function(_, name) return session:header(name) end,
    }
    local ok, token, err = pcall(function()
        return exchange.fetch(conf, assert(exchange.build_request(conf)), blocking)
    end)
    session:close()
    if not ok then return nil, { kind = "config", message = tostring(token) } end
    if token then
        return { access_token = token.access_token, token_type = token.token_type,
                 expires_in = token.expires_in, scope = token.scope }
    end
    return nil, errors.plain(err)
end

-- One exchange with the token endpoint, within `deadline` seconds (or the
-- configured one): in the thread pool when one is named, else stepped
-- here.  Counted and told.  The token, or nil and an error.
local function run_exchange(self, deadline)
    local token, err
    if self.thread_pool and ngx.get_phase() ~= "init" then
        local ok
        ok, token, err = ngx.run_worker_thread(self.thread_pool, "oauth2.openresty",
            "fetch_in_thread", self.thread_conf)
        if not ok then
            token, err = nil, { kind = "config",
                message = "thread pool '" .. self.thread_pool .. "': " .. tostring(token) }
        end
        if not token then err = errors.new(err, options.secrets(self.conf)) end
    else
        -- a connection of the fetch's own: light threads never share one
        token, err = exchange.fetch(self.conf, self.request, nil, deadline)
    end
    if token then
        count(self, "fetches")
        emit(self, "fetch", { expires_in = token.expires_in, fleet = self.fleet and true })
        return token
    end
    count(self, "failures")
    emit(self, "failure", { kind = err.kind, status = err.status, code = err.code })
    return nil, err
end

-- The token from the fleet's store (oauth2.cache), or a fetch under the
-- fleet's lease: what cache.obtain returns, for the node's engine.
local function from_fleet(self, held)
    local record, err, how = cache.obtain(self.ctx, held)
    if record and how == "store" then count(self, "fleet_hits") end
    return record, err, how
end

-- Store a token's header and refresh point for the hot path of every
-- worker; false when the dict cannot hold it.
local function store_header(self, record)
    local dict = self.dict
    local ttl = record.expire_at - wall_now()
    if ttl <= 0.001 then return true end
    local header = bearer.header(record.access_token)
    -- the exact refresh point first: the token's flags send readers to it
    local ok, why = dict:set(self.at_key, record.refresh_at, ttl)
    if ok and self.fleet then
        -- for a time without the fleet's store: the point from which this
        -- node fetches alone (spread over the token's last part)
        ok, why = dict:set(self.alone_key,
            policy_rules.alone_at(record.refresh_at, record.expire_at), ttl)
    end
    if ok then ok, why = dict:set(self.key, header, ttl, floor(record.refresh_at)) end
    if ok then
        self.fallback = nil
        return true
    end
    -- this worker keeps it at least, so it does not fetch on every request
    self.fallback = { header = header, fetched_at = record.fetched_at,
                      refresh_at = record.refresh_at, expire_at = record.expire_at }
    if not self.warned_size then
        self.warned_size = true
        ngx.log(ngx.ERR, "oauth2: lua_shared_dict '", self.dict_name, "' cannot hold the ",
            "token (", tostring(why), "): make it larger (at least 32k, plus 4k per ",
            "configured token); each worker now keeps its own copy and fetches its own")
    end
    return false
end

-- Remember a failure (or a cool-down) for requests of every worker, for
-- err.retry_after seconds (the cool-down by default).
local function remember(self, err)
    local wait = err.retry_after or self.policy.cooldown
    if wait <= 0 then return end
    local stored, why = self.dict:set(self.fail_key, encode_error(err, wall_now() + wait), wait)
    if not stored then
        ngx.log(ngx.ERR, "oauth2: cannot remember the failure in lua_shared_dict '",
            self.dict_name, "': ", why)
    end
end

-- What this node holds, for oauth2.cache: its valid token's expiry and
-- the point from which it fetches alone (wall times), or nil.
local function held_of(self)
    local dict = self.dict
    local ttl = dict:get(self.key) and dict:ttl(self.key)
    if not ttl or ttl <= 0 then return nil end
    local now = wall_now()
    return { expire_at = now + ttl, alone_at = dict:get(self.alone_key) or now + ttl,
             deadline = min(self.policy.refresh_timeout, ttl) }
end

-- Whether another worker rejected the record's token after this run
-- began (its read of the node's record may come before the purge).
local function rejected_meanwhile(self, record, known)
    local rejected = self.dict:get(self.rejected_key)
    return rejected ~= nil and rejected ~= known
        and stores.token_id(self.secret, record.access_token) == rejected
end

-- One run of the node's engine: the node's record (another worker's
-- fetch), or a fetch under the node's lock, from the fleet's store or
-- the endpoint (oauth2.cache); its outcome for the requests of every
-- worker, and this worker's waiters woken.  The header, or nil and the
-- error.
local function run_node(self)
    local dict, node = self.dict, self.node_ctx
    node.rejected = dict:get(self.rejected_key)
    if self.ctx then self.ctx.rejected = node.rejected end
    local ok, record, err = pcall(cache.obtain, node, held_of(self))
    if not ok then
        record, err = nil, errors.new { kind = "config",
            message = "the fetch raised: " .. tostring(record) }
    end
    local header
    if record and rejected_meanwhile(self, record, node.rejected) then
        -- not stored: the next run reads past it and fetches
        err = nil
    elseif record then
        header = bearer.header(record.access_token)
        store_header(self, record)
        local cooling = cache.cooling(record, wall_now())
        if cooling then remember(self, cooling) else dict:delete(self.fail_key) end
    elseif record == false then
        -- the fleet's store is away or another fetches: this node serves
        -- its token and asks again in a while, not on every request
        dict:set(self.defer_key, true, err)
        err = nil
    else
        self.last_error = err
        remember(self, err)
    end
    self.fetching = false
    local semaphore = self.semaphore_pid == ngx.worker.pid() and self.semaphore
    if semaphore and semaphore:count() < 0 then semaphore:post(-semaphore:count()) end
    return header, err
end

-- Whether the node's lock is held by a live process (a gone owner's is
-- freed).
local function lock_held(self)
    return shm.lock_held(self.dict, self.lock_key)
end

-- Whether the exact refresh point of the current token has come.
local function refresh_due(self)
    local at = self.dict:get(self.at_key)
    return at == nil or ngx.now() >= at
end

-- Run the node's engine in a timer, unless this worker runs it, another
-- holds the node's lock, or a failure or a deferral is remembered.
local function fetch_behind(self)
    local dict = self.dict
    if self.fetching or dict:get(self.fail_key) or dict:get(self.defer_key)
            or lock_held(self) then
        return
    end
    self.fetching = true
    -- requests log the failures of a fetch for a token; this, a refresh's
    local refreshing = dict:get(self.key) ~= nil
    local ok, why = ngx.timer.at(0, function(premature)
        if premature then
            self.fetching = false
            return
        end
        local _, err = run_node(self)
        if err and refreshing then
            ngx.log(ngx.WARN, "oauth2: refresh ahead failed: ", tostring(err))
        end
    end)
    if not ok then
        self.fetching = false
        ngx.log(ngx.ERR, "oauth2: cannot start the fetch timer: ", why)
    end
end

-- ---------------------------------------------------------------- waiting

-- This worker's semaphore for requests waiting on its own fetch, or nil
-- where lua-resty-core has none.
local function semaphore_of(self)
    local pid = ngx.worker.pid()
    if self.semaphore_pid ~= pid then
        local ok, sema = pcall(require, "ngx.semaphore")
        self.semaphore = ok and sema.new(0) or false
        self.semaphore_pid = pid
    end
    return self.semaphore or nil
end

-- No token in the dict: start the fetch and wait for it, at most
-- wait_timeout.  Returns the header, or nil and an error.
local function fetch_and_wait(self)
    local dict = self.dict
    local fallback = self.fallback
    if fallback and ngx.now() < fallback.expire_at then
        if ngx.now() >= fallback.refresh_at then fetch_behind(self) end
        return fallback.header
    end
    local failure = dict:get(self.fail_key)
    if failure then return nil, decode_error(failure) end
    local phase = ngx.get_phase()
    if phase == "init" then
        -- before serving, in the master: fetch inline (blocking is fine),
        -- but never wait there for a worker's fetch (a reload's old ones)
        if lock_held(self) then
            return nil, errors.new { kind = "config",
                message = "another process is fetching the token; init cannot wait for it" }
        end
        local token, err = run_node(self)
        if not token then return nil, err end
        return dict:get(self.key) or (self.fallback and self.fallback.header)
    end
    if not transport.can_yield() then
        -- checked before taking the lock: this refusal is no fetch failure
        return nil, errors.new { kind = "config", message = format("no token in lua_shared_dict "
            .. "'%s' yet, and nginx's %s phase can neither fetch nor wait (it cannot yield)",
            self.dict_name, phase) }
    end
    fetch_behind(self)
    count(self, "waits")

    local started = wall_now()
    local deadline = started + self.wait_timeout
    local pause = 0.002
    while true do
        local left = deadline - wall_now()
        if left < 0.001 then break end
        local semaphore = self.fetching and semaphore_of(self)
        if semaphore then
            -- this worker fetches: woken the moment it is done
            semaphore:wait(left)
        else
            -- another worker fetches: a short poll of the dict
            ngx.sleep(min(pause, left))
            pause = min(pause * 2, 0.01)
        end
        local header = dict:get(self.key)
        if header then return header end
        if self.fallback then return self.fallback.header end
        failure = dict:get(self.fail_key)
        if failure then return nil, decode_error(failure) end
        -- the fetcher is gone without an outcome: fetch ourselves
        fetch_behind(self)
    end
    count(self, "wait_timeouts")
    return nil, errors.new { kind = "timeout", retryable = true, retry_after = 1,
        message = format("no token yet: waited %g s for the fetch in progress "
            .. "(it goes on in the background)", self.wait_timeout) }
end

-- ------------------------------------------------------ the fleet's store

-- One look, for the whole node, every look_every seconds of the fleet's
-- store (4 s by default): when the fleet's store holds another
-- fresh token (another node replaced one it saw rejected), take it; when
-- it says the dict's token was rejected, drop it.
local function look(premature, self)
    if premature then return end
    local dict = self.dict
    local header = dict:get(self.key)
    if not header or not dict:add(self.look_key, true, self.fleet.look_every) then return end
    self.ctx.rejected = dict:get(self.rejected_key)
    local record, why = cache.look(self.ctx)
    if why then self.ctx.store_failed(why) end
    if not record or dict:get(self.key) ~= header then return end
    if cache.fresh(record, wall_now()) and bearer.header(record.access_token) ~= header then
        -- the node's record takes it too, unless it holds a newer one
        store_header(self, cache.publish(self.node_ctx, record))
        count(self, "fleet_hits")
    elseif record.rejected
            and stores.token_id(self.secret, (header:gsub("^Bearer ", ""))) == record.rejected then
        dict:delete(self.key)
        dict:delete(self.at_key)
        -- the node's record drops its copy at its next read
        dict:set(self.rejected_key, record.rejected, max(60, self.policy.invalidate_cooldown))
        self.fallback = nil
        count(self, "fleet_drops")
    end
end

-- Start this worker's looks at the fleet's store, once per worker (the
-- object comes from the master, which starts none: each worker's copy
-- starts its own on first use).
local function start_looking(self)
    if ngx.get_phase() == "init" then return end
    self.looking = true
    local ok, why = ngx.timer.every(1, look, self)
    if not ok then ngx.log(ngx.ERR, "oauth2: cannot start the fleet store timer: ", why) end
end

-- ------------------------------------------------------------- the object

--- "Bearer <access_token>" for the upstream, or nil and an error.
-- The hot path is one shared-dict read.
function Token:header()
    local header, refresh_floor = self.dict:get(self.key)
    if self.fleet and not self.looking then start_looking(self) end
    if header then
        if ngx.now() >= refresh_floor and refresh_due(self) then fetch_behind(self) end
        return header
    end
    return fetch_and_wait(self)
end

-- Log a failure to give a request a token, once per cool-down per worker,
-- with the number of failures not logged since.
local function log_failure(self, err)
    local now = ngx.now()
    if now < self.log_quiet_until then
        self.log_suppressed = self.log_suppressed + 1
        return
    end
    local more = self.log_suppressed
    self.log_suppressed = 0
    self.log_quiet_until = now + self.policy.cooldown
    ngx.log(ngx.ERR, "oauth2: no access token for the upstream: ", tostring(err),
        more > 0 and format(" (and %d more requests since the last message)", more) or "")
end

--- Set the Authorization request header, or end the request with
-- `status` (503) and a JSON body when no token can be had.  The error
-- goes to error.log (without secrets, at most once per cool-down per
-- worker); the client sees no detail of it.
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

--- Drop the token for all workers (the API answered 401 with it), and
-- with a fleet store for every node (oauth2.cache.invalidate on both).  With
-- `rejected` (the Authorization value that was refused), only if it is
-- still the stored one, so a token fetched a moment ago survives.  A
-- rejected token is never served again; the next fetch waits until
-- invalidate_cooldown has passed since the rejected token's fetch, for
-- the whole fleet, so a storm of 401s makes one token request.  Returns
-- whether the token was dropped.
function Token:invalidate(rejected)
    local dict = self.dict
    local fallback = self.fallback
    local current = dict:get(self.key) or (fallback and fallback.header)
    if current == nil or rejected ~= nil and current ~= rejected then return false end
    local token_id = stores.token_id(self.secret, (current:gsub("^Bearer ", "")))
    local cooldown = self.policy.invalidate_cooldown
    -- one worker of all drops it (many 401s at once in many workers): the
    -- first to mark it
    local first, why = dict:add(self.rejected_key .. ":" .. token_id, true, max(60, cooldown))
    if not first and why == "exists" then return false end
    local record = self.node:get(self.fleet_key, self.secret)
    local fetched_at = record and type(record.access_token) == "string"
        and stores.token_id(self.secret, record.access_token) == token_id and record.fetched_at
        or fallback and fallback.fetched_at or wall_now()
    -- rejected first: a worker that finds the token gone then skips it
    -- in the node's record (see rejected_meanwhile)
    dict:set(self.rejected_key, token_id, max(60, cooldown))
    dict:delete(self.key)
    dict:delete(self.at_key)
    self.fallback = nil
    count(self, "invalidations")
    emit(self, "invalidation", { cooldown = cooldown })
    local not_before = fetched_at + cooldown
    if not_before > wall_now() then
        remember(self, errors.new { kind = "http", status = 401, code = "invalidated",
            retryable = true, retry_after = not_before - wall_now(),
            message = format("the token was invalidated; a new one is fetched no sooner "
                .. "than %g s after the last", cooldown) })
    end
    -- the node's record drops it (a shared dict never yields)
    cache.invalidate(self.node_ctx, token_id, not_before)
    if self.fleet then
        -- the fleet's store in a timer: this may run where cosockets cannot
        ngx.timer.at(0, function(premature)
            if not premature then cache.invalidate(self.ctx, token_id, not_before) end
        end)
    end
    return true
end

--- For header_filter_by_lua: when the upstream answered 401, drop the
-- token this request carried (see invalidate).  Cannot yield, needs not.
function Token:purge_on_401()
    if ngx.status ~= 401 then return false end
    local sent = ngx.req.get_headers()["authorization"]
    if type(sent) ~= "string" then return false end
    return self:invalidate(sent)
end

--- Fetch in a timer now, so the first request finds a token (init_worker).
function Token:warm()
    if self.dict:get(self.key) then return true end
    return ngx.timer.at(0, function(premature)
        if premature or self.dict:get(self.key) or self.fetching then return end
        self.fetching = true
        local _, err = run_node(self)
        if err then ngx.log(ngx.WARN, "oauth2: warm-up fetch failed: ", tostring(err)) end
    end)
end

--- Counters of this worker (fetches, failures, waits: requests that had
-- to wait for a fetch, wait_timeouts: those that gave up), last_error;
-- `shared`: the same counters over all workers; and what the dict knows:
-- has_token, refresh_at, failing, and fetching_pid (the lock's owner);
-- with a fleet store, `store`: its counters in this worker.
function Token:stats()
    local dict = self.dict
    local stats = { shared = {} }
    for name, value in pairs(self.counters) do
        stats[name] = value
        stats.shared[name] = dict:get(self.count_key .. name) or 0
    end
    stats.last_error = self.last_error
    stats.has_token = dict:get(self.key) ~= nil
    stats.refresh_at = dict:get(self.at_key)
    stats.failing = dict:get(self.fail_key) ~= nil
    local owner = dict:get(self.lock_key)
    stats.fetching_pid = owner and tonumber(owner:match("^(%d+) "))
    -- this worker's use of the fleet's store: hits, misses, lease_wins,
    -- lease_losses, errors
    stats.store = self.fleet and self.fleet:stats() or nil
    return stats
end

function Token:__tostring()
    return format("oauth2.openresty host=%s client_id=%s dict=%s",
        options.url_origin(self.conf.url), self.conf.client_id, self.dict_name)
end

--- Check a configuration without nginx: oauth2.token's options, the cache
-- policy and this module's (a dict is not looked up).  Raises at the
-- caller's line on a mistake; returns true.  For a check command.
function _M.check(opts)
    local conf, why = options.split(opts, OWN)
    if not conf then error(why, 2) end
    return true
end

--- A shared token; opts are oauth2.token's options plus this module's and
-- the cache policy's.  Returns it, or nil and a message for bad options.
function _M.new(opts)
    if type(ngx) ~= "table" or not ngx.shared then
        return misuse("oauth2.openresty needs OpenResty (ngx_http_lua_module)")
    end
    local conf, policy, own = options.split(opts, OWN)
    if not conf then return nil, policy end
    local dict = ngx.shared[own.dict]
    if not dict then
        return misuse("option 'dict': there is no 'lua_shared_dict %s' in nginx.conf", own.dict)
    end
    if own.thread_pool and type(ngx.run_worker_thread) ~= "function" then
        return misuse("option 'thread_pool': this nginx lua module has no "
            .. "ngx.run_worker_thread")
    end
    local thread_conf
    if own.thread_pool then
        -- what a thread pool's Lua state gets: plain values only (and
        -- params, a table of strings); no function (a clock, the debug
        -- trace's sink) crosses into it
        thread_conf = {}
        for name, value in pairs(conf) do
            local kind = type(value)
            if name == "params"
                    or kind ~= "table" and kind ~= "userdata" and kind ~= "function" then
                thread_conf[name] = value
            end
        end
    end
    local fleet_key = policy_rules.cache_key(conf)
    local key = "oauth2:" .. fleet_key
    local request, problem = exchange.build_request(conf)
    if not request then return nil, problem end
    local lock_ttl = cache.lease_for(conf) + conf.deadline + LOCK_SLACK
    local node = shm.new(own.dict, lock_ttl)
    local self = setmetatable({
        conf = conf,
        request = request,
        fleet = own.store or nil,
        node = node,          -- the node's store: its record and its lock
        on_event = own.on_event or nil,
        fleet_key = fleet_key,
        secret = conf.client_secret or conf.access_token,
        thread_conf = thread_conf,
        thread_pool = own.thread_pool,
        policy = policy,
        status = own.status,
        dict = dict,
        dict_name = own.dict,
        -- what requests read: the header (its flags: the refresh point in
        -- whole seconds), the exact refresh point, a failure remembered
        key = key,
        at_key = key .. ":at",
        fail_key = key .. ":fail",
        count_key = key .. ":n:",
        rejected_key = key .. ":rejected",
        look_key = key .. ":look",
        alone_key = key .. ":alone",
        defer_key = key .. ":defer",
        lock_key = node.prefix .. fleet_key .. ":lock",
        looking = false,     -- this worker looks at the fleet's store
        wait_timeout = own.wait_timeout,
        semaphore = false, -- this worker's, made on first use (never across fork)
        semaphore_pid = 0,
        fetching = false,
        fallback = nil,
        warned_size = false,
        log_quiet_until = 0,
        store_quiet_until = 0,
        log_suppressed = 0,
        last_error = nil,
        counters = { fetches = 0, failures = 0, waits = 0, wait_timeouts = 0,
                     invalidations = 0, fleet_hits = 0, fleet_errors = 0, fleet_drops = 0 },
    }, Token)
    -- oauth2.cache's contexts: the node's record in the dict, whose fetch
    -- is the fleet's record (if any) or the endpoint
    local function context(store, lease, deadline, exchange_hook)
        return { store = store, key = fleet_key, secret = self.secret, policy = policy,
                 lease = lease, deadline = deadline, failures = 0,
                 wall = wall_now, sleep = transport.sleep, exchange = exchange_hook,
                 store_failed = function(why) warn_store(self, store, why) end }
    end
    local function endpoint(deadline) return run_exchange(self, deadline) end
    self.ctx = own.store and context(own.store, cache.lease_for(conf), conf.deadline, endpoint)
    self.node_ctx = context(node, lock_ttl, lock_ttl, own.store
        and function(_, held) return from_fleet(self, held) end or endpoint)
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

--- One-liner for header_filter_by_lua: drop the token on an upstream 401.
function _M.purge_on_401(name)
    return _M.get(name):purge_on_401()
end

return _M
