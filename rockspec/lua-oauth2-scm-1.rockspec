-- LuaRocks build of lua-oauth2: the C core (linked with libcurl and
-- libcrypto) and the Lua modules.  The Redis store outside nginx needs
-- oauth2.redis too: lua-oauth2-redis-scm-1.rockspec (libhiredis).  From a checkout: luarocks make (add
-- --deps-mode=none when lua-cjson and argparse come from the system, e.g.
-- Debian's lua-cjson and lua-argparse packages).
rockspec_format = "3.0"
package = "lua-oauth2"
version = "scm-1"

source = {
   url = "git+https://github.com/lua-oauth2/lua-oauth2.git",
}

description = {
   summary = "OAuth2 access tokens from the ThousandEyes API v7, for Lua and OpenResty",
   detailed = [[
A libcurl-based C core and a small Lua layer that fetch OAuth2 access
tokens (client-credentials grant) from the ThousandEyes API v7 token
endpoint, or any RFC 6749 token endpoint: option validation, retries with
backoff inside a deadline, connection reuse, and errors that never carry a
secret.
]],
   license = "MIT",
   labels = { "oauth2", "thousandeyes", "openresty", "curl" },
}

dependencies = {
   "lua >= 5.1, < 5.5",
   "lua-cjson >= 2.1",
   -- the command-line tool's arguments
   "argparse >= 0.7",
}

-- Only the library is looked up: Debian and Ubuntu keep curl/curl.h in a
-- multiarch include directory that LuaRocks does not search, while the C
-- compiler finds it there by itself.  Elsewhere pass CURL_DIR or CURL_INCDIR.
external_dependencies = {
   CURL = {
      library = "curl",
   },
   -- libcrypto of OpenSSL: hashing and AES-256-GCM for the stores
   OPENSSL = {
      header = "openssl/evp.h",
      library = "crypto",
   },
}

build = {
   type = "builtin",
   modules = {
      ["oauth2.core"] = {
         sources = { "src/core.c", "src/request.c", "src/errors.c", "src/text.c",
                      "src/buffer.c", "src/clock.c", "src/crypto.c", "src/files.c" },
         defines = { "_POSIX_C_SOURCE=200809L" },
         incdirs = { "$(CURL_INCDIR)", "$(OPENSSL_INCDIR)" },
         libdirs = { "$(CURL_LIBDIR)", "$(OPENSSL_LIBDIR)" },
         libraries = { "curl", "crypto" },
      },
      ["oauth2"] = "lua/oauth2.lua",
      ["oauth2.api"] = "lua/oauth2/api.lua",
      ["oauth2.bearer"] = "lua/oauth2/bearer.lua",
      ["oauth2.cache"] = "lua/oauth2/cache.lua",
      ["oauth2.client"] = "lua/oauth2/client.lua",
      ["oauth2.endpoint"] = "lua/oauth2/endpoint.lua",
      ["oauth2.error"] = "lua/oauth2/error.lua",
      ["oauth2.exchange"] = "lua/oauth2/exchange.lua",
      ["oauth2.json"] = "lua/oauth2/json.lua",
      ["oauth2.openresty"] = "lua/oauth2/openresty.lua",
      ["oauth2.options"] = "lua/oauth2/options.lua",
      ["oauth2.link"] = "lua/oauth2/link.lua",
      ["oauth2.policy"] = "lua/oauth2/policy.lua",
      ["oauth2.record"] = "lua/oauth2/record.lua",
      ["oauth2.retry"] = "lua/oauth2/retry.lua",
      ["oauth2.static"] = "lua/oauth2/static.lua",
      ["oauth2.store"] = "lua/oauth2/store.lua",
      ["oauth2.store.file"] = "lua/oauth2/store/file.lua",
      ["oauth2.store.memory"] = "lua/oauth2/store/memory.lua",
      ["oauth2.store.redis"] = "lua/oauth2/store/redis.lua",
      ["oauth2.store.shm"] = "lua/oauth2/store/shm.lua",
      ["oauth2.trace"] = "lua/oauth2/trace.lua",
      ["oauth2.transport"] = "lua/oauth2/transport.lua",
   },
   install = {
      bin = { ["thousandeyes-token"] = "bin/thousandeyes-token" },
   },
   copy_directories = { "examples" },
}
