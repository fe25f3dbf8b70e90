-- bench/dropped_clients.lua: what clients and one-shot calls that are
-- dropped without close() hold, on the interpreter that runs it.
--
--   lua5.1 bench/dropped_clients.lua    (or lua5.4, luajit; make bench-fds)
--
-- Creates N oauth2.client objects over TLS, takes a token from each and
-- drops them without close(), then N one-shot oauth2.token calls, and
-- prints the open file descriptors and the resident memory after each,
-- without forcing a garbage collection.

local build = jit and "luajit" or _VERSION:match("%d+%.%d+")
package.path = "lua/?.lua;spec/support/?.lua;" .. package.path
package.cpath = "build/" .. build .. "/?.so;" .. package.cpath

local oauth2 = require "oauth2"
local fake = require "server"
local shell = require "shell"

local N = tonumber(os.getenv("BENCH_CLIENTS")) or 5000

local pid = shell.read_file("/proc/self/stat"):match("^(%d+)")

local function open_fds()
    local _, out = shell.run("ls /proc/" .. pid .. "/fd | wc -l")
    return tonumber(out:match("%d+"))
end

local function rss_mib()
    local status = shell.read_file("/proc/" .. pid .. "/status") or ""
    return (tonumber(status:match("VmRSS:%s+(%d+)")) or 0) / 1024
end

local server = fake.start()
local ok, failure = pcall(function()
    local url = server.https_url .. "/v7/oauth2/token"
    local base = { fds = open_fds(), rss = rss_mib() }
    for i = 1, N do
        local client = oauth2.client { token_url = url, client_id = server.client_id,
            client_secret = server.client_secret, ca_file = server.ca_file, scope = "s" .. i }
        assert(client:token())
    end
    local clients = { fds = open_fds(), rss = rss_mib() }
    for _ = 1, N do
        assert(oauth2.token { token_url = url, client_id = server.client_id,
            client_secret = server.client_secret, ca_file = server.ca_file })
    end
    local calls = { fds = open_fds(), rss = rss_mib() }
    print(("| %s | %d | %d -> %d | %d -> %d | %.0f -> %.0f -> %.0f MiB |"):format(
        jit and jit.version or _VERSION, N, base.fds, clients.fds, clients.fds, calls.fds,
        base.rss, clients.rss, calls.rss))
end)
server:stop()
if not ok then error(failure, 0) end
