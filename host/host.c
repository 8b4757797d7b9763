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
 * A signal handler may only set flags and hooks: lua_sethook is the one Lua call that is
 * safe there (lua.c relies on it too). The hook, mx_interrupt_hook, turns the flag into an
 * Interrupted error at the next instruction, and raising (rather than exiting) is what lets
 * <close> handlers and cleanup steps remove what a recipe created. No hook runs otherwise: a
 * permanent count hook made every VM instruction slower (16% of a scan pipeline).
 *
 * Hooks belong to a thread, so the handler sets one on every thread that is running: the
 * main thread and each coroutine being resumed, which coroutine.resume and coroutine.wrap
 * record here. A coroutine spinning in Lua would otherwise never see a hook set on the main
 * thread.
 *
 * Only the first signal becomes an Interrupted error. The same signal often comes twice:
 * timeout(1) and CI runners send it to the process and then to its process group, and under
 * load the second one lands after the first was raised, in the middle of the cleanup it
 * started (a parallel branch's coroutine.close, a <close> handler removing a container); a
 * second error there skipped that cleanup. So a repeat only counts, and the third signal
 * gives up on cleanup: it exits at once with 128 + the first signal (130 or 143).
 */
#define MAX_RUNNING 200 /* Lua's own C-call limit stops deeper resume nesting first */
static lua_State *volatile running[MAX_RUNNING];
static volatile sig_atomic_t nrunning = 0;
static volatile sig_atomic_t signal_count = 0;

static void hook_running(void) {
  int n = nrunning < MAX_RUNNING ? nrunning : MAX_RUNNING;
  for (int i = 0; i < n; i++)
    lua_sethook(running[i], mx_interrupt_hook, LUA_MASKCOUNT, 1);
}

static void on_signal(int sig) {
  if (++signal_count >= 3)
    _exit(128 + (mx_interrupt_signal ? mx_interrupt_signal : sig));
  if (mx_interrupt_signal != 0)
    return; /* a repeat: the run is already being stopped, its cleanup must not be cut short */
  mx_interrupt_signal = sig;
  mx_interrupt_pending = 1;
  hook_running();
}

/*
 * Cleanup an interruption must not cut short: a <close> handler run by the end of its block
 * (Lua names its frame the "close" metamethod) on any running thread, or anything under
 * coroutine.close (parallel closing a finished branch runs the <close> variables its error
 * left pending). The interruption stays pending and is raised once that returns; a handler
 * removing a container would otherwise stop half-way, leaving the container. Only walked
 * when a signal is pending (mx_interrupt_take, the hook).
 */
static volatile sig_atomic_t closing = 0; /* coroutine.close calls in progress */

static int in_close_handler(lua_State *L) {
  lua_Debug ar;
  for (int level = 0; lua_getstack(L, level, &ar); level++) {
    if (lua_getinfo(L, "n", &ar) && ar.namewhat && strcmp(ar.namewhat, "metamethod") == 0 &&
        ar.name && strcmp(ar.name, "close") == 0)
      return 1;
  }
  return 0;
}

static int interrupt_deferred(void) {
  if (closing > 0)
    return 1;
  int n = nrunning < MAX_RUNNING ? nrunning : MAX_RUNNING;
  for (int i = 0; i < n; i++)
    if (in_close_handler(running[i]))
      return 1;
  return 0;
}

/* coroutine.close, counted in `closing`; an interruption that waited for it is raised by the
 * caller's next instruction. */
static int close_recorded(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTHREAD); /* here, so that the message names 'close' */
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  closing = closing + 1;
  int status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
  closing = closing - 1;
  if (mx_interrupt_pending)
    lua_sethook(L, mx_interrupt_hook, LUA_MASKCOUNT, 1);
  if (status != LUA_OK)
    return lua_error(L);
  return lua_gettop(L);
}

/* Calls upvalue 1 (the standard resume or a wrap function) with the stack's arguments while
 * `co` is recorded as running. */
static int call_running(lua_State *L, lua_State *co) {
  int depth = nrunning;
  if (depth < MAX_RUNNING)
    running[depth] = co;
  nrunning = depth + 1;
  if (mx_interrupt_pending) /* a signal that came before co was recorded */
    lua_sethook(co, mx_interrupt_hook, LUA_MASKCOUNT, 1);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  int status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
  nrunning = depth;
  if (status != LUA_OK)
    return lua_error(L);
  return lua_gettop(L);
}

static int resume_recorded(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTHREAD); /* here, so that the message names 'resume' */
  return call_running(L, lua_tothread(L, 1));
}

static int wrapped_recorded(lua_State *L) {
  return call_running(L, lua_tothread(L, lua_upvalueindex(2)));
}

/* coroutine.wrap: the standard one's function, with its thread (its upvalue) recorded. */
static int wrap_recorded(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  if (lua_getupvalue(L, -1, 1) == NULL || !lua_isthread(L, -1))
    return luaL_error(L, "coroutine.wrap: unexpected standard library");
  lua_pushcclosure(L, wrapped_recorded, 2);
  return 1;
}

static void record_coroutines(lua_State *L) {
  lua_getglobal(L, "coroutine");
  lua_getfield(L, -1, "resume");
  lua_pushcclosure(L, resume_recorded, 1);
  lua_setfield(L, -2, "resume");
  lua_getfield(L, -1, "wrap");
  lua_pushcclosure(L, wrap_recorded, 1);
  lua_setfield(L, -2, "wrap");
  lua_getfield(L, -1, "close");
  lua_pushcclosure(L, close_recorded, 1);
  lua_setfield(L, -2, "close");
  lua_pop(L, 1);
  mx_interrupt_deferred = interrupt_deferred;
}

void mx_install_signals(lua_State *L) {
  struct sigaction sa;
  running[0] = L;
  nrunning = 1;
  record_coroutines(L);
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  /* Each blocks the other while it runs, so the two never interleave in on_signal. */
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGINT);
  sigaddset(&sa.sa_mask, SIGTERM);
  /* No SA_RESTART: a blocking poll() returns EINTR and the waiter sees the flag at once. */
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
}
