/*
 * myrmex.core.buildkit: BuildKit's progress messages, decoded in C.
 *
 *   decode_status(data [, "base64" | "binary"]) -> table | nil, message
 *   decode_message(type, bytes) -> table | nil, message   a session message (below)
 *   encode_message(type, table) -> bytes
 *
 * dockerd streams a BuildKit build's progress as JSON lines {"id":"moby.buildkit.trace",
 * "aux":"<base64>"}, each aux a protobuf moby.buildkit.v1.StatusResponse. The message types
 * come from bindings/proto/buildkit_status.proto (only the fields myrmex reads), compiled by
 * protoc-c at build time; protobuf-c does the wire decoding and skips every field we do not
 * declare. The Lua side (lua/myrmex/docker/build.lua) turns the tables into events and log
 * lines. A malformed message is returned as nil and a reason, not raised: it came from the
 * engine, and the caller raises it as an Invalid error naming the build.
 *
 * The session messages (bindings/proto/buildkit_session.proto: GetSecretRequest, ...) are
 * flat messages of scalars; they go through protobuf-c's descriptors generically, by field
 * name, so a new one needs only its line in the .proto and in SESSION_TYPES.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "buildkit_session.pb-c.h"
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

static const ProtobufCMessageDescriptor *const SESSION_TYPES[] = {
    &myrmex__session__get_secret_request__descriptor,
    &myrmex__session__get_secret_response__descriptor,
    &myrmex__session__credentials_request__descriptor,
    &myrmex__session__credentials_response__descriptor,
    &myrmex__session__check_agent_request__descriptor,
    &myrmex__session__bytes_message__descriptor,
    &myrmex__session__health_check_request__descriptor,
    &myrmex__session__health_check_response__descriptor,
    NULL};

static const ProtobufCMessageDescriptor *session_type(lua_State *L, int idx) {
  const char *name = luaL_checkstring(L, idx);
  for (int i = 0; SESSION_TYPES[i]; i++)
    if (strcmp(SESSION_TYPES[i]->short_name, name) == 0)
      return SESSION_TYPES[i];
  luaL_argerror(L, idx, lua_pushfstring(L, "unknown session message type '%s'", name));
  return NULL;
}

/* A message box: __gc frees an unpacked message if building its table raised. */
typedef struct {
  ProtobufCMessage *msg;
} message_box;

static int message_box_gc(lua_State *L) {
  message_box *b = luaL_checkudata(L, 1, "myrmex.buildkit.message");
  if (b->msg) {
    protobuf_c_message_free_unpacked(b->msg, NULL);
    b->msg = NULL;
  }
  return 0;
}

/* decode_message(type, bytes) -> {field = value, ...} | nil, why */
static int bk_decode_message(lua_State *L) {
  const ProtobufCMessageDescriptor *d = session_type(L, 1);
  size_t n;
  const char *data = luaL_checklstring(L, 2, &n);
  message_box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->msg = NULL;
  luaL_setmetatable(L, "myrmex.buildkit.message");
  b->msg = protobuf_c_message_unpack(d, NULL, n, (const uint8_t *)data);
  if (!b->msg) {
    lua_pushnil(L);
    lua_pushfstring(L, "not a %s protobuf (%I bytes)", d->short_name, (lua_Integer)n);
    return 2;
  }
  lua_createtable(L, 0, (int)d->n_fields);
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    const char *at = (const char *)b->msg + f->offset;
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
      continue;
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
      lua_pushstring(L, *(char *const *)(const void *)at);
      break;
    case PROTOBUF_C_TYPE_BYTES: {
      const ProtobufCBinaryData *bd = (const void *)at;
      lua_pushlstring(L, bd->len ? (const char *)bd->data : "", bd->len);
      break;
    }
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_ENUM:
      lua_pushinteger(L, *(const int32_t *)(const void *)at);
      break;
    default:
      continue;
    }
    lua_setfield(L, -2, f->name);
  }
  protobuf_c_message_free_unpacked(b->msg, NULL);
  b->msg = NULL;
  return 1;
}

/* encode_message(type, {field = value}) -> bytes. Unknown keys are misuse. */
static int bk_encode_message(lua_State *L) {
  const ProtobufCMessageDescriptor *d = session_type(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, 2)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING ||
        !protobuf_c_message_descriptor_get_field_by_name(d, lua_tostring(L, -1)))
      return luaL_error(L, "buildkit.encode_message: %s has no field '%s'", d->short_name,
                        luaL_tolstring(L, -1, NULL));
  }
  /* The message lives in a userdata (its strings point into Lua strings held on the stack). */
  ProtobufCMessage *m = lua_newuserdatauv(L, d->sizeof_message, 0);
  protobuf_c_message_init(d, m);
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    char *at = (char *)m + f->offset;
    if (f->label == PROTOBUF_C_LABEL_REPEATED || lua_getfield(L, 2, f->name) == LUA_TNIL)
      continue; /* the value stays on the stack, anchoring a string */
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
      *(const char **)(void *)at = luaL_checkstring(L, -1);
      break;
    case PROTOBUF_C_TYPE_BYTES: {
      size_t len;
      const char *p = luaL_checklstring(L, -1, &len);
      ProtobufCBinaryData *bd = (void *)at;
      bd->data = (uint8_t *)p, bd->len = len; /* only read by pack */
      break;
    }
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_ENUM:
      *(int32_t *)(void *)at = (int32_t)luaL_checkinteger(L, -1);
      break;
    default:
      return luaL_error(L, "buildkit.encode_message: field '%s' has a type not handled", f->name);
    }
  }
  size_t len = protobuf_c_message_get_packed_size(m);
  uint8_t *out = lua_newuserdatauv(L, len ? len : 1, 0);
  protobuf_c_message_pack(m, out);
  lua_pushlstring(L, (const char *)out, len);
  return 1;
}

static const luaL_Reg box_meta[] = {{"__gc", box_gc}, {NULL, NULL}};

static const luaL_Reg bk_funcs[] = {{"decode_status", bk_decode_status},
                                    {"decode_message", bk_decode_message},
                                    {"encode_message", bk_encode_message},
                                    {NULL, NULL}};

int luaopen_myrmex_core_buildkit(lua_State *L) {
  luaL_newmetatable(L, STATUS_BOX_MT);
  luaL_setfuncs(L, box_meta, 0);
  lua_pop(L, 1);
  luaL_newmetatable(L, "myrmex.buildkit.message");
  lua_pushcfunction(L, message_box_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newlib(L, bk_funcs);
  return 1;
}
