-- oauth2.policy, the cache's timing rules: refresh point, margin, jitter,
-- cool-downs, the next point a refresh may be tried, and the policy's
-- option checks (oauth2.options.policy).

local policy_rules = require "oauth2.policy"
local options = require "oauth2.options"

describe("oauth2.policy", function()
    local function policy(opts) return assert(options.policy(opts or {})) end

    it("refreshes at 80% of the lifetime and expires a margin early", function()
        local p = policy { refresh_jitter = 0 }
        local lifetime, refresh_at, expire_at = policy_rules.schedule(p, { expires_in = 1000 }, 50)
        assert.equals(1000, lifetime)
        assert.equals(850, refresh_at)
        -- the larger of 30 s and 10%
        assert.equals(950, expire_at)
        local _
        _, refresh_at, expire_at = policy_rules.schedule(p, { expires_in = 100 }, 0)
        assert.equals(70, expire_at)
        assert.is_true(refresh_at < expire_at)
    end)

    it("keeps the refresh point of a short token inside its usable life", function()
        local p = policy { refresh_jitter = 0, refresh_ratio = 1 }
        local _, refresh_at, expire_at = policy_rules.schedule(p, { expires_in = 6 }, 0)
        assert.equals(3, expire_at)
        assert.is_true(refresh_at <= expire_at)
    end)

    it("gives a token without expires_in the default lifetime", function()
        local p = policy { default_lifetime = 120, refresh_jitter = 0 }
        assert.equals(120, (policy_rules.schedule(p, {}, 0)))
    end)

    it("doubles a cool-down for each failure in a row, up to 300 s or what was asked", function()
        local p = policy { cooldown = 5 }
        assert.equals(5, policy_rules.failure_wait(p, {}, 1))
        local second = policy_rules.failure_wait(p, {}, 2)
        assert.is_true(second >= 7.5 and second <= 10, tostring(second))
        local many = policy_rules.failure_wait(p, {}, 40)
        assert.is_true(many >= 225 and many <= 300, tostring(many))
        -- a server's longer wait wins, capped at a day
        assert.equals(600, policy_rules.failure_wait(p, { retry_after = 600 }, 1))
        assert.equals(86400, policy_rules.failure_wait(p, { retry_after = 1e9 }, 1))
    end)

    it("names the next point a refresh may be tried, never past the expiry", function()
        assert.equals(80, policy_rules.next_try { refresh_at = 80, expire_at = 90 })
        assert.equals(85, policy_rules.next_try { refresh_at = 80, expire_at = 90, next_try = 85 })
        assert.equals(86, policy_rules.next_try { refresh_at = 80, expire_at = 90,
            next_try = 85, quiet_until = 86 })
        assert.equals(90, policy_rules.next_try { refresh_at = 80, expire_at = 90, next_try = 99 })
        assert.is_nil(policy_rules.next_try { next_try = 5 })
    end)

    it("refuses values that would hammer the endpoint, NaN included", function()
        for _, bad in ipairs {
            { refresh_ratio = 0 }, { refresh_ratio = 1.5 }, { cooldown = 0 },
            { cooldown = 0 / 0 }, { default_lifetime = 0 }, { margin = -1 },
            { refresh_jitter = 1 }, { refresh_timeout = 0 }, { invalidate_cooldown = 0 / 0 },
        } do
            local name = next(bad)
            local checked, why = options.policy(bad)
            assert.is_nil(checked, name)
            assert.matches("option '" .. name .. "'", why)
        end
    end)

    it("spreads the points of fetching alone evenly over the window", function()
        local low, high = math.huge, -math.huge
        for _ = 1, 1000 do
            local at = policy_rules.alone_at(100, 200)
            low, high = math.min(low, at), math.max(high, at)
        end
        assert.is_true(low >= 100 and low < 110)
        assert.is_true(high <= 200 and high > 190)
    end)
end)
