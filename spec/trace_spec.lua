-- The debug trace (option debug, OAUTH2_DEBUG): a line per attempt and
-- per wait, for the token endpoint and the API, never a secret.

local fake = require "server"
local oauth2 = require "oauth2"
local shell = require "shell"

local SECRET = "sentinel-Secret-trace-91c3"
local BEARER = "sentinel-Bearer-trace-4a07"

describe("the debug trace", function()
    local server, lines

    setup(function()
        server = fake.start()
    end)
    teardown(function()
        if server then server:stop() end
    end)
    before_each(function()
        server:reset { clients = { ["trace-id"] = SECRET } }
        lines = {}
    end)

    local function sink(line) lines[#lines + 1] = line end

    -- no line shows a secret, the token the endpoint gave or the query
    local function assert_clean(token)
        for _, line in ipairs(lines) do
            assert.is_nil(line:find(SECRET, 1, true), line)
            assert.is_nil(line:find(BEARER, 1, true), line)
            if token then assert.is_nil(line:find(token, 1, true), line) end
            assert.is_nil(line:find("aid=", 1, true), line)
        end
    end

    it("says each token request's attempt, its outcome and time, and each wait", function()
        local runtime, real_sleep = oauth2.runtime, oauth2.runtime.sleep
        runtime.sleep = function() end
        finally(function() runtime.sleep = real_sleep end)
        server:control { script = { { status = 503 } } }
        local token = assert(oauth2.token { host = server.http_url, client_id = "trace-id",
            client_secret = SECRET, thousandeyes_bearer_token = BEARER, debug = sink })
        local url = server.http_url .. "/v7/oauth2/token"
        assert.equals(3, #lines, table.concat(lines, "\n"))
        assert.matches("^oauth2: POST " .. url:gsub("%p", "%%%0")
            .. " %-> 503 in %d+%.%d%d%d s %(attempt 1%)$", lines[1])
        assert.matches("^oauth2: waiting %d+%.%d%d s before attempt 2 of POST .* %(HTTP 503%)$",
            lines[2])
        assert.matches("%-> 200 in %d+%.%d%d%d s %(attempt 2%)$", lines[3])
        assert_clean(token.access_token)
    end)

    it("says a transport failure by its kind", function()
        local ok = oauth2.token { token_url = "http://127.0.0.1:1/v7/oauth2/token",
            client_id = "trace-id", client_secret = SECRET, retries = 0, debug = sink }
        assert.is_nil(ok)
        assert.equals(1, #lines)
        assert.matches("%-> network error in", lines[1])
        assert_clean()
    end)

    it("says each API request without its query, and the retries", function()
        local runtime, real_sleep = oauth2.runtime, oauth2.runtime.sleep
        runtime.sleep = function() end
        local now = require("oauth2.core").now
        local client = oauth2.client { host = server.http_url, client_id = "trace-id",
            client_secret = SECRET, clock = function() return now() end, debug = sink }
        finally(function()
            runtime.sleep = real_sleep
            client:close()
        end)
        server:control { api_script = { { status = 503 } } }
        local res = assert(client:request("GET", "/v7/tests", { query = { aid = "77" } }))
        assert.equals(200, res.status)
        local api = server.http_url .. "/v7/tests"
        -- the token request, then the API's two attempts and the wait between
        assert.equals(4, #lines, table.concat(lines, "\n"))
        assert.matches("^oauth2: POST .*/v7/oauth2/token %-> 200", lines[1])
        assert.equals(1, select(2, lines[2]:gsub("GET " .. api:gsub("%p", "%%%0")
            .. " %-> 503 in", "")))
        assert.matches("^oauth2: waiting .* before attempt 2 of GET .* %(HTTP 503%)$", lines[3])
        assert.matches("^oauth2: GET .* %-> 200 in .* %(attempt 2%)$", lines[4])
        assert_clean(client:token().access_token)
    end)

    it("scrubs every secret from its lines, even one in the URL", function()
        -- a secret that is also a path segment of the token URL
        local secret = "sentinel-path-secret-5e21"
        server:reset { clients = { ["trace-id"] = secret } }
        local token = oauth2.token { host = server.http_url .. "/" .. secret,
            client_id = "trace-id", client_secret = secret, retries = 0, debug = sink }
        assert.is_nil(token)
        assert.equals(1, #lines)
        assert.matches("/%[redacted%]/v7/oauth2/token %-> 404", lines[1])
        assert.is_nil(lines[1]:find(secret, 1, true))
    end)

    it("costs nothing when off: no watched session, no secrets list", function()
        local trace, options = require "oauth2.trace", require "oauth2.options"
        local real_watch, real_secrets = trace.watch, options.secrets
        local watched, listed = 0, 0
        trace.watch = function(...)
            watched = watched + 1
            return real_watch(...)
        end
        options.secrets = function(...)
            listed = listed + 1
            return real_secrets(...)
        end
        local now = require("oauth2.core").now
        local client = oauth2.client { host = server.http_url, client_id = "trace-id",
            client_secret = SECRET, clock = function() return now() end }
        finally(function()
            trace.watch, options.secrets = real_watch, real_secrets
            client:close()
        end)
        assert(oauth2.token { host = server.http_url, client_id = "trace-id",
            client_secret = SECRET })
        assert(client:request("GET", "/v7/tests"))
        assert.equals(0, watched)
        assert.equals(0, listed)
        -- on, the same calls are watched
        assert(oauth2.token { host = server.http_url, client_id = "trace-id",
            client_secret = SECRET, debug = sink })
        assert.equals(1, watched)
    end)

    it("is off by default, on for the process with OAUTH2_DEBUG=1, on stderr", function()
        local code = "local t = assert(require('oauth2').token { host = '" .. server.http_url
            .. "', client_id = 'trace-id', client_secret = '" .. SECRET .. "' }) "
            .. "io.stdout:write(t.access_token)"
        -- without the variable (and without the option): not a line
        local _, quiet = shell.run(shell.lua_command({}, "-e " .. shell.quote(code))
            .. " 2>&1", { lua = true })
        assert.matches("^te%-%x+$", quiet)
        local out
        _, out = shell.run(shell.lua_command({ OAUTH2_DEBUG = "1" }, "-e "
            .. shell.quote(code)) .. " 2>&1", { lua = true })
        assert.matches("oauth2: POST .*/v7/oauth2/token %-> 200 in", out)
        assert.is_nil(out:find(SECRET, 1, true))
        -- the token on stdout, only there: not in the trace line
        local token = out:match("(te%-%x+)$")
        assert.is_string(token, out)
        local _, count = out:gsub(token:gsub("%p", "%%%0"), "")
        assert.equals(1, count)
        -- and a bad value of the option is refused
        local ok, why = pcall(oauth2.token, { client_id = "x", client_secret = SECRET,
            debug = "yes" })
        assert.is_false(ok)
        assert.matches("option 'debug' must be a boolean or a function", why)
    end)
end)
