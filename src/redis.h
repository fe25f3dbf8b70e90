/*
 * redis.h - core.redis, a blocking hiredis connection (see redis.c).
 */
#ifndef OAUTH2_REDIS_H
#define OAUTH2_REDIS_H

#include "compat.h"

/* Add core.redis to the module table on top of the stack. */
void oauth2_redis_open(lua_State *L);

#endif
