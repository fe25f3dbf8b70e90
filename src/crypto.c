/*
 * crypto.c - libcrypto for the stores (see crypto.h).
 *
 * Sealed values are "o2" 2, a 12-byte random nonce, the ciphertext and the
 * 16-byte GCM tag; the AES key is HMAC-SHA256(secret, "lua-oauth2 seal
 * v1"), never the secret itself.  The associated data is the three-byte
 * header and the value's name (the record's key in its store), so a value
 * moved to another key, or read as another format, does not open.  Every
 * buffer that holds a key or a plaintext is wiped, and lives in a box
 * (buffer.h) while Lua is called.
 */
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "buffer.h"
#include "crypto.h"

#define NONCE_LEN 12
#define TAG_LEN 16
#define HEADER_LEN 3 /* "o2" and the format version */
#define HEADER "o2\2"
#define SEAL_LABEL "lua-oauth2 seal v1"

/* Push the lower-case hex of n bytes. */
static void push_hex(lua_State *L, const unsigned char *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    char out[2 * EVP_MAX_MD_SIZE];
    size_t i;
    for (i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    lua_pushlstring(L, out, 2 * n);
}

/* core.sha256(data) -> lower-case hex digest */
static int l_sha256(lua_State *L)
{
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_Digest(data, len, digest, &n, EVP_sha256(), NULL) != 1)
        return luaL_error(L, "oauth2.core: SHA-256 failed");
    push_hex(L, digest, n);
    return 1;
}

/* HMAC-SHA256 of data under key into out[32]; 0 on success. */
static int hmac_sha256(const char *key, size_t key_len, const char *data, size_t len,
                       unsigned char out[32])
{
    unsigned int n = 0;
    if (key_len > INT_MAX)
        return -1;
    if (HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)data, len, out, &n) == NULL
        || n != 32)
        return -1;
    return 0;
}

/* core.hmac_sha256(key, data) -> lower-case hex of the keyed hash */
static int l_hmac_sha256(lua_State *L)
{
    size_t key_len, len;
    const char *key = luaL_checklstring(L, 1, &key_len);
    const char *data = luaL_checklstring(L, 2, &len);
    unsigned char mac[32];
    if (hmac_sha256(key, key_len, data, len, mac) != 0)
        return luaL_error(L, "oauth2.core: HMAC-SHA256 failed");
    push_hex(L, mac, sizeof mac);
    oauth2_wipe(mac, sizeof mac);
    return 1;
}

/*
 * Run AES-256-GCM over in[len] into out (same length), with the key
 * derived from secret; encrypt, or decrypt and check the tag.  0 on
 * success, -1 on a failure (for decryption: a value that is not ours).
 */
static int gcm(int encrypt, const char *secret, size_t secret_len, const char *name,
               size_t name_len, const unsigned char *nonce, const unsigned char *in, size_t len,
               unsigned char *out, unsigned char *tag)
{
    unsigned char key[32];
    EVP_CIPHER_CTX *ctx;
    int n = 0, rc = -1;
    if (len > INT_MAX || name_len > INT_MAX ||
        hmac_sha256(secret, secret_len, SEAL_LABEL, sizeof SEAL_LABEL - 1, key) != 0)
        return -1;
    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        goto done;
    if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, encrypt) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) != 1 ||
        EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, encrypt) != 1)
        goto done;
    /* associated data: authenticated, not encrypted */
    if (EVP_CipherUpdate(ctx, NULL, &n, (const unsigned char *)HEADER, HEADER_LEN) != 1 ||
        (name_len > 0 &&
         EVP_CipherUpdate(ctx, NULL, &n, (const unsigned char *)name, (int)name_len) != 1))
        goto done;
    if (len > 0 && EVP_CipherUpdate(ctx, out, &n, in, (int)len) != 1)
        goto done;
    if (!encrypt && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag) != 1)
        goto done;
    if (EVP_CipherFinal_ex(ctx, out + n, &n) != 1)
        goto done; /* decrypting: the tag does not match */
    if (encrypt && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag) != 1)
        goto done;
    rc = 0;
done:
    EVP_CIPHER_CTX_free(ctx);
    oauth2_wipe(key, sizeof key);
    return rc;
}

/* core.seal(secret, plaintext, name) -> sealed bytes (see the top of this
 * file); name is where the value will be kept */
static int l_seal(lua_State *L)
{
    size_t secret_len, len, name_len;
    const char *secret = luaL_checklstring(L, 1, &secret_len);
    const unsigned char *plain = (const unsigned char *)luaL_checklstring(L, 2, &len);
    const char *name = luaL_checklstring(L, 3, &name_len);
    oauth2_buffer *box;
    unsigned char *out;
    if (len > INT_MAX - HEADER_LEN - NONCE_LEN - TAG_LEN)
        return luaL_error(L, "oauth2.core: value too large to seal");
    box = oauth2_box(L);
    if (oauth2_buffer_reserve(box, HEADER_LEN + NONCE_LEN + len + TAG_LEN) != 0)
        return luaL_error(L, "oauth2.core: out of memory");
    out = (unsigned char *)box->data;
    memcpy(out, HEADER, HEADER_LEN);
    if (RAND_bytes(out + HEADER_LEN, NONCE_LEN) != 1 ||
        gcm(1, secret, secret_len, name, name_len, out + HEADER_LEN, plain, len,
            out + HEADER_LEN + NONCE_LEN, out + HEADER_LEN + NONCE_LEN + len) != 0) {
        oauth2_buffer_free(box);
        return luaL_error(L, "oauth2.core: AES-256-GCM sealing failed");
    }
    lua_pushlstring(L, (const char *)out, box->len);
    oauth2_buffer_free(box);
    return 1;
}

/* core.open(secret, sealed, name) -> plaintext | nil, why (never our value,
 * another secret's, sealed for another name, or changed on the way) */
static int l_open(lua_State *L)
{
    size_t secret_len, len, plain_len, name_len;
    const char *secret = luaL_checklstring(L, 1, &secret_len);
    const unsigned char *sealed = (const unsigned char *)luaL_checklstring(L, 2, &len);
    const char *name = luaL_checklstring(L, 3, &name_len);
    unsigned char tag[TAG_LEN], *out;
    oauth2_buffer *box;
    if (len < HEADER_LEN + NONCE_LEN + TAG_LEN || memcmp(sealed, HEADER, HEADER_LEN) != 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "not a sealed value");
        return 2;
    }
    plain_len = len - HEADER_LEN - NONCE_LEN - TAG_LEN;
    memcpy(tag, sealed + len - TAG_LEN, TAG_LEN);
    box = oauth2_box(L);
    if (oauth2_buffer_reserve(box, plain_len) != 0)
        return luaL_error(L, "oauth2.core: out of memory");
    out = (unsigned char *)box->data;
    if (gcm(0, secret, secret_len, name, name_len, sealed + HEADER_LEN,
            sealed + HEADER_LEN + NONCE_LEN, plain_len, out, tag) != 0) {
        oauth2_buffer_free(box);
        lua_pushnil(L);
        lua_pushliteral(L, "the value does not authenticate (another key or name, or altered)");
        return 2;
    }
    lua_pushlstring(L, (const char *)out, plain_len);
    oauth2_buffer_free(box);
    return 1;
}

/*
 * core.random() -> a number in [0, 1) from OpenSSL's generator: seeded
 * from the system, and reseeded in a forked child, so every nginx worker
 * and every process draws its own numbers (math.random is seeded by
 * nobody in LuaJIT and Lua 5.1, and alike across forks everywhere).
 */
static int l_random(lua_State *L)
{
    unsigned char bytes[8];
    uint64_t bits = 0;
    int i;
    if (RAND_bytes(bytes, sizeof bytes) != 1)
        return luaL_error(L, "oauth2.core: the random generator failed");
    for (i = 0; i < 8; i++)
        bits = (bits << 8) | bytes[i];
    /* 53 random bits: every double in [0, 1) of that spacing, uniformly */
    lua_pushnumber(L, (lua_Number)(bits >> 11) / 9007199254740992.0);
    return 1;
}

/* core.redis_slot(key) -> the Redis Cluster hash slot of a key: CRC16
 * (XMODEM) of its hash tag (the text inside the first {...} that is not
 * empty) or of the whole key, modulo 16384 */
static int l_redis_slot(lua_State *L)
{
    size_t len, i;
    const char *key = luaL_checklstring(L, 1, &len);
    const char *open = memchr(key, '{', len);
    unsigned crc = 0;
    if (open != NULL) {
        const char *close = memchr(open + 1, '}', len - (size_t)(open + 1 - key));
        if (close != NULL && close > open + 1) {
            len = (size_t)(close - open - 1);
            key = open + 1;
        }
    }
    for (i = 0; i < len; i++) {
        int bit;
        crc ^= (unsigned)(unsigned char)key[i] << 8;
        for (bit = 0; bit < 8; bit++)
            crc = (crc & 0x8000) ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
    lua_pushinteger(L, (lua_Integer)(crc & 16383));
    return 1;
}

static const luaL_Reg functions[] = {
    {"random", l_random},
    {"redis_slot", l_redis_slot},
    {"sha256", l_sha256},
    {"hmac_sha256", l_hmac_sha256},
    {"seal", l_seal},
    {"open", l_open},
    {NULL, NULL},
};

void oauth2_crypto_open(lua_State *L)
{
    oauth2_setfuncs(L, functions);
}
