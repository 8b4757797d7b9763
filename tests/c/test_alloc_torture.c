/*
 * Allocation-failure torture, as Lua's ltests.c and curl's torture mode do it: each operation
 * over the C bindings is run again and again with allocations failing from the Nth on,
 * N = 1, 2, ... until it succeeds. Every failing run must end in a clean Lua error (never a
 * crash, never a Lua runtime error in our code), and the state must stay usable.
 *
 * The Lua allocator and the C heap both count: malloc, calloc and realloc are replaced in this
 * executable (calling glibc's __libc_* underneath), so the failure also lands inside cJSON,
 * libyaml, curl and OpenSSL. Leaks are checked three ways:
 * - here, by counting live C heap blocks across a second torture pass;
 * - by valgrind --leak-check=full, under which the test puts itself when valgrind is
 *   installed (valgrind replaces malloc, so there only Lua's allocations fail);
 * - by LeakSanitizer in CI's ASan pass (ASan owns malloc; cJSON's hooks stand in for it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#if defined(__SANITIZE_ADDRESS__)
#define MX_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MX_ASAN 1
#endif
#endif

int luaopen_myrmex_core_json(lua_State *L);
int luaopen_myrmex_core_yaml(lua_State *L);
int luaopen_myrmex_core_digest(lua_State *L);
int luaopen_myrmex_core_source(lua_State *L);
int luaopen_myrmex_core_archive(lua_State *L);
int luaopen_myrmex_core_transport(lua_State *L);
int luaopen_myrmex_core_runtime(lua_State *L);

static long alloc_count; /* allocations since the operation was armed */
static long fail_at;     /* 0 = never fail */
static int failed;       /* the armed failure happened: FAILED_LUA or FAILED_C */
enum { FAILED_LUA = 1, FAILED_C = 2 };

static int c_heap_too; /* the case lets C heap allocations fail too */

static int should_fail(int who) {
  if (fail_at == 0 || (who == FAILED_C && !c_heap_too))
    return 0;
  /* From the Nth on, every allocation fails, as when memory has really run out: a single
   * failure would mostly be absorbed by Lua's emergency collection and retry. */
  if (++alloc_count >= fail_at) {
    if (!failed)
      failed = who;
    return 1;
  }
  return 0;
}

#ifndef MX_ASAN
void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t n);
void __libc_free(void *p);
#define heap_realloc __libc_realloc
#define heap_free __libc_free

/* Blocks of the C heap in use: valgrind replaces these functions with its own, so for the
 * runs where C allocations fail, this count is the leak check. */
static long c_live;

void *malloc(size_t n) {
  void *p = should_fail(FAILED_C) ? NULL : __libc_malloc(n);
  c_live += p != NULL;
  return p;
}
void *calloc(size_t n, size_t size) {
  void *p = should_fail(FAILED_C) ? NULL : __libc_calloc(n, size);
  c_live += p != NULL;
  return p;
}
void *realloc(void *p, size_t n) {
  if (n == 0) {
    c_live -= p != NULL;
    return __libc_realloc(p, n);
  }
  if (should_fail(FAILED_C))
    return NULL;
  void *q = __libc_realloc(p, n);
  c_live += p == NULL && q != NULL;
  return q;
}
void free(void *p) {
  c_live -= p != NULL;
  __libc_free(p);
}
static long heap_live(void) {
  return c_live;
}
#else
#define heap_realloc realloc
#define heap_free free
static long heap_live(void) {
  return 0; /* LeakSanitizer checks at exit */
}
static void *cjson_malloc(size_t n) {
  return should_fail(FAILED_C) ? NULL : malloc(n);
}
#endif

/* Only growth can fail: Lua assumes a shrinking or freeing call always succeeds. */
static void *torture_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  if (nsize == 0) {
    heap_free(ptr);
    return NULL;
  }
  if ((ptr == NULL || nsize > osize) && should_fail(FAILED_LUA))
    return NULL;
  return heap_realloc(ptr, nsize);
}

static const struct {
  const char *name;
  lua_CFunction open;
} bindings[] = {
    {"myrmex.core.json", luaopen_myrmex_core_json},
    {"myrmex.core.yaml", luaopen_myrmex_core_yaml},
    {"myrmex.core.digest", luaopen_myrmex_core_digest},
    {"myrmex.core.source", luaopen_myrmex_core_source},
    {"myrmex.core.archive", luaopen_myrmex_core_archive},
    {"myrmex.core.transport", luaopen_myrmex_core_transport},
    {"myrmex.core.runtime", luaopen_myrmex_core_runtime},
};

/* The repository root, from this file's path, so the Lua modules the bindings use for their
 * error objects (myrmex.errors) load from lua/. */
static void set_lua_path(lua_State *L) {
  char root[4096];
  snprintf(root, sizeof root, "%s", __FILE__);
  char *cut = strstr(root, "/tests/c/");
  if (cut)
    *cut = '\0';
  lua_getglobal(L, "package");
  lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua", root, root);
  lua_setfield(L, -2, "path");
  lua_getfield(L, -1, "preload");
  for (size_t i = 0; i < sizeof bindings / sizeof bindings[0]; i++) {
    lua_pushcfunction(L, bindings[i].open);
    lua_setfield(L, -2, bindings[i].name);
  }
  lua_pop(L, 2);
}

/* A failed run's error must be about memory when Lua's allocation failed: Lua's own message,
 * or a binding's own report. When a library's malloc failed, the library's own error is
 * accepted (cJSON_Parse returns NULL for a syntax error and a failed allocation alike, libyaml
 * says "memory error", curl "Out of memory"), as long as it is an error value and not a Lua
 * runtime error in our code. */
static int clean_error(lua_State *L, int status) {
  if (status == LUA_ERRMEM)
    return 1;
  const char *msg = NULL;
  if (lua_type(L, -1) == LUA_TSTRING)
    msg = lua_tostring(L, -1);
  else if (lua_type(L, -1) == LUA_TTABLE && lua_getfield(L, -1, "message") == LUA_TSTRING)
    msg = lua_tostring(L, -1);
  if (!msg)
    return 0;
  if (strstr(msg, "attempt to "))
    return 0;
  if (failed == FAILED_C)
    return 1;
  return strstr(msg, "not enough memory") || strstr(msg, "out of memory");
}

typedef struct {
  const char *name;
  const char *setup; /* run once, unarmed: returns the operation as a function */
  int c_heap;        /* fail C heap allocations too (see LIBARCHIVE below) */
} torture_case;

/* libarchive treats some failed mallocs as fatal (__archive_errx: "Fatal Internal Error in
 * libarchive: Out of memory", then exit), so for its cases only Lua's allocations fail. */
#define LIBARCHIVE 0

/*
 * Runs one case with N = 1, 2, ... until a run succeeds. Returns the number of failing runs,
 * or -1 after printing what went wrong.
 */
/* Runs the operation with allocations failing from N = 1, 2, ... on until a run succeeds;
 * returns the number of failing runs, or -1 after printing what went wrong. */
static long torture_pass(lua_State *L, int op, const torture_case *tc) {
  long n;
  for (n = 1; n < 200000; n++) {
    lua_gc(L, LUA_GCCOLLECT);
    lua_pushvalue(L, op);
    alloc_count = 0;
    failed = 0;
    fail_at = n;
    c_heap_too = tc->c_heap;
    int status = lua_pcall(L, 0, 0, 0);
    fail_at = 0;
    if (status == LUA_OK && !failed)
      return n - 1;
    if (status == LUA_OK)
      continue; /* the failure was absorbed (e.g. an emergency collection made room) */
    if (!clean_error(L, status)) {
      lua_settop(L, op + 1);
      fprintf(stderr, "%s: allocation %ld failed with an unclean error: %s\n", tc->name, n,
              luaL_tolstring(L, -1, NULL));
      return -1;
    }
    lua_settop(L, op);
  }
  fprintf(stderr, "%s: still failing after %ld allocations\n", tc->name, n);
  return -1;
}

/* Runs one case: an unarmed run (lazy one-time set-up, such as OpenSSL's tables, happens
 * there), two torture passes, then an unarmed run again (the state is still whole). A library
 * may keep a cache filled on a failing path (curl's DNS cache), so the C heap may grow in the
 * first pass; growth in the second pass is a leak. */
static long run_case(const torture_case *tc) {
  lua_State *L = lua_newstate(torture_alloc, NULL);
  luaL_openlibs(L);
  set_lua_path(L);
  if (luaL_dostring(L, tc->setup) != LUA_OK || !lua_isfunction(L, -1)) {
    fprintf(stderr, "%s: setup failed: %s\n", tc->name, lua_tostring(L, -1));
    lua_close(L);
    return -1;
  }
  int op = lua_gettop(L);
  long runs = -1, grew = 0;
  lua_pushvalue(L, op);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
    fprintf(stderr, "%s: unarmed run failed: %s\n", tc->name, lua_tostring(L, -1));
    goto done;
  }
  if (torture_pass(L, op, tc) < 0)
    goto done;
  lua_settop(L, op);
  lua_gc(L, LUA_GCCOLLECT);
  long base = heap_live();
  if ((runs = torture_pass(L, op, tc)) < 0)
    goto done;
  lua_pushvalue(L, op);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
    fprintf(stderr, "%s: unarmed run after the torture failed: %s\n", tc->name,
            lua_tostring(L, -1));
    runs = -1;
    goto done;
  }
  lua_settop(L, op);
  lua_gc(L, LUA_GCCOLLECT);
  grew = heap_live() - base;
  if (grew > 0) {
    fprintf(stderr, "%s: %ld C heap blocks leaked over the failing runs\n", tc->name, grew);
    runs = -1;
  }
done:
  lua_close(L);
  return runs;
}

static const torture_case cases[] = {
    {"json decode/encode",
     "local j = require('myrmex.core.json')\n"
     "local text = "
     "'{\"a\":[1,2.5,{\"b\":null}],\"c\":\"x\\\\u00e9\",\"d\":{},\"e\":[],\"f\":true}'\n"
     "return function()\n"
     "  local v = j.decode(text)\n"
     "  assert(j.decode(j.encode(v)).c == 'x\\u{e9}')\n"
     "  j.encode({1, 'two', {three = j.null}, j.array(), j.object()})\n"
     "end",
     1},
    {"json decode error",
     "local j = require('myrmex.core.json')\n"
     "return function() assert(not pcall(j.decode, '{\"a\": [1, 2')) end",
     1},
    {"yaml load/dump",
     "local y = require('myrmex.core.yaml')\n"
     "local text = 'a: [1, 2.5, null]\\nb: {c: d, e: \"f\"}\\nanchor: &x {k: v}\\nref: *x\\n"
     "---\\n- on\\n- \"1.20\"\\n- |\\n  block\\n'\n"
     "return function()\n"
     "  local docs = y.load_all(text)\n"
     "  assert(#docs == 2)\n"
     "  y.dump_all(docs)\n"
     "  y.resolve('0777')\n"
     "end",
     1},
    {"yaml load error",
     "local y = require('myrmex.core.yaml')\n"
     "return function() assert(not pcall(y.load_all, 'a: [1, 2\\n  b: }')) end",
     1},
    {"digest",
     "local d = require('myrmex.core.digest')\n"
     "local path = os.tmpname()\n"
     "local f = assert(io.open(path, 'wb')) f:write(('x'):rep(70000)) f:close()\n"
     "return function()\n"
     "  local h = d.new('sha256')\n"
     "  h:update('abc'):update(('y'):rep(1000))\n"
     "  h:final()\n"
     "  d.string('abc', 'sha512')\n"
     "  assert(d.file(path, 'sha256'))\n"
     "end",
     1},
    {"source",
     "local s = require('myrmex.core.source')\n"
     "local path = os.tmpname()\n"
     "local f = assert(io.open(path, 'wb')) f:write(('z'):rep(100000)) f:close()\n"
     "return function()\n"
     "  local a = s.from_string('hello world')\n"
     "  assert(a:read(5) == 'hello') a:close()\n"
     "  local b = s.from_file(path)\n"
     "  local n = 0\n"
     "  for chunk in function() return b:read() end do n = n + #chunk end\n"
     "  assert(n == 100000 and b:size() == 100000) b:close()\n"
     "end",
     1},
    {"archive writer and reader",
     "local ar = require('myrmex.core.archive')\n"
     "return function()\n"
     "  local w = ar.writer(nil)\n"
     "  w:add{path = 'd', type = 'dir'}\n"
     "  w:add{path = 'd/a.txt', data = 'hello'}\n"
     "  w:add{path = 'd/l', type = 'symlink', linkname = 'a.txt'}\n"
     "  local src = w:source()\n"
     "  local r = ar.open(src)\n"
     "  local seen = 0\n"
     "  for e in r:entries() do\n"
     "    seen = seen + 1\n"
     "    if e.path == 'd/a.txt' then assert(r:read_all() == 'hello') end\n"
     "  end\n"
     "  r:close()\n"
     "  assert(seen == 3)\n"
     "end",
     LIBARCHIVE},
    {"archive match",
     "local ar = require('myrmex.core.archive')\n"
     "return function()\n"
     "  assert(ar.match({'**/*.o', '!keep.o', 'build/'}, 'src/x.o'))\n"
     "end",
     LIBARCHIVE},
    {"archive extract",
     "local ar = require('myrmex.core.archive')\n"
     "local rt = require('myrmex.core.runtime')\n"
     "local w = ar.writer(nil)\n"
     "w:add{path = 'x/y.txt', data = 'data'}\n"
     "w:add{path = 'x/z', type = 'symlink', linkname = 'y.txt'}\n"
     "local tar = w:source():read(1 << 20)\n"
     "local dest = rt.mkdtemp('/tmp/mx-torture-XXXXXX')\n"
     "local s = require('myrmex.core.source')\n"
     "local i = 0\n"
     "return function()\n"
     "  i = i + 1\n"
     "  ar.extract(s.from_string(tar), dest .. '/' .. i)\n"
     "end",
     LIBARCHIVE},
    {"transport start without network",
     "local tr = require('myrmex.core.transport')\n"
     "return function()\n"
     "  local x = tr.start{url = 'http://127.0.0.1:9/nothing', method = 'PUT', body = 'abc',\n"
     "    headers = {'X-A: b', 'Content-Type: text/plain'}, connect_timeout_ms = 2000,\n"
     "    timeout_ms = 5000}\n"
     "  while not x:done() do tr.perform(50) end\n"
     "  local res, kind = x:result()\n"
     "  assert(res == nil and kind ~= nil)\n"
     "  x:close()\n"
     "  tr.escape('a b/c')\n"
     "end",
     1},
};

/*
 * ctest runs this binary directly (tests/c is globbed with no wrapper), so it puts itself under
 * valgrind when valgrind is installed; a leak or a memory error then fails the test. An ASan
 * build is not re-run (the two do not mix; LeakSanitizer checks leaks there).
 */
static void reexec_under_valgrind(char **argv) {
#ifndef MX_ASAN
  if (getenv("MX_TORTURE_NO_VALGRIND") || access("/usr/bin/valgrind", X_OK) != 0)
    return;
  setenv("MX_TORTURE_NO_VALGRIND", "1", 1);
  char *args[] = {"/usr/bin/valgrind",
                  "--quiet",
                  "--error-exitcode=1",
                  "--leak-check=full",
                  "--errors-for-leak-kinds=definite,indirect",
                  argv[0],
                  NULL};
  execv(args[0], args);
  perror("valgrind"); /* not fatal: run without it */
#else
  (void)argv;
#endif
}

int main(int argc, char **argv) {
  (void)argc;
  reexec_under_valgrind(argv);
#ifdef MX_ASAN
  cJSON_Hooks hooks = {cjson_malloc, free};
  cJSON_InitHooks(&hooks);
#endif
  int bad = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    long runs = run_case(&cases[i]);
    if (runs < 0) {
      bad++;
      printf("not ok - %s\n", cases[i].name);
    } else {
      printf("ok - %s: %ld allocation failures survived\n", cases[i].name, runs);
    }
  }
  return bad ? 1 : 0;
}
