/*
 * myrmex.core.grpc: the server side of gRPC over one HTTP/2 connection, as a codec.
 *
 *   grpc.server() -> server handle
 *   s:feed(bytes) -> events   bytes the peer sent; a list of
 *       {kind="call", stream=, path=, headers={name={values}}} | {kind="message", stream=, data=} |
 *       {kind="end", stream=} (the peer finished sending) | {kind="reset", stream=}
 *   s:send_message(stream, bytes)        one response message (gRPC length-prefixed here)
 *   s:finish(stream, status [, message]) end the call with grpc-status (0 = OK)
 *   s:output() -> bytes                  what is to be written to the peer now ("" if nothing)
 *   s:queued(stream) -> bytes            response bytes given to send_message not yet framed
 *   s:alive() -> boolean                 false once either side ended the connection
 *   s:close()                            also __gc / __close
 *
 * BuildKit's session (POST /session, upgraded to h2c) makes the engine a gRPC client of
 * myrmex: it calls back for secrets, SSH agents, registry credentials and health checks.
 * nghttp2 does every part of HTTP/2 (preface, SETTINGS, HPACK, flow control, stream states);
 * this file only keeps per-stream buffers and the gRPC message framing (a flag byte and a
 * 4-byte length before each protobuf message). It owns no socket: the transport carries the
 * bytes (the upgraded connection of myrmex.http), which keeps one I/O path for every engine.
 * Events are queued in C while nghttp2 calls back and handed to Lua after it returns, so no
 * Lua error can cross nghttp2's frames.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <nghttp2/nghttp2.h>

#define SERVER_MT "myrmex.grpc.server"
/* A gRPC message larger than this from the peer is refused (RESOURCE_EXHAUSTED). */
#define MAX_MESSAGE (16u << 20)

typedef struct buf {
  char *p;
  size_t len, off, cap;
} buf;

static int buf_add(buf *b, const void *data, size_t n) {
  if (b->off > 0 && b->off == b->len)
    b->off = b->len = 0;
  /* A queue topped up while it drains is never empty when added to: without reusing its
   * consumed front it would grow by every byte ever sent (a 300 MiB build context did). */
  if (b->off > 0 && b->len + n > b->cap) {
    memmove(b->p, b->p + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
  }
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
      return -1;
    b->p = p, b->cap = cap;
  }
  memcpy(b->p + b->len, data, n);
  b->len += n;
  return 0;
}

enum { EV_CALL, EV_MESSAGE, EV_END, EV_RESET };

typedef struct event {
  int kind;
  int32_t stream;
  char *data; /* path for EV_CALL, the message for EV_MESSAGE */
  size_t len;
  char *hdrs; /* EV_CALL: the request's own headers, "name\0value\0" pairs */
  size_t hlen;
  struct event *next;
} event;

typedef struct call {
  int32_t id;
  buf in;                   /* request bytes not yet split into messages */
  buf out;                  /* framed response messages not yet handed to nghttp2 */
  char *path;               /* :path of the request */
  buf hdrs;                 /* the other headers (gRPC metadata), "name\0value\0" pairs */
  int responded;            /* response headers submitted */
  int finishing;            /* finish() called: trailers follow the last message */
  int status;               /* grpc-status for the trailers */
  char *status_msg;         /* grpc-message, or NULL */
  int refused;              /* a message too large: the rest of the request is ignored */
  struct call *prev, *next; /* every live call, so closing the server frees them */
} call;

typedef struct server {
  nghttp2_session *h2;
  call *calls;
  event *head, *tail;
  int failed; /* out of memory in a callback */
  char err[128];
} server;

static void queue(server *sv, int kind, int32_t stream, const char *data, size_t len) {
  event *e = calloc(1, sizeof *e);
  if (!e || (len && !(e->data = malloc(len + 1)))) {
    free(e);
    sv->failed = 1;
    return;
  }
  e->kind = kind, e->stream = stream, e->len = len;
  if (len) {
    memcpy(e->data, data, len);
    e->data[len] = '\0';
  }
  if (sv->tail)
    sv->tail->next = e;
  else
    sv->head = e;
  sv->tail = e;
}

static void call_release(call *c);

static void call_free(server *sv, call *c) {
  if (!c)
    return;
  if (c->prev)
    c->prev->next = c->next;
  else
    sv->calls = c->next;
  if (c->next)
    c->next->prev = c->prev;
  call_release(c);
}

/* The call's memory, once it is off the server's list. */
static void call_release(call *c) {
  free(c->in.p);
  free(c->out.p);
  free(c->hdrs.p);
  free(c->path);
  free(c->status_msg);
  free(c);
}

/* Split the complete gRPC messages off the front of the request buffer. */
static void split_messages(server *sv, call *c) {
  while (!c->refused && c->in.len - c->in.off >= 5) {
    const unsigned char *h = (const unsigned char *)c->in.p + c->in.off;
    uint32_t n = (uint32_t)h[1] << 24 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 8 | h[4];
    if (h[0] != 0 || n > MAX_MESSAGE) {
      /* We announce no compression, so a compressed message is a broken peer too. */
      c->refused = 1;
      nghttp2_submit_rst_stream(sv->h2, NGHTTP2_FLAG_NONE, c->id, NGHTTP2_REFUSED_STREAM);
      queue(sv, EV_RESET, c->id, NULL, 0);
      return;
    }
    if (c->in.len - c->in.off - 5 < n)
      return;
    queue(sv, EV_MESSAGE, c->id, c->in.p + c->in.off + 5, n);
    c->in.off += 5 + n;
  }
}

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *f, void *ud) {
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  call *c = calloc(1, sizeof *c);
  if (!c)
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  server *sv = ud;
  c->id = f->hd.stream_id;
  c->next = sv->calls;
  if (sv->calls)
    sv->calls->prev = c;
  sv->calls = c;
  nghttp2_session_set_stream_user_data(h2, f->hd.stream_id, c);
  return 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud) {
  call *c = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
  if (!c || f->hd.type != NGHTTP2_HEADERS)
    return 0;
  if (namelen == 5 && memcmp(name, ":path", 5) == 0 && !c->path) {
    c->path = malloc(valuelen + 1);
    if (!c->path)
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    memcpy(c->path, value, valuelen);
    c->path[valuelen] = '\0';
  } else if (namelen > 0 && name[0] != ':') {
    if (c->hdrs.len + namelen + valuelen + 2 > 65536)
      return 0; /* metadata past 64 KiB is not kept */
    if (buf_add(&c->hdrs, name, namelen) || buf_add(&c->hdrs, "", 1) ||
        buf_add(&c->hdrs, value, valuelen) || buf_add(&c->hdrs, "", 1))
      return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t stream, const uint8_t *data,
                         size_t len, void *ud) {
  server *sv = ud;
  call *c = nghttp2_session_get_stream_user_data(h2, stream);
  if (!c || c->refused)
    return 0;
  if (buf_add(&c->in, data, len) != 0)
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  split_messages(sv, c);
  return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *f, void *ud) {
  server *sv = ud;
  call *c = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
  if (!c)
    return 0;
  if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
    queue(sv, EV_CALL, c->id, c->path ? c->path : "", c->path ? strlen(c->path) : 0);
    if (sv->tail && sv->tail->kind == EV_CALL && c->hdrs.len) {
      sv->tail->hdrs = malloc(c->hdrs.len);
      if (!sv->tail->hdrs)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
      memcpy(sv->tail->hdrs, c->hdrs.p, c->hdrs.len);
      sv->tail->hlen = c->hdrs.len;
    }
  }
  if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
      (f->hd.flags & NGHTTP2_FLAG_END_STREAM) && !c->refused)
    queue(sv, EV_END, c->id, NULL, 0);
  return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t stream, uint32_t code, void *ud) {
  server *sv = ud;
  call *c = nghttp2_session_get_stream_user_data(h2, stream);
  if (!c)
    return 0;
  if (code != NGHTTP2_NO_ERROR && !c->finishing)
    queue(sv, EV_RESET, stream, NULL, 0);
  nghttp2_session_set_stream_user_data(h2, stream, NULL);
  call_free(sv, c);
  return 0;
}

static void submit_trailers(nghttp2_session *h2, call *c) {
  char code[16];
  snprintf(code, sizeof code, "%d", c->status);
  nghttp2_nv nv[2] = {
      {(uint8_t *)"grpc-status", (uint8_t *)code, 11, strlen(code), NGHTTP2_NV_FLAG_NONE},
      {(uint8_t *)"grpc-message", (uint8_t *)(c->status_msg ? c->status_msg : ""), 12,
       c->status_msg ? strlen(c->status_msg) : 0, NGHTTP2_NV_FLAG_NONE},
  };
  nghttp2_submit_trailer(h2, c->id, nv, c->status_msg ? 2 : 1);
}

/* Response body: the framed messages queued by send_message, then the trailers. */
static ssize_t read_body(nghttp2_session *h2, int32_t stream, uint8_t *out, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *ud) {
  call *c = nghttp2_session_get_stream_user_data(h2, stream);
  if (!c)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  size_t avail = c->out.len - c->out.off;
  if (avail == 0) {
    if (!c->finishing)
      return NGHTTP2_ERR_DEFERRED;
    *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    submit_trailers(h2, c);
    return 0;
  }
  size_t n = avail < len ? avail : len;
  memcpy(out, c->out.p + c->out.off, n);
  c->out.off += n;
  return (ssize_t)n;
}

static int respond(server *sv, call *c) {
  if (c->responded)
    return 0;
  c->responded = 1;
  nghttp2_nv nv[2] = {
      {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
      {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE},
  };
  nghttp2_data_provider dp = {.source = {.ptr = c}, .read_callback = read_body};
  return nghttp2_submit_response(sv->h2, c->id, nv, 2, &dp);
}

/* ---- Lua side ---- */

static server *check_server(lua_State *L) {
  server *sv = luaL_checkudata(L, 1, SERVER_MT);
  if (!sv->h2)
    luaL_error(L, "grpc server: already closed");
  return sv;
}

static void drop_events(server *sv) {
  for (event *e = sv->head; e;) {
    event *next = e->next;
    free(e->data);
    free(e->hdrs);
    free(e);
    e = next;
  }
  sv->head = sv->tail = NULL;
}

static int server_close(lua_State *L) {
  server *sv = luaL_checkudata(L, 1, SERVER_MT);
  if (sv->h2) {
    nghttp2_session_del(sv->h2); /* frees its streams without calling back */
    sv->h2 = NULL;
  }
  for (call *c = sv->calls; c;) {
    call *next = c->next;
    call_release(c);
    c = next;
  }
  sv->calls = NULL;
  drop_events(sv);
  return 0;
}

static int grpc_server(lua_State *L) {
  server *sv = lua_newuserdatauv(L, sizeof *sv, 0);
  memset(sv, 0, sizeof *sv);
  luaL_setmetatable(L, SERVER_MT);
  nghttp2_session_callbacks *cb;
  if (nghttp2_session_callbacks_new(&cb) != 0)
    return luaL_error(L, "grpc.server: out of memory");
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
  int rc = nghttp2_session_server_new(&sv->h2, cb, sv);
  nghttp2_session_callbacks_del(cb);
  if (rc != 0)
    return luaL_error(L, "grpc.server: %s", nghttp2_strerror(rc));
  nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 256},
                                 {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
  nghttp2_submit_settings(sv->h2, NGHTTP2_FLAG_NONE, iv, 2);
  return 1;
}

static const char *const KINDS[] = {"call", "message", "end", "reset"};

/* s:feed(bytes) -> list of events; raises Invalid-style message when the peer broke HTTP/2. */
static int server_feed(lua_State *L) {
  server *sv = check_server(L);
  size_t n;
  const char *data = luaL_checklstring(L, 2, &n);
  ssize_t rc = nghttp2_session_mem_recv(sv->h2, (const uint8_t *)data, n);
  if (rc < 0 || sv->failed) {
    drop_events(sv);
    lua_pushnil(L);
    lua_pushfstring(L, "HTTP/2 from the peer: %s",
                    rc < 0 ? nghttp2_strerror((int)rc) : "out of memory");
    return 2;
  }
  lua_newtable(L);
  int i = 0;
  while (sv->head) {
    event *e = sv->head;
    lua_createtable(L, 0, 3);
    lua_pushstring(L, KINDS[e->kind]);
    lua_setfield(L, -2, "kind");
    lua_pushinteger(L, e->stream);
    lua_setfield(L, -2, "stream");
    if (e->kind == EV_CALL || e->kind == EV_MESSAGE) {
      lua_pushlstring(L, e->data ? e->data : "", e->len);
      lua_setfield(L, -2, e->kind == EV_CALL ? "path" : "data");
    }
    if (e->kind == EV_CALL) {
      lua_newtable(L);
      for (size_t at = 0; at < e->hlen;) {
        const char *name = e->hdrs + at;
        const char *value = name + strlen(name) + 1;
        at = (size_t)(value - e->hdrs) + strlen(value) + 1;
        if (lua_getfield(L, -1, name) != LUA_TTABLE) {
          lua_pop(L, 1);
          lua_newtable(L);
          lua_pushvalue(L, -1);
          lua_setfield(L, -3, name);
        }
        lua_pushstring(L, value);
        lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
        lua_pop(L, 1);
      }
      lua_setfield(L, -2, "headers");
    }
    lua_rawseti(L, -2, ++i);
    sv->head = e->next;
    if (!sv->head)
      sv->tail = NULL;
    free(e->data);
    free(e->hdrs);
    free(e);
  }
  return 1;
}

static call *check_call(lua_State *L, server *sv, int32_t *id) {
  *id = (int32_t)luaL_checkinteger(L, 2);
  return nghttp2_session_get_stream_user_data(sv->h2, *id);
}

/* s:send_message(stream, bytes) -> true, or false when the call is gone (reset by the peer). */
static int server_send_message(lua_State *L) {
  server *sv = check_server(L);
  int32_t id;
  call *c = check_call(L, sv, &id);
  size_t n;
  const char *data = luaL_checklstring(L, 3, &n);
  if (!c || c->finishing) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (n > UINT32_MAX)
    return luaL_error(L, "grpc: message too large");
  unsigned char h[5] = {0, (unsigned char)(n >> 24), (unsigned char)(n >> 16),
                        (unsigned char)(n >> 8), (unsigned char)n};
  if (buf_add(&c->out, h, 5) != 0 || buf_add(&c->out, data, n) != 0)
    return luaL_error(L, "grpc: out of memory");
  if (c->responded)
    nghttp2_session_resume_data(sv->h2, id);
  else if (respond(sv, c) != 0)
    return luaL_error(L, "grpc: could not submit the response");
  lua_pushboolean(L, 1);
  return 1;
}

/* s:finish(stream, status [, message]): the trailers, after what was sent. */
static int server_finish(lua_State *L) {
  server *sv = check_server(L);
  int32_t id;
  call *c = check_call(L, sv, &id);
  int status = (int)luaL_checkinteger(L, 3);
  const char *msg = luaL_optstring(L, 4, NULL);
  if (!c || c->finishing) {
    lua_pushboolean(L, 0);
    return 1;
  }
  c->finishing = 1, c->status = status;
  if (msg && !(c->status_msg = strdup(msg)))
    return luaL_error(L, "grpc: out of memory");
  if (!c->responded) {
    if (status == 0) {
      if (respond(sv, c) != 0)
        return luaL_error(L, "grpc: could not submit the response");
    } else {
      /* Trailers-only: the status rides on the one HEADERS frame that ends the stream. */
      char code[16];
      snprintf(code, sizeof code, "%d", status);
      nghttp2_nv nv[4] = {
          {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
          {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE},
          {(uint8_t *)"grpc-status", (uint8_t *)code, 11, strlen(code), NGHTTP2_NV_FLAG_NONE},
          {(uint8_t *)"grpc-message", (uint8_t *)(msg ? msg : ""), 12, msg ? strlen(msg) : 0,
           NGHTTP2_NV_FLAG_NONE},
      };
      c->responded = 1;
      if (nghttp2_submit_response(sv->h2, id, nv, msg ? 4 : 3, NULL) != 0)
        return luaL_error(L, "grpc: could not submit the response");
    }
  } else {
    nghttp2_session_resume_data(sv->h2, id);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* s:output() -> the bytes nghttp2 wants written now. */
static int server_output(lua_State *L) {
  server *sv = check_server(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (;;) {
    const uint8_t *p;
    ssize_t n = nghttp2_session_mem_send(sv->h2, &p);
    if (n < 0)
      return luaL_error(L, "grpc: %s", nghttp2_strerror((int)n));
    if (n == 0)
      break;
    luaL_addlstring(&b, (const char *)p, (size_t)n);
  }
  luaL_pushresult(&b);
  return 1;
}

static int server_queued(lua_State *L) {
  server *sv = check_server(L);
  int32_t id;
  call *c = check_call(L, sv, &id);
  lua_pushinteger(L, c ? (lua_Integer)(c->out.len - c->out.off) : 0);
  return 1;
}

static int server_alive(lua_State *L) {
  server *sv = luaL_checkudata(L, 1, SERVER_MT);
  lua_pushboolean(L, sv->h2 &&
                         (nghttp2_session_want_read(sv->h2) || nghttp2_session_want_write(sv->h2)));
  return 1;
}

static const luaL_Reg server_meta[] = {
    {"__gc", server_close}, {"__close", server_close}, {NULL, NULL}};
static const luaL_Reg server_methods[] = {
    {"feed", server_feed},     {"send_message", server_send_message},
    {"finish", server_finish}, {"output", server_output},
    {"alive", server_alive},   {"queued", server_queued},
    {"close", server_close},   {NULL, NULL}};
static const luaL_Reg grpc_funcs[] = {{"server", grpc_server}, {NULL, NULL}};

int luaopen_myrmex_core_grpc(lua_State *L) {
  luaL_newmetatable(L, SERVER_MT);
  luaL_setfuncs(L, server_meta, 0);
  luaL_newlib(L, server_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, grpc_funcs);
  return 1;
}
