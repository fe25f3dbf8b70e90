-- oauth2.retry: the library's one retry loop.
--
-- oauth2.exchange (the token endpoint) and oauth2.api (the API) run their
-- attempts through run(): each attempt cut to what is left of the
-- deadline, full-jitter exponential backoff between attempts, never less
-- than the wait a server asked for, and no wait that would pass the
-- deadline.  One table says which statuses and which transport failures
-- are worth another attempt, and one reader says how long a server asked
-- to wait.

local core = require "oauth2.core"
local transport = require "oauth2.transport"

local type, tonumber, ipairs, format = type, tonumber, ipairs, string.format
local max, min = math.max, math.min
local time = os.time

local _M = {
    _VERSION = core._VERSION,
    -- the clock, sleep and random source of retries; specs may replace them
    runtime = { now = transport.now, sleep = transport.sleep, random = core.random },
}

-- Statuses worth another attempt: rate limited or a transient server fault.
_M.STATUS = { [429] = true, [500] = true, [502] = true, [503] = true, [504] = true }

-- Transport failures worth another attempt (TLS and config ones are not).
_M.KIND = { network = true, timeout = true }

-- Whether no_proxy (NO_PROXY) names `host`, as libcurl reads it: "*", or
-- a name the host is or ends in (".example.com" and "example.com" alike).
local function no_proxy(host)
    local list = os.getenv("no_proxy") or os.getenv("NO_PROXY") or ""
    host = host:lower()
    for name in list:gmatch("[^,%s]+") do
        name = name:lower():gsub("^%.", "")
        if name == "*" or host == name or host:sub(-#name - 1) == "." .. name then
            return true
        end
    end
    return false
end

-- The proxy a request to `url` goes through, and where it was named; nil
-- for none: the option, else the variables libcurl reads.
local function proxy_of(conf, url)
    if conf.proxy then return conf.proxy, "option 'proxy'" end
    local host = (url or ""):match("^%a+://([^/:?#]+)") or (url or ""):match("^%a+://%[([^%]]+)%]")
    if host and no_proxy(host) then return nil end
    local scheme = (url or ""):match("^(%a+):") or "https"
    for _, name in ipairs { scheme:lower() .. "_proxy", scheme:upper() .. "_PROXY",
                            "all_proxy", "ALL_PROXY" } do
        local value = os.getenv(name)
        if value and value ~= "" and name ~= "HTTP_PROXY" then return value, name end
    end
end

--- A failure of the transport (no HTTP answer) for a request to `url`:
-- whether another attempt is worth it, and, through a proxy, the proxy
-- named (never its credentials): one that asks for credentials (407) is
-- not retried, it would only ask again.
function _M.transport_error(err, conf, url)
    err.retryable = _M.KIND[err.kind] == true
    local proxy, named = proxy_of(conf, url)
    if not proxy or err.kind ~= "network" then return err end
    local where = proxy:gsub("//[^@/]*@", "//")
    if tostring(err.message):find("response 407", 1, true) then
        err.code, err.retryable = "proxy_auth", false
        err.message = format("the proxy %s (%s) asks for credentials (407 Proxy "
            .. "Authentication Required): give them in its URL, "
            .. "http://user:password@host:port", where, named)
    else
        err.code = "proxy"
        err.message = tostring(err.message) .. format(" (through the proxy %s, from %s)", where,
            named)
    end
    return err
end

-- The largest number a header may give (a timestamp far in the future).
local MAX_NUMBER = 1e12
-- The longest wait a server may ask for: a day.
local MAX_WAIT = core.MAX_SECONDS
-- The shortest attempt worth starting, in seconds.
local MIN_ATTEMPT = 0.001

-- A wait in seconds from the server, finite and at most a day; nil if absurd.
local function bounded_wait(value)
    if type(value) ~= "number" or value ~= value or value < 0 then return nil end
    return min(value, MAX_WAIT)
end

--- A header's value as a finite number, or nil ("1e400" reads as
-- infinity: kept finite, waits are capped later).
function _M.number(value)
    value = tonumber(value or "")
    if value == nil or value ~= value then return nil end
    return max(-MAX_NUMBER, min(value, MAX_NUMBER))
end

-- The API's rate-limit header families: the organization's, and the
-- stricter ones of instant tests and of template deployments.
local FAMILIES = {
    "x-organization-rate-limit", "x-instant-test-rate-limit", "x-template-deploy-rate-limit",
}

--- One family's X-...-Rate-Limit-{Limit,Remaining,Reset} headers through
-- `header(name)` (a session's or a response's lookup), the organization's
-- by default: {limit, remaining, reset}, or nil when none came.
function _M.rate_limit(header, family)
    local number = _M.number
    family = family or FAMILIES[1]
    local limit = {
        limit = number(header(family .. "-limit")),
        remaining = number(header(family .. "-remaining")),
        reset = number(header(family .. "-reset")),
    }
    if limit.limit or limit.remaining or limit.reset then return limit end
    return nil
end

--- The reset of the family that refused a request (a 429): the family
-- with nothing remaining, else the latest reset any family gave; nil
-- when none gave one.
function _M.limit_reset(header)
    local latest
    for _, family in ipairs(FAMILIES) do
        local limit = _M.rate_limit(header, family)
        if limit and limit.reset then
            if limit.remaining and limit.remaining <= 0 then return limit.reset end
            if not latest or limit.reset > latest then latest = limit.reset end
        end
    end
    return latest
end

--- Seconds until a rate limit's reset: the header is a UTC timestamp;
-- servers that send a delta are taken at their word.  Nil without one.
function _M.until_reset(reset)
    if not reset then return nil end
    if reset > 1e9 then reset = reset - time() end
    return bounded_wait(max(0, reset))
end

--- Seconds a server asked to wait: Retry-After (libcurl reads both its
-- forms, seconds and an HTTP date, into a response's retry_after), else
-- the rate limit's reset; nil when it said neither.
function _M.server_wait(retry_after, reset)
    if retry_after then return bounded_wait(retry_after) end
    return _M.until_reset(reset)
end

--- Full-jitter exponential backoff before attempt `attempt + 1`, for a
-- plan with backoff_base and backoff_max.
function _M.backoff(plan, attempt)
    local cap = min(plan.backoff_max, plan.backoff_base * 2 ^ (attempt - 1))
    return _M.runtime.random() * cap
end

-- A note on the last error of a loop that stopped for its deadline.
local function note(err, text, ...)
    if err then err.message = err.message .. format(text, ...) end
end

--- Attempts of `try` within `deadline` seconds.  `plan` gives timeout and
-- connect_timeout (per attempt), retries (after the first attempt),
-- backoff_base and backoff_max.  try(attempt, timeout, connect_timeout)
-- returns what this attempt gave (a value, or nil and an error table),
-- then whether it is worth another attempt and the seconds the server
-- asked to wait (or nil).  on_wait(wait, value, err), when given, hears of
-- every wait before it starts.  Returns the last attempt's value and
-- error, and the number of attempts made.
function _M.run(plan, deadline, try, on_wait)
    local runtime = _M.runtime
    local now = runtime.now
    local deadline_at = now() + deadline
    local attempt, value, err = 0, nil, nil
    while true do
        attempt = attempt + 1
        local remaining = attempt == 1 and deadline or deadline_at - now()
        if attempt > 1 and remaining < MIN_ATTEMPT then
            -- a sleep overshot: no attempt without time left (a zero
            -- timeout would mean none at all to libcurl)
            note(err, " (not retried: the %g s deadline passed)", deadline)
            return value, err, attempt - 1
        end
        local timeout = min(plan.timeout, remaining)
        local retry, asked
        value, err, retry, asked = try(attempt, timeout, min(plan.connect_timeout, timeout))
        if err then err.attempts = attempt end
        if not retry or attempt > plan.retries then return value, err, attempt end
        local wait = _M.backoff(plan, attempt)
        if asked and asked > wait then wait = asked end
        if now() + wait >= deadline_at then
            note(err, " (not retried: waiting %.1f s would pass the %g s deadline)", wait,
                deadline)
            return value, err, attempt
        end
        if on_wait then on_wait(wait, value, err) end
        runtime.sleep(wait)
    end
end

return _M
