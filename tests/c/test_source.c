/*
 * The mx_source contract (bindings/source.h) as consumers rely on it: reads reassemble the
 * bytes whatever the chunk size, size is known for strings and regular files, close runs
 * exactly once however many of close()/__close/__gc/a failed read reach it.
 */
#include "source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

int luaopen_myrmex_core_source(lua_State *L);

#include "check.h"

static lua_State *new_state(void) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "source", luaopen_myrmex_core_source, 1);
  lua_pop(L, 1);
  return L;
}

/* Drain through the C interface with an awkward chunk size; returns the bytes read. */
static size_t drain(mx_source *s, char *out, size_t cap, size_t chunk) {
  size_t total = 0;
  char err[128];
  for (;;) {
    size_t want = chunk < cap - total ? chunk : cap - total;
    ssize_t got = s->read(s->ud, out + total, want, err, sizeof err);
    if (got <= 0)
      return got < 0 ? (size_t)-1 : total;
    total += (size_t)got;
  }
}

static void test_from_string(void) {
  lua_State *L = new_state();
  char expect[10007];
  for (size_t i = 0; i < sizeof expect; i++)
    expect[i] = (char)(i * 131 + 7);
  lua_getglobal(L, "source");
  lua_getfield(L, -1, "from_string");
  lua_pushlstring(L, expect, sizeof expect);
  lua_call(L, 1, 1);
  mx_source *s = mx_source_check(L, -1);
  CHECK(s->size == (int64_t)sizeof expect);
  /* The Lua string must outlive any other reference to it: the source keeps it. */
  lua_gc(L, LUA_GCCOLLECT);
  char got[sizeof expect + 16];
  CHECK(drain(s, got, sizeof got, 97) == sizeof expect);
  CHECK(memcmp(got, expect, sizeof expect) == 0);
  lua_close(L);
}

static void test_from_file(void) {
  char path[] = "/tmp/myrmex-test-source-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  const char text[] = "layer bytes\n";
  CHECK(write(fd, text, sizeof text - 1) == (ssize_t)(sizeof text - 1));
  close(fd);

  lua_State *L = new_state();
  lua_settop(L, 0);
  lua_getglobal(L, "source");
  lua_getfield(L, -1, "from_file");
  lua_pushstring(L, path);
  lua_call(L, 1, 1);
  mx_source *s = mx_source_check(L, -1);
  CHECK(s->size == (int64_t)(sizeof text - 1));
  char got[64];
  CHECK(drain(s, got, sizeof got, 5) == sizeof text - 1);
  CHECK(memcmp(got, text, sizeof text - 1) == 0);

  /* A missing file is an error naming the function and the path. */
  lua_pushfstring(L, "return source.from_file('%s.missing')", path);
  CHECK(luaL_dostring(L, lua_tostring(L, -1)) != LUA_OK);
  const char *msg = lua_tostring(L, -1);
  CHECK(msg && strstr(msg, "source.from_file") && strstr(msg, ".missing") &&
        strstr(msg, "No such file"));
  lua_close(L);
  unlink(path);
}

/* A producer that counts its closes and fails on demand. */
typedef struct {
  int closes;
  int fail;
} probe;

static ssize_t probe_read(void *ud, char *buf, size_t n, char *err, size_t errlen) {
  probe *p = ud;
  if (p->fail) {
    snprintf(err, errlen, "disk on fire");
    return -1;
  }
  if (n > 3)
    n = 3;
  memcpy(buf, "abc", n);
  return (ssize_t)n;
}

static void probe_close(void *ud) {
  ((probe *)ud)->closes++;
}

static void push_probe(lua_State *L, probe *p) {
  mx_source *s = mx_source_new(L);
  s->read = probe_read;
  s->close = probe_close;
  s->ud = p;
  s->closed = 0;
}

static void test_close_once(void) {
  lua_State *L = new_state();
  probe p = {0, 0};
  push_probe(L, &p);
  lua_setglobal(L, "s");
  int rc =
      luaL_dostring(L, "assert(s:read(10) == 'abc'); s:close(); s:close();"
                       "local ok, e = pcall(s.read, s); assert(not ok and e:find('after close'))"
                       " do local t <close> = s end; s = nil; collectgarbage()");
  if (rc != LUA_OK)
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
  CHECK(rc == LUA_OK);
  CHECK(p.closes == 1);

  /* A failed read closes the producer; the later __gc must not close it again. */
  probe q = {0, 1};
  push_probe(L, &q);
  lua_setglobal(L, "s");
  CHECK(luaL_dostring(L, "return s:read()") != LUA_OK);
  CHECK(strstr(lua_tostring(L, -1), "disk on fire") != NULL);
  CHECK(q.closes == 1);
  CHECK(luaL_dostring(L, "s = nil; collectgarbage()") == LUA_OK);
  CHECK(q.closes == 1);

  /* A fresh source that no producer filled in is inert: closing it calls nothing. */
  mx_source *blank = mx_source_new(L);
  mx_source_close(blank);
  CHECK(blank->closed == 1);
  lua_close(L);
  CHECK(q.closes == 1 && p.closes == 1);
}

int main(void) {
  test_from_string();
  test_from_file();
  test_close_once();
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  puts("source: ok");
  return 0;
}
