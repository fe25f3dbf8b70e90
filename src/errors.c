/*
 * errors.c - the core's error tables (see errors.h).
 */
#include "errors.h"

#define ERROR_MT "oauth2.core.error"

/*
 * Push nil and the error table {kind=, message=, curl_code=}; it prints as
 * "oauth2.core: <kind> error: <message>".
 */
int oauth2_push_error(lua_State *L, const char *kind, const char *message, int curl_code)
{
    lua_pushnil(L);
    lua_createtable(L, 0, 3);
    luaL_getmetatable(L, ERROR_MT);
    lua_setmetatable(L, -2);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, message);
    lua_setfield(L, -2, "message");
    if (curl_code != 0) {
        lua_pushinteger(L, curl_code);
        lua_setfield(L, -2, "curl_code");
    }
    return 2;
}

/* __tostring of the core's error tables. */
static int error_tostring(lua_State *L)
{
    const char *kind, *message;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_pushliteral(L, "kind");
    lua_rawget(L, 1);
    lua_pushliteral(L, "message");
    lua_rawget(L, 1);
    kind = lua_tostring(L, -2);
    message = lua_tostring(L, -1);
    lua_pushfstring(L, "oauth2.core: %s error: %s", kind ? kind : "?", message ? message : "?");
    return 1;
}

/* __concat of the core's error tables: "failed: " .. err works as with
 * tostring. */
static int error_concat(lua_State *L)
{
    lua_settop(L, 2);
    oauth2_tolstring(L, 1);
    oauth2_tolstring(L, 2);
    lua_concat(L, 2);
    return 1;
}

/* Which of the library's error kinds a libcurl result belongs to. */
const char *oauth2_curl_kind(CURLcode code)
{
    switch (code) {
    case CURLE_OPERATION_TIMEDOUT:
        return "timeout";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_USE_SSL_FAILED:
        return "tls";
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_NOT_BUILT_IN:
        return "config";
    case CURLE_FILESIZE_EXCEEDED:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_BAD_CONTENT_ENCODING:
        return "protocol";
    default:
        return "network";
    }
}

void oauth2_errors_open(lua_State *L)
{
    if (luaL_newmetatable(L, ERROR_MT)) {
        lua_pushcfunction(L, error_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushcfunction(L, error_concat);
        lua_setfield(L, -2, "__concat");
    }
    lua_pop(L, 1);
}
