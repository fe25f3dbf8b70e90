/*
 * files.h - the file store's mechanism: private directories and files,
 * atomic replacement, and advisory locks the kernel releases when their
 * process dies.  The policy (what is stored, when to lock) is Lua's.
 */
#ifndef OAUTH2_FILES_H
#define OAUTH2_FILES_H

#include "compat.h"

/* Add the file functions to the module table on top of the stack. */
void oauth2_files_open(lua_State *L);

#endif
