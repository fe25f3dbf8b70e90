/*
 * fuzz_response.c - libFuzzer harness for what oauth2.core takes from servers:
 * the input is a raw HTTP response that a listener on 127.0.0.1 (owned by
 * the harness, fed between steps of a real exchange) sends back verbatim.
 * It exercises libcurl's reading as we drive it, the body cap, header
 * collection, Retry-After and the response and error tables, through the
 * module's public methods only.
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

int luaopen_oauth2_core(lua_State *L);

static lua_State *state;
static int listener = -1;
static char url[64];

/* What is left to send of the current input. */
static const uint8_t *pending;
static size_t pending_size;
static int server = -1;

static void init(void)
{
    struct sockaddr_in address;
    socklen_t length = sizeof address;
    state = luaL_newstate();
    luaL_openlibs(state);
    luaL_requiref(state, "oauth2.core", luaopen_oauth2_core, 0);
    lua_setglobal(state, "core");

    listener = socket(AF_INET, SOCK_STREAM, 0);
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (listener < 0 || bind(listener, (struct sockaddr *)&address, sizeof address) != 0 ||
        listen(listener, 16) != 0 ||
        getsockname(listener, (struct sockaddr *)&address, &length) != 0)
        abort();
    fcntl(listener, F_SETFL, O_NONBLOCK);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v7/oauth2/token", ntohs(address.sin_port));
}

/* The server's part between two steps: accept, send what is pending, EOF. */
static void serve(void)
{
    if (server < 0) {
        server = accept(listener, NULL, NULL);
        if (server < 0)
            return;
        fcntl(server, F_SETFL, O_NONBLOCK);
    }
    while (pending_size > 0) {
        ssize_t sent = send(server, pending, pending_size, MSG_NOSIGNAL);
        if (sent <= 0)
            return;
        pending += sent;
        pending_size -= (size_t)sent;
    }
    shutdown(server, SHUT_WR);
}

/* One exchange against the canned response, through the public methods:
 * session:start, then session:step with the server's part in between. */
static int exchange(lua_State *L)
{
    lua_settop(L, 2); /* session, request */
    lua_getfield(L, 1, "start");
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_call(L, 2, 1);
    if (!lua_toboolean(L, -1))
        return 0;
    for (;;) {
        lua_settop(L, 2);
        lua_getfield(L, 1, "step");
        lua_pushvalue(L, 1);
        lua_pushnumber(L, 0.005);
        lua_call(L, 2, 2);
        if (lua_type(L, -2) != LUA_TBOOLEAN)
            break; /* the response, or nil and the error */
        serve();
    }
    if (getenv("FUZZ_DEBUG") && lua_istable(L, -2)) {
        lua_getfield(L, -2, "status");
        fprintf(stderr, "status=%s\n", lua_tostring(L, -1));
    }
    /* the headers of the last response, as a caller reads them */
    lua_getfield(L, 1, "headers");
    lua_pushvalue(L, 1);
    lua_call(L, 1, 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (state == NULL)
        init();
    pending = data;
    pending_size = size;
    server = -1;

    lua_pushcfunction(state, exchange);
    lua_getglobal(state, "core");
    lua_getfield(state, -1, "session");
    lua_remove(state, -2);
    lua_call(state, 0, 1);
    lua_createtable(state, 0, 4);
    lua_pushstring(state, url);
    lua_setfield(state, -2, "url");
    lua_pushnumber(state, 2);
    lua_setfield(state, -2, "timeout");
    lua_pushinteger(state, 4096); /* a small cap, so the fuzzer can reach it */
    lua_setfield(state, -2, "max_body");
    lua_newtable(state);
    lua_pushliteral(state, "client_secret");
    lua_pushliteral(state, "fuzz");
    lua_settable(state, -3);
    lua_setfield(state, -2, "form");
    lua_pcall(state, 2, 0, 0);
    lua_settop(state, 0);
    lua_gc(state, LUA_GCCOLLECT, 0); /* closes the session: a new connection each time */
    if (server >= 0)
        close(server);
    return 0;
}
