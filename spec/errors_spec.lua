-- Errors read well everywhere: tostring, .., error(tostring(err)), on
-- every Lua the suite runs on (5.1, 5.4, LuaJIT).

local errors = require "oauth2.error"
local core = require "oauth2.core"
local oauth2 = require "oauth2"

describe("an error", function()
    local err = errors.new { kind = "http", status = 400, code = "invalid_request",
        message = "The request is invalid",
        errors = { { field = "scope", code = "unknown", message = "unknown scope" },
                   { field = "x_tenant_id", message = "not found" } } }

    it("shows a 400's field errors in tostring", function()
        assert.equals("oauth2: http error 400 (invalid_request): The request is invalid "
            .. "[scope: unknown scope; x_tenant_id: not found]", tostring(err))
    end)

    it("concatenates on either side", function()
        assert.equals("failed: " .. tostring(err), "failed: " .. err)
        assert.equals(tostring(err) .. "!", err .. "!")
    end)

    it("raises as text with error(tostring(err)) and through assert", function()
        local ok, raised = pcall(function() error(tostring(err), 0) end)
        assert.is_false(ok)
        assert.equals(tostring(err), raised)
        ok, raised = pcall(function() assert(nil, tostring(err)) end)
        assert.is_false(ok)
        assert.matches("invalid_request", raised)
    end)

    it("of the C core concatenates and prints too", function()
        local session = core.session()
        local reply, failure = session:request { url = "http://127.0.0.1:1/", method = "POST",
                                                 timeout = 1 }
        session:close()
        assert.is_nil(reply)
        assert.matches("^oauth2%.core: network error: ", tostring(failure))
        assert.equals("got " .. tostring(failure), "got " .. failure)
    end)

    it("from a real failed call concatenates", function()
        local token, failure = oauth2.token { token_url = "http://127.0.0.1:1/token",
            client_id = "id", client_secret = "secret-for-errors", retries = 0, timeout = 1 }
        assert.is_nil(token)
        assert.matches("^failed: oauth2: network error", "failed: " .. failure)
    end)
end)

describe("an error through a proxy", function()
    local shell = require "shell"
    local nginx = require "nginx"

    it("names the proxy, and does not try a proxy that asks for credentials again", function()
        -- a proxy that answers every CONNECT with 407
        local port = nginx.free_port()
        local code, pid = shell.run("python3 -c " .. shell.quote(([[
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", %d)); s.listen(5)
while True:
    c, _ = s.accept(); c.recv(4096)
    c.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic "
              b"realm=x\r\nContent-Length: 0\r\n\r\n"); c.close()
]]):format(port)) .. " >/dev/null 2>&1 & pid=$!; " .. shell.watchdog("$pid")
            .. " echo $pid")
        assert.equals(0, code)
        pid = pid:match("%d+")
        finally(function() shell.run("kill " .. pid) end)
        local proxy = "http://proxy-user:sentinel-Proxy-pass-7@127.0.0.1:" .. port
        for _ = 1, 50 do
            local _, starting = oauth2.token { client_id = "a",
                client_secret = "sentinel-Secret-px", proxy = proxy, retries = 0 }
            if starting.code == "proxy_auth" then break end
            core.sleep(0.05) -- (the proxy is starting)
        end
        local _, err = oauth2.token { client_id = "a", client_secret = "sentinel-Secret-px",
                                      proxy = proxy, retries = 3 }
        assert.equals("proxy_auth", err.code)
        assert.is_false(err.retryable)
        assert.equals(1, err.attempts)
        assert.matches("the proxy http://127.0.0.1:" .. port .. " (option 'proxy') asks for "
            .. "credentials (407", tostring(err), 1, true)
        assert.is_nil(tostring(err):find("sentinel-Proxy-pass-7", 1, true))
        -- a proxy that is down: retried, and named
        local _, down = oauth2.token { client_id = "a", client_secret = "sentinel-Secret-px",
                                       proxy = "http://127.0.0.1:9", retries = 1 }
        assert.equals("proxy", down.code)
        assert.is_true(down.retryable)
        assert.matches("through the proxy http://127.0.0.1:9, from option 'proxy'",
            tostring(down), 1, true)
    end)

    it("names a proxy of the environment, unless no_proxy leaves the host out", function()
        local script = "local _, e = require('oauth2').token { client_id = 'a', "
            .. "client_secret = 'sentinel-Secret-px', host = 'https://127.0.0.1:9', "
            .. "retries = 0 } print(e.code, e)"
        local env = { https_proxy = "http://proxy-user:sentinel-Proxy-pass-8@127.0.0.1:10" }
        local code, out = shell.run(shell.lua_command(env, "-e " .. shell.quote(script)),
            { lua = true })
        assert.equals(0, code, out)
        assert.matches("^proxy\t", out)
        assert.matches("through the proxy http://127.0.0.1:10, from https_proxy", out, 1, true)
        assert.is_nil(out:find("sentinel-Proxy-pass-8", 1, true))
        env.no_proxy = "localhost, .127.0.0.1"
        code, out = shell.run(shell.lua_command(env, "-e " .. shell.quote(script)),
            { lua = true })
        assert.equals(0, code, out)
        assert.matches("^nil\t", out)
        assert.is_nil(out:find("proxy", 1, true), out)
    end)
end)
