-- spec/support/store_child.lua: one process of the store specs.
--
--   lua store_child.lua ACTION   with OAUTH2_SPEC_HOST, OAUTH2_SPEC_STORE and
--                                THOUSANDEYES_CLIENT_ID/_SECRET set
--
-- ACTION token: print "token <access_token>" or "error <err>";
-- invalidate: fetch (or take from the store) the token, then invalidate it
-- and print "invalidated <access_token>";
-- loop N PAUSE: ask for the token N times, PAUSE seconds apart, and print
-- "token <access_token>" or "error <err>" each time.
local oauth2 = require "oauth2"
local stores = require "oauth2.store"

-- OAUTH2_SPEC_STORE_TIMEOUT: a Redis store with these timeouts
local store = os.getenv("OAUTH2_SPEC_STORE")
local timeout = tonumber(os.getenv("OAUTH2_SPEC_STORE_TIMEOUT"))
if timeout then
    store = assert(stores.redis { url = store, timeout = timeout, connect_timeout = timeout })
end

-- OAUTH2_SPEC_MARGIN, OAUTH2_SPEC_REFRESH_RATIO: the client's policy
local client = oauth2.client { host = os.getenv("OAUTH2_SPEC_HOST"),
    store = store, deadline = tonumber(os.getenv("OAUTH2_SPEC_DEADLINE")),
    invalidate_cooldown = tonumber(os.getenv("OAUTH2_SPEC_INVALIDATE_COOLDOWN")),
    margin = tonumber(os.getenv("OAUTH2_SPEC_MARGIN")),
    refresh_ratio = tonumber(os.getenv("OAUTH2_SPEC_REFRESH_RATIO")),
    refresh_jitter = os.getenv("OAUTH2_SPEC_REFRESH_RATIO") and 0 or nil }
if arg[1] == "loop" then
    local core = require "oauth2.core"
    for _ = 1, tonumber(arg[2]) do
        local token, err = client:token()
        print(token and "token " .. token.access_token or "error " .. tostring(err))
        core.sleep(tonumber(arg[3]))
    end
    os.exit(0)
end

local token, err = client:token()
if not token then
    print("error " .. tostring(err))
    os.exit(0)
end
if arg[1] == "invalidate" then
    client:invalidate()
    print("invalidated " .. token.access_token)
else
    print("token " .. token.access_token)
end
