/*
 * myrmex.core.runtime: the few OS facts the Lua half needs and plain Lua lacks
 * (directory listing, stat, a monotonic clock, terminals, the interrupt flag).
 */
#include "runtime.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>

volatile sig_atomic_t mx_interrupt_signal = 0;
volatile sig_atomic_t mx_interrupt_pending = 0;

double mx_deadline = 0;

#define DEADLINE_COUNT 1000 /* VM instructions between two checks of a sandbox deadline */

/*
 * Turns a pending signal or a passed deadline into a Lua error at a safe point. A count hook
 * makes every VM instruction slower (Lua checks the count on each one), so it is installed
 * only while needed: by the host's signal handler, one-shot, and by set_limits for the
 * lifetime of a deadline.
 */
void mx_interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  /* lua_sethook walks the thread's call stack, so the deadline's hook is set again only when
   * a signal changed it (to a one-shot count of 1). */
  if (mx_deadline <= 0)
    lua_sethook(L, NULL, 0, 0);
  else if (lua_gethookcount(L) != DEADLINE_COUNT)
    lua_sethook(L, mx_interrupt_hook, LUA_MASKCOUNT, DEADLINE_COUNT);
  if (mx_interrupt_take())
    mx_raise_interrupted(L);
  if (mx_interrupt_pending && lua_gethookmask(L) == 0) /* deferred by cleanup: look again later */
    lua_sethook(L, mx_interrupt_hook, LUA_MASKCOUNT, MX_DEFERRED_COUNT);
  if (mx_deadline > 0 && mx_monotonic() > mx_deadline) {
    mx_deadline = 0; /* once: cleanup after the error may run */
    mx_raise_error(L, "Timeout", NULL, "sandbox: the recipe's time limit was exceeded");
  }
}

void *mx_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  mx_alloc_state *st = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    st->used -= old;
    return NULL;
  }
  if (st->limit && nsize > old && st->used - old + nsize > st->limit)
    return NULL; /* Lua turns this into a "not enough memory" error */
  void *p = realloc(ptr, nsize);
  if (p) {
    st->used = st->used - old + nsize;
    if (st->used > st->peak)
      st->peak = st->used;
  }
  return p;
}

static mx_alloc_state *alloc_state(lua_State *L) {
  void *ud;
  return lua_getallocf(L, &ud) == mx_alloc ? ud : NULL;
}

/* set_limits{memory=bytes, seconds=n}: cap the Lua heap and the wall time from now on. */
static int rt_set_limits(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "memory");
  if (!lua_isnil(L, -1)) {
    mx_alloc_state *st = alloc_state(L);
    if (!st)
      return luaL_error(L, "runtime.set_limits: this Lua state has no counting allocator");
    st->limit = (size_t)luaL_checkinteger(L, -1);
  }
  lua_getfield(L, 1, "seconds");
  if (!lua_isnil(L, -1)) {
    double secs = luaL_checknumber(L, -1);
    mx_deadline = secs > 0 ? mx_monotonic() + secs : 0;
    /* Coroutines copy their creator's hook, so the branches a recipe starts later see it. */
    if (mx_deadline > 0)
      lua_sethook(L, mx_interrupt_hook, LUA_MASKCOUNT, DEADLINE_COUNT);
  }
  return 0;
}

/* memory() -> bytes in use, peak bytes, limit (0 = none) of the Lua heap. */
static int rt_memory(lua_State *L) {
  mx_alloc_state *st = alloc_state(L);
  if (!st) {
    lua_pushinteger(L, (lua_Integer)lua_gc(L, LUA_GCCOUNT, 0) * 1024);
    return 1;
  }
  lua_pushinteger(L, (lua_Integer)st->used);
  lua_pushinteger(L, (lua_Integer)st->peak);
  lua_pushinteger(L, (lua_Integer)st->limit);
  return 3;
}

int (*mx_interrupt_deferred)(void) = NULL;

int mx_interrupt_due(void) {
  return mx_interrupt_pending && !(mx_interrupt_deferred && mx_interrupt_deferred());
}

int mx_interrupt_take(void) {
  if (!mx_interrupt_due())
    return 0;
  mx_interrupt_pending = 0;
  return 1;
}

double mx_monotonic(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void mx_push_error(lua_State *L, const char *code, const char *engine, const char *message) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "myrmex.errors");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "new");
  lua_remove(L, -2);
  lua_createtable(L, 0, 3);
  lua_pushstring(L, code);
  lua_setfield(L, -2, "code");
  lua_pushstring(L, message);
  lua_setfield(L, -2, "message");
  if (engine) {
    lua_pushstring(L, engine);
    lua_setfield(L, -2, "engine");
  }
  lua_call(L, 1, 1);
}

int mx_raise_error(lua_State *L, const char *code, const char *engine, const char *message) {
  mx_push_error(L, code, engine, message);
  return lua_error(L);
}

int mx_raise_interrupted(lua_State *L) {
  return mx_raise_error(L, "Interrupted", NULL,
                        mx_interrupt_signal == SIGTERM ? "terminated" : "interrupted");
}

/* interrupted() -> true and the signal's number once SIGINT or SIGTERM came, false before:
 * it stays true after the Interrupted error was raised (and maybe caught), so the exit status
 * can still say the run was stopped. */
static int rt_interrupted(lua_State *L) {
  int sig = mx_interrupt_signal;
  lua_pushboolean(L, sig != 0);
  if (sig == 0)
    return 1;
  lua_pushinteger(L, sig);
  return 2;
}

/* interrupt_later(): an Interrupted error that was caught to let a state-changing request
 * finish is raised again by the next wait in C (transport, process, sleep) rather than at an
 * arbitrary instruction: no hook is set, so the code that receives the request's reply (a
 * container's id) keeps it until it makes its next call. No-op when no signal came. */
static int rt_interrupt_later(lua_State *L) {
  (void)L;
  if (mx_interrupt_signal != 0)
    mx_interrupt_pending = 1;
  return 0;
}

static int rt_check_interrupt(lua_State *L) {
  if (mx_interrupt_take())
    return mx_raise_interrupted(L);
  return 0;
}

static int rt_monotonic(lua_State *L) {
  lua_pushnumber(L, mx_monotonic());
  return 1;
}

/* Wall clock with sub-second precision, for log timestamps. */
static int rt_time(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
  return 1;
}

static int rt_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

static int rt_sleep(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    if (mx_interrupt_take())
      return mx_raise_interrupted(L);
  }
  return 0;
}

static const char *type_name(mode_t m) {
  if (S_ISREG(m))
    return "file";
  if (S_ISDIR(m))
    return "directory";
  if (S_ISLNK(m))
    return "link";
  return "other";
}

/* stat(path) -> {type=, size=, mode=, mtime=} or nil, message. lstat when follow == false. */
static int rt_stat(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int follow = lua_isnoneornil(L, 2) || lua_toboolean(L, 2);
  struct stat st;
  if ((follow ? stat(path, &st) : lstat(path, &st)) != 0) {
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: %s", path, strerror(errno));
    return 2;
  }
  lua_createtable(L, 0, 4);
  lua_pushstring(L, type_name(st.st_mode));
  lua_setfield(L, -2, "type");
  lua_pushinteger(L, (lua_Integer)st.st_size);
  lua_setfield(L, -2, "size");
  lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777));
  lua_setfield(L, -2, "mode");
  lua_pushinteger(L, (lua_Integer)st.st_mtime);
  lua_setfield(L, -2, "mtime");
  return 1;
}

/* listdir(path) -> sorted list of names (no "." or "..") or nil, message. */
static int rt_listdir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  DIR *d = opendir(path);
  if (!d) {
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: %s", path, strerror(errno));
    return 2;
  }
  lua_newtable(L);
  lua_Integer n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    lua_pushstring(L, e->d_name);
    lua_rawseti(L, -2, ++n);
  }
  closedir(d);
  /* Sorted so that discovery and listings are stable across file systems. */
  lua_getglobal(L, "table");
  lua_getfield(L, -1, "sort");
  lua_pushvalue(L, -3);
  lua_call(L, 1, 0);
  lua_pop(L, 1);
  return 1;
}

static int rt_realpath(lua_State *L) {
  char *p = realpath(luaL_checkstring(L, 1), NULL);
  if (!p) {
    luaL_pushfail(L);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  lua_pushstring(L, p);
  free(p);
  return 1;
}

static int rt_mkdtemp(lua_State *L) {
  const char *prefix = luaL_optstring(L, 1, "/tmp/myrmex-");
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, prefix);
  luaL_addstring(&b, "XXXXXX");
  luaL_pushresult(&b);
  char *tmpl = (char *)lua_tostring(L, -1);
  if (!mkdtemp(tmpl))
    return luaL_error(L, "runtime.mkdtemp: %s", strerror(errno));
  return 1;
}

static int rt_mkdir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  if (mkdir(path, (mode_t)luaL_optinteger(L, 2, 0755)) != 0 && errno != EEXIST) {
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: %s", path, strerror(errno));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int rt_chdir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  if (chdir(path) != 0) {
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: %s", path, strerror(errno));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int rt_getpid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getpid());
  return 1;
}

static int rt_hostname(lua_State *L) {
  char buf[256];
  if (gethostname(buf, sizeof buf) != 0)
    buf[0] = '\0';
  buf[sizeof buf - 1] = '\0';
  lua_pushstring(L, buf);
  return 1;
}

extern char **environ;

/* environ() -> {NAME=value}: recipes read MYRMEX_PARAM_* and CI variables from it. */
static int rt_environ(lua_State *L) {
  lua_newtable(L);
  for (char **e = environ; *e; e++) {
    const char *eq = strchr(*e, '=');
    if (!eq)
      continue;
    lua_pushlstring(L, *e, (size_t)(eq - *e));
    lua_pushstring(L, eq + 1);
    lua_rawset(L, -3);
  }
  return 1;
}

/* handle(mt, fields) -> a full userdata whose user value is the fields table: what Lua modules
 * use for handle objects, so type() says "userdata" and __gc/__close apply as to C handles. */
static int rt_handle(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_newuserdatauv(L, 0, 1);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, 1);
  lua_setmetatable(L, -2);
  return 1;
}

/* fields(h) -> the fields table of a handle made by handle(). */
static int rt_fields(lua_State *L) {
  luaL_checktype(L, 1, LUA_TUSERDATA);
  if (lua_getiuservalue(L, 1, 1) != LUA_TTABLE)
    return luaL_argerror(L, 1, "not a handle");
  return 1;
}

static const luaL_Reg runtime_funcs[] = {{"interrupted", rt_interrupted},
                                         {"handle", rt_handle},
                                         {"fields", rt_fields},
                                         {"check_interrupt", rt_check_interrupt},
                                         {"interrupt_later", rt_interrupt_later},
                                         {"monotonic", rt_monotonic},
                                         {"time", rt_time},
                                         {"isatty", rt_isatty},
                                         {"sleep", rt_sleep},
                                         {"stat", rt_stat},
                                         {"listdir", rt_listdir},
                                         {"realpath", rt_realpath},
                                         {"mkdtemp", rt_mkdtemp},
                                         {"mkdir", rt_mkdir},
                                         {"getpid", rt_getpid},
                                         {"hostname", rt_hostname},
                                         {"environ", rt_environ},
                                         {"set_limits", rt_set_limits},
                                         {"memory", rt_memory},
                                         {"chdir", rt_chdir},
                                         {NULL, NULL}};

int luaopen_myrmex_core_runtime(lua_State *L) {
  luaL_newlib(L, runtime_funcs);
  return 1;
}
