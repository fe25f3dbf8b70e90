/*
 * fuzz_request.c - libFuzzer harness for what oauth2.core takes from callers:
 * form and URL encoding of arbitrary bytes, header names and values (the
 * CR/LF/NUL refusal), URL parsing, SHA-256, the request table's options
 * (numbers of any value) through core.prepare and session:start, and the
 * pure text functions of src/text.c called directly (the redaction of
 * libcurl's error texts, the b64token check).  No transfer is started: each
 * exchange is set up and then cancelled, so the harness needs no network.
 *
 * Input: fields separated by 0xFE bytes:
 *   escape-input, url-to-parse, header-name, header-value, form-name,
 *   form-value, request-url, then 8 bytes that become the timeout (double)
 *   and a ninth whose low bit prepares the request first and sends it
 *   twice and whose next bit sends it with hostile Lua running inside.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "../src/text.h"

int luaopen_oauth2_core(lua_State *L);

static lua_State *state;

/*
 * The same request through the public methods, with Lua running inside
 * them: a metamethod on the request table (never called: fields are read
 * raw) and finalizers, collected while the core allocates, that reuse and
 * close the session.  The transfer is cancelled before it is stepped.
 */
static const char hostile_chunk[] =
    "local session, request = ...\n"
    "setmetatable(request, { __index = function()\n"
    "    pcall(session.start, session, request); session:close() end })\n"
    "for _ = 1, 4 do\n"
    "    setmetatable({}, { __gc = function()\n"
    "        pcall(session.start, session, request); session:close() end })\n"
    "end\n"
    "collectgarbage('setpause', 0)\n"
    "if pcall(session.start, session, request) then pcall(session.cancel, session) end\n"
    "pcall(session.header, session, 'x-a')\n"
    "pcall(session.headers, session)\n"
    "collectgarbage('setpause', 200)\n";

/* Start the request (table, or prepared first and started twice), then
 * cancel it before any transfer. */
static const char plain_chunk[] =
    "local session, request, prepare = ...\n"
    "if prepare then\n"
    "    local prepared = core.prepare(request)\n"
    "    if not prepared then return end\n"
    "    request = prepared\n"
    "    if session:start(request) then session:cancel() end\n"
    "end\n"
    "if session:start(request) then session:cancel() end\n";

static void init(void)
{
    state = luaL_newstate();
    luaL_openlibs(state);
    luaL_requiref(state, "oauth2.core", luaopen_oauth2_core, 0);
    lua_setglobal(state, "core");
    if (luaL_loadstring(state, hostile_chunk) != 0)
        abort();
    lua_setglobal(state, "hostile");
    if (luaL_loadstring(state, plain_chunk) != 0)
        abort();
    lua_setglobal(state, "plain");
}

/* The n-th 0xFE-separated field of data (empty when absent). */
static const uint8_t *field(const uint8_t *data, size_t size, int n, size_t *len)
{
    size_t start = 0, i;
    for (i = 0; i <= size; i++) {
        if (i == size || data[i] == 0xFE) {
            if (n-- == 0) {
                *len = i - start;
                return data + start;
            }
            start = i + 1;
        }
    }
    *len = 0;
    return data;
}

/* Call core.<name>(text) in protected mode; outcome ignored. */
static void call1(const char *name, const uint8_t *p, size_t n)
{
    lua_getglobal(state, "core");
    lua_getfield(state, -1, name);
    lua_pushlstring(state, (const char *)p, n);
    lua_pcall(state, 1, LUA_MULTRET, 0);
    lua_settop(state, 0);
}

/* The text functions that see outside bytes, called directly. */
static void text_functions(const uint8_t *p, size_t n)
{
    char *text = malloc(n + 1), out[256];
    if (text == NULL)
        return;
    memcpy(text, p, n);
    text[n] = '\0';
    oauth2_redact_userinfo(out, sizeof out, text);
    if (strlen(out) >= sizeof out)
        abort();
    oauth2_redact_userinfo(out, 1, text);
    (void)oauth2_is_b64token(text, n);
    (void)oauth2_is_token(text, n);
    (void)oauth2_is_safe_value(text, n);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n[8];
    const uint8_t *p[8];
    double timeout = 1;
    int i;
    if (state == NULL)
        init();
    for (i = 0; i < 8; i++)
        p[i] = field(data, size, i, &n[i]);

    text_functions(p[1], n[1]);
    call1("escape", p[0], n[0]);
    call1("parse_url", p[1], n[1]);
    call1("sha256", p[0], n[0]);

    if (n[7] >= sizeof timeout)
        memcpy(&timeout, p[7], sizeof timeout);

    lua_getglobal(state, "plain");
    lua_getglobal(state, "core");
    lua_getfield(state, -1, "session");
    lua_remove(state, -2);
    lua_call(state, 0, 1);
    lua_createtable(state, 0, 6);
    lua_pushlstring(state, (const char *)p[6], n[6]);
    lua_setfield(state, -2, "url");
    lua_newtable(state);
    lua_pushlstring(state, (const char *)p[2], n[2]);
    lua_pushlstring(state, (const char *)p[3], n[3]);
    lua_settable(state, -3);
    lua_setfield(state, -2, "headers");
    lua_newtable(state);
    lua_pushlstring(state, (const char *)p[4], n[4]);
    lua_pushlstring(state, (const char *)p[5], n[5]);
    lua_settable(state, -3);
    lua_setfield(state, -2, "form");
    lua_pushnumber(state, timeout);
    lua_setfield(state, -2, "timeout");
    lua_pushnumber(state, timeout);
    lua_setfield(state, -2, "max_body");
    lua_pushboolean(state, n[7] > 8 && (p[7][8] & 1));
    if (n[7] > 8 && (p[7][8] & 2)) {
        lua_getglobal(state, "hostile");
        lua_replace(state, -5); /* in place of the plain chunk */
    }
    lua_pcall(state, 3, 0, 0); /* bad numbers raise: that is fine */
    lua_settop(state, 0);
    lua_gc(state, LUA_GCCOLLECT, 0); /* sessions are closed by __gc */
    return 0;
}
