/*
 * errors.h - the core's error tables: {kind=, message=, curl_code=}, which
 * print as "oauth2.core: <kind> error: <message>" (tostring and ..), and
 * which kind a libcurl result is.  Network and HTTP outcomes are data.
 */
#ifndef OAUTH2_ERRORS_H
#define OAUTH2_ERRORS_H

#include <curl/curl.h>

#include "compat.h"

/* Push nil and an error table; returns 2. */
int oauth2_push_error(lua_State *L, const char *kind, const char *message, int curl_code);

/* "timeout", "tls", "config", "protocol" or "network" for a libcurl result. */
const char *oauth2_curl_kind(CURLcode code);

/* Register the error metatable (from luaopen). */
void oauth2_errors_open(lua_State *L);

#endif
