-- The rockspec installs offline with `luarocks make --deps-mode=none`, and
-- what it installs is a working library.

-- Run a shell command; true when it exits 0, and its output.  Tools run
-- without a sanitizer runtime that `make asan` may have preloaded into us.
local function run(command)
    local p = io.popen("unset LD_PRELOAD; " .. command .. " 2>&1; echo \"exit=$?\"")
    local out = p:read("*a")
    p:close()
    return out:match("exit=0%s*$") ~= nil, out
end

describe("the rockspec", function()
    local work, tree

    setup(function()
        local p = io.popen("mktemp -d")
        work = p:read("*l")
        p:close()
        tree = work .. "/tree"
        -- build from a copy, so the build leaves nothing in the checkout
        assert(run(("cp -r src lua rockspec '%s'/"):format(work)))
    end)
    teardown(function()
        if work then os.execute(("rm -rf '%s'"):format(work)) end
    end)

    it("installs the C core and the Lua modules with luarocks make", function()
        local abi = jit and "5.1" or _VERSION:match("%d+%.%d+")
        local incdir = jit and " LUA_INCDIR=/usr/include/luajit-2.1" or ""
        local ok, out = run(("cd '%s' && luarocks --lua-version %s --tree '%s' make "
            .. "--deps-mode=none%s"):format(work, abi, tree, incdir))
        assert.is_true(ok, out)

        local interpreter = jit and "luajit" or "lua" .. abi
        local check = ("package.path='%s/share/lua/%s/?.lua;'..package.path "
            .. "package.cpath='%s/lib/lua/%s/?.so;'..package.cpath "
            .. "local oauth2 = require 'oauth2' "
            .. "assert(package.searchpath('oauth2.core', package.cpath)) "
            .. "print(oauth2._VERSION, require('oauth2.core')._VERSION)")
            :format(tree, abi, tree, abi)
        ok, out = run(("%s -e %q"):format(interpreter, check))
        assert.is_true(ok, out)
        assert.matches("^0%.1%.0%s+0%.1%.0", out)
    end)
end)
