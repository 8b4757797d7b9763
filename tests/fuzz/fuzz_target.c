/*
 * One libFuzzer harness for every parser that reads outside input. The parsers are reached
 * through their public Lua functions, so the C code (cJSON and libyaml glue, tar reading) and
 * the Lua parsers (references, challenges, Dockerfiles, reports) are fuzzed the same way.
 * tests/fuzz/targets.lua defines each target as a function of the input bytes; it raises only
 * when an oracle fails (a parser failed with something other than its documented clean error),
 * and the harness turns that into a crash libFuzzer records. Memory errors are caught by ASan.
 *
 * Built once per target name (-DMX_FUZZ_TARGET="json") when MYRMEX_FUZZ=ON with clang.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "host.h"
#include "runtime.h"

static lua_State *L;
static int target_ref = LUA_NOREF;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  static mx_alloc_state heap = {0, 0, 0};
  L = lua_newstate(mx_alloc, &heap);
  mx_open(L);
  if (luaL_dofile(L, MX_FUZZ_TARGETS) != LUA_OK) {
    fprintf(stderr, "fuzz: cannot load %s: %s\n", MX_FUZZ_TARGETS, lua_tostring(L, -1));
    exit(2);
  }
  lua_getfield(L, -1, MX_FUZZ_TARGET);
  if (!lua_isfunction(L, -1)) {
    fprintf(stderr, "fuzz: no target '%s' in %s\n", MX_FUZZ_TARGET, MX_FUZZ_TARGETS);
    exit(2);
  }
  target_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, 0);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, target_ref);
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    const char *msg = luaL_tolstring(L, -1, NULL);
    fprintf(stderr, "fuzz: oracle failed in target %s: %s\n", MX_FUZZ_TARGET, msg);
    abort();
  }
  lua_settop(L, 0);
  return 0;
}
