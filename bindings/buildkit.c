/*
 * myrmex.core.buildkit: BuildKit's progress messages, decoded in C.
 *
 *   decode_status(data [, "base64" | "binary"]) -> table | nil, message
 *
 * dockerd streams a BuildKit build's progress as JSON lines {"id":"moby.buildkit.trace",
 * "aux":"<base64>"}, each aux a protobuf moby.buildkit.v1.StatusResponse. The message types
 * come from bindings/proto/buildkit_status.proto (only the fields myrmex reads), compiled by
 * protoc-c at build time; protobuf-c does the wire decoding and skips every field we do not
 * declare. The Lua side (lua/myrmex/docker/build.lua) turns the tables into events and log
 * lines. A malformed message is returned as nil and a reason, not raised: it came from the
 * engine, and the caller raises it as an Invalid error naming the build.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "buildkit_status.pb-c.h"
#include "lib/crypto_api.h"

#define STATUS_BOX_MT "myrmex.buildkit.status"
/* A trace message carries at most a few KiB of log text; 16 MiB bounds a broken peer. */
#define MAX_STATUS_BYTES (16u << 20)

typedef Myrmex__Buildkit__StatusResponse status_msg;

/* The unpacked message lives in a userdata until it is turned into Lua values: building the
 * tables can raise (out of memory), and __gc then frees what protobuf-c allocated. */
typedef struct {
  status_msg *msg;
} status_box;

static int box_gc(lua_State *L) {
  status_box *b = luaL_checkudata(L, 1, STATUS_BOX_MT);
  if (b->msg) {
    myrmex__buildkit__status_response__free_unpacked(b->msg, NULL);
    b->msg = NULL;
  }
  return 0;
}

static void set_str(lua_State *L, const char *key, const char *s) {
  if (s && s[0]) {
    lua_pushstring(L, s);
    lua_setfield(L, -2, key);
  }
}

static void set_bytes(lua_State *L, const char *key, ProtobufCBinaryData d) {
  if (d.len > 0) {
    lua_pushlstring(L, (const char *)d.data, d.len);
    lua_setfield(L, -2, key);
  }
}

/* A timestamp as fractional Unix seconds; absent (or Go's zero time, negative) is left out. */
static void set_time(lua_State *L, const char *key, const Myrmex__Buildkit__Timestamp *t) {
  if (t && t->seconds > 0) {
    lua_pushnumber(L, (lua_Number)t->seconds + (lua_Number)t->nanos / 1e9);
    lua_setfield(L, -2, key);
  }
}

static void set_int(lua_State *L, const char *key, int64_t v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, key);
}

static void push_vertex(lua_State *L, const Myrmex__Buildkit__Vertex *v) {
  lua_createtable(L, 0, 7);
  set_str(L, "digest", v->digest);
  set_str(L, "name", v->name);
  lua_pushboolean(L, v->cached);
  lua_setfield(L, -2, "cached");
  set_time(L, "started", v->started);
  set_time(L, "completed", v->completed);
  set_str(L, "error", v->error);
  lua_createtable(L, (int)v->n_inputs, 0);
  for (size_t i = 0; i < v->n_inputs; i++) {
    lua_pushstring(L, v->inputs[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "inputs");
}

static void push_vertex_status(lua_State *L, const Myrmex__Buildkit__VertexStatus *s) {
  lua_createtable(L, 0, 8);
  set_str(L, "id", s->id);
  set_str(L, "vertex", s->vertex);
  set_str(L, "name", s->name);
  set_int(L, "current", s->current);
  if (s->total > 0)
    set_int(L, "total", s->total);
  set_time(L, "timestamp", s->timestamp);
  set_time(L, "started", s->started);
  set_time(L, "completed", s->completed);
}

static void push_vertex_log(lua_State *L, const Myrmex__Buildkit__VertexLog *l) {
  lua_createtable(L, 0, 4);
  set_str(L, "vertex", l->vertex);
  set_time(L, "timestamp", l->timestamp);
  set_int(L, "stream", l->stream);
  lua_pushlstring(L, l->msg.len ? (const char *)l->msg.data : "", l->msg.len);
  lua_setfield(L, -2, "msg");
}

static void push_vertex_warning(lua_State *L, const Myrmex__Buildkit__VertexWarning *w) {
  lua_createtable(L, 0, 5);
  set_str(L, "vertex", w->vertex);
  set_int(L, "level", w->level);
  set_bytes(L, "short", w->short_);
  set_str(L, "url", w->url);
  lua_createtable(L, (int)w->n_detail, 0);
  for (size_t i = 0; i < w->n_detail; i++) {
    lua_pushlstring(L, w->detail[i].len ? (const char *)w->detail[i].data : "", w->detail[i].len);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "detail");
}

/* Base64 text -> the bytes, in a new userdata buffer on the stack; NULL when it is not base64.
 * OpenSSL's EVP_DecodeBlock counts padding as zero bytes, which are taken off again. */
static const unsigned char *unbase64(lua_State *L, const char *s, size_t n, size_t *out_len) {
  if (n % 4 != 0 || n / 4 * 3 > MAX_STATUS_BYTES || n > INT32_MAX)
    return NULL;
  mx_crypto_load(L);
  unsigned char *out = lua_newuserdatauv(L, n / 4 * 3 + 1, 0);
  int got = n ? EVP_DecodeBlock(out, (const unsigned char *)s, (int)n) : 0;
  if (got < 0)
    return NULL;
  if (n >= 1 && s[n - 1] == '=')
    got--;
  if (n >= 2 && s[n - 2] == '=')
    got--;
  *out_len = (size_t)got;
  return out;
}

/* decode_status(data [, encoding]) -> {vertexes=, statuses=, logs=, warnings=} | nil, why */
static int bk_decode_status(lua_State *L) {
  size_t n;
  const char *data = luaL_checklstring(L, 1, &n);
  static const char *const encodings[] = {"base64", "binary", NULL};
  int binary = luaL_checkoption(L, 2, "base64", encodings) == 1;
  const unsigned char *bytes = (const unsigned char *)data;
  size_t len = n;
  if (!binary) {
    bytes = unbase64(L, data, n, &len);
    if (!bytes) {
      lua_pushnil(L);
      lua_pushfstring(L, "BuildKit status is not base64 (%I bytes)", (lua_Integer)n);
      return 2;
    }
  } else if (len > MAX_STATUS_BYTES) {
    lua_pushnil(L);
    lua_pushliteral(L, "BuildKit status message larger than 16 MiB");
    return 2;
  }
  status_box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->msg = NULL;
  luaL_setmetatable(L, STATUS_BOX_MT);
  b->msg = myrmex__buildkit__status_response__unpack(NULL, len, bytes);
  if (!b->msg) {
    lua_pushnil(L);
    lua_pushfstring(L, "BuildKit status is not a StatusResponse protobuf (%I bytes)",
                    (lua_Integer)len);
    return 2;
  }
  const status_msg *m = b->msg;
  lua_createtable(L, 0, 4);
  lua_createtable(L, (int)m->n_vertexes, 0);
  for (size_t i = 0; i < m->n_vertexes; i++) {
    push_vertex(L, m->vertexes[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "vertexes");
  lua_createtable(L, (int)m->n_statuses, 0);
  for (size_t i = 0; i < m->n_statuses; i++) {
    push_vertex_status(L, m->statuses[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "statuses");
  lua_createtable(L, (int)m->n_logs, 0);
  for (size_t i = 0; i < m->n_logs; i++) {
    push_vertex_log(L, m->logs[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "logs");
  lua_createtable(L, (int)m->n_warnings, 0);
  for (size_t i = 0; i < m->n_warnings; i++) {
    push_vertex_warning(L, m->warnings[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "warnings");
  /* Freed now rather than at the next collection: a build sends thousands of these. */
  myrmex__buildkit__status_response__free_unpacked(b->msg, NULL);
  b->msg = NULL;
  return 1;
}

static const luaL_Reg box_meta[] = {{"__gc", box_gc}, {NULL, NULL}};

static const luaL_Reg bk_funcs[] = {{"decode_status", bk_decode_status}, {NULL, NULL}};

int luaopen_myrmex_core_buildkit(lua_State *L) {
  luaL_newmetatable(L, STATUS_BOX_MT);
  luaL_setfuncs(L, box_meta, 0);
  lua_pop(L, 1);
  luaL_newlib(L, bk_funcs);
  return 1;
}
