-- oauth2.trace: the debug trace of requests, one line each.
--
-- On with the option `debug = true` (or a function that takes each line),
-- or for every request of the process with OAUTH2_DEBUG=1 in the
-- environment.  A line says the method, the URL (its origin and path:
-- the query is left out, as it may carry anything), the outcome, the
-- time taken and the attempt; a wait before the next attempt gets a line
-- of its own.  The line is scrubbed of the caller's secrets and the
-- bearer token sent before it is written, like an error.
--
--   oauth2: POST https://api.thousandeyes.com/v7/oauth2/token -> 200 in 0.084 s (attempt 1)
--   oauth2: GET https://api.thousandeyes.com/v7/tests -> 503 in 0.012 s (attempt 1)
--   oauth2: waiting 0.41 s before attempt 2 of GET https://api.thousandeyes.com/v7/tests

local core = require "oauth2.core"
local errors = require "oauth2.error"
local transport = require "oauth2.transport"

local type, tostring, pcall, setmetatable = type, tostring, pcall, setmetatable
local format = string.format
local match = string.match

local _M = { _VERSION = core._VERSION }

local ENV = os.getenv("OAUTH2_DEBUG")
-- whether the environment turns the trace on for every request
_M.from_env = ENV ~= nil and ENV ~= "" and ENV ~= "0"

-- The default sink: stderr, or nginx's error log (at notice level).
local function write(line)
    transport.log("NOTICE", line)
end

--- The sink of a configuration's trace: a function taking a line, or nil
-- when the trace is off (option debug, else OAUTH2_DEBUG).
function _M.sink(conf)
    local debug = conf.debug
    if debug == nil then debug = _M.from_env end
    if not debug then return nil end
    if type(debug) == "function" then return debug end
    return write
end

-- The URL as a trace shows it: no userinfo, no query, no fragment.
local function shown(url)
    url = match(url, "^[^?#]*")
    return (url:gsub("^(%a[%w+.-]*://)[^/@]*@", "%1"))
end

-- Hand a line to the sink, scrubbed; an error the sink raises is not the
-- caller's.
local function emit(sink, secrets, line)
    pcall(sink, errors.scrub_text(line, secrets))
end

-- One attempt: `res` (a response with status) or `err` (no answer).
local function attempt_line(sink, secrets, method, url, res, err, seconds, attempt)
    local outcome
    if res then
        outcome = tostring(res.status)
    else
        outcome = format("%s error", tostring(err and err.kind or "unknown"))
    end
    emit(sink, secrets, format("oauth2: %s %s -> %s in %.3f s (attempt %d)", method,
        shown(url), outcome, seconds, attempt))
end

-- A wait before the next attempt.
local function wait_line(sink, secrets, method, url, seconds, next_attempt, why)
    emit(sink, secrets, format("oauth2: waiting %.2f s before attempt %d of %s %s%s", seconds,
        next_attempt, method, shown(url), why and " (" .. why .. ")" or ""))
end

local Watched = {}
Watched.__index = Watched

function Watched:request(req, timeout, connect_timeout)
    local started = transport.now()
    local res, err = self.session:request(req, timeout, connect_timeout)
    self.attempts = self.attempts + 1
    attempt_line(self.sink, self.secrets, self.method, self.url or req.url, res, err,
        transport.now() - started, self.attempts)
    return res, err
end

function Watched:header(name)
    return self.session:header(name)
end

function Watched:headers()
    return self.session:headers()
end

--- `session` watched: each request through it, and each wait told to
-- watched.on_wait(wait, res, err) by the retry loop, gets a line.  Only
-- made when the trace is on: an untraced call pays nothing.  `url` may be
-- nil when each request names its own.
function _M.watch(sink, secrets, method, url, session)
    local watched = setmetatable({ sink = sink, secrets = secrets, method = method, url = url,
        session = session, attempts = 0 }, Watched)
    watched.on_wait = function(wait, res, err)
        local why = res and res.status and "HTTP " .. res.status
            or err and (err.status and "HTTP " .. err.status or err.kind)
        wait_line(sink, secrets, method, url, wait, watched.attempts + 1, why)
    end
    return watched
end

return _M
