/*
 * Build-time helper: compiles one Lua file to bytecode with the liblua myrmex links, so the
 * embedded modules skip the parser at start-up and always match the runtime's format.
 * Debug info (line numbers) is kept, and the chunk is named "@" INPUT as luaL_loadfile names
 * it: run from lua/ with INPUT = myrmex/x.lua, tracebacks read "myrmex/x.lua:12:".
 *   luadump INPUT OUTPUT
 */
#include <stdio.h>

#include <lauxlib.h>

static int write_chunk(lua_State *L, const void *p, size_t n, void *ud) {
  (void)L;
  return fwrite(p, 1, n, (FILE *)ud) == n ? 0 : 1;
}

static int dump(lua_State *L, const char *in, const char *outpath) {
  if (luaL_loadfilex(L, in, "t") != LUA_OK) {
    fprintf(stderr, "luadump: %s\n", lua_tostring(L, -1));
    return 1;
  }
  FILE *out = fopen(outpath, "wb");
  if (!out) {
    perror(outpath);
    return 1;
  }
  int bad = lua_dump(L, write_chunk, out, 0);
  if (fclose(out) != 0 || bad) {
    fprintf(stderr, "luadump: cannot write %s\n", outpath);
    remove(outpath);
    return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: luadump INPUT OUTPUT\n");
    return 2;
  }
  lua_State *L = luaL_newstate();
  int rc = L ? dump(L, argv[1], argv[2]) : 1;
  if (L)
    lua_close(L);
  return rc;
}
