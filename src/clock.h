/*
 * clock.h - core.now and core.sleep: the monotonic clock behind deadlines
 * and token lifetimes, and a blocking sleep for use outside event loops.
 */
#ifndef OAUTH2_CLOCK_H
#define OAUTH2_CLOCK_H

#include "compat.h"

/* Add now and sleep to the module table on top of the stack. */
void oauth2_clock_open(lua_State *L);

#endif
