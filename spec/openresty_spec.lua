-- oauth2.openresty in a real nginx (Debian's nginx with the lua module),
-- two workers, against the fake token endpoint and fake API.

-- nginx runs its own LuaJIT whatever Lua runs busted: spec/run runs this
-- file once per suite (SPEC_NGINX=0 on the other runs)
if os.getenv("SPEC_NGINX") == "0" then return end

local core = require "oauth2.core"
local fake = require "server"
local nginx = require "nginx"
local shell = require "shell"

local SECRET = "sentinel-Secret-ngx-51f0"

-- Read a whole file, or "".
local function slurp(path)
    return shell.read_file(path) or ""
end

describe("oauth2.openresty in nginx", function()
    local server, proxy, base

    -- Start nginx from the spec template with the given cache policy.
    local function start_nginx(policy)
        proxy = nginx.start_test(server, SECRET, {
            MARGIN = policy.margin, REFRESH_RATIO = policy.refresh_ratio,
            COOLDOWN = policy.cooldown, WORKERS = policy.workers,
            DICT_SIZE = policy.dict_size, OPTIONS = policy.options,
        })
        base = proxy.base
    end

    -- This module's stats as one worker sees them (shared: all workers).
    local function token_stats()
        local session = core.session()
        local res = assert(session:request { url = base .. "/stats", timeout = 10 })
        session:close()
        return require("cjson").decode(res.body)
    end

    -- n GETs of path at once over fresh connections; their statuses.
    local function burst(path, n)
        local code, out = shell.run("curl -s --parallel --parallel-immediate --parallel-max " .. n
            .. " -H 'Connection: close' -o /dev/null -w 'code=%{http_code}\\n' '" .. base
            .. path .. "?n=[1-" .. n .. "]'")
        assert.equals(0, code, out)
        local statuses = {}
        for status in out:gmatch("code=(%d+)") do statuses[#statuses + 1] = tonumber(status) end
        return statuses
    end

    -- One GET through nginx: status, headers, body.
    local function get(path)
        local session = core.session()
        local res, err = session:request { url = base .. path, timeout = 10 }
        local headers = session:headers()
        session:close()
        assert(res, err and err.message)
        return res.status, headers, res.body
    end

    local function stats() return server:stats() end

    -- Whether path answers 200 within `tries` GETs a tenth of a second apart.
    local function eventually_ok(path, tries)
        for _ = 1, tries do
            if get(path) == 200 then return true end
            core.sleep(0.1)
        end
        return false
    end

    setup(function()
        nginx.build_module()
        server = fake.start()
    end)
    teardown(function()
        if proxy then proxy:stop() end
        if server then server:stop() end
    end)

    before_each(function()
        server:reset { clients = { ["nginx-id"] = SECRET } }
    end)
    after_each(function()
        if proxy then
            local log = proxy:error_log()
            assert.is_nil(log:find(SECRET, 1, true), "the secret is in error.log")
            assert.is_nil(log:find("Bearer te-", 1, true), "a token is in error.log")
            proxy:stop()
            proxy = nil
        end
    end)

    it("puts the token in the upstream request", function()
        start_nginx {}
        local status, _, body = get("/v7/tests")
        assert.equals(200, status, body)
        assert.matches('"testId": "11"', body)
        local s = stats()
        assert.equals(1, s.token_requests)
        assert.equals(1, s.api_requests)
        assert.equals(0, s.api_unauthorized)
        -- and serves the next requests from the shared dict
        for _ = 1, 5 do assert.equals(200, (get("/v7/tests"))) end
        assert.equals(1, stats().token_requests)
    end)

    it("makes exactly one token request for 200 concurrent requests on a cold cache", function()
        server:control { delay = 0.5 }
        start_nginx {}
        local code, out = shell.run("curl -s --parallel --parallel-max 200 -H 'Connection: close' "
            .. "-o /dev/null -w 'code=%{http_code}\\n' '" .. base .. "/v7/tests?n=[1-200]'")
        assert.equals(0, code, out)
        local ok, total = 0, 0
        for status in out:gmatch("code=(%d+)") do
            total = total + 1
            if status == "200" then ok = ok + 1 end
        end
        assert.equals(200, total)
        assert.equals(200, ok)
        assert.equals(1, stats().token_requests)
    end)

    it("keeps answering on the same worker while the token endpoint takes 2 s", function()
        start_nginx {}
        server:control { delay = 2 }
        local slow_file = proxy.prefix .. "/slow.out"
        -- the slow request: its worker fetches the token (2 s)
        shell.run("curl -s -o /dev/null -w '%{http_code} %{time_total}\\n' '" .. base
            .. "/v7/tests' > " .. shell.quote(slow_file) .. " 2>&1 &")
        core.sleep(0.3)
        -- meanwhile 40 fresh connections, spread over both workers by reuseport
        local code, out = shell.run("curl -s -H 'Connection: close' "
            .. "-w ' %{time_total}\\n' '" .. base .. "/healthz?n=[1-40]'")
        assert.equals(0, code, out)
        local pending_slow = slurp(slow_file)
        local pids, answers = {}, 0
        for pid in out:gmatch("ok (%d+)\n") do
            pids[pid] = true
            answers = answers + 1
        end
        -- wait for the slow request to finish
        local slow
        for _ = 1, 100 do
            slow = slurp(slow_file)
            if slow:match("\n") then break end
            core.sleep(0.1)
        end
        local status = slow:match("^(%d+) ")
        assert.equals("200", status)
        -- it was still waiting for its token when all 40 had their answers
        assert.equals("", pending_slow)
        assert.equals(40, answers)
        local workers = 0
        for _ in pairs(pids) do workers = workers + 1 end
        -- both workers answered, the fetching one included
        assert.equals(2, workers)
        assert.equals(1, stats().token_requests)
    end)

    it("refreshes an expiring token without failing a request", function()
        server:control { expires_in = 3 }
        -- refresh at 1.5 s, expiry (1 s margin) at 2 s
        start_nginx { margin = 1, refresh_ratio = 0.5 }
        local failed = 0
        for _ = 1, 40 do
            local status = get("/v7/tests")
            if status ~= 200 then failed = failed + 1 end
            core.sleep(0.1)
        end
        assert.equals(0, failed)
        local s = stats()
        assert.is_true(s.token_requests >= 2, "token requests: " .. s.token_requests)
        assert.equals(0, s.api_unauthorized)
    end)

    it("answers 503 while the token endpoint is down, and recovers", function()
        local failures = {}
        for i = 1, 20 do failures[i] = { status = 503 } end
        server:control { script = failures }
        start_nginx { cooldown = 2 }
        local status, headers, body = get("/v7/tests")
        assert.equals(503, status)
        assert.equals("application/json", headers["content-type"])
        assert.matches("token_unavailable", body)
        -- within the cool-down the endpoint is not asked again
        assert.equals(503, (get("/v7/tests")))
        assert.equals(1, stats().token_requests)
        assert.matches("oauth2: no access token for the upstream: oauth2: http error 503",
            proxy:error_log())
        -- the endpoint comes back
        server:control { script = {} }
        core.sleep(2.1)
        assert.equals(200, (get("/v7/tests")))
    end)

    it("remembers a reply no retry mends (HTTP/0.9, odd codes) for the cool-down", function()
        local replies = {}
        for i = 1, 30 do
            replies[i] = { raw = i % 2 == 0 and "HTTP/1.1 1000 Odd\r\n\r\n"
                or "no status line\r\n\r\n" }
        end
        server:control { script = replies }
        start_nginx { cooldown = 30 }
        for _ = 1, 3 do assert.equals(503, (get("/v7/tests"))) end
        for _, code in ipairs(burst("/v7/tests", 20)) do assert.equals(503, code) end
        -- one fetch (its attempts: a protocol error is not retried) for all
        assert.equals(1, stats().token_requests)
        local log = proxy:error_log()
        assert.matches("protocol error", log)
        local _, lines = log:gsub("no access token for the upstream", "")
        assert.is_true(lines <= 2, "error.log lines: " .. lines)
    end)

    it("draws different random points in every worker and every nginx", function()
        local seen = {}
        local function sample(node_base)
            local _, out = shell.run(("for i in $(seq 12); do curl -s -H 'Connection: close' "
                .. "'%s/jitter'; done"):format(node_base))
            for pid, point in out:gmatch("(%d+) (%S+)") do
                seen[#seen + 1] = { pid = pid, point = point }
            end
        end
        start_nginx {}
        sample(base)
        local first = proxy
        proxy = nil
        start_nginx {}
        sample(base)
        first:stop()
        local points, pids = {}, {}
        for _, s in ipairs(seen) do
            assert.is_nil(points[s.point], "the same point twice: " .. s.point)
            points[s.point] = true
            pids[s.pid] = true
        end
        local workers = 0
        for _ in pairs(pids) do workers = workers + 1 end
        assert.is_true(workers >= 3, "workers seen: " .. workers)
        assert.equals(24, #seen)
    end)

    it("remembers a thread pool nginx.conf does not declare as a failure", function()
        start_nginx { cooldown = 30, options = 'thread_pool = "no_such_pool",' }
        for _ = 1, 3 do assert.equals(503, (get("/v7/tests"))) end
        for _, code in ipairs(burst("/v7/tests", 20)) do assert.equals(503, code) end
        local log = proxy:error_log()
        assert.matches("thread pool 'no_such_pool'", log)
        -- once per cool-down per worker (two workers)
        local _, lines = log:gsub("thread pool 'no_such_pool'", "")
        assert.is_true(lines <= 2, "error.log lines naming the pool: " .. lines)
        assert.equals(1, token_stats().shared.failures)
    end)

    it("remembers a 429 with an absurd reset, and tells a finite Retry-After", function()
        server:control { script = { { status = 429,
            headers = { ["X-Organization-Rate-Limit-Reset"] = "1e400" } } } }
        start_nginx { cooldown = 5 }
        local status, headers = get("/v7/tests")
        assert.equals(503, status)
        local retry_after = tonumber(headers["retry-after"])
        assert.is_true(retry_after ~= nil and retry_after >= 5 and retry_after <= 86400,
            tostring(headers["retry-after"]))
        assert.equals(math.floor(retry_after), retry_after)
        -- remembered: the next request does not reach the token endpoint
        assert.equals(503, (get("/v7/tests")))
        assert.equals(1, stats().token_requests)
    end)

    it("lets the next caller go on when a fetching light thread is killed", function()
        start_nginx {}
        -- a client's caller waits for the lapsed fetch, then fetches itself;
        -- a caller's session is refused while busy, then taken over
        for _, case in ipairs { { "client", "token" },
                                { "session", "[^\n]*session is busy" } } do
            -- the killed thread's token request hangs past every timeout
            server:control { script = { { status = 503, delay = 3 } } }
            local status, _, body = get("/killed-" .. case[1])
            assert.equals(200, status, body)
            assert.matches("during: " .. case[2], body)
            assert.matches("after: token", body)
        end
    end)

    it("invalidates the token for all workers", function()
        start_nginx { options = "invalidate_cooldown = 0," }
        assert.equals(200, (get("/v7/tests")))
        assert.equals(1, stats().token_requests)
        local status = get("/invalidate")
        assert.equals(200, status)
        -- new connections land on both workers; all must use one new token
        local code, out = shell.run("curl -s -H 'Connection: close' -o /dev/null "
            .. "-w 'code=%{http_code}\\n' '" .. base .. "/v7/tests?n=[1-20]'")
        assert.equals(0, code, out)
        assert.equals(20, select(2, out:gsub("code=200\n", "")))
        assert.equals(2, stats().token_requests)
    end)

    it("lets oauth2.client callers in one worker wait for the fetch in progress", function()
        server:control { delay = 0.5 }
        start_nginx { workers = 1 }
        local statuses = burst("/client-token", 5)
        assert.same({ 200, 200, 200, 200, 200 }, statuses)
        assert.equals(1, stats().token_requests)
    end)

    it("tells on_event of fetches and invalidations, for Prometheus", function()
        start_nginx {}
        assert.equals(200, (get("/v7/tests")))
        assert.equals(200, (get("/invalidate")))
        local status, headers, body = get("/metrics")
        assert.equals(200, status)
        assert.matches("^text/plain", headers["content-type"] or headers["Content-Type"])
        assert.matches('# TYPE oauth2_token_events_total counter\n', body, 1, true)
        assert.matches('oauth2_token_events_total{event="fetch"} 1\n', body, 1, true)
        assert.matches('oauth2_token_events_total{event="invalidation"} 1\n', body, 1, true)
    end)

    it("makes API requests with client:request, many at once in one worker", function()
        server:control { delay = 0.3 }
        start_nginx { workers = 1 }
        local statuses = burst("/api-request", 5)
        assert.same({ 200, 200, 200, 200, 200 }, statuses)
        assert.equals(1, stats().token_requests)
        local _, _, body = get("/api-request")
        assert.equals("200 21\n", body)
    end)

    it("shares one token among all workers through the shared-dict store", function()
        server:control { delay = 0.3 }
        start_nginx { workers = 4 }
        local statuses = burst("/shm-client-token", 40)
        for _, code in ipairs(statuses) do assert.equals(200, code) end
        assert.equals(1, stats().token_requests)
    end)

    it("refuses, rather than blocks, a fetch where nginx cannot yield", function()
        start_nginx {}
        local status, headers = get("/in-header-filter")
        assert.equals(200, status)
        assert.matches("header_filter phase can neither fetch nor wait", headers["x-outcome"])
        assert.equals(0, stats().token_requests)
        -- and that refusal did not count as a failed fetch
        assert.equals(200, (get("/v7/tests")))
    end)

    it("answers 503 after wait_timeout while the endpoint hangs; the fetch goes on", function()
        server:control { delay = 2 }
        start_nginx { options = "wait_timeout = 0.3," }
        local status, headers = get("/v7/tests")
        assert.equals(503, status)
        assert.equals("1", headers["retry-after"])
        for _, code in ipairs(burst("/v7/tests", 20)) do assert.equals(503, code) end
        -- the one fetch lands in the background and serves everyone
        assert.is_true(eventually_ok("/v7/tests", 50))
        assert.equals(1, stats().token_requests)
        assert.matches("waited 0.3 s for the fetch in progress", proxy:error_log())
    end)

    it("takes over at once the lock of a worker killed mid-fetch", function()
        server:control { delay = 3 }
        start_nginx { options = "wait_timeout = 0.2," }
        assert.equals(503, (get("/v7/tests"))) -- its fetch has started
        local owner = token_stats().fetching_pid
        assert.is_number(owner)
        assert.equals(0, (shell.run(("kill -9 %d"):format(owner))))
        server:control { delay = 0 }
        -- the lock's lease is 35 s; its owner is gone, so the next fetch starts now
        assert.is_true(eventually_ok("/v7/tests", 20))
        assert.equals(2, stats().token_requests)
    end)

    it("refuses options that would break it, when nginx starts", function()
        for _, case in ipairs {
            { { refresh_ratio = 0 }, "option 'refresh_ratio' must be a number above 0" },
            { { cooldown = 0 }, "option 'cooldown' must be a number from 0.1" },
            { { options = "default_lifetime = 0," }, "option 'default_lifetime' must be" },
            { { options = "wait_timeout = -1," }, "option 'wait_timeout' must be" },
        } do
            local ok, err = pcall(start_nginx, case[1])
            assert.is_false(ok)
            assert.matches(case[2], err, 1, true)
        end
    end)

    it("refreshes a short-lived token ahead of its expiry with the default policy", function()
        -- lifetime 6 s: margin 3 s (half of it), refresh point at 2.4 s
        server:control { expires_in = 6 }
        start_nginx {}
        for _ = 1, 40 do
            assert.equals(200, (get("/v7/tests")))
            core.sleep(0.1)
        end
        local shared = token_stats().shared
        -- only the cold start waited: every later token came ahead of time
        assert.equals(1, shared.waits)
        assert.is_true(shared.fetches >= 2, "fetches: " .. shared.fetches)
        assert.equals(0, stats().api_unauthorized)
    end)

    it("says once when the dict cannot hold the token, and fetches per worker only", function()
        server:control { token_padding = 12000 }
        start_nginx { dict_size = "12k" }
        for _ = 1, 10 do assert.equals(200, (get("/v7/tests"))) end
        local requests = stats().token_requests
        assert.is_true(requests >= 1 and requests <= 2, "token requests: " .. requests)
        local _, warnings = proxy:error_log():gsub("cannot hold the token", "")
        assert.is_true(warnings >= 1 and warnings <= 2, "warnings: " .. warnings)
    end)

    it("logs a failure once per cool-down per worker, then with a count", function()
        local failures = {}
        for i = 1, 10 do failures[i] = { status = 503 } end
        server:control { script = failures }
        start_nginx { cooldown = 3 }
        for _, code in ipairs(burst("/v7/tests", 50)) do assert.equals(503, code) end
        local _, lines = proxy:error_log():gsub("no access token for the upstream", "")
        assert.is_true(lines >= 1 and lines <= 2, "lines: " .. lines)
        core.sleep(3.2) -- past the cool-down: the next failures are logged again
        for _, code in ipairs(burst("/v7/tests", 10)) do assert.equals(503, code) end
        assert.matches("and %d+ more requests since the last message", proxy:error_log())
    end)

    it("keeps a 429 for as long as the server asked, counting Retry-After down", function()
        server:control { script = { { status = 429, headers = { ["Retry-After"] = "60" } } } }
        start_nginx { cooldown = 0.5 }
        local status, headers = get("/v7/tests")
        assert.equals(503, status)
        local first = tonumber(headers["retry-after"])
        assert.is_true(first >= 59 and first <= 60, tostring(first))
        core.sleep(1.1) -- past the cool-down, far from the server's minute
        status, headers = get("/v7/tests")
        assert.equals(503, status)
        assert.is_true(tonumber(headers["retry-after"]) < first, headers["retry-after"])
        assert.equals(1, stats().token_requests)
    end)

    it("makes at most one token request for 100 upstream 401s, with 4 workers", function()
        -- without the cool-down, so it cannot hide a late 401 of the old
        -- token dropping the new one
        start_nginx { workers = 4, options = "invalidate_cooldown = 0," }
        for _, code in ipairs(burst("/v7/tests", 40)) do assert.equals(200, code) end
        assert.equals(1, stats().token_requests)
        -- the API rejects every token issued so far: 100 requests at once
        server:control { revoke = true }
        local statuses = burst("/v7/tests", 100)
        assert.equals(100, #statuses)
        -- (on a busy machine all 100 may pass with the old token before
        -- its first 401 purges it: then the fetch comes with the next)
        local requests = stats().token_requests
        assert.is_true(requests == 1 or requests == 2, "token requests: " .. requests)
        assert.is_true(stats().api_unauthorized >= 1)
        -- the new token serves; a 401 of the old one did not drop it
        for _, code in ipairs(burst("/v7/tests", 20)) do assert.equals(200, code) end
        assert.equals(2, stats().token_requests)
        assert.equals(1, token_stats().shared.invalidations)
    end)

    it("fetches in an nginx thread pool when one is named", function()
        server:control { delay = 0.3 }
        start_nginx { options = 'thread_pool = "oauth2",' }
        for _, code in ipairs(burst("/v7/tests", 50)) do assert.equals(200, code) end
        assert.equals(1, stats().token_requests)
        assert.equals(1, token_stats().shared.fetches)
    end)

    it("fetches in a thread pool with the debug trace on (no function crosses into it)",
        function()
        start_nginx { options = 'thread_pool = "oauth2", debug = true,' }
        for _, code in ipairs(burst("/v7/tests", 5)) do assert.equals(200, code) end
        assert.equals(1, stats().token_requests)
    end)

    it("injects a User API token as it is, and says once that the API refused it", function()
        server:control { api_tokens = { "nginx-user-api-token" } }
        local port = nginx.free_port()
        base = "http://127.0.0.1:" .. port
        -- the example configuration, with nothing but the User API token
        proxy = nginx.start(nginx.example(port, server.https_url:gsub("^https://", ""),
            server.ca_file), { THOUSANDEYES_API_TOKEN = "nginx-user-api-token",
                               THOUSANDEYES_HOST = server.http_url })
        local status, _, body = get("/v7/tests")
        assert.equals(200, status, body)
        assert.equals(0, stats().token_requests)
        status, _, body = get("/oauth2-stats")
        assert.equals(200, status, body)
        assert.is_true(require("cjson").decode(body).static)
        -- the token is revoked in the dashboard: each 401 passed on, said once
        server:control { revoke = true }
        assert.equals(401, (get("/v7/tests")))
        assert.equals(401, (get("/v7/tests")))
        local log = proxy:error_log()
        local _, said = log:gsub("answered 401 to the User API token", "")
        assert.is_true(said >= 1 and said <= 2, log) -- (once per worker)
        assert.is_nil(log:find("nginx-user-api-token", 1, true))
        assert.equals(0, stats().token_requests)
    end)

    it("runs the example configuration with only its addresses replaced", function()
        local port = nginx.free_port()
        base = "http://127.0.0.1:" .. port
        local config = nginx.example(port, server.https_url:gsub("^https://", ""),
            server.ca_file)
        -- credentials and the token host come from the environment
        local env = { THOUSANDEYES_CLIENT_ID = "nginx-id", THOUSANDEYES_CLIENT_SECRET = SECRET,
                      THOUSANDEYES_HOST = server.http_url }
        proxy = nginx.start(config, env)
        local status, _, body = get("/v7/tests")
        assert.equals(200, status, body)
        assert.equals(0, stats().api_unauthorized)
        assert.equals(1, stats().token_requests)
        -- a listing's next link names the proxy, and works through it
        local next_href = require("cjson").decode(body)._links.next.href
        assert.equals(base .. "/v7/tests?cursor=2", next_href)
        status, _, body = get(next_href:sub(#base + 1))
        assert.equals(200, status, body)
        assert.matches('"testId": ?"21"', body)
        -- its stats location
        status, _, body = get("/oauth2-stats")
        assert.equals(200, status, body)
        local shared = require("cjson").decode(body).shared
        assert.equals(1, shared.fetches)
        -- its Prometheus counters
        status, _, body = get("/metrics")
        assert.equals(200, status, body)
        assert.matches('oauth2_token_events_total{event="fetch"} 1\n', body, 1, true)
        -- and its purge on 401: the rejected token is never sent again,
        -- and the next fetch waits for invalidate_cooldown (10 s) after
        -- the last, so a token rejected this fresh means a 503 meanwhile
        server:control { revoke = true }
        assert.equals(401, (get("/v7/tests")))
        local headers
        status, headers = get("/v7/tests")
        assert.equals(503, status)
        local wait = tonumber(headers["retry-after"])
        assert.is_true(wait >= 1 and wait <= 10, tostring(wait))
        assert.equals(1, stats().token_requests)
        -- a binary upgrade (USR2, what Debian's upgrade action sends): the
        -- new master has the credentials only through the env directives
        local pid_file = proxy.prefix .. "/logs/nginx.pid"
        local old = slurp(pid_file):match("%d+")
        finally(function() shell.run("kill -QUIT " .. old .. " 2>/dev/null") end)
        assert.equals(0, (shell.run("kill -USR2 " .. old)))
        local new
        for _ = 1, 200 do
            new = slurp(pid_file):match("%d+")
            if new and new ~= old then break end
            core.sleep(0.05)
        end
        assert.is_not.equals(old, new, proxy:error_log():sub(-1500))
        shell.run("kill -QUIT " .. old)
        for _ = 1, 200 do
            if slurp(pid_file .. ".oldbin") == "" then break end
            core.sleep(0.05)
        end
        -- the new master's workers answer, configured
        status, _, body = get("/oauth2-stats")
        assert.equals(200, status, body)
        assert.is_nil(proxy:error_log():find("is required", 1, true))
    end)
end)
