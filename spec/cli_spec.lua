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
    before_each(function() server:reset { clients = { ["cli-id"] = SECRET } } end)

    -- Run the tool; returns exit code, stdout, stderr.
    local function cli(args, env, stdin)
        env = env or {}
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

    it("prints an Authorization header value with --header", function()
        local code, out = cli(host() .. " --header", creds)
        assert.equals(0, code)
        assert.matches("^Bearer te%-%x+\n$", out)
    end)

    it("prints the whole token table with --json", function()
        local code, out = cli(host() .. " --json --scope a:read --scope b:read", creds)
        assert.equals(0, code)
        local token = cjson.decode(out)
        assert.matches("^te%-", token.access_token)
        assert.equals("Bearer", token.token_type)
        assert.equals(3600, token.expires_in)
        assert.is_number(token.expires_at)
        assert.equals("a:read b:read", token.scope)
    end)

    it("reads the secret from a file or from standard input", function()
        local code = cli(host() .. " --client-id cli-id --client-secret-file "
            .. shell.quote(dir .. "/secret"))
        assert.equals(0, code)
        code = cli(host() .. " --client-id cli-id --client-secret-file -", {}, SECRET .. "\n")
        assert.equals(0, code)
        assert.equals(SECRET, server:last_request().form.client_secret)
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
        assert.equals("thousandeyes-token: oauth2: option 'client_id' is required "
            .. "(or set THOUSANDEYES_CLIENT_ID)\n", err)
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
        assert.equals(good .. ": ok\n", out)
        code, _, err = cli("--check-config " .. bad, creds)
        assert.equals(2, code)
        assert.matches("option 'cooldown' must be a number above 0", err)
        code, _, err = cli("--check-config " .. dir .. "/missing.lua", creds)
        assert.equals(2, code)
        assert.matches("missing.lua", err)
        assert.equals(0, server:stats().token_requests)
    end)

    it("shows help and version", function()
        local code, out = cli("--help")
        assert.equals(0, code)
        assert.matches("^Usage: thousandeyes%-token", out)
        code, out = cli("--version")
        assert.equals(0, code)
        assert.matches("^thousandeyes%-token %d+%.%d+%.%d+\n$", out)
    end)
end)
