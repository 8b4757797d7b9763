/* Tables generated at build time by cmake/embed.cmake. */
#ifndef MYRMEX_EMBEDDED_H
#define MYRMEX_EMBEDDED_H

#include <stddef.h>

#include <lua.h>

typedef struct mx_binding {
  const char *name;
  lua_CFunction open;
} mx_binding;

typedef struct mx_embedded {
  const char *module;    /* "myrmex.docker" */
  const char *chunkname; /* "@myrmex/docker.lua", so tracebacks name real files */
  const char *source;    /* bytecode, debug info kept */
  size_t len;
} mx_embedded;

extern const mx_binding mx_bindings[];
extern const mx_embedded mx_embedded_lua[];
extern const char mx_version[];

#endif
