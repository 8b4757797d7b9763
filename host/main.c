/*
 * myrmex: run container pipelines written as Lua recipes.
 *
 * main() only creates the state and calls pmain() under lua_pcall, so that even argument
 * handling runs protected; the command line itself is parsed by the embedded Lua module
 * myrmex.cli, which returns the exit status.
 */
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "host.h"
#include "runtime.h"

static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  mx_open(L);
  mx_install_signals(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "myrmex.cli");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "main");
  lua_createtable(L, argc, 0);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_call(L, 1, 1);
  return 1;
}

/* luaL_newstate would install these two; lua_newstate (for our allocator) does not. */
static int panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  fprintf(stderr, "myrmex: unprotected Lua error: %s\n", msg ? msg : "(not a string)");
  return 0; /* abort() follows */
}

static void warnf(void *ud, const char *msg, int tocont) {
  static int continuing = 0;
  (void)ud;
  if (!continuing && msg[0] == '@')
    return; /* control messages such as "@on" */
  fprintf(stderr, "%s%s%s", continuing ? "" : "myrmex: Lua warning: ", msg, tocont ? "" : "\n");
  continuing = tocont;
}

/* Message handler for failures outside any recipe (a bug in myrmex itself). */
static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

int main(int argc, char **argv) {
  static mx_alloc_state heap = {0, 0, 0};
  lua_State *L = lua_newstate(mx_alloc, &heap);
  if (L == NULL) {
    fprintf(stderr, "myrmex: cannot create Lua state: not enough memory\n");
    return 1;
  }
  /* Generational: a recipe makes many short-lived tables (decoded replies, events) around a
   * few long-lived ones; measured, it halves the k8s apply benchmark's client CPU. */
  lua_gc(L, LUA_GCGEN, 0, 0);
  lua_atpanic(L, panic);
  lua_setwarnf(L, warnf, NULL);
  lua_pushcfunction(L, msghandler);
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  int status = lua_pcall(L, 2, 1, 1);
  int code;
  if (status != LUA_OK) {
    fprintf(stderr, "myrmex: internal error: %s\n", lua_tostring(L, -1));
    code = 1;
  } else {
    code = (int)luaL_optinteger(L, -1, 0);
  }
  fflush(stdout);
  lua_close(L);
  return code;
}
