-- oauth2.client against the fake endpoint, with time on an injected clock.

local oauth2 = require "oauth2"
local cjson = require "cjson"
local fake = require "server"

local SECRET = "sentinel-Secret-c11e47"
local BEARER = "sentinel-Bearer-0b5d2e"

describe("oauth2.client", function()
    local server, clock, clients
    local spec_number = 0

    setup(function() server = fake.start() end)
    teardown(function() if server then server:stop() end end)

    before_each(function()
        server:reset { clients = { ["app-id"] = SECRET, ["other-id"] = SECRET } }
        clock = { t = 1000 }
        clock.read = function() return clock.t end
        clients = {}
        spec_number = spec_number + 1
    end)
    after_each(function()
        for _, c in ipairs(clients) do c:close() end
    end)

    -- A client on the fake clock, without jitter, retries or real waiting.
    local function new_client(extra)
        local opts = {
            host = server.http_url, client_id = "app-id", client_secret = SECRET,
            clock = clock.read,
            refresh_jitter = 0, retries = 0, timeout = 5,
            -- a distinct scope per spec keeps the per-process store separate
            scope = "spec:" .. spec_number,
        }
        for k, v in pairs(extra or {}) do opts[k] = v end
        local c = oauth2.client(opts)
        clients[#clients + 1] = c
        return c
    end

    local function requests() return server:stats().token_requests end

    local function fail_next(n)
        local script = {}
        for i = 1, n do script[i] = { status = 503 } end
        server:control { script = script }
    end

    it("fetches once and then serves the cached token", function()
        local client = new_client()
        local first = assert(client:token())
        local second = assert(client:token())
        assert.equals(first, second)
        assert.equals(1, requests())
        -- whole seconds since the epoch, as oauth2.token gives it
        assert.equals(math.floor(first.expires_at), first.expires_at)
        local stats = client:stats()
        assert.equals(1, stats.fetches)
        assert.equals(1, stats.hits)
        assert.equals(0, stats.failures)
        assert.equals(3600, stats.expires_in)
    end)

    it("returns the Authorization header value", function()
        local client = new_client()
        local token = assert(client:token())
        assert.equals("Bearer " .. token.access_token, client:header())
    end)

    describe("expiry", function()
        it("counts a token expired `margin` seconds early (default: 30 s or 10%)", function()
            server:control { expires_in = 1000 }
            local client = new_client { refresh_ratio = 1 }
            local first = assert(client:token())
            clock.t = 1000 + 899 -- margin is 10% of 1000 s = 100 s
            assert.equals(first, client:token())
            assert.equals(1, requests())
            clock.t = 1000 + 901
            local second = assert(client:token())
            assert.are_not.equal(first.access_token, second.access_token)
            assert.equals(2, requests())
        end)

        it("uses at least 30 s of margin on short lifetimes", function()
            server:control { expires_in = 100 }
            local client = new_client { refresh_ratio = 1 }
            local first = assert(client:token())
            clock.t = 1000 + 69
            assert.equals(first, client:token())
            clock.t = 1000 + 71
            assert.are_not.equal(first, client:token())
        end)

        it("takes a configured margin", function()
            server:control { expires_in = 100 }
            local client = new_client { refresh_ratio = 1, margin = 5 }
            local first = assert(client:token())
            clock.t = 1000 + 94
            assert.equals(first, client:token())
            clock.t = 1000 + 96
            assert.are_not.equal(first, client:token())
        end)

        it("measures the lifetime from when the request was sent", function()
            server:control { expires_in = 1000 }
            -- a session that takes 100 s (on the fake clock) to answer
            local session = oauth2.session()
            local slow = {
                request = function(_, req)
                    local res, err = session:request(req)
                    clock.t = clock.t + 100
                    return res, err
                end,
            }
            local client = new_client { session = slow }
            assert(client:token())
            assert.equals(900, client:stats().expires_in)
            session:close()
        end)

        it("gives a token without expires_in the default lifetime", function()
            server:control { expires_in = cjson.null }
            local client = new_client { default_lifetime = 120, refresh_ratio = 1 }
            local token = assert(client:token())
            assert.is_nil(token.expires_in)
            assert.equals(120, client:stats().expires_in)
            clock.t = 1000 + 89 -- margin: 30 s
            assert.equals(token, client:token())
            clock.t = 1000 + 91
            assert.are_not.equal(token, client:token())
        end)
    end)

    describe("refresh ahead", function()
        it("refreshes past the refresh point while the token is still valid", function()
            server:control { expires_in = 1000 }
            local client = new_client()
            local first = assert(client:token())
            clock.t = 1000 + 799
            assert.equals(first, client:token())
            assert.equals(1, requests())
            clock.t = 1000 + 801
            local second = assert(client:token())
            assert.are_not.equal(first, second)
            assert.equals(2, requests())
            assert.equals(1, client:stats().refreshes)
        end)

        it("spreads refresh points with jitter, never past the expiry", function()
            server:control { expires_in = 1000 }
            local points = {}
            for i = 1, 20 do
                local client = new_client { refresh_jitter = 0.1, scope = "jitter:" .. i }
                assert(client:token())
                points[#points + 1] = client.entry.record.refresh_at - 1000
            end
            table.sort(points)
            assert.is_true(points[1] >= 720 and points[#points] <= 800)
            assert.is_true(points[#points] > points[1])
        end)

        it("serves the old token while a refresh fails, then cools down", function()
            server:control { expires_in = 1000 }
            local client = new_client { cooldown = 5 }
            local first = assert(client:token())
            fail_next(10)
            clock.t = 1000 + 850
            assert.equals(first, client:token())
            assert.equals(2, requests())
            local stats = client:stats()
            assert.equals(1, stats.failures)
            assert.equals(1, stats.stale)
            assert.equals(503, stats.last_error.status)
            -- within the cool-down: no new request, still the old token
            clock.t = 1000 + 854
            assert.equals(first, client:token())
            assert.equals(2, requests())
            -- after it: another try
            clock.t = 1000 + 856
            assert.equals(first, client:token())
            assert.equals(3, requests())
        end)

        it("fails only once the old token has really expired", function()
            server:control { expires_in = 1000 }
            local client = new_client()
            assert(client:token())
            fail_next(10)
            clock.t = 1000 + 901
            local token, err = client:token()
            assert.is_nil(token)
            assert.equals("http", err.kind)
            assert.equals(503, err.status)
        end)
    end)

    describe("failures without a token", function()
        it("are cached for the cool-down, then retried", function()
            fail_next(10)
            local client = new_client { cooldown = 5 }
            local token, err = client:token()
            assert.is_nil(token)
            assert.equals(503, err.status)
            clock.t = clock.t + 2
            local again, err2 = client:token()
            assert.is_nil(again)
            assert.equals(err, err2)
            assert.equals(3, err2.retry_after)
            assert.equals(1, requests())
            clock.t = clock.t + 4
            client:token()
            assert.equals(2, requests())
        end)

        it("count retries in the stats", function()
            server:control { script = { { status = 503 } } }
            local client = new_client { retries = 2, backoff_base = 0.01 }
            assert(client:token())
            local stats = client:stats()
            assert.equals(1, stats.fetches)
            assert.equals(1, stats.retries)
        end)
    end)

    describe("invalidate", function()
        it("drops the token, and refetches only after the cool-down", function()
            local client = new_client { invalidate_cooldown = 10 }
            local first = assert(client:token())
            clock.t = 1000 + 1
            assert.is_true(client:invalidate())
            local token, err = client:token()
            assert.is_nil(token)
            assert.equals("invalidated", err.code)
            assert.equals(1, requests())
            clock.t = 1000 + 11
            local second = assert(client:token())
            assert.are_not.equal(first.access_token, second.access_token)
            assert.equals(2, requests())
            assert.equals(1, client:stats().invalidations)
        end)

        it("refetches at once when the token is older than the cool-down", function()
            local client = new_client { invalidate_cooldown = 10 }
            assert(client:token())
            clock.t = 1000 + 60
            assert.is_true(client:invalidate())
            assert(client:token())
            assert.equals(2, requests())
        end)

        it("cannot hammer the endpoint in a 401 loop", function()
            local client = new_client { invalidate_cooldown = 10 }
            for i = 1, 50 do
                clock.t = 1000 + i * 0.1
                local token = client:token()
                if token then client:invalidate() end
            end
            assert.equals(1, requests())
        end)

        it("drops a copy another process saw rejected within look_every", function()
            -- two processes (two clocks: two first layers) over one store
            local shared = require("oauth2.store").memory { lease = 60 }
            local t = { a = 1000, b = 1000 }
            local a = new_client { store = shared, invalidate_cooldown = 0,
                                   clock = function() return t.a end }
            local b = new_client { store = shared, invalidate_cooldown = 0,
                                   clock = function() return t.b end }
            local old = assert(a:token()).access_token
            assert.equals(old, assert(b:token()).access_token)
            assert.equals(1, requests())
            t.a, t.b = 1001, 1001
            assert.is_true(a:invalidate())
            -- within look_every (4 s) b may still serve its copy; past it, never
            t.b = 1001 + 4.01
            local token = b:token()
            assert.is_true(token == nil or token.access_token ~= old)
            for _ = 1, 5 do
                t.b = t.b + 1
                token = b:token()
                assert.is_true(token == nil or token.access_token ~= old)
            end
        end)

        it("returns false when there is no token", function()
            assert.is_false(new_client():invalidate())
        end)
    end)

    describe("keys", function()
        it("share one token between clients with the same key", function()
            local a = new_client { scope = "shared" }
            local b = new_client { scope = "shared" }
            assert.equals(a:token(), b:token())
            assert.equals(1, requests())
        end)

        it("serve a client without a store from the hot path, beside one with a store",
                function()
            -- one entry (same key and policy), one client on a store
            local shared = require("oauth2.store").memory { lease = 60 }
            local with = new_client { scope = "mixed", store = shared }
            local without = new_client { scope = "mixed" }
            assert(with:token())
            assert(without:token())
            clock.t = clock.t + 10 -- past the entry's next look
            local hits = without:stats().hits
            for _ = 1, 5 do assert(without:token()) end
            -- the first call moves the look on; the rest are plain hits
            assert.equals(hits + 5, without:stats().hits)
            assert.is_true(with.entry.serve_until > clock.t)
            assert.equals(1, requests())
        end)

        it("keep scopes, tenants, bearer tokens and client ids apart", function()
            local base = new_client { scope = "keys" }
            local others = {
                new_client { scope = "keys other" },
                new_client { scope = "keys", x_tenant_id = "tenant-1" },
                new_client { scope = "keys", thousandeyes_bearer_token = BEARER },
                new_client { scope = "keys", client_id = "other-id" },
            }
            local seen = { [assert(base:token()).access_token] = true }
            for _, c in ipairs(others) do
                local token = assert(c:token())
                assert.is_nil(seen[token.access_token])
                seen[token.access_token] = true
            end
            assert.equals(5, requests())
        end)

        it("never hand a cached token to a client with another secret", function()
            local good = new_client { scope = "secret-key" }
            assert(good:token())
            local bad = new_client { scope = "secret-key", client_secret = "wrong-" .. SECRET }
            local token, err = bad:token()
            assert.is_nil(token)
            assert.equals(401, err.status)
        end)

        it("hold secrets only in a keyed hash", function()
            local policy = require "oauth2.policy"
            local options = require "oauth2.options"
            local function key(extra)
                local opts = { client_id = "id", client_secret = SECRET, scope = "hashed",
                               thousandeyes_bearer_token = BEARER }
                for k, v in pairs(extra or {}) do opts[k] = v end
                return policy.cache_key(assert(options.validate(opts)))
            end
            local text = key()
            assert.matches("^%x+$", text)
            assert.is_nil(text:find(SECRET, 1, true))
            assert.is_nil(text:find(BEARER, 1, true))
            -- every input counts, the secret included
            assert.are_not.equal(text, key { client_secret = SECRET .. "2" })
            assert.are_not.equal(text, key { scope = "other" })
            assert.equals(text, key())
        end)
    end)

    describe("connection and lifecycle", function()
        it("holds no connection between fetches, so a dropped client holds none", function()
            server:control { expires_in = 1000 }
            local client = new_client()
            for i = 0, 3 do
                clock.t = 1000 + i * 850
                assert(client:token())
            end
            local stats = server:stats()
            assert.equals(4, stats.token_requests)
            assert.equals(4, stats.token_connections)
        end)

        it("reuses the caller's session across refreshes when given one", function()
            server:control { expires_in = 1000 }
            local session = oauth2.session()
            finally(function() session:close() end)
            local client = new_client { session = session }
            for i = 0, 3 do
                clock.t = 1000 + i * 850
                assert(client:token())
            end
            local stats = server:stats()
            assert.equals(4, stats.token_requests)
            assert.equals(1, stats.token_connections)
        end)

        it("closes idempotently and refuses use after close", function()
            local client = new_client()
            assert(client:token())
            client:close()
            client:close()
            assert.matches("state=closed", tostring(client))
            assert.has_error(function() client:token() end, "oauth2: use of a closed client")
            assert.has_error(function() client:invalidate() end, "oauth2: use of a closed client")
        end)

        it("shows host, client_id and state in tostring, never a secret", function()
            local client = new_client { thousandeyes_bearer_token = BEARER }
            assert.matches("^oauth2.client host=http://127.0.0.1:%d+ client_id=app%-id state=empty$",
                tostring(client))
            local token = assert(client:token())
            local text = tostring(client)
            assert.matches("state=valid expires_in=3600$", text)
            for _, secret in ipairs { SECRET, BEARER, token.access_token } do
                assert.is_nil(text:find(secret, 1, true))
            end
        end)

        it("keeps secrets out of stats", function()
            server:control { script = { { status = 500, body = { error = "server_error",
                error_description = "echo " .. SECRET } } } }
            local client = new_client()
            client:token()
            local stats = client:stats()
            assert.equals("echo [redacted]", stats.last_error.message)
            assert.is_nil(tostring(stats.last_error):find(SECRET, 1, true))
        end)

        it("validates its cache options", function()
            assert.has_error(function() new_client { margin = -1 } end,
                "oauth2: option 'margin' must be a number from 0 to 86400")
            -- values that would burn the rate budget, refused as in oauth2.openresty
            assert.has_error(function() new_client { refresh_ratio = 0 } end,
                "oauth2: option 'refresh_ratio' must be a number above 0 and at most 1")
            assert.has_error(function() new_client { default_lifetime = 0 } end,
                "oauth2: option 'default_lifetime' must be a number from 0.1 to "
                .. "31536000")
            assert.has_error(function() new_client { cooldown = 0 } end,
                "oauth2: option 'cooldown' must be a number from 0.1 to 86400")
            assert.has_error(function() new_client { cooldown = 0 / 0 } end,
                "oauth2: option 'cooldown' must be a number from 0.1 to 86400")
            -- next to 0 is as good as 0: a floor
            assert.has_error(function() new_client { cooldown = 1e-300 } end,
                "oauth2: option 'cooldown' must be a number from 0.1 to 86400")
            assert.has_error(function() new_client { default_lifetime = 1e-300 } end,
                "oauth2: option 'default_lifetime' must be a number from 0.1 to 31536000")
            assert(new_client { cooldown = 0.1, default_lifetime = 0.1 })
            assert.has_error(function() new_client { refresh_ratio = 1.5 } end,
                "oauth2: option 'refresh_ratio' must be a number above 0 and at most 1")
            assert.has_error(function() new_client { clock = 5 } end,
                "oauth2: option 'clock' must be a function")
            local ok, message = pcall(function()
                oauth2.client { client_id = "x", client_secret = SECRET, bogus = 1 }
            end)
            assert.is_false(ok)
            assert.matches("client_spec.lua:%d+: oauth2: unknown option 'bogus'", message)
        end)
    end)
end)
