-- make playground (examples/playground.lua): the fake endpoint and API
-- over HTTPS on a chosen port, whose printed exports are enough for the
-- CLI, with client credentials or a User API token; stopped by Ctrl-C
-- (SIGINT), leaving nothing behind.

local shell = require "shell"
local nginx = require "nginx"
local cjson = require "cjson"

-- Start the playground with `args` in a directory of its own, sent
-- `signal` when the spec ends, failed or not, and given `settle` seconds
-- to stop.  Its directory (its output is `out` there), its output once
-- it printed one of `ready` (or after `tries` looks, 0.1 s apart), and
-- its pid.
local function start(args, signal, settle, ready, tries)
    local dir = shell.temp_dir()
    local out_file = dir .. "/out"
    local _, pid = shell.run(shell.lua_command({}, "examples/playground.lua " .. args)
        .. " >" .. shell.quote(out_file) .. " 2>&1 & echo $!")
    pid = pid:match("%d+")
    finally(function()
        shell.run("kill -" .. signal .. " " .. pid .. " 2>/dev/null; sleep " .. settle
            .. "; rm -rf " .. shell.quote(dir))
    end)
    local text
    for _ = 1, tries do
        text = shell.read_file(out_file) or ""
        for _, line in ipairs(ready) do
            if text:find(line, 1, true) then return dir, text, pid end
        end
        shell.run("sleep 0.1")
    end
    return dir, text, pid
end

describe("the playground", function()
    it("serves on the port given, prints the exports, and stops on Ctrl-C", function()
        local port = nginx.free_port()
        -- the exports, once it is up
        local dir, text, pid = start(port, "TERM", 0, { "Ctrl-C stops it" }, 200)
        local exports = {}
        for name, value in text:gmatch("\nexport (THOUSANDEYES_[%w_]+)=([^\n]+)") do
            exports[name] = value
        end
        assert.equals("https://127.0.0.1:" .. port, exports.THOUSANDEYES_HOST, text)
        assert.is_string(exports.THOUSANDEYES_CA_FILE)
        local api_token = text:match("export THOUSANDEYES_API_TOKEN=(%S+)")
        assert.is_string(api_token, text)

        -- the CLI, with nothing but those variables
        local env = { XDG_RUNTIME_DIR = dir }
        for name, value in pairs(exports) do env[name] = value end
        local code, pages = shell.run(shell.lua_command(env,
            "bin/thousandeyes-token api GET /v7/tests --paginate"), { lua = true })
        assert.equals(0, code, pages)
        local count = 0
        for line in pages:gmatch("[^\n]+") do
            local page = cjson.decode(line)
            count = count + 1
            -- links in the scheme it serves
            assert.matches("^https://", page._links.self.href)
        end
        assert.equals(3, count)
        -- a scope it was not given: 403, said; with the scope: the data
        local code_403, out_403 = shell.run(shell.lua_command(env,
            "bin/thousandeyes-token api GET /v7/alerts 2>&1"), { lua = true })
        assert.equals(1, code_403, out_403)
        assert.matches("Forbidden", out_403, 1, true)
        assert.matches("alerts:read", out_403, 1, true)
        code = shell.run(shell.lua_command(env,
            "bin/thousandeyes-token --scope alerts:read api GET /v7/alerts"), { lua = true })
        assert.equals(0, code)
        -- and with the User API token in place of the client credentials
        code, pages = shell.run(shell.lua_command({ THOUSANDEYES_HOST = exports.THOUSANDEYES_HOST,
            THOUSANDEYES_CA_FILE = exports.THOUSANDEYES_CA_FILE,
            THOUSANDEYES_API_TOKEN = api_token },
            "bin/thousandeyes-token api GET /v7/tests"), { lua = true })
        assert.equals(0, code, pages)
        assert.equals("11", cjson.decode(pages).tests[1].testId)

        -- Ctrl-C: it stops, and its server and files go with it
        shell.run("kill -INT " .. pid)
        local gone = false
        for _ = 1, 100 do
            if shell.run("kill -0 " .. pid .. " 2>/dev/null") ~= 0 then gone = true break end
            shell.run("sleep 0.1")
        end
        assert.is_true(gone, "the playground did not stop")
        assert.matches("# playground stopped", shell.read_file(dir .. "/out"))
        local ca_dir = exports.THOUSANDEYES_CA_FILE:match("^(.*)/")
        assert.is_nil(io.open(ca_dir .. "/ca.pem"), "its files were left behind")
        code = shell.run(shell.lua_command({ THOUSANDEYES_HOST = exports.THOUSANDEYES_HOST,
            THOUSANDEYES_CA_FILE = exports.THOUSANDEYES_CA_FILE, THOUSANDEYES_API_TOKEN = api_token,
            }, "bin/thousandeyes-token api GET /v7/tests --timeout 2 --retries 0"),
            { lua = true })
        assert.equals(1, code)
    end)

    -- (nginx runs once per suite: spec/run's nginx run)
    local nginx_it = os.getenv("SPEC_NGINX") == "0" and pending or it
    nginx_it("starts nginx with the example configuration, and its printed lines work "
        .. "from the clone, uninstalled", function()
        nginx.build_module()
        local port, nginx_port = nginx.free_port(), nginx.free_port()
        -- (stopped by Ctrl-C, with a second to stop its nginx)
        local dir, text, pid = start(port .. " '' " .. nginx_port, "INT", 1,
            { "oauth2-stats", "did not start" }, 300)
        assert.matches("just answered 200", text, 1, true)
        -- every line it prints, pasted into a shell that has no LUA_PATH of
        -- this checkout and no installed library: the exports, the alias, the
        -- commands it suggests
        local lines = {}
        for line in text:gmatch("[^\n]+") do
            if line:match("^export ") or line:match("^alias ") then lines[#lines + 1] = line end
        end
        local suggested = text:match("\n#   (thousandeyes%-token api GET /v7/tests[^\n]*)")
        local lua_line = text:match("\n#   (lua[%w.]* %-e [^\n]*)")
        assert.is_string(suggested, text)
        assert.is_string(lua_line, text)
        local script = dir .. "/pasted.sh"
        local f = assert(io.open(script, "w"))
        f:write("shopt -s expand_aliases\ncd /\nunset LUA_PATH LUA_CPATH\n",
            table.concat(lines, "\n"), "\n", suggested, " | wc -l\n", lua_line, "\n")
        f:close()
        local code, out = shell.run("bash " .. shell.quote(script))
        assert.equals(0, code, out)
        assert.matches("^%s*3\n", out) -- three pages
        assert.matches("oauth2 token Bearer te-", out, 1, true)
        -- the curl lines: the token injected by nginx reaches the API, and a
        -- listing's next link names the proxy
        local curl = text:match("\n(curl %-s [^\n]*/v7/tests)\n")
        assert.is_string(curl, text)
        code, out = shell.run(curl)
        assert.equals(0, code, out)
        local page = cjson.decode(out)
        assert.equals("11", page.tests[1].testId)
        assert.equals("http://127.0.0.1:" .. nginx_port .. "/v7/tests?cursor=2",
            page._links.next.href)
        -- Ctrl-C stops nginx too
        shell.run("kill -INT " .. pid)
        local gone = false
        for _ = 1, 100 do
            if shell.run(curl .. " -m 1 -o /dev/null") ~= 0 then gone = true break end
            shell.run("sleep 0.1")
        end
        assert.is_true(gone, "nginx still answers")
    end)
end)
