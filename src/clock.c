/*
 * clock.c - core.now, core.time and core.sleep (see clock.h).
 */
#include <errno.h>
#include <time.h>

#include "clock.h"

/*
 * Token lifetimes and deadlines need milliseconds at best, which the
 * coarse clock gives where the system has one.
 */
#ifdef CLOCK_MONOTONIC_COARSE
#define NOW_CLOCK CLOCK_MONOTONIC_COARSE
#else
#define NOW_CLOCK CLOCK_MONOTONIC
#endif

double oauth2_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* core.now() -> seconds on a monotonic clock (for deadlines and lifetimes) */
static int l_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(NOW_CLOCK, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

/* core.time() -> seconds since the epoch, with fractions (wall clock) */
static int l_time(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

/* core.sleep(seconds): a blocking wait (at most MAX_SECONDS), outside event
 * loops */
static int l_sleep(lua_State *L)
{
    lua_Number seconds = luaL_checknumber(L, 1);
    struct timespec ts;
    if (!(seconds > 0))
        return 0;
    if (seconds > OAUTH2_MAX_SECONDS)
        seconds = OAUTH2_MAX_SECONDS;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (lua_Number)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    return 0;
}

static const luaL_Reg functions[] = {
    {"now", l_now},
    {"time", l_time},
    {"sleep", l_sleep},
    {NULL, NULL},
};

void oauth2_clock_open(lua_State *L)
{
    oauth2_setfuncs(L, functions);
    lua_pushinteger(L, OAUTH2_MAX_SECONDS);
    lua_setfield(L, -2, "MAX_SECONDS");
}
