/*
 * text.h - the pure text functions of the C core: what a header name or
 * value may hold, what form encoding leaves alone, what a bearer token may
 * be, and the redaction of credentials in libcurl's error texts.
 *
 * No Lua and no libcurl here: the fuzzers link this file as it is.
 */
#ifndef OAUTH2_TEXT_H
#define OAUTH2_TEXT_H

#include <stddef.h>

/* ASCII letters and digits, whatever locale the host program has set. */
int oauth2_is_alnum(unsigned char c);

/* Copy n bytes lower-casing ASCII letters only: no locale may change a name. */
void oauth2_ascii_lower(char *dst, const char *src, size_t n);

/* RFC 9110 token characters, at least one: what a header name or a method
 * may consist of. */
int oauth2_is_token(const char *p, size_t n);

/* No CR, LF or NUL: a header value that cannot smuggle in another header. */
int oauth2_is_safe_value(const char *p, size_t n);

/* Whether a header name is `lower` (given in lower case), ignoring ASCII case. */
int oauth2_is_header_name(const char *name, size_t len, const char *lower);

/* RFC 3986 unreserved characters only: what form encoding leaves as it is. */
int oauth2_is_unreserved(const char *p, size_t n);

/* An RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" /
 * "/" ) *"=".  Such a token can go into an Authorization header as it is. */
int oauth2_is_b64token(const char *p, size_t n);

/*
 * Copy text into out[size] (always NUL-terminated when size > 0) with the
 * userinfo of every URL-like word ("scheme://user:password@host",
 * "user:password@host") replaced by "[redacted]".
 */
void oauth2_redact_userinfo(char *out, size_t size, const char *text);

#endif
