/*
 * compat.h - the few Lua C API differences between 5.1/LuaJIT and 5.2+.
 *
 * Every shim carries the oauth2_ prefix: LuaJIT 2.1 exports some luaL_*
 * symbols of 5.2 itself, and defining them again breaks the link (the
 * lesson lua-cjson learnt the hard way).
 */
#ifndef OAUTH2_COMPAT_H
#define OAUTH2_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

/* The version of the C modules (oauth2.core, oauth2.redis) and the rock. */
#define OAUTH2_CORE_VERSION "0.1.0"

#if LUA_VERSION_NUM >= 502
#define oauth2_rawlen(L, i) lua_rawlen((L), (i))
#define oauth2_setfuncs(L, l) luaL_setfuncs((L), (l), 0)
#define oauth2_tolstring(L, i) luaL_tolstring((L), (i), NULL)
#define oauth2_testudata(L, i, name) luaL_testudata((L), (i), (name))
#else
/* luaL_testudata: the userdata at i if its metatable is name's, else NULL. */
static inline void *oauth2_testudata(lua_State *L, int i, const char *name)
{
    void *p = lua_touserdata(L, i);
    int same;
    if (p == NULL || !lua_getmetatable(L, i))
        return NULL;
    luaL_getmetatable(L, name);
    same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same ? p : NULL;
}
/* luaL_tolstring: push tostring(value at absolute index i). */
static inline const char *oauth2_tolstring(lua_State *L, int i)
{
    lua_getglobal(L, "tostring");
    lua_pushvalue(L, i);
    lua_call(L, 1, 1);
    return lua_tostring(L, -1);
}
#define oauth2_rawlen(L, i) lua_objlen((L), (i))
/* luaL_setfuncs without upvalues: register l into the table on top. */
static inline void oauth2_setfuncs(lua_State *L, const luaL_Reg *l)
{
    for (; l->name != NULL; l++) {
        lua_pushcfunction(L, l->func);
        lua_setfield(L, -2, l->name);
    }
}
#endif

/* Create a fresh table holding the functions of l (luaL_newlib). */
#define oauth2_newlib(L, l) (lua_newtable(L), oauth2_setfuncs((L), (l)))

#endif
