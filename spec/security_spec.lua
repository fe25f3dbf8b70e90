-- What a hostile network, a careless caller and a hostile environment try:
-- proxy credentials, untrusted token answers, deadlines, wedged fetches,
-- Lua running inside the C core, absurd numbers, plain http through a
-- proxy, resources without close, and the smaller hardening items.

local oauth2 = require "oauth2"
local core = require "oauth2.core"
local exchange = require "oauth2.exchange"
local fake = require "server"
local shell = require "shell"

local SECRET = "sentinel-Secret-sec-77b1"
local PROXY_PASSWORD = "sentinel-ProxyPw-41c9"

-- Run Lua code in a child interpreter with extra environment; returns the
-- exit code and everything it printed.
local function child(code, env)
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(code)
    f:close()
    local status, out = shell.run(shell.lua_command(env, shell.quote(path)), { lua = true })
    os.remove(path)
    return status, out
end

-- A garbage object that runs fn when collected (userdata on 5.1 and
-- LuaJIT, whose tables have no finalizers).
local function finalized(fn)
    if newproxy then -- luacheck: ignore
        local proxy = newproxy(true) -- luacheck: ignore
        getmetatable(proxy).__gc = fn
    else
        setmetatable({}, { __gc = fn })
    end
end

-- Whether a coroutine may yield across pcall (5.2+, LuaJIT; not 5.1).
local function yields_across_pcall()
    local thread = coroutine.create(function() pcall(coroutine.yield, 1) end)
    local ok, value = coroutine.resume(thread)
    return ok and value == 1
end

-- Open file descriptors of this process.
local function open_fds()
    local _, out = shell.run("ls /proc/" .. (shell.read_file("/proc/self/stat")
        or ""):match("^(%d+)") .. "/fd | wc -l")
    return tonumber(out:match("%d+"))
end

describe("security", function()
    local faults, server

    setup(function()
        faults = fake.start_faults()
        server = fake.start()
    end)
    teardown(function()
        if faults then faults:stop() end
        if server then server:stop() end
    end)
    before_each(function()
        server:reset { clients = { ["sec-id"] = SECRET } }
    end)

    local function opts(extra)
        local o = { token_url = faults.url("ok"), client_id = "fault-id",
                    client_secret = SECRET, retries = 0, timeout = 2, deadline = 3 }
        for k, v in pairs(extra or {}) do o[k] = v end
        return o
    end

    describe("store names", function()
        local PASSWORD = "sentinel-Store-Password-77"

        it("refuses a store URL of a scheme it does not speak, never taking it for a directory",
                function()
            local _, before = shell.run("ls -A")
            local cases = {
                { "rediss://user:" .. PASSWORD .. "@127.0.0.1:6380", "TLS to Redis" },
                { "unix://user:" .. PASSWORD .. "@/run/redis.sock", "unix socket" },
                { "redis+socket:///run/redis.sock?password=" .. PASSWORD, "unix socket" },
                { "http://user:" .. PASSWORD .. "@127.0.0.1:6379", "redis://" },
            }
            for _, case in ipairs(cases) do
                local ok, message = pcall(oauth2.client, opts { store = case[1] })
                assert.is_false(ok, case[2])
                assert.matches(case[2], message, 1, true)
                assert.is_nil(message:find(PASSWORD, 1, true), message)
                -- and nothing was made of it in the working directory
                local _, after = shell.run("ls -A")
                assert.equals(before, after)
            end
            -- nginx takes the same rule
            local stores = require "oauth2.store"
            local store, why = stores.redis("rediss://user:" .. PASSWORD .. "@127.0.0.1")
            assert.is_nil(store)
            assert.matches("TLS to Redis", why, 1, true)
            assert.is_nil(why:find(PASSWORD, 1, true))
        end)

        it("takes a scheme in any case and the default port", function()
            local stores = require "oauth2.store"
            local store = assert(stores.redis("Redis://user:" .. PASSWORD .. "@127.0.0.1/2"))
            assert.equals(6379, store.link.nodes[1].port)
            assert.equals(2, store.link.db)
            assert.equals("oauth2.store redis://127.0.0.1:6379/2", tostring(store))
        end)
    end)

    describe("proxy credentials", function()
        local proxy = "htp://user:" .. PROXY_PASSWORD .. "@127.0.0.1:9"

        it("refuses a proxy URL libcurl cannot use, without echoing it", function()
            for _, bad in ipairs { proxy, "user:" .. PROXY_PASSWORD .. "@127.0.0.1:9",
                                   "http://", "not a url" } do
                local ok, message = pcall(oauth2.token, opts { proxy = bad })
                assert.is_false(ok)
                assert.matches("option 'proxy' must be a proxy URL", message)
                assert.is_nil(message:find(PROXY_PASSWORD, 1, true))
            end
        end)

        it("keeps the option's password out of errors, stats and tostring", function()
            -- a well-formed proxy nobody listens on
            local refused = "http://user:" .. PROXY_PASSWORD .. "@127.0.0.1:"
                .. faults.refused_url:match(":(%d+)/")
            local client = oauth2.client(opts { token_url = "https://127.0.0.1:1/v7/oauth2/token",
                                                proxy = refused })
            finally(function() client:close() end)
            local token, err = client:token()
            assert.is_nil(token)
            assert.equals("network", err.kind)
            local shown = tostring(err) .. tostring(client:stats().last_error) .. tostring(client)
            assert.is_nil(shown:find(PROXY_PASSWORD, 1, true), shown)
        end)

        it("scrubs a password the proxy echoes in the answer (the Lua layer alone)", function()
            -- the fake serves as the proxy: it answers the token request
            -- itself, repeating the Proxy-Authorization it was sent; the
            -- C core never sees that text, only the Lua layer's scrub
            server:control { script = { { status = 400, echo_proxy_credentials = true } } }
            local _, err = oauth2.token(opts {
                token_url = "http://api.thousandeyes.invalid/v7/oauth2/token",
                client_id = "sec-id", allow_http = true,
                proxy = "http://proxy-user:" .. PROXY_PASSWORD .. "@"
                    .. server.http_url:match("//(.*)$") })
            assert.equals(1, server:stats().token_requests)
            local shown = tostring(err) .. " " .. tostring(err.detail)
            assert.matches("proxy credentials", shown)
            assert.matches("%[redacted%]", shown)
            assert.is_nil(shown:find(PROXY_PASSWORD, 1, true), shown)
            -- nor encoded, as the proxy's Basic credential
            -- (base64 of "proxy-user:" .. PROXY_PASSWORD)
            assert.is_nil(shown:find("cHJveHktdXNlcjpzZW50aW5lbC1Qcm94eVB3LTQxYzk", 1, true),
                shown)
        end)

        it("keeps the environment's proxy password out of libcurl's texts, and does "
            .. "not retry it", function()
            local code, out = child([[
                local oauth2 = require "oauth2"
                local token, err = oauth2.token { token_url = "https://127.0.0.1:1/x",
                    client_id = "id", client_secret = "secret-secret", retries = 3,
                    backoff_base = 0.01 }
                print(err.kind, err.attempts, tostring(err))
            ]], { https_proxy = "http://user:" .. PROXY_PASSWORD .. "@[::1" })
            assert.equals(0, code, out)
            assert.matches("^config\t1\t", out)
            assert.matches("%[redacted%]", out)
            assert.is_nil(out:find(PROXY_PASSWORD, 1, true), out)
        end)

        it("keeps the password out of the command-line tool's stderr", function()
            local code, out = shell.run(shell.lua_command(
                { https_proxy = "htp://user:" .. PROXY_PASSWORD .. "@127.0.0.1:9",
                  THOUSANDEYES_CLIENT_ID = "id", THOUSANDEYES_CLIENT_SECRET = SECRET },
                "bin/thousandeyes-token --host https://127.0.0.1:1"), { lua = true })
            assert.is_not.equals(0, code)
            assert.matches("config error", out)
            assert.is_nil(out:find(PROXY_PASSWORD, 1, true), out)
            assert.is_nil(out:find(SECRET, 1, true), out)
        end)
    end)

    describe("the token endpoint's answer", function()
        for _, mode in ipairs { "token-crlf", "token-nul", "token-escape", "token-space",
                                "token-long" } do
            it("refuses an access_token that is not a bearer token: " .. mode, function()
                local token, err = oauth2.token(opts { token_url = faults.url(mode) })
                assert.is_nil(token)
                assert.equals("protocol", err.kind)
                assert.matches("b64token", err.message)
            end)
        end

        it("refuses a token_type other than Bearer", function()
            for _, mode in ipairs { "token-type-mac", "token-type-number" } do
                local token, err = oauth2.token(opts { token_url = faults.url(mode) })
                assert.is_nil(token, mode)
                assert.equals("protocol", err.kind)
                assert.matches("token_type is not Bearer", err.message)
            end
        end)

        it("takes bearer in any case, as Bearer", function()
            local token = assert(oauth2.token(opts { token_url = faults.url("token-type-lower") }))
            assert.equals("Bearer", token.token_type)
        end)

        it("strips control characters from server text in errors", function()
            local token, err = oauth2.token(opts { token_url = faults.url("description-control") })
            assert.is_nil(token)
            local text = tostring(err)
            assert.is_nil(text:find("%c"), text)
            assert.matches("FAKE LOG LINE", text)
            assert.equals("invalid_client[2J", err.code)
        end)

        it("bounds the length of server text in errors", function()
            local _, err = oauth2.token(opts { token_url = faults.url("description-long") })
            assert.is_true(#tostring(err) < 2000, #tostring(err))
            assert.is_true(#err.errors <= 20)
        end)

        it("scrubs a secret echoed across the cut of a long text, and a piece of one", function()
            -- the server repeats the secret with its words ending anywhere
            -- around the 512 bytes an error keeps, or cut by the server
            local function pieces_in(text)
                for length = 4, #SECRET do
                    for from = 1, #SECRET - length + 1 do
                        local piece = SECRET:sub(from, from + length - 1)
                        if text:find(piece, 1, true) then return piece end
                    end
                end
                return nil
            end
            for _, lead in ipairs { 470, 480, 490, 495, 500, 505, 509, 511 } do
                for _, echoed in ipairs { SECRET, SECRET:sub(1, 20), SECRET:sub(1, 4) } do
                    server:control { script = { { status = 401, body = {
                        error = "invalid_client",
                        error_description = ("x"):rep(lead) .. echoed } } } }
                    local _, err = oauth2.token { host = server.http_url,
                        client_id = "sec-id", client_secret = SECRET, retries = 0 }
                    local text = tostring(err)
                    assert.is_nil(pieces_in(text), lead .. ": " .. text)
                    assert.is_true(#err.message <= 530, tostring(#err.message))
                end
            end
        end)

        it("keeps no control character of the server's in a token's scope", function()
            server:control { script = { { status = 200, body = {
                access_token = "te-ctl-0123456789", token_type = "Bearer", expires_in = 60,
                scope = "tests:read\27]0;owned\7\r\nscope: forged" } } } }
            local token = assert(oauth2.token { host = server.http_url, client_id = "sec-id",
                client_secret = SECRET, retries = 0 })
            assert.is_nil(token.scope:find("%c"), token.scope)
            assert.matches("^tests:read", token.scope)
        end)

        it("scrubs the Basic credential a server echoes back", function()
            local _, err = oauth2.token(opts { token_url = faults.url("echo-basic"),
                                                auth_method = "client_secret_basic" })
            assert.equals(401, err.status)
            assert.matches("rejected Basic %[redacted%]", tostring(err))
        end)
    end)

    describe("numbers from the server", function()
        it("caps an infinite rate-limit reset at a day", function()
            local _, err = oauth2.token(opts { token_url = faults.url("reset-infinite") })
            assert.equals(429, err.status)
            assert.equals(86400, err.retry_after)
        end)
    end)

    describe("the deadline", function()
        local saved
        before_each(function()
            saved = {}
            for k, v in pairs(exchange.runtime) do saved[k] = v end
        end)
        after_each(function()
            for k, v in pairs(saved) do exchange.runtime[k] = v end
        end)

        it("returns an error, never raises, when a backoff sleep overshoots it", function()
            local t = 0
            exchange.runtime.now = function() return t end
            -- the sleep takes far longer than asked
            exchange.runtime.sleep = function(seconds) t = t + seconds + 10 end
            exchange.runtime.random = function() return 1 end
            local ok, token, err = pcall(oauth2.token, opts {
                token_url = faults.url("flaky/deadline"), retries = 5, deadline = 5,
                backoff_base = 1 })
            assert.is_true(ok, token)
            assert.is_nil(token)
            assert.equals(503, err.status)
            assert.equals(1, err.attempts)
            assert.matches("deadline passed", err.message)
        end)

        it("never hands the C core a zero timeout", function()
            local session = core.session()
            finally(function() session:close() end)
            assert.has_error(function()
                session:request { url = faults.url("ok"), timeout = 0 }
            end, "request.timeout must be a positive number of seconds, at most 86400")
        end)

        it("bounds every duration at a day, the same in Lua and in C", function()
            assert.equals(86400, core.MAX_SECONDS)
            local session = core.session()
            finally(function() session:close() end)
            -- past the bound, a milliseconds conversion would overflow
            for _, huge in ipairs { 9223372036854776, 86400.5, math.huge } do
                for _, name in ipairs { "timeout", "connect_timeout" } do
                    assert.has_error(function()
                        session:request { url = faults.url("ok"), [name] = huge }
                    end, "request." .. name .. " must be a positive number of seconds, "
                        .. "at most 86400")
                    local ok, message = pcall(oauth2.token, opts { [name] = huge })
                    assert.is_false(ok)
                    assert.matches("option '" .. name .. "' must be a positive number of "
                        .. "seconds, at most 86400", message, 1, true)
                end
            end
            -- the bound itself is taken
            local res = assert(session:request { url = faults.url("ok"), timeout = 86400 })
            assert.equals(200, res.status)
        end)
    end)

    describe("a fetch that never comes back", function()
        -- a session that yields mid-request, as a light thread would
        local function yielding_session()
            return { request = function()
                coroutine.yield("suspended")
                return { status = 200, body = '{"access_token":"late","expires_in":60}' }
            end }
        end

        local it_yields = yields_across_pcall() and it or pending
        it_yields("lapses after its deadline, so the next caller fetches", function()
            local clock = { t = 100 }
            local client = oauth2.client(opts {
                token_url = faults.url("ok"), session = yielding_session(), deadline = 5,
                clock = function() return clock.t end })
            finally(function() client:close() end)
            -- the first caller's coroutine is abandoned mid-fetch
            local thread = coroutine.create(function() return client:token() end)
            assert.equals("suspended", select(2, coroutine.resume(thread)))
            local token, err = client:token()
            assert.is_nil(token)
            assert.matches("another caller is fetching", err.message)
            clock.t = 100 + 5 + 2
            -- the second caller's fetch yields too: resume it to its end
            local second = coroutine.create(function() return client:token() end)
            coroutine.resume(second)
            local ok, late = coroutine.resume(second)
            assert.is_true(ok)
            assert.equals("late", late.access_token)
        end)

        it("does not wedge when the clock raises", function()
            local broken = true
            local client = oauth2.client(opts { clock = function()
                if broken then error("clock broke") end
                return 1
            end })
            finally(function() client:close() end)
            assert.has_error(function() client:token() end)
            broken = false
            assert.equals("fault-token-0123456789", assert(client:token()).access_token)
        end)

        it("does not wedge when the session raises", function()
            local raising = true
            local good = oauth2.session()
            local session = { request = function(_, req)
                if raising then error("session broke") end
                return good:request(req)
            end }
            local client = oauth2.client(opts { session = session })
            finally(function()
                client:close()
                good:close()
            end)
            assert.has_error(function() client:token() end)
            raising = false
            assert.equals("fault-token-0123456789", assert(client:token()).access_token)
        end)
    end)

    describe("the C core with Lua running inside it", function()
        it("reads the request table raw: no metamethod runs", function()
            local session = core.session()
            finally(function() session:close() end)
            local ran = false
            local request = setmetatable({ url = faults.url("ok"), timeout = 2 },
                { __index = function() ran = true end })
            local res = assert(session:request(request))
            assert.equals(200, res.status)
            assert.is_false(ran)
        end)

        it("defers a close from a finalizer and refuses re-entrant use", function()
            local session = core.session()
            local reentrant, ran, armed = 0, 0, false
            -- finalizers that reuse and close the session, collected while
            -- the core allocates inside a call
            local function bait()
                finalized(function()
                    if not armed then return end
                    ran = ran + 1
                    local ok, why = pcall(session.request, session, { url = faults.url("ok") })
                    if not ok and tostring(why):find("in use by a call in progress") then
                        reentrant = reentrant + 1
                    end
                    session:close()
                end)
            end
            finally(function()
                collectgarbage("setpause", 200)
                collectgarbage("setstepmul", 200)
                session:close()
            end)
            local closed_inside = 0
            -- where a collection falls is the collector's choice (on a busy
            -- machine LuaJIT's fell outside the call in 20 tries once): try
            -- until both were seen, a bounded number of times
            local tries = 0
            while tries < 200 and (reentrant == 0 or closed_inside == 0) do
                tries = tries + 1
                local fresh = core.session()
                session = fresh
                -- a large answer: the core allocates enough inside the call
                -- for a whole collection to run there on every Lua
                local request = { url = faults.url("description-long"), timeout = 2 }
                collectgarbage()
                collectgarbage("stop")
                for _ = 1, 20 do bait() end
                -- from here every allocation runs a whole collection
                collectgarbage("restart")
                collectgarbage("setpause", 0)
                collectgarbage("setstepmul", 1000000)
                armed = true
                local ok, res = pcall(fresh.request, fresh, request)
                armed = false
                collectgarbage("setpause", 200)
                collectgarbage("setstepmul", 200)
                -- the call finished whole, even when a finalizer closed it meanwhile
                assert.is_true(ok, res)
                assert.equals(400, res.status)
                if tostring(fresh):find("closed") then closed_inside = closed_inside + 1 end
                collectgarbage()
            end
            assert.is_true(ran > 0)
            -- some finalizers ran inside a call: refused, and their close deferred
            assert.is_true(reentrant > 0, "no finalizer ran inside a call")
            assert.is_true(closed_inside > 0)
        end)
    end)

    describe("plain http to this machine", function()
        it("never goes through a proxy of the environment", function()
            local target = "http://127.0.0.1:" .. faults.seen_port
            local code, out = child([[
                local oauth2 = require "oauth2"
                local token, err = oauth2.token { token_url = ]] .. ("%q"):format(faults.url("ok"))
                .. [[, client_id = "id", client_secret = "secret-secret", retries = 0 }
                print(token and token.access_token or tostring(err))
            ]], { http_proxy = target, all_proxy = target })
            assert.equals(0, code, out)
            assert.matches("fault%-token%-0123456789", out)
            assert.equals(0, faults.seen().connections)
        end)

        it("refuses a proxy option for it unless allow_http is set", function()
            assert.has_error(function()
                oauth2.token(opts { proxy = "http://127.0.0.1:3128" })
            end)
            -- said so: the proxy is used (and, here, refuses)
            local token, err = oauth2.token(opts { proxy = faults.refused_url:match("^(.-)/v7"),
                                                    allow_http = true })
            assert.is_nil(token)
            assert.equals("network", err.kind)
        end)
    end)

    describe("resources without close", function()
        it("holds no socket for a dropped client or a one-shot call", function()
            local before = open_fds()
            for i = 1, 200 do
                local client = oauth2.client { token_url = server.https_url .. "/v7/oauth2/token",
                    client_id = "sec-id", client_secret = SECRET, ca_file = server.ca_file,
                    scope = "s" .. i }
                assert(client:token())
                assert(oauth2.token { token_url = server.https_url .. "/v7/oauth2/token",
                    client_id = "sec-id", client_secret = SECRET, ca_file = server.ca_file })
            end
            local after = open_fds()
            assert.is_true(after - before < 5, ("%d fds before, %d after"):format(before, after))
        end)
    end)

    describe("the C core's request checks", function()
        local session
        before_each(function() session = core.session() end)
        after_each(function() session:close() end)

        it("refuses framing headers", function()
            for _, name in ipairs { "Content-Length", "transfer-encoding", "HOST" } do
                local res, err = session:request { url = faults.url("ok"), timeout = 2,
                                                   headers = { [name] = "1" } }
                assert.is_nil(res)
                assert.equals("config", err.kind)
                assert.matches("frames the message", err.message)
            end
        end)

        it("refuses a URL without a scheme", function()
            local res, err = session:request { url = faults.url("ok"):gsub("^http://", ""),
                                               timeout = 2 }
            assert.is_nil(res)
            assert.equals("config", err.kind)
        end)

        it("refuses TLS below 1.2 even when OpenSSL's configuration allows it", function()
            local dir = shell.temp_dir()
            finally(function() shell.run("rm -rf " .. shell.quote(dir)) end)
            local f = assert(io.open(dir .. "/openssl.cnf", "w"))
            f:write("openssl_conf = default_conf\n[default_conf]\nssl_conf = ssl_sect\n"
                .. "[ssl_sect]\nsystem_default = system_default_sect\n"
                .. "[system_default_sect]\nMinProtocol = TLSv1\n"
                .. "CipherString = ALL:@SECLEVEL=0\n")
            f:close()
            local code, out = child([[
                local core = require "oauth2.core"
                local session = core.session()
                local res, err = session:request { url = ]]
                .. ("%q"):format(faults.tls_url("tls11")) .. [[, timeout = 3,
                    ca_file = ]] .. ("%q"):format(faults.ca_file) .. [[ }
                print(res and ("status " .. res.status) or (err.kind .. " " .. err.message))
            ]], { OPENSSL_CONF = dir .. "/openssl.cnf" })
            assert.equals(0, code, out)
            assert.matches("^tls ", out)
        end)
    end)
end)
