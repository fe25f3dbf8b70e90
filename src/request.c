/*
 * request.c - core.prepare and the request set-up (see request.h), with
 * the encoding helpers Lua calls directly: core.escape, core.parse_url and
 * core.is_b64token.
 *
 * The request table is read raw (a metamethod on it never runs inside the
 * core), once.  Misuse (a field of the wrong type) raises; a value libcurl
 * could not send or that would smuggle something into the message is a
 * config error naming the field, never its value, which may be secret.
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "errors.h"
#include "request.h"
#include "text.h"

#define DEFAULT_MAX_BODY (1024 * 1024)
/* libcurl sends "Expect: 100-continue" only for bodies this large or larger */
#define EXPECT_MIN_BODY 1024

#if LIBCURL_VERSION_NUM < 0x075500
#error "libcurl 7.85.0 or newer is required (CURLOPT_PROTOCOLS_STR, curl_easy_header)"
#endif

static const struct {
    const char *name;
    CURLoption option;
} string_options[N_STRINGS] = {
    [CA_FILE] = {"ca_file", CURLOPT_CAINFO},  [CA_PATH] = {"ca_path", CURLOPT_CAPATH},
    [CERT] = {"cert", CURLOPT_SSLCERT},       [KEY] = {"key", CURLOPT_SSLKEY},
    [PROXY] = {"proxy", CURLOPT_PROXY},       [USERNAME] = {"username", CURLOPT_USERNAME},
    [PASSWORD] = {"password", CURLOPT_PASSWORD},
};

/* ------------------------------------------------------- the userdata */

/* Wipe and free every string of a curl_slist (header values hold secrets). */
static void slist_free_wiped(struct curl_slist *list)
{
    struct curl_slist *node;
    for (node = list; node != NULL; node = node->next)
        if (node->data != NULL)
            oauth2_wipe(node->data, strlen(node->data));
    curl_slist_free_all(list);
}

/* Free what the request holds, wiped; idempotent (also __gc). */
static void request_free(oauth2_request *r)
{
    int i;
    if (r->url != NULL) {
        curl_url_cleanup(r->url);
        r->url = NULL;
    }
    slist_free_wiped(r->headers);
    r->headers = NULL;
    oauth2_buffer_free(&r->body);
    oauth2_buffer_free(&r->line);
    for (i = 0; i < N_STRINGS; i++) {
        if (r->strings[i] != NULL) {
            oauth2_wipe(r->strings[i], strlen(r->strings[i]));
            free(r->strings[i]);
            r->strings[i] = NULL;
        }
    }
}

static int l_request_gc(lua_State *L)
{
    request_free(luaL_checkudata(L, 1, OAUTH2_REQUEST_MT));
    return 0;
}

static int l_request_tostring(lua_State *L)
{
    luaL_checkudata(L, 1, OAUTH2_REQUEST_MT);
    lua_pushliteral(L, "oauth2.core.request");
    return 1;
}

oauth2_request *oauth2_check_request(lua_State *L, int index)
{
    return luaL_checkudata(L, index, OAUTH2_REQUEST_MT);
}

/* -------------------------------------------------- reading the table */

/* Push field `name` of the request table at index 1, read raw. */
static void get_field(lua_State *L, const char *name)
{
    lua_pushstring(L, name);
    lua_rawget(L, 1);
}

/* Field `name` of the request table as a string, or NULL if nil. */
static const char *opt_string(lua_State *L, const char *name, size_t *len)
{
    const char *value = NULL;
    get_field(L, name);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "request.%s must be a string", name);
        value = lua_tolstring(L, -1, len);
    }
    lua_pop(L, 1); /* still anchored by the request table */
    return value;
}

/* A duration in (fractional) seconds as whole milliseconds, -1 if nil. */
static long opt_millis(lua_State *L, const char *name)
{
    lua_Number seconds;
    long ms;
    get_field(L, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return -1;
    }
    if (lua_type(L, -1) != LUA_TNUMBER)
        luaL_error(L, "request.%s must be a number of seconds", name);
    seconds = lua_tonumber(L, -1);
    lua_pop(L, 1);
    /* 0 means "no limit" to libcurl: a timeout is always a positive bound,
     * and the library's one upper bound keeps the milliseconds in range */
    if (!(seconds > 0) || seconds > OAUTH2_MAX_SECONDS)
        luaL_error(L, "request.%s must be a positive number of seconds, at most %d", name,
                   OAUTH2_MAX_SECONDS);
    ms = (long)(seconds * 1000);
    return ms > 0 ? ms : 1;
}

/* Append "name: value" (or libcurl's "name;" for an empty value). */
static const char *append_header(oauth2_request *r, const char *name, size_t name_len,
                                 const char *value, size_t value_len)
{
    struct curl_slist *list;
    r->line.len = 0;
    if (oauth2_buffer_append(&r->line, name, name_len) != 0 ||
        oauth2_buffer_append(&r->line, value_len ? ": " : ";", value_len ? 2 : 1) != 0 ||
        oauth2_buffer_append(&r->line, value, value_len) != 0)
        return "out of memory";
    list = curl_slist_append(r->headers, r->line.data);
    oauth2_wipe(r->line.data, r->line.len);
    if (list == NULL)
        return "out of memory";
    r->headers = list;
    return NULL;
}

/*
 * Headers that decide where a message ends or which host it is for: a
 * caller who sets them could split one request into two (smuggling).
 */
static int is_framing_header(const char *name, size_t len)
{
    return oauth2_is_header_name(name, len, "content-length") ||
           oauth2_is_header_name(name, len, "transfer-encoding") ||
           oauth2_is_header_name(name, len, "host");
}

/*
 * The header list from request.headers and request.user_agent; after the
 * body.  It holds only what differs from libcurl's own defaults (a form
 * body already goes out as application/x-www-form-urlencoded).
 */
static const char *build_headers(lua_State *L, oauth2_request *r, char *message, size_t size)
{
    const char *problem, *agent;
    size_t agent_len = 0;
    int has_agent = 0;
    get_field(L, "headers");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
    } else {
        if (lua_type(L, -1) != LUA_TTABLE)
            luaL_error(L, "request.headers must be a table");
        lua_pushnil(L);
        while (lua_next(L, -2) != 0) {
            size_t name_len, value_len;
            const char *name, *value;
            if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "request.headers must map names to strings");
            name = lua_tolstring(L, -2, &name_len);
            value = lua_tolstring(L, -1, &value_len);
            if (!oauth2_is_token(name, name_len))
                problem = "a request header name is not a valid HTTP token";
            else if (is_framing_header(name, name_len))
                problem = "header '%.60s' frames the message: libcurl sets it";
            else if (!oauth2_is_safe_value(value, value_len))
                problem = "header '%.60s' contains CR, LF or NUL";
            else
                problem = append_header(r, name, name_len, value, value_len);
            if (problem != NULL) {
                snprintf(message, size, problem, name);
                lua_pop(L, 3);
                return message;
            }
            has_agent = has_agent || oauth2_is_header_name(name, name_len, "user-agent");
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    /* request.user_agent joins the list; a User-Agent in request.headers wins */
    agent = opt_string(L, "user_agent", &agent_len);
    if (agent != NULL && !has_agent) {
        if (!oauth2_is_safe_value(agent, agent_len))
            return "request.user_agent contains CR, LF or NUL";
        if ((problem = append_header(r, "User-Agent", 10, agent, agent_len)) != NULL)
            return problem;
    }
    /*
     * Never wait for "100 Continue": the token request is small.  libcurl
     * asks for it only for bodies of 1 KiB or more (1 MiB in newer
     * releases), so smaller ones need no line to say so.
     */
    if (r->body.len >= EXPECT_MIN_BODY) {
        struct curl_slist *list = curl_slist_append(r->headers, "Expect:");
        if (list == NULL)
            return "out of memory";
        r->headers = list;
    }
    return NULL;
}

/*
 * Append one escaped form value; the escaped copy is wiped and freed here.
 * Names and values with nothing to escape (grant_type, client_credentials)
 * skip libcurl's allocation: the result would be the same bytes.
 */
static int append_escaped(oauth2_buffer *b, const char *p, size_t n)
{
    char *escaped;
    int rc;
    if (oauth2_is_unreserved(p, n))
        return oauth2_buffer_append(b, p, n);
    if (n > INT_MAX)
        return -1;
    escaped = curl_easy_escape(NULL, p, (int)n);
    if (escaped == NULL)
        return -1;
    rc = oauth2_buffer_append(b, escaped, strlen(escaped));
    oauth2_wipe(escaped, strlen(escaped));
    curl_free(escaped);
    return rc;
}

/* request.form as application/x-www-form-urlencoded, or request.body as
 * it is: one or the other. */
static const char *build_body(lua_State *L, oauth2_request *r)
{
    size_t len = 0;
    const char *body;
    get_field(L, "form");
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TTABLE)
            luaL_error(L, "request.form must be a table");
        if (oauth2_buffer_append(&r->body, "", 0) != 0) { /* a POST even when empty */
            lua_pop(L, 1);
            return "out of memory";
        }
        lua_pushnil(L);
        while (lua_next(L, -2) != 0) {
            size_t name_len, value_len;
            const char *name, *value;
            if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "request.form must map names to strings");
            name = lua_tolstring(L, -2, &name_len);
            value = lua_tolstring(L, -1, &value_len);
            if ((r->body.len > 0 && oauth2_buffer_append(&r->body, "&", 1) != 0) ||
                append_escaped(&r->body, name, name_len) != 0 ||
                oauth2_buffer_append(&r->body, "=", 1) != 0 ||
                append_escaped(&r->body, value, value_len) != 0) {
                lua_pop(L, 3);
                return "out of memory";
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    body = opt_string(L, "body", &len);
    if (body == NULL)
        return NULL;
    if (r->body.data != NULL)
        return "request.body and request.form exclude each other";
    if (oauth2_buffer_append(&r->body, body, len) != 0)
        return "out of memory";
    return NULL;
}

/*
 * request.method: GET without a body and POST with one unless given.
 * HEAD asks for no body; any other method is sent as named, with the body
 * if there is one (POST, PUT and PATCH send an empty one otherwise).
 */
static const char *read_method(lua_State *L, oauth2_request *r)
{
    size_t len = 0;
    const char *method = opt_string(L, "method", &len);
    if (method == NULL)
        return NULL;
    if (len == 0 || len >= sizeof r->method || !oauth2_is_token(method, len))
        return "request.method must be an HTTP method (a token of at most 16 characters)";
    if (strcmp(method, "HEAD") == 0) {
        if (r->body.data != NULL)
            return "a HEAD request has no body";
        r->nobody = 1;
        return NULL;
    }
    if (r->body.data == NULL &&
        (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0)) {
        if (oauth2_buffer_append(&r->body, "", 0) != 0)
            return "out of memory";
    }
    if (strcmp(method, "GET") == 0 && r->body.data == NULL)
        return NULL;
    if (strcmp(method, "POST") == 0 && r->body.data != NULL)
        return NULL;
    memcpy(r->method, method, len + 1);
    return NULL;
}

/*
 * request.url, parsed here once into a CURLU handle the way libcurl would
 * parse CURLOPT_URL itself.  Given CURLOPT_URL, libcurl parses the URL and
 * writes it out again on every transfer; given the handle, it copies it.
 */
static const char *read_url(lua_State *L, oauth2_request *r, char *message, size_t size)
{
    size_t len = 0;
    const char *url = opt_string(L, "url", &len);
    CURLUcode uc;
    if (url == NULL)
        luaL_error(L, "request.url is required");
    if (strlen(url) != len)
        return "request.url contains a NUL byte";
    r->url = curl_url();
    if (r->url == NULL)
        return "out of memory";
    /* no scheme guessing: "host/path" is refused, never sent as http:// */
    uc = curl_url_set(r->url, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
    if (uc != CURLUE_OK) {
        snprintf(message, size, "request.url is not a valid URL (%s)", curl_url_strerror(uc));
        return message;
    }
    return NULL;
}

/* Whether any of the environment variables named is set, even to "". */
static int env_has_any(const char *const *names, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (getenv(names[i]) != NULL)
            return 1;
    return 0;
}

/*
 * The proxy variables of the environment, read once per request prepared
 * rather than by libcurl on every transfer: when they are unset, no proxy
 * unless the request names one, and no host exempt from it.  The outcome
 * is libcurl's own; a change to the environment made after the request was
 * prepared goes unseen.  request.no_proxy rules out every proxy.
 */
static void read_proxy(lua_State *L, oauth2_request *r)
{
    static const char *const no_proxy[] = {"no_proxy", "NO_PROXY"};
    /* what libcurl reads for http and https (not HTTP_PROXY, on purpose) */
    static const char *const proxy[] = {"http_proxy", "https_proxy", "HTTPS_PROXY",
                                        "all_proxy", "ALL_PROXY"};
    get_field(L, "no_proxy");
    r->proxy_empty = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (r->proxy_empty || env_has_any(no_proxy, 2))
        return;
    r->noproxy_empty = 1;
    r->proxy_empty = r->strings[PROXY] == NULL && !env_has_any(proxy, 5);
}

/* Where and how to connect: TLS files, proxy, credentials, timeouts,
 * verification, the body cap. */
static const char *read_transport(lua_State *L, oauth2_request *r, char *message, size_t size)
{
    int i;
    for (i = 0; i < N_STRINGS; i++) {
        size_t len = 0;
        const char *value = opt_string(L, string_options[i].name, &len);
        if (value == NULL)
            continue;
        if (strlen(value) != len) {
            snprintf(message, size, "request.%s contains a NUL byte", string_options[i].name);
            return message;
        }
        if ((r->strings[i] = malloc(len + 1)) == NULL)
            return "out of memory";
        memcpy(r->strings[i], value, len + 1);
    }
    read_proxy(L, r);
    r->timeout_ms = opt_millis(L, "timeout");
    r->connect_timeout_ms = opt_millis(L, "connect_timeout");

    get_field(L, "verify");
    if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
        luaL_error(L, "request.verify must be a boolean");
    r->no_verify = lua_isboolean(L, -1) && !lua_toboolean(L, -1);
    lua_pop(L, 1);

    get_field(L, "max_body");
    if (lua_isnil(L, -1)) {
        r->max_body = DEFAULT_MAX_BODY;
    } else {
        lua_Number n = lua_tonumber(L, -1);
        if (lua_type(L, -1) != LUA_TNUMBER || !(n >= 1) || n > (lua_Number)(SIZE_MAX / 2))
            luaL_error(L, "request.max_body must be a positive number of bytes");
        r->max_body = (size_t)n;
    }
    lua_pop(L, 1);
    return NULL;
}

/* The whole set-up from the table at index 1: NULL, or what is wrong. */
static const char *build(lua_State *L, oauth2_request *r, char *message, size_t size)
{
    const char *problem;
    if ((problem = read_url(L, r, message, size)) != NULL ||
        (problem = read_transport(L, r, message, size)) != NULL ||
        (problem = build_body(L, r)) != NULL || (problem = read_method(L, r)) != NULL ||
        (problem = build_headers(L, r, message, size)) != NULL)
        return problem;
    oauth2_buffer_free(&r->line);
    return NULL;
}

/* Prepare the table at index 1 into a new userdata pushed on top: 1, or
 * nil and the error (2). */
static int prepare(lua_State *L)
{
    char message[128];
    const char *problem;
    oauth2_request *r = lua_newuserdata(L, sizeof *r);
    memset(r, 0, sizeof *r);
    luaL_getmetatable(L, OAUTH2_REQUEST_MT);
    lua_setmetatable(L, -2);
    /* a raise from here on leaves r to __gc, which frees what it holds */
    if ((problem = build(L, r, message, sizeof message)) != NULL) {
        request_free(r);
        return oauth2_push_error(L, "config", problem, 0);
    }
    return 1;
}

oauth2_request *oauth2_request_at(lua_State *L, int index)
{
    oauth2_request *r = oauth2_testudata(L, index, OAUTH2_REQUEST_MT);
    if (r != NULL)
        return r;
    luaL_checktype(L, index, LUA_TTABLE);
    lua_pushcfunction(L, prepare);
    lua_pushvalue(L, index);
    lua_call(L, 1, 2);
    if (lua_isnil(L, -2))
        return NULL; /* nil, err on top */
    lua_pop(L, 1);
    lua_replace(L, index);
    return lua_touserdata(L, index);
}

void oauth2_request_apply(const oauth2_request *r, CURL *easy)
{
    int i;
    curl_easy_setopt(easy, CURLOPT_CURLU, r->url);
    for (i = 0; i < N_STRINGS; i++)
        if (r->strings[i] != NULL)
            curl_easy_setopt(easy, string_options[i].option, r->strings[i]);
    if (r->strings[USERNAME] != NULL || r->strings[PASSWORD] != NULL)
        curl_easy_setopt(easy, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    if (r->noproxy_empty)
        curl_easy_setopt(easy, CURLOPT_NOPROXY, "");
    if (r->proxy_empty)
        curl_easy_setopt(easy, CURLOPT_PROXY, "");
    if (r->no_verify) {
        curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)r->max_body);
    if (r->body.data != NULL) {
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body.len);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, r->body.data);
    }
    if (r->nobody)
        curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
    if (r->method[0] != '\0')
        curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, r->method);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, r->headers);
}

/* ------------------------------------------------------------ helpers */

/* core.prepare(request) -> a prepared request | nil, err */
static int l_prepare(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    return prepare(L);
}

/* core.escape(s) -> s form-urlencoded by libcurl (unreserved bytes kept) */
static int l_escape(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    /* the escaped secret lives in a box while Lua runs (out of memory) */
    oauth2_buffer *box = oauth2_box(L);
    if (append_escaped(box, text, len) != 0)
        return luaL_error(L, "out of memory");
    lua_pushlstring(L, box->data != NULL ? box->data : "", box->len);
    oauth2_buffer_free(box);
    return 1;
}

/* core.is_b64token(s, max_len) -> whether s is an RFC 6750 b64token of at
 * most max_len bytes. */
static int l_is_b64token(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    lua_Integer max_len = luaL_checkinteger(L, 2);
    lua_pushboolean(L, oauth2_is_b64token(text, len) && (lua_Integer)len <= max_len);
    return 1;
}

/*
 * core.parse_url(url) -> {scheme, host, port, path, query, userinfo} | nil, msg
 * libcurl's own parser, so what we check is what libcurl will connect to.
 * The parts are copied into a box before any Lua call, so an
 * out-of-memory error cannot leak libcurl's handle (or a password in it).
 */
static int l_parse_url(lua_State *L)
{
    static const struct {
        CURLUPart part;
        const char *field;
        unsigned int flags;
    } parts[] = {
        {CURLUPART_SCHEME, "scheme", 0}, {CURLUPART_HOST, "host", 0},
        {CURLUPART_PORT, "port", CURLU_DEFAULT_PORT}, {CURLUPART_PATH, "path", 0},
        {CURLUPART_QUERY, "query", 0},
    };
    size_t len, i, offset[sizeof parts / sizeof parts[0]];
    const char *text = luaL_checklstring(L, 1, &len);
    oauth2_buffer *box;
    CURLU *url;
    CURLUcode rc;
    char *user = NULL, *password = NULL;
    int has_userinfo, failed = 0;
    if (strlen(text) != len) {
        lua_pushnil(L);
        lua_pushliteral(L, "URL contains a NUL byte");
        return 2;
    }
    box = oauth2_box(L);
    url = curl_url();
    if (url == NULL)
        return luaL_error(L, "out of memory");
    rc = curl_url_set(url, CURLUPART_URL, text, CURLU_NON_SUPPORT_SCHEME);
    if (rc != CURLUE_OK) {
        curl_url_cleanup(url);
        lua_pushnil(L);
        lua_pushstring(L, curl_url_strerror(rc));
        return 2;
    }
    /* only whether credentials are embedded, never what they are */
    curl_url_get(url, CURLUPART_USER, &user, 0);
    curl_url_get(url, CURLUPART_PASSWORD, &password, 0);
    has_userinfo = user != NULL || password != NULL;
    curl_free(user);
    curl_free(password);
    for (i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        char *value = NULL;
        offset[i] = (size_t)-1;
        if (curl_url_get(url, parts[i].part, &value, parts[i].flags) == CURLUE_OK &&
            value != NULL) {
            offset[i] = box->len;
            failed = failed || oauth2_buffer_append(box, value, strlen(value) + 1) != 0;
        }
        curl_free(value);
    }
    curl_url_cleanup(url);
    if (failed)
        return luaL_error(L, "out of memory");
    lua_createtable(L, 0, 6);
    lua_pushboolean(L, has_userinfo);
    lua_setfield(L, -2, "userinfo");
    for (i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        if (offset[i] != (size_t)-1) {
            lua_pushstring(L, box->data + offset[i]);
            lua_setfield(L, -2, parts[i].field);
        }
    }
    oauth2_buffer_free(box);
    return 1;
}

static const luaL_Reg functions[] = {
    {"prepare", l_prepare},
    {"escape", l_escape},
    {"parse_url", l_parse_url},
    {"is_b64token", l_is_b64token},
    {NULL, NULL},
};

void oauth2_request_open(lua_State *L)
{
    if (luaL_newmetatable(L, OAUTH2_REQUEST_MT)) {
        lua_pushcfunction(L, l_request_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_request_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushliteral(L, OAUTH2_REQUEST_MT);
        lua_setfield(L, -2, "__name");
        /* the userdata is opaque: no fields to read or write */
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    oauth2_setfuncs(L, functions);
}
