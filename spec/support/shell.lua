-- spec/support/shell.lua: run commands from specs.
--
-- Commands run without any sanitizer runtime that `make asan` preloaded into
-- the interpreter, unless they run our C module themselves (lua = true).

local _M = {}

-- The interpreter running the specs, and the build directory of its module.
_M.lua = jit and "luajit" or "lua" .. _VERSION:match("%d+%.%d+")
_M.build = os.getenv("OAUTH2_BUILD")
    or "build/" .. (jit and "luajit" or _VERSION:match("%d+%.%d+"))

-- Quote a string for sh.
function _M.quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Run a shell command; returns its exit code and its output (stdout and
-- stderr together, or only stdout when separate is true).
function _M.run(command, opts)
    opts = opts or {}
    local prefix = opts.lua and "" or "unset LD_PRELOAD; "
    local redirect = opts.separate and " 2>/dev/null" or " 2>&1"
    -- a newline, not ";", ends the command: it may end in "&"
    local p = io.popen(prefix .. "{ " .. command .. "\n}" .. redirect .. "; echo \"exit=$?\"")
    local out = p:read("*a")
    p:close()
    local body, code = out:match("^(.-)exit=(%d+)%s*$")
    return tonumber(code), body
end

-- Run Lua code or a script in a child interpreter that finds this
-- checkout's modules, with env (a table) as extra environment and the
-- THOUSANDEYES_* credentials cleared unless given there.
function _M.lua_command(env, args)
    local vars = { "env -u THOUSANDEYES_CLIENT_ID -u THOUSANDEYES_CLIENT_SECRET "
        .. "-u THOUSANDEYES_API_TOKEN -u OAUTH2_DEBUG",
        "LUA_PATH=" .. _M.quote("lua/?.lua;lua/?/init.lua;;"),
        "LUA_CPATH=" .. _M.quote(_M.build .. "/?.so;;") }
    for k, v in pairs(env or {}) do vars[#vars + 1] = k .. "=" .. _M.quote(v) end
    return table.concat(vars, " ") .. " " .. _M.lua .. " " .. args
end

-- The shell text that, run in the background, sends `signal` to process
-- `pid` when the process running the specs is gone (a crash leaves no
-- server behind), and ends quietly when `pid` ends first.
function _M.watchdog(pid, signal)
    local own = (_M.read_file("/proc/self/stat") or ""):match("^(%d+)")
    return ("(while kill -0 %s 2>/dev/null; do kill -0 %s 2>/dev/null || exit 0; sleep 1; "
        .. "done; kill -%s %s) >/dev/null 2>&1 &"):format(own, pid, signal or "TERM", pid)
end

-- A whole file's contents, or nil when it cannot be read.
function _M.read_file(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local data = f:read("*a")
    f:close()
    return data
end

-- A fresh temporary directory.
function _M.temp_dir()
    local code, out = _M.run("mktemp -d")
    local dir = out and out:match("[^\n]+")
    assert(code == 0 and dir, "mktemp -d failed")
    return dir
end

return _M
