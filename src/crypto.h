/*
 * crypto.h - hashing, keyed hashing and authenticated encryption through
 * OpenSSL's libcrypto: core.sha256, core.hmac_sha256, core.seal, core.open.
 *
 * The stores need these: cache keys that name no secret (a keyed hash with
 * the client secret as key), and values that are useless at rest
 * (AES-256-GCM under a key derived from the client secret).
 */
#ifndef OAUTH2_CRYPTO_H
#define OAUTH2_CRYPTO_H

#include "compat.h"

/* Add the functions to the module table on top of the stack. */
void oauth2_crypto_open(lua_State *L);

#endif
