-- dh-lua's build-time test: run as `lua5.X -loauth2 debian/test.lua`
local oauth2 = require "oauth2"
local core = require "oauth2.core"
assert(oauth2._VERSION == core._VERSION, "oauth2 and oauth2.core differ in version")
local ok, why = pcall(oauth2.token, { client_id = "id" })
assert(not ok and why:find("client_secret", 1, true), why)
print("lua-oauth2 " .. oauth2._VERSION .. " loads in " .. _VERSION)
