-- API requests with the token: client:request, client:pages and
-- oauth2.request against the fake ThousandEyes API (token endpoint plus
-- /v7/tests with three pages, 401 for a revoked token, scripted 429/503).

local fake = require "server"
local oauth2 = require "oauth2"
local cjson = require "cjson"

local SECRET = "sentinel-Secret-api-5d2b"

describe("API requests", function()
    local server, client, events

    setup(function()
        server = fake.start()
    end)
    teardown(function()
        if server then server:stop() end
    end)
    before_each(function()
        server:reset { clients = { ["api-id"] = SECRET } }
        events = {}
        -- a clock of its own: a client shares no cached token with the
        -- clients of earlier tests (their tokens died with the reset)
        local now = require("oauth2.core").now
        client = oauth2.client { host = server.http_url, client_id = "api-id",
            clock = function() return now() end,
            client_secret = SECRET, retries = 2, backoff_base = 0.01, backoff_max = 0.02,
            invalidate_cooldown = 0,
            on_event = function(event, info) events[#events + 1] = { event, info } end }
    end)
    after_each(function()
        client:close()
    end)

    local function last_api()
        local log = server:stats().api_log
        return log[#log]
    end

    it("gets the data of a GET, with the status, lower-case headers and decoded JSON", function()
        local res = assert(client:request("GET", "/v7/tests"))
        assert.equals(200, res.status)
        assert.is_true(res.ok)
        assert.is_nil(res:error())
        assert.matches("^application/hal%+json", res.headers["content-type"])
        assert.equals("11", res.json.tests[1].testId)
        assert.is_string(res.body)
        assert.equals(1, server:stats().token_requests)
        -- a path without its slash works too, and the token is reused
        res = assert(client:request("get", "v7/tests"))
        assert.equals(200, res.status)
        assert.equals(1, server:stats().token_requests)
    end)

    it("sends query parameters, a JSON body and extra headers", function()
        local res = assert(client:request("POST", "/v7/tests/http-server", {
            query = { aid = 1234, expand = { "a b", "c" } },
            json = { testName = "probe", interval = 60 },
            headers = { ["X-Extra"] = "yes" },
        }))
        assert.equals(200, res.status)
        local seen = last_api()
        assert.equals("POST", seen.method)
        assert.equals("aid=1234&expand=a%20b&expand=c", seen.query)
        assert.same({ testName = "probe", interval = 60 }, cjson.decode(seen.body))
        assert.equals("application/json", seen.headers["content-type"])
        assert.equals("yes", seen.headers["x-extra"])
    end)

    it("sends a raw body with its content type, and any method", function()
        for _, method in ipairs { "PUT", "PATCH", "DELETE" } do
            local res = assert(client:request(method, "/v7/tags/1", {
                body = "a,b", content_type = "text/csv" }))
            assert.equals(200, res.status)
            assert.equals(method, res.json.method)
            assert.equals("a,b", res.json.body)
            assert.equals("text/csv", last_api().headers["content-type"])
        end
    end)

    it("costs one token request and one retry for a revoked token", function()
        assert(client:request("GET", "/v7/tests"))
        server:control { revoke = true }
        local before = server:stats().api_requests
        local res = assert(client:request("GET", "/v7/tests"))
        assert.equals(200, res.status)
        local stats = server:stats()
        assert.equals(2, stats.token_requests)
        assert.equals(before + 2, stats.api_requests)
        local seen = {}
        for _, e in ipairs(events) do seen[#seen + 1] = e[1] end
        assert.same({ "fetch", "invalidation", "api_401", "fetch" }, seen)
    end)

    it("waits out the invalidation cool-down of a token rejected right after its fetch",
        function()
        local fresh = oauth2.client { host = server.http_url, client_id = "api-id",
            client_secret = SECRET, invalidate_cooldown = 1, scope = "cooldown:test" }
        finally(function() fresh:close() end)
        assert(fresh:request("GET", "/v7/tests"))
        server:control { revoke = true }
        local res = assert(fresh:request("GET", "/v7/tests"))
        assert.equals(200, res.status)
        assert.equals(2, server:stats().token_requests)
    end)

    it("waits out the invalidation cool-down on the client's clock, though a sleep ends early",
        function()
        local runtime = oauth2.runtime
        local t, slept, real_sleep = 1000, 0, runtime.sleep
        -- each sleep ends 3 ms early on the client's (injected) clock
        runtime.sleep = function(seconds)
            slept = slept + 1
            t = t + seconds - 0.003
        end
        local fresh = oauth2.client { host = server.http_url, client_id = "api-id",
            client_secret = SECRET, invalidate_cooldown = 5, scope = "cooldown:clock",
            clock = function() return t end }
        finally(function()
            runtime.sleep = real_sleep
            fresh:close()
        end)
        assert(fresh:request("GET", "/v7/tests"))
        server:control { revoke = true }
        local res, err = fresh:request("GET", "/v7/tests")
        assert.is_nil(err)
        assert.equals(200, res.status)
        assert.equals(2, server:stats().token_requests)
        assert.is_true(slept >= 1)
        assert.is_true(t >= 1005, "the cool-down was not waited out: " .. t)
    end)

    it("waits for a Retry-After given as an HTTP date, as the token path does", function()
        -- (a body of its own: no rate-limit headers, only the date)
        server:control { api_script = { { status = 429, body = { title = "Too Many Requests" },
            headers = { ["Retry-After"] = "Fri, 31 Dec 2099 23:59:59 GMT" } } } }
        local res = assert(client:request("GET", "/v7/tests", { deadline = 2 }))
        -- a wait past the deadline: the 429 comes back, with no second try
        assert.equals(429, res.status)
        assert.equals(1, server:stats().api_requests)
        assert.equals(86400, res.retry_after)
    end)

    it("gives the 401 back when a fresh token is refused too", function()
        assert(client:request("GET", "/v7/tests"))
        -- every token, the fresh one too, is refused
        server:control { api_script = { { status = 401 }, { status = 401 } } }
        local res = assert(client:request("GET", "/v7/tests"))
        assert.equals(401, res.status)
        assert.equals(2, server:stats().token_requests)
    end)

    it("waits out a 429 as told, within the deadline", function()
        server:control { api_script = { { status = 429, headers = { ["Retry-After"] = "1" } } } }
        local res = assert(client:request("GET", "/v7/tests"))
        assert.equals(200, res.status)
        assert.equals(2, server:stats().api_requests)
        -- it waited what the server asked
        local seen = {}
        for _, e in ipairs(events) do seen[e[1]] = e[2] end
        assert.equals(1, seen.api_429.wait)
    end)

    it("gives the 429 back when its wait would pass the deadline", function()
        server:control { api_script = { { status = 429, headers = {
            ["X-Organization-Rate-Limit-Reset"] = tostring(os.time() + 60) } } } }
        local res = assert(client:request("GET", "/v7/tests", { deadline = 2 }))
        assert.equals(429, res.status)
        assert.equals(1, server:stats().api_requests)
    end)

    -- the retry loop's sleeps, recorded instead of slept
    local function record_sleeps()
        local runtime, slept = oauth2.runtime, {}
        local real_sleep = runtime.sleep
        runtime.sleep = function(seconds) slept[#slept + 1] = seconds end
        finally(function() runtime.sleep = real_sleep end)
        return slept
    end

    local function events_named(name)
        local list = {}
        for _, e in ipairs(events) do
            if e[1] == name then list[#list + 1] = e[2] end
        end
        return list
    end

    it("says what it has cached, never the token, and forgets it on request", function()
        assert.is_nil(client:cached())
        local token = assert(client:token())
        local held = assert(client:cached())
        assert.equals("Bearer", held.token_type)
        assert.equals("memory", held.store)
        assert.is_nil(held.access_token)
        -- (os.time() reads a coarse clock that may lag the precise one by a
        -- tick: a fetch at x.9995 s may read as x + 1 against it)
        local now = os.time()
        assert.is_true(held.fetched_at <= now + 1 and held.fetched_at >= now - 5)
        assert.is_true(held.refresh_at > now and held.refresh_at < held.expires_at)
        assert.is_true(held.expires_at <= now + 3600)
        assert.is_true(client:forget())
        assert.is_nil(client:cached())
        assert.is_false(client:forget())
        local again = assert(client:token())
        assert.are_not.equals(token.access_token, again.access_token)
        assert.equals(2, server:stats().token_requests)
    end)

    it("gives the organization's rate limit with every answer", function()
        server:control { rate_limit = { limit = 240, remaining = 17, reset = 1900000000 } }
        local res = assert(client:request("GET", "/v7/tests"))
        assert.same({ limit = 240, remaining = 17, reset = 1900000000 }, res.rate_limit)
        -- an answer without the headers has none
        server:control { api_script = { { status = 200, body = {} } } }
        res = assert(client:request("GET", "/v7/tests"))
        assert.is_nil(res.rate_limit)
    end)

    it("waits for the reset of the family that refused a 429", function()
        local slept = record_sleeps()
        -- the instant-test limit is spent (reset in 3 s); the organization's
        -- is not (reset in 50 s): the wait is the instant tests'
        server:control { api_script = { { status = 429, body = { title = "Too Many Requests" },
            headers = {
                ["X-Instant-Test-Rate-Limit-Remaining"] = "0",
                ["X-Instant-Test-Rate-Limit-Reset"] = tostring(os.time() + 3),
                ["X-Organization-Rate-Limit-Remaining"] = "100",
                ["X-Organization-Rate-Limit-Reset"] = tostring(os.time() + 50),
            } } } }
        local res = assert(client:request("POST", "/v7/tests/http-server/instant", {
            json = {}, idempotent = true }))
        assert.equals(200, res.status)
        assert.equals(1, #slept)
        assert.is_true(slept[1] >= 1 and slept[1] <= 4, "waited " .. slept[1])
        local told = events_named("api_429")
        assert.equals(1, #told)
        assert.equals(slept[1], told[1].wait)
        -- a template deployment's limit the same way
        slept[1] = nil
        server:control { api_script = { { status = 429, body = { title = "Too Many Requests" },
            headers = {
                ["X-Template-Deploy-Rate-Limit-Remaining"] = "0",
                ["X-Template-Deploy-Rate-Limit-Reset"] = tostring(os.time() + 2),
            } } } }
        assert.equals(200, assert(client:request("GET", "/v7/templates")).status)
        assert.is_true(slept[1] >= 0.5 and slept[1] <= 3, "waited " .. slept[1])
    end)

    it("tells on_event of every wait, a 5xx retry's too", function()
        local slept = record_sleeps()
        server:control { api_script = { { status = 503 }, { status = 502 } } }
        assert.equals(200, assert(client:request("GET", "/v7/tests")).status)
        local told = events_named("api_retry")
        assert.equals(2, #told)
        assert.equals(503, told[1].status)
        assert.equals(502, told[2].status)
        assert.equals("GET", told[1].method)
        assert.same({ told[1].wait, told[2].wait }, slept)
    end)

    it("paces: waits out an exhausted limit before sending, when asked to", function()
        local slept = record_sleeps()
        local now = require("oauth2.core").now
        local paced = oauth2.client { host = server.http_url, client_id = "api-id",
            client_secret = SECRET, clock = function() return now() end, pace = true,
            on_event = function(event, info) events[#events + 1] = { event, info } end }
        finally(function() paced:close() end)
        local spent = { status = 200, body = { ok = true }, headers = {
            ["X-Organization-Rate-Limit-Remaining"] = "0",
            ["X-Organization-Rate-Limit-Reset"] = tostring(os.time() + 20) } }
        server:control { api_script = { spent } }
        assert(paced:request("GET", "/v7/tests"))
        assert.equals(0, #slept)
        -- the last answer said nothing remains: the next request waits first
        assert.equals(200, assert(paced:request("GET", "/v7/tests")).status)
        assert.equals(1, #slept)
        assert.is_true(slept[1] > 15 and slept[1] <= 21, "waited " .. slept[1])
        -- (told the wait; the sleep adds a few ms for a coarse clock)
        assert.is_true(math.abs(slept[1] - events_named("api_pace")[1].wait) < 0.01)
        -- a wait past the deadline is not made: the request goes, the
        -- server decides
        server:control { api_script = { spent } }
        assert(paced:request("GET", "/v7/tests"))
        assert(paced:request("GET", "/v7/tests", { deadline = 5 }))
        assert.equals(1, #slept)
        -- without pace, no wait
        server:control { api_script = { spent } }
        assert(client:request("GET", "/v7/tests"))
        assert(client:request("GET", "/v7/tests"))
        assert.equals(1, #slept)
    end)

    it("keeps a paced request inside its deadline, and sends none with no time left",
            function()
        -- a virtual clock for the waits: a sleep moves it on at once
        local runtime, core = oauth2.runtime, require "oauth2.core"
        local real_now, real_sleep, offset = runtime.now, runtime.sleep, 0
        runtime.now = function() return core.now() + offset end
        runtime.sleep = function(seconds) offset = offset + seconds end
        local jump = 0
        local paced = oauth2.client { host = server.http_url, client_id = "api-id",
            client_secret = SECRET, clock = function() return core.now() end, pace = true,
            retries = 0, on_event = function(event)
                if event == "api_pace" then offset = offset + jump end
            end }
        finally(function()
            runtime.now, runtime.sleep = real_now, real_sleep
            paced:close()
        end)
        -- (the reset as a number of seconds, which is taken at its word: on
        -- the virtual clock, whatever the real one did meanwhile)
        local spent = { status = 200, body = { ok = true }, headers = {
            ["X-Organization-Rate-Limit-Remaining"] = "0",
            ["X-Organization-Rate-Limit-Reset"] = "2" } }
        -- nothing left, reset in 2 s; then a server that stalls 2.5 s: the
        -- attempt gets what the pacing left of 3 s (1 s), not 3 s
        server:control { api_script = { spent, { status = 200, delay = 2.5,
            body = { ok = true } } } }
        assert(paced:request("GET", "/v7/tests"))
        local res, err = paced:request("GET", "/v7/tests", { deadline = 3 })
        assert.is_nil(res)
        assert.equals("timeout", err.kind)
        -- a wait before sending that takes the whole deadline: nothing sent
        server:control { api_script = { spent } }
        assert(paced:request("GET", "/v7/tests"))
        jump = 10
        local before = server:stats().api_requests
        res, err = paced:request("GET", "/v7/tests", { deadline = 3 })
        assert.is_nil(res)
        assert.equals("timeout", err.kind)
        assert.matches("deadline passed before the request was sent", err.message)
        assert.equals(before, server:stats().api_requests)
    end)

    it("retries a GET on 503 but not a POST unless asked", function()
        server:control { api_script = { { status = 503 } } }
        local res = assert(client:request("GET", "/v7/tests"))
        assert.equals(200, res.status)
        server:control { api_script = { { status = 503 } } }
        res = assert(client:request("POST", "/v7/tests/http-server", { json = {} }))
        assert.equals(503, res.status)
        server:control { api_script = { { status = 503 } } }
        res = assert(client:request("POST", "/v7/tests/http-server", { json = {},
            idempotent = true }))
        assert.equals(200, res.status)
    end)

    it("walks the three pages of a listing", function()
        local ids = {}
        for page, res in client:pages("/v7/tests") do
            assert.is_table(page, tostring(res))
            assert.equals(200, res.status)
            for _, test in ipairs(page.tests) do ids[#ids + 1] = test.testId end
        end
        assert.same({ "11", "12", "21", "22", "31", "32" }, ids)
        assert.equals(1, server:stats().token_requests)
        -- and stops at max_pages, saying so
        local pages = 0
        for page in client:pages("/v7/tests", { max_pages = 2 }) do
            if page then pages = pages + 1 end
        end
        assert.equals(2, pages)
    end)

    it("makes one attempt however short the deadline, and answers or errs", function()
        assert(client:token())
        local res, err = client:request("GET", "/v7/tests", { deadline = 0.0001 })
        assert.is_true(res ~= nil or oauth2.is_error(err))
    end)

    it("adds the client's aid to every request that names none", function()
        local now = require("oauth2.core").now
        local with_aid = oauth2.client { host = server.http_url, client_id = "api-id",
            client_secret = SECRET, aid = 1234, clock = function() return now() end }
        finally(function() with_aid:close() end)
        assert(with_aid:request("GET", "/v7/agents"))
        assert.equals("aid=1234", last_api().query)
        assert(with_aid:request("GET", "/v7/agents", { query = { aid = "99", x = "y" } }))
        assert.equals("aid=99&x=y", last_api().query)
        assert(with_aid:request("GET", "/v7/agents?aid=7"))
        assert.equals("aid=7", last_api().query)
        local pages = 0
        for page in with_aid:pages("/v7/tests") do
            assert.is_table(page)
            assert.matches("aid=1234", last_api().query, 1, true)
            pages = pages + 1
        end
        assert.equals(3, pages)
        assert.has_error(function() oauth2.client { client_id = "x", client_secret = SECRET,
            host = server.http_url, aid = "12a" } end,
            "oauth2: option 'aid' must be an account group id (digits, such as \"1234\")")
    end)

    it("says a 4xx is not ok and gives its problem as an error, secrets scrubbed", function()
        local token = assert(client:token()).access_token
        server:control { api_script = { { status = 400, body = {
            type = "https://developer.thousandeyes.com/v7/problems/validation",
            title = "Bad Request", detail = "token " .. token .. " cannot " .. SECRET,
            errors = { { code = "E1", field = "interval", message = "must be 60 or more" } },
        } } } }
        local res = assert(client:request("POST", "/v7/tests/http-server", {
            json = { interval = 1 } }))
        assert.equals(400, res.status)
        assert.is_false(res.ok)
        local err = res:error()
        assert.is_true(oauth2.is_error(err))
        assert.equals("http", err.kind)
        assert.equals(400, err.status)
        assert.equals("Bad Request", err.title)
        assert.equals("https://developer.thousandeyes.com/v7/problems/validation", err.code)
        assert.equals("interval", err.errors[1].field)
        local text = tostring(err)
        assert.matches("http error 400", text, 1, true)
        assert.matches("must be 60 or more", text, 1, true)
        assert.equals(text, "" .. err)
        -- the token and the secret the server echoed never reach the error
        assert.is_nil(text:find(token, 1, true))
        assert.is_nil(text:find(SECRET, 1, true))
        assert.matches("token [redacted] cannot [redacted]", err.detail, 1, true)
    end)

    it("walks the items of every page, and says when max_pages stops a walk", function()
        local ids = {}
        for page in client:pages("/v7/tests") do
            for _, test in ipairs(page.tests) do ids[#ids + 1] = test.testId end
        end
        assert.equals(3, server:stats().api_requests)
        local items = {}
        for test, err in client:items("/v7/tests", "tests") do
            assert.is_nil(err)
            items[#items + 1] = test.testId
        end
        assert.same(ids, items)
        -- two pages of three: the walk ends with the limit said, once
        local steps = {}
        for page, err in client:pages("/v7/tests", { max_pages = 2 }) do
            steps[#steps + 1] = page or err
        end
        assert.equals(3, #steps)
        assert.equals("max_pages", steps[3].code)
        assert.matches("more than max_pages (2) pages", tostring(steps[3]), 1, true)
        local last
        for test, err in client:items("/v7/tests", "tests", { max_pages = 1 }) do
            last = test or err
        end
        assert.equals("max_pages", last.code)
        -- a page without the list named: an error, not a raise
        for test, err in client:items("/v7/tests", "agents") do
            assert.is_false(test)
            assert.matches("no list 'agents'", tostring(err), 1, true)
        end
        assert.has_error(function() client:items("/v7/tests") end,
            "oauth2: the field must name the list of items on each page, such as \"tests\"")
    end)

    it("gives a failed page as false and the error, then ends", function()
        server:control { api_script = { { status = 400, body = {
            title = "Bad Request", detail = "unknown aid" } } } }
        local steps = {}
        for page, err in client:pages("/v7/tests", { retries = 0 }) do
            steps[#steps + 1] = { page, err }
        end
        assert.equals(1, #steps)
        assert.is_false(steps[1][1])
        assert.matches("unknown aid", tostring(steps[1][2]))
    end)

    it("asks a next link off the API's origin of the API's origin, and never raises for one",
            function()
        -- the link's host is never asked: its path and query go to the
        -- configured API origin (the token goes nowhere else)
        for _, link in ipairs { "https://evil.example/v7/tests?cursor=3",
                                "http://evil.example/v7/tests?cursor=3" } do
            local before = server:stats().api_requests
            server:control { api_script = { { status = 200, body = {
                tests = { { testId = "1" } }, _links = { next = { href = link } } } } } }
            local ids = {}
            for page, err in client:pages("/v7/tests", { retries = 0 }) do
                assert.is_table(page, tostring(err))
                for _, test in ipairs(page.tests) do ids[#ids + 1] = test.testId end
            end
            assert.same({ "1", "31", "32" }, ids, link)
            assert.equals(before + 2, server:stats().api_requests)
            assert.equals("cursor=3", last_api().query)
        end
        -- a link that is no http(s) URL is refused, as an error of the walk
        local before = server:stats().api_requests
        server:control { api_script = { { status = 200, body = {
            tests = { { testId = "1" } }, _links = { next = { href = "ftp://"
                .. server.http_url:match("//(.*)") .. "/v7/tests" } } } } } }
        local steps = {}
        for page, err in client:pages("/v7/tests", { retries = 0 }) do
            steps[#steps + 1] = { page, err }
        end
        assert.equals(2, #steps)
        assert.equals("1", steps[1][1].tests[1].testId)
        assert.is_false(steps[2][1])
        assert.equals("protocol", steps[2][2].kind)
        assert.matches("next page's link was not followed", tostring(steps[2][2]))
        assert.equals(before + 1, server:stats().api_requests)
    end)

    it("refuses a full URL on another host unless allowed, and misuse", function()
        assert.has_error(function() client:request("GET", "https://example.com/v7/tests") end,
            "oauth2: https://example.com is not on the API's host " .. server.http_url
                .. "; the token goes nowhere else")
        -- allow_other_host names hosts; "anywhere" is no option
        assert.has_error(function()
            client:request("GET", "https://example.com/v7/tests", { allow_other_host = true })
        end, 'oauth2: request option \'allow_other_host\' must list host names, such as '
            .. '{ "other.example.com" }')
        -- a named host over plain http:// (not loopback) is still refused
        assert.has_error(function()
            client:request("GET", "http://example.com/v7/tests",
                { allow_other_host = { "example.com" } })
        end, "oauth2: http://example.com is plain http://: the token does not travel in clear")
        assert.has_error(function() client:request("GET", "/v7/tests", { bogus = 1 }) end,
            "oauth2: unknown request option 'bogus'")
        assert.has_error(function() client:request(42, "/v7/tests") end)
        assert.has_error(function()
            client:request("POST", "/v7/x", { json = {}, body = "x", content_type = "a/b" })
        end, "oauth2: options 'json' and 'body' exclude each other")
        assert.has_error(function()
            client:request("GET", "/v7/x", { headers = { Authorization = "Bearer x" } })
        end, "oauth2: option 'headers' must not set Authorization: the client does")
        for _, value in ipairs { "a\1b", "a\rb", "a\nX-Injected: 1", "a\0b", "a\127" } do
            assert.has_error(function()
                client:request("GET", "/v7/x", { headers = { ["X-A"] = value } })
            end, "oauth2: option 'headers' has a value with a control character (CR, LF, "
                .. "NUL...): refused, as header injection")
        end
        assert.has_error(function()
            client:request("GET", "/v7/x", { headers = { ["X A"] = "v" } })
        end, "oauth2: option 'headers' has a name that is no header name (a token such as "
            .. "X-Trace)")
        -- a tab is a field value's own
        assert(client:request("GET", "/v7/tests", { headers = { ["X-A"] = "a\tb" } }))
        -- a full URL on the API's own host is fine
        local res = assert(client:request("GET", server.http_url .. "/v7/tests"))
        assert.equals(200, res.status)
    end)

    it("makes one call with oauth2.request", function()
        local res = assert(oauth2.request("GET", "/v7/tests", { host = server.http_url,
            client_id = "api-id", client_secret = SECRET, query = { cursor = 2 } }))
        assert.equals("21", res.json.tests[1].testId)
    end)

    it("passes no secret or token to the event hook", function()
        assert(client:request("GET", "/v7/tests"))
        server:control { revoke = true }
        assert(client:request("GET", "/v7/tests"))
        local text = cjson.encode(events)
        assert.is_nil(text:find(SECRET, 1, true))
        assert.is_nil(text:find("te%-%x+"))
    end)
end)

describe("what ThousandEyes' API descriptions expect", function()
    local server, client

    setup(function()
        server = fake.start()
    end)
    teardown(function()
        if server then server:stop() end
    end)
    -- a clock of this test's own: its clients share no token with the
    -- clients of earlier tests (whose tokens died with the reset)
    local clock
    before_each(function()
        server:reset { clients = { ["api-id"] = SECRET } }
        local now = require("oauth2.core").now
        clock = function() return now() end
        client = oauth2.client { host = server.http_url, client_id = "api-id",
            client_secret = SECRET, retries = 0, clock = clock }
    end)
    after_each(function()
        client:close()
    end)

    local function api_log()
        return server:stats().api_log
    end
    local function last_api()
        local log = api_log()
        return log[#log]
    end

    it("sends an empty array as [], and keeps the arrays of a GET, modify, PUT round trip",
            function()
        assert(client:request("POST", "/v7/tests/http-server", { json = {
            testName = "t", alertRules = oauth2.empty_array,
            labels = setmetatable({}, oauth2.array_mt), agents = { { agentId = 1 } } } }))
        local sent = last_api().body
        assert.matches('"alertRules":[]', sent, 1, true)
        assert.matches('"labels":[]', sent, 1, true)
        assert.matches('"agents":[{"agentId":1}]', sent, 1, true)
        -- a plain empty table is still an object
        assert(client:request("POST", "/v7/tests/http-server", { json = { headers = {} } }))
        assert.equals('{"headers":{}}', last_api().body)
        -- what the API sent as [] goes back as []; "[]" in a string stays a string
        -- (as text: this side's cjson would write the empty lists as {})
        server:control { api_script = { { status = 200, body = '{"testId": "1", '
            .. '"alertRules": [], "sharedWithAccounts": [ ], "testName": "[] x", '
            .. '"nested": [{"labels": []}]}' } } }
        local res = assert(client:request("GET", "/v7/tests/http-server/1"))
        local test = res.json
        assert.same({}, test.alertRules)
        test.testName = "renamed"
        assert(client:request("PUT", "/v7/tests/http-server/1", { json = test }))
        local back = last_api().body
        assert.matches('"alertRules":[]', back, 1, true)
        assert.matches('"sharedWithAccounts":[]', back, 1, true)
        assert.matches('"nested":[{"labels":[]}]', back, 1, true)
        assert.matches('"testName":"renamed"', back, 1, true)
        -- a cycle is an error of the call, not a raise
        local cycle = {}
        cycle.self = cycle
        assert.has_error(function()
            client:request("POST", "/v7/tests", { json = cycle })
        end)
    end)

    it("keeps the call's query on every page, as the SDK does", function()
        local queries = {}
        for page, res in client:pages("/v7/tests", { query = { aid = "7", expand = "agents" } })
                do
            assert.is_table(page, tostring(res))
            queries[#queries + 1] = last_api().query
        end
        assert.same({ "aid=7&expand=agents", "cursor=2&aid=7&expand=agents",
                      "cursor=3&aid=7&expand=agents" }, queries)
        -- a parameter the link sets itself is the link's
        server:control { api_script = { { status = 200, body = { tests = {},
            _links = { next = { href = server.http_url .. "/v7/tests?cursor=3&aid=9" } } } } } }
        local seen = {}
        for _ in client:items("/v7/tests", "tests", { query = { aid = "7" } }) do end
        for _, entry in ipairs(api_log()) do seen[#seen + 1] = entry.query end
        assert.equals("cursor=3&aid=9", seen[#seen])
    end)

    it("stops at a next link it has asked already, with what it read", function()
        local again = server.http_url .. "/v7/tests?cursor=2"
        local page = { status = 200, body = { tests = { { testId = "x" } },
            _links = { next = { href = again } } } }
        server:control { api_script = { page, page, page } }
        local before = server:stats().api_requests
        local ids = {}
        for test, err in client:items("/v7/tests", "tests") do
            assert.is_nil(err)
            ids[#ids + 1] = test.testId
        end
        assert.same({ "x", "x" }, ids)
        assert.equals(before + 2, server:stats().api_requests)
    end)

    it("sends API calls to an explicit host, whatever token_url says", function()
        local split = oauth2.client { client_id = "api-id", client_secret = SECRET, clock = clock,
            token_url = server.http_url .. "/v7/oauth2/token", host = server.https_url,
            ca_file = server.ca_file }
        assert(split:request("GET", "/v7/agents"))
        assert.equals(tonumber(server.https_url:match(":(%d+)$")), last_api().port)
        assert.equals(1, server:stats().token_requests)
        -- without host, the token URL's origin is the API's, as before
        local alone = oauth2.client { client_id = "api-id", client_secret = SECRET, clock = clock,
            token_url = server.https_url .. "/v7/oauth2/token", ca_file = server.ca_file }
        finally(function()
            split:close()
            alone:close()
        end)
        assert(alone:request("GET", "/v7/agents"))
        assert.equals(tonumber(server.https_url:match(":(%d+)$")), last_api().port)
    end)

    it("asks the API's own next links of the configured origin (a gateway)", function()
        server:control { api_script = { { status = 200, body = { tests = { { testId = "1" } },
            _links = { next = { href = "https://api.thousandeyes.com/v7/tests?cursor=3" } } } } } }
        local ids = {}
        for test, err in client:items("/v7/tests", "tests", { query = { aid = "5" } }) do
            assert.is_nil(err)
            ids[#ids + 1] = test.testId
        end
        assert.same({ "1", "31", "32" }, ids)
        local last = last_api()
        assert.equals("/v7/tests", last.path)
        assert.equals("cursor=3&aid=5", last.query)
        assert.equals(tonumber(server.http_url:match(":(%d+)$")), last.port)
    end)

    it("sends the client's headers under each call's, and fills path parameters", function()
        local with = oauth2.client { host = server.http_url, client_id = "api-id", clock = clock,
            client_secret = SECRET, headers = { ["X-Source"] = "lua", ["X-Mode"] = "a" } }
        finally(function() with:close() end)
        assert(with:request("GET", "/v7/tests/{testId}/results/{kind}",
            { path = { testId = "a/b?c=d#e", kind = 42 }, headers = { ["x-mode"] = "b" } }))
        local seen = last_api()
        assert.equals("/v7/tests/a%2Fb%3Fc%3Dd%23e/results/42", seen.path)
        assert.equals("", seen.query)
        assert.equals("lua", seen.headers["x-source"])
        assert.equals("b", seen.headers["x-mode"])
        -- a dot segment, a missing value, a name the path lacks: said at once
        assert.has_error(function()
            with:request("GET", "/v7/tests/{testId}", { path = { testId = ".." } })
        end, "oauth2: path parameter 'testId' must not be empty, \".\" or \"..\"")
        assert.has_error(function()
            with:request("GET", "/v7/tests/{testId}", { path = {} })
        end, "oauth2: the path names {testId} but the request option 'path' has no 'testId'")
        assert.has_error(function() with:request("GET", "/v7/tests/{testId}") end,
            "oauth2: the path names {testId}: give its value in the request option 'path'")
        assert.has_error(function()
            with:request("GET", "/v7/tests", { path = { testId = "1" } })
        end, "oauth2: request option 'path' has 'testId', which the path does not name as "
            .. "{testId}")
        assert.has_error(function()
            oauth2.client { client_id = "x", client_secret = SECRET, host = server.http_url,
                headers = { Authorization = "Bearer x" } }
        end, "oauth2: option 'headers' must not set Authorization: the client does")
        assert.has_error(function()
            oauth2.client { client_id = "x", client_secret = SECRET, host = server.http_url,
                headers = { ["X-A"] = "a\1b" } }
        end, "oauth2: option 'headers' must map header names to strings without control "
            .. "characters")
    end)

    it("gives a 403 for a scope the token lacks, and a 429 with the real headers", function()
        server:control { api_scopes = { ["/v7/alerts"] = "alerts:read" } }
        local res = assert(client:request("GET", "/v7/alerts"))
        assert.equals(403, res.status)
        local err = res:error()
        assert.equals("Forbidden", err.title)
        assert.matches("does not include alerts:read", tostring(err), 1, true)
        local scoped = oauth2.client { host = server.http_url, client_id = "api-id",
            client_secret = SECRET, scope = "alerts:read", clock = clock }
        finally(function() scoped:close() end)
        assert.equals(200, assert(scoped:request("GET", "/v7/alerts")).status)
        -- two a minute: the third is refused with the organization's headers
        server:control { api_scopes = {}, api_limit = 2 }
        assert.equals(200, assert(client:request("GET", "/v7/agents")).status)
        assert.equals(200, assert(client:request("GET", "/v7/agents")).status)
        res = assert(client:request("GET", "/v7/agents", { deadline = 0.5 }))
        assert.equals(429, res.status)
        assert.equals(2, res.rate_limit.limit)
        assert.equals(0, res.rate_limit.remaining)
    end)
end)

describe("a static API token (api_token)", function()
    local API_TOKEN = "sentinel-User-Api-Token-7c41e0"
    local server

    setup(function()
        server = fake.start()
    end)
    teardown(function()
        if server then server:stop() end
    end)
    before_each(function()
        server:reset { clients = { ["api-id"] = SECRET }, api_tokens = { API_TOKEN } }
    end)

    for _, scheme in ipairs { "http", "https" } do
        it("calls the API over " .. scheme .. " with no token endpoint involved", function()
            local client = oauth2.client { host = server[scheme .. "_url"],
                ca_file = server.ca_file, api_token = API_TOKEN }
            finally(function() client:close() end)
            local res = assert(client:request("GET", "/v7/tests"))
            assert.equals(200, res.status)
            assert.equals("11", res.json.tests[1].testId)
            -- the listing's links are in the scheme the server speaks
            assert.matches("^" .. scheme .. "://", res.json._links.next.href)
            local ids = {}
            for item in client:items("/v7/tests", "tests") do ids[#ids + 1] = item.testId end
            assert.same({ "11", "12", "21", "22", "31", "32" }, ids)
            assert.equals(0, server:stats().token_requests)
            assert.equals("Bearer " .. API_TOKEN, client:header())
        end)
    end

    it("answers a 401 as it is: nothing to renew, no second try, no token shown", function()
        local events = {}
        local client = oauth2.client { host = server.http_url, api_token = API_TOKEN,
            on_event = function(event) events[#events + 1] = event end }
        finally(function() client:close() end)
        server:control { revoke = true }
        local res = assert(client:request("GET", "/v7/tests"))
        assert.equals(401, res.status)
        assert.is_false(res.ok)
        local err = res:error()
        assert.equals("http", err.kind)
        assert.equals(401, err.status)
        assert.equals(1, server:stats().api_requests)
        assert.equals(0, server:stats().token_requests)
        assert.same({}, events)
        assert.is_false(client:invalidate())
        -- nothing cached to show or forget; the token stays in use
        assert.is_nil(client:cached())
        assert.is_false(client:forget())
        assert.equals("Bearer " .. API_TOKEN, client:header())
        for _, text in ipairs { tostring(err), tostring(client), tostring(client:token()),
                                cjson.encode(client:stats()) } do
            assert.is_nil(text:find(API_TOKEN, 1, true), text)
        end
    end)

    it("says what a refused token means when the answer does not", function()
        local client = oauth2.client { host = server.http_url, api_token = API_TOKEN }
        finally(function() client:close() end)
        -- a bare 401, as a gateway in front of the API may give
        server:control { api_script = { { status = 401, body = "" } } }
        local res = assert(client:request("GET", "/v7/tests"))
        assert.equals(401, res.status)
        assert.matches("refused the API token %(HTTP 401%): it may have expired or been revoked",
            tostring(res:error()))
        -- an answer with words of its own keeps them
        server:control { revoke = true }
        res = assert(client:request("GET", "/v7/tests"))
        assert.matches("Missing, invalid or expired token", tostring(res:error()))
    end)

    it("works through oauth2.request", function()
        local res = assert(oauth2.request("GET", "/v7/tests", { host = server.http_url,
            api_token = API_TOKEN, query = { cursor = 3 } }))
        assert.equals("31", res.json.tests[1].testId)
        assert.equals(0, server:stats().token_requests)
    end)

    it("is refused with client credentials, by oauth2.token, and when malformed", function()
        local function refused(fn, opts)
            local ok, why = pcall(fn, opts)
            assert.is_false(ok)
            assert.is_nil(tostring(why):find(API_TOKEN, 1, true))
            assert.is_nil(tostring(why):find("bad token", 1, true))
            return tostring(why)
        end
        assert.matches("not both", refused(oauth2.client, { api_token = API_TOKEN,
            client_id = "api-id", client_secret = SECRET }))
        assert.matches("User API token for API requests", refused(oauth2.token,
            { api_token = API_TOKEN, client_id = "api-id", client_secret = SECRET }))
        assert.matches("option 'api_token' must be a bearer token",
            refused(oauth2.client, { api_token = "bad token\r\nX-Injected: 1" }))
    end)
end)

describe("a token", function()
    it("says how long it has left, and whether it is still valid", function()
        local server = fake.start()
        finally(function() server:stop() end)
        server:reset { clients = { ["api-id"] = SECRET }, expires_in = 100 }
        local token = assert(oauth2.token { host = server.http_url, client_id = "api-id",
                                            client_secret = SECRET })
        local left = token:expires_in_now()
        assert.is_true(left > 90 and left <= 100)
        assert.is_true(token:valid())
        assert.is_true(token:valid(60))
        assert.is_false(token:valid(100))
    end)
end)
