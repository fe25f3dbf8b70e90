/*
 * files.c - core.private_dir, core.read_private, core.write_private,
 * core.try_lock, core.file_mode (see files.h).
 *
 * Everything here refuses what another user could have planted or could
 * read: a directory or file not owned by this user, or open to its group
 * or to others, and symbolic links.  Files are written 0600 to a temporary
 * name, synced and renamed over the old one, so a reader sees the old
 * contents or the new, never half of either.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buffer.h"
#include "files.h"

#define LOCK_MT "oauth2.core.lock"
/* the largest cache file read: a sealed token is a few KiB */
#define MAX_FILE (256 * 1024)

/* Push nil and "what: strerror(errno)"; returns 2. */
static int fail_errno(lua_State *L, const char *what)
{
    int saved = errno;
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", what, strerror(saved));
    return 2;
}

static int fail_text(lua_State *L, const char *text)
{
    lua_pushnil(L);
    lua_pushstring(L, text);
    return 2;
}

/* NULL when st is ours and private (no group or other bits), else why. */
static const char *not_private(const struct stat *st)
{
    if (st->st_uid != geteuid())
        return "owned by another user";
    if ((st->st_mode & 077) != 0)
        return "open to its group or to others (chmod go-rwx)";
    return NULL;
}

/*
 * core.private_dir(path) -> true | nil, why: the directory exists (made
 * 0700 when missing, its parent too when that is missing), is ours and is
 * open to nobody else.
 */
static int l_private_dir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    const char *why;
    if (lstat(path, &st) != 0) {
        if (errno != ENOENT)
            return fail_errno(L, "cannot inspect the cache directory");
        /* another process may make it at the same moment: EEXIST is fine */
        if (mkdir(path, 0700) != 0 && errno != EEXIST) {
            /* the parent may be missing too (~/.cache on a new account) */
            char *parent = strdup(path), *slash;
            int made = 0;
            if (parent == NULL)
                return fail_text(L, "out of memory");
            slash = strrchr(parent, '/');
            if (slash != NULL && slash != parent) {
                *slash = '\0';
                made = (mkdir(parent, 0700) == 0 || errno == EEXIST) &&
                       (mkdir(path, 0700) == 0 || errno == EEXIST);
            }
            free(parent);
            if (!made)
                return fail_errno(L, "cannot create the cache directory");
        }
        if (lstat(path, &st) != 0)
            return fail_errno(L, "cannot inspect the cache directory");
    }
    if (!S_ISDIR(st.st_mode))
        return fail_text(L, "the cache directory is not a directory (or is a link)");
    if ((why = not_private(&st)) != NULL) {
        lua_pushnil(L);
        lua_pushfstring(L, "the cache directory is %s", why);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/*
 * core.read_private(path) -> contents | false (no such file) | nil, why
 * (not a regular file, a link, not ours, open to others, too large).
 */
static int l_read_private(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    oauth2_buffer *box = oauth2_box(L);
    struct stat st;
    const char *why;
    char chunk[4096];
    ssize_t n;
    /* O_NONBLOCK: a FIFO put at the path must not hold the open */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            lua_pushboolean(L, 0);
            return 1;
        }
        return fail_errno(L, "cannot open the cache file");
    }
    if (fstat(fd, &st) != 0) {
        close(fd);
        return fail_errno(L, "cannot inspect the cache file");
    }
    why = !S_ISREG(st.st_mode) ? "not a regular file" : not_private(&st);
    if (why == NULL && st.st_size > MAX_FILE)
        why = "larger than a cache file can be";
    if (why != NULL) {
        close(fd);
        lua_pushnil(L);
        lua_pushfstring(L, "the cache file is %s", why);
        return 2;
    }
    /* the contents are sealed, but a box wipes them all the same */
    while ((n = read(fd, chunk, sizeof chunk)) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            close(fd);
            return fail_errno(L, "cannot read the cache file");
        }
        if (box->len + (size_t)n > MAX_FILE || oauth2_buffer_append(box, chunk, (size_t)n) != 0) {
            close(fd);
            return fail_text(L, "the cache file is too large");
        }
    }
    close(fd);
    lua_pushlstring(L, box->data ? box->data : "", box->len);
    oauth2_buffer_free(box);
    return 1;
}

/* Write all of data to fd; 0 or -1 (errno set). */
static int write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/*
 * core.write_private(path, data) -> true | nil, why: data replaces the
 * file atomically (a 0600 temporary file in the same directory, synced,
 * then renamed over it).
 */
static int l_write_private(lua_State *L)
{
    size_t len;
    const char *path = luaL_checkstring(L, 1);
    const char *data = luaL_checklstring(L, 2, &len);
    char tmp[4096];
    struct timespec ts;
    int fd, n;
    /* unique enough with O_EXCL: pid and the clock's nanoseconds */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    n = snprintf(tmp, sizeof tmp, "%s.%ld.%ld.tmp", path, (long)getpid(), (long)ts.tv_nsec);
    if (n < 0 || (size_t)n >= sizeof tmp)
        return fail_text(L, "the cache path is too long");
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return fail_errno(L, "cannot create the cache file");
    if (write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        int saved = errno;
        close(fd);
        unlink(tmp);
        errno = saved;
        return fail_errno(L, "cannot write the cache file");
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        int saved = errno;
        unlink(tmp);
        errno = saved;
        return fail_errno(L, "cannot replace the cache file");
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* A lock: the descriptor that holds the flock, -1 once released. */
typedef struct {
    int fd;
} lock_handle;

/* lock:unlock(), __gc, __close: release (closing the descriptor); idempotent. */
static int l_unlock(lua_State *L)
{
    lock_handle *lock = luaL_checkudata(L, 1, LOCK_MT);
    if (lock->fd >= 0) {
        close(lock->fd);
        lock->fd = -1;
    }
    return 0;
}

/*
 * core.try_lock(path) -> lock | false (another holds it) | nil, why.
 * An exclusive flock on path (a 0600 file made when missing), taken
 * without waiting; the kernel releases it when the process dies.
 */
static int l_try_lock(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    const char *why;
    lock_handle *lock = lua_newuserdata(L, sizeof *lock);
    lock->fd = -1;
    luaL_getmetatable(L, LOCK_MT);
    lua_setmetatable(L, -2);
    lock->fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
    if (lock->fd < 0)
        return fail_errno(L, "cannot open the lock file");
    if (fstat(lock->fd, &st) != 0)
        return fail_errno(L, "cannot inspect the lock file");
    why = !S_ISREG(st.st_mode) ? "not a regular file" : not_private(&st);
    if (why != NULL) {
        close(lock->fd);
        lock->fd = -1;
        lua_pushnil(L);
        lua_pushfstring(L, "the lock file is %s", why);
        return 2;
    }
    if (flock(lock->fd, LOCK_EX | LOCK_NB) != 0) {
        int saved = errno;
        close(lock->fd);
        lock->fd = -1;
        if (saved == EWOULDBLOCK) {
            lua_pushboolean(L, 0);
            return 1;
        }
        errno = saved;
        return fail_errno(L, "cannot take the lock");
    }
    return 1; /* the userdata */
}

/* core.file_mode(path) -> mode | nil, why: a file's permission bits
 * (following links, as opening it does), for a word about a secret file
 * others may write */
static int l_file_mode(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (stat(path, &st) != 0)
        return fail_errno(L, "cannot read its mode");
    lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777));
    return 1;
}

static const luaL_Reg functions[] = {
    {"file_mode", l_file_mode},
    {"private_dir", l_private_dir},
    {"read_private", l_read_private},
    {"write_private", l_write_private},
    {"try_lock", l_try_lock},
    {NULL, NULL},
};

static const luaL_Reg lock_methods[] = {
    {"unlock", l_unlock},
    {NULL, NULL},
};

void oauth2_files_open(lua_State *L)
{
    if (luaL_newmetatable(L, LOCK_MT)) {
        lua_pushcfunction(L, l_unlock);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_unlock);
        lua_setfield(L, -2, "__close");
        oauth2_newlib(L, lock_methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    oauth2_setfuncs(L, functions);
}
