-- The code blocks of the README and of docs/, run as they are written:
-- they are read from the files themselves, so the two cannot drift.  Only addresses change: the
-- ThousandEyes host becomes the fake API's, Redis's default port the
-- spec's redis-server.  Credentials come from the environment, as the
-- README says they do.
--
--   lua     run in a child interpreter; it must exit 0
--   sh      run with sh -e in a copy of the checkout, with the CLI on PATH
--           (a block of apt-get lines is not run: every package it names
--           must be one .ci/deps installs, and be installed here; runs side
--           by side would fight over dpkg's lock)
--   nginx   excerpts of examples/nginx.conf, which the OpenResty spec runs:
--           each must be found there as it is
--   text    (or no language) not run: output, diagrams, and commands that
--           install into the system, which the packaging spec covers
-- The first block is the README's two commands: its demo runs here, its
-- test command is what CI runs (this suite).

local fake = require "server"
local shell = require "shell"
local redis_server = require "redis"

local SECRET = "sentinel-Secret-readme-81fe"

-- The fenced blocks of a markdown text: { lang =, code =, line = }, with
-- the indentation of a block inside a list item removed.
local function blocks(text)
    local found, current, number = {}, nil, 0
    for line in (text .. "\n"):gmatch("(.-)\n") do
        number = number + 1
        if current then
            if line:match("^%s*```%s*$") then
                found[#found + 1] = current
                current = nil
            else
                current.lines[#current.lines + 1] = line:sub(#current.indent + 1)
            end
        else
            local indent, lang = line:match("^(%s*)```(%w*)%s*$")
            if indent then current = { lang = lang, indent = indent, lines = {}, line = number } end
        end
    end
    for _, block in ipairs(found) do block.code = table.concat(block.lines, "\n") .. "\n" end
    return found
end

-- README.md first, then docs/*.md in name order
local files = { "README.md" }
do
    local p = io.popen("ls docs/*.md")
    for path in p:lines() do files[#files + 1] = path end
    p:close()
end
local all = {}
for _, path in ipairs(files) do
    for _, block in ipairs(blocks(assert(shell.read_file(path)))) do
        block.file = path
        all[#all + 1] = block
    end
end

describe("the README's code blocks", function()
    local server, redis, dir, work

    setup(function()
        server = fake.start()
        redis = redis_server.start()
        server:reset { clients = { ["readme-id"] = SECRET } }
        dir = shell.temp_dir()
        -- a copy of the checkout for the shell blocks (they build and install)
        work = dir .. "/work"
        local code, out = shell.run(("mkdir -p %s/home %s/run && chmod 700 %s/run && "
            .. "tar --exclude=./build --exclude=./.git -cf - . | (mkdir %s && cd %s && tar -xf -)")
            :format(shell.quote(dir), shell.quote(dir), shell.quote(dir), shell.quote(work),
                shell.quote(work)))
        assert.equals(0, code, out)
    end)
    teardown(function()
        if redis then redis:stop() end
        if server then server:stop() end
        if dir then shell.run("rm -rf " .. shell.quote(dir)) end
    end)


    local env = function()
        return { THOUSANDEYES_CLIENT_ID = "readme-id", THOUSANDEYES_CLIENT_SECRET = SECRET,
                 THOUSANDEYES_HOST = server.http_url, XDG_RUNTIME_DIR = dir .. "/run",
                 HOME = dir .. "/home" }
    end

    -- the addresses of this machine's servers for the README's
    local function localize(code)
        code = code:gsub("https://api%.thousandeyes%.com", server.http_url)
        code = code:gsub("127%.0%.0%.1:6379", "127.0.0.1:" .. redis.port)
        return code
    end

    it("are found", function()
        local kinds = {}
        for _, block in ipairs(all) do kinds[block.lang] = (kinds[block.lang] or 0) + 1 end
        assert.is_true((kinds.lua or 0) >= 8)
        assert.is_true((kinds.sh or 0) >= 4)
        assert.is_true((kinds.nginx or 0) >= 3)
        for _, block in ipairs(all) do
            assert.is_truthy(({ lua = true, sh = true, nginx = true, text = true, [""] = true })
                [block.lang], block.file .. " line " .. block.line .. ": a block of unknown kind '"
                .. block.lang .. "'")
        end
    end)


    for index, block in ipairs(all) do
        local name = ("block %d (%s line %d, %s)"):format(index, block.file, block.line,
            block.lang)
        if block.lang == "lua" then
            it("runs " .. name, function()
                local file = dir .. "/block" .. index .. ".lua"
                local f = assert(io.open(file, "w"))
                f:write(localize(block.code))
                f:close()
                local code, out = shell.run(shell.lua_command(env(), shell.quote(file)),
                    { lua = true })
                assert.equals(0, code, out)
                assert.is_nil(out:find(SECRET, 1, true), "the secret shows")
            end)
        elseif block.lang == "nginx" then
            it("finds " .. name .. " in examples/nginx.conf, which runs", function()
                local example = assert(shell.read_file("examples/nginx.conf"))
                assert.is_truthy(example:find(block.code, 1, true),
                    "not in examples/nginx.conf:\n" .. block.code)
            end)
        elseif block.file == "README.md" and block.code:find("make test", 1, true) then
            it("runs the demo of " .. name .. ", and CI runs its test command", function()
                assert.matches("\nsh %.ci/deps && make demo", "\n" .. block.code)
                assert.matches("\nsh %.ci/deps dev && make test", "\n" .. block.code)
                local ci = assert(shell.read_file(".ci/run"))
                assert.matches("\nmake test\n", "\n" .. ci)
                assert.matches("sh %.ci/deps dev", ci)
                local code, out = shell.run("cd " .. shell.quote(work) .. " && make -s demo")
                assert.equals(0, code, out)
                assert.matches("oauth2 token Bearer", out)
            end)
        elseif block.lang == "sh" and block.code:find("apt-get", 1, true) then
            it("names in " .. name .. " packages .ci/deps installs", function()
                local deps = assert(shell.read_file(".ci/deps"))
                local code = block.code:gsub("#[^\n]*", ""):gsub("\\\n", " ")
                local named = 0
                for line in code:gmatch("[^\n]+") do
                    local list = line:match("apt%-get install %-y (.*)")
                    assert.is_truthy(list or line:match("^%s*$"), "not an install line: " .. line)
                    for package in (list or ""):gmatch("%S+") do
                        named = named + 1
                        assert.is_truthy(deps:find("%f[%w%-]" .. package:gsub("%p", "%%%0")
                            .. "%f[^%w%-]"), package .. " is not in .ci/deps")
                        local _, status = shell.run("dpkg-query -W -f='${Status}' " .. package)
                        assert.matches("install ok installed", status, package)
                    end
                end
                assert.is_true(named > 0)
            end)
        elseif block.lang == "sh" then
            it("runs " .. name, function()
                -- the CLI of the copy, on PATH, on a build of its own (no
                -- sanitizer: the suite's may be an ASan one)
                local code, out = shell.run("cd " .. shell.quote(work) .. " && make -s build")
                assert.equals(0, code, out)
                local bin = dir .. "/bin"
                local wrapper = ("#!/bin/sh\nLUA_PATH=%s LUA_CPATH=%s exec lua5.4 %s \"$@\"\n")
                    :format(shell.quote(work .. "/lua/?.lua;;"),
                        shell.quote(work .. "/build/5.4/?.so;;"),
                        shell.quote(work .. "/bin/thousandeyes-token"))
                shell.run("mkdir -p " .. shell.quote(bin))
                local f = assert(io.open(bin .. "/thousandeyes-token", "w"))
                f:write(wrapper)
                f:close()
                shell.run("chmod +x " .. shell.quote(bin .. "/thousandeyes-token"))
                local file = dir .. "/block" .. index .. ".sh"
                f = assert(io.open(file, "w"))
                f:write(localize(block.code))
                f:close()
                local exports = { "PATH=" .. shell.quote(bin) .. ":$PATH" }
                for k, v in pairs(env()) do exports[#exports + 1] = k .. "=" .. shell.quote(v) end
                code, out = shell.run("cd " .. shell.quote(work) .. " && export "
                    .. table.concat(exports, " ") .. " && sh -e " .. shell.quote(file))
                assert.equals(0, code, out)
                assert.is_nil(out:find(SECRET, 1, true), "the secret shows")
            end)
        end
    end
end)
