-- spec/support/server.lua: start and stop the fake token endpoint.
--
-- Used by the specs and by the demo.  start() generates a throwaway CA and
-- a server certificate for 127.0.0.1 with openssl, launches the Python fake
-- endpoint on free ports (HTTP and HTTPS) and returns a handle to script it,
-- read its stats and stop it.  The server also exits on its own when this
-- Lua process ends, so a crashed run leaves nothing behind.

local core = require "oauth2.core"
local cjson = require "cjson"
local shell = require "shell"

local _M = {}

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."

local quote, read_file, temp_dir = shell.quote, shell.read_file, shell.temp_dir

-- Run a tool (openssl, kill, rm); true when it succeeded.
local function sh(command)
    return shell.run(command) == 0
end

local function own_pid()
    local stat = read_file("/proc/self/stat")
    return stat and stat:match("^(%d+)")
end

-- A CA, a server certificate it signed for 127.0.0.1/localhost, and an
-- unrelated CA (for "wrong CA" specs).  Elliptic keys keep this fast.
local function make_certificates(dir)
    local d = quote(dir)
    local quiet = " >/dev/null 2>&1"
    local ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    local steps = {
        "openssl req -x509" .. ec .. " -keyout " .. d .. "/ca.key -out " .. d
            .. "/ca.pem -days 2 -subj /CN=lua-oauth2-test-ca" .. quiet,
        "openssl req -x509" .. ec .. " -keyout " .. d .. "/wrong-ca.key -out " .. d
            .. "/wrong-ca.pem -days 2 -subj /CN=lua-oauth2-wrong-ca" .. quiet,
        "openssl req" .. ec .. " -keyout " .. d .. "/server.key -out " .. d
            .. "/server.csr -subj /CN=127.0.0.1" .. quiet,
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > " .. d .. "/san.ext",
        "openssl req" .. ec .. " -keyout " .. d .. "/client.key -out " .. d
            .. "/client.csr -subj /CN=lua-oauth2-test-client" .. quiet,
        "openssl x509 -req -in " .. d .. "/client.csr -CA " .. d .. "/ca.pem -CAkey " .. d
            .. "/ca.key -CAcreateserial -days 2 -out " .. d .. "/client.pem" .. quiet,
        "mkdir " .. d .. "/capath && cp " .. d .. "/ca.pem " .. d
            .. "/capath/ && openssl rehash " .. d .. "/capath" .. quiet,
        "openssl x509 -req -in " .. d .. "/server.csr -CA " .. d .. "/ca.pem -CAkey " .. d
            .. "/ca.key -CAcreateserial -days 2 -extfile " .. d .. "/san.ext -out " .. d
            .. "/server.pem" .. quiet,
    }
    for _, step in ipairs(steps) do
        assert(sh(step), "certificate generation failed: " .. step)
    end
end

-- Certificates for TLS faults, beside make_certificates' CA: one that
-- expired (signed by that CA), one for another host name (signed by it),
-- and a self-signed one for 127.0.0.1.
local function make_fault_certificates(dir)
    local d = quote(dir)
    local quiet = " >/dev/null 2>&1"
    local ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    local config = table.concat({
        "[ ca ]", "default_ca = test", "[ test ]", "dir = " .. dir .. "/ca-db",
        "database = $dir/index.txt", "new_certs_dir = $dir", "serial = $dir/serial",
        "default_md = sha256", "policy = any", "copy_extensions = copy",
        "[ any ]", "commonName = supplied", "",
    }, "\n")
    local steps = {
        "mkdir -p " .. d .. "/ca-db && touch " .. d .. "/ca-db/index.txt && echo 01 > "
            .. d .. "/ca-db/serial && printf '%s' " .. quote(config) .. " > " .. d .. "/ca.cnf",
        "openssl req" .. ec .. " -keyout " .. d .. "/expired.key -out " .. d .. "/expired.csr"
            .. " -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1" .. quiet,
        "openssl ca -batch -notext -config " .. d .. "/ca.cnf -cert " .. d .. "/ca.pem -keyfile "
            .. d .. "/ca.key -startdate 20200101000000Z -enddate 20200201000000Z -in " .. d
            .. "/expired.csr -out " .. d .. "/expired.pem" .. quiet,
        "openssl req" .. ec .. " -keyout " .. d .. "/wrong-host.key -out " .. d
            .. "/wrong-host.csr -subj /CN=wrong.example -addext subjectAltName=DNS:wrong.example"
            .. quiet,
        "openssl ca -batch -notext -config " .. d .. "/ca.cnf -cert " .. d .. "/ca.pem -keyfile "
            .. d .. "/ca.key -days 2 -in " .. d .. "/wrong-host.csr -out " .. d
            .. "/wrong-host.pem" .. quiet,
        "openssl req -x509" .. ec .. " -keyout " .. d .. "/self-signed.key -out " .. d
            .. "/self-signed.pem -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1"
            .. quiet,
    }
    for _, step in ipairs(steps) do
        assert(sh(step), "certificate generation failed: " .. step)
    end
end

-- Wait for a server's ready file (its ports as JSON); nil after 10 s.
local function wait_ready(path)
    for _ = 1, 200 do
        local text = read_file(path)
        if text then return cjson.decode(text) end
        core.sleep(0.05)
    end
    return nil
end

local Server = {}
Server.__index = Server

-- POST a JSON config to /_control (reset = true restores the defaults).
function Server:control(config)
    local session = core.session()
    local res, err = session:request {
        url = self.http_url .. "/_control",
        form = { config = cjson.encode(config) },
        timeout = 5,
    }
    session:close()
    assert(res and res.status == 200, "fake server control failed: "
        .. tostring(res and res.status or (err and err.message)))
end

function Server:reset(config)
    config = config or {}
    config.reset = true
    self:control(config)
end

-- What the server saw: token_requests, token_connections, requests[].
function Server:stats()
    local session = core.session()
    -- the requests it lists may carry forms of over 1 MiB
    local res, err = session:request { url = self.http_url .. "/_stats", timeout = 5,
                                       max_body = 64 * 1024 * 1024 }
    session:close()
    assert(res and res.status == 200, "fake server stats failed: "
        .. tostring(res and res.status or (err and err.message)))
    return cjson.decode(res.body)
end

-- The last token request the server saw: {headers, form, basic, bearer}.
function Server:last_request()
    local requests = self:stats().requests
    return requests[#requests]
end

function Server:stop()
    if self.pid then
        sh("kill " .. self.pid .. " 2>/dev/null")
        self.pid = nil
    end
    if self.dir then
        sh("rm -rf " .. quote(self.dir))
        self.dir = nil
    end
end

-- Run one of the Python servers beside this file with its files in dir;
-- returns the Server and its ports once it listens, or raises with its log.
local function launch(dir, script, args)
    local ready = dir .. "/ports.json"
    local command = table.concat({
        "python3", quote(here .. "/" .. script), table.concat(args, " "),
        "--ready-file", quote(ready), "--watch-pid", own_pid() or "0",
        ">", quote(dir .. "/server.log"), "2>&1 &", "echo $!",
    }, " ")
    local _, out = shell.run(command)
    local server = setmetatable({ pid = out:match("%d+"), dir = dir }, Server)
    local ports = wait_ready(ready)
    if not ports then
        local log = read_file(dir .. "/server.log") or ""
        server:stop()
        error(script .. " did not start:\n" .. log)
    end
    return server, ports
end

_M.make_certificates = make_certificates

-- Start the fake endpoint; returns a Server with http_url, https_url,
-- ca_file, wrong_ca_file, cert_file and key_file (its certificate for
-- 127.0.0.1, signed by ca_file) and the client credentials it accepts.
-- opts.tls_port: the HTTPS port to listen on (default: a free one).
function _M.start(opts)
    local dir = temp_dir()
    make_certificates(dir)
    local args = {
        "--cert", quote(dir .. "/server.pem"), "--key", quote(dir .. "/server.key"),
        "--client-ca", quote(dir .. "/ca.pem"),
    }
    if opts and opts.tls_port then args[#args + 1] = "--tls-port " .. tonumber(opts.tls_port) end
    local server, ports = launch(dir, "fake_token_server.py", args)
    server.http_url = ("http://127.0.0.1:%d"):format(ports.http)
    server.https_url = ("https://127.0.0.1:%d"):format(ports.https)
    server.mtls_url = ("https://127.0.0.1:%d"):format(ports.mtls)
    server.ca_file = dir .. "/ca.pem"
    server.cert_file, server.key_file = dir .. "/server.pem", dir .. "/server.key"
    server.ca_path = dir .. "/capath"
    server.client_cert = dir .. "/client.pem"
    server.client_key = dir .. "/client.key"
    server.wrong_ca_file = dir .. "/wrong-ca.pem"
    server.client_id = "demo-client-id"
    server.client_secret = "demo-client-secret"
    return server
end

-- Start the fault server (spec/support/fault_server.py); returns a Server
-- with url(mode), tls_url(name, mode), refused_url, ca_file and seen()
-- (what the redirect target received).
function _M.start_faults()
    local dir = temp_dir()
    make_certificates(dir)
    make_fault_certificates(dir)
    local server, ports = launch(dir, "fault_server.py", { "--certs", quote(dir) })
    local function port(name) return ("%d"):format(ports[name]) end
    server.ca_file = dir .. "/ca.pem"
    server.refused_url = "http://127.0.0.1:" .. port("refused") .. "/v7/oauth2/token"
    server.seen_port = port("target")
    function server.url(mode)
        return "http://127.0.0.1:" .. port("http") .. "/" .. mode .. "/v7/oauth2/token"
    end
    function server.tls_url(name, mode)
        return "https://127.0.0.1:" .. port(name) .. "/" .. (mode or "ok") .. "/v7/oauth2/token"
    end
    function server.seen()
        local session = core.session()
        local res = assert(session:request {
            url = "http://127.0.0.1:" .. port("target") .. "/_seen", timeout = 5 })
        session:close()
        local seen = cjson.decode(res.body)
        seen.connections = seen.connections - 1 -- this very request
        table.remove(seen.requests)
        return seen
    end
    return server
end

return _M
