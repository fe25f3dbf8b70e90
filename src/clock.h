/*
 * clock.h - core.now, core.time and core.sleep: the monotonic clock behind
 * deadlines and token lifetimes, the wall clock of shared records, and a
 * blocking sleep for use outside event loops.
 */
#ifndef OAUTH2_CLOCK_H
#define OAUTH2_CLOCK_H

#include "compat.h"

/*
 * The longest duration the library takes anywhere (a timeout, a deadline,
 * a wait), in seconds: a day.  Lua reads it as core.MAX_SECONDS, so the
 * option checks and the C core refuse at the same bound, and a duration
 * within it always fits a long of milliseconds.
 */
#define OAUTH2_MAX_SECONDS 86400

/* Seconds on the precise monotonic clock, for deadlines inside the core. */
double oauth2_monotonic(void);

/* Add now, time, sleep and MAX_SECONDS to the module table on top of the stack. */
void oauth2_clock_open(lua_State *L);

#endif
