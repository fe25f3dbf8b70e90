-- oauth2.retry, the one retry loop, on a virtual clock: attempts, backoff,
-- the waits a server asks for, the deadline, the rate-limit families.

local retry = require "oauth2.retry"

describe("oauth2.retry", function()
    local t, slept, saved
    before_each(function()
        t, slept = 0, {}
        saved = {}
        for k, v in pairs(retry.runtime) do saved[k] = v end
        retry.runtime.now = function() return t end
        retry.runtime.sleep = function(s)
            slept[#slept + 1] = s
            t = t + s
        end
        retry.runtime.random = function() return 1 end
    end)
    after_each(function()
        for k, v in pairs(saved) do retry.runtime[k] = v end
    end)

    local plan = { timeout = 10, connect_timeout = 5, retries = 3,
                   backoff_base = 0.5, backoff_max = 4 }

    it("makes the first attempt always, and no more than retries after it", function()
        local attempts = 0
        local _, err, made = retry.run(plan, 30, function()
            attempts = attempts + 1
            return nil, { message = "down" }, true
        end)
        assert.equals(4, attempts)
        assert.equals(4, made)
        assert.equals(4, err.attempts)
        -- a deadline under a millisecond still gets its first attempt
        attempts = 0
        retry.run(plan, 0.0001, function() attempts = attempts + 1 return true end)
        assert.equals(1, attempts)
    end)

    it("backs off exponentially up to backoff_max, never less than a server asked", function()
        retry.run(plan, 300, function(attempt)
            return nil, { message = "x" }, true, attempt == 3 and 7 or nil
        end)
        -- 0.5, 1, then the server's 7 over the backoff's 2
        assert.same({ 0.5, 1, 7 }, slept)
    end)

    it("cuts each attempt to what is left of the deadline, and waits past none", function()
        local timeouts = {}
        local _, err = retry.run(plan, 12, function(_, timeout)
            timeouts[#timeouts + 1] = timeout
            t = t + timeout
            return nil, { message = "slow" }, true
        end)
        assert.equals(10, timeouts[1])
        assert.near(1.5, timeouts[2], 1e-9)
        assert.matches("not retried", err.message)
        -- a wait that would pass the deadline is not waited
        t, slept = 0, {}
        retry.run(plan, 5, function() return nil, { message = "x" }, true, 60 end)
        assert.same({}, slept)
    end)

    it("retries 429 and 5xx answers, network failures and timeouts, nothing else", function()
        for status, worth in pairs { [429] = true, [500] = true, [502] = true, [503] = true,
                                     [504] = true, [400] = false, [401] = false, [501] = false } do
            assert.equals(worth, retry.STATUS[status] == true, tostring(status))
        end
        assert.is_true(retry.KIND.network)
        assert.is_true(retry.KIND.timeout)
        assert.is_nil(retry.KIND.tls)
        assert.is_nil(retry.KIND.config)
    end)

    it("reads the rate-limit families, and the reset of the one that refused", function()
        local headers = {
            ["x-organization-rate-limit-limit"] = "240",
            ["x-organization-rate-limit-remaining"] = "10",
            ["x-organization-rate-limit-reset"] = "100",
            ["x-instant-test-rate-limit-remaining"] = "0",
            ["x-instant-test-rate-limit-reset"] = "30",
        }
        local function header(name) return headers[name] end
        assert.same({ limit = 240, remaining = 10, reset = 100 }, retry.rate_limit(header))
        assert.equals(30, retry.limit_reset(header))
        headers["x-instant-test-rate-limit-remaining"] = "3"
        assert.equals(100, retry.limit_reset(header))
        assert.is_nil(retry.rate_limit(function() return nil end))
    end)

    it("bounds what a server asks: finite, not negative, at most a day", function()
        assert.equals(86400, retry.server_wait(1e300))
        assert.is_nil(retry.server_wait(-1))
        assert.equals(5, retry.server_wait(5, 99))
        assert.equals(99, retry.server_wait(nil, 99))
        assert.equals(1e12, retry.number("1e400"))
        assert.is_nil(retry.number("nan"))
        -- a reset given as a timestamp counts down from now
        local wait = retry.until_reset(os.time() + 30)
        assert.is_true(wait >= 29 and wait <= 30, tostring(wait))
    end)
end)
