/*
 * fuzz_request.c - libFuzzer harness for what oauth2.core takes from callers:
 * form and URL encoding of arbitrary bytes, header names and values (the
 * CR/LF/NUL refusal), URL parsing, SHA-256, and the request table's options
 * (numbers of any value).  No transfer is started: each exchange is set up
 * and then released, so the harness needs no network.
 *
 * Input: fields separated by 0xFE bytes:
 *   escape-input, url-to-parse, header-name, header-value, form-name,
 *   form-value, request-url, then 8 bytes that become the timeout (double)
 *   and a ninth whose low bit marks the request reuse and whose next bit
 *   sends it through the public methods with hostile Lua running inside.
 */
#include <lualib.h>

#include "../src/core.c"

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
    "collectgarbage('setpause', 200)\n";

static void init(void)
{
    state = luaL_newstate();
    luaL_openlibs(state);
    luaL_requiref(state, "oauth2.core", luaopen_oauth2_core, 0);
    lua_setglobal(state, "core");
    if (luaL_loadstring(state, hostile_chunk) != 0)
        abort();
    lua_setglobal(state, "hostile");
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

/* Build a request table from the fields and run session:start on it. */
static int start_request(lua_State *L)
{
    session *s = luaL_checkudata(L, 1, SESSION_MT);
    lua_settop(L, 2); /* the request table at index 2, as start_exchange expects */
    if (start_exchange(L, s) == 0) {
        /* set up fully: let go before any transfer, keeping a request
           marked reuse, and start once more: the kept path */
        release_transfer(s);
        if (s->reuse_ref == LUA_NOREF)
            release_request(L, s);
        if (start_exchange(L, s) == 0)
            release_exchange(L, s);
    }
    return 0;
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

    call1("escape", p[0], n[0]);
    call1("parse_url", p[1], n[1]);
    call1("sha256", p[0], n[0]);

    if (n[7] >= sizeof timeout)
        memcpy(&timeout, p[7], sizeof timeout);

    lua_pushcfunction(state, start_request);
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
    lua_setfield(state, -2, "reuse");
    if (n[7] > 8 && (p[7][8] & 2)) {
        lua_getglobal(state, "hostile");
        lua_replace(state, -4); /* in place of start_request */
    }
    lua_pcall(state, 2, 0, 0); /* bad numbers raise: that is fine */
    lua_settop(state, 0);
    lua_gc(state, LUA_GCCOLLECT, 0); /* sessions are closed by __gc */
    return 0;
}
