/*
 * buffer.h - byte buffers that are wiped before their memory is freed, and
 * boxes that tie temporary C memory to a Lua userdata.
 *
 * A box exists for the one case lauxlib's buffers also guard against: C
 * memory that holds a secret while Lua is called (a lua_push* may raise on
 * out-of-memory and longjmp past any free).  The memory hangs off a
 * userdata whose __gc wipes and frees it, so every path frees it.
 */
#ifndef OAUTH2_BUFFER_H
#define OAUTH2_BUFFER_H

#include <stddef.h>

#include "compat.h"

typedef struct {
    char *data;
    size_t len;
    size_t cap;
} oauth2_buffer;

/* memset that the optimiser may not drop: the memory is freed right after. */
void oauth2_wipe(void *p, size_t n);

/* Wipe and free the buffer's memory; it is empty and reusable after. */
void oauth2_buffer_free(oauth2_buffer *b);

/* Append n bytes (kept NUL-terminated); -1 when memory runs out. */
int oauth2_buffer_append(oauth2_buffer *b, const char *p, size_t n);

/* Make b hold n zero bytes in fresh memory (what it held is wiped and
 * freed first); -1 when memory runs out. */
int oauth2_buffer_reserve(oauth2_buffer *b, size_t n);

/* Push a new box (an empty oauth2_buffer owned by a userdata) and return
 * its buffer.  Its memory is wiped and freed by __gc, or earlier by
 * oauth2_buffer_free. */
oauth2_buffer *oauth2_box(lua_State *L);

/* Register the box metatable (from luaopen). */
void oauth2_box_open(lua_State *L);

#endif
