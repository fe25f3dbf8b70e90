-- bench/run.lua: lua-oauth2 side by side with what users would otherwise pick.
--
-- Run with `make bench` (after bench/setup).  Starts nginx as a fast fake
-- token endpoint on 127.0.0.1 (HTTP and HTTPS), then runs N sequential token
-- requests through each client, reusing the connection where the client
-- allows, in ROUNDS interleaved rounds.  Reports req/s (median), mean
-- latency, the ratio to the C ceiling (libcurl, one reused handle), peak
-- RSS and the connections the server saw, as a markdown table printed and
-- written to bench/results/.  Then the RSS growth of a Lua 5.4 process over
-- 100,000 exchanges.

package.path = "lua/?.lua;spec/support/?.lua;bench/?.lua;" .. package.path
package.cpath = "build/5.4/?.so;" .. package.cpath

local core = require "oauth2.core"
local fake = require "server"
local nginx = require "nginx"
local shell = require "shell"

local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS")) or 7
local SCALE = tonumber(os.getenv("BENCH_SCALE")) or 1
local PYTHON = "/usr/bin/python3" -- Debian's, with Debian's urllib3
-- the CPU the endpoint and every client run on (see bench/endpoint.conf)
local CPU = tonumber(os.getenv("BENCH_CPU")) or 0
local PIN = "taskset -c " .. CPU .. " "

-- name, command (URL, N and CA file appended), N per round (before SCALE)
local CLIENTS = {
    { "C + libcurl, one reused handle (ceiling)", "build/bench/ceiling", 20000 },
    { "lua-oauth2 on Lua 5.4 (oauth2.endpoint, its own connection)",
      "lua5.4 bench/clients/oauth2_lua.lua", 20000 },
    { "lua-oauth2 on LuaJIT (oauth2.endpoint, its own connection)",
      "luajit bench/clients/oauth2_lua.lua", 20000 },
    { "lua-curl (Debian, Lua 5.1) + lua-cjson", "lua5.1 bench/clients/lua_curl.lua", 20000 },
    { "LuaSocket socket.http / LuaSec + lua-cjson (Lua 5.4)",
      "lua5.4 bench/clients/luasocket.lua", 1000 },
    { "Python urllib3 + json", PYTHON .. " bench/clients/urllib3_client.py", 5000 },
    { "Node simple-oauth2, default agent", "node bench/clients/simple_oauth2.js", 1500,
      node = "default" },
    { "Node simple-oauth2, keep-alive agent", "node bench/clients/simple_oauth2.js", 5000,
      node = "keepalive" },
    { "curl command line, a process per request", "sh bench/clients/curl_cli.sh", 200 },
}

local median = require("stats").median

-- The connections the endpoint has counted so far.
local function connections(base)
    local session = core.session()
    local res = assert(session:request { url = base .. "/_connections", timeout = 5 })
    session:close()
    return tonumber(res.body:match("%d+"))
end

-- One client run: seconds, requests, peak RSS (KiB) and new connections.
local function run_client(client, url, ca, base, requests)
    local n = math.max(1, math.floor((requests or client[3]) * SCALE))
    local args = { client[2], shell.quote(url), n }
    if client.node then
        args[#args + 1] = shell.quote(ca or "-")
        args[#args + 1] = client.node
    elseif ca then
        args[#args + 1] = shell.quote(ca)
    end
    local env = ""
    if client.node then
        env = "NODE_PATH=bench/node/node_modules "
        if ca then env = env .. "NODE_EXTRA_CA_CERTS=" .. shell.quote(ca) .. " " end
    end
    local before = connections(base)
    -- a client that hangs is stopped after two minutes and counted as failed
    local code, out = shell.run(env .. PIN .. "timeout 120 /usr/bin/time -f 'maxrss=%M' "
        .. table.concat(args, " "))
    local seconds, count = out:match("([%d%.]+) (%d+)\n")
    local rss = out:match("maxrss=(%d+)")
    if code ~= 0 or not (seconds and rss) then
        io.stderr:write(client[1] .. " failed:\n" .. out .. "\n")
        return nil
    end
    return tonumber(seconds), tonumber(count), tonumber(rss), connections(base) - before
end

-- Run every client ROUNDS times, the order rotating each round.
local function measure(scheme, url, ca, base)
    local results = {}
    for i = 1, #CLIENTS do results[i] = { rates = {}, latencies = {}, rss = {}, conns = {} } end
    for round = 1, ROUNDS do
        for k = 0, #CLIENTS - 1 do
            local i = (k + round - 1) % #CLIENTS + 1
            local seconds, count, rss, conns = run_client(CLIENTS[i], url, ca, base)
            local r = results[i]
            if seconds then
                r.rates[#r.rates + 1] = count / seconds
                r.latencies[#r.latencies + 1] = seconds / count * 1e6
                r.rss[#r.rss + 1] = rss
                r.conns[#r.conns + 1] = conns
                r.count = count
                io.stderr:write(("  %s round %d: %s %.0f req/s\n"):format(scheme, round,
                    CLIENTS[i][1], count / seconds))
            else
                r.failures = (r.failures or 0) + 1
            end
        end
    end
    local lines = {
        ("### %s (%d rounds, median)"):format(scheme, ROUNDS), "",
        "| client | requests | req/s | mean latency (µs) | vs C ceiling | peak RSS (MiB) "
            .. "| connections |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    }
    local ceiling = median(results[1].rates)
    for i, client in ipairs(CLIENTS) do
        local r = results[i]
        if #r.rates == 0 then
            lines[#lines + 1] = ("| %s | failed in every round | | | | | |"):format(client[1])
        else
            local rate = median(r.rates)
            local name = client[1]
            if r.failures then name = ("%s (failed %d of %d rounds)"):format(name, r.failures,
                ROUNDS) end
            lines[#lines + 1] = ("| %s | %d | %.0f | %.1f | %.2fx | %.1f | %d |"):format(
                name, r.count, rate, median(r.latencies), rate / ceiling,
                median(r.rss) / 1024, median(r.conns))
        end
    end
    return table.concat(lines, "\n"), results
end

-- The ratio to the ceiling once more, as a noisy machine allows: the
-- speed of this VM swings by a third over seconds, so each lua-oauth2
-- client runs right after the ceiling, PAIRED_RUNS times over, and the
-- ratio is taken within each such pair before the median.
local PAIRED_RUNS = tonumber(os.getenv("BENCH_PAIRED_RUNS")) or 15
local PAIRED_REQUESTS = 10000
local PAIRED_CLIENTS = { 2, 3 }

local function paired(url, ca, base)
    local ratios = {}
    for _, i in ipairs(PAIRED_CLIENTS) do ratios[i] = {} end
    for _ = 1, PAIRED_RUNS do
        for _, i in ipairs(PAIRED_CLIENTS) do
            local c_seconds, c_count = run_client(CLIENTS[1], url, ca, base, PAIRED_REQUESTS)
            local seconds, count = run_client(CLIENTS[i], url, ca, base, PAIRED_REQUESTS)
            if c_seconds and seconds then
                local list = ratios[i]
                list[#list + 1] = (count / seconds) / (c_count / c_seconds)
            end
        end
    end
    local medians = {}
    for _, i in ipairs(PAIRED_CLIENTS) do medians[i] = median(ratios[i]) end
    return medians
end

local function paired_table(http, tls)
    local lines = {
        ("### Against the ceiling run just before it (median of %d pairs of %d requests)")
            :format(PAIRED_RUNS, math.max(1, math.floor(PAIRED_REQUESTS * SCALE))), "",
        "| client | plain HTTP | TLS |",
        "| --- | ---: | ---: |",
    }
    for _, i in ipairs(PAIRED_CLIENTS) do
        lines[#lines + 1] = ("| %s | %.2fx | %.2fx |"):format(CLIENTS[i][1], http[i], tls[i])
    end
    return table.concat(lines, "\n")
end

-- What the endpoint serves on one keep-alive connection (wrk, 3 s): it
-- must be far above any client here, so the clients are what is measured.
local function endpoint_rate(url)
    local code, out = shell.run(PIN .. "wrk -t1 -c1 -d3s " .. shell.quote(url))
    assert(code == 0, out)
    return tonumber(out:match("Requests/sec:%s+([%d%.]+)"))
end

-- Instructions one exchange costs the client process, counted by callgrind:
-- the same count on a quiet or a busy machine, unlike the rates above.
-- Runs of 1,000 and 3,000 exchanges, so start-up cancels out.
local INSTRUCTION_CLIENTS = { 1, 2, 3 }

local function instructions(client, url)
    local counts = {}
    for _, n in ipairs { 1000, 3000 } do
        -- an "env NAME=value" prefix goes before valgrind, which then
        -- counts the client itself
        local env, command = client[2]:match("^(env %S+ )(.*)$")
        local code, out = shell.run((env or "") .. "valgrind --tool=callgrind "
            .. "--callgrind-out-file=/dev/null " .. (command or client[2]) .. " "
            .. shell.quote(url) .. " " .. n)
        local total = out:match("Collected : (%d+)")
        assert(code == 0 and total, client[1] .. " under callgrind failed:\n" .. out)
        counts[#counts + 1] = tonumber(total)
    end
    return (counts[2] - counts[1]) / 2000
end

local function instruction_table(url)
    local lines = {
        "### Instructions per exchange (callgrind, client process only, plain HTTP)", "",
        "| client | instructions | ceiling / client |",
        "| --- | ---: | ---: |",
    }
    local ceiling
    for _, i in ipairs(INSTRUCTION_CLIENTS) do
        local count = instructions(CLIENTS[i], url)
        ceiling = ceiling or count
        lines[#lines + 1] = ("| %s | %.0f | %.2fx |"):format(CLIENTS[i][1], count, ceiling / count)
    end
    return table.concat(lines, "\n")
end

-- One-shot calls: a new handle and connection per request in C, and
-- oauth2.token(opts) per request (options checked, request prepared, a
-- connection opened and closed), paired as above, and their instructions.
local ONESHOT = {
    { "C + libcurl, a new easy handle per request (one-shot ceiling)",
      "env CEILING_ONESHOT=1 build/bench/ceiling" },
    { "lua-oauth2 on Lua 5.4, oauth2.token(opts) per request",
      "env ONESHOT=1 lua5.4 bench/clients/oauth2_lua.lua" },
    { "lua-oauth2 on LuaJIT, oauth2.token(opts) per request",
      "env ONESHOT=1 luajit bench/clients/oauth2_lua.lua" },
}
local ONESHOT_REQUESTS = 3000

local function oneshot_table(url, base)
    local ratios, counts = { {}, {} }, {}
    for _ = 1, PAIRED_RUNS do
        for i = 2, 3 do
            local c_seconds, c_count = run_client(ONESHOT[1], url, nil, base, ONESHOT_REQUESTS)
            local seconds, count = run_client(ONESHOT[i], url, nil, base, ONESHOT_REQUESTS)
            if c_seconds and seconds then
                local list = ratios[i - 1]
                list[#list + 1] = (count / seconds) / (c_count / c_seconds)
            end
        end
    end
    for i = 1, 3 do counts[i] = instructions(ONESHOT[i], url) end
    local lines = {
        ("### One-shot calls over plain HTTP (median of %d pairs of %d requests; "
            .. "instructions by callgrind)"):format(PAIRED_RUNS,
            math.max(1, math.floor(ONESHOT_REQUESTS * SCALE))), "",
        "| client | vs the one-shot ceiling run just before it | instructions per call |",
        "| --- | ---: | ---: |",
        ("| %s | 1.00x | %.0f |"):format(ONESHOT[1][1], counts[1]),
    }
    for i = 2, 3 do
        lines[#lines + 1] = ("| %s | %.2fx | %.0f |"):format(ONESHOT[i][1],
            median(ratios[i - 1]), counts[i])
    end
    return table.concat(lines, "\n")
end

-- RSS (KiB) of a Lua 5.4 process before and after 100,000 exchanges.
local function memory_growth(url)
    local code, out = shell.run(PIN .. "lua5.4 bench/clients/memory.lua " .. shell.quote(url)
        .. " " .. math.floor(100000 * SCALE))
    assert(code == 0, out)
    return out:match("[^\n]+$") or out
end

local certs = shell.temp_dir()
fake.make_certificates(certs)
local http_port, https_port = nginx.free_port(), nginx.free_port()
local proxy = nginx.start(nginx.fill(shell.read_file("bench/endpoint.conf"), {
    USER = nginx.user_line(), HTTP_PORT = http_port, HTTPS_PORT = https_port,
    CPU_MASK = "1" .. string.rep("0", CPU), -- binary, as nginx reads it
    CERT = certs .. "/server.pem", KEY = certs .. "/server.key",
}))
local ok, failure = pcall(function()
    local base = "http://127.0.0.1:" .. http_port
    local path = "/v7/oauth2/token"
    if os.getenv("BENCH_ONLY") == "instructions" then
        -- the steady measure alone (make bench-instructions)
        print(instruction_table(base .. path))
        return
    end
    if os.getenv("BENCH_ONLY") == "oneshot" then
        -- one-shot calls alone (make bench-oneshot)
        print(oneshot_table(base .. path, base))
        return
    end
    local capacity = endpoint_rate(base .. path)
    local http_table = measure("Plain HTTP", base .. path, nil, base)
    local tls_table = measure("TLS (HTTPS)", "https://127.0.0.1:" .. https_port .. path,
        certs .. "/ca.pem", base)
    local pairs_table = paired_table(paired(base .. path, nil, base),
        paired("https://127.0.0.1:" .. https_port .. path, certs .. "/ca.pem", base))
    local growth = memory_growth(base .. path)
    local counted = instruction_table(base .. path)
    local oneshot = oneshot_table(base .. path, base)
    local _, machine = shell.run("uname -srm; nproc")
    local report = table.concat({
        "# lua-oauth2 side by side",
        "",
        ("%s, on %s (%s cores); endpoint: nginx, one worker, on 127.0.0.1; endpoint "
            .. "and clients pinned to one CPU."):format(
            os.date("!%Y-%m-%d %H:%M UTC"), (machine:match("^[^\n]+")),
            machine:match("\n(%d+)") or "?"),
        ("The endpoint serves %.0f req/s on one keep-alive connection (wrk)."):format(capacity),
        "Rates are medians of interleaved rounds; 'connections' is how many the",
        "server saw per run (1 means the client reused one for all requests).",
        "",
        http_table, "", tls_table, "", pairs_table, "", counted, "", oneshot, "",
        "### Memory", "", growth, "",
    }, "\n")
    print(report)
    local file = os.date("!bench/results/%Y-%m-%d-%H%M.md")
    local f = assert(io.open(file, "w"))
    f:write(report)
    f:close()
    io.stderr:write("written to " .. file .. "\n")
end)
proxy:stop()
shell.run("rm -rf " .. shell.quote(certs))
if not ok then error(failure, 0) end
