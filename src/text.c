/*
 * text.c - the pure text functions of the C core (see text.h).
 */
#include <string.h>

#include "text.h"

int oauth2_is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

void oauth2_ascii_lower(char *dst, const char *src, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        char c = src[i];
        dst[i] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
    }
}

int oauth2_is_token(const char *p, size_t n)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    size_t i;
    if (n == 0)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!oauth2_is_alnum(c) && (c == '\0' || strchr(extra, c) == NULL))
            return 0;
    }
    return 1;
}

int oauth2_is_safe_value(const char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (p[i] == '\r' || p[i] == '\n' || p[i] == '\0')
            return 0;
    return 1;
}

int oauth2_is_header_name(const char *name, size_t len, const char *lower)
{
    size_t i;
    for (i = 0; i < len; i++) {
        char c = name[i];
        if ((c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c) != lower[i])
            return 0;
    }
    return lower[len] == '\0';
}

int oauth2_is_unreserved(const char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!oauth2_is_alnum(c) && c != '-' && c != '.' && c != '_' && c != '~')
            return 0;
    }
    return 1;
}

int oauth2_is_b64token(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)p[i];
        if (!oauth2_is_alnum(c) && c != '-' && c != '.' && c != '_' && c != '~' && c != '+' &&
            c != '/')
            break;
        i++;
    }
    if (i == 0)
        return 0;
    while (i < n && p[i] == '=')
        i++;
    return i == n;
}

/* Characters that end a word of an error text: what may surround a URL. */
static int ends_word(char c)
{
    return c == '\0' || c == ' ' || c == '\t' || c == '\'' || c == '"' || c == '(' ||
           c == ')' || c == '<' || c == '>';
}

/*
 * libcurl quotes the proxy string, credentials and all, in some of its
 * error texts, and the proxy may come from the environment, where the Lua
 * layer cannot see it.
 */
void oauth2_redact_userinfo(char *out, size_t size, const char *text)
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
