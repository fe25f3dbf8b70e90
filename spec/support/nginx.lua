-- spec/support/nginx.lua: run a real nginx with the lua module for specs.
--
-- start(template, values) writes the configuration (${NAME} filled from
-- values) into a fresh temporary prefix, starts nginx there on a free
-- port, and returns a handle that can read error.log and stop nginx.

local shell = require "shell"
local core = require "oauth2.core"

local _M = {}

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
_M.root = here:match("^(.*)/spec/support$") or "."

local read_file = shell.read_file

-- A port nobody listens on now (the kernel's pick for a moment's socket).
-- Build the C module nginx loads (its LuaJIT's build); raises on failure.
function _M.build_module()
    local code, out = shell.run("make -s -C " .. shell.quote(_M.root)
        .. " LUA_VERSION=luajit build")
    assert(code == 0, out)
end

function _M.free_port()
    local code, out = shell.run("python3 -c 'import socket; s = socket.socket(); "
        .. "s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'")
    assert(code == 0, out)
    return tonumber(out:match("%d+"))
end

local Nginx = {}
Nginx.__index = Nginx

function Nginx:error_log()
    return read_file(self.prefix .. "/logs/error.log") or ""
end

-- Stop gracefully (QUIT), then at once (TERM), then by force (KILL, the
-- workers too): an nginx left behind could still write to a store the
-- next spec uses.
function Nginx:stop()
    if self.prefix then
        local pid_file = self.prefix .. "/logs/nginx.pid"
        local pid = (read_file(pid_file) or ""):match("%d+")
        for _, signal in ipairs { "QUIT", "TERM" } do
            if not pid then break end
            shell.run("kill -" .. signal .. " " .. pid)
            for _ = 1, 100 do
                if not read_file(pid_file) then pid = nil break end
                core.sleep(0.05)
            end
        end
        if pid then
            -- the workers first (found in /proc: no procps needed; once
            -- the master is gone they are init's children), then the master
            shell.run("for stat in /proc/[0-9]*/stat; do "
                .. "{ read -r child _ _ parent _ < \"$stat\"; } 2>/dev/null && [ \"$parent\" = "
                .. pid .. " ] && kill -KILL \"$child\"; done; kill -KILL " .. pid)
        end
        shell.run("rm -rf " .. shell.quote(self.prefix))
        self.prefix = nil
    end
end

-- Fill ${NAME} in text from values; an unknown name is an error.
function _M.fill(text, values)
    return (text:gsub("%${([%w_]+)}", function(name)
        local value = values[name]
        assert(value ~= nil, "no value for ${" .. name .. "}")
        return tostring(value)
    end))
end

-- Start nginx with the configuration text and extra environment (a
-- table, optional); returns the handle.
function _M.start(config, env)
    local prefix = shell.temp_dir()
    shell.run("chmod 755 " .. shell.quote(prefix) .. " && mkdir " .. shell.quote(prefix .. "/logs"))
    local f = assert(io.open(prefix .. "/nginx.conf", "w"))
    f:write(config)
    f:close()
    local vars = {}
    for k, v in pairs(env or {}) do vars[#vars + 1] = k .. "=" .. shell.quote(v) .. " " end
    -- by its full path, which a binary upgrade (USR2) executes again
    local code, out = shell.run(table.concat(vars) .. "\"$(command -v nginx)\" -p "
        .. shell.quote(prefix) .. " -c " .. shell.quote(prefix .. "/nginx.conf"))
    local server = setmetatable({ prefix = prefix }, Nginx)
    if code ~= 0 then
        local log = server:error_log()
        server:stop()
        error("nginx did not start:\n" .. out .. log)
    end
    local pid = (read_file(prefix .. "/logs/nginx.pid") or ""):match("%d+")
    if pid then shell.run(shell.watchdog(pid, "QUIT")) end
    return server
end

-- "user root;" when the specs run as root, so workers can read the checkout.
function _M.user_line()
    local _, id = shell.run("id -u")
    return id:match("^0%s") and "user root;" or ""
end

--- examples/nginx.conf pointed at a fake API: listening on 127.0.0.1:
-- `port`, proxying to `api` ("host:port", TLS, its certificate checked
-- against `ca_file` for localhost), the library from this checkout, and
-- workers that can read it (user_line).  The configuration's text.
function _M.example(port, api, ca_file)
    local config = read_file(_M.root .. "/examples/nginx.conf")
    local replacements = {
        { "listen 127.0.0.1:8080;", "listen 127.0.0.1:" .. port .. ";" },
        { "server api.thousandeyes.com:443;", "server " .. api .. ";" },
        { "proxy_ssl_name api.thousandeyes.com;", "proxy_ssl_name localhost;" },
        { "proxy_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;",
          "proxy_ssl_trusted_certificate " .. ca_file .. ";" },
        { 'lua_package_path "/usr/local/share/lua/5.1/?.lua;;";',
          'lua_package_path "' .. _M.root .. '/lua/?.lua;;";' },
        { 'lua_package_cpath "/usr/local/lib/lua/5.1/?.so;;";',
          'lua_package_cpath "' .. _M.root .. '/build/luajit/?.so;;";' },
    }
    for _, pair in ipairs(replacements) do
        local from, to = pair[1], pair[2]
        local i, j = config:find(from, 1, true)
        assert(i, "examples/nginx.conf no longer has: " .. from)
        config = config:sub(1, i - 1) .. to .. config:sub(j + 1)
    end
    return _M.user_line() .. "\n" .. config
end

-- Start spec/support/nginx_test.conf on a free port, against the fake
-- server `server` (token endpoint and API) with client secret `secret`;
-- `values` overrides the template's defaults (MARGIN, REFRESH_RATIO,
-- COOLDOWN, WORKERS, DICT_SIZE, OPTIONS: Lua text added to configure's
-- options).  The handle's `base` is its http://127.0.0.1:port.
function _M.start_test(server, secret, values)
    local port = _M.free_port()
    local filled = { USER = _M.user_line(), ROOT = _M.root, PORT = port,
        TOKEN_HOST = server.http_url, SECRET = secret, CA_FILE = server.ca_file,
        API_ADDRESS = server.http_url:gsub("^http://", ""),
        MARGIN = "false", REFRESH_RATIO = 0.8, COOLDOWN = 5, WORKERS = 2,
        DICT_SIZE = "1m", OPTIONS = "" }
    for name, value in pairs(values or {}) do filled[name] = value end
    local proxy = _M.start(_M.fill(read_file(_M.root .. "/spec/support/nginx_test.conf"),
        filled))
    proxy.base = "http://127.0.0.1:" .. port
    return proxy
end

return _M
