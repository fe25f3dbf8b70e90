-- bin/thousandeyes-token against the fake endpoint: output, exit codes, secrets.

local cjson = require "cjson"
local fake = require "server"
local shell = require "shell"

local SECRET = "sentinel-Secret-9d03aa"

describe("thousandeyes-token", function()
    local server, dir

    setup(function()
        server = fake.start()
        local p = io.popen("mktemp -d")
        dir = p:read("*l")
        p:close()
        local f = assert(io.open(dir .. "/secret", "w"))
        f:write(SECRET, "\n")
        f:close()
    end)
    teardown(function()
        if server then server:stop() end
        if dir then os.execute("rm -rf " .. shell.quote(dir)) end
    end)
    -- every spec gets a token cache of its own (XDG_RUNTIME_DIR)
    local runtime, runs = nil, 0
    before_each(function()
        server:reset { clients = { ["cli-id"] = SECRET } }
        runs = runs + 1
        runtime = dir .. "/run-" .. runs
        assert(os.execute("mkdir -m 700 " .. shell.quote(runtime)))
    end)

    -- Run the tool; returns exit code, stdout, stderr.
    local function cli(args, env, stdin)
        local merged = { XDG_RUNTIME_DIR = runtime }
        for k, v in pairs(env or {}) do merged[k] = v end
        env = merged
        local command = shell.lua_command(env, "bin/thousandeyes-token " .. args)
        if stdin then command = "printf '%s' " .. shell.quote(stdin) .. " | " .. command end
        local err_file = dir .. "/stderr"
        local code, out = shell.run(command .. " 2>" .. shell.quote(err_file),
            { lua = true, separate = true })
        local f = io.open(err_file)
        local err = f and f:read("*a") or ""
        if f then f:close() end
        -- whatever happened, no secret may show
        assert.is_nil((out .. err):find(SECRET, 1, true), "secret in output: " .. out .. err)
        return code, out, err
    end

    local function host() return "--host " .. server.http_url end
    local creds = { THOUSANDEYES_CLIENT_ID = "cli-id", THOUSANDEYES_CLIENT_SECRET = SECRET }

    it("prints the access token with credentials from the environment", function()
        local code, out, err = cli(host(), creds)
        assert.equals(0, code, err)
        assert.matches("^te%-%x+\n$", out)
        assert.equals("", err)
    end)

    it("prints the Authorization header line with --header", function()
        local code, out = cli(host() .. " --header", creds)
        assert.equals(0, code)
        assert.matches("^Authorization: Bearer te%-%x+\n$", out)
    end)

    it("prints the whole token table with --json", function()
        local code, out = cli(host() .. " --json --scope a:read --scope b:read", creds)
        assert.equals(0, code)
        local token = cjson.decode(out)
        assert.matches("^te%-", token.access_token)
        assert.equals("Bearer", token.token_type)
        assert.equals(3600, token.expires_in)
        -- whole seconds since the epoch, as oauth2.token gives it
        assert.matches("\"expires_at\":%d+[,}]", out)
        assert.equals(math.floor(token.expires_at), token.expires_at)
        assert.equals("a:read b:read", token.scope)
    end)

    it("reads the secret from a file or from standard input", function()
        local code = cli(host() .. " --client-id cli-id --client-secret-file "
            .. shell.quote(dir .. "/secret"))
        assert.equals(0, code)
        code = cli(host() .. " --client-id cli-id --client-secret-file -", {}, SECRET .. "\n")
        assert.equals(0, code)
        assert.equals(SECRET, server:last_request().form.client_secret)
        -- one cap for every secret file (as THOUSANDEYES_CLIENT_SECRET_FILE):
        -- /dev/zero is read 64 KiB far, not forever
        local out, err, _
        code, out, err = cli(host() .. " --client-id cli-id --client-secret-file /dev/zero")
        assert.equals(2, code)
        assert.equals("", out)
        assert.matches("%-%-client%-secret%-file: larger than 64 KiB", err)
        code, _, err = cli(host() .. " --api-token-file /dev/zero api GET /v7/tests")
        assert.equals(2, code)
        assert.matches("larger than 64 KiB", err)
        -- a file anyone may write: used, with a word
        local open = dir .. "/secret-0666"
        local f = assert(io.open(open, "w"))
        f:write(SECRET, "\n")
        f:close()
        assert(os.execute("chmod 0666 " .. shell.quote(open)))
        code, _, err = cli(host() .. " --client-id cli-id --client-secret-file "
            .. shell.quote(open))
        assert.equals(0, code, err)
        assert.matches("is writable by others", err)
        -- 0644, as container secret mounts are: no word
        assert(os.execute("chmod 0644 " .. shell.quote(open)))
        code, _, err = cli(host() .. " --client-id cli-id --client-secret-file "
            .. shell.quote(open))
        assert.equals(0, code, err)
        assert.equals("", err)
    end)

    it("passes request options through", function()
        local code = cli("--host=" .. server.https_url .. " --ca-file " .. shell.quote(server.ca_file)
            .. " --tenant t-9 --auth-method client_secret_basic --timeout 5 --retries 0", creds)
        assert.equals(0, code)
        local seen = server:last_request()
        assert.equals("t-9", seen.headers["x-tenant-id"])
        assert.equals("cli-id", seen.basic.client_id)
    end)

    it("refuses a secret on the command line", function()
        local code, out, err = cli(host() .. " --client-id cli-id --client-secret " .. SECRET)
        assert.equals(2, code)
        assert.equals("", out)
        assert.matches("^thousandeyes%-token: %-%-client%-secret would show the secret", err)
    end)

    it("refuses a proxy password on the command line, and takes it from a file", function()
        local password = "sentinel-ProxyPw-cli-5e"
        for _, proxy in ipairs { "http://user:" .. password .. "@127.0.0.1:9",
                                 "user:" .. password .. "@127.0.0.1:9" } do
            local code, out, err = cli(host() .. " --client-id cli-id --proxy " .. proxy)
            assert.equals(2, code)
            assert.equals("", out)
            assert.matches("^thousandeyes%-token: %-%-proxy with a password would show it", err)
            assert.is_nil(err:find(password, 1, true))
        end
        -- from standard input the proxy is used (nobody listens there: a
        -- network error, without the password)
        local code, _, err = cli(host() .. " --client-id cli-id --retries 0 --no-cache --allow-http "
            .. "--proxy-file -", { THOUSANDEYES_CLIENT_SECRET = SECRET },
            "https://user:" .. password .. "@127.0.0.1:9\n")
        assert.equals(1, code)
        assert.matches("network error", err)
        assert.is_nil(err:find(password, 1, true))
    end)

    it("exits 1 with one line naming the failure", function()
        local code, out, err = cli(host() .. " --retries 0",
            { THOUSANDEYES_CLIENT_ID = "cli-id", THOUSANDEYES_CLIENT_SECRET = "wrong-" .. SECRET })
        assert.equals(1, code)
        assert.equals("", out)
        assert.equals("thousandeyes-token: oauth2: http error 401 (invalid_client): "
            .. "Client authentication failed\n", err)
    end)

    it("exits 1 when the endpoint cannot be reached", function()
        local code, _, err = cli("--host http://127.0.0.1:1 --retries 0", creds)
        assert.equals(1, code)
        assert.matches("^thousandeyes%-token: oauth2: network error", err)
        assert.equals(1, select(2, err:gsub("\n", "")))
    end)

    it("exits 2 on bad usage", function()
        local code, _, err = cli("--bogus", creds)
        assert.equals(2, code)
        assert.matches("unknown option '%-%-bogus'", err)
        code, _, err = cli(host() .. " --timeout soon", creds)
        assert.equals(2, code)
        assert.matches("%-%-timeout needs a number", err)
        code, _, err = cli(host(), {})
        assert.equals(2, code)
        assert.equals("thousandeyes-token: oauth2: --client-id is required "
            .. "(or set THOUSANDEYES_CLIENT_ID), or --api-token-file (or "
            .. "THOUSANDEYES_API_TOKEN) for a User API token\n", err)
    end)

    it("names the flag in every usage mistake", function()
        local cases = {
            { "--header --json", "option '%-%-json' can not be used together with option "
                .. "'%-%-header'" },
            { "--insecure --ca-file x", "can not be used together" },
            { "--timeout=-1", "%-%-timeout must be a positive number of seconds" },
            { "--retries 1.5", "%-%-retries must be an integer from 0 to 100, got 1%.5" },
            { "--host ftp://x", "%-%-host must be an http:// or https:// URL" },
            { "--auth-method magic", "argument for option '%-%-auth%-method' must be one of" },
            { "--client-id", "option '%-%-client%-id' requires an argument" },
            { "--scope ' '", "%-%-scope needs a scope" },
            { "api", "missing argument 'method'" },
            { "api GET /v7/tests --query novalue", "%-%-query needs name=value" },
            { "api POST /v7/tests --data '{not json'", "%-%-data must be JSON" },
        }
        for _, case in ipairs(cases) do
            local code, out, err = cli(host() .. " " .. case[1], creds)
            assert.equals(2, code, case[1] .. ": " .. err)
            assert.equals("", out)
            assert.matches(case[2], err, nil, false, case[1])
        end
    end)

    it("takes the API's space-separated scopes, and arguments after --", function()
        local code, out = cli(host() .. " --json --scope 'a:read b:read' --scope c:read", creds)
        assert.equals(0, code)
        assert.equals("a:read b:read c:read", cjson.decode(out).scope)
        -- after --, what looks like a flag is an argument of api
        code, out = cli(host() .. " api GET -- /v7/tests", creds)
        assert.equals(0, code)
        assert.equals("11", cjson.decode(out).tests[1].testId)
    end)

    it("hints at --ca-file when the server's certificate is not trusted", function()
        local code, _, err = cli("--host " .. server.https_url .. " --retries 0", creds)
        assert.equals(1, code)
        assert.matches("^thousandeyes%-token: oauth2: tls error", err)
        assert.matches("pass %-%-ca%-file or set THOUSANDEYES_CA_FILE", err)
    end)

    it("calls the API with api METHOD PATH and prints the JSON", function()
        local code, out, err = cli(host() .. " api GET /v7/tests --query cursor=3", creds)
        assert.equals(0, code, err)
        local page = cjson.decode(out)
        assert.equals("31", page.tests[1].testId)
        code, out = cli(host() .. " api POST /v7/tags --data '{\"name\":\"x\"}'", creds)
        assert.equals(0, code)
        assert.equals('{"name":"x"}', cjson.decode(out).body)
        -- the token is cached between runs: one token request for all
        assert.equals(1, server:stats().token_requests)
        -- an answer that is not 2xx: its body, and exit 1
        server:control { api_script = { { status = 404,
            body = { title = "Not Found", detail = "no test 42" } } } }
        code, out, err = cli(host() .. " api GET /v7/nothing", creds)
        assert.equals(1, code)
        assert.equals("Not Found", cjson.decode(out).title)
        -- the problem's title and detail on stderr
        assert.equals("thousandeyes-token: oauth2: http error 404 (Not Found): Not Found - "
            .. "no test 42\n", err)
    end)

    it("calls the API with a User API token from a file, stdin or the environment", function()
        local token = "sentinel-cli-api-token-e2a7"
        server:control { api_tokens = { token } }
        local file = dir .. "/api-token"
        local f = assert(io.open(file, "w"))
        f:write(token, "\n")
        f:close()
        for _, run in ipairs {
            { "--api-token-file " .. shell.quote(file), {} },
            { "--api-token-file -", {}, token },
            { "", { THOUSANDEYES_API_TOKEN = token } },
        } do
            local code, out, err = cli(host() .. " " .. run[1] .. " api GET /v7/tests", run[2],
                run[3])
            assert.equals(0, code, err)
            assert.equals("11", cjson.decode(out).tests[1].testId)
            assert.is_nil((out .. err):find(token, 1, true))
        end
        assert.equals(0, server:stats().token_requests)
        -- there is no token to fetch with one: said, exit 2
        local code, out, err = cli(host(), { THOUSANDEYES_API_TOKEN = token })
        assert.equals(2, code)
        assert.equals("", out)
        assert.matches("is used as it is: there is no token to fetch", err)
        -- --header gives the header API requests carry, for curl -H
        code, out, err = cli(host() .. " --header", { THOUSANDEYES_API_TOKEN = token })
        assert.equals(0, code, err)
        assert.equals("Authorization: Bearer " .. token .. "\n", out)
        assert.equals(0, server:stats().token_requests)
        -- given with --client-id too: refused, naming the flag
        code, out, err = cli(host() .. " --client-id cli-id --api-token-file "
            .. shell.quote(file) .. " api GET /v7/tests", creds)
        assert.equals(2, code)
        assert.equals("", out)
        assert.matches("%-%-api%-token%-file is used as it is, with no token endpoint", err)
        assert.is_nil(err:find(token, 1, true))
    end)

    it("says what is cached (info), whether it is valid (test), and forgets it (reset)",
        function()
        -- nothing cached yet: test exits 1, info says so, neither fetches
        local code, out, err = cli(host() .. " test", creds)
        assert.equals(1, code, err)
        assert.equals("", out)
        code, out, err = cli(host() .. " info", creds)
        assert.equals(1, code)
        assert.equals("", out)
        assert.matches("no valid token is cached", err)
        assert.equals(0, server:stats().token_requests)
        -- one run fetches and caches; test and info then read the cache
        local token
        code, token = cli(host() .. " --scope tests:read", creds)
        assert.equals(0, code)
        token = token:gsub("%s+$", "")
        code = cli(host() .. " --scope tests:read test", creds)
        assert.equals(0, code)
        code, out, err = cli(host() .. " --scope tests:read info", creds)
        assert.equals(0, code, err)
        assert.matches("token_type: Bearer\n", out)
        assert.matches("scope: tests:read\n", out)
        assert.matches("expires_at: %d%d%d%d%-%d%d%-%d%dT[%d:]+Z %(in %d+ s%)\n", out)
        assert.matches("store: oauth2%.store file .*lua%-oauth2\n", out)
        assert.is_nil(out:find(token, 1, true))
        assert.equals(1, server:stats().token_requests)
        -- other credentials (another scope) have nothing cached
        code = cli(host() .. " --scope alerts:read test", creds)
        assert.equals(1, code)
        -- reset forgets it for every run: the next one fetches anew
        code, out = cli(host() .. " --scope tests:read reset", creds)
        assert.equals(0, code)
        assert.equals("forgotten\n", out)
        code = cli(host() .. " --scope tests:read test", creds)
        assert.equals(1, code)
        code, out = cli(host() .. " --scope tests:read", creds)
        assert.equals(0, code)
        assert.are_not.equals(token, out:gsub("%s+$", ""))
        assert.equals(2, server:stats().token_requests)
        -- --refresh fetches anew and caches that one
        code, out = cli(host() .. " --scope tests:read --refresh", creds)
        assert.equals(0, code)
        local refreshed = out:gsub("%s+$", "")
        code, out = cli(host() .. " --scope tests:read", creds)
        assert.equals(0, code)
        assert.equals(refreshed, out:gsub("%s+$", ""))
        assert.equals(3, server:stats().token_requests)
        -- without a cache there is nothing to ask
        code, out, err = cli(host() .. " --no-cache info", creds)
        assert.equals(2, code)
        assert.equals("", out)
        assert.matches("needs the token cache", err)
    end)

    it("says so when reset or --refresh cannot forget the token (its lock is held)", function()
        local code, token = cli(host(), creds)
        assert.equals(0, code)
        token = token:gsub("%s+$", "")
        -- another run holds the file store's lock (a slow refresh, a
        -- process stopped with Ctrl-Z): the same key, the same file
        local options, policy = require "oauth2.options", require "oauth2.policy"
        local key = policy.cache_key(assert(options.validate { host = server.http_url,
            client_id = "cli-id", client_secret = SECRET }))
        local store = assert(require("oauth2.store").file(runtime .. "/lua-oauth2"))
        local lock = assert(store:try_lock(key))
        local out, err
        code, out, err = cli(host() .. " --deadline 1 reset", creds)
        assert.equals(1, code)
        assert.equals("", out)
        assert.matches("could not be forgotten: another process holds its lock", err)
        -- and it is still there, said honestly
        assert.equals(0, (cli(host() .. " test", creds)))
        -- --refresh never prints the token it was asked to replace
        code, out, err = cli(host() .. " --deadline 1 --refresh", creds)
        assert.equals(1, code)
        assert.equals("", out)
        assert.is_nil(err:find(token, 1, true))
        lock:unlock()
        code, out = cli(host() .. " reset", creds)
        assert.equals(0, code)
        assert.equals("forgotten\n", out)
        assert.equals(1, (cli(host() .. " test", creds)))
        code, out = cli(host() .. " --refresh", creds)
        assert.equals(0, code)
        assert.are_not.equals(token, out:gsub("%s+$", ""))
    end)

    it("walks pages with api --paginate, shows headers with -i, adds them with -H", function()
        local code, out, err = cli(host() .. " api GET /v7/tests --paginate", creds)
        assert.equals(0, code, err)
        local ids = {}
        for line in out:gmatch("[^\n]+") do
            for _, test in ipairs(cjson.decode(line).tests) do ids[#ids + 1] = test.testId end
        end
        assert.same({ "11", "12", "21", "22", "31", "32" }, ids)
        code, out, err = cli(host() .. " api GET /v7/tags -i -H 'X-Extra: yes'"
            .. " --http-header 'X-Other:  two words '", creds)
        assert.equals(0, code, err)
        local head, body = out:match("^(.-)\n\n(.*)$")
        assert.matches("^HTTP 200\n", head)
        assert.matches("\ncontent%-type: application/json", head)
        assert.matches("\nx%-organization%-rate%-limit%-remaining: %d+", head)
        assert.equals("/v7/tags", cjson.decode(body).path)
        local seen = server:stats().api_log
        seen = seen[#seen].headers
        assert.equals("yes", seen["x-extra"])
        assert.equals("two words", seen["x-other"])
        -- the call's query on every page; API calls to --host beside --token-url
        code, out, err = cli("--token-url " .. server.http_url .. "/v7/oauth2/token --host "
            .. server.https_url .. " --ca-file " .. shell.quote(server.ca_file)
            .. " api GET /v7/tests --paginate --query aid=42", creds)
        assert.equals(0, code, err)
        assert.equals(3, select(2, out:gsub("\n", "")))
        local log = server:stats().api_log
        local https_port = tonumber(server.https_url:match(":(%d+)$"))
        for i = #log - 2, #log do
            assert.matches("aid=42", log[i].query, 1, true)
            assert.equals(https_port, log[i].port)
        end
        -- a page that fails: its problem, exit 1
        server:control { api_script = { { status = 403,
            body = { title = "Forbidden", detail = "no access" } } } }
        code, out, err = cli(host() .. " api GET /v7/tests --paginate", creds)
        assert.equals(1, code)
        assert.equals("", out)
        assert.matches("Forbidden %- no access", err)
        -- a header value with a control character: refused before any request
        local before = server:stats()
        for _, byte in ipairs { "001", "015", "012" } do
            code, out, err = cli(host() .. " api GET /v7/tests -H \"$(printf 'X-A: a\\" .. byte
                .. "b')\"", creds)
            assert.equals(2, code, err)
            assert.equals("", out)
            assert.matches("control character", err)
        end
        local after = server:stats()
        assert.equals(before.api_requests, after.api_requests)
        assert.equals(before.token_requests, after.token_requests)
        -- misuse
        code, out, err = cli(host() .. " api GET /v7/tests -H nonsense", creds)
        assert.equals(2, code)
        assert.equals("", out)
        assert.matches('%-H needs "Name: value"', err)
        code, out, err = cli(host() .. " api POST /v7/tests --paginate", creds)
        assert.equals("", out)
        assert.equals(2, code)
        assert.matches("%-%-paginate walks a GET listing", err)
    end)

    it("makes one token request for 20 runs in a row, and --no-cache one each", function()
        for _ = 1, 20 do
            local code, out, err = cli(host(), creds)
            assert.equals(0, code, err)
            assert.equals("", err)
            assert.matches("^te%-%x+\n$", out)
        end
        assert.equals(1, server:stats().token_requests)
        for _ = 1, 3 do assert.equals(0, (cli(host() .. " --no-cache", creds))) end
        assert.equals(4, server:stats().token_requests)
        -- the cache holds no secret and no token in clear, and only we can read it
        local _, listing = shell.run("ls -la " .. shell.quote(runtime .. "/lua-oauth2"))
        assert.matches("^total", listing)
        assert.is_nil(listing:find("rw-r", 1, true))
        local _, contents = shell.run("cat " .. shell.quote(runtime) .. "/lua-oauth2/*")
        assert.is_nil(contents:find(SECRET, 1, true))
        assert.is_nil(contents:find("te-", 1, true))
    end)

    it("makes one token request for 20 runs at once", function()
        server:control { delay = 0.3 }
        local env = { XDG_RUNTIME_DIR = runtime }
        for k, v in pairs(creds) do env[k] = v end
        local command = shell.lua_command(env, "bin/thousandeyes-token " .. host())
        local code, out = shell.run("for i in $(seq 20); do "
            .. command .. " > " .. shell.quote(dir) .. "/out.$i & done; wait; cat "
            .. shell.quote(dir) .. "/out.*", { lua = true })
        assert.equals(0, code, out)
        local _, tokens = out:gsub("te%-%x+\n", "")
        assert.equals(20, tokens, out)
        assert.equals(1, server:stats().token_requests)
    end)

    it("runs the README's curl example as written", function()
        local readme = assert(shell.read_file("README.md"))
        local line = readme:match('\n(curl %-H "%$%(thousandeyes%-token %-%-header%)"[^\n]*)')
        assert(line, "README.md no longer has the curl example")
        -- the API of the fake server instead of ThousandEyes'
        line = line:gsub("https://api%.thousandeyes%.com", server.http_url)
        line = line:gsub("thousandeyes%-token", shell.lua .. " bin/thousandeyes-token " .. host())
        -- curl itself runs without a sanitizer the tool may be preloaded with
        line = line:gsub("^curl ", "LD_PRELOAD= curl ")
        local env = {}
        for k, v in pairs(creds) do env[#env + 1] = "export " .. k .. "=" .. shell.quote(v) .. ";" end
        local code, out = shell.run(table.concat(env, " ") .. " export XDG_RUNTIME_DIR="
            .. shell.quote(runtime) .. "; export LUA_PATH='lua/?.lua;;' LUA_CPATH="
            .. shell.quote(shell.build .. "/?.so;;") .. "; " .. line
            .. " -s -o /dev/null -w '%{http_code}'", { lua = true })
        assert.equals(0, code, out)
        assert.equals("200", out)
        assert.equals(0, server:stats().api_unauthorized)
    end)

    it("checks an nginx configuration's options without fetching", function()
        local good, bad = dir .. "/good.lua", dir .. "/bad.lua"
        local f = assert(io.open(good, "w"))
        f:write('return { dict = "oauth2_tokens", client_id = "cli-id",\n'
            .. '  client_secret = os.getenv("THOUSANDEYES_CLIENT_SECRET"),\n'
            .. '  host = "' .. server.http_url .. '", wait_timeout = 2 }\n')
        f:close()
        f = assert(io.open(bad, "w"))
        f:write('return { dict = "oauth2_tokens", client_id = "cli-id", cooldown = 0 }\n')
        f:close()
        local code, out, err = cli("--check-config " .. good, creds)
        assert.equals(0, code, err)
        assert.equals(good .. ": ok (oauth2.openresty options)\n", out)
        local _
        code, _, err = cli("--check-config " .. bad, creds)
        assert.equals(2, code)
        assert.matches("option 'cooldown' must be a number from 0.1", err)
        -- an oauth2.client configuration (no dict), with a Redis store
        local client = dir .. "/client.lua"
        -- check the options `text` returns, as a file of its own
        local function check(text)
            f = assert(io.open(client, "w"))
            f:write(text)
            f:close()
            return cli("--check-config " .. client, creds)
        end
        code, out, err = check('return { client_id = "cli-id", '
            .. 'store = "redis://127.0.0.1:6390/2",\n'
            .. '  client_secret = os.getenv("THOUSANDEYES_CLIENT_SECRET"),\n'
            .. '  host = "' .. server.http_url .. '", refresh_timeout = 2 }\n')
        assert.equals(0, code, err)
        assert.equals(client .. ": ok (oauth2.client options)\n", out)
        code, _, err = check('return { client_id = "cli-id", client_secret = "x", '
            .. 'store = "rediss://h" }\n')
        assert.equals(2, code)
        assert.matches("rediss://", err)
        code, _, err = check('return { client_id = "cli-id", client_secret = "x", '
            .. 'wait_timeout = 2 }\n')
        assert.equals(2, code)
        assert.matches("wait_timeout", err)
        code, _, err = cli("--check-config " .. dir .. "/missing.lua", creds)
        assert.equals(2, code)
        assert.matches("missing.lua", err)
        -- a configuration may read a file, never write one
        local written = dir .. "/written-by-a-check"
        code, _, err = check('local f = io.open("' .. written .. '", "w") '
            .. 'if f then f:write("x") f:close() end return { client_id = "cli-id" }\n')
        assert.equals(2, code)
        assert.matches("io.open reads only", err)
        assert.is_nil(io.open(written))
        code, out, err = check('local f = io.open("' .. good .. '") f:close() '
            .. 'return { client_id = "cli-id", client_secret = "x" }\n')
        assert.equals(0, code, err)
        assert.equals(client .. ": ok (oauth2.client options)\n", out)
        assert.equals(0, server:stats().token_requests)
    end)

    it("shows help and version", function()
        local code, out = cli("--help")
        assert.equals(0, code)
        assert.matches("^Usage: thousandeyes%-token", out)
        code, out = cli("--version")
        assert.equals(0, code)
        -- with the interpreter and libcurl it runs on, for bug reports
        local interpreter = (jit and jit.version or _VERSION):gsub("%p", "%%%0")
        assert.matches("^thousandeyes%-token %d+%.%d+%.%d+ %(" .. interpreter
            .. ", libcurl/[%d.]+%)\n$", out)
    end)
end)
