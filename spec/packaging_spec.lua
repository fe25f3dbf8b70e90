-- The rockspec installs offline with `luarocks make --deps-mode=none`, and
-- what it installs is a working library.

local shell = require "shell"

-- Run a shell command: true when it exits 0, and its output.
local function run(command)
    local code, out = shell.run(command)
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
