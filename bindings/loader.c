/*
 * myrmex.core.loader: what the dynamic loader has mapped into this process, for packing the
 * binary into a FROM-scratch image (lua/myrmex/selfimage.lua).
 *
 * The list comes from dl_iterate_phdr, so each library is named by the path the loader opened
 * it under (the soname path it searched, "/lib/x86_64-linux-gnu/libcurl.so.4", not the file
 * the symlink resolves to) and the loader itself by the executable's PT_INTERP. That is
 * exactly the set of names the loader will look up again in the image. /proc/self/maps would
 * only give the resolved file names, and ldd would miss the libraries opened with dlopen.
 */
#include <link.h>

#include <lauxlib.h>
#include <lua.h>

#include "lib/dynlib.h"

#define MAX_OBJECTS 512

struct objects {
  const char *names[MAX_OBJECTS];
  int n;
};

/* dl_iterate_phdr's callback: keep each absolute object name. The main program has an empty
 * name and the vDSO a bare one; neither is a file to pack. Nothing Lua is called here: the
 * loader's lock is held, and a Lua error (out of memory) would longjmp past its release. */
static int add_object(struct dl_phdr_info *info, size_t size, void *data) {
  (void)size;
  struct objects *o = data;
  const char *name = info->dlpi_name;
  if (name && name[0] == '/' && o->n < MAX_OBJECTS)
    o->names[o->n++] = name;
  return 0;
}

/* loader.objects() -> {path, ...}: the shared objects mapped now, in load order. The names
 * stay valid after the iteration because myrmex never dlcloses a library. */
static int loader_objects(lua_State *L) {
  struct objects *o = lua_newuserdatauv(L, sizeof *o, 0);
  o->n = 0;
  dl_iterate_phdr(add_object, o);
  lua_createtable(L, o->n, 0);
  for (int i = 0; i < o->n; i++) {
    lua_pushstring(L, o->names[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* loader.load_all(): open every library myrmex opens lazily (libcurl, libarchive, libcrypto,
 * libwebsockets), so objects() includes them and what they need. */
static int loader_load_all(lua_State *L) {
  mx_curl_load(L);
  mx_archive_load(L);
  mx_crypto_load(L);
  mx_lws_load(L);
  return 0;
}

int luaopen_myrmex_core_loader(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"objects", loader_objects}, {"load_all", loader_load_all}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
