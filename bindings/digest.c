/*
 * myrmex.core.digest: streaming sha256/sha512 through OpenSSL EVP, so multi-gigabyte
 * layers are hashed in constant memory.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "lib/crypto_api.h"

#define DIGEST_MT "myrmex.digest"

typedef struct {
  EVP_MD_CTX *ctx;
  const char *name; /* "sha256" or "sha512" */
} digest;

static const EVP_MD *md_for(lua_State *L, int idx, const char **name) {
  static const char *const names[] = {"sha256", "sha512", NULL};
  int i = luaL_checkoption(L, idx, "sha256", names);
  *name = names[i];
  return i == 0 ? EVP_sha256() : EVP_sha512();
}

static digest *digest_check(lua_State *L) {
  digest *d = luaL_checkudata(L, 1, DIGEST_MT);
  if (!d->ctx)
    luaL_error(L, "digest: already finalised");
  return d;
}

/* Push "alg:hex" for the context, freeing it first: pushing can raise (out of memory), and
 * the context must not be held then. */
static void push_hex(lua_State *L, EVP_MD_CTX *ctx, const char *name) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  char out[16 + 2 * EVP_MAX_MD_SIZE + 1];
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  int at = snprintf(out, sizeof out, "%s:", name);
  for (size_t i = 0; i < len; i++)
    snprintf(out + at + 2 * i, 3, "%02x", md[i]);
  lua_pushstring(L, out);
}

static int digest_new(lua_State *L) {
  const char *name;
  const EVP_MD *md = md_for(L, 1, &name);
  digest *d = lua_newuserdatauv(L, sizeof *d, 0);
  d->ctx = NULL;
  d->name = name;
  luaL_setmetatable(L, DIGEST_MT);
  d->ctx = EVP_MD_CTX_new();
  if (!d->ctx || EVP_DigestInit_ex(d->ctx, md, NULL) != 1)
    return luaL_error(L, "digest.new: OpenSSL could not start %s", name);
  return 1;
}

static int digest_update(lua_State *L) {
  digest *d = digest_check(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  EVP_DigestUpdate(d->ctx, s, n);
  lua_settop(L, 1);
  return 1; /* chainable */
}

static int digest_final(lua_State *L) {
  digest *d = digest_check(L);
  EVP_MD_CTX *ctx = d->ctx;
  d->ctx = NULL;
  push_hex(L, ctx, d->name);
  return 1;
}

static int digest_gc(lua_State *L) {
  digest *d = luaL_checkudata(L, 1, DIGEST_MT);
  if (d->ctx)
    EVP_MD_CTX_free(d->ctx);
  d->ctx = NULL;
  return 0;
}

static int digest_string(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  const char *name;
  const EVP_MD *md = md_for(L, 2, &name);
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  if (!ctx || EVP_DigestInit_ex(ctx, md, NULL) != 1) {
    EVP_MD_CTX_free(ctx);
    return luaL_error(L, "digest.string: OpenSSL could not start %s", name);
  }
  EVP_DigestUpdate(ctx, s, n);
  push_hex(L, ctx, name);
  return 1;
}

/* file(path, alg) -> "alg:hex", size ; or nil, message */
static int digest_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  const char *name;
  const EVP_MD *md = md_for(L, 2, &name);
  FILE *f = fopen(path, "rb");
  if (!f) {
    luaL_pushfail(L);
    lua_pushfstring(L, "digest.file: %s: %s", path, strerror(errno));
    return 2;
  }
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  if (!ctx || EVP_DigestInit_ex(ctx, md, NULL) != 1) {
    fclose(f);
    EVP_MD_CTX_free(ctx);
    return luaL_error(L, "digest.file: OpenSSL could not start %s", name);
  }
  static char buf[1 << 16];
  size_t n;
  lua_Integer total = 0;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
    EVP_DigestUpdate(ctx, buf, n);
    total += (lua_Integer)n;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    EVP_MD_CTX_free(ctx);
    luaL_pushfail(L);
    lua_pushfstring(L, "digest.file: %s: read error", path);
    return 2;
  }
  push_hex(L, ctx, name);
  lua_pushinteger(L, total);
  return 2;
}

/* base64(s [, "url"]) -> text: standard base64 with padding, or the URL-safe alphabet without
 * padding (RFC 4648 section 5: what Kubernetes ApplySet ids use). OpenSSL encodes; only the
 * alphabet is swapped here. */
static int digest_base64(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  static const char *const modes[] = {"std", "url", NULL};
  int url = luaL_checkoption(L, 2, "std", modes);
  if (n > (size_t)INT_MAX / 4 * 3 - 3)
    return luaL_error(L, "digest.base64: input of %I bytes is too large", (lua_Integer)n);
  luaL_Buffer b;
  size_t cap = 4 * ((n + 2) / 3) + 1; /* EVP_EncodeBlock adds a NUL */
  unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, cap);
  int m = EVP_EncodeBlock(out, (const unsigned char *)s, (int)n);
  if (url) {
    for (int i = 0; i < m; i++) {
      if (out[i] == '+')
        out[i] = '-';
      else if (out[i] == '/')
        out[i] = '_';
    }
    while (m > 0 && out[m - 1] == '=')
      m--;
  }
  luaL_pushresultsize(&b, (size_t)m);
  return 1;
}

static const luaL_Reg digest_meta[] = {{"__gc", digest_gc}, {"__close", digest_gc}, {NULL, NULL}};
static const luaL_Reg digest_methods[] = {
    {"update", digest_update}, {"final", digest_final}, {NULL, NULL}};
static const luaL_Reg digest_funcs[] = {{"new", digest_new},
                                        {"string", digest_string},
                                        {"file", digest_file},
                                        {"base64", digest_base64},
                                        {NULL, NULL}};

int luaopen_myrmex_core_digest(lua_State *L) {
  mx_crypto_load(L);
  luaL_newmetatable(L, DIGEST_MT);
  luaL_setfuncs(L, digest_meta, 0);
  luaL_newlib(L, digest_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, digest_funcs);
  return 1;
}
