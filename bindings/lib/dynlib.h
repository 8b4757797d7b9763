/*
 * Heavy libraries loaded on first use.
 *
 * libcurl, libarchive and libcrypto pull in about 45 shared libraries (Kerberos, LDAP, GnuTLS,
 * libxml2, ...). Mapping them costs most of a trivial recipe's start-up, and a recipe that only
 * prints or reads YAML needs none of them, so the executable does not link them: the bindings
 * that use them call mx_<lib>_load() from their luaopen_* and reach every function through a
 * table of pointers filled by dlsym. The *_api.h headers map each used name to its pointer, so
 * call sites read as ordinary library calls.
 */
#ifndef MYRMEX_DYNLIB_H
#define MYRMEX_DYNLIB_H

#include <lua.h>

/* Each loads its library once per process and raises a one-line Lua error naming the library
 * and the missing symbol when it cannot. Safe to call again: later calls return at once. */
void mx_curl_load(lua_State *L);
void mx_archive_load(lua_State *L);
void mx_crypto_load(lua_State *L);
void mx_lws_load(lua_State *L);

#endif
