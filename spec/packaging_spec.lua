-- The rockspec installs offline with `luarocks make --deps-mode=none`, and
-- what it installs is a working library; make install and make uninstall
-- undo each other; make dist's .src.rock installs offline; and (once per
-- suite: SPEC_ONCE) make deb's packages install, load in every Lua and in
-- nginx, and purge without a trace.

local shell = require "shell"
local nginx = require "nginx"

-- Run a shell command: true when it exits 0, and its output.  LuaRocks
-- reads no configuration of the user running the suite (a HOME and a
-- LUAROCKS_CONFIG of the spec's own, empty unless a spec writes one).
local home = shell.temp_dir()
local function run(command)
    local code, out = shell.run(("mkdir -p '%s' && export HOME='%s' "
        .. "LUAROCKS_CONFIG='%s/config.lua'; %s"):format(home, home, home, command))
    return code == 0, out
end

describe("the rockspec", function()
    local work, tree

    setup(function()
        local p = io.popen("mktemp -d")
        work = p:read("*l")
        p:close()
        tree = work .. "/tree"
        -- build from a copy, so the build leaves nothing in the checkout
        assert(run(("cp -r src lua bin rockspec examples '%s'/"):format(work)))
    end)
    teardown(function()
        if work then os.execute(("rm -rf '%s'"):format(work)) end
        os.execute(("rm -rf '%s'"):format(home))
    end)

    it("lists every Lua module in the rockspec", function()
        local rockspec = assert(io.open("rockspec/lua-oauth2-scm-1.rockspec")):read("*a")
        local p = io.popen("ls lua/oauth2/*.lua lua/oauth2/*/*.lua")
        for path in p:lines() do
            local name = path:match("^lua/(.*)%.lua$"):gsub("/", ".")
            assert.is_truthy(rockspec:find('["' .. name .. '"] = "' .. path .. '"', 1, true),
                name .. " is missing from the rockspec")
        end
        p:close()
    end)

    it("installs the C core and the Lua modules with luarocks make", function()
        local abi = jit and "5.1" or _VERSION:match("%d+%.%d+")
        local incdir = jit and " LUA_INCDIR=/usr/include/luajit-2.1" or ""
        local ok, out = run(("cd '%s' && luarocks --lua-version %s --tree '%s' make "
            .. "--deps-mode=none%s rockspec/lua-oauth2-scm-1.rockspec"):format(work, abi, tree,
            incdir))
        assert.is_true(ok, out)
        -- the core links no hiredis: a user without Redis needs none
        ok, out = run(("ldd '%s/lib/lua/%s/oauth2/core.so'"):format(tree, abi))
        assert.is_true(ok, out)
        assert.is_nil(out:find("hiredis", 1, true), out)
        -- the Redis connection is a rock of its own
        ok, out = run(("cd '%s' && luarocks --lua-version %s --tree '%s' make "
            .. "--deps-mode=none%s rockspec/lua-oauth2-redis-scm-1.rockspec"):format(work, abi,
            tree, incdir))
        assert.is_true(ok, out)

        local interpreter = jit and "luajit" or "lua" .. abi
        local check = ("package.path='%s/share/lua/%s/?.lua;'..package.path "
            .. "package.cpath='%s/lib/lua/%s/?.so;'..package.cpath "
            .. "local oauth2 = require 'oauth2' "
            .. "assert(io.open('%s/lib/lua/%s/oauth2/core.so')) "
            .. "print(oauth2._VERSION, require('oauth2.core')._VERSION, "
            .. "require('oauth2.redis')._VERSION)")
            :format(tree, abi, tree, abi, tree, abi)
        ok, out = run(("%s -e %q"):format(interpreter, check))
        assert.is_true(ok, out)
        assert.matches("^0%.1%.0%s+0%.1%.0%s+0%.1%.0", out)

        -- and the command-line tool, through LuaRocks' wrapper (which finds
        -- modules of a tree outside LuaRocks' configuration only by LUA_PATH)
        ok, out = run(("LUA_PATH='%s/share/lua/%s/?.lua;;' LUA_CPATH='%s/lib/lua/%s/?.so;;' "
            .. "'%s/bin/thousandeyes-token' --version"):format(tree, abi, tree, abi, tree))
        assert.is_true(ok, out)
        assert.matches("^thousandeyes%-token 0%.1%.0", out)
    end)

    it("installs with make install under DESTDIR", function()
        local version = jit and "luajit" or _VERSION:match("%d+%.%d+")
        local abi = jit and "5.1" or version
        local dest = work .. "/dest"
        local ok, out = run(("make -s install LUA_VERSION=%s PREFIX=/usr/local DESTDIR='%s'")
            :format(version, dest))
        assert.is_true(ok, out)
        for _, path in ipairs {
            "/usr/local/lib/lua/" .. abi .. "/oauth2/core.so",
            "/usr/local/share/lua/" .. abi .. "/oauth2.lua",
            "/usr/local/share/lua/" .. abi .. "/oauth2/client.lua",
            "/usr/local/bin/thousandeyes-token",
        } do
            local f = io.open(dest .. path)
            assert.is_not_nil(f, path)
            if f then f:close() end
        end
        local f = assert(io.open(dest .. "/usr/local/bin/thousandeyes-token"))
        local shebang = f:read("*l")
        f:close()
        assert.equals("#!/usr/bin/env " .. (jit and "luajit" or "lua" .. version), shebang)
        f = io.open(dest .. "/usr/local/lib/lua/" .. abi .. "/oauth2/redis.so")
        assert.is_not_nil(f, "oauth2/redis.so (libhiredis is installed here)")
        if f then f:close() end
    end)

    it("removes with make uninstall all that make install put there", function()
        local version = jit and "luajit" or _VERSION:match("%d+%.%d+")
        local abi = jit and "5.1" or version
        local dest = work .. "/dest-uninstall"
        local make = ("make -s LUA_VERSION=%s PREFIX=/usr/local DESTDIR='%s'"):format(version, dest)
        local ok, out = run(make .. " install")
        assert.is_true(ok, out)
        -- a file of someone else's beside ours stays
        local other = dest .. "/usr/local/share/lua/" .. abi .. "/other.lua"
        assert(io.open(other, "w")):close()
        ok, out = run(make .. " uninstall")
        assert.is_true(ok, out)
        ok, out = run(("cd '%s' && find . -type f -o -type l"):format(dest))
        assert.is_true(ok, out)
        assert.equals("./usr/local/share/lua/" .. abi .. "/other.lua\n", out)
        ok, out = run(("cd '%s' && find . -name 'oauth2*'"):format(dest))
        assert.is_true(ok, out)
        assert.equals("", out)

        -- the command-line tool of another Lua's later install is left
        ok, out = run(make .. " install")
        assert.is_true(ok, out)
        local cli = dest .. "/usr/local/bin/thousandeyes-token"
        ok, out = run(("sed -i '1s|.*|#!/usr/bin/env another-lua|' '%s'"):format(cli))
        assert.is_true(ok, out)
        ok, out = run(make .. " uninstall")
        assert.is_true(ok, out)
        assert.matches("runs another Lua: left in place", out)
        assert.is_not_nil(io.open(cli))
    end)

    it("installs and uninstalls under a PREFIX and a DESTDIR with spaces", function()
        local version = jit and "luajit" or _VERSION:match("%d+%.%d+")
        local dest = work .. "/dest with spaces"
        local make = ("make -s LUA_VERSION=%s PREFIX='/opt/my prefix' DESTDIR='%s'")
            :format(version, dest)
        local ok, out = run(make .. " install")
        assert.is_true(ok, out)
        assert.is_not_nil(io.open(dest .. "/opt/my prefix/bin/thousandeyes-token"))
        ok, out = run(("cd '%s' && find . -type f | wc -l"):format(dest))
        assert.is_true(ok and tonumber(out) > 10, out)
        ok, out = run(make .. " uninstall")
        assert.is_true(ok, out)
        ok, out = run(("cd '%s' && find . -type f"):format(dest))
        assert.is_true(ok, out)
        assert.equals("", out)
    end)

    it("leaves in place, and says, the files a Debian package owns", function()
        local version = jit and "luajit" or _VERSION:match("%d+%.%d+")
        local prefix = work .. "/prefix-owned"
        local make = ("make -s LUA_VERSION=%s PREFIX='%s'"):format(version, prefix)
        local ok, out = run(make .. " install")
        assert.is_true(ok, out)
        -- a dpkg that says every file is a package's (as /usr's are)
        local shim = work .. "/dpkg-shim"
        assert(run(("mkdir -p '%s' && printf '#!/bin/sh\\necho \"lua-oauth2: $2\"\\n' "
            .. "> '%s/dpkg' && chmod +x '%s/dpkg'"):format(shim, shim, shim)))
        ok, out = run(("PATH='%s':$PATH %s uninstall"):format(shim, make))
        assert.is_true(ok, out)
        assert.matches("belongs to a Debian package: left in place", out)
        assert.matches("apt%-get remove", out)
        assert.is_not_nil(io.open(prefix .. "/bin/thousandeyes-token"))
        -- without a package's claim, they go
        ok, out = run(make .. " uninstall")
        assert.is_true(ok, out)
        assert.is_nil(io.open(prefix .. "/bin/thousandeyes-token"))
    end)

    it("makes a versioned rockspec and a .src.rock that installs offline (make dist)",
        function()
        local abi = jit and "5.1" or _VERSION:match("%d+%.%d+")
        local dist = work .. "/dist"
        local ok, out = run(("make -s dist DIST='%s'"):format(dist))
        assert.is_true(ok, out)
        local rockspec = assert(io.open(dist .. "/lua-oauth2-0.1.0-1.rockspec")):read("*a")
        assert.matches('version = "0.1.0%-1"', rockspec)
        assert.matches('url = "lua%-oauth2%-0.1.0.tar.gz"', rockspec)
        local redis = assert(io.open(dist .. "/lua-oauth2-redis-0.1.0-1.rockspec")):read("*a")
        assert.matches('"lua%-oauth2 == 0.1.0"', redis)

        -- installed for LuaJIT, LuaRocks told its interpreter is luajit
        local config = ""
        if jit then
            local f = assert(io.open(work .. "/luajit-config.lua", "w"))
            f:write('lua_interpreter = "luajit"\n'
                .. 'variables = { LUA_INCDIR = "/usr/include/luajit-2.1" }\n')
            f:close()
            config = ("export LUAROCKS_CONFIG='%s/luajit-config.lua'; "):format(work)
        end
        -- from another directory, with no network: only the rock's files
        local dist_tree = work .. "/dist-tree"
        for _, rock in ipairs { "lua-oauth2", "lua-oauth2-redis" } do
            ok, out = run(("cd / && %sluarocks --lua-version %s --tree '%s' install "
                .. "--deps-mode=none '%s/%s-0.1.0-1.src.rock'"):format(config, abi, dist_tree, dist,
                rock))
            assert.is_true(ok, out)
        end
        ok, out = run(("LUA_PATH='%s/share/lua/%s/?.lua;;' LUA_CPATH='%s/lib/lua/%s/?.so;;' "
            .. "'%s/bin/thousandeyes-token' --version"):format(dist_tree, abi, dist_tree, abi, dist_tree))
        assert.is_true(ok, out)
        assert.matches("^thousandeyes%-token 0%.1%.0 %(" .. (jit and "LuaJIT" or "Lua " .. abi),
            out)
        local check = ("package.path='%s/share/lua/%s/?.lua;'..package.path "
            .. "package.cpath='%s/lib/lua/%s/?.so;'..package.cpath "
            .. "print(require('oauth2')._VERSION, require('oauth2.redis')._VERSION)")
            :format(dist_tree, abi, dist_tree, abi)
        ok, out = run(("cd / && %s -e %q"):format(jit and "luajit" or "lua" .. abi, check))
        assert.is_true(ok, out)
        assert.matches("^0%.1%.0%s+0%.1%.0", out)
    end)

    it("builds and installs without hiredis (make HIREDIS=no)", function()
        local version = jit and "luajit" or _VERSION:match("%d+%.%d+")
        local abi = jit and "5.1" or version
        local dest = work .. "/dest-no-hiredis"
        local build = work .. "/build-no-hiredis"
        local ok, out = run(("make -s install HIREDIS=no BUILD='%s' LUA_VERSION=%s "
            .. "PREFIX=/usr/local DESTDIR='%s'"):format(build, version, dest))
        assert.is_true(ok, out)
        local lib = dest .. "/usr/local/lib/lua/" .. abi .. "/oauth2/"
        assert.is_nil(io.open(lib .. "redis.so"))
        ok, out = run(("ldd '%score.so'"):format(lib))
        assert.is_true(ok, out)
        assert.is_nil(out:find("hiredis", 1, true), out)
        -- the library loads, and a Redis store is refused in so many words
        local interpreter = jit and "luajit" or "lua" .. version
        local check = ("package.path='lua/?.lua;'..package.path "
            .. "package.cpath='%s?.so;'..package.cpath "
            .. "local oauth2 = require 'oauth2' "
            .. "local ok, why = pcall(oauth2.client, { client_id = 'id', client_secret = 'x', "
            .. "store = 'redis://127.0.0.1:1' }) print(ok, why)")
            :format(dest .. "/usr/local/lib/lua/" .. abi .. "/")
        ok, out = run(("%s -e %q"):format(interpreter, check))
        assert.is_true(ok, out)
        assert.matches("false.*needs the module oauth2%.redis", out)
    end)
end)

describe("the Debian packages (make deb)", function()
    if os.getenv("SPEC_ONCE") ~= "1" then
        pending("built once per suite (SPEC_ONCE)")
        return
    end
    local work, root, proxy

    -- dpkg on a scratch root of its own: the machine's packages untouched
    local function dpkg(args)
        return run(("dpkg --root='%s' --force-depends --force-not-root "
            .. "--force-script-chrootless --no-triggers --log=/dev/null %s"):format(root, args))
    end

    setup(function()
        work = shell.temp_dir()
        root = work .. "/root"
        assert(run(("mkdir -p '%s/var/lib/dpkg/info' '%s/var/lib/dpkg/updates' && "
            .. "touch '%s/var/lib/dpkg/status'"):format(root, root, root)))
    end)
    teardown(function()
        if proxy then proxy:stop() end
        if work then os.execute(("rm -rf '%s'"):format(work)) end
        os.execute(("rm -rf '%s'"):format(home))
    end)

    it("builds with dh-lua, installs, loads in Lua, LuaJIT and nginx, and purges", function()
        -- an untracked file beside the sources (a secret, say) stays out
        local stray = "src/local_settings_spec.h"
        local f = assert(io.open(stray, "w"))
        f:write("/* sentinel-untracked-secret */\n")
        f:close()
        finally(function() os.remove(stray) end)
        -- dh-lua's own build-time tests are left out: what follows checks more
        local ok, out = run(("make -s deb DEB='%s/deb' DEB_BUILD_OPTIONS='noddebs nocheck "
            .. "parallel=2'"):format(work))
        assert.is_true(ok, out)
        assert.matches("uncommitted and untracked files are not in them", out)
        assert.is_nil(io.open(("%s/deb/lua-oauth2-0.1.0/%s"):format(work, stray)))
        os.remove(stray)
        ok, out = dpkg(("-i '%s'/deb/*.deb"):format(work))
        assert.is_true(ok, out)
        ok, out = run(("dpkg-query --admindir='%s/var/lib/dpkg' -W -f='${Package} ${Version}\n'")
            :format(root))
        assert.is_true(ok, out)
        assert.equals("lua-oauth2 0.1.0-1\nlua-oauth2-redis 0.1.0-1\nthousandeyes-token 0.1.0-1\n",
            out)

        local _, multiarch = run("dpkg-architecture -qDEB_HOST_MULTIARCH")
        multiarch = multiarch:match("%S+")
        local function paths(abi)
            return ("%s/usr/share/lua/%s/?.lua"):format(root, abi),
                ("%s/usr/lib/%s/lua/%s/?.so"):format(root, multiarch, abi)
        end
        for _, case in ipairs { { "lua5.1", "5.1" }, { "luajit", "5.1" }, { "lua5.3", "5.3" },
                                { "lua5.4", "5.4" } } do
            local lpath, cpath = paths(case[2])
            -- the package's files first, the system's lua-cjson after them
            local check = ("package.path=%q package.cpath=%q..';'..package.cpath "
                .. "print(require('oauth2')._VERSION, require('oauth2.redis')._VERSION)")
                :format(lpath .. ";/usr/share/lua/" .. case[2] .. "/?.lua", cpath)
            ok, out = run(("cd / && %s -e %q"):format(case[1], check))
            assert.is_true(ok, case[1] .. ": " .. out)
            assert.matches("^0%.1%.0%s+0%.1%.0", out, case[1])
        end

        -- the command-line tool runs lua5.4
        local lpath, cpath = paths("5.4")
        ok, out = run(("LUA_PATH='%s;;' LUA_CPATH='%s;;' '%s/usr/bin/thousandeyes-token' "
            .. "--version"):format(lpath, cpath, root))
        assert.is_true(ok, out)
        assert.matches("^thousandeyes%-token 0%.1%.0 %(Lua 5%.4", out)

        -- nginx's lua module loads the 5.1 build
        local port = nginx.free_port()
        lpath, cpath = paths("5.1")
        proxy = nginx.start(nginx.user_line() .. "\n" .. nginx.fill([[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
daemon on;
pid logs/nginx.pid;
error_log logs/error.log;
events { worker_connections 64; }
http {
    access_log off;
    lua_package_path "${LPATH};;";
    lua_package_cpath "${CPATH};;";
    server {
        listen 127.0.0.1:${PORT};
        location / {
            content_by_lua_block {
                local oauth2 = require "oauth2"
                require "oauth2.openresty"
                ngx.say(oauth2._VERSION, " ", jit.version)
            }
        }
    }
}
]], { LPATH = lpath, CPATH = cpath, PORT = port }))
        ok, out = run(("curl -sS http://127.0.0.1:%d/"):format(port))
        assert.is_true(ok, out)
        assert.matches("^0%.1%.0 LuaJIT", out, proxy:error_log())
        proxy:stop()
        proxy = nil

        ok, out = dpkg("--purge thousandeyes-token lua-oauth2-redis lua-oauth2")
        assert.is_true(ok, out)
        -- dpkg took away the directories it made: nothing is left under usr/
        ok, out = run(("find '%s' -mindepth 1 -path '%s/var' -prune -o -print"):format(root, root))
        assert.is_true(ok, out)
        assert.equals("", out)
    end)
end)
