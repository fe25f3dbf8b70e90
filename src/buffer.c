/*
 * buffer.c - wiped byte buffers and the boxes that own them (see buffer.h).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buffer.h"

#define BOX_MT "oauth2.core.box"

void oauth2_wipe(void *p, size_t n)
{
#if defined(__GNUC__)
    memset(p, 0, n);
    /* the compiler must assume the zeroes are read: the store stays */
    __asm__ __volatile__("" : : "r"(p) : "memory");
#else
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
#endif
}

void oauth2_buffer_free(oauth2_buffer *b)
{
    if (b->data != NULL) {
        oauth2_wipe(b->data, b->cap);
        free(b->data);
    }
    b->data = NULL;
    b->len = b->cap = 0;
}

/*
 * Grows by copying rather than realloc, so no unwiped copy of a secret is
 * left behind in freed memory.
 */
int oauth2_buffer_append(oauth2_buffer *b, const char *p, size_t n)
{
    if (n > SIZE_MAX - b->len - 1)
        return -1;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *grown;
        while (cap < b->len + n + 1)
            cap = cap > SIZE_MAX / 2 ? b->len + n + 1 : cap * 2;
        grown = malloc(cap);
        if (grown == NULL)
            return -1;
        if (b->data != NULL) {
            memcpy(grown, b->data, b->len);
            oauth2_wipe(b->data, b->cap);
            free(b->data);
        }
        b->data = grown;
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int oauth2_buffer_reserve(oauth2_buffer *b, size_t n)
{
    oauth2_buffer_free(b);
    if (n == SIZE_MAX)
        return -1;
    b->data = calloc(n + 1, 1);
    if (b->data == NULL)
        return -1;
    b->cap = n + 1;
    b->len = n;
    return 0;
}

static int box_gc(lua_State *L)
{
    oauth2_buffer_free(luaL_checkudata(L, 1, BOX_MT));
    return 0;
}

oauth2_buffer *oauth2_box(lua_State *L)
{
    oauth2_buffer *b = lua_newuserdata(L, sizeof *b);
    memset(b, 0, sizeof *b);
    luaL_getmetatable(L, BOX_MT);
    lua_setmetatable(L, -2);
    return b;
}

void oauth2_box_open(lua_State *L)
{
    if (luaL_newmetatable(L, BOX_MT)) {
        lua_pushcfunction(L, box_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
}
