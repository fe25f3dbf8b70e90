/*
 * request.h - a request prepared for libcurl, in plain sight.
 *
 * core.prepare(table) reads a request table once (URL, body, headers,
 * TLS files, proxy, credentials, timeouts, body cap) into an
 * "oauth2.core.request" userdata that never changes afterwards.  A session
 * applies it to its easy handle at each start; the Lua side holds it (an
 * endpoint keeps one) and sends it as often as it likes.  Everything that
 * may be secret (the form, the header list, the credentials) is wiped
 * before it is freed.
 */
#ifndef OAUTH2_REQUEST_H
#define OAUTH2_REQUEST_H

#include <curl/curl.h>

#include "buffer.h"
#include "compat.h"

#define OAUTH2_REQUEST_MT "oauth2.core.request"

/* The string options libcurl copies: their order is request.c's table. */
enum { CA_FILE, CA_PATH, CERT, KEY, PROXY, USERNAME, PASSWORD, N_STRINGS };

typedef struct {
    CURLU *url;                 /* parsed once, as libcurl would parse it */
    struct curl_slist *headers; /* may carry a bearer token */
    oauth2_buffer body;         /* the form or raw body; data == NULL: none */
    oauth2_buffer line;         /* scratch for one header line while building */
    char *strings[N_STRINGS];   /* owned copies, or NULL */
    char method[17];            /* a method libcurl must be told, or "" */
    int nobody;                 /* HEAD */
    int no_verify;              /* request.verify == false */
    int noproxy_empty;          /* no host exempt from a proxy */
    int proxy_empty;            /* no proxy at all */
    long timeout_ms;            /* -1: the default */
    long connect_timeout_ms;    /* -1: libcurl's default */
    size_t max_body;
} oauth2_request;

/* The request at index, or a raised error. */
oauth2_request *oauth2_check_request(lua_State *L, int index);

/*
 * Replace the value at `index` (a request table or a prepared request)
 * with a prepared request and return it; or push nil and a config error
 * and return NULL.  Misuse (wrong types) raises.
 */
oauth2_request *oauth2_request_at(lua_State *L, int index);

/* Set the request's options on an easy handle just reset. */
void oauth2_request_apply(const oauth2_request *r, CURL *easy);

/* Register the request metatable and add prepare, escape, parse_url and
 * is_b64token to the module table on top of the stack. */
void oauth2_request_open(lua_State *L);

#endif
