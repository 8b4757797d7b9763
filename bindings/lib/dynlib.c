/* The lazily loaded libraries of dynlib.h. */
#define MX_DYNLIB_IMPL
#include "dynlib.h"

#include <dlfcn.h>

#include <lauxlib.h>

#include "archive_api.h"
#include "crypto_api.h"
#include "curl_api.h"
#include "lws_api.h"

struct mx_curl_api mx_curl;
struct mx_archive_api mx_archive;
struct mx_crypto_api mx_crypto;
struct mx_lws_api mx_lws;

/* Opens soname, or raises. RTLD_LAZY: the library's own calls bind when first made. */
static void *open_lib(lua_State *L, const char *soname) {
  void *h = dlopen(soname, RTLD_LAZY | RTLD_LOCAL);
  if (!h)
    luaL_error(L, "cannot load %s: %s", soname, dlerror());
  return h;
}

static void *resolve(lua_State *L, void *h, const char *soname, const char *name) {
  void *p = dlsym(h, name);
  if (!p)
    luaL_error(L, "%s has no symbol %s (library too old?)", soname, name);
  return p;
}

/* One loader per library: dlopen once, then every symbol of its list, so a missing one fails
 * at require time and not in the middle of a transfer. `*(void **)&` is POSIX's way to store
 * dlsym's data pointer into a function pointer. */
#define MX_RESOLVE(f) *(void **)&api->f = resolve(L, h, soname, #f);
#define MX_LOADER(fn, table, soname_, FUNCS)                                                       \
  void fn(lua_State *L) {                                                                          \
    static int loaded;                                                                             \
    if (loaded)                                                                                    \
      return;                                                                                      \
    const char *soname = soname_;                                                                  \
    void *h = open_lib(L, soname);                                                                 \
    __typeof__(table) *api = &(table);                                                             \
    FUNCS(MX_RESOLVE)                                                                              \
    loaded = 1;                                                                                    \
  }

MX_LOADER(mx_curl_load, mx_curl, MX_SONAME_CURL, MX_CURL_FUNCS)
MX_LOADER(mx_archive_load, mx_archive, MX_SONAME_ARCHIVE, MX_ARCHIVE_FUNCS)
MX_LOADER(mx_crypto_load, mx_crypto, MX_SONAME_CRYPTO, MX_CRYPTO_FUNCS)
MX_LOADER(mx_lws_load, mx_lws, MX_SONAME_LWS, MX_LWS_FUNCS)
