-- oauth2.record: what a record holds, when it is fresh, usable or cooling,
-- how long it is kept, how it moves between clocks and how it is sealed.

local records = require "oauth2.record"
local policy_rules = require "oauth2.policy"
local options = require "oauth2.options"

local SECRET = "sentinel-Secret-record-3a1c"

describe("oauth2.record", function()
    local token = { access_token = "tok", token_type = "Bearer", expires_in = 1000 }
    local policy = assert(options.policy { refresh_jitter = 0 })

    it("is fresh before its refresh point, usable before its expiry", function()
        local record = records.of_token(policy, token, 0)
        assert.equals(800, record.refresh_at)
        assert.equals(900, record.expire_at)
        assert.is_true(records.fresh(record, 799))
        assert.is_false(records.fresh(record, 800))
        assert.is_true(records.usable(record, 899))
        assert.is_false(records.usable(record, 900))
        assert.is_false(records.usable(nil, 0))
        assert.is_false(records.fresh({ refresh_at = 9, expire_at = 9 }, 0))
    end)

    it("reads a cool-down back as an error while it runs", function()
        local record = records.failure({ kind = "http", status = 503, code = "x",
            message = "down" }, 105, 2)
        local err = records.cooling(record, 100)
        assert.equals(503, err.status)
        assert.equals(5, err.retry_after)
        assert.equals(2, err.failures)
        assert.is_true(err.cached)
        assert.is_nil(records.cooling(record, 105))
        local invalidated = records.cooling(records.invalidated(policy, 110), 100)
        assert.equals("invalidated", invalidated.code)
        assert.matches("no sooner than 10 s", invalidated.message)
    end)

    it("is kept until its expiry or its cool-down's end, a count past it", function()
        assert.equals(900, records.ttl({ expire_at = 1000, next_try = 50 }, 100))
        assert.equals(50, records.ttl({ next_try = 150 }, 100))
        assert.equals(1, records.ttl({}, 100))
        -- failures in a row outlive the cool-down by the longest backoff
        assert.equals(50 + policy_rules.MAX_BACKOFF, records.ttl({ next_try = 150,
            failures = 3 }, 100))
    end)

    it("moves between clocks, times and all", function()
        local record = records.of_token(policy, token, 0)
        record.next_try, record.quiet_until, record.alone_at = 10, 20, 30
        local moved = records.shift(record, 1000)
        for _, name in ipairs { "fetched_at", "refresh_at", "expire_at", "next_try",
                                "quiet_until", "alone_at" } do
            assert.equals(record[name] + 1000, moved[name], name)
        end
        assert.equals("tok", moved.access_token)
        assert.equals(0, record.fetched_at)
    end)

    it("names a token by a keyed hash, and drops it only while it is the one named", function()
        local id = records.token_id(SECRET, "tok")
        assert.matches("^%x+$", id)
        assert.is_nil(id:find("tok", 1, true))
        local record = records.of_token(policy, token, 0)
        assert.is_false(records.rejects(record, SECRET, "tok"))
        records.without_token(record, id, records.invalidated(policy, 50))
        assert.is_nil(record.access_token)
        assert.is_true(records.rejects(record, SECRET, "tok"))
        assert.equals(50, record.next_try)
        -- compare before delete, over any store's get and set
        local stored = { key = records.of_token(policy, token, 0) }
        local store = {
            get = function(_, key) return stored[key] end,
            set = function(_, key, _, value) stored[key] = value return true end,
        }
        assert.is_false(records.drop_if(store, "key", SECRET, records.token_id(SECRET, "other")))
        assert.equals("tok", stored.key.access_token)
        assert.is_true(records.drop_if(store, "key", SECRET, id))
        assert.is_nil(stored.key.access_token)
    end)

    it("seals a record for one name and one secret", function()
        local record = records.of_token(policy, token, 0)
        local sealed = assert(records.seal(SECRET, record, "name-a"))
        assert.is_nil(sealed:find("tok", 1, true))
        assert.equals("tok", records.open(SECRET, sealed, "name-a").access_token)
        assert.is_nil(records.open(SECRET, sealed, "name-b"))
        assert.is_nil(records.open(SECRET .. "x", sealed, "name-a"))
        assert.is_nil(records.open(SECRET, "garbage", "name-a"))
        assert.is_nil(records.open(SECRET, nil, "name-a"))
    end)
end)
