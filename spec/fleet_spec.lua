-- A fleet on one credential: a real redis-server, 3 nginx instances with
-- 2 workers each (oauth2.openresty with store = "redis://...") and plain
-- Lua processes (oauth2.client with the same store), against the fake
-- token endpoint.  The fleet makes one token request where one is due.

-- nginx runs its own LuaJIT whatever Lua runs busted: spec/run runs this
-- file once per suite (SPEC_NGINX=0 on the other runs)
if os.getenv("SPEC_NGINX") == "0" then return end

local core = require "oauth2.core"
local fake = require "server"
local nginx = require "nginx"
local shell = require "shell"
local redis_server = require "redis"
local fleet = require "fleet"

local SECRET = "sentinel-Secret-fleet-3c8d"

describe("a fleet on a Redis store", function()
    local server, redis, nodes, dir

    local function start_node()
        return nginx.start_test(server, SECRET, {
            -- Redis timeouts with room for a machine busy with sanitizers:
            -- a timeout sends a node to its own fetch, by design
            -- (no invalidate_cooldown: a rejected token is replaced at once)
            OPTIONS = ('store = { url = "%s", timeout = 5, connect_timeout = 5 }, '
                .. 'invalidate_cooldown = 0,'):format(redis.url),
        })
    end

    setup(function()
        nginx.build_module()
        server = fake.start()
        redis = redis_server.start(server) -- and TLS with the fake's certificate
        dir = shell.temp_dir()
    end)
    teardown(function()
        if redis then redis:stop() end
        if server then server:stop() end
        if dir then shell.run("rm -rf " .. shell.quote(dir)) end
    end)
    before_each(function()
        server:reset { clients = { ["nginx-id"] = SECRET } }
        redis:cli("FLUSHALL")
        nodes = { start_node(), start_node(), start_node() }
    end)
    after_each(function()
        for _, node in ipairs(nodes or {}) do
            assert.is_nil(node:error_log():find(SECRET, 1, true), "the secret is in error.log")
            node:stop()
        end
        nodes = nil
    end)

    -- What the nodes and the servers say, for a failure's message: each
    -- node's stats (from a few requests, so both workers), the end of its
    -- error.log, the fake server's counters.
    local function diagnosis()
        local parts = {}
        for i, node in ipairs(nodes) do
            local _, out = shell.run(("for i in 1 2 3 4; do LD_PRELOAD= curl -s "
                .. "-H 'Connection: close' '%s/stats'; done"):format(node.base))
            local log = node:error_log()
            parts[#parts + 1] = ("\n-- node %d stats:\n%s-- node %d error.log:\n%s"):format(
                i, out, i, log:sub(-2000))
        end
        local seen = server:stats()
        parts[#parts + 1] = ("\n-- fake server: %d token requests, %d API 401s"):format(
            seen.token_requests, seen.api_unauthorized or -1)
        return table.concat(parts)
    end

    -- Everyone at once: n requests to each node and `processes` plain Lua
    -- clients; the statuses of the requests and the clients' outputs.
    local function everyone(n, processes)
        local parts = {}
        for i, node in ipairs(nodes) do
            -- curl runs without a sanitizer the Lua processes may be preloaded with
            parts[#parts + 1] = "LD_PRELOAD= curl -s --parallel --parallel-immediate "
                .. "--parallel-max " .. n
                .. " -H 'Connection: close' -o /dev/null -w 'code=%{http_code}\\n' '"
                .. node.base .. "/v7/tests?n=[1-" .. n .. "]' > " .. shell.quote(dir
                .. "/node." .. i) .. " 2>&1 &"
        end
        local env = fleet.env(server, SECRET, redis.url)
        for i = 1, processes do
            parts[#parts + 1] = shell.lua_command(env, "spec/support/store_child.lua token")
                .. " > " .. shell.quote(dir .. "/proc." .. i) .. " 2>&1 &"
        end
        local code, out = shell.run(table.concat(parts, "\n") .. "\nwait; cat "
            .. shell.quote(dir) .. "/node.* " .. shell.quote(dir) .. "/proc.* 2>/dev/null; rm -f "
            .. shell.quote(dir) .. "/node.* " .. shell.quote(dir) .. "/proc.*", { lua = true })
        assert.equals(0, code, out)
        local ok, failed, tokens = 0, 0, 0
        for status in out:gmatch("code=(%d+)") do
            if status == "200" then ok = ok + 1 else failed = failed + 1 end
        end
        for _ in out:gmatch("token te%-%x+") do tokens = tokens + 1 end
        return ok, failed, tokens, out
    end

    -- Steady traffic for about `seconds` (spec/support/fleet.lua).
    local function traffic(seconds, processes)
        return fleet.traffic(nodes, dir, fleet.env(server, SECRET, redis.url), seconds,
            processes)
    end

    it("makes exactly one token request on a cold start", function()
        server:control { delay = 0.3 }
        local ok, failed, tokens, out = everyone(20, 10)
        assert.equals(60, ok, out)
        assert.equals(0, failed)
        assert.equals(10, tokens, out)
        assert.equals(1, server:stats().token_requests)
    end)

    it("takes a Redis error reply (-OOM) for a store failure, not a held lease", function()
        -- every write is refused with -OOM; reads still answer
        assert.equals(0, (redis:cli("CONFIG SET maxmemory 1")))
        finally(function() redis:cli("CONFIG SET maxmemory 0") end)
        local _, write = redis:cli("SET probe 1")
        assert.matches("OOM", write)
        for i, node in ipairs(nodes) do
            local _, out = shell.run("LD_PRELOAD= curl -s -o /dev/null -w '%{http_code}' '"
                .. node.base .. "/v7/tests'")
            assert.equals("200", out, "node " .. i .. diagnosis())
        end
        -- each node fetched alone, and said why once
        assert.equals(3, server:stats().token_requests)
        local log = nodes[1]:error_log()
        assert.matches("oauth2.store redis://127.0.0.1:%d+/0 failed %(redis: OOM", log)
        local _, lines = log:gsub("oauth2.store redis", "")
        assert.equals(1, lines)
    end)

    it("keeps a connection to one Redis database from serving another", function()
        local url = redis.url .. "/"
        local _, out = shell.run(("LD_PRELOAD= curl -s '%s/redis-stores?url1=%s1&url2=%s2'")
            :format(nodes[1].base, url, url))
        assert.matches("url1 true nil\nurl2 true nil", out)
        local _, one = redis:cli("-n 1 --raw KEYS 'oauth2:pool-check'")
        local _, two = redis:cli("-n 2 --raw KEYS 'oauth2:pool-check'")
        assert.equals("oauth2:pool-check", one:match("%S+"), "db 1: " .. one)
        assert.equals("oauth2:pool-check", two:match("%S+"), "db 2: " .. two)
        -- and each holds its own store's record, not the other's
        local _, value_one = redis:cli("-n 1 --raw STRLEN oauth2:pool-check")
        local _, value_two = redis:cli("-n 2 --raw STRLEN oauth2:pool-check")
        assert.is_true(tonumber(value_one) > 64 and tonumber(value_two) > 64)
    end)

    it("speaks TLS to Redis with rediss://, checking the certificate", function()
        local function get(store_url, server_name)
            local _, answer = shell.run(("LD_PRELOAD= curl -s '%s/redis-get?timeout=2&url=%s%s'")
                :format(nodes[1].base, store_url,
                    server_name and "&server_name=" .. server_name or ""))
            return answer
        end
        redis:cli("SET k over-tls")
        assert.equals("over-tls nil\n", get(redis.tls_url, "localhost"))
        -- the certificate is checked for the name: nginx matches DNS
        -- names only, and 127.0.0.1 is none
        assert.matches("^nil redis 127.0.0.1:%d+: TLS: ", get(redis.tls_url))
        -- never plain instead: a port without TLS fails the handshake
        assert.matches("^nil redis 127.0.0.1:%d+: TLS: ",
            get(redis.url:gsub("^redis:", "rediss:"), "localhost"))
        -- a certificate of a CA nginx does not trust is refused
        local stranger = redis_server.start { cert_file = server.wrong_ca_file,
            key_file = server.wrong_ca_file:gsub("%.pem$", ".key"), ca_file = server.ca_file }
        finally(function() stranger:stop() end)
        -- (refused is what matters: lua-resty-core words it as a
        -- certificate error, or now and then as a failed assertion)
        assert.matches("^nil redis 127.0.0.1:%d+: TLS: ", get(stranger.tls_url, "localhost"))
    end)

    it("bounds a Redis command in nginx by one deadline, not one per read", function()
        -- a reply trickled a byte every 0.2 s (3.6 s in all), each byte in
        -- time for a 0.5 s per-read timeout
        local port = redis_server.trickle(dir)
        local _, answer = shell.run(("LD_PRELOAD= curl -s '%s/redis-get?timeout=0.5&url="
            .. "redis://127.0.0.1:%d'"):format(nodes[1].base, port))
        assert.matches("^nil redis 127.0.0.1:%d+: the command timed out\n$", answer)
    end)

    it("bounds connecting to Redis in nginx (TLS, AUTH, SELECT) by the same one bound",
            function()
        -- AUTH's +OK trickled a byte every 0.45 s (2.25 s in all), each
        -- byte in time for a 0.5 s per-read timeout: connect_timeout (1 s)
        -- and timeout (0.5 s) bound the whole
        local port, said = redis_server.trickle(dir, "auth")
        local _, answer = shell.run(("LD_PRELOAD= curl -s '%s/redis-get?timeout=0.5&url="
            .. "redis://:a-password@127.0.0.1:%d'"):format(nodes[1].base, port))
        assert.matches("^nil redis 127.0.0.1:%d+: connecting timed out", answer)
        -- the command never followed an AUTH that came too late
        assert.matches("no second command", said("second"))
    end)

    it("makes one request for the whole fleet after a 429", function()
        server:control { script = { { status = 429, headers = { ["Retry-After"] = "30" } } } }
        local ok, _, tokens, out = everyone(10, 5)
        assert.equals(0, ok, out)
        assert.equals(0, tokens, out)
        everyone(10, 5)
        assert.equals(1, server:stats().token_requests)
    end)

    it("drops a token another node saw rejected from every node within 5 s", function()
        everyone(10, 0)
        assert.equals(1, server:stats().token_requests)
        server:control { revoke = true }
        -- the first node meets the 401, invalidates, and fetches anew
        local _, out = shell.run(("for i in 1 2 3 4 5 6; do curl -s -o /dev/null "
            .. "-w 'code=%%{http_code}\n' '%s/v7/tests'; done"):format(nodes[1].base))
        assert.matches("code=401", out)
        assert.matches("code=200\n$", out)
        local seen = server:stats().api_unauthorized
        core.sleep(5)
        -- the other nodes dropped the rejected token without meeting a 401
        local ok, bad, _, text = everyone(10, 0)
        assert.equals(30, ok, text)
        assert.equals(0, bad)
        assert.equals(seen, server:stats().api_unauthorized)
        assert.equals(2, server:stats().token_requests)
    end)

    it("replaces the token for the whole fleet on an invalidate() without a value",
            function()
        everyone(10, 0)
        assert.equals(1, server:stats().token_requests)
        local _, out = shell.run(("LD_PRELOAD= curl -s '%s/invalidate'"):format(nodes[1].base))
        assert.equals("invalidated\n", out)
        -- the node fetches anew rather than read the same token back
        local ok, failed, _, text = everyone(10, 0)
        assert.equals(30, ok, text)
        assert.equals(0, failed)
        assert.equals(2, server:stats().token_requests)
    end)

    it("fails no request with a valid token while Redis is down", function()
        everyone(10, 0)
        redis:halt()
        local ok, failed, _, out = everyone(20, 0)
        assert.equals(60, ok, out)
        assert.equals(0, failed)
        redis:start_again()
        assert.equals(1, server:stats().token_requests)
    end)

    it("makes one token request per refresh", function()
        -- 20 s tokens: counted as expired at 10 s (the margin), due at 8 s
        -- (the processes' 7.6 to 8 s): the cold start and one refresh
        server:control { expires_in = 20 }
        everyone(4, 0)
        local started = core.now()
        local finish = traffic(12, 3)
        local good, bad, out = finish()
        local elapsed = core.now() - started
        assert.equals(0, bad, out)
        assert.is_true(good > 0)
        -- (a busy machine stretches the 12 s of traffic: one refresh per
        -- shortest refresh period it lasted, at most)
        local requests = server:stats().token_requests
        assert.is_true(requests >= 2 and requests <= 1 + math.ceil(elapsed / 7.6),
            requests .. " token requests in " .. elapsed .. " s")
    end)

    it("goes on within a lease when the holder of the fleet's lease is killed", function()
        -- a process takes the lease and hangs in its fetch; then it dies
        server:control { delay = 30 }
        local env = fleet.env(server, SECRET, redis.url)
        local code, pid = shell.run(shell.lua_command(env, "spec/support/store_child.lua token")
            .. " > /dev/null 2>&1 & echo $!", { lua = true })
        assert.equals(0, code)
        pid = pid:match("%d+")
        for _ = 1, 100 do
            if server:stats().token_requests > 0 then break end
            core.sleep(0.05)
        end
        assert.equals(1, server:stats().token_requests)
        assert.equals(0, (shell.run("kill -9 " .. pid)))
        server:control { delay = 0 }
        local killed_at = core.now()
        -- the nodes' requests wait at most wait_timeout (3 s) each: keep
        -- asking until one has a token; the lease (timeout 5 s + 5 s) is
        -- the longest the fleet goes without
        local served
        for _ = 1, 60 do
            local _, out = shell.run(("LD_PRELOAD= curl -s -o /dev/null -w '%%{http_code}' "
                .. "'%s/v7/tests'"):format(nodes[1].base))
            if out == "200" then served = core.now() - killed_at; break end
            core.sleep(0.25)
        end
        assert.is_number(served, "no token after the lease holder died")
        assert.is_true(served <= 10 + 3 + 2, ("a token %.1f s after the kill"):format(served))
        assert.equals(2, server:stats().token_requests)
    end)
end)
