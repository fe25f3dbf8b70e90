/*
 * core.c - oauth2.core: one HTTP exchange over libcurl, results as Lua tables.
 *
 * This is the mechanism half of the library (the policy lives in Lua).  A
 * session owns one easy handle inside its own multi handle, so consecutive
 * exchanges reuse the keep-alive connection and the TLS session, and every
 * exchange can be driven step by step (start, then step until done) without
 * blocking; the blocking `request` is the same path waiting on the multi
 * handle.  Network and HTTP outcomes are returned as data (`nil, err`), only
 * misuse raises.
 *
 * Ownership rule: every C resource of an exchange (easy handle, header list,
 * form body, response body, error text) hangs off the session userdata, so a
 * Lua error (which longjmps) can never leak it; `__gc` frees what is left.
 * No Lua API call happens inside a libcurl callback.
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
#include "files.h"

#define SESSION_MT "oauth2.core.session"
#define ERROR_MT "oauth2.core.error"

#define DEFAULT_MAX_BODY (1024 * 1024)
#define DEFAULT_TIMEOUT_MS 30000L
/* Longest single wait of the blocking path; libcurl wakes earlier on activity. */
#define BLOCKING_POLL_MS 1000
/* libcurl sends "Expect: 100-continue" only for bodies this large or larger */
#define EXPECT_MIN_BODY 1024
/* The most a response head may hold (the status line counts as a field):
 * real ones have a few dozen fields and a few KiB. */
#define MAX_HEAD_FIELDS 200
#define MAX_HEAD_BYTES (64 * 1024)
/* request.response_headers: how many names, and how long each may be. */
#define MAX_WANTED 8
#define MAX_WANTED_LEN 64

#if LIBCURL_VERSION_NUM < 0x075500
#error "libcurl 7.85.0 or newer is required (CURLOPT_PROTOCOLS_STR, curl_easy_header)"
#endif

typedef struct {
    CURL *easy;
    CURLM *multi;
    CURLU *url;                 /* request URL, parsed once for every exchange */
    struct curl_slist *headers; /* request headers: may carry a bearer token */
    oauth2_buffer form;                /* request body: carries the client secret */
    oauth2_buffer body;                /* response body: carries the access token */
    oauth2_buffer line;                /* scratch for one "Name: value" header line */
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
    int reuse_ref; /* registry ref to a request kept prepared, or LUA_NOREF */
    int wanted_count; /* response headers asked for by name; -1: all of them */
    char wanted[MAX_WANTED][MAX_WANTED_LEN];
    char errbuf[CURL_ERROR_SIZE];
} session;

/* ---------------------------------------------------------------- session */

/* Wipe and free every string of a curl_slist (header values hold secrets). */
static void slist_free_wiped(struct curl_slist *list)
{
    struct curl_slist *node;
    for (node = list; node != NULL; node = node->next)
        if (node->data != NULL)
            oauth2_wipe(node->data, strlen(node->data));
    curl_slist_free_all(list);
}

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

/* Drop the request set up on the handle: header list and form, wiped. */
static void release_request(lua_State *L, session *s)
{
    if (s->url != NULL) {
        /* libcurl holds on to it until told otherwise */
        curl_easy_setopt(s->easy, CURLOPT_CURLU, NULL);
        curl_url_cleanup(s->url);
        s->url = NULL;
    }
    if (s->headers != NULL) {
        slist_free_wiped(s->headers);
        s->headers = NULL;
    }
    oauth2_buffer_free(&s->form);
    oauth2_buffer_free(&s->line);
    s->wanted_count = -1;
    if (s->reuse_ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, s->reuse_ref);
        s->reuse_ref = LUA_NOREF;
    }
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

/* ----------------------------------------------------------------- errors */

/*
 * Push nil and the error table {kind=, message=, curl_code=}; it prints as
 * "oauth2.core: <kind> error: <message>".
 */
static int push_error(lua_State *L, const char *kind, const char *message, int curl_code)
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
static const char *curl_kind(CURLcode code)
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

/* --------------------------------------------------------- request set-up */

/*
 * Push field `name` of the request table at index 2, read raw: a metamethod
 * on the request table never runs inside the core.
 */
static void get_field(lua_State *L, const char *name)
{
    lua_pushstring(L, name);
    lua_rawget(L, 2);
}

/* Field `name` of the request table at index 2 as a string, or NULL if nil. */
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

/* A string option that libcurl takes as a C string: refuse embedded NULs. */
static int set_string(lua_State *L, session *s, const char *name, CURLoption option)
{
    size_t len = 0;
    const char *value = opt_string(L, name, &len);
    if (value == NULL)
        return 0;
    if (strlen(value) != len)
        return -1;
    return curl_easy_setopt(s->easy, option, value) == CURLE_OK ? 0 : -2;
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

/* ASCII letters and digits, whatever locale the host program has set. */
static int is_ascii_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Copy n bytes lower-casing ASCII letters only: no locale may change a name. */
static void ascii_lower(char *dst, const char *src, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        char c = src[i];
        dst[i] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
    }
}

/* RFC 7230 token characters: what a header name may consist of. */
static int is_token(const char *p, size_t n)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    size_t i;
    if (n == 0)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!is_ascii_alnum(c) && (c == '\0' || strchr(extra, c) == NULL))
            return 0;
    }
    return 1;
}

/* A header value must not smuggle in another header or end the head early. */
static int is_safe_value(const char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (p[i] == '\r' || p[i] == '\n' || p[i] == '\0')
            return 0;
    return 1;
}

/* Append "name: value" (or libcurl's "name;" for an empty value) to s->headers. */
static const char *append_header(session *s, const char *name, size_t name_len,
                                 const char *value, size_t value_len)
{
    struct curl_slist *list;
    s->line.len = 0;
    if (oauth2_buffer_append(&s->line, name, name_len) != 0 ||
        oauth2_buffer_append(&s->line, value_len ? ": " : ";", value_len ? 2 : 1) != 0 ||
        oauth2_buffer_append(&s->line, value, value_len) != 0)
        return "out of memory";
    list = curl_slist_append(s->headers, s->line.data);
    oauth2_wipe(s->line.data, s->line.len);
    if (list == NULL)
        return "out of memory";
    s->headers = list;
    return NULL;
}

/* Whether a header name is `lower` (given in lower case), ignoring ASCII case. */
static int is_header_name(const char *name, size_t len, const char *lower)
{
    size_t i;
    for (i = 0; i < len; i++) {
        char c = name[i];
        if ((c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c) != lower[i])
            return 0;
    }
    return lower[len] == '\0';
}

/*
 * Headers that decide where a message ends or which host it is for: a
 * caller who sets them could split one request into two (smuggling).
 */
static int is_framing_header(const char *name, size_t len)
{
    return is_header_name(name, len, "content-length") ||
           is_header_name(name, len, "transfer-encoding") || is_header_name(name, len, "host");
}

/*
 * Build the header list from request.headers and request.user_agent; call
 * it after build_form.  Returns NULL on success or a message naming the
 * problem (never the value, which may be secret), either a literal or
 * written into message[size].
 * The list holds only what differs from libcurl's own defaults (a form
 * body already goes out as application/x-www-form-urlencoded).
 */
static const char *build_headers(lua_State *L, session *s, char *message, size_t size)
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
            if (!is_token(name, name_len)) {
                lua_pop(L, 3);
                return "a request header name is not a valid HTTP token";
            }
            if (is_framing_header(name, name_len)) {
                snprintf(message, size, "header '%.60s' frames the message: libcurl sets it", name);
                lua_pop(L, 3);
                return message;
            }
            if (!is_safe_value(value, value_len)) {
                snprintf(message, size, "header '%.60s' contains CR, LF or NUL", name);
                lua_pop(L, 3);
                return message;
            }
            if ((problem = append_header(s, name, name_len, value, value_len)) != NULL) {
                lua_pop(L, 3);
                return problem;
            }
            has_agent = has_agent || is_header_name(name, name_len, "user-agent");
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    /* request.user_agent joins the list; a User-Agent in request.headers wins */
    agent = opt_string(L, "user_agent", &agent_len);
    if (agent != NULL && !has_agent) {
        if (!is_safe_value(agent, agent_len))
            return "request.user_agent contains CR, LF or NUL";
        if ((problem = append_header(s, "User-Agent", 10, agent, agent_len)) != NULL)
            return problem;
    }
    /*
     * Never wait for "100 Continue": the token request is small.  libcurl
     * asks for it only for bodies of 1 KiB or more (1 MiB in newer
     * releases), so smaller ones need no line to say so.
     */
    if (s->form.len >= EXPECT_MIN_BODY) {
        struct curl_slist *list = curl_slist_append(s->headers, "Expect:");
        if (list == NULL)
            return "out of memory";
        s->headers = list;
    }
    return NULL;
}

/* RFC 3986 unreserved: what form encoding leaves as it is. */
static int is_unreserved(const char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!is_ascii_alnum(c) && c != '-' && c != '.' && c != '_' && c != '~')
            return 0;
    }
    return 1;
}

/*
 * Append one escaped form value; the escaped copy is wiped and freed here.
 * Names and values with nothing to escape (grant_type, client_credentials)
 * skip libcurl's allocation: the result would be the same bytes.
 */
static int append_escaped(session *s, const char *p, size_t n)
{
    char *escaped;
    int rc;
    if (is_unreserved(p, n))
        return oauth2_buffer_append(&s->form, p, n);
    if (n > INT_MAX)
        return -1;
    escaped = curl_easy_escape(s->easy, p, (int)n);
    if (escaped == NULL)
        return -1;
    rc = oauth2_buffer_append(&s->form, escaped, strlen(escaped));
    oauth2_wipe(escaped, strlen(escaped));
    curl_free(escaped);
    return rc;
}

/* Encode request.form as application/x-www-form-urlencoded into s->form. */
static const char *build_form(lua_State *L, session *s)
{
    get_field(L, "form");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    if (lua_type(L, -1) != LUA_TTABLE)
        luaL_error(L, "request.form must be a table");
    if (oauth2_buffer_append(&s->form, "", 0) != 0) { /* a POST even when empty */
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
        if ((s->form.len > 0 && oauth2_buffer_append(&s->form, "&", 1) != 0) ||
            append_escaped(s, name, name_len) != 0 ||
            oauth2_buffer_append(&s->form, "=", 1) != 0 ||
            append_escaped(s, value, value_len) != 0) {
            lua_pop(L, 3);
            return "out of memory";
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return NULL;
}

/*
 * request.response_headers: a list of header names to return (lower-cased
 * here), for callers that read only a few; absent, every header returns.
 */
static const char *read_wanted(lua_State *L, session *s)
{
    int i, n;
    s->wanted_count = -1;
    get_field(L, "response_headers");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    if (lua_type(L, -1) != LUA_TTABLE)
        luaL_error(L, "request.response_headers must be a list of names");
    n = (int)oauth2_rawlen(L, -1);
    if (n > MAX_WANTED) {
        lua_pop(L, 1);
        return "request.response_headers names more than 8 headers";
    }
    for (i = 0; i < n; i++) {
        size_t len;
        const char *name;
        lua_rawgeti(L, -1, i + 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "request.response_headers must be a list of names");
        name = lua_tolstring(L, -1, &len);
        if (len == 0 || len >= MAX_WANTED_LEN || !is_token(name, len)) {
            lua_pop(L, 2);
            return "request.response_headers has a name that is not a short HTTP token";
        }
        ascii_lower(s->wanted[i], name, len);
        s->wanted[i][len] = '\0';
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    s->wanted_count = n;
    return NULL;
}

/*
 * request.url, parsed here once into a CURLU handle the way libcurl would
 * parse CURLOPT_URL itself.  Given CURLOPT_URL, libcurl parses the URL and
 * writes it out again on every transfer; given the handle, it copies it.
 */
static const char *set_url(lua_State *L, session *s, char *message, size_t size)
{
    size_t len = 0;
    const char *url = opt_string(L, "url", &len);
    CURLUcode uc;
    if (url == NULL)
        luaL_error(L, "request.url is required");
    if (strlen(url) != len)
        return "request.url contains a NUL byte";
    s->url = curl_url();
    if (s->url == NULL)
        return "out of memory";
    /* no scheme guessing: "host/path" is refused, never sent as http:// */
    uc = curl_url_set(s->url, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
    if (uc != CURLUE_OK) {
        snprintf(message, size, "request.url is not a valid URL (%s)", curl_url_strerror(uc));
        return message;
    }
    curl_easy_setopt(s->easy, CURLOPT_CURLU, s->url);
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
 * The proxy variables of the environment, read once per request set up
 * rather than by libcurl on every transfer: when they are unset, no proxy
 * unless the request names one, and no host exempt from it.  The outcome
 * is libcurl's own; a change to the environment made after the request was
 * set up goes unseen.  request.no_proxy rules out every proxy.
 */
static void settle_proxy(lua_State *L, session *s)
{
    static const char *const no_proxy[] = {"no_proxy", "NO_PROXY"};
    /* what libcurl reads for http and https (not HTTP_PROXY, on purpose) */
    static const char *const proxy[] = {"http_proxy", "https_proxy", "HTTPS_PROXY",
                                        "all_proxy", "ALL_PROXY"};
    size_t len;
    get_field(L, "no_proxy");
    if (lua_toboolean(L, -1)) {
        /* the caller rules out every proxy, the environment's too */
        lua_pop(L, 1);
        curl_easy_setopt(s->easy, CURLOPT_PROXY, "");
        return;
    }
    lua_pop(L, 1);
    if (env_has_any(no_proxy, 2))
        return;
    curl_easy_setopt(s->easy, CURLOPT_NOPROXY, "");
    if (opt_string(L, "proxy", &len) == NULL && !env_has_any(proxy, 5))
        curl_easy_setopt(s->easy, CURLOPT_PROXY, "");
}

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
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, DEFAULT_TIMEOUT_MS);
}

/* request.timeout and request.connect_timeout onto the handle. */
static void set_timeouts(lua_State *L, session *s)
{
    long ms = opt_millis(L, "timeout");
    curl_easy_setopt(s->easy, CURLOPT_TIMEOUT_MS, ms >= 0 ? ms : DEFAULT_TIMEOUT_MS);
    ms = opt_millis(L, "connect_timeout");
    curl_easy_setopt(s->easy, CURLOPT_CONNECTTIMEOUT_MS, ms >= 0 ? ms : 0L);
}

/*
 * Whether the request at index 2 is the one kept prepared (request.reuse):
 * then only its timeouts are set again.
 */
static int reuse_prepared(lua_State *L, session *s)
{
    int same;
    if (s->reuse_ref == LUA_NOREF)
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->reuse_ref);
    same = lua_rawequal(L, -1, 2);
    lua_pop(L, 1);
    if (!same)
        return 0;
    release_transfer(s);
    set_timeouts(L, s);
    return 1;
}

/*
 * Where and how to connect: URL, TLS files, proxy, Basic credentials,
 * timeouts, verification, the body cap.  NULL, or what is wrong.
 */
static const char *set_transport(lua_State *L, session *s, char *message, size_t size)
{
    static const struct {
        const char *name;
        CURLoption option;
    } strings[] = {
        {"ca_file", CURLOPT_CAINFO},   {"ca_path", CURLOPT_CAPATH},
        {"cert", CURLOPT_SSLCERT},     {"key", CURLOPT_SSLKEY},
        {"proxy", CURLOPT_PROXY},      {"username", CURLOPT_USERNAME},
        {"password", CURLOPT_PASSWORD},
    };
    const char *problem;
    size_t i, len;
    if ((problem = set_url(L, s, message, size)) != NULL)
        return problem;
    for (i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        int rc = set_string(L, s, strings[i].name, strings[i].option);
        if (rc != 0) {
            snprintf(message, size, "request.%s %s", strings[i].name,
                     rc == -1 ? "contains a NUL byte" : "is not accepted by libcurl");
            return message;
        }
    }
    if (opt_string(L, "username", &len) != NULL || opt_string(L, "password", &len) != NULL)
        curl_easy_setopt(s->easy, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    settle_proxy(L, s);
    set_timeouts(L, s);

    get_field(L, "verify");
    if (lua_isboolean(L, -1) && !lua_toboolean(L, -1)) {
        curl_easy_setopt(s->easy, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(s->easy, CURLOPT_SSL_VERIFYHOST, 0L);
    } else if (!lua_isnil(L, -1) && !lua_isboolean(L, -1)) {
        luaL_error(L, "request.verify must be a boolean");
    }
    lua_pop(L, 1);

    get_field(L, "max_body");
    if (lua_isnil(L, -1)) {
        s->max_body = DEFAULT_MAX_BODY;
    } else {
        lua_Number n = lua_tonumber(L, -1);
        if (lua_type(L, -1) != LUA_TNUMBER || !(n >= 1) || n > (lua_Number)(SIZE_MAX / 2))
            luaL_error(L, "request.max_body must be a positive number of bytes");
        s->max_body = (size_t)n;
    }
    lua_pop(L, 1);
    curl_easy_setopt(s->easy, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)s->max_body);
    return NULL;
}

/*
 * request.body: a raw body (an API request's JSON, say), sent as it is;
 * it shares the form's buffer, so it is wiped the same way.  NULL, or
 * what is wrong.
 */
static const char *build_body(lua_State *L, session *s)
{
    size_t len = 0;
    const char *body = opt_string(L, "body", &len);
    if (body == NULL)
        return NULL;
    if (s->form.data != NULL)
        return "request.body and request.form exclude each other";
    if (oauth2_buffer_append(&s->form, body, len) != 0)
        return "out of memory";
    return NULL;
}

/*
 * request.method: GET without a body and POST with one unless given.
 * HEAD asks for no body; any other method is sent as named, with the body
 * if there is one (POST, PUT and PATCH send an empty one otherwise).
 * NULL, or what is wrong.
 */
static const char *set_method(lua_State *L, session *s)
{
    size_t len = 0;
    const char *method = opt_string(L, "method", &len);
    if (method == NULL)
        return NULL;
    if (len == 0 || len > 16 || !is_token(method, len))
        return "request.method must be an HTTP method (a token of at most 16 characters)";
    if (strcmp(method, "HEAD") == 0) {
        if (s->form.data != NULL)
            return "a HEAD request has no body";
        curl_easy_setopt(s->easy, CURLOPT_NOBODY, 1L);
        return NULL;
    }
    if (s->form.data == NULL &&
        (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0)) {
        if (oauth2_buffer_append(&s->form, "", 0) != 0)
            return "out of memory";
    }
    if (strcmp(method, "GET") == 0 && s->form.data == NULL)
        return NULL;
    if (strcmp(method, "POST") == 0 && s->form.data != NULL)
        return NULL;
    /* libcurl copies the string */
    if (curl_easy_setopt(s->easy, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK)
        return "out of memory";
    return NULL;
}

/* What is sent: the method, the form or raw body, the header list, and the
 * response headers asked for.  NULL, or what is wrong. */
static const char *set_message(lua_State *L, session *s, char *message, size_t size)
{
    const char *problem;
    if ((problem = build_form(L, s)) != NULL || (problem = build_body(L, s)) != NULL ||
        (problem = set_method(L, s)) != NULL)
        return problem;
    if (s->form.data != NULL) {
        curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)s->form.len);
        curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, s->form.data);
    }
    if ((problem = build_headers(L, s, message, size)) != NULL)
        return problem;
    curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, s->headers);
    return read_wanted(L, s);
}

/*
 * request.reuse = true is the caller's promise that, but for timeout and
 * connect_timeout, this table will not change: the handle then stays set
 * up for it, and the next start with the same table skips the set-up.
 * The reference keeps the table alive, so its identity stays.
 */
static void keep_if_reused(lua_State *L, session *s)
{
    get_field(L, "reuse");
    if (lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        lua_pushvalue(L, 2);
        s->reuse_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
        lua_pop(L, 1);
    }
}

/*
 * Configure the easy handle from the request table at index 2 and attach it
 * to the multi handle.  Returns 0 when the exchange is under way, otherwise
 * the number of values (nil, err) it pushed.
 */
static int start_exchange(lua_State *L, session *s)
{
    const char *problem;
    char message[128];
    CURLMcode mc;

    luaL_checktype(L, 2, LUA_TTABLE);
    if (s->running)
        luaL_error(L, "oauth2.core session is busy with another exchange");
    if (!reuse_prepared(L, s)) {
        release_exchange(L, s);
        curl_easy_reset(s->easy); /* keeps live connections and TLS sessions */
        set_safe_defaults(s);
        if ((problem = set_transport(L, s, message, sizeof message)) != NULL ||
            (problem = set_message(L, s, message, sizeof message)) != NULL)
            return push_error(L, "config", problem, 0);
        keep_if_reused(L, s);
    }
    mc = curl_multi_add_handle(s->multi, s->easy);
    if (mc != CURLM_OK)
        return push_error(L, "network", curl_multi_strerror(mc), 0);
    s->running = 1;
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

/* Push the response headers of the last response as {lower-case name = value}. */
static void push_headers(lua_State *L, session *s)
{
    CURL *easy = s->easy;
    struct curl_header *h, *prev = NULL;
    char name[128];
    int i;
    if (s->wanted_count >= 0) {
        /* only the names asked for: libcurl looks each up */
        lua_createtable(L, 0, s->wanted_count);
        for (i = 0; i < s->wanted_count; i++)
            if (push_header_value(L, easy, s->wanted[i]))
                lua_setfield(L, -2, s->wanted[i]);
        return;
    }
    lua_createtable(L, 0, 16); /* sized once: growing rehashes every step */
    while ((h = curl_easy_nextheader(easy, CURLH_HEADER, -1, prev)) != NULL) {
        size_t len = strlen(h->name), value_len = value_length(h->value);
        prev = h;
        if (len > sizeof name)
            continue; /* no header we read has a name this long */
        ascii_lower(name, h->name, len);
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

/* Characters that end a word of an error text: what may surround a URL. */
static int ends_word(char c)
{
    return c == '\0' || c == ' ' || c == '\t' || c == '\'' || c == '"' || c == '(' ||
           c == ')' || c == '<' || c == '>';
}

/*
 * Copy text into out[size] with the userinfo of every URL-like word
 * ("scheme://user:password@host", "user:password@host") replaced by
 * "[redacted]".  libcurl quotes the proxy string, credentials and all, in
 * some of its error texts, and the proxy may come from the environment,
 * where the Lua layer cannot see it.
 */
static void redact_userinfo(char *out, size_t size, const char *text)
{
    size_t n = 0;
    const char *p = text;
    if (size == 0)
        return;
    while (*p != '\0' && n + 1 < size) {
        const char *word = p, *end = p, *authority, *stop, *at = NULL, *q;
        while (!ends_word(*end))
            end++;
        if (end == word) {
            out[n++] = *p++;
            continue;
        }
        /* the authority: after "://" when there is one, up to the next '/' */
        authority = word;
        for (q = word; q + 2 < end; q++)
            if (q[0] == ':' && q[1] == '/' && q[2] == '/') {
                authority = q + 3;
                break;
            }
        for (stop = authority; stop < end && *stop != '/'; stop++)
            if (*stop == '@')
                at = stop;
        for (q = word; q < end && n + 1 < size; q++) {
            if (at != NULL && q == authority) {
                const char *mark = "[redacted]";
                while (*mark != '\0' && n + 1 < size)
                    out[n++] = *mark++;
                q = at - 1; /* resume at the '@' */
                continue;
            }
            out[n++] = *q;
        }
        p = end;
    }
    out[n] = '\0';
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
        const char *kind = curl_kind(result);
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
        redact_userinfo(clean, sizeof clean, message);
        oauth2_wipe(message, sizeof message);
        push_error(L, kind, clean, (int)result);
        if (status != 0) {
            lua_pushinteger(L, status);
            lua_setfield(L, -2, "status");
        }
        return 2;
    }

    curl_easy_getinfo(s->easy, CURLINFO_RETRY_AFTER, &retry_after);
    curl_easy_getinfo(s->easy, CURLINFO_NUM_CONNECTS, &connects);
    curl_easy_getinfo(s->easy, CURLINFO_TOTAL_TIME, &total_time);

    lua_createtable(L, 0, 7);
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "status");
    push_headers(L, s);
    lua_setfield(L, -2, "headers");
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
            return push_error(L, "network", curl_multi_strerror(mc), 0);
        }
        while ((msg = curl_multi_info_read(s->multi, &queued)) != NULL) {
            if (msg->msg == CURLMSG_DONE && msg->easy_handle == s->easy) {
                CURLcode result = msg->data.result;
                int n;
                curl_multi_remove_handle(s->multi, s->easy);
                s->running = 0;
                n = push_outcome(L, s, result);
                release_transfer(s); /* wipes the body copy in C */
                if (s->reuse_ref == LUA_NOREF)
                    release_request(L, s);
                return n;
            }
        }
        if (pass == 0 && wait_ms > 0) {
            mc = curl_multi_poll(s->multi, NULL, 0, wait_ms, NULL);
            if (mc != CURLM_OK) {
                release_exchange(L, s);
                return push_error(L, "network", curl_multi_strerror(mc), 0);
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

/* session:start(request) -> true | nil, err */
static int start_method(lua_State *L)
{
    session *s = lua_touserdata(L, 1);
    int n = start_exchange(L, s);
    if (n != 0) {
        release_exchange(L, s);
        return n;
    }
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

/* session:request(request) -> response | nil, err; waits until done. */
static int request_method(lua_State *L)
{
    session *s = lua_touserdata(L, 1);
    int n = start_exchange(L, s);
    if (n != 0) {
        release_exchange(L, s);
        return n;
    }
    while ((n = step_exchange(L, s, BLOCKING_POLL_MS)) == 0)
        ;
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
    s->reuse_ref = LUA_NOREF;
    s->wanted_count = -1;
    luaL_getmetatable(L, SESSION_MT);
    lua_setmetatable(L, -2);
    /* the object is consistent from here on: __gc copes with a half-made one */
    s->multi = curl_multi_init();
    s->easy = curl_easy_init();
    if (s->multi == NULL || s->easy == NULL) {
        close_session(L, s);
        return luaL_error(L, "cannot create a libcurl handle (out of memory?)");
    }
    s->max_body = DEFAULT_MAX_BODY;
    return 1;
}

/* core.escape(s) -> s form-urlencoded by libcurl (unreserved bytes kept) */
static int l_escape(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    oauth2_buffer *box;
    char *escaped;
    int failed;
    if (len > INT_MAX)
        return luaL_error(L, "string too long to escape");
    /* the escaped secret lives in a box while Lua runs (out of memory) */
    box = oauth2_box(L);
    escaped = curl_easy_escape(NULL, text, (int)len);
    if (escaped == NULL)
        return luaL_error(L, "out of memory");
    failed = oauth2_buffer_append(box, escaped, strlen(escaped));
    oauth2_wipe(escaped, strlen(escaped));
    curl_free(escaped);
    if (failed)
        return luaL_error(L, "out of memory");
    lua_pushlstring(L, box->data, box->len);
    oauth2_buffer_free(box);
    return 1;
}

/*
 * core.is_b64token(s, max_len) -> whether s is an RFC 6750 b64token of at
 * most max_len bytes: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" /
 * "/" ) *"=".  Such a token can go into an Authorization header as it is.
 */
static int l_is_b64token(lua_State *L)
{
    size_t len, i = 0;
    const char *text = luaL_checklstring(L, 1, &len);
    lua_Integer max_len = luaL_checkinteger(L, 2);
    while (i < len) {
        unsigned char c = (unsigned char)text[i];
        if (!is_ascii_alnum(c) && c != '-' && c != '.' && c != '_' && c != '~' && c != '+' &&
            c != '/')
            break;
        i++;
    }
    if (i == 0) {
        lua_pushboolean(L, 0);
        return 1;
    }
    while (i < len && text[i] == '=')
        i++;
    lua_pushboolean(L, i == len && (lua_Integer)len <= max_len);
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

static const luaL_Reg session_methods[] = {
    {"start", l_start},
    {"step", l_step},
    {"request", l_request},
    {"cancel", l_cancel},
    {"busy", l_busy},
    {"header", l_header},
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
    {"escape", l_escape},
    {"parse_url", l_parse_url},
    {"is_b64token", l_is_b64token},
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
    if (luaL_newmetatable(L, ERROR_MT)) {
        lua_pushcfunction(L, error_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushcfunction(L, error_concat);
        lua_setfield(L, -2, "__concat");
    }
    lua_pop(L, 1);
    oauth2_box_open(L);

    oauth2_newlib(L, functions);
    oauth2_clock_open(L);
    oauth2_crypto_open(L);
    oauth2_files_open(L);
    lua_pushliteral(L, OAUTH2_CORE_VERSION);
    lua_setfield(L, -2, "_VERSION");
    lua_pushstring(L, curl_version());
    lua_setfield(L, -2, "curl_version");
    return 1;
}
