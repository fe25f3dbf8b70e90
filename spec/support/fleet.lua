-- spec/support/fleet.lua: steady traffic through a fleet of nginx nodes
-- and plain Lua processes sharing one credential through a store.

local core = require "oauth2.core"
local shell = require "shell"

local _M = {}

--- The environment of a plain Lua process of the fleet (spec/support/
-- store_child.lua) on `store` (a URL), with Redis timeouts of 5 s.
function _M.env(server, secret, store)
    return { THOUSANDEYES_CLIENT_ID = "nginx-id", THOUSANDEYES_CLIENT_SECRET = secret,
             OAUTH2_SPEC_HOST = server.http_url, OAUTH2_SPEC_STORE = store,
             OAUTH2_SPEC_STORE_TIMEOUT = "5" }
end

--- Steady traffic for about `seconds`: a request to each of `nodes` and
-- a token from each of `processes` plain Lua clients (environment `env`)
-- every 0.25 s, in the background, their answers kept in `dir`.  Returns
-- finish(), which waits for the end and returns the numbers of good and
-- failed answers, and the output.
function _M.traffic(nodes, dir, env, seconds, processes)
    local rounds = seconds * 4
    local parts = {}
    for i, node in ipairs(nodes) do
        parts[#parts + 1] = "for i in $(seq " .. rounds .. "); do LD_PRELOAD= curl -s "
            .. "-o /dev/null -w 'code=%{http_code}\n' '" .. node.base .. "/v7/tests'; "
            .. "sleep 0.25; done > " .. shell.quote(dir .. "/node." .. i) .. " 2>&1 &"
    end
    for i = 1, processes do
        parts[#parts + 1] = shell.lua_command(env, "spec/support/store_child.lua loop "
            .. rounds .. " 0.25") .. " > " .. shell.quote(dir .. "/proc." .. i) .. " 2>&1 &"
    end
    local done = dir .. "/done"
    local code, out = shell.run("( " .. table.concat(parts, "\n") .. "\nwait; touch "
        .. shell.quote(done) .. " ) > /dev/null 2>&1 &", { lua = true })
    assert(code == 0, out)
    return function()
        for _ = 1, (seconds + 120) * 10 do
            if shell.read_file(done) then break end
            core.sleep(0.1)
        end
        local _, text = shell.run("cat " .. shell.quote(dir) .. "/node.* "
            .. shell.quote(dir) .. "/proc.* 2>/dev/null; rm -f " .. shell.quote(dir)
            .. "/node.* " .. shell.quote(dir) .. "/proc.* " .. shell.quote(done))
        local good, bad = 0, 0
        -- (a process says once on stderr that its store is away: not
        -- an answer)
        for line in text:gmatch("[^\n]+") do
            if line == "code=200" or line:match("^token te%-%x+$") then good = good + 1
            elseif line:match("^code=") or line:match("^error ") then bad = bad + 1 end
        end
        return good, bad, text
    end
end

return _M
