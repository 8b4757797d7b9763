/*
 * myrmex.core.source: byte producers shared between bindings (see source.h), plus the two
 * everyday ones, a file and a string, and a Lua-side read for tests and small consumers.
 */
#include "source.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>

static int source_gc(lua_State *L) {
  mx_source_close(luaL_checkudata(L, 1, MX_SOURCE_MT));
  return 0;
}

/* s:read([n]) -> up to n bytes (default 64 KiB), or nil at the end. */
static int source_read(lua_State *L) {
  mx_source *s = mx_source_check(L, 1);
  size_t n = (size_t)luaL_optinteger(L, 2, 65536);
  luaL_argcheck(L, n > 0 && n <= (64u << 20), 2, "size out of range");
  if (s->closed)
    return luaL_error(L, "source: read after close");
  luaL_Buffer b;
  char *buf = luaL_buffinitsize(L, &b, n);
  char err[256] = "";
  ssize_t got = s->read(s->ud, buf, n, err, sizeof err);
  if (got < 0) {
    mx_source_close(s);
    return luaL_error(L, "source: %s", err[0] ? err : "read failed");
  }
  if (got == 0) {
    luaL_pushfail(L);
    return 1;
  }
  luaL_pushresultsize(&b, (size_t)got);
  return 1;
}

static int source_size(lua_State *L) {
  mx_source *s = mx_source_check(L, 1);
  if (s->size < 0)
    luaL_pushfail(L);
  else
    lua_pushinteger(L, (lua_Integer)s->size);
  return 1;
}

static int source_tostring(lua_State *L) {
  mx_source *s = luaL_checkudata(L, 1, MX_SOURCE_MT);
  lua_pushfstring(L, "source (%s)", s->closed ? "closed" : "open");
  return 1;
}

static const luaL_Reg source_meta[] = {
    {"__gc", source_gc}, {"__close", source_gc}, {"__tostring", source_tostring}, {NULL, NULL}};
static const luaL_Reg source_methods[] = {
    {"read", source_read}, {"size", source_size}, {"close", source_gc}, {NULL, NULL}};

/* Other bindings make sources without requiring this module, so the metatable is made on
 * first use. It is registered only once whole: running out of memory half-way must not leave
 * a registered metatable without __gc or methods for every later source. */
static void ensure_metatable(lua_State *L) {
  if (luaL_getmetatable(L, MX_SOURCE_MT) != LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  lua_createtable(L, 0, 5);
  luaL_setfuncs(L, source_meta, 0);
  luaL_newlib(L, source_methods);
  lua_setfield(L, -2, "__index");
  lua_pushliteral(L, MX_SOURCE_MT);
  lua_setfield(L, -2, "__name");
  lua_setfield(L, LUA_REGISTRYINDEX, MX_SOURCE_MT);
}

mx_source *mx_source_new(lua_State *L) {
  ensure_metatable(L);
  mx_source *s = lua_newuserdatauv(L, sizeof *s, 1);
  memset(s, 0, sizeof *s);
  s->size = -1;
  s->closed = 1; /* safe until the producer fills it in */
  luaL_setmetatable(L, MX_SOURCE_MT);
  return s;
}

mx_source *mx_source_check(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, MX_SOURCE_MT);
}

void mx_source_close(mx_source *s) {
  if (s->closed)
    return;
  s->closed = 1;
  if (s->close)
    s->close(s->ud);
  s->ud = NULL;
}

/* ---- a file ---- */

static ssize_t file_read(void *ud, char *buf, size_t n, char *err, size_t errlen) {
  int fd = *(int *)ud;
  for (;;) {
    ssize_t got = read(fd, buf, n);
    if (got >= 0)
      return got;
    if (errno != EINTR) {
      snprintf(err, errlen, "%s", strerror(errno));
      return -1;
    }
  }
}

static void file_close(void *ud) {
  int *fdp = ud;
  close(*fdp);
  free(fdp);
}

static int source_from_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  mx_source *s = mx_source_new(L); /* closed until filled in; made first, as it can raise */
  int *fdp = malloc(sizeof *fdp);
  if (!fdp)
    return luaL_error(L, "source.from_file: not enough memory");
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    free(fdp);
    return luaL_error(L, "source.from_file: %s: %s", path, strerror(errno));
  }
  struct stat st;
  *fdp = fd;
  s->read = file_read;
  s->close = file_close;
  s->ud = fdp;
  s->size = (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) ? (int64_t)st.st_size : -1;
  s->closed = 0;
  return 1;
}

/* ---- a string: the Lua string is kept alive as the userdata's user value ---- */

typedef struct {
  const char *data;
  size_t len, pos;
} string_src;

static ssize_t string_read(void *ud, char *buf, size_t n, char *err, size_t errlen) {
  (void)err;
  (void)errlen;
  string_src *ss = ud;
  size_t left = ss->len - ss->pos;
  if (n > left)
    n = left;
  memcpy(buf, ss->data + ss->pos, n);
  ss->pos += n;
  return (ssize_t)n;
}

static void string_close(void *ud) {
  free(ud);
}

static int source_from_string(lua_State *L) {
  size_t len;
  const char *data = luaL_checklstring(L, 1, &len);
  mx_source *s = mx_source_new(L); /* closed, so a failure below leaks nothing */
  string_src *ss = malloc(sizeof *ss);
  if (!ss)
    return luaL_error(L, "source.from_string: not enough memory");
  *ss = (string_src){data, len, 0};
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  s->read = string_read;
  s->close = string_close;
  s->ud = ss;
  s->size = (int64_t)len;
  s->closed = 0;
  return 1;
}

static const luaL_Reg source_funcs[] = {
    {"from_file", source_from_file}, {"from_string", source_from_string}, {NULL, NULL}};

int luaopen_myrmex_core_source(lua_State *L) {
  ensure_metatable(L);
  luaL_newlib(L, source_funcs);
  return 1;
}
