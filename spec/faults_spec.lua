-- oauth2.token against a server that misbehaves on purpose: every fault
-- gives an error of the documented shape and kind, with no secret in it,
-- and the same session works again afterwards.

local oauth2 = require "oauth2"
local fake = require "server"

local SECRET = "sentinel-Secret-fault-8c2d"
local BEARER = "sentinel-Bearer-fault-31a7"

local FIELDS = {
    kind = "string", status = "number", code = "string", message = "string",
    title = "string", detail = "string", errors = "table", retryable = "boolean", retry_after = "number",
    rate_limit = "table", attempts = "number", curl_code = "number", body = "table",
    cached = "boolean",
}

-- Each fault: the mode the server plays, the error kind expected, and
-- options or checks of its own.
local CASES = {
    { "refused", "network", url = "refused", retries = 1 },
    { "silent", "timeout", timeout = 0.4, deadline = 1.5 },
    { "stall-after-headers", "timeout", timeout = 0.4, deadline = 1.5 },
    -- libcurl takes a head cut off at close as complete: an empty 200
    { "close-mid-headers", "protocol", message = "not a JSON object" },
    { "close-mid-body", "network" },
    -- a response head past the bound: a protocol error, within the deadline
    { "many-headers", "protocol", message = "response head larger than" },
    -- bounded by its count of fields too, not only by its bytes
    { "fields-250", "protocol", message = "response head larger than 200 header fields" },
    { "repeated-header", "protocol", message = "response head larger than" },
    -- a reply without a valid status line is the server's fault, not ours
    { "http09", "protocol", message = "HTTP/0.9" },
    { "status-1000", "protocol", message = "response code" },
    { "http-version-1-7", "protocol", message = "HTTP version" },
    { "huge-body", "protocol", message = "byte limit" },
    -- each layer of the body's bound alone: the announced length (no body
    -- follows, so only it can tell), then the bytes as they come
    { "huge-length-then-silence", "protocol", message = "byte limit", timeout = 0.4,
      deadline = 1.5 },
    { "huge-body-no-length", "protocol", message = "byte limit" },
    { "invalid-json", "protocol", message = "not a JSON object" },
    { "truncated-json", "protocol", message = "not a JSON object" },
    { "json-array", "protocol", message = "no access_token" },
    { "no-access-token", "protocol", message = "no access_token" },
    { "access-token-number", "protocol", message = "no access_token" },
    { "expires-in-string", "protocol", message = "invalid expires_in" },
    { "expires-in-negative", "protocol", message = "invalid expires_in" },
    { "expires-in-zero", "protocol", message = "invalid expires_in" },
    { "expires-in-huge", "protocol", message = "invalid expires_in" },
    { "expires-in-fraction", "protocol", message = "invalid expires_in" },
    { "error-in-200", "protocol", status = 200, code = "invalid_client" },
    { "problem-odd-types", "http", status = 400,
      message = "the token endpoint answered HTTP 400" },
    { "problem-odd-errors", "http", status = 400, code = "Bad Request",
      errors = { { field = "f" } } },
    { "problem-not-json", "http", status = 400 },
    { "redirect-301", "http", status = 301 },
    { "redirect-302", "http", status = 302 },
    { "redirect-307", "http", status = 307, auth_method = "client_secret_basic" },
    { "redirect-308", "http", status = 308, auth_method = "client_secret_basic" },
    { "retry-after-seconds", "http", status = 429, retry_after = { 2, 2 } },
    -- an HTTP date 3 s ahead, in whole seconds: libcurl subtracts time(),
    -- whose coarse clock may still read the second before the one the
    -- server wrote from, so 4 is as right as 2 or 3
    { "retry-after-date", "http", status = 429, retry_after = { 1, 4 } },
    { "retry-after-huge", "http", status = 429, retries = 3,
      retry_after = { 86400, 86400 }, message = "would pass the" },
    { "expired", "tls", tls = "expired", message = "expired" },
    { "wrong-host", "tls", tls = "wrong-host", message = "host name" },
    { "self-signed", "tls", tls = "self-signed", message = "self%-signed" },
}

describe("oauth2.token against a hostile server", function()
    local faults, session

    setup(function()
        faults = fake.start_faults()
        session = oauth2.session()
    end)
    teardown(function()
        if session then session:close() end
        if faults then faults:stop() end
    end)

    local function opts(case)
        local url
        if case.url == "refused" then
            url = faults.refused_url
        elseif case.tls then
            url = faults.tls_url(case.tls)
        else
            url = faults.url(case[1])
        end
        return {
            token_url = url, client_id = "fault-id", client_secret = SECRET,
            thousandeyes_bearer_token = BEARER, ca_file = faults.ca_file,
            auth_method = case.auth_method, session = session,
            timeout = case.timeout or 2, deadline = case.deadline or 3,
            retries = case.retries or 0, backoff_base = 0.05,
        }
    end

    for _, case in ipairs(CASES) do
        local mode, kind = case[1], case[2]
        it(mode .. ": " .. kind .. " error, in time, no secret, session still good", function()
            local o = opts(case)
            local token, err = oauth2.token(o)
            assert.is_nil(token)
            assert.is_true(oauth2.is_error(err))
            -- the documented shape: known fields of the documented types only
            for field, value in pairs(err) do
                assert.equals(FIELDS[field], type(value), "field " .. tostring(field))
            end
            assert.equals(kind, err.kind, tostring(err))
            assert.is_number(err.attempts)
            assert.is_boolean(err.retryable)
            if case.status then assert.equals(case.status, err.status) end
            if case.code then assert.equals(case.code, err.code) end
            if case.message then assert.matches(case.message, err.message) end
            if case.errors then assert.same(case.errors, err.errors) end
            if case.retry_after then
                assert.is_true(err.retry_after >= case.retry_after[1]
                    and err.retry_after <= case.retry_after[2], tostring(err.retry_after))
            end
            -- never more attempts than allowed (the deadline: token_spec)
            assert.is_true(err.attempts <= o.retries + 1)
            local text = tostring(err)
            for _, secret in ipairs { SECRET, BEARER } do
                assert.is_nil(text:find(secret, 1, true))
                assert.is_nil((err.detail or ""):find(secret, 1, true))
            end
            -- and the same session still works
            local good = oauth2.token { token_url = faults.url("ok"), client_id = "fault-id",
                                        client_secret = SECRET, session = session }
            assert.is_table(good)
            assert.equals("fault-token-0123456789", good.access_token)
        end)
    end

    it("never lets a redirect target see the request or the credentials", function()
        for _, status in ipairs { 301, 302, 307, 308 } do
            for _, method in ipairs { "client_secret_post", "client_secret_basic" } do
                local token = oauth2.token { token_url = faults.url("redirect-" .. status),
                    client_id = "fault-id", client_secret = SECRET, auth_method = method,
                    session = session, retries = 0 }
                assert.is_nil(token)
            end
        end
        local seen = faults.seen()
        assert.equals(0, seen.connections)
        assert.same({}, seen.requests)
    end)

    it("retries 503 twice and then succeeds", function()
        local token, err = oauth2.token { token_url = faults.url("flaky/a"),
            client_id = "fault-id", client_secret = SECRET, session = session,
            retries = 3, backoff_base = 0.01 }
        assert.is_nil(err)
        assert.equals("fault-token-0123456789", token.access_token)
    end)

    it("gives up on 503 when retries run out, and the next call succeeds", function()
        local token, err = oauth2.token { token_url = faults.url("flaky/b"),
            client_id = "fault-id", client_secret = SECRET, session = session,
            retries = 1, backoff_base = 0.01 }
        assert.is_nil(token)
        assert.equals(503, err.status)
        assert.equals(2, err.attempts)
        token = oauth2.token { token_url = faults.url("flaky/b"), client_id = "fault-id",
            client_secret = SECRET, session = session, retries = 0 }
        assert.is_table(token)
    end)

    it("keeps a client working after a fault", function()
        local clock = { t = 0 }
        local client = oauth2.client { token_url = faults.url("flaky/c"),
            client_id = "fault-id", client_secret = SECRET, retries = 0, cooldown = 1,
            clock = function() return clock.t end }
        local token, err = client:token()
        assert.is_nil(token)
        assert.equals(503, err.status)
        clock.t = 2 -- past the cool-down
        assert.is_nil(client:token())
        clock.t = 4
        token = client:token()
        assert.equals("fault-token-0123456789", token.access_token)
        local stats = client:stats()
        assert.equals(3, stats.fetches)
        assert.equals(2, stats.failures)
        assert.is_nil(tostring(client):find(SECRET, 1, true))
        client:close()
    end)
end)
