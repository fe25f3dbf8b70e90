-- Option validation of oauth2.token: bad input fails at once, naming the option.

local oauth2 = require "oauth2"
local shell = require "shell"

local SECRET = "sentinel-Secret-7f3a9c"

local function base(extra)
    local opts = { client_id = "id", client_secret = SECRET, host = "http://127.0.0.1:1" }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return opts
end

-- The message oauth2.token raises for opts (fails the spec if none).
local function raised(opts)
    local ok, message = pcall(oauth2.token, opts)
    assert.is_false(ok, "expected oauth2.token to raise")
    assert.is_string(message)
    assert.is_nil(message:find(SECRET, 1, true), "the secret leaked into: " .. message)
    return message
end

-- Run a Lua snippet in a child interpreter with the given environment.
local function child(env, code)
    local _, out = shell.run(shell.lua_command(env, "-e " .. shell.quote(code)), { lua = true })
    return out
end

describe("oauth2.token options", function()
    it("raises at the caller's line", function()
        local ok, message = pcall(function() oauth2.token(base { bogus = 1 }) end)
        assert.is_false(ok)
        assert.matches("options_spec.lua:%d+: oauth2: unknown option 'bogus'", message)
    end)

    it("rejects a non-table", function()
        assert.matches("options must be a table, got a string", raised("client_id=x"))
    end)

    it("names every unknown option", function()
        assert.matches("unknown options 'clientid', 'timout'",
            raised(base { clientid = "x", timout = 3 }))
    end)

    it("names the option and shows the value for wrong types", function()
        local cases = {
            { "client_id", 42, "option 'client_id' must be a string, got 42" },
            { "timeout", "3", "option 'timeout' must be a number, got \"3\"" },
            { "timeout", -1, "option 'timeout' must be a positive number .*, got %-1" },
            { "connect_timeout", 0, "option 'connect_timeout' must be a positive number" },
            { "deadline", true, "option 'deadline' must be a number, got true" },
            { "retries", 1.5, "option 'retries' must be an integer from 0 to 100" },
            { "retries", -1, "option 'retries' must be an integer from 0 to 100" },
            { "retries", 101, "option 'retries' must be an integer from 0 to 100" },
            { "timeout", 0 / 0, "option 'timeout' must be a number, got %-?nan" },
            { "user_agent", {}, "option 'user_agent' must be a string, got a table" },
            { "x_tenant_id", "a\nb", "option 'x_tenant_id' .*got \"a\\10b\"" },
            { "timeout", math.huge, "option 'timeout' must be a positive number of seconds, "
                .. "at most 86400" },
            { "deadline", 1e9, "option 'deadline' must be a positive number of seconds, "
                .. "at most 86400" },
            { "backoff_max", 7200, "option 'backoff_max' must be a positive number of "
                .. "seconds, at most 3600" },
            { "verify", "no", "option 'verify' must be a boolean" },
            { "allow_http", 1, "option 'allow_http' must be a boolean" },
            { "auth_method", "basic", "option 'auth_method' must be \"client_secret_post\"" },
            { "scope", 7, "option 'scope' must be a string or a list of strings" },
            { "scope", { "a b" }, "option 'scope' entry 1 must be a non%-empty string" },
            { "scope", {}, "option 'scope' must not be an empty list" },
            { "host", "ftp://user:hunter2@api", "URL, got \"ftp://%[redacted%]@api\"" },
            { "max_body", 0, "option 'max_body' must be an integer from 1 to" },
            { "max_body", 2 ^ 40, "option 'max_body' must be an integer from 1 to" },
            { "ca_file", false, "option 'ca_file' must be a string" },
            { "ca_path", 1, "option 'ca_path' must be a string" },
            { "cert", 1, "option 'cert' must be a string" },
            { "key", 1, "option 'key' must be a string" },
            { "proxy", 1, "option 'proxy' must be a string" },
            { "user_agent", 1, "option 'user_agent' must be a string" },
            { "grant_type", "", "option 'grant_type' must not be empty" },
            { "backoff_base", 0, "option 'backoff_base' must be a positive number" },
            { "backoff_max", "1", "option 'backoff_max' must be a number" },
            { "session", {}, "option 'session' must be a session" },
            { "token_url", 5, "option 'token_url' must be a string" },
            { "x_tenant_id", 5, "option 'x_tenant_id' must be a string" },
        }
        for _, case in ipairs(cases) do
            assert.matches(case[3], raised(base { [case[1]] = case[2] }), nil, false, case[1])
        end
    end)

    it("requires a non-empty client_id", function()
        assert.matches("option 'client_id' must not be empty", raised(base { client_id = "" }))
    end)

    it("does not echo a secret of the wrong type or shape", function()
        assert.matches("option 'client_secret' must be a string$",
            raised(base { client_secret = 12345678 }))
        local message = raised(base { access_token = SECRET .. "\r\nX: y" })
        assert.matches("option 'access_token' must not contain CR or LF", message)
    end)

    it("refuses CR or LF in every value that becomes a header", function()
        for _, name in ipairs { "x_tenant_id", "access_token", "user_agent" } do
            assert.matches("option '" .. name .. "' must not contain CR or LF",
                raised(base { [name] = "a\r\nInjected: yes" }))
            assert.matches("option '" .. name .. "' must not contain CR or LF",
                raised(base { [name] = "a\nb" }))
        end
    end)

    it("accepts only http(s) URLs with a host and no credentials", function()
        assert.matches("option 'host' must be an http:// or https:// URL",
            raised(base { host = "ftp://api.thousandeyes.com" }))
        assert.matches("option 'host' is not a valid URL",
            raised(base { host = "https://[::1" }))
        assert.matches("option 'token_url' must be an http:// or https:// URL",
            raised(base { token_url = "file:///etc/passwd" }))
        assert.matches("option 'host' must not embed credentials",
            raised(base { host = "https://user:pw@api.thousandeyes.com" }))
        assert.matches("option 'host' must not carry a query",
            raised(base { host = "https://api.thousandeyes.com/?a=b" }))
    end)

    it("names https:// for a host without a scheme, and takes the SDKs' /v7 form", function()
        assert.equals("oauth2: option 'host' must be a URL starting with https://, such as "
            .. "https://api.thousandeyes.com, got \"api.thousandeyes.com\"",
            raised(base { host = "api.thousandeyes.com" }))
        for _, host in ipairs { "https://api.thousandeyes.com/v7",
                                "https://api.thousandeyes.com/v7/",
                                "https://api.thousandeyes.com" } do
            local endpoint = oauth2.endpoint(base { host = host })
            assert.equals("https://api.thousandeyes.com/v7/oauth2/token", endpoint.conf.url)
            endpoint:close()
        end
    end)

    it("refuses plain http to a host that is not loopback", function()
        assert.matches("option 'host' uses plain http:// to api.thousandeyes.com",
            raised(base { host = "http://api.thousandeyes.com" }))
        assert.matches("option 'token_url' uses plain http://",
            raised(base { token_url = "http://10.1.2.3/token" }))
    end)

    it("allows plain http to loopback, or anywhere when allow_http is set", function()
        -- these pass validation; port 1 then refuses the connection
        for _, opts in ipairs {
            base { host = "http://127.0.0.1:1" },
            base { host = "http://localhost:1" },
            base { host = "http://[::1]:1" },
            base { host = "http://example.invalid:1", allow_http = true, retries = 0,
                   timeout = 1 },
        } do
            opts.retries = 0
            local token, err = oauth2.token(opts)
            assert.is_nil(token)
            assert.equals("network", err.kind)
        end
    end)

    it("refuses access_token together with Basic authentication", function()
        assert.matches("'access_token' and auth_method 'client_secret_basic'",
            raised(base { auth_method = "client_secret_basic", access_token = "tok-123456" }))
    end)

    describe("credentials from the environment", function()
        local probe = "local ok, e = pcall(require('oauth2').token, "
            .. "{ host = 'http://127.0.0.1:1', retries = 0 }) "
            .. "print(ok and 'no error' or e or 'nil')"

        it("are required when not given", function()
            local out = child({}, probe)
            assert.matches("option 'client_id' is required %(or set THOUSANDEYES_CLIENT_ID%)", out)
            out = child({ THOUSANDEYES_CLIENT_ID = "id" }, probe)
            assert.matches("option 'client_secret' is required %(or set THOUSANDEYES_CLIENT_SECRET "
                .. "or THOUSANDEYES_CLIENT_SECRET_FILE%)", out)
        end)

        it("are read from THOUSANDEYES_CLIENT_ID and THOUSANDEYES_CLIENT_SECRET", function()
            local out = child({ THOUSANDEYES_CLIENT_ID = "id", THOUSANDEYES_CLIENT_SECRET = SECRET },
                probe)
            -- validation passed: what remains is the refused connection
            assert.matches("^no error", out)
            assert.is_nil(out:find(SECRET, 1, true))
        end)

        -- what validation makes of the environment, in a child
        local conf_probe = "local conf, why = require('oauth2.options').validate "
            .. "{ client_id = 'id' } if conf then print(conf.client_secret == '" .. SECRET
            .. "' and 'secret ok' or 'secret wrong', conf.url, conf.ca_file) else print(why) end"

        it("read the secret from THOUSANDEYES_CLIENT_SECRET_FILE, without its newline", function()
            local dir = shell.temp_dir()
            finally(function() shell.run("rm -rf " .. shell.quote(dir)) end)
            local file = io.open(dir .. "/secret", "w")
            file:write(SECRET, "\n")
            file:close()
            local out = child({ THOUSANDEYES_CLIENT_SECRET_FILE = dir .. "/secret" }, conf_probe)
            assert.matches("^secret ok", out)
            -- a file that is not there, or both ways at once: refused, said why
            out = child({ THOUSANDEYES_CLIENT_SECRET_FILE = dir .. "/none" }, conf_probe)
            assert.matches("THOUSANDEYES_CLIENT_SECRET_FILE: cannot read .*/none", out)
            out = child({ THOUSANDEYES_CLIENT_SECRET_FILE = dir .. "/secret",
                          THOUSANDEYES_CLIENT_SECRET = SECRET }, conf_probe)
            assert.matches("set THOUSANDEYES_CLIENT_SECRET or THOUSANDEYES_CLIENT_SECRET_FILE, "
                .. "not both", out)
            assert.is_nil(out:find(SECRET, 1, true))
        end)

        it("give a client THOUSANDEYES_API_TOKEN when there are no client credentials",
            function()
            local api_probe = "local ok, c = pcall(require('oauth2').client, "
                .. "{ host = 'https://api.example.test' }) print(tostring(c))"
            local token = "sentinel-env-api-token-0b9e"
            local out = child({ THOUSANDEYES_API_TOKEN = token }, api_probe)
            assert.matches("api_token state=static", out)
            assert.is_nil(out:find(token, 1, true))
            -- client credentials in the environment come first
            out = child({ THOUSANDEYES_API_TOKEN = token, THOUSANDEYES_CLIENT_ID = "env-id",
                          THOUSANDEYES_CLIENT_SECRET = SECRET }, api_probe)
            assert.matches("client_id=env%-id", out)
            -- a malformed one is refused, naming the variable, not its value
            out = child({ THOUSANDEYES_API_TOKEN = "two words" }, api_probe)
            assert.matches("THOUSANDEYES_API_TOKEN must hold a bearer token", out)
            assert.is_nil(out:find("two words", 1, true))
            -- a token request has no use for it
            out = child({ THOUSANDEYES_API_TOKEN = token }, "print(select(2, pcall("
                .. "require('oauth2').token, {})))")
            assert.matches("option 'client_id' is required %(or set THOUSANDEYES_CLIENT_ID%)$",
                out:gsub("%s+$", ""))
        end)

        it("take the host from THOUSANDEYES_HOST and a CA file from THOUSANDEYES_CA_FILE",
            function()
            local out = child({ THOUSANDEYES_CLIENT_SECRET = SECRET,
                                THOUSANDEYES_HOST = "https://api.example.test",
                                THOUSANDEYES_CA_FILE = "/etc/ssl/example.pem" }, conf_probe)
            assert.matches("secret ok\thttps://api%.example%.test/v7/oauth2/token\t"
                .. "/etc/ssl/example%.pem", out)
            out = child({ THOUSANDEYES_CLIENT_SECRET = SECRET, THOUSANDEYES_HOST = "ftp://x" },
                conf_probe)
            assert.matches("option 'host' must be an http:// or https:// URL, got \"ftp://x\" "
                .. "%(from THOUSANDEYES_HOST%)", out)
        end)
    end)
end)

describe("the options of oauth2.client and oauth2.openresty (options.split)", function()
    local valid = { client_id = "id", client_secret = "secret-value", host = "https://h" }
    local function with(extra)
        local opts = {}
        for k, v in pairs(valid) do opts[k] = v end
        for k, v in pairs(extra) do opts[k] = v end
        return opts
    end
    local function refused(module, extra)
        local ok, why = pcall(require(module).check, with(extra))
        assert.is_false(ok, "accepted: " .. module)
        return why
    end

    it("names the option and what it must be, for each module's own", function()
        local nginx = { dict = "tokens" }
        local function nginx_with(extra)
            for k, v in pairs(nginx) do extra[k] = extra[k] == nil and v or extra[k] end
            return extra
        end
        assert.matches("option 'status' must be an HTTP error status %(400 to 599%)",
            refused("oauth2.openresty", nginx_with { status = 200 }))
        assert.matches("option 'wait_timeout' must be a number of seconds from 0 to 3600",
            refused("oauth2.openresty", nginx_with { wait_timeout = -1 }))
        assert.matches("option 'thread_pool' must name an nginx thread_pool",
            refused("oauth2.openresty", nginx_with { thread_pool = "" }))
        assert.matches("option 'dict' must name a lua_shared_dict",
            refused("oauth2.openresty", {}))
        assert.matches("option 'store' must be a redis:// URL",
            refused("oauth2.openresty", nginx_with { store = "/tmp/dir" }))
        assert.matches("option 'clock' must be a function",
            refused("oauth2.client", { clock = 1 }))
        assert.matches("option 'on_event' must be a function %(event, info%)",
            refused("oauth2.client", { on_event = "x" }))
        assert.matches('option \'store\' must be "memory", "file"',
            refused("oauth2.client", { store = 42 }))
        -- NaN is no number of anything, in any module's own options
        assert.matches("option 'wait_timeout' must be a number of seconds from 0 to 3600",
            refused("oauth2.openresty", nginx_with { wait_timeout = 0 / 0 }))
        assert.matches("option 'status' must be an HTTP error status",
            refused("oauth2.openresty", nginx_with { status = 0 / 0 }))
        assert.matches("option 'aid' must be an account group id",
            refused("oauth2.client", { aid = 0 / 0 }))
        assert.matches("redis store option 'timeout' must be a number of seconds",
            refused("oauth2.client", { store = { url = "redis://127.0.0.1", timeout = 0 / 0 } }))
        -- the policy's and oauth2.token's options go through the same call
        assert.matches("option 'cooldown'", refused("oauth2.client", { cooldown = 0 }))
        assert.matches("unknown option 'dict'", refused("oauth2.client", { dict = "tokens" }))
        assert.is_true(require("oauth2.openresty").check(with(nginx)))
        assert.is_true(require("oauth2.client").check(with { store = "memory" }))
    end)
end)
