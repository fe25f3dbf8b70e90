/*
 * redis.c - oauth2.redis: a blocking Redis connection through hiredis, for
 * the Redis store outside nginx (inside nginx, lua-resty-redis drives
 * cosockets instead).  A module of its own, as LuaSocket ships mime.core
 * beside socket.core: oauth2.core links libcurl and libcrypto only, and
 * a user without Redis needs no libhiredis.
 *
 *   local redis = require "oauth2.redis"
 *   local conn, err = redis.connect(host, port, connect_timeout, command_timeout)
 *   local reply, err = conn:command("SET", key, value, "PX", 30000, "NX")
 *   conn:close()
 *
 * Replies come back as Lua values: a bulk or status string, an integer,
 * false for a nil reply, a table for an array; an error reply or a
 * broken connection gives nil and a message (then the connection is
 * closed: connect again).  The reply being converted hangs off the
 * connection's userdata, so an out-of-memory error cannot leak it.
 *
 * A command has one deadline, the command timeout, for writing it and
 * reading its whole reply (hiredis's own timeout is per read: a server
 * that trickles its reply would hold the caller for ever), and a reply
 * may hold at most MAX_REPLY bytes (records are a few KiB): past either,
 * the command fails and the connection is closed.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "clock.h"

#define REDIS_MT "oauth2.redis.connection"
#define MAX_ARGS 1024 /* HMGET of every watched key, in chunks */
#define MAX_REPLY (1024 * 1024)

typedef struct {
    redisContext *context;
    redisReply *reply; /* the reply being pushed, freed after (or by __gc) */
    double timeout;    /* seconds a whole command may take */
} connection;

static void drop_reply(connection *conn)
{
    if (conn->reply != NULL) {
        freeReplyObject(conn->reply);
        conn->reply = NULL;
    }
}

/* The one close: close, __gc and __close; idempotent. */
static void close_connection(connection *conn)
{
    drop_reply(conn);
    if (conn->context != NULL) {
        redisFree(conn->context);
        conn->context = NULL;
    }
}

static struct timeval to_timeval(lua_Number seconds)
{
    struct timeval tv;
    if (!(seconds > 0))
        seconds = 0.001;
    if (seconds > OAUTH2_MAX_SECONDS)
        seconds = OAUTH2_MAX_SECONDS;
    tv.tv_sec = (long)seconds;
    tv.tv_usec = (long)((seconds - (lua_Number)tv.tv_sec) * 1e6);
    return tv;
}

/* redis.connect(host, port, connect_timeout, command_timeout) -> conn | nil, err */
static int l_connect(lua_State *L)
{
    const char *host = luaL_checkstring(L, 1);
    lua_Integer port = luaL_checkinteger(L, 2);
    lua_Number connect_timeout = luaL_optnumber(L, 3, 1);
    lua_Number command_timeout = luaL_optnumber(L, 4, 1);
    connection *conn;
    if (port < 1 || port > 65535)
        return luaL_error(L, "redis port out of range");
    conn = lua_newuserdata(L, sizeof *conn);
    memset(conn, 0, sizeof *conn);
    luaL_getmetatable(L, REDIS_MT);
    lua_setmetatable(L, -2);
    conn->context = redisConnectWithTimeout(host, (int)port, to_timeval(connect_timeout));
    if (conn->context == NULL || conn->context->err) {
        lua_pushnil(L);
        lua_pushfstring(L, "redis %s:%d: %s", host, (int)port,
                        conn->context ? conn->context->errstr : "out of memory");
        close_connection(conn);
        return 2;
    }
    {
        struct timeval tv = to_timeval(command_timeout);
        conn->timeout = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
    }
    if (redisSetTimeout(conn->context, to_timeval(command_timeout)) != REDIS_OK) {
        close_connection(conn);
        lua_pushnil(L);
        lua_pushliteral(L, "redis: cannot set the command timeout");
        return 2;
    }
    return 1;
}

static connection *check_open(lua_State *L)
{
    connection *conn = luaL_checkudata(L, 1, REDIS_MT);
    if (conn->context == NULL)
        luaL_error(L, "attempt to use a closed oauth2.redis connection");
    return conn;
}

/* Push a reply as a Lua value; nested arrays are Lua tables. */
static void push_reply(lua_State *L, const redisReply *reply, int depth)
{
    size_t i;
    switch (reply->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        lua_pushlstring(L, reply->str, reply->len);
        break;
    case REDIS_REPLY_INTEGER:
        lua_pushinteger(L, (lua_Integer)reply->integer);
        break;
    case REDIS_REPLY_ARRAY:
        if (depth > 4) {
            lua_pushboolean(L, 0);
            break;
        }
        lua_createtable(L, (int)(reply->elements > 64 ? 64 : reply->elements), 0);
        for (i = 0; i < reply->elements; i++) {
            push_reply(L, reply->element[i], depth + 1);
            lua_rawseti(L, -2, (int)i + 1);
        }
        break;
    default: /* REDIS_REPLY_NIL */
        lua_pushboolean(L, 0);
        break;
    }
}

/* Wait until the connection's socket is ready for `events`, at most until
 * `deadline`; 0 when ready, -1 when the deadline passed or poll failed. */
static int wait_ready(redisContext *c, short events, double deadline)
{
    struct pollfd p;
    int rc;
    for (;;) {
        double left = deadline - oauth2_monotonic();
        if (left <= 0)
            return -1;
        p.fd = c->fd;
        p.events = events;
        p.revents = 0;
        rc = poll(&p, 1, (int)(left * 1000) + 1);
        if (rc > 0)
            return 0;
        if (rc < 0 && errno != EINTR)
            return -1;
    }
}

/*
 * Send one command and read its whole reply within one deadline and the
 * reply bound; the reply (owned by the caller), or NULL with *why set.
 */
static redisReply *run_command(connection *conn, int argc, const char **argv,
                               const size_t *argvlen, const char **why)
{
    redisContext *c = conn->context;
    double deadline = oauth2_monotonic() + conn->timeout;
    void *reply = NULL;
    int done = 0;
    *why = NULL;
    if (redisAppendCommandArgv(c, argc, argv, argvlen) != REDIS_OK)
        return NULL;
    while (!done) {
        if (redisBufferWrite(c, &done) != REDIS_OK)
            return NULL;
        if (!done && wait_ready(c, POLLOUT, deadline) != 0) {
            *why = "the command timed out";
            return NULL;
        }
    }
    for (;;) {
        if (redisGetReplyFromReader(c, &reply) != REDIS_OK)
            return NULL;
        if (reply != NULL)
            return reply;
        if (c->reader->len - c->reader->pos > MAX_REPLY) {
            *why = "the reply is larger than 1 MiB";
            return NULL;
        }
        if (wait_ready(c, POLLIN, deadline) != 0) {
            *why = "the command timed out";
            return NULL;
        }
        if (redisBufferRead(c) != REDIS_OK)
            return NULL;
    }
}

/* conn:command(arg, ...) -> reply | nil, err */
static int l_command(lua_State *L)
{
    connection *conn = check_open(L);
    const char *argv[MAX_ARGS];
    size_t argvlen[MAX_ARGS];
    int argc = lua_gettop(L) - 1, i;
    const char *why;
    if (argc < 1 || argc > MAX_ARGS)
        return luaL_error(L, "a redis command takes 1 to %d arguments", MAX_ARGS);
    for (i = 0; i < argc; i++) {
        if (lua_type(L, i + 2) != LUA_TSTRING && lua_type(L, i + 2) != LUA_TNUMBER)
            return luaL_error(L, "redis command arguments must be strings or numbers");
        /* converts numbers in place: the strings stay anchored on the stack */
        argv[i] = lua_tolstring(L, i + 2, &argvlen[i]);
    }
    drop_reply(conn);
    conn->reply = run_command(conn, argc, argv, argvlen, &why);
    if (conn->reply == NULL) {
        /* a broken, late or flooded connection: no reply can follow on it */
        lua_pushnil(L);
        lua_pushfstring(L, "redis: %s", why ? why
                                            : conn->context->errstr[0] ? conn->context->errstr
                                                                       : "connection lost");
        close_connection(conn);
        return 2;
    }
    if (conn->reply->type == REDIS_REPLY_ERROR) {
        lua_pushnil(L);
        lua_pushlstring(L, conn->reply->str, conn->reply->len);
        drop_reply(conn);
        return 2;
    }
    push_reply(L, conn->reply, 0);
    drop_reply(conn);
    return 1;
}

/* conn:set_timeout(seconds): what each command may take from now on, in
 * all (the connection's steps, AUTH and SELECT, share one bound) */
static int l_set_timeout(lua_State *L)
{
    connection *conn = check_open(L);
    struct timeval tv = to_timeval(luaL_checknumber(L, 2));
    conn->timeout = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
    return 0;
}

static int l_close(lua_State *L)
{
    close_connection(luaL_checkudata(L, 1, REDIS_MT));
    return 0;
}

/* conn:is_open() -> whether the connection can still be used */
static int l_is_open(lua_State *L)
{
    connection *conn = luaL_checkudata(L, 1, REDIS_MT);
    lua_pushboolean(L, conn->context != NULL);
    return 1;
}

static const luaL_Reg methods[] = {
    {"command", l_command},
    {"set_timeout", l_set_timeout},
    {"close", l_close},
    {"is_open", l_is_open},
    {NULL, NULL},
};

static const luaL_Reg functions[] = {
    {"connect", l_connect},
    {NULL, NULL},
};

#if defined(__GNUC__)
__attribute__((visibility("default")))
#endif
int luaopen_oauth2_redis(lua_State *L)
{
    if (luaL_newmetatable(L, REDIS_MT)) {
        lua_pushcfunction(L, l_close);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_close);
        lua_setfield(L, -2, "__close");
        oauth2_newlib(L, methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    oauth2_newlib(L, functions);
    lua_pushliteral(L, OAUTH2_CORE_VERSION);
    lua_setfield(L, -2, "_VERSION");
    return 1;
}
