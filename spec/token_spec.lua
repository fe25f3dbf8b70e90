-- oauth2.token end to end against the fake ThousandEyes endpoint on 127.0.0.1.

local oauth2 = require "oauth2"
local cjson_null = require("cjson").null
local fake = require "server"

-- Sentinel secrets: none of them may ever show up in an error string.
local SECRET = "sentinel-Secret-4be1c2"
local BEARER = "sentinel-Bearer-77d0e1"
local APP_TOKEN = "sentinel-AppToken-5a9f30"

describe("oauth2.token", function()
    local server, saved_runtime

    setup(function() server = fake.start() end)
    teardown(function() if server then server:stop() end end)

    before_each(function()
        server:reset { clients = { ["app-id"] = SECRET } }
        saved_runtime = {}
        for k, v in pairs(oauth2.runtime) do saved_runtime[k] = v end
    end)
    after_each(function()
        for k, v in pairs(saved_runtime) do oauth2.runtime[k] = v end
    end)

    local function opts(extra)
        local o = {
            host = server.http_url, client_id = "app-id", client_secret = SECRET,
            timeout = 5, deadline = 20,
        }
        for k, v in pairs(extra or {}) do o[k] = v end
        return o
    end

    -- A clock that only moves when the library sleeps; records every sleep.
    local function fake_time()
        local clock = { t = 1000, slept = {} }
        oauth2.runtime.now = function() return clock.t end
        oauth2.runtime.sleep = function(s)
            clock.slept[#clock.slept + 1] = s
            clock.t = clock.t + s
        end
        oauth2.runtime.random = function() return 0.5 end
        return clock
    end

    -- Assert that no sentinel secret appears in any string of err.
    local function assert_clean(err)
        local text = tostring(err)
        local function walk(value)
            if type(value) == "string" then
                text = text .. "\n" .. value
            elseif type(value) == "table" then
                for k, v in pairs(value) do walk(k); walk(v) end
            end
        end
        walk(err)
        for _, secret in ipairs { SECRET, BEARER, APP_TOKEN } do
            assert.is_nil(text:find(secret, 1, true), "secret leaked: " .. text)
        end
    end

    describe("on success", function()
        it("returns the token table with an absolute expires_at", function()
            local before = os.time()
            local token, err = oauth2.token(opts())
            assert.is_nil(err)
            assert.matches("^te%-%x+$", token.access_token)
            assert.equals("Bearer", token.token_type)
            assert.equals(3600, token.expires_in)
            if math.type then assert.equals("integer", math.type(token.expires_in)) end
            assert.equals("tests:read", token.scope)
            assert.is_true(token.expires_at >= before + 3600)
            assert.is_true(token.expires_at <= os.time() + 3600)
        end)

        it("prints the token redacted", function()
            local token = assert(oauth2.token(opts()))
            local text = tostring(token)
            assert.is_nil(text:find(token.access_token, 1, true))
            assert.matches("^oauth2 token Bearer te%-%x%.%.%. %(35 chars", text)
        end)

        it("works over HTTPS with the right CA file or CA path", function()
            assert.is_table(oauth2.token(opts { host = server.https_url, ca_file = server.ca_file }))
            assert.is_table(oauth2.token(opts { host = server.https_url, ca_path = server.ca_path }))
        end)

        it("sends a client certificate for mutual TLS", function()
            local token = oauth2.token(opts {
                host = server.mtls_url, ca_file = server.ca_file,
                cert = server.client_cert, key = server.client_key,
            })
            assert.is_table(token)
            assert.equals("lua-oauth2-test-client", server:last_request().client_cert.commonName)
            local none, err = oauth2.token(opts {
                host = server.mtls_url, ca_file = server.ca_file, retries = 0,
            })
            assert.is_nil(none)
            assert.is_truthy(err.kind == "tls" or err.kind == "network")
        end)

        it("sends the form, headers and user agent the endpoint expects", function()
            assert(oauth2.token(opts { scope = { "tests:read", "tests:write" },
                                       user_agent = "my-app/1.0" }))
            local seen = server:last_request()
            assert.same({
                grant_type = "client_credentials", client_id = "app-id",
                client_secret = SECRET, scope = "tests:read tests:write",
            }, seen.form)
            assert.equals("application/x-www-form-urlencoded", seen.headers["content-type"])
            assert.equals("application/json, application/problem+json", seen.headers["accept"])
            assert.equals("my-app/1.0", seen.headers["user-agent"])
            assert.is_nil(seen.headers["authorization"])
            assert.is_nil(seen.headers["x-tenant-id"])
        end)

        it("sends x_tenant_id as a header and thousandeyes_bearer_token in the form", function()
            assert(oauth2.token(opts { x_tenant_id = "tenant-42",
                                       thousandeyes_bearer_token = BEARER }))
            local seen = server:last_request()
            assert.equals("tenant-42", seen.headers["x-tenant-id"])
            assert.is_nil(seen.form.x_tenant_id)
            assert.equals(BEARER, seen.form.thousandeyes_bearer_token)
            assert.is_nil(seen.headers["thousandeyes-bearer-token"])
        end)

        it("sends access_token as Authorization: Bearer (the application scheme)", function()
            assert(oauth2.token(opts { access_token = APP_TOKEN }))
            assert.equals(APP_TOKEN, server:last_request().bearer)
        end)

        it("takes a scope string as it is", function()
            assert(oauth2.token(opts { scope = "a:read b:write" }))
            assert.equals("a:read b:write", server:last_request().form.scope)
        end)

        it("sends the grant_type given", function()
            local token, err = oauth2.token(opts { grant_type = "password" })
            assert.is_nil(token)
            assert.equals(400, err.status)
            assert.equals("password", server:last_request().form.grant_type)
        end)

        it("uses token_url instead of host and path", function()
            assert(oauth2.token(opts { host = "https://unused.invalid",
                                       token_url = server.http_url .. "/v7/oauth2/token" }))
            assert.equals(1, server:stats().token_requests)
        end)

        it("accepts a host with a trailing slash", function()
            assert(oauth2.token(opts { host = server.http_url .. "/" }))
        end)

        it("goes through a proxy", function()
            local token = oauth2.token(opts {
                host = "http://api.thousandeyes.invalid", allow_http = true,
                proxy = server.http_url,
            })
            assert.is_table(token)
            assert.equals("api.thousandeyes.invalid", server:last_request().proxied_host)
        end)

        it("accepts verify = false with an untrusted certificate", function()
            assert.is_table(oauth2.token(opts { host = server.https_url, verify = false }))
        end)

        it("reuses one connection through a session", function()
            local session = oauth2.session()
            finally(function() session:close() end)
            for _ = 1, 3 do
                assert(oauth2.token(opts { session = session, connect_timeout = 2 }))
            end
            local stats = server:stats()
            assert.equals(3, stats.token_requests)
            assert.equals(1, stats.token_connections)
        end)

        it("sees changes to an options table it was given before", function()
            local o = opts { client_secret = "wrong-" .. SECRET, retries = 0 }
            local token, err = oauth2.token(o)
            assert.is_nil(token)
            assert.equals(401, err.status)
            o.client_secret = SECRET
            assert.is_table(oauth2.token(o))
            o.x_tenant_id = "tenant-7"
            assert.is_table(oauth2.token(o))
            assert.equals("tenant-7", server:last_request().headers["x-tenant-id"])
            o.bogus = true
            assert.has_error(function() oauth2.token(o) end, "oauth2: unknown option 'bogus'")
            o.bogus = nil
            o.timeout = "soon"
            assert.has_error(function() oauth2.token(o) end,
                "oauth2: option 'timeout' must be a number, got \"soon\"")
        end)

        it("prepares an endpoint once and reuses its connection", function()
            local endpoint = oauth2.endpoint(opts())
            finally(function() endpoint:close() end)
            for _ = 1, 3 do assert(endpoint:token()) end
            local stats = server:stats()
            assert.equals(3, stats.token_requests)
            assert.equals(1, stats.token_connections)
            assert.matches("^oauth2.endpoint http://127.0.0.1:%d+ client_id=", tostring(endpoint))
            endpoint:close()
            assert.has_error(function() endpoint:token() end, "oauth2: use of a closed endpoint")
            assert.has_error(function() oauth2.endpoint { bogus = 1 } end)
        end)

        it("closes a session with <close> on Lua 5.4", function()
            if _VERSION ~= "Lua 5.4" then return pending("<close> is Lua 5.4 syntax") end
            local chunk = assert(load([[
                local oauth2, opts = ...
                local session <close> = oauth2.session()
                assert(oauth2.token(opts { session = session }))
                return session
            ]]))
            local session = chunk(oauth2, opts)
            assert.equals("oauth2.session (closed)", tostring(session))
        end)

        it("leaves expires_in and expires_at nil when the endpoint omits expires_in", function()
            server:control { expires_in = cjson_null }
            local token = assert(oauth2.token(opts()))
            assert.is_nil(token.expires_in)
            assert.is_nil(token.expires_at)
        end)
    end)

    describe("authentication methods", function()
        local awkward = {
            { "id with space", "secret with space" },
            { "id:colon", "se:cr:et" },
            { "id+plus", "s+e+c" },
            { "id%25percent", "100%sure" },
            { "id&amp", "a&b=c" },
            { "id=eq", "==" },
            { "id/slash", "a/b/c" },
            { "ünïcode", "sécret ✓" },
        }

        for _, method in ipairs { "client_secret_post", "client_secret_basic" } do
            it(method .. " carries awkward credentials intact", function()
                local clients = {}
                for _, pair in ipairs(awkward) do clients[pair[1]] = pair[2] .. SECRET end
                server:control { clients = clients }
                for _, pair in ipairs(awkward) do
                    local token, err = oauth2.token(opts {
                        auth_method = method, client_id = pair[1],
                        client_secret = pair[2] .. SECRET,
                    })
                    assert.is_nil(err, method .. " " .. pair[1])
                    assert.is_table(token)
                    local seen = server:last_request()
                    if method == "client_secret_basic" then
                        assert.same({ client_id = pair[1], client_secret = pair[2] .. SECRET },
                            seen.basic)
                        assert.is_nil(seen.form.client_secret)
                        assert.is_nil(seen.form.client_id)
                    else
                        assert.equals(pair[1], seen.form.client_id)
                        assert.equals(pair[2] .. SECRET, seen.form.client_secret)
                        assert.is_nil(seen.basic)
                    end
                end
            end)
        end
    end)

    describe("on failure", function()
        it("refuses a reply larger than max_body", function()
            server:control { script = { { status = 200,
                body = { access_token = string.rep("a", 3000), expires_in = 60 } } } }
            local token, err = oauth2.token(opts { max_body = 2048 })
            assert.is_nil(token)
            assert.equals("protocol", err.kind)
            assert.matches("2048 byte limit", err.message)
        end)

        it("maps 401 to an http error with the RFC 6749 code, not retried", function()
            local token, err = oauth2.token(opts { client_secret = "wrong-" .. SECRET })
            assert.is_nil(token)
            assert.equals("http", err.kind)
            assert.equals(401, err.status)
            assert.equals("invalid_client", err.code)
            assert.equals("Client authentication failed", err.message)
            assert.is_false(err.retryable)
            assert.equals(1, err.attempts)
            assert.equals(1, server:stats().token_requests)
            assert.equals("oauth2: http error 401 (invalid_client): Client authentication failed",
                tostring(err))
            assert_clean(err)
        end)

        it("maps a 400 problem to code, message, detail and the errors list", function()
            local token, err = oauth2.token(opts { grant_type = "authorization_code" })
            assert.is_nil(token)
            assert.equals("http", err.kind)
            assert.equals(400, err.status)
            assert.equals("Bad Request", err.code)
            assert.equals("Bad Request", err.message)
            assert.equals("Validation failed", err.detail)
            assert.same({ { code = "unsupported_grant_type", field = "grant_type",
                            message = "only client_credentials is supported" } }, err.errors)
            assert.equals(400, err.body.status)
            assert.is_false(err.retryable)
            assert.equals(1, server:stats().token_requests)
        end)

        it("maps a 429 to retry_after and rate_limit", function()
            server:control { script = { { status = 429, headers = { ["Retry-After"] = "7" } } },
                             rate_limit = { limit = 240, remaining = 0, reset = 1900000000 } }
            local token, err = oauth2.token(opts { retries = 0 })
            assert.is_nil(token)
            assert.equals(429, err.status)
            assert.equals("https://developer.cisco.com/docs/thousandeyes/rate-limits", err.code)
            assert.equals("Too Many Requests", err.message)
            assert.equals(7, err.retry_after)
            assert.same({ limit = 240, remaining = 0, reset = 1900000000 }, err.rate_limit)
            assert.is_true(err.retryable)
        end)

        it("reads rate limits from the header method of a session of the caller's making",
           function()
            local headers = { ["x-organization-rate-limit-limit"] = "240",
                              ["x-organization-rate-limit-remaining"] = "0" }
            local session = {
                request = function() return { status = 429, body = "" } end,
                header = function(_, name) return headers[name] end,
            }
            local token, err = oauth2.token(opts { session = session, retries = 0 })
            assert.is_nil(token)
            assert.equals(429, err.status)
            assert.same({ limit = 240, remaining = 0 }, err.rate_limit)
        end)

        it("calls a 200 without JSON a protocol error", function()
            server:control { script = { { status = 200, body = "<html>ok</html>" } } }
            local token, err = oauth2.token(opts())
            assert.is_nil(token)
            assert.equals("protocol", err.kind)
            assert.matches("not a JSON object", err.message)
            assert.is_false(err.retryable)
        end)

        it("calls a 200 without access_token a protocol error", function()
            server:control { script = { { status = 200, body = { token_type = "Bearer" } } } }
            local token, err = oauth2.token(opts())
            assert.is_nil(token)
            assert.equals("protocol", err.kind)
            assert.matches("no access_token", err.message)
        end)

        it("reports a certificate from the wrong CA as a TLS error", function()
            local token, err = oauth2.token(opts { host = server.https_url,
                                                   ca_file = server.wrong_ca_file })
            assert.is_nil(token)
            assert.equals("tls", err.kind)
            assert.is_false(err.retryable)
            assert.equals(1, err.attempts)
            assert.is_number(err.curl_code)
        end)

        it("reports a timeout as kind timeout, after its retries", function()
            fake_time()
            server:control { delay = 0.5 }
            local token, err = oauth2.token(opts { timeout = 0.1, retries = 1 })
            assert.is_nil(token)
            assert.equals("timeout", err.kind)
            assert.equals(2, err.attempts)
        end)

        it("keeps every sentinel secret out of every error", function()
            server:control { script = {
                { status = 500, body = { error = "server_error",
                                         error_description = "bad secret " .. SECRET } },
            } }
            local token, err = oauth2.token(opts {
                retries = 0, access_token = APP_TOKEN, thousandeyes_bearer_token = BEARER,
            })
            assert.is_nil(token)
            assert.equals(500, err.status)
            assert.equals("bad secret [redacted]", err.message)
            assert_clean(err)
        end)
    end)

    describe("retries", function()
        it("retry 503 with backoff and then succeed", function()
            local clock = fake_time()
            server:control { script = { { status = 503 }, { status = 503 } } }
            local token = oauth2.token(opts { backoff_base = 1, backoff_max = 8 })
            assert.is_table(token)
            assert.equals(3, server:stats().token_requests)
            -- full jitter with random() = 0.5: half of 1, then half of 2
            assert.same({ 0.5, 1 }, clock.slept)
        end)

        it("stop after `retries` retries", function()
            fake_time()
            server:control { script = { { status = 502 }, { status = 502 }, { status = 502 } } }
            local token, err = oauth2.token(opts { retries = 2 })
            assert.is_nil(token)
            assert.equals(502, err.status)
            assert.equals(3, err.attempts)
            assert.matches("%(after 3 attempts%)$", tostring(err))
            assert.equals(3, server:stats().token_requests)
        end)

        it("retry 500, 502, 503, 504 and 429 but not 400, 401, 403 or 501", function()
            fake_time()
            for status, retried in pairs { [500] = true, [502] = true, [503] = true,
                                           [504] = true, [429] = true, [400] = false,
                                           [401] = false, [403] = false, [501] = false } do
                server:reset { clients = { ["app-id"] = SECRET },
                               script = { { status = status,
                                            headers = { ["Retry-After"] = "1" } } } }
                local token, err = oauth2.token(opts())
                assert.equals(retried, token ~= nil, "status " .. status)
                assert.equals(retried and 2 or 1, server:stats().token_requests)
                if not retried then assert.equals(status, err.status) end
            end
        end)

        it("wait at least Retry-After after a 429", function()
            local clock = fake_time()
            server:control { script = { { status = 429, headers = { ["Retry-After"] = "3" } } } }
            assert.is_table(oauth2.token(opts()))
            assert.same({ 3 }, clock.slept)
        end)

        it("wait until the rate-limit reset when there is no Retry-After", function()
            local clock = fake_time()
            server:control { script = { { status = 429 } },
                             rate_limit = { remaining = 0, reset = os.time() + 5 } }
            assert.is_table(oauth2.token(opts()))
            assert.equals(1, #clock.slept)
            assert.is_true(clock.slept[1] >= 4 and clock.slept[1] <= 5)
        end)

        it("never wait past the deadline", function()
            local clock = fake_time()
            server:control { script = { { status = 429, headers = { ["Retry-After"] = "60" } } } }
            local token, err = oauth2.token(opts { deadline = 10 })
            assert.is_nil(token)
            assert.same({}, clock.slept)
            assert.equals(60, err.retry_after)
            assert.matches("would pass the 10 s deadline", err.message)
            assert.equals(1, server:stats().token_requests)
        end)

        it("give each attempt only the time left before the deadline", function()
            server:control { delay = 2 }
            local token, err = oauth2.token(opts { deadline = 0.5, timeout = 10 })
            assert.is_nil(token)
            -- a 2 s answer only times out if the 10 s timeout was cut to 0.5 s,
            -- and no retry fits in what is left
            assert.equals("timeout", err.kind)
            assert.equals(1, err.attempts)
        end)

        it("are not made for a refused connection when retries = 0", function()
            local token, err = oauth2.token(opts { host = "http://127.0.0.1:1", retries = 0 })
            assert.is_nil(token)
            assert.equals("network", err.kind)
            assert.is_true(err.retryable)
            assert.equals(1, err.attempts)
        end)
    end)
end)

describe("oauth2.token params", function()
    local server
    setup(function() server = fake.start() end)
    teardown(function() if server then server:stop() end end)
    before_each(function() server:reset { clients = { ["params-id"] = "params-secret" } } end)

    it("sends extra form fields, and refuses ones that collide with its own", function()
        assert(oauth2.token { host = server.http_url, client_id = "params-id",
            client_secret = "params-secret",
            params = { resource = "https://api.example/v7", audience = "te" } })
        local form = server:last_request().form
        assert.equals("https://api.example/v7", form.resource)
        assert.equals("te", form.audience)
        assert.equals("client_credentials", form.grant_type)
        assert.has_error(function()
            oauth2.token { host = server.http_url, client_id = "params-id",
                client_secret = "params-secret", params = { scope = "x" } }
        end, "oauth2: option 'params' must not set 'scope': the request sets it (use the "
            .. "option of that name)")
        assert.has_error(function()
            oauth2.token { host = server.http_url, client_id = "params-id",
                client_secret = "params-secret", params = { ["a b"] = "x" } }
        end)
    end)

    it("keeps tokens for other params apart in a client's cache", function()
        local opts = { host = server.http_url, client_id = "params-id",
            client_secret = "params-secret", params = { resource = "r1" } }
        local one = oauth2.client(opts)
        opts.params = { resource = "r2" }
        local two = oauth2.client(opts)
        assert(one:token())
        assert(two:token())
        assert.equals(2, server:stats().token_requests)
        one:close()
        two:close()
    end)
end)
