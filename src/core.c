/*
 * core.c - oauth2.core: one HTTP exchange over libcurl, results as Lua tables.
 *
 * This is the mechanism half of the library (the policy lives in Lua).  A
 * session owns one easy handle, so consecutive exchanges reuse the
 * keep-alive connection and the TLS session.  An exchange can be driven
 * step by step (start, then step until done) without blocking, through a
 * multi handle the session makes on the first start; the blocking
 * `request` is libcurl's own loop (curl_easy_perform), which needs no
 * multi handle of ours: making one costs a one-shot call more than the
 * rest of its set-up.  Network and HTTP outcomes are returned as data (`nil, err`), only
 * misuse raises.  What is sent is a prepared request (request.c).
 *
 * Ownership rule: every C resource of an exchange (easy handle, response
 * body, error text) hangs off the session userdata, and the prepared
 * request the handle is set up for is referenced from it, so a Lua error
 * (which longjmps) can never leak it; `__gc` frees what is left.  No Lua
 * API call happens inside a libcurl callback.
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "buffer.h"
#include "clock.h"
#include "compat.h"
#include "crypto.h"
#include "errors.h"
#include "files.h"
#include "request.h"
#include "text.h"

#define SESSION_MT "oauth2.core.session"

#define DEFAULT_TIMEOUT_MS 30000L
/* The most a response head may hold (the status line counts as a field):
 * real ones have a few dozen fields and a few KiB. */
#define MAX_HEAD_FIELDS 200
#define MAX_HEAD_BYTES (64 * 1024)

typedef struct {
    CURL *easy;
    CURLM *multi;
    const oauth2_request *request; /* what the handle is set up for, or NULL */
    int request_ref;               /* ... held in the registry, or LUA_NOREF */
    oauth2_buffer body;            /* response body: carries the access token */
    size_t max_body;
    int body_too_large;
    size_t head_fields; /* header fields of the response head being read */
    size_t head_bytes;  /* ... and its bytes */
    int head_too_large;
    int out_of_memory;
    int running; /* the easy handle is attached to the multi handle */
    int closed;
    int in_call;       /* a method of this session is running (re-entrancy guard) */
    int close_pending; /* close was asked for during that call: done at its end */
    char errbuf[CURL_ERROR_SIZE];
} session;

/* ---------------------------------------------------------------- session */

/* Drop what one transfer owned (the response); the request stays. */
static void release_transfer(session *s)
{
    if (s->running) {
        curl_multi_remove_handle(s->multi, s->easy);
        s->running = 0;
    }
    oauth2_buffer_free(&s->body);
    /* libcurl's words: they may quote a proxy string with its password */
    oauth2_wipe(s->errbuf, sizeof s->errbuf);
    s->body_too_large = 0;
    s->head_fields = 0;
    s->head_bytes = 0;
    s->head_too_large = 0;
    s->out_of_memory = 0;
}

/* Let go of the prepared request: the handle is reset first, as it points
 * into the request (URL, header list, body). */
static void release_request(lua_State *L, session *s)
{
    if (s->request == NULL)
        return;
    curl_easy_reset(s->easy); /* keeps live connections and TLS sessions */
    s->request = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, s->request_ref);
    s->request_ref = LUA_NOREF;
}

/* Drop everything an exchange owned; safe to call any number of times. */
static void release_exchange(lua_State *L, session *s)
{
    release_transfer(s);
    release_request(L, s);
}

/* The one close: serves close, __gc and __close; idempotent. */
static void close_session(lua_State *L, session *s)
{
    if (s->easy != NULL)
        release_exchange(L, s);
    if (s->easy != NULL) {
        curl_easy_cleanup(s->easy);
        s->easy = NULL;
    }
    if (s->multi != NULL) {
        curl_multi_cleanup(s->multi);
        s->multi = NULL;
    }
    s->closed = 1;
}

static session *check_session(lua_State *L)
{
    session *s = luaL_checkudata(L, 1, SESSION_MT);
    if (s->closed)
        luaL_error(L, "attempt to use a closed oauth2.core session");
    return s;
}

/* libcurl write callback: collect the body in C, refuse more than max_body. */
static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    session *s = userdata;
    size_t n = size * nmemb;
    if (n > s->max_body || s->body.len > s->max_body - n) {
        s->body_too_large = 1;
        return 0;
    }
    if (oauth2_buffer_append(&s->body, data, n) != 0) {
        s->out_of_memory = 1;
        return 0;
    }
    return n;
}

/*
 * libcurl header callback: count the fields and bytes of each response
 * head (a status line starts a new one: a 1xx or a proxy's head before
 * the final one) and stop the transfer past the bound, as on_body does,
 * so a server cannot make the headers cost time after the transfer.
 */
static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata)
{
    session *s = userdata;
    size_t n = size * nmemb;
    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        s->head_fields = 0;
        s->head_bytes = 0;
    }
    s->head_fields++;
    s->head_bytes += n;
    if (s->head_fields > MAX_HEAD_FIELDS || s->head_bytes > MAX_HEAD_BYTES) {
        s->head_too_large = 1;
        return 0;
    }
    return n;
}

/* ------------------------------------------------------- starting one */

/* The options every exchange gets, whatever the request says. */
static void set_safe_defaults(session *s)
{
    CURL *e = s->easy;
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_VERBOSE, 0L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    /* no configuration of the host's TLS library may go below TLS 1.2 */
    curl_easy_setopt(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    curl_easy_setopt(e, CURLOPT_PROXY_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, s);
}

/* Argument `arg`, a timeout in seconds, as milliseconds; -1 when absent. */
static long arg_millis(lua_State *L, int arg, const char *name)
{
    lua_Number seconds;
    long ms;
    if (lua_isnoneornil(L, arg))
        return -1;
    seconds = luaL_checknumber(L, arg);
    if (!(seconds > 0) || seconds > OAUTH2_MAX_SECONDS)
        luaL_error(L, "%s must be a positive number of seconds, at most %d", name,
                   OAUTH2_MAX_SECONDS);
    ms = (long)(seconds * 1000);
    return ms > 0 ? ms : 1;
}

/*
 * Start sending the request at index 2 (prepared, or a table prepared
 * here), with the timeouts at 3 and 4 in place of its own when given.
 * The handle stays set up for a prepared request until another one is
 * sent: a request never changes once prepared, so sending it again needs
 * only its timeouts.  Returns 0 when the exchange is under way, otherwise
 * the number of values (nil, err) it pushed.
 */
static int start_exchange(lua_State *L, session *s)
{
    long timeout_ms = arg_millis(L, 3, "timeout"), connect_ms = arg_millis(L, 4, "connect_timeout");
    const oauth2_request *r;

    if (s->running)
        luaL_error(L, "oauth2.core session is busy with another exchange");
    if ((r = oauth2_request_at(L, 2)) == NULL)
        return 2;
    release_transfer(s);
    if (r != s->request) {
        release_request(L, s); /* a fresh handle, or one reset */
        set_safe_defaults(s);
        lua_pushvalue(L, 2);
        s->request_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        s->request = r;
        oauth2_request_apply(r, s->easy);
    }
    if (timeout_ms < 0)
        timeout_ms = r->timeout_ms >= 0 ? r->timeout_ms : DEFAULT_TIMEOUT_MS;
    if (connect_ms < 0)
        connect_ms = r->connect_timeout_ms >= 0 ? r->connect_timeout_ms : 0L;
    curl_easy_setopt(s->easy, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(s->easy, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    s->max_body = r->max_body;
    return 0;
}

/* -------------------------------------------------------------- responses */

/* Length of a header value without the CR libcurl 7.88 leaves in an empty one. */
static size_t value_length(const char *value)
{
    size_t len = strlen(value);
    while (len > 0 && (value[len - 1] == '\r' || value[len - 1] == '\n'))
        len--;
    return len;
}

/*
 * Push header `name` of the last response, from its final head (not a 1xx
 * or a proxy's, not trailers), several fields joined with ", "; or push
 * nothing and return 0 when it has none.
 */
static int push_header_value(lua_State *L, CURL *easy, const char *name)
{
    struct curl_header *h;
    size_t index, amount = 1;
    for (index = 0; index < amount; index++) {
        if (curl_easy_header(easy, name, index, CURLH_HEADER, -1, &h) != CURLHE_OK)
            break;
        amount = h->amount;
        lua_pushlstring(L, h->value, value_length(h->value));
        if (index > 0) {
            lua_pushliteral(L, ", ");
            lua_insert(L, -2);
            lua_concat(L, 3);
        }
    }
    return index > 0;
}

/* Push the headers of the last response (its final head) as
 * {lower-case name = value}. */
static void push_headers(lua_State *L, session *s)
{
    CURL *easy = s->easy;
    struct curl_header *h, *prev = NULL;
    char name[128];
    lua_createtable(L, 0, 16); /* sized once: growing rehashes every step */
    while ((h = curl_easy_nextheader(easy, CURLH_HEADER, -1, prev)) != NULL) {
        size_t len = strlen(h->name), value_len = value_length(h->value);
        prev = h;
        if (len > sizeof name)
            continue; /* no header we read has a name this long */
        oauth2_ascii_lower(name, h->name, len);
        lua_pushlstring(L, name, len);
        /* a repeated field becomes one comma-separated value (RFC 9110 5.3) */
        lua_pushvalue(L, -1);
        lua_rawget(L, -3);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushlstring(L, h->value, value_len);
        } else {
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, h->value, value_len);
            lua_concat(L, 3);
        }
        lua_rawset(L, -3);
    }
}

/* Push what a finished transfer produced: the response table, or nil, err. */
static int push_outcome(lua_State *L, session *s, CURLcode result)
{
    long status = 0;
    curl_off_t retry_after = 0;
    long connects = 0;
    double total_time = 0;

    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    if (result != CURLE_OK) {
        char message[CURL_ERROR_SIZE + 128], clean[CURL_ERROR_SIZE + 128];
        const char *kind = oauth2_curl_kind(result);
        if (s->head_too_large) {
            snprintf(message, sizeof message,
                     "response head larger than %d header fields or %d bytes",
                     MAX_HEAD_FIELDS, MAX_HEAD_BYTES);
            kind = "protocol";
        } else if (s->body_too_large || result == CURLE_FILESIZE_EXCEEDED) {
            snprintf(message, sizeof message,
                     "response body larger than the %lu byte limit",
                     (unsigned long)s->max_body);
            kind = "protocol";
        } else if (s->out_of_memory) {
            snprintf(message, sizeof message, "out of memory reading the response");
        } else if (s->errbuf[0] != '\0') {
            snprintf(message, sizeof message, "%s: %s", curl_easy_strerror(result), s->errbuf);
            /* a proxy string libcurl cannot use is a mistake no retry mends */
            if (strncmp(s->errbuf, "Unsupported proxy", 17) == 0)
                kind = "config";
            /* the URL's scheme was checked before: an unsupported protocol
             * now is the server's reply (HTTP/0.9, an odd version or code) */
            else if (result == CURLE_UNSUPPORTED_PROTOCOL
                     && strncmp(s->errbuf, "Protocol ", 9) != 0)
                kind = "protocol";
        } else {
            snprintf(message, sizeof message, "%s", curl_easy_strerror(result));
        }
        oauth2_redact_userinfo(clean, sizeof clean, message);
        oauth2_wipe(message, sizeof message);
        oauth2_push_error(L, kind, clean, (int)result);
        if (status != 0) {
            lua_pushinteger(L, status);
            lua_setfield(L, -2, "status");
        }
        return 2;
    }

    curl_easy_getinfo(s->easy, CURLINFO_RETRY_AFTER, &retry_after);
    curl_easy_getinfo(s->easy, CURLINFO_NUM_CONNECTS, &connects);
    curl_easy_getinfo(s->easy, CURLINFO_TOTAL_TIME, &total_time);

    lua_createtable(L, 0, 5);
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "status");
    lua_pushlstring(L, s->body.data ? s->body.data : "", s->body.len);
    lua_setfield(L, -2, "body");
    if (retry_after > 0) {
        lua_pushnumber(L, (lua_Number)retry_after);
        lua_setfield(L, -2, "retry_after");
    }
    lua_pushinteger(L, connects);
    lua_setfield(L, -2, "connects");
    lua_pushnumber(L, total_time);
    lua_setfield(L, -2, "time");
    return 1;
}

/*
 * Advance the exchange: run libcurl, optionally wait up to wait_ms for
 * activity, run it again.  Returns 0 while it is still in progress,
 * otherwise the number of values pushed (response, or nil, err).
 */
static int step_exchange(lua_State *L, session *s, int wait_ms)
{
    int pass;
    for (pass = 0; pass < 2; pass++) {
        int still_running = 0, queued = 0;
        CURLMsg *msg;
        CURLMcode mc = curl_multi_perform(s->multi, &still_running);
        if (mc != CURLM_OK) {
            release_exchange(L, s);
            return oauth2_push_error(L, "network", curl_multi_strerror(mc), 0);
        }
        while ((msg = curl_multi_info_read(s->multi, &queued)) != NULL) {
            if (msg->msg == CURLMSG_DONE && msg->easy_handle == s->easy) {
                CURLcode result = msg->data.result;
                int n;
                curl_multi_remove_handle(s->multi, s->easy);
                s->running = 0;
                n = push_outcome(L, s, result);
                release_transfer(s); /* wipes the body copy in C */
                return n;
            }
        }
        if (pass == 0 && wait_ms > 0) {
            mc = curl_multi_poll(s->multi, NULL, 0, wait_ms, NULL);
            if (mc != CURLM_OK) {
                release_exchange(L, s);
                return oauth2_push_error(L, "network", curl_multi_strerror(mc), 0);
            }
        } else {
            break;
        }
    }
    return 0;
}

/* ------------------------------------------------------------ Lua methods */

/*
 * Every method that touches libcurl runs through guarded(): Lua may run
 * inside it (a finalizer during an allocation, an error handler), and such
 * code could close the session or start another exchange on it while
 * libcurl pointers are live.  The method runs protected with the session
 * marked in use: re-entrant use is refused with an error, a close is
 * deferred to the end of the call, and the mark is cleared whatever
 * happens, so a raise inside never leaves the session wedged.
 */
static int guarded(lua_State *L, lua_CFunction method)
{
    session *s = check_session(L);
    int top = lua_gettop(L), i, status;
    if (s->in_call)
        return luaL_error(L, "oauth2.core session is in use by a call in progress "
                             "(re-entrant use from a finalizer or metamethod)");
    s->in_call = 1;
    lua_pushcfunction(L, method);
    for (i = 1; i <= top; i++)
        lua_pushvalue(L, i); /* the originals keep the session anchored */
    status = lua_pcall(L, top, LUA_MULTRET, 0);
    s->in_call = 0;
    if (s->close_pending) {
        s->close_pending = 0;
        close_session(L, s);
    }
    if (status != 0)
        return lua_error(L);
    return lua_gettop(L) - top;
}

/* session:start(request [, timeout [, connect_timeout]]) -> true | nil, err
 * (request: prepared by core.prepare, or a table prepared on the way) */
static int start_method(lua_State *L)
{
    session *s = lua_touserdata(L, 1);
    int n = start_exchange(L, s);
    CURLMcode mc;
    if (n != 0) {
        release_exchange(L, s);
        return n;
    }
    /* made on first use: a session that only blocks never needs one */
    if (s->multi == NULL && (s->multi = curl_multi_init()) == NULL)
        return oauth2_push_error(L, "network", "cannot create a libcurl multi handle", 0);
    mc = curl_multi_add_handle(s->multi, s->easy);
    if (mc != CURLM_OK)
        return oauth2_push_error(L, "network", curl_multi_strerror(mc), 0);
    s->running = 1;
    lua_pushboolean(L, 1);
    return 1;
}

/* session:step([wait_seconds]) -> false (in progress) | response | nil, err */
static int step_method(lua_State *L)
{
    session *s = lua_touserdata(L, 1);
    lua_Number wait = luaL_optnumber(L, 2, 0);
    int wait_ms, n;
    if (!s->running)
        return luaL_error(L, "no exchange in progress: call start first");
    if (!(wait >= 0))
        wait = 0;
    wait_ms = wait > 60 ? 60000 : (int)(wait * 1000);
    n = step_exchange(L, s, wait_ms);
    if (n == 0) {
        lua_pushboolean(L, 0);
        return 1;
    }
    return n;
}

/* session:request(request [, timeout [, connect_timeout]]) -> response |
 * nil, err; waits until done. */
static int request_method(lua_State *L)
{
    session *s = lua_touserdata(L, 1);
    int n = start_exchange(L, s);
    CURLcode result;
    if (n != 0) {
        release_exchange(L, s);
        return n;
    }
    /* libcurl's own blocking loop, on the small multi handle it keeps in
     * the easy one: the same transfer as start and step make, without a
     * full multi handle (hash tables of hundreds of slots) per session */
    result = curl_easy_perform(s->easy);
    n = push_outcome(L, s, result);
    release_transfer(s); /* wipes the body copy in C */
    return n;
}

/*
 * session:header(name) -> value | nil: the header `name` of the last
 * response (from its final head, several fields joined with ", "), looked
 * up in libcurl's store only when asked, so a caller that reads headers of
 * some responses pays nothing for the others.  It holds until the next
 * exchange starts; while one runs, there is no last response.
 */
static int header_method(lua_State *L)
{
    session *s = lua_touserdata(L, 1);
    const char *name = luaL_checkstring(L, 2);
    if (s->running || !push_header_value(L, s->easy, name))
        lua_pushnil(L);
    return 1;
}

/* session:headers() -> {lower-case name = value}: every header of the last
 * response (its final head), or nil while an exchange runs or before one. */
static int headers_method(lua_State *L)
{
    session *s = lua_touserdata(L, 1);
    if (s->running || s->request == NULL) {
        lua_pushnil(L);
        return 1;
    }
    push_headers(L, s);
    return 1;
}

/* session:cancel(): abandon the exchange in progress, if any. */
static int cancel_method(lua_State *L)
{
    session *s = lua_touserdata(L, 1);
    release_exchange(L, s);
    return 0;
}

static int l_start(lua_State *L) { return guarded(L, start_method); }
static int l_step(lua_State *L) { return guarded(L, step_method); }
static int l_request(lua_State *L) { return guarded(L, request_method); }
static int l_header(lua_State *L) { return guarded(L, header_method); }
static int l_headers(lua_State *L) { return guarded(L, headers_method); }
static int l_cancel(lua_State *L) { return guarded(L, cancel_method); }

/* session:busy() -> whether an exchange is in progress */
static int l_busy(lua_State *L)
{
    session *s = check_session(L);
    lua_pushboolean(L, s->running);
    return 1;
}

/* close, __gc and __close; during a call of the session, at its end. */
static int l_close(lua_State *L)
{
    session *s = luaL_checkudata(L, 1, SESSION_MT);
    if (s->in_call)
        s->close_pending = 1;
    else
        close_session(L, s);
    return 0;
}

static int l_tostring(lua_State *L)
{
    session *s = luaL_checkudata(L, 1, SESSION_MT);
    lua_pushfstring(L, "oauth2.core.session (%s)",
                    s->closed ? "closed" : s->running ? "busy" : "idle");
    return 1;
}

/* core.session() -> a new session */
static int l_session(lua_State *L)
{
    session *s = lua_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    s->request_ref = LUA_NOREF;
    luaL_getmetatable(L, SESSION_MT);
    lua_setmetatable(L, -2);
    /* the object is consistent from here on: __gc copes with a half-made one */
    s->easy = curl_easy_init();
    if (s->easy == NULL) {
        close_session(L, s);
        return luaL_error(L, "cannot create a libcurl handle (out of memory?)");
    }
    return 1;
}

static const luaL_Reg session_methods[] = {
    {"start", l_start},
    {"step", l_step},
    {"request", l_request},
    {"cancel", l_cancel},
    {"busy", l_busy},
    {"header", l_header},
    {"headers", l_headers},
    {"close", l_close},
    {NULL, NULL},
};

static const luaL_Reg session_meta[] = {
    {"__gc", l_close},
    {"__close", l_close},
    {"__tostring", l_tostring},
    {NULL, NULL},
};

static const luaL_Reg functions[] = {
    {"session", l_session},
    {NULL, NULL},
};

#if defined(__GNUC__)
__attribute__((visibility("default")))
#endif
int luaopen_oauth2_core(lua_State *L)
{
    /* reference-counted by libcurl: safe to call once per Lua state */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return luaL_error(L, "curl_global_init failed");

    if (luaL_newmetatable(L, SESSION_MT)) {
        oauth2_setfuncs(L, session_meta);
        oauth2_newlib(L, session_methods);
        lua_setfield(L, -2, "__index");
        lua_pushliteral(L, SESSION_MT);
        lua_setfield(L, -2, "__name");
    }
    lua_pop(L, 1);
    oauth2_errors_open(L);
    oauth2_box_open(L);

    oauth2_newlib(L, functions);
    oauth2_request_open(L);
    oauth2_clock_open(L);
    oauth2_crypto_open(L);
    oauth2_files_open(L);
    lua_pushliteral(L, OAUTH2_CORE_VERSION);
    lua_setfield(L, -2, "_VERSION");
    lua_pushstring(L, curl_version());
    lua_setfield(L, -2, "curl_version");
    return 1;
}
