/*
 * Process-wide state the host shares with the bindings: the interrupt flag set by the
 * SIGINT/SIGTERM handlers. Long waits in C (transfers, child processes) poll it so that a
 * Ctrl-C or a CI runner's SIGTERM cancels them instead of waiting for a timeout.
 */
#ifndef MYRMEX_RUNTIME_H
#define MYRMEX_RUNTIME_H

#include <signal.h>

#include <lua.h>

extern volatile sig_atomic_t mx_interrupt_signal;  /* 0, or the signal that asked us to stop */
extern volatile sig_atomic_t mx_interrupt_pending; /* set by a signal, consumed when raised */

/* 1 once per run (the host turns only the first signal into an interruption): the caller must
 * then raise Interrupted (mx_raise_interrupted). Consuming it lets cleanup code (<close>
 * handlers removing a container) still talk to engines. 0 while cleanup runs (a <close>
 * handler, coroutine.close; see mx_interrupt_deferred): the interruption waits for its end. */
int mx_interrupt_take(void);

/* 1 when an interruption is pending and would be raised now (mx_interrupt_take without
 * consuming it), for a C loop that reports it as a read error rather than raising. */
int mx_interrupt_due(void);

/* Set by the host: 1 while the running code is cleanup that an interruption must not cut
 * short. NULL (never deferred) in a state without the host, such as the C tests. */
extern int (*mx_interrupt_deferred)(void);

/* Raise the standard Interrupted error object (never returns). */
int mx_raise_interrupted(lua_State *L);

/* Push a myrmex.errors object {code=, message=, engine=} built through the Lua module, so C
 * and Lua raise exactly the same shape. */
void mx_push_error(lua_State *L, const char *code, const char *engine, const char *message);
/* mx_push_error then lua_error. */
int mx_raise_error(lua_State *L, const char *code, const char *engine, const char *message);

/* The allocator of every myrmex Lua state: counts bytes so a sandboxed recipe can be capped
 * (limit 0 means none), the way Lua's own ltests.c caps memory. */
typedef struct mx_alloc_state {
  size_t used;
  size_t limit;
  size_t peak;
} mx_alloc_state;
void *mx_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

/* Sandbox time limit: a monotonic deadline checked by mx_interrupt_hook (0 = none). */
extern double mx_deadline;

/* The count hook that raises Interrupted or Timeout; it removes itself when no deadline is
 * set, so a signal handler installs it for one check (lua_sethook is async-signal-safe). An
 * interruption deferred by cleanup keeps it set, checking every MX_DEFERRED_COUNT
 * instructions until the cleanup has returned. */
#define MX_DEFERRED_COUNT 1000
void mx_interrupt_hook(lua_State *L, lua_Debug *ar);

/* Monotonic seconds. */
double mx_monotonic(void);

#endif
