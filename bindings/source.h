/*
 * A byte producer that one binding makes and another consumes, so that a tar stream
 * built by the archive binding can be a request body of the transport without either
 * knowing the other, and without the whole body ever being in memory.
 *
 * In Lua a source is a full userdata with the metatable named MX_SOURCE_MT holding an
 * mx_source; mx_source_check() fetches it. The consumer calls read() until it returns 0
 * (end) or -1 (error, message in err). close() is called exactly once, by __gc/__close or
 * by the consumer when it is done, whichever is first; it must be safe after a failed read.
 */
#ifndef MYRMEX_SOURCE_H
#define MYRMEX_SOURCE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <lua.h>

#define MX_SOURCE_MT "myrmex.source"

typedef struct mx_source {
  /* Fill at most n bytes; return the count, 0 at the end, -1 on error. May block. */
  ssize_t (*read)(void *ud, char *buf, size_t n, char *err, size_t errlen);
  void (*close)(void *ud);
  void *ud;
  int64_t size; /* total length when known, else -1 */
  int closed;
} mx_source;

/* Push a new source userdata (metatable set up on first use); the caller fills it in. */
mx_source *mx_source_new(lua_State *L);
/* The source at index idx, or a raised argument error naming the expected type. */
mx_source *mx_source_check(lua_State *L, int idx);
/* Close once; later calls do nothing. */
void mx_source_close(mx_source *s);

#endif
