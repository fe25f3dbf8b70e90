-- LuaRocks build of oauth2.redis: the blocking Redis connection (hiredis)
-- of lua-oauth2's Redis store outside nginx.  Inside nginx the store
-- talks through cosockets and needs no such module.  From a checkout,
-- after lua-oauth2 itself:
--   luarocks make --deps-mode=none rockspec/lua-oauth2-redis-scm-1.rockspec
rockspec_format = "3.0"
package = "lua-oauth2-redis"
version = "scm-1"

source = {
   url = "git+https://github.com/lua-oauth2/lua-oauth2.git",
}

description = {
   summary = "The Redis connection of lua-oauth2's shared token store (hiredis)",
   license = "MIT",
   labels = { "oauth2", "redis" },
}

dependencies = {
   "lua >= 5.1, < 5.5",
   "lua-oauth2",
}

external_dependencies = {
   HIREDIS = {
      header = "hiredis/hiredis.h",
      library = "hiredis",
   },
}

build = {
   type = "builtin",
   modules = {
      ["oauth2.redis"] = {
         sources = { "src/redis.c", "src/clock.c" },
         defines = { "_POSIX_C_SOURCE=200809L" },
         incdirs = { "$(HIREDIS_INCDIR)" },
         libdirs = { "$(HIREDIS_LIBDIR)" },
         libraries = { "hiredis" },
      },
   },
}
