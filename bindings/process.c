/*
 * myrmex.core.process: run a child program from an argument vector (never a shell), feed
 * its stdin, collect or stream its stdout and stderr, enforce a timeout and an output cap.
 *
 * Scanners, registry credential helpers and kubeconfig exec plugins all go through here.
 * Both output pipes are read through one poll() loop, so a child that fills stderr while we
 * wait on stdout (or the reverse) never deadlocks. The child leads its own process group, so
 * a timeout, an output overflow or Ctrl-C kills the helpers it started as well.
 *
 * Everything the run owns (pid, descriptors, buffers) lives in a userdata whose __gc kills
 * and reaps the child, so an error raised half-way (a failing callback, out of memory)
 * leaks neither memory nor a zombie.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "runtime.h"

extern char **environ;

#define RUN_MT "myrmex.process.run"
#define CHUNK ((size_t)64 * 1024)
#define DEFAULT_MAX_OUTPUT ((size_t)64 * 1024 * 1024)
/* How long to keep reading after a kill, for a descendant that escaped the group. */
#define DRAIN_SECONDS 2.0
/* Longest single poll() wait, so interrupts are noticed promptly. */
#define POLL_SLICE_MS 100

typedef struct {
  int fd; /* -1 once closed */
  char *buf;
  size_t len, cap;
  int cb; /* registry ref of the on_* callback, or LUA_NOREF */
} outpipe;

typedef struct {
  pid_t pid;  /* 0 when no unreaped child */
  pid_t pgid; /* the child's process group, kept after the child is reaped */
  int wstatus;
  int in_fd;
  const char *in_data; /* anchored by the options table on the caller's stack */
  size_t in_len, in_off;
  outpipe out[2]; /* stdout, stderr */
  size_t max_output;
  int killed, timed_out, overflow; /* overflow: 0, or 1 + index of the stream */
} run_state;

static const char *const stream_names[] = {"stdout", "stderr"};

static void close_fd(int *fd) {
  if (*fd >= 0) {
    close(*fd);
    *fd = -1;
  }
}

static void kill_group(run_state *r) {
  if (r->pgid > 0 && !r->killed) {
    kill(-r->pgid, SIGKILL);
    r->killed = 1;
  }
}

static void reap_blocking(run_state *r) {
  if (r->pid <= 0)
    return;
  while (waitpid(r->pid, &r->wstatus, 0) < 0 && errno == EINTR)
    ;
  r->pid = 0;
}

/* Idempotent: the normal end, an error path and __gc all come through here. */
static void run_release(run_state *r, lua_State *L) {
  if (r->pid > 0)
    kill_group(r);
  reap_blocking(r);
  close_fd(&r->in_fd);
  for (int i = 0; i < 2; i++) {
    close_fd(&r->out[i].fd);
    free(r->out[i].buf);
    r->out[i].buf = NULL;
    r->out[i].len = r->out[i].cap = 0;
    if (L && r->out[i].cb != LUA_NOREF) {
      luaL_unref(L, LUA_REGISTRYINDEX, r->out[i].cb);
      r->out[i].cb = LUA_NOREF;
    }
  }
}

static int run_gc(lua_State *L) {
  run_release(luaL_checkudata(L, 1, RUN_MT), L);
  return 0;
}

static run_state *run_new(lua_State *L) {
  run_state *r = lua_newuserdatauv(L, sizeof *r, 0);
  memset(r, 0, sizeof *r);
  r->in_fd = -1;
  for (int i = 0; i < 2; i++) {
    r->out[i].fd = -1;
    r->out[i].cb = LUA_NOREF;
  }
  if (luaL_newmetatable(L, RUN_MT)) {
    lua_pushcfunction(L, run_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, run_gc);
    lua_setfield(L, -2, "__close");
  }
  lua_setmetatable(L, -2);
  return r;
}

/* ---- option parsing ---- */

static const char *const known_options[] = {
    "argv", "env", "stdin", "timeout", "cwd", "max_output", "on_stdout", "on_stderr", NULL};

static void check_option_names(lua_State *L, int t) {
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1);
    int ok = 0;
    if (lua_type(L, -1) == LUA_TSTRING) {
      const char *k = lua_tostring(L, -1);
      for (int i = 0; known_options[i]; i++)
        ok |= strcmp(k, known_options[i]) == 0;
    }
    if (!ok)
      luaL_error(L, "process.run: unknown option '%s'", luaL_tolstring(L, -1, NULL));
  }
}

/* A NULL-terminated pointer array in a userdata left on the stack; the strings it points
 * to must stay anchored by the caller. */
static const char **argv_from(lua_State *L, int t) {
  if (lua_getfield(L, t, "argv") != LUA_TTABLE)
    luaL_error(L, "process.run: argv must be a non-empty list of strings");
  int argv_idx = lua_gettop(L);
  lua_Integer n = (lua_Integer)lua_rawlen(L, argv_idx);
  if (n < 1 || n > 100000)
    luaL_error(L, "process.run: argv must be a non-empty list of strings");
  const char **argv = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_rawgeti(L, argv_idx, i) != LUA_TSTRING)
      luaL_error(L, "process.run: argv[%d] must be a string", (int)i);
    size_t len;
    argv[i - 1] = lua_tolstring(L, -1, &len);
    if (strlen(argv[i - 1]) != len)
      luaL_error(L, "process.run: argv[%d] contains a NUL byte", (int)i);
    lua_pop(L, 1);
  }
  argv[n] = NULL;
  return argv;
}

/* env={K=V} -> "K=V" strings anchored in a table plus the pointer array; nil -> environ. */
static char **envp_from(lua_State *L, int t) {
  int type = lua_getfield(L, t, "env");
  if (type == LUA_TNIL)
    return environ;
  if (type != LUA_TTABLE)
    luaL_error(L, "process.run: env must be a table of strings");
  int env_idx = lua_gettop(L);
  lua_newtable(L);
  int strs = lua_gettop(L);
  int n = 0;
  lua_pushnil(L);
  while (lua_next(L, env_idx)) {
    if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
      luaL_error(L, "process.run: env keys and values must be strings");
    const char *k = lua_tostring(L, -2);
    if (*k == '\0' || strchr(k, '=') != NULL)
      luaL_error(L, "process.run: env key '%s' is not a variable name", k);
    lua_pushfstring(L, "%s=%s", k, lua_tostring(L, -1));
    lua_rawseti(L, strs, ++n);
    lua_pop(L, 1);
  }
  char **envp = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, strs, i);
    envp[i - 1] = (char *)lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  envp[n] = NULL;
  return envp;
}

static int callback_ref(lua_State *L, int t, const char *name) {
  int type = lua_getfield(L, t, name);
  if (type == LUA_TNIL) {
    lua_pop(L, 1);
    return LUA_NOREF;
  }
  if (type != LUA_TFUNCTION)
    luaL_error(L, "process.run: %s must be a function", name);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* ---- spawning ---- */

static int set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* The child starts with default signal handling and an empty mask whatever the host has
 * installed (the host ignores or catches SIGPIPE, SIGINT, SIGTERM). */
static void spawn_attrs(posix_spawnattr_t *attr) {
  sigset_t none, dflt;
  sigemptyset(&none);
  sigemptyset(&dflt);
  int sigs[] = {SIGPIPE, SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGCHLD, SIGALRM, SIGUSR1, SIGUSR2};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
    sigaddset(&dflt, sigs[i]);
  posix_spawnattr_init(attr);
  posix_spawnattr_setflags(attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(attr, 0);
  posix_spawnattr_setsigmask(attr, &none);
  posix_spawnattr_setsigdefault(attr, &dflt);
}

/* Creates the pipes (kept in r so __gc closes them) and starts the child. Returns 0 or an
 * errno value. */
static int spawn_child(run_state *r, const char **argv, char **envp, const char *cwd,
                       int want_stdin) {
  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
  int rc = 0;
  if ((want_stdin && pipe2(in, O_CLOEXEC) != 0) || pipe2(out, O_CLOEXEC) != 0 ||
      pipe2(err, O_CLOEXEC) != 0) {
    rc = errno;
    goto done;
  }
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  if (want_stdin)
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  else
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  if (cwd)
    posix_spawn_file_actions_addchdir_np(&fa, cwd);
  spawn_attrs(&attr);
  rc = posix_spawnp(&r->pid, argv[0], &fa, &attr, (char *const *)argv, envp);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0)
    r->pid = 0;
  r->pgid = r->pid;
done:
  close_fd(&in[0]);
  close_fd(&out[1]);
  close_fd(&err[1]);
  r->in_fd = in[1];
  r->out[0].fd = out[0];
  r->out[1].fd = err[0];
  if (rc == 0) {
    for (int i = 0; i < 2; i++)
      set_nonblock(r->out[i].fd);
    if (r->in_fd >= 0)
      set_nonblock(r->in_fd);
  }
  return rc;
}

/* ---- the wait loop ---- */

static int append(outpipe *p, const char *data, size_t n, size_t max) {
  if (p->len + n > max)
    n = max - p->len;
  if (n == 0)
    return 0; /* also keeps max_output = 0 from asking realloc for 0 bytes */
  if (p->len + n > p->cap) {
    size_t cap = p->cap ? p->cap : CHUNK;
    while (cap < p->len + n)
      cap *= 2;
    if (cap > max)
      cap = max;
    char *nb = realloc(p->buf, cap);
    if (nb == NULL)
      return -1;
    p->buf = nb;
    p->cap = cap;
  }
  memcpy(p->buf + p->len, data, n);
  p->len += n;
  return 0;
}

/* Calls the stream's callback with a chunk; on error, cleans up and re-raises. */
static void deliver(lua_State *L, run_state *r, int i, const char *chunk, size_t n) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->out[i].cb);
  lua_pushlstring(L, chunk, n);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    run_release(r, L);
    lua_error(L);
  }
}

/* Reads what is available on stream i. */
static void drain_one(lua_State *L, run_state *r, int i, char *chunk) {
  outpipe *p = &r->out[i];
  /* Bounded, so a fast writer cannot starve the other stream or the timeout check. */
  for (int rounds = 0; rounds < 16; rounds++) {
    ssize_t n = read(p->fd, chunk, CHUNK);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return;
    if (n <= 0) {
      close_fd(&p->fd);
      return;
    }
    if (p->cb != LUA_NOREF) {
      deliver(L, r, i, chunk, (size_t)n);
      continue;
    }
    size_t room = r->max_output - p->len;
    if (append(p, chunk, (size_t)n, r->max_output) != 0) {
      run_release(r, L);
      luaL_error(L, "process.run: out of memory collecting %s", stream_names[i]);
    }
    if ((size_t)n > room) {
      /* Over the cap: stop the child rather than silently losing its output. */
      r->overflow = i + 1;
      kill_group(r);
      close_fd(&p->fd);
      return;
    }
  }
}

/* Writes what the pipe accepts. SIGPIPE is blocked around the write so a child that closed
 * its stdin gives EPIPE here instead of killing the host; a SIGPIPE raised by us is taken
 * back before the mask is restored. */
static void feed_stdin(run_state *r) {
  sigset_t pipe_set, old, pending;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  sigpending(&pending);
  int was_pending = sigismember(&pending, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  while (r->in_off < r->in_len) {
    ssize_t n = write(r->in_fd, r->in_data + r->in_off, r->in_len - r->in_off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    if (n < 0) {
      r->in_off = r->in_len; /* EPIPE: the child does not want the rest */
      if (!was_pending) {
        struct timespec zero = {0, 0};
        sigtimedwait(&pipe_set, NULL, &zero);
      }
      break;
    }
    r->in_off += (size_t)n;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (r->in_off >= r->in_len)
    close_fd(&r->in_fd);
}

static void try_reap(run_state *r) {
  if (r->pid <= 0)
    return;
  pid_t w = waitpid(r->pid, &r->wstatus, WNOHANG);
  if (w == r->pid || (w < 0 && errno == ECHILD))
    r->pid = 0;
}

static int poll_ms(double deadline, double now) {
  if (deadline <= 0)
    return POLL_SLICE_MS;
  double left = (deadline - now) * 1000.0;
  if (left < 0)
    return 0;
  return left < POLL_SLICE_MS ? (int)left + 1 : POLL_SLICE_MS;
}

static void wait_loop(lua_State *L, run_state *r, double timeout) {
  char *chunk = lua_newuserdatauv(L, CHUNK, 0);
  double start = mx_monotonic();
  double deadline = timeout > 0 ? start + timeout : 0, drain_until = 0;
  while (r->pid > 0 || r->out[0].fd >= 0 || r->out[1].fd >= 0) {
    if (mx_interrupt_take()) {
      run_release(r, L);
      mx_raise_interrupted(L);
    }
    if (mx_deadline > 0 && mx_monotonic() > mx_deadline) {
      /* The sandbox's time limit: the count hook cannot fire while we wait in C. */
      run_release(r, L);
      mx_deadline = 0;
      mx_raise_error(L, "Timeout", NULL, "sandbox: the recipe's time limit was exceeded");
    }
    struct pollfd fds[3];
    int nfds = 0, idx[3];
    for (int i = 0; i < 2; i++)
      if (r->out[i].fd >= 0) {
        fds[nfds] = (struct pollfd){.fd = r->out[i].fd, .events = POLLIN};
        idx[nfds++] = i;
      }
    if (r->in_fd >= 0) {
      fds[nfds] = (struct pollfd){.fd = r->in_fd, .events = POLLOUT};
      idx[nfds++] = 2;
    }
    double now = mx_monotonic();
    int wait = poll_ms(r->killed ? drain_until : deadline, now);
    if (nfds == 0 && wait > 20)
      wait = 20; /* only the child left: poll its exit */
    int n = poll(fds, (nfds_t)nfds, wait);
    if (n < 0 && errno != EINTR) {
      run_release(r, L);
      luaL_error(L, "process.run: poll: %s", strerror(errno));
    }
    for (int k = 0; n > 0 && k < nfds; k++) {
      if (!fds[k].revents)
        continue;
      if (idx[k] == 2) {
        if (fds[k].revents & (POLLERR | POLLHUP))
          close_fd(&r->in_fd);
        else
          feed_stdin(r);
      } else {
        drain_one(L, r, idx[k], chunk);
      }
    }
    try_reap(r);
    now = mx_monotonic();
    if (!r->killed && deadline > 0 && now >= deadline) {
      /* Also when only a background descendant still holds the pipes open. */
      r->timed_out = 1;
      kill_group(r);
    }
    if (r->killed && drain_until == 0)
      drain_until = now + DRAIN_SECONDS;
    if (r->killed && now >= drain_until && r->pid == 0) {
      /* A descendant outside the group still holds a pipe: stop waiting for it. */
      close_fd(&r->out[0].fd);
      close_fd(&r->out[1].fd);
    }
  }
  close_fd(&r->in_fd);
  lua_pop(L, 1);
}

static void push_result(lua_State *L, run_state *r, double started) {
  lua_createtable(L, 0, 8);
  int st = r->wstatus;
  if (WIFEXITED(st)) {
    lua_pushinteger(L, WEXITSTATUS(st));
    lua_setfield(L, -2, "status");
  } else if (WIFSIGNALED(st)) {
    lua_pushinteger(L, WTERMSIG(st));
    lua_setfield(L, -2, "signal");
  }
  for (int i = 0; i < 2; i++) {
    lua_pushlstring(L, r->out[i].buf ? r->out[i].buf : "", r->out[i].len);
    lua_setfield(L, -2, stream_names[i]);
  }
  lua_pushboolean(L, r->timed_out);
  lua_setfield(L, -2, "timed_out");
  if (r->overflow) {
    lua_pushstring(L, stream_names[r->overflow - 1]);
    lua_setfield(L, -2, "overflow");
  }
  lua_pushnumber(L, mx_monotonic() - started);
  lua_setfield(L, -2, "duration");
}

static const char *spawn_error_code(int e) {
  if (e == ENOENT || e == ENOTDIR)
    return "NotFound";
  if (e == EACCES || e == EPERM)
    return "Forbidden";
  return "Engine";
}

/* run{argv=, env=?, stdin=?, timeout=?, cwd=?, max_output=?, on_stdout=?, on_stderr=?}
 *   -> {status=, signal=, stdout=, stderr=, timed_out=, overflow=?, duration=} */
static int proc_run(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  check_option_names(L, 1);
  const char **argv = argv_from(L, 1);
  char **envp = envp_from(L, 1);
  size_t in_len = 0;
  const char *in_data = NULL;
  int t = lua_getfield(L, 1, "stdin");
  if (t == LUA_TSTRING)
    in_data = lua_tolstring(L, -1, &in_len);
  else if (t != LUA_TNIL)
    return luaL_error(L, "process.run: stdin must be a string");
  double timeout = 0;
  if (lua_getfield(L, 1, "timeout") != LUA_TNIL) {
    if (!lua_isnumber(L, -1) || (timeout = lua_tonumber(L, -1)) <= 0)
      return luaL_error(L, "process.run: timeout must be a positive number of seconds");
  }
  lua_Integer max = (lua_Integer)DEFAULT_MAX_OUTPUT;
  if (lua_getfield(L, 1, "max_output") != LUA_TNIL) {
    if (!lua_isinteger(L, -1) || (max = lua_tointeger(L, -1)) < 0)
      return luaL_error(L, "process.run: max_output must be a non-negative integer");
  }
  const char *cwd = NULL;
  if (lua_getfield(L, 1, "cwd") != LUA_TNIL && !(cwd = lua_tostring(L, -1)))
    return luaL_error(L, "process.run: cwd must be a string");

  run_state *r = run_new(L);
  r->max_output = (size_t)max;
  r->in_data = in_data;
  r->in_len = in_len;
  r->out[0].cb = callback_ref(L, 1, "on_stdout");
  r->out[1].cb = callback_ref(L, 1, "on_stderr");
  double started = mx_monotonic();
  int rc = spawn_child(r, argv, envp, cwd, in_data != NULL);
  if (rc != 0) {
    run_release(r, L);
    lua_pushfstring(L, "%s: %s", argv[0], strerror(rc));
    return mx_raise_error(L, spawn_error_code(rc), "process", lua_tostring(L, -1));
  }
  if (r->in_fd >= 0 && in_len == 0)
    close_fd(&r->in_fd);
  wait_loop(L, r, timeout);
  push_result(L, r, started);
  run_release(r, L);
  return 1;
}

/* which(name [, path]) -> absolute-or-given path of an executable regular file, or nil. */
static int is_exec_file(const char *p) {
  struct stat st;
  /* clang-tidy 14's analyzer reports a va_list copied here when every clang-analyzer check
   * runs (not with the valist checks alone, and not on every run): there is none. */
  return stat(p, &st) == 0 && S_ISREG(st.st_mode) && // NOLINT(clang-analyzer-valist.Uninitialized)
         access(p, X_OK) == 0;
}

static int proc_which(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  const char *path = luaL_optstring(L, 2, getenv("PATH"));
  if (*name == '\0')
    return luaL_argerror(L, 1, "empty program name");
  if (strchr(name, '/')) {
    if (is_exec_file(name))
      lua_pushstring(L, name);
    else
      luaL_pushfail(L);
    return 1;
  }
  if (path == NULL)
    path = "/usr/local/bin:/usr/bin:/bin";
  while (*path) {
    const char *end = strchr(path, ':');
    size_t dlen = end ? (size_t)(end - path) : strlen(path);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (dlen == 0)
      luaL_addchar(&b, '.'); /* an empty entry means the current directory */
    else
      luaL_addlstring(&b, path, dlen);
    luaL_addchar(&b, '/');
    luaL_addstring(&b, name);
    luaL_pushresult(&b);
    if (is_exec_file(lua_tostring(L, -1)))
      return 1;
    lua_pop(L, 1);
    if (!end)
      break;
    path = end + 1;
  }
  luaL_pushfail(L);
  return 1;
}

static const luaL_Reg funcs[] = {{"run", proc_run}, {"which", proc_which}, {NULL, NULL}};

int luaopen_myrmex_core_process(lua_State *L) {
  luaL_newlib(L, funcs);
  return 1;
}
