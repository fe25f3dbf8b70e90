-- The file store: one token per credential for every process of a user on
-- a machine (real processes, real files and locks), and what it does with
-- a bad directory or file.

local fake = require "server"
local shell = require "shell"
local core = require "oauth2.core"
local oauth2 = require "oauth2"

local SECRET = "sentinel-Secret-store-7a1e"

-- Run the commands at once (their output in files under dir); all their
-- output, once every one has ended.
local function parallel(commands, dir)
    local parts = {}
    for i, command in ipairs(commands) do
        parts[i] = command .. " > " .. shell.quote(dir .. "/out." .. i) .. " 2>&1 &"
    end
    local code, out = shell.run(table.concat(parts, "\n") .. "\nwait; cat "
        .. shell.quote(dir) .. "/out.*; rm -f " .. shell.quote(dir) .. "/out.*", { lua = true })
    assert.equals(0, code, out)
    return out
end

describe("the store contract", function()
    local stores = require "oauth2.store"
    local redis_server = require "redis"
    local dir, redis

    setup(function()
        dir = shell.temp_dir()
        redis = redis_server.start()
    end)
    teardown(function()
        shell.run("rm -rf " .. shell.quote(dir))
        if redis then redis:stop() end
    end)

    for _, kind in ipairs { "memory", "file", "redis" } do
        describe("of the " .. kind .. " store", function()
            local store
            before_each(function()
                if kind == "memory" then
                    store = stores.memory()
                elseif kind == "file" then
                    store = assert(stores.file(dir .. "/contract-" .. math.random(1e9)))
                else
                    store = assert(stores.redis { url = redis.url,
                                                  prefix = "c" .. math.random(1e9) .. ":" })
                end
            end)

            it("gives back what was set, only to the same secret", function()
                assert.is_nil(store:get("k1", "secret-a"))
                assert.is_true(store:set("k1", "secret-a", { access_token = "t1", n = 1 }))
                local record = store:get("k1", "secret-a")
                assert.equals("t1", record.access_token)
                if kind ~= "memory" then
                    -- sealed: another secret cannot read it
                    assert.is_nil(store:get("k1", "secret-b"))
                end
            end)

            if kind ~= "memory" then
                it("refuses a record moved onto another key (another tenant's)", function()
                    assert.is_true(store:set("tenant-a", "same-secret",
                        { access_token = "token-of-a" }))
                    -- whoever can write to the store copies A's record onto B's key
                    if kind == "file" then
                        assert.equals(0, (shell.run("cp -p " .. shell.quote(store:path("tenant-a"))
                            .. " " .. shell.quote(store:path("tenant-b")))))
                    else
                        local a, b = store:name_of("tenant-a"), store:name_of("tenant-b")
                        local value = assert(store.link:call(a, "GET", a))
                        assert.truthy(store.link:call(b, "SET", b, value))
                    end
                    assert.is_nil(store:get("tenant-b", "same-secret"))
                    assert.equals("token-of-a", store:get("tenant-a", "same-secret").access_token)
                    -- and B's own record replaces it
                    assert.is_true(store:set("tenant-b", "same-secret",
                        { access_token = "token-of-b" }))
                    assert.equals("token-of-b", store:get("tenant-b", "same-secret").access_token)
                end)
            end

            it("locks for one holder at a time", function()
                local lock = assert(store:try_lock("k2"))
                assert.is_false(store:try_lock("k2"))
                lock:unlock()
                local again = assert(store:try_lock("k2"))
                again:unlock()
            end)

            if kind ~= "file" then
                -- (an flock has no lease: it lasts as long as its holder)
                it("lets only the owner of a lease release it", function()
                    local old = assert(store:try_lock("k4", 0.2))
                    core.sleep(0.3) -- its lease lapses
                    local new = assert(store:try_lock("k4", 15))
                    -- the old holder, late, lets go: of nothing of the new one's
                    old:unlock()
                    assert.is_false(store:try_lock("k4", 15))
                    new:unlock()
                    local again = assert(store:try_lock("k4", 15))
                    again:unlock()
                end)
            end

            it("deletes a token only if it is still the one named", function()
                store:set("k3", "s", { access_token = "new", next_try = 5 })
                local records = require "oauth2.record"
                assert.is_false(store:delete_token_if("k3", "s", records.token_id("s", "old")))
                assert.equals("new", store:get("k3", "s").access_token)
                assert.truthy(store:delete_token_if("k3", "s", records.token_id("s", "new")))
                local record = store:get("k3", "s")
                assert.is_nil(record.access_token)
                assert.equals(5, record.next_try)
            end)
        end)
    end

    it("lets a memory store's lock lapse after its lease", function()
        local store = stores.memory { lease = 0.05 }
        assert(store:try_lock("k"))
        assert.is_false(store:try_lock("k"))
        core.sleep(0.1)
        assert.truthy(store:try_lock("k"))
    end)

    it("drops a memory record after its ttl", function()
        local store = stores.memory()
        store:set("k", nil, { access_token = "t" }, 0.05)
        assert.is_table(store:get("k"))
        core.sleep(0.1)
        assert.is_nil(store:get("k"))
    end)
end)

describe("the file store", function()
    local server, dir, cache, cases = nil, nil, nil, 0

    setup(function()
        server = fake.start()
        dir = shell.temp_dir()
    end)
    teardown(function()
        if server then server:stop() end
        if dir then shell.run("rm -rf " .. shell.quote(dir)) end
    end)
    -- each case: a runtime directory of its own, whose lua-oauth2/ is the
    -- store of the plain clients and (by default) of the CLI
    local runtime
    before_each(function()
        server:reset { clients = { ["store-id"] = SECRET } }
        cases = cases + 1
        runtime = dir .. "/run-" .. cases
        assert(os.execute("mkdir -m 700 " .. shell.quote(runtime)))
        cache = runtime .. "/lua-oauth2"
    end)

    local function env(extra)
        local e = { THOUSANDEYES_CLIENT_ID = "store-id", THOUSANDEYES_CLIENT_SECRET = SECRET,
                    OAUTH2_SPEC_HOST = server.http_url, OAUTH2_SPEC_STORE = cache,
                    XDG_RUNTIME_DIR = runtime }
        for k, v in pairs(extra or {}) do e[k] = v end
        return e
    end

    -- The command of one process: a plain Lua client, or the CLI.
    local function command(kind, extra)
        if kind == "cli" then
            -- the CLI's default store is $XDG_RUNTIME_DIR/lua-oauth2
            return shell.lua_command(env(extra), "bin/thousandeyes-token --host "
                .. server.http_url)
        end
        return shell.lua_command(env(extra), "spec/support/store_child.lua " .. kind)
    end

    -- Run n processes at once (plain Lua and CLI taking turns); their output.
    local function at_once(n, kind, extra)
        local commands = {}
        for i = 1, n do commands[i] = command(kind or (i % 2 == 0 and "cli" or "token"), extra) end
        return parallel(commands, dir)
    end

    -- Count the lines of out that carry a token.
    local function tokens(out)
        local n = 0
        for line in out:gmatch("[^\n]+") do
            if line:match("^token te%-") or line:match("^te%-%x+$") then n = n + 1 end
        end
        return n
    end

    it("makes one token request for 20 processes at once on a cold store", function()
        server:control { delay = 0.3 }
        local out = at_once(20)
        assert.equals(20, tokens(out), out)
        assert.equals(1, server:stats().token_requests)
        -- and 20 more later: none
        out = at_once(20)
        assert.equals(20, tokens(out), out)
        assert.equals(1, server:stats().token_requests)
    end)

    it("makes one refresh for 20 processes past the refresh point", function()
        -- a 10 s token, no margin, refreshed at half its life; the new one
        -- lives an hour, so however long the 20 processes take to start on
        -- a busy machine, none of them finds it due again
        server:control { expires_in = 10 }
        local policy = { OAUTH2_SPEC_MARGIN = "0", OAUTH2_SPEC_REFRESH_RATIO = "0.5" }
        assert.equals(1, tokens(at_once(1, "token", policy)))
        server:control { expires_in = 3600 }
        core.sleep(5.2)
        local out = at_once(20, "token", policy)
        assert.equals(20, tokens(out), out)
        local seen = server:stats()
        assert.equals(2, seen.token_requests, out .. require("cjson").encode(seen.requests))
    end)

    it("makes one request in the whole run when the endpoint answers 429", function()
        server:control { script = { { status = 429, headers = { ["Retry-After"] = "30" } } } }
        local out = at_once(20)
        assert.equals(0, tokens(out), out)
        out = at_once(5)
        assert.equals(0, tokens(out), out)
        assert.equals(1, server:stats().token_requests)
        assert.matches("429", out)
    end)

    it("lets the next process fetch at once when a holder of the lock is killed", function()
        server:control { delay = 10 }
        -- a fetch that hangs, holding the lock
        local code, pid = shell.run(command("token") .. " > /dev/null 2>&1 & echo $!",
            { lua = true })
        assert.equals(0, code)
        -- until its request has reached the endpoint (a busy machine may
        -- take seconds to start the process)
        for _ = 1, 400 do
            if server:stats().token_requests > 0 then break end
            core.sleep(0.05)
        end
        assert.equals(1, server:stats().token_requests)
        assert.equals(0, (shell.run("kill -9 " .. pid:match("%d+"))))
        server:control { delay = 0 }
        -- with a 60 s deadline a lock still held would keep it waiting past
        -- the 20 s that `timeout` gives it
        local out
        code, out = shell.run("timeout 20 " .. command("token", { OAUTH2_SPEC_DEADLINE = "60" }),
            { lua = true })
        assert.equals(0, code, out)
        assert.equals(1, tokens(out), out)
    end)

    it("fetches alone past the deadline when a holder of the lock is stopped", function()
        server:control { delay = 3 }
        local code, pid = shell.run(command("token") .. " > /dev/null 2>&1 & echo $!",
            { lua = true })
        assert.equals(0, code)
        pid = pid:match("%d+")
        finally(function() shell.run("kill -9 " .. pid .. " 2>/dev/null") end)
        core.sleep(0.5)
        assert.equals(1, server:stats().token_requests)
        -- Ctrl-Z, SIGSTOP, a frozen cgroup: the flock stays held
        assert.equals(0, (shell.run("kill -STOP " .. pid)))
        server:control { delay = 0 }
        local out = at_once(1, "token", { OAUTH2_SPEC_DEADLINE = "1" })
        assert.equals(1, tokens(out), out)
        local newer = out:match("token (%S+)")
        assert.equals(2, server:stats().token_requests)
        -- it published its token: the next process takes it from the store
        -- even while the holder still holds the lock
        out = at_once(1, "token", { OAUTH2_SPEC_DEADLINE = "1" })
        assert.equals("token " .. newer .. "\n", out)
        -- the holder goes on and gets its (older) fetch's token: it must
        -- not replace the newer one in the store
        assert.equals(0, (shell.run("kill -CONT " .. pid)))
        for _ = 1, 200 do
            if shell.run("kill -0 " .. pid .. " 2>/dev/null") ~= 0 then break end
            core.sleep(0.1)
        end
        out = at_once(1, "token", { OAUTH2_SPEC_DEADLINE = "1" })
        assert.equals("token " .. newer .. "\n", out)
        assert.equals(2, server:stats().token_requests)
    end)

    it("invalidates only the token that was rejected, with one cool-down for all", function()
        assert.equals(1, tokens(at_once(1, "token")))
        -- within the cool-down (10 s after the fetch): dropped, nothing fetched
        local out = at_once(1, "invalidate")
        local rejected = out:match("^invalidated (%S+)")
        assert.is_string(rejected)
        out = at_once(3, "token")
        assert.equals(0, tokens(out), out)
        assert.matches("invalidated", out)
        assert.equals(1, server:stats().token_requests)
    end)

    it("keeps a token fetched meanwhile when an older one is invalidated", function()
        local client = oauth2.client { host = server.http_url, client_id = "store-id",
            client_secret = SECRET, store = cache, invalidate_cooldown = 0 }
        finally(function() client:close() end)
        local old = assert(client:token()).access_token
        -- another process replaces it (after an invalidation of its own)
        local out = at_once(1, "invalidate", { OAUTH2_SPEC_INVALIDATE_COOLDOWN = "0" })
        assert.matches("invalidated " .. old, out, 1, true)
        local fresh = at_once(1, "token"):match("^token (%S+)")
        assert.is_string(fresh)
        assert.are_not.equal(old, fresh)
        -- this client still holds the old one and is told it was rejected:
        -- the store keeps the fresh token
        client:invalidate()
        assert.equals("token " .. fresh .. "\n", at_once(1, "token"))
        assert.equals(2, server:stats().token_requests)
    end)

    describe("with a bad directory or file", function()
        it("falls back to memory with one warning when the directory cannot be made", function()
            local out = at_once(1, "token", { OAUTH2_SPEC_STORE = "/proc/oauth2-no-such-dir" })
            assert.equals(1, tokens(out), out)
            local _, warnings = out:gsub("the token cache is not shared", "")
            assert.equals(1, warnings, out)
        end)

        it("refuses a directory open to others, and says why", function()
            assert(os.execute("mkdir -m 755 " .. shell.quote(cache)))
            local out = at_once(1, "token")
            assert.equals(1, tokens(out), out)
            assert.matches("open to its group or to others", out)
        end)

        it("replaces a corrupt cache file, and one readable by others", function()
            assert.equals(1, tokens(at_once(1, "token")))
            local _, name = shell.run("ls " .. shell.quote(cache) .. " | grep -v lock")
            local file = cache .. "/" .. name:match("%x+")
            assert(os.execute("printf 'garbage' > " .. shell.quote(file)))
            assert.equals(1, tokens(at_once(1, "token")))
            assert.equals(2, server:stats().token_requests)
            -- replaced with a good one: the next process fetches nothing
            assert.equals(1, tokens(at_once(1, "token")))
            assert.equals(2, server:stats().token_requests)
            assert(os.execute("chmod 644 " .. shell.quote(file)))
            local out = at_once(1, "token")
            assert.equals(1, tokens(out))
            assert.matches("open to its group or to others", out)
            assert.equals(3, server:stats().token_requests)
            local _, mode = shell.run("stat -c %a " .. shell.quote(file))
            assert.equals("600", mode:match("%d+"))
        end)

        it("refuses a FIFO at a record's or a lock's path without blocking", function()
            assert.equals(1, tokens(at_once(1, "token")))
            local _, name = shell.run("ls " .. shell.quote(cache) .. " | grep -v lock")
            local file = cache .. "/" .. name:match("%x+")
            -- one process, ended by timeout (124) if an open blocks
            local function one()
                local code, out = shell.run("timeout 20 " .. command("token"), { lua = true })
                assert.equals(0, code, out)
                assert.equals(1, tokens(out), out)
                assert.matches("not a regular file", out)
            end
            assert(os.execute("rm -f " .. shell.quote(file) .. " && mkfifo -m 600 "
                .. shell.quote(file)))
            one()
            -- the record's FIFO was replaced by a file
            local _, kind = shell.run("stat -c %F " .. shell.quote(file))
            assert.matches("regular", kind)
            -- a FIFO for the lock, and no record: the process must lock
            assert(os.execute("rm -f " .. shell.quote(file) .. " " .. shell.quote(file .. ".lock")
                .. " && mkfifo -m 600 " .. shell.quote(file .. ".lock")))
            one()
            assert.equals(3, server:stats().token_requests)
        end)

        it("holds neither the secret nor the token in clear", function()
            local out = at_once(1, "token")
            local token = out:match("^token (%S+)")
            local _, contents = shell.run("cat " .. shell.quote(cache) .. "/*; ls "
                .. shell.quote(cache))
            assert.is_nil(contents:find(token, 1, true))
            assert.is_nil(contents:find(SECRET, 1, true))
            assert.is_nil(contents:find("store-id", 1, true))
        end)
    end)
end)

describe("the redis store", function()
    local redis_server = require "redis"
    local redis, server

    setup(function()
        server = fake.start()
        redis = redis_server.start()
    end)
    teardown(function()
        if redis then redis:stop() end
        if server then server:stop() end
    end)
    before_each(function()
        server:reset { clients = { ["store-id"] = SECRET } }
        redis:cli("FLUSHALL")
    end)

    local function env(extra)
        local e = { THOUSANDEYES_CLIENT_ID = "store-id", THOUSANDEYES_CLIENT_SECRET = SECRET,
                    OAUTH2_SPEC_HOST = server.http_url, OAUTH2_SPEC_STORE = redis.url }
        for k, v in pairs(extra or {}) do e[k] = v end
        return e
    end

    -- n plain Lua processes at once; their output.
    local function at_once(n, action)
        local commands = {}
        for i = 1, n do
            commands[i] = shell.lua_command(env(), "spec/support/store_child.lua "
                .. (action or "token"))
        end
        return parallel(commands, redis.dir)
    end

    local function tokens(out)
        local _, n = out:gsub("token te%-%x+", "")
        return n
    end

    it("makes one token request for 10 processes at once, and none after", function()
        server:control { delay = 0.3 }
        local out = at_once(10)
        assert.equals(10, tokens(out), out)
        assert.equals(1, server:stats().token_requests)
        out = at_once(10)
        assert.equals(10, tokens(out), out)
        assert.equals(1, server:stats().token_requests)
    end)

    it("keeps neither the token, its plain hash, the client id nor the secret in clear",
            function()
        local token = at_once(1):match("token (%S+)")
        assert.is_string(token)
        local _, keys = redis:cli("--scan")
        assert.is_true(#keys > 0)
        local dump = keys
        for key in keys:gmatch("[^\n]+") do
            local _, value = redis:cli("GET " .. shell.quote(key))
            dump = dump .. value
        end
        assert.is_nil(dump:find(token, 1, true))
        -- (a hash without the secret would let a holder of the token find
        -- its entry)
        assert.is_nil(dump:find(core.sha256(token), 1, true))
        assert.is_nil(dump:find("store-id", 1, true))
        assert.is_nil(dump:find(SECRET, 1, true))
    end)

    it("bounds a command by one deadline and its reply by a size", function()
        -- a reply trickled a byte at a time, each in time for a per-read
        -- timeout, fails as a whole past the command's timeout
        local port = redis_server.trickle(redis.dir)
        local conn = assert(require("oauth2.redis").connect("127.0.0.1", port, 2, 0.5))
        local reply, why = conn:command("GET", "k")
        assert.is_nil(reply)
        assert.equals("redis: the command timed out", why)
        assert.is_false(conn:is_open())
        -- a value of 2 MiB planted in Redis
        local big = redis.dir .. "/big"
        assert(os.execute("head -c 2097152 /dev/zero | tr '\\0' a > " .. shell.quote(big)))
        assert.equals(0, (redis:cli("-x SET oauth2:planted < " .. shell.quote(big))))
        conn = assert(require("oauth2.redis").connect("127.0.0.1", redis.port, 2, 2))
        reply, why = conn:command("GET", "oauth2:planted")
        assert.is_nil(reply)
        assert.equals("redis: the reply is larger than 1 MiB", why)
        -- and the store never asks for it whole (nginx's client has no bound)
        local stores = require "oauth2.store"
        local store = assert(stores.redis(redis.url))
        assert.is_nil(store:get("planted", SECRET))
        assert.equals(1, store:stats().errors)
    end)

    it("tells which records were written since a look, in one command for all keys", function()
        local stores = require "oauth2.store"
        local url = { url = redis.url, prefix = "versions-spec:", look_every = 0.2 }
        local writer, looker = assert(stores.redis(url)), assert(stores.redis(url))
        assert.is_true(looker:changed("a")) -- never written: looked at
        looker:saw("a")
        assert.is_true(writer:set("a", SECRET, { access_token = "x" }, 60))
        core.sleep(0.2)
        assert.is_true(looker:changed("a"))
        -- a read that did not happen (the store failed) is looked at again
        assert.is_true(looker:changed("a"))
        looker:saw("a")
        assert.is_false(looker:changed("a"))
        core.sleep(0.2)
        assert.is_false(looker:changed("a"))
        -- an invalidation is a write
        local id = require("oauth2.record").token_id(SECRET, "x")
        assert.is_true(writer:delete_token_if("a", SECRET, id, nil, 60))
        core.sleep(0.2)
        assert.is_true(looker:changed("a"))
        -- 50 credentials looked at by 50 store objects of this process: one
        -- HMGET per look_every for all of them
        local function hmgets()
            local _, out = redis:cli("INFO commandstats")
            return tonumber(out:match("cmdstat_hmget:calls=(%d+)") or 0)
        end
        -- (their looks are due when a spec says: no clock decides here)
        local batch = { url = redis.url, prefix = "versions-spec:", look_every = 3600 }
        local lookers = {}
        for i = 1, 50 do
            lookers[i] = assert(stores.redis(batch))
            assert.is_true(writer:set("k" .. i, SECRET, { access_token = "t" }, 60))
        end
        local function look_due() lookers[1].watch.at = -math.huge end
        -- (the first two looks may read a record: its version was not
        -- known yet at the first)
        for round = 1, 2 do
            look_due()
            local before = hmgets()
            for i = 1, 50 do
                local changed = lookers[i]:changed("k" .. i)
                if round == 1 then assert.is_true(changed) end
                lookers[i]:saw("k" .. i)
            end
            assert.equals(1, hmgets() - before)
        end
        look_due()
        local before = hmgets()
        for i = 1, 50 do assert.is_false(lookers[i]:changed("k" .. i)) end
        assert.equals(1, hmgets() - before)
        -- a write to one is seen by its looker alone
        assert.is_true(writer:set("k7", SECRET, { access_token = "t2" }, 60))
        look_due()
        for i = 1, 50 do assert.equals(i == 7, lookers[i]:changed("k" .. i)) end
    end)

    it("starts no exchange of a Sentinel or Cluster call past two bounds", function()
        -- the link loaded on a clock the spec moves: 5 s at every reading
        local core_now, t = core.now, 0
        core.now = function() t = t + 5 return t end
        package.loaded["oauth2.link"] = nil
        local ok, link = pcall(require, "oauth2.link")
        core.now = core_now
        package.loaded["oauth2.link"] = nil
        assert(ok, link)
        -- three sentinels nobody answers for, 1 s + 1 s each
        local conn = assert(link.new { url = "redis+sentinel://127.0.0.1:9,127.0.0.1:10,"
            .. "127.0.0.1:11/tokens" })
        local reply, why = conn:call("k", "GET", "k")
        assert.is_nil(reply)
        -- the bound (4 s from the start) passed before a sentinel was asked
        assert.matches("the call's bound passed", why, 1, true)
        assert.equals(3, select(2, why:gsub("bound passed", "")))
    end)

    it("works for an ACL user allowed only the commands docs/stores.md lists", function()
        assert.equals(0, (redis:cli("ACL SETUSER fleet-spec on '>sentinel-Acl-pass-3' "
            .. "'~oauth2:*' +get +set +del +pttl +eval +hmget +hincrby +expire +time")))
        finally(function() redis:cli("ACL DELUSER fleet-spec") end)
        local stores = require "oauth2.store"
        local store = assert(stores.redis(("redis://fleet-spec:sentinel-Acl-pass-3@127.0.0.1:%d")
            :format(redis.port)))
        assert.is_true(store:set("acl", SECRET, { access_token = "t" }, 60))
        assert.equals("t", store:get("acl", SECRET).access_token)
        local lock = assert(store:try_lock("acl", 5))
        lock:unlock()
        assert.is_number(store:draw(0) or select(2, store:draw(0)))
        assert.is_boolean(store:changed("acl"))
        local id = require("oauth2.record").token_id(SECRET, "t")
        assert.is_true(store:delete_token_if("acl", SECRET, id, nil, 60))
        assert.equals(0, store:stats().errors)
    end)

    it("keeps the fleet's budget of token requests in Redis, by Redis's clock", function()
        local stores = require "oauth2.store"
        local url = { url = redis.url, prefix = "budget-spec:", budget = 2 } -- a slot every 30 s
        local a, b = assert(stores.redis(url)), assert(stores.redis(url))
        assert.equals(0, a:draw(0))
        -- another process draws from the same budget: the next slot is 30 s away
        local refused, seconds = b:draw(0)
        assert.is_false(refused)
        assert.near(30, seconds, 1)
        -- taken by a caller who waits for it, then the one after
        assert.near(30, b:draw(40), 1)
        assert.near(60, select(2, a:draw(40)), 1)
        -- another budget_key is another organization's budget
        url.budget_key = "other-org"
        assert.equals(0, assert(stores.redis(url)):draw(0))
        -- by default 60 a minute; false: none
        assert.equals(60, assert(stores.redis(redis.url)).budget)
        assert.is_nil(assert(stores.redis { url = redis.url, budget = false }).budget)
        local bad, why = stores.redis { url = redis.url, budget = 0 }
        assert.is_nil(bad)
        assert.matches("option 'budget' must be", why)
    end)

    it("keeps the store's clock (TIME), read with the connection", function()
        local stores = require "oauth2.store"
        local store = assert(stores.redis(redis.url))
        assert.is_nil(store:get("clock-check", SECRET))
        local link = store.link
        assert.is_true(link.offset_at > -math.huge)
        -- one machine here: the store's clock is this host's, near enough
        assert.is_true(math.abs(store:now() - core.time()) < 1, tostring(link.offset))
        -- a reply that is no time is no reading
        local note_clock = require("oauth2.link").note_clock
        note_clock(link, { "x" }, 0, 0)
        assert.is_true(math.abs(link.offset) < 1)
        note_clock(link, { tostring(math.floor(core.time()) + 3600), "0" }, core.time(),
            core.time())
        assert.near(3600, link.offset, 1)
    end)

    it("fails, never raises, when reading the store's clock breaks the connection", function()
        local stores = require "oauth2.store"
        local store = assert(stores.redis(redis.url))
        assert.is_nil(store:get("clock-break", SECRET)) -- connected, clock read
        store.link.offset_at = -math.huge -- the next command reads the clock first
        redis:halt()
        finally(function() if not redis:alive() then redis:start_again() end end)
        local record, why = store:get("clock-break", SECRET)
        assert.is_nil(record)
        assert.is_string(why)
    end)

    it("bounds connecting, AUTH and SELECT by one bound with the command", function()
        -- AUTH's +OK trickled a byte every 0.45 s (2.25 s in all), each
        -- byte in time for a 0.5 s per-read timeout
        local port, said = redis_server.trickle(redis.dir, "auth")
        local stores = require "oauth2.store"
        local store = assert(stores.redis { url = ("redis://:a-password@127.0.0.1:%d/2")
            :format(port), connect_timeout = 1, timeout = 0.5 })
        local record, why = store:get("k", SECRET)
        assert.is_nil(record)
        assert.matches("timed out", why)
        assert.matches("no second command", said("second"))
    end)

    it("makes one request for all processes when the endpoint answers 429", function()
        server:control { script = { { status = 429, headers = { ["Retry-After"] = "30" } } } }
        local out = at_once(10)
        assert.equals(0, tokens(out), out)
        out = at_once(5)
        assert.equals(0, tokens(out), out)
        assert.equals(1, server:stats().token_requests)
    end)

    it("serves a valid token while Redis is down, and fetches alone late in its life", function()
        local clock = { t = 1000 }
        local client = oauth2.client { host = server.http_url, client_id = "store-id",
            client_secret = SECRET, store = redis.url, clock = function() return clock.t end }
        finally(function()
            client:close()
            if not redis:alive() then redis:start_again() end
        end)
        assert(client:token())
        redis:halt()
        -- the hot path never asks Redis
        for _ = 1, 3 do assert(client:token()) end
        assert.equals(1, server:stats().token_requests)
        -- a 3600 s token counts as expired at 3240 s (10% margin) and is
        -- due at 2736 to 2880 s (jitter); with Redis unreachable past that,
        -- it is served on, and fetched alone once, at a point of its own
        -- between the refresh point and the expiry (oauth2.cache)
        clock.t = 1000 + 2880.001
        assert(client:token())
        assert.is_true(server:stats().token_requests <= 2)
        -- by the expiry its own fetch has happened, once, with no failure
        -- (5 s before it: a refresh that late may take refresh_timeout, 5
        -- s; a thousandth of a second before, it had a millisecond, which
        -- a busy machine did not always give it)
        clock.t = 1000 + 3235
        assert(client:token())
        assert.equals(2, server:stats().token_requests)
        assert(client:token())
        assert.equals(2, server:stats().token_requests)
        redis:start_again()
    end)
end)
