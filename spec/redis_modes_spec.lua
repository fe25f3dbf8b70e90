-- Redis as operators run it: a primary that Sentinels name, and a
-- Cluster.  Real redis-servers (sentinels, cluster nodes) on loopback
-- ports, 2 nginx nodes with 2 workers each and plain Lua processes on one
-- credential; a failover (and a resharding) under steady traffic.

-- nginx runs its own LuaJIT whatever Lua runs busted: spec/run runs this
-- file once per suite (SPEC_NGINX=0 on the other runs)
if os.getenv("SPEC_NGINX") == "0" then return end

local core = require "oauth2.core"
local fake = require "server"
local nginx = require "nginx"
local shell = require "shell"
local redis_server = require "redis"
local fleet = require "fleet"
local stores = require "oauth2.store"

local SECRET = "sentinel-Secret-modes-77a1"
local PASSWORD = "sentinel-Redis-pass-5e0c"

describe("Redis Sentinel and Cluster", function()
    local server, dir, nodes

    setup(function()
        nginx.build_module()
        server = fake.start()
        dir = shell.temp_dir()
    end)
    teardown(function()
        if server then server:stop() end
        if dir then shell.run("rm -rf " .. shell.quote(dir)) end
    end)
    before_each(function()
        server:reset { clients = { ["nginx-id"] = SECRET } }
    end)
    after_each(function()
        for _, node in ipairs(nodes or {}) do
            local log = node:error_log()
            assert.is_nil(log:find(SECRET, 1, true), "the secret is in error.log")
            assert.is_nil(log:find(PASSWORD, 1, true), "the password is in error.log")
            node:stop()
        end
        nodes = nil
    end)

    -- Two nginx nodes on the store at `url`.
    local function start_nodes(url)
        nodes = {}
        for i = 1, 2 do
            nodes[i] = nginx.start_test(server, SECRET, {
                OPTIONS = ('store = { url = "%s", timeout = 5, connect_timeout = 5 }, '):format(url),
            })
        end
    end

    -- Traffic for `seconds` through the nodes and 2 processes, with
    -- `fault()` run after 2 s: the good and bad answers, the output.
    local function under_traffic(url, seconds, fault)
        local finish = fleet.traffic(nodes, dir, fleet.env(server, SECRET, url), seconds, 2)
        core.sleep(2)
        local ok, why = pcall(fault)
        -- (the traffic ends before the next spec, whatever happened)
        local good, bad, out = finish()
        if not ok then error(why, 0) end
        return good, bad, out
    end

    -- The one key of a store at `prefix` on `node` (a redis-server handle).
    local function record_key(node)
        local _, out = node:cli("--scan --pattern 'oauth2:*'")
        for line in out:gmatch("[^\n]+") do
            if not line:match(":lock$") then return line end
        end
    end

    describe("Sentinel", function()
        local set
        setup(function() set = redis_server.sentinel("tokens", PASSWORD) end)
        teardown(function() if set then set.stop() end end)

        it("finds the primary through the first sentinel that answers, with the URL's "
            .. "user, password and database", function()
            local hosts = set.url:match("//(.-)/")
            -- the first sentinel named is down: the second answers
            local url = ("redis+sentinel://default:%s@127.0.0.1:%d,%s/tokens/3"):format(
                PASSWORD, nginx.free_port(), hosts)
            local store = assert(stores.redis(url))
            assert.is_true(store:set("k", "secret-a", { access_token = "a" }, 60))
            assert.equals("a", store:get("k", "secret-a").access_token)
            local lock = assert(store:try_lock("k", 5))
            assert.is_false(store:try_lock("k", 5))
            lock:unlock()
            -- in database 3 of the primary the sentinels name
            local primary = set.named()
            assert.equals("127.0.0.1:" .. set.primary.port, primary)
            local _, out = set.primary:cli("-n 3 EXISTS oauth2:k")
            assert.equals("1", out:match("%d+"))
            assert.is_nil(tostring(store):find(PASSWORD, 1, true))
            -- a master no sentinel knows: said, without the password
            local other = assert(stores.redis(url:gsub("/tokens/", "/nobody/")))
            local record, why = other:get("k", "secret-a")
            assert.is_nil(record)
            assert.matches("no primary named 'nobody'", why, 1, true)
            assert.is_nil(why:find(PASSWORD, 1, true))
        end)

        it("goes through a failover with no failed request and no extra token request",
            function()
            local url = ("redis+sentinel://:%s@%s"):format(PASSWORD, set.url:match("//(.*)$"))
            start_nodes(url)
            local before = set.named()
            local good, bad, out = under_traffic(url, 10, function()
                -- the primary dies: the sentinels promote its replica
                set.primary:halt()
            end)
            -- (the sentinels' promotion is not timed: a busy machine slows it)
            local after
            for _ = 1, 300 do
                after = set.named()
                if after ~= before then break end
                core.sleep(0.1)
            end
            assert.are_not.equal(before, after)
            assert.equals("127.0.0.1:" .. set.replica.port, after)
            assert.equals(0, bad, out)
            assert.is_true(good >= 60, out)
            -- the cold start's, and the record survived on the replica
            assert.equals(1, server:stats().token_requests)
            local _, keys = set.replica:cli("--scan --pattern '*'")
            assert.is_string(record_key(set.replica), keys)
            set.primary:start_again() -- (it comes back, as a replica)
        end)
    end)

    describe("Cluster", function()
        local cluster
        setup(function() cluster = redis_server.cluster() end)
        teardown(function() if cluster then cluster.stop() end end)
        before_each(function() cluster.flush() end)

        it("keeps a credential's record and lock in one slot, and follows MOVED", function()
            local store = assert(stores.redis(cluster.url))
            for i = 1, 20 do
                -- keys on every node, through the one node the URL names
                assert.is_true(store:set("key-" .. i, "s", { access_token = "t" .. i }, 60))
            end
            for i = 1, 20 do
                assert.equals("t" .. i, store:get("key-" .. i, "s").access_token)
            end
            local name = store:name_of("key-1")
            assert.equals(cluster.owner(name), cluster.owner(name .. ":lock"))
            local lock = assert(store:try_lock("key-1", 5))
            assert.is_false(store:try_lock("key-1", 5))
            lock:unlock()
            assert.equals(0, store:stats().errors)
            -- a URL with a database is refused: a Cluster has only 0
            local refused, why = stores.redis(cluster.url .. "/2")
            assert.is_nil(refused)
            assert.matches("database 0 only", why, 1, true)
        end)

        it("goes through a resharding of the credential's slot with no failed request",
            function()
            start_nodes(cluster.url)
            local key
            local good, bad, out = under_traffic(cluster.url, 8, function()
                for _, node in ipairs(cluster.nodes) do key = key or record_key(node) end
                assert.truthy(key, "no record in the cluster")
                local from, slot = cluster.owner(key)
                local to
                for _, node in ipairs(cluster.nodes) do
                    local _, role = node:cli("ROLE")
                    if node ~= from and role:match("^master") then to = node end
                end
                local _, to_id = to:cli("CLUSTER MYID")
                local _, from_id = from:cli("CLUSTER MYID")
                to_id, from_id = to_id:match("%x+"), from_id:match("%x+")
                -- the slot moves as redis-cli --cluster reshard moves it
                to:cli("CLUSTER SETSLOT " .. slot .. " IMPORTING " .. from_id)
                from:cli("CLUSTER SETSLOT " .. slot .. " MIGRATING " .. to_id)
                core.sleep(1) -- ASK redirections meanwhile
                local _, keys = from:cli("CLUSTER GETKEYSINSLOT " .. slot .. " 100")
                for name in keys:gmatch("[^\n]+") do
                    from:cli("MIGRATE 127.0.0.1 " .. to.port .. " " .. shell.quote(name)
                        .. " 0 5000")
                end
                for _, node in ipairs(cluster.nodes) do
                    node:cli("CLUSTER SETSLOT " .. slot .. " NODE " .. to_id)
                end
                assert.equals(to, cluster.owner(key))
            end)
            assert.equals(0, bad, out)
            assert.is_true(good >= 40, out)
            assert.equals(1, server:stats().token_requests)
        end)

        it("goes through a failover in the cluster with no failed request and no extra "
            .. "token request", function()
            start_nodes(cluster.url)
            local owner
            local good, bad, out = under_traffic(cluster.url, 10, function()
                local key
                for _, node in ipairs(cluster.nodes) do key = key or record_key(node) end
                assert.truthy(key, "no record in the cluster")
                owner = cluster.owner(key)
                owner:halt() -- its replica takes over its slots
            end)
            assert.equals(0, bad, out)
            assert.is_true(good >= 60, out)
            assert.equals(1, server:stats().token_requests)
        end)
    end)
end)
