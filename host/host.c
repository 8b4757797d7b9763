/*
 * The Lua state every myrmex command runs in: standard libraries, the C bindings and the
 * embedded Lua half, and the signal plumbing.
 */
#include "host.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "embedded.h"
#include "runtime.h"

/* The preload loader for an embedded module: upvalue 1 is its index in mx_embedded_lua. */
static int load_embedded(lua_State *L) {
  const mx_embedded *m = &mx_embedded_lua[lua_tointeger(L, lua_upvalueindex(1))];
  if (luaL_loadbufferx(L, m->source, m->len, m->chunkname, "b") != LUA_OK)
    return lua_error(L);
  lua_pushstring(L, m->module);
  lua_call(L, 1, 1);
  return 1;
}

static void preload(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const mx_binding *b = mx_bindings; b->name; b++) {
    lua_pushcfunction(L, b->open);
    lua_setfield(L, -2, b->name);
  }
  /* With MYRMEX_LUA_PATH the files on disk win, so a developer edits without rebuilding. */
  if (getenv("MYRMEX_LUA_PATH") == NULL) {
    for (lua_Integer i = 0; mx_embedded_lua[i].module; i++) {
      lua_pushinteger(L, i);
      lua_pushcclosure(L, load_embedded, 1);
      lua_setfield(L, -2, mx_embedded_lua[i].module);
    }
  }
  lua_pop(L, 1);
}

static void prepend_lua_path(lua_State *L, const char *dir) {
  lua_getglobal(L, "package");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", dir, dir);
  lua_getfield(L, -2, "path");
  lua_concat(L, 2);
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
}

/* <prefix>/share/myrmex next to <prefix>/bin/myrmex, so an installed tree can be moved (or
 * installed with --prefix); the configured prefix otherwise. */
static void push_datadir(lua_State *L) {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) {
      *slash = '\0';
      char dir[4200];
      snprintf(dir, sizeof dir, "%s/../share/myrmex", exe);
      if (access(dir, R_OK) == 0) {
        lua_pushstring(L, dir);
        return;
      }
    }
  }
  lua_pushstring(L, MYRMEX_DATADIR);
}

void mx_open(lua_State *L) {
  luaL_openlibs(L);
  preload(L);
  const char *dev = getenv("MYRMEX_LUA_PATH");
  if (dev && *dev)
    prepend_lua_path(L, dev);
  lua_pushstring(L, mx_version);
  lua_setglobal(L, "_MYRMEX_VERSION");
  push_datadir(L);
  lua_setglobal(L, "_MYRMEX_DATADIR");
}

/*
 * A signal handler may not touch the Lua state, so it only sets flags; a count hook, which
 * coroutines inherit from the main thread, turns the flag into an Interrupted error at the
 * next safe point. Raising (rather than exiting) is what lets <close> handlers and cleanup
 * steps remove what a recipe created. A third signal gives up on cleanup.
 */
static volatile sig_atomic_t signal_count = 0;

static void on_signal(int sig) {
  mx_interrupt_signal = sig;
  mx_interrupt_pending = 1;
  if (++signal_count >= 3)
    _exit(130);
}

static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  if (mx_interrupt_take())
    mx_raise_interrupted(L);
  if (mx_deadline > 0 && mx_monotonic() > mx_deadline) {
    mx_deadline = 0; /* once: cleanup after the error may run */
    mx_raise_error(L, "Timeout", NULL, "sandbox: the recipe's time limit was exceeded");
  }
}

void mx_install_signals(lua_State *L) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  /* No SA_RESTART: a blocking poll() returns EINTR and the waiter sees the flag at once. */
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  lua_sethook(L, interrupt_hook, LUA_MASKCOUNT, 1000);
}
