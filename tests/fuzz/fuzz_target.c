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

/*
 * Lua code is not compiled with coverage instrumentation, so without help libFuzzer would be
 * blind inside the Lua parsers (it sees only the C it calls). A line hook turns each
 * (previous line, line) pair of Lua code into a counter in libFuzzer's extra-counters
 * section: edge coverage of the Lua parsers, the way luzer and atheris feed interpreted code.
 * The chunk's source string is interned, so its address names the file.
 */
#define MX_LUA_EDGES (1u << 16)
__attribute__((used, section("__libfuzzer_extra_counters"))) static uint8_t lua_edges[MX_LUA_EDGES];
static uintptr_t prev_loc;

static void line_hook(lua_State *S, lua_Debug *ar) {
  if (!lua_getinfo(S, "S", ar))
    return;
  uintptr_t loc = ((uintptr_t)ar->source >> 4) * 2654435761u + (uintptr_t)ar->currentline;
  uint8_t *c = &lua_edges[(loc ^ prev_loc) & (MX_LUA_EDGES - 1)];
  if (*c < 255)
    (*c)++;
  prev_loc = loc >> 1;
}

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
  /* Coroutines made later inherit the hook (lua_newthread copies it). */
  lua_sethook(L, line_hook, LUA_MASKLINE, 0);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  prev_loc = 0;
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
