-- The C core (oauth2.core) against the real fake endpoint on 127.0.0.1.

local core = require "oauth2.core"
local cjson = require "cjson"
local fake = require "server"
local shell = require "shell"

local FORM = { ["Content-Type"] = "application/x-www-form-urlencoded" }

describe("oauth2.core", function()
    local server

    setup(function() server = fake.start() end)
    teardown(function() if server then server:stop() end end)
    before_each(function() server:reset() end)

    local function token_request(extra)
        local req = {
            url = server.http_url .. "/v7/oauth2/token",
            headers = FORM,
            form = {
                grant_type = "client_credentials",
                client_id = server.client_id,
                client_secret = server.client_secret,
            },
            timeout = 5,
        }
        for k, v in pairs(extra or {}) do req[k] = v end
        return req
    end

    it("has a version and names its libcurl", function()
        assert.is_string(core._VERSION)
        assert.matches("^libcurl/", core.curl_version)
    end)

    describe("a session", function()
        it("returns status and body; headers are asked of the session", function()
            local session = core.session()
            local res, err = session:request(token_request())
            assert.is_nil(err)
            assert.equals(200, res.status)
            assert.is_nil(res.headers)
            local headers = session:headers()
            assert.equals("application/json", headers["content-type"])
            assert.equals("no-store", headers["cache-control"])
            assert.is_nil(headers["Content-Type"])
            assert.equals("no-store", session:header("Cache-Control"))
            assert.is_string(cjson.decode(res.body).access_token)
            session:close()
        end)

        it("prepares a request once: the same userdata sent again, refused when malformed",
           function()
            local req = assert(core.prepare(token_request()))
            assert.equals("oauth2.core.request", tostring(req))
            assert.is_false(getmetatable(req)) -- opaque
            local session = core.session()
            for _ = 1, 3 do assert.equals(200, assert(session:request(req)).status) end
            local bad, err = core.prepare(token_request { headers = { ["a b"] = "x" } })
            assert.is_nil(bad)
            assert.equals("config", err.kind)
            assert.has_error(function() core.prepare(token_request { headers = "x" }) end,
                "request.headers must be a table")
            assert.has_error(function() session:request(req, -1) end,
                "timeout must be a positive number of seconds, at most 86400")
            session:close()
        end)

        it("sends a form urlencoded and the user agent, never waiting for 100 Continue",
           function()
            local session = core.session()
            -- libcurl asks for 100 Continue from 1 KiB of body on (1 MiB
            -- in newer releases) unless told not to
            for _, size in ipairs { 8, 2048, 1024 * 1024 + 16 } do
                local req = token_request { headers = { Accept = "application/json" },
                                            user_agent = "agent/1.0",
                                            max_body = 4 * 1024 * 1024 }
                req.form.scope = ("s"):rep(size)
                assert(session:request(req))
                local seen = server:last_request().headers
                assert.equals("application/x-www-form-urlencoded", seen["content-type"])
                assert.equals("application/json", seen["accept"])
                assert.equals("agent/1.0", seen["user-agent"])
                assert.is_nil(seen["expect"])
            end
            -- a User-Agent among the headers wins over user_agent
            assert(session:request(token_request {
                headers = { ["user-agent"] = "mine/2" }, user_agent = "agent/1.0" }))
            assert.equals("mine/2", server:last_request().headers["user-agent"])
            local res, err = session:request(token_request { user_agent = "a\r\nX-Evil: 1" })
            assert.is_nil(res)
            assert.equals("config", err.kind)
            assert.matches("user_agent contains CR, LF or NUL", err.message, 1, true)
            session:close()
        end)

        it("takes its proxy from the environment, as libcurl does", function()
            -- a child process: Lua cannot set its own environment
            local code = [[
                local core = require "oauth2.core"
                local res, err = core.session():request { form = { grant_type = "x" },
                    url = "http://api.thousandeyes.invalid/v7/oauth2/token", timeout = 5 }
                print(res and "answered" or err.kind)
            ]]
            local function run(env)
                local status, out = shell.run(shell.lua_command(env, "-e " .. shell.quote(code)),
                    { lua = true })
                assert.equals(0, status, out)
                return out:match("[^\n]*")
            end
            assert.equals("answered", run { http_proxy = server.http_url })
            assert.equals("api.thousandeyes.invalid", server:last_request().proxied_host)
            assert.equals("answered", run { all_proxy = server.http_url })
            -- no_proxy exempts the host: straight to a name that never resolves
            assert.equals("network", run { http_proxy = server.http_url,
                                           no_proxy = "api.thousandeyes.invalid" })
            assert.equals("network", run { http_proxy = server.http_url, NO_PROXY = "*" })
            assert.equals(2, server:stats().token_requests)
        end)

        it("refuses a URL libcurl cannot parse, naming the request field", function()
            local session = core.session()
            local res, err = session:request { url = "http://[::1" }
            assert.is_nil(res)
            assert.equals("config", err.kind)
            assert.matches("^request.url is not a valid URL %(", err.message)
            session:close()
        end)

        it("reuses one connection for consecutive exchanges", function()
            local session = core.session()
            local connects = {}
            for i = 1, 3 do
                local res = assert(session:request(token_request()))
                assert.equals(200, res.status)
                connects[i] = res.connects
            end
            session:close()
            assert.same({ 1, 0, 0 }, connects)
            local stats = server:stats()
            assert.equals(3, stats.token_requests)
            assert.equals(1, stats.token_connections)
        end)

        it("reuses the TLS connection too", function()
            local session = core.session()
            for _ = 1, 3 do
                local res = assert(session:request(token_request {
                    url = server.https_url .. "/v7/oauth2/token",
                    ca_file = server.ca_file,
                }))
                assert.equals(200, res.status)
            end
            session:close()
            assert.equals(1, server:stats().token_connections)
        end)

        describe("with a prepared request", function()
            it("keeps the handle set up for it, applying only the timeouts given", function()
                local session = core.session()
                local req = assert(core.prepare(token_request()))
                for _ = 1, 3 do assert.equals(200, assert(session:request(req)).status) end
                assert.equals(1, server:stats().token_connections)
                server:control { delay = 0.5 }
                local res, err = session:request(req, 0.1)
                assert.is_nil(res)
                assert.equals("timeout", err.kind)
                server:control { delay = 0 }
                assert.equals(200, assert(session:request(req, 5, 5)).status)
                session:close()
                -- the timed-out connection was dropped: one more after it
                assert.equals(2, server:stats().token_connections)
            end)

            it("sets the handle up again for another request", function()
                local session = core.session()
                assert(session:request(assert(core.prepare(token_request()))))
                local other = token_request { headers = { ["Content-Type"] =
                    "application/x-www-form-urlencoded", ["x-tenant-id"] = "t-2" } }
                assert(session:request(other))
                assert.equals("t-2", server:last_request().headers["x-tenant-id"])
                -- and a table is read afresh every time
                other.headers["x-tenant-id"] = "t-3"
                assert(session:request(other))
                assert.equals("t-3", server:last_request().headers["x-tenant-id"])
                session:close()
            end)
        end)

        it("can be driven step by step until done", function()
            local session = core.session()
            server:control { delay = 0.2 }
            assert.is_true(session:start(token_request()))
            assert.is_true(session:busy())
            local steps, res, err = 0
            repeat
                steps = steps + 1
                res, err = session:step(0.01)
            until res ~= false
            session:close()
            assert.is_nil(err)
            assert.equals(200, res.status)
            -- a 0.2 s answer cannot arrive within one 10 ms step
            assert.is_true(steps > 1)
        end)

        it("refuses to start a second exchange while one runs", function()
            local session = core.session()
            server:control { delay = 0.2 }
            session:start(token_request())
            assert.has_error(function() session:start(token_request()) end,
                "oauth2.core session is busy with another exchange")
            session:cancel()
            assert.is_false(session:busy())
            local res = assert(session:request(token_request()))
            assert.equals(200, res.status)
            session:close()
        end)

        it("closes idempotently and refuses use after close", function()
            local session = core.session()
            session:close()
            session:close()
            assert.matches("closed", tostring(session))
            assert.has_error(function() session:request(token_request()) end,
                "attempt to use a closed oauth2.core session")
        end)

        it("raises for a request that is not a table", function()
            local session = core.session()
            assert.has_error(function() session:request("http://127.0.0.1/") end)
            assert.has_error(function() session:request({ url = 42 }) end,
                "request.url must be a string")
            assert.has_error(function() session:request({}) end, "request.url is required")
            session:close()
        end)
    end)

    describe("safety", function()
        local session
        before_each(function() session = core.session() end)
        after_each(function() session:close() end)

        it("refuses CR or LF in a header value", function()
            for _, value in ipairs { "a\r\nX-Injected: 1", "a\nb", "a\rb", "a\0b" } do
                local res, err = session:request(token_request {
                    headers = { ["x-tenant-id"] = value },
                })
                assert.is_nil(res)
                assert.equals("config", err.kind)
                assert.matches("x%-tenant%-id", err.message)
                assert.not_matches("Injected", err.message)
            end
            assert.equals(0, server:stats().token_requests)
        end)

        it("refuses a header name that is not an HTTP token", function()
            local res, err = session:request(token_request {
                headers = { ["Bad Name"] = "x" },
            })
            assert.is_nil(res)
            assert.equals("config", err.kind)
        end)

        it("refuses a URL with a NUL byte", function()
            local res, err = session:request(token_request {
                url = server.http_url .. "/v7/oauth2/token\0evil",
            })
            assert.is_nil(res)
            assert.equals("config", err.kind)
        end)

        it("allows only http and https", function()
            local res, err = session:request { url = "file:///etc/passwd" }
            assert.is_nil(res)
            assert.equals("config", err.kind)
            assert.equals(1, err.curl_code) -- CURLE_UNSUPPORTED_PROTOCOL
        end)

        it("never follows a redirect", function()
            server:control { script = { {
                status = 302,
                headers = { Location = server.https_url .. "/v7/oauth2/token" },
                body = "",
            } } }
            local res = assert(session:request(token_request()))
            assert.equals(302, res.status)
            assert.equals(1, server:stats().token_requests)
        end)

        it("fails cleanly on a body larger than max_body", function()
            server:control { script = { { status = 200, body = string.rep("x", 4096) } } }
            local res, err = session:request(token_request { max_body = 1000 })
            assert.is_nil(res)
            assert.equals("protocol", err.kind)
            assert.matches("1000 byte limit", err.message)
            -- and the session still works
            res = assert(session:request(token_request()))
            assert.equals(200, res.status)
        end)

        it("reports a refused connection as a network error", function()
            local res, err = session:request { url = "http://127.0.0.1:1/", timeout = 2 }
            assert.is_nil(res)
            assert.equals("network", err.kind)
            assert.equals(7, err.curl_code) -- CURLE_COULDNT_CONNECT
        end)

        it("reports a slow server as a timeout", function()
            server:control { delay = 1 }
            local res, err = session:request(token_request { timeout = 0.2 })
            assert.is_nil(res)
            assert.equals("timeout", err.kind)
        end)

        it("reports a certificate from an unknown CA as a TLS error", function()
            local res, err = session:request(token_request {
                url = server.https_url .. "/v7/oauth2/token",
                ca_file = server.wrong_ca_file,
            })
            assert.is_nil(res)
            assert.equals("tls", err.kind)
        end)
    end)

    describe("helpers", function()
        it("form-urlencodes every reserved byte", function()
            assert.equals("a%20b%3A%2B%25%26%3D%2F%0D%0A", core.escape("a b:+%&=/\r\n"))
            assert.equals("AZaz09-._~", core.escape("AZaz09-._~"))
            assert.equals("%00", core.escape("\0"))
        end)

        it("parses URLs the way libcurl will use them", function()
            local parts = core.parse_url("https://api.thousandeyes.com/v7")
            assert.equals("https", parts.scheme)
            assert.equals("api.thousandeyes.com", parts.host)
            assert.equals("443", parts.port)
            assert.is_false(parts.userinfo)
            assert.is_true(core.parse_url("https://a:b@host/").userinfo)
            local bad, why = core.parse_url("http://[::1")
            assert.is_nil(bad)
            assert.is_string(why)
        end)

        it("hashes with libcrypto: SHA-256 and HMAC-SHA256 test vectors", function()
            assert.equals("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                core.sha256("abc"))
            assert.equals("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                core.sha256(""))
            -- RFC 4231 test case 2
            assert.equals("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
                core.hmac_sha256("Jefe", "what do ya want for nothing?"))
        end)

        it("seals with AES-256-GCM: only the same secret opens, and nothing altered", function()
            local sealed = core.seal("secret-one", "a token value", "key-a")
            assert.is_nil(sealed:find("a token value", 1, true))
            assert.equals("a token value", core.open("secret-one", sealed, "key-a"))
            -- a fresh nonce every time
            assert.are_not.equal(sealed, core.seal("secret-one", "a token value", "key-a"))
            local opened, why = core.open("secret-two", sealed, "key-a")
            assert.is_nil(opened)
            assert.matches("does not authenticate", why)
            local flipped = sealed:sub(1, 20) .. string.char((sealed:byte(21) + 1) % 256)
                .. sealed:sub(22)
            assert.is_nil(core.open("secret-one", flipped, "key-a"))
            assert.is_nil(core.open("secret-one", "short", "key-a"))
            assert.equals("", core.open("k", core.seal("k", "", "n"), "n"))
        end)

        it("binds a sealed value to its name and format version", function()
            local sealed = core.seal("secret-one", "tenant A's token", "key-a")
            -- moved to another key, it does not open
            local opened, why = core.open("secret-one", sealed, "key-b")
            assert.is_nil(opened)
            assert.matches("does not authenticate", why)
            assert.is_nil(core.open("secret-one", sealed, ""))
            -- nor read as another format version (the header is authenticated)
            local other = sealed:sub(1, 2) .. "\1" .. sealed:sub(4)
            assert.is_nil(core.open("secret-one", other, "key-a"))
            local forged = sealed:sub(1, 2) .. "\3" .. sealed:sub(4)
            assert.is_nil(core.open("secret-one", forged, "key-a"))
        end)

        it("tells an RFC 6750 b64token of bounded length", function()
            assert.is_true(core.is_b64token("abc-._~+/AZ09==", 64))
            assert.is_true(core.is_b64token("a", 1))
            for _, bad in ipairs { "", "=", "a b", "a\r\nb", "a\0b", "a=b", "a\27[31m", "ü" } do
                assert.is_false(core.is_b64token(bad, 64), bad)
            end
            assert.is_false(core.is_b64token("abcd", 3))
        end)

        it("gives its error tables a __tostring", function()
            local session = core.session()
            finally(function() session:close() end)
            local res, err = session:request { url = "http://127.0.0.1:1/", timeout = 1 }
            assert.is_nil(res)
            assert.matches("^oauth2%.core: network error: ", tostring(err))
        end)

        it("has a monotonic clock", function()
            local a = core.now()
            core.sleep(0.01)
            assert.is_true(core.now() > a)
        end)
    end)
end)

describe("oauth2.core response headers", function()
    local faults

    setup(function() faults = fake.start_faults() end)
    teardown(function() if faults then faults:stop() end end)

    it("come from the last head only, joined when repeated, trimmed, without trailers",
       function()
        local session = core.session()
        assert.is_nil(session:header("content-type")) -- no response yet
        assert.is_nil(session:headers())
        assert.is_true(session:start { url = faults.url("header-forms"), form = {} })
        assert.is_nil(session:header("content-type")) -- none while one runs
        assert.is_nil(session:headers())
        local res
        repeat res = session:step(1) until res ~= false
        assert.equals(429, res.status)
        assert.equals("{}", res.body)
        local headers = session:headers()
        assert.equals("240, 300", headers["x-organization-rate-limit-limit"])
        assert.equals("", headers["x-organization-rate-limit-reset"])
        assert.is_nil(headers["x-organization-rate-limit-remaining"])
        assert.equals("240, 300", session:header("X-Organization-Rate-Limit-Limit"))
        assert.equals("", session:header("x-organization-rate-limit-reset"))
        assert.is_nil(session:header("x-organization-rate-limit-remaining"))
        assert.is_nil(session:header("x-missing"))
        session:close()
        assert.has_error(function() session:header("content-type") end)
    end)
end)
