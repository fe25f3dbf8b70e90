-- oauth2.transport: drive the C core's exchanges, never blocking an event loop.
--
-- Inside OpenResty, where the running phase may yield, an exchange is
-- started, then stepped without waiting, the light thread yielding with
-- ngx.sleep in between; elsewhere the core's blocking request runs
-- libcurl's own loop.  The same feature test picks the clock and the sleep
-- used for retries and backoff, and where log lines go.

local core = require "oauth2.core"

local setmetatable, error, type, pcall, select, rawget =
      setmetatable, error, type, pcall, select, rawget
local min = math.min
local ngx = ngx -- luacheck: ignore (nil outside OpenResty)

local _M = { _VERSION = core._VERSION }

-- Phases of ngx_lua in which a light thread may yield.
local YIELDABLE = {
    rewrite = true, access = true, content = true, timer = true,
    ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
}

-- Whether the caller runs in an nginx phase that may yield.
local function can_yield()
    return ngx ~= nil and type(ngx.get_phase) == "function" and YIELDABLE[ngx.get_phase()] == true
end
_M.can_yield = can_yield

-- Seconds on a monotonic clock.
_M.now = core.now

--- A line in nginx's error log at `level` (ngx.WARN, ngx.NOTICE...), or
-- on stderr outside nginx.
function _M.log(level, text)
    if ngx and ngx.log then
        ngx.log(ngx[level], text)
    else
        io.stderr:write(text, "\n")
    end
end

-- Wait, yielding to nginx where it may, blocking elsewhere.
function _M.sleep(seconds)
    if seconds <= 0 then return end
    if can_yield() then return ngx.sleep(seconds) end
    return core.sleep(seconds)
end

-- pcall, in a form a function may yield through (a light thread's
-- sleep, a coroutine scheduler's) where the Lua's own pcall cannot (PUC
-- Lua 5.1): the function runs as a coroutine of its own whose yields are
-- passed on.  (Told by the version, not by a probe: a coroutine resumed
-- while this module loads would yield across require in OpenResty.)
_M.pcall = pcall
if _VERSION == "Lua 5.1" and not rawget(_G, "jit") then
    local co_create, co_resume, co_yield, co_status =
          coroutine.create, coroutine.resume, coroutine.yield, coroutine.status
    local unpack = table.unpack or unpack -- luacheck: ignore (5.1)
    local function pack(...) return { n = select("#", ...), ... } end
    _M.pcall = function(fn, ...)
        local co = co_create(fn)
        local result = pack(co_resume(co, ...))
        while result[1] and co_status(co) == "suspended" do
            result = pack(co_resume(co, co_yield(unpack(result, 2, result.n))))
        end
        return unpack(result, 1, result.n)
    end
end

-- Seconds past an exchange's timeout after which its session is taken
-- over, should its owner never step it again.
local BUSY_GRACE = 1

local Session = {}
Session.__index = Session

-- One exchange: the response table, or nil and the core's error table.
-- `req` is a prepared request (core.prepare) or a request table; the
-- timeouts, when given, replace its own.
function Session:request(req, timeout, connect_timeout)
    local session = self.core
    if session == nil then error("oauth2: use of a closed session", 2) end
    -- outside nginx: the core's blocking request (libcurl's own loop)
    if ngx == nil then return session:request(req, timeout, connect_timeout) end
    if session:busy() then
        if core.now() < self.busy_until then
            -- a concurrent user (another light thread) holds it
            return nil, { kind = "config", message = "session is busy with another exchange" }
        end
        -- its owner never came back for it (a killed light thread, an
        -- aborted request): the exchange is past its timeout, take over
        session:cancel()
    end
    if not can_yield() then
        if ngx.get_phase() == "init" then
            return session:request(req, timeout, connect_timeout)
        end
        -- blocking here would stall every request of this nginx worker
        return nil, { kind = "config", message = "cannot fetch a token in nginx's "
            .. ngx.get_phase() .. " phase: it cannot yield (fetch in rewrite, access, "
            .. "content or timer phases, or in init_by_lua)" }
    end
    local ok, err = session:start(req, timeout, connect_timeout)
    if not ok then return nil, err end
    -- past its timeout (a prepared request's own is not readable here)
    timeout = timeout or type(req) == "table" and req.timeout or core.MAX_SECONDS
    self.busy_until = core.now() + timeout + BUSY_GRACE
    -- poll without waiting, yield between polls, back off to 20 ms
    local pause = 0.001
    while true do
        local res, step_err = session:step(0)
        if res ~= false then return res, step_err end
        ngx.sleep(pause)
        pause = min(pause * 2, 0.02)
    end
end

-- A header of the last response, or nil (see the C core's session:header).
function Session:header(name)
    local session = self.core
    if session == nil then return nil end
    return session:header(name)
end

-- Every header of the last response, or nil (session:headers).
function Session:headers()
    local session = self.core
    if session == nil then return nil end
    return session:headers()
end

-- Close the connection; idempotent.
function Session:close()
    if self.core then
        self.core:close()
        self.core = nil
    end
end
Session.__close = Session.close

function Session:__tostring()
    return self.core and "oauth2.session (open)" or "oauth2.session (closed)"
end

-- A new session: one reusable connection to the token endpoint.
function _M.session()
    return setmetatable({ core = core.session(), busy_until = 0 }, Session)
end

return _M
