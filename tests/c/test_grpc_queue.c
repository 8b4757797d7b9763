/*
 * myrmex.core.grpc's response queue when the peer reads slower than the server is fed: the file
 * sync tops a call's queue up while it drains, so the queue is never empty when added to, and
 * its memory must stay near what is queued, not grow with every byte ever sent (it did: a
 * 300 MiB build context cost up to 310 MiB). The peer is nghttp2's own client with its default
 * 64 KiB window, so the server can frame only part of the queue each round.
 */
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>
#include <nghttp2/nghttp2.h>

int luaopen_myrmex_core_grpc(lua_State *L);

#include "check.h"

#define TOTAL ((size_t)64 << 20) /* response bytes the server is given */

typedef struct bytes {
  char *p;
  size_t len, cap;
} bytes;

static bytes to_server;
static size_t received;
static const char request[] = {0, 0, 0, 0, 1, 'x'}; /* one gRPC message: 1 byte */

static void add(bytes *b, const void *data, size_t n) {
  if (b->len + n > b->cap) {
    b->cap = (b->len + n) * 2;
    b->p = realloc(b->p, b->cap);
    if (!b->p)
      abort();
  }
  memcpy(b->p + b->len, data, n);
  b->len += n;
}

static ssize_t on_send(nghttp2_session *h2, const uint8_t *data, size_t len, int flags, void *ud) {
  (void)h2, (void)flags, (void)ud;
  add(&to_server, data, len);
  return (ssize_t)len;
}

static int on_chunk(nghttp2_session *h2, uint8_t flags, int32_t stream, const uint8_t *data,
                    size_t len, void *ud) {
  (void)h2, (void)flags, (void)stream, (void)data, (void)ud;
  received += len;
  return 0;
}

static ssize_t request_body(nghttp2_session *h2, int32_t stream, uint8_t *buf, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *ud) {
  (void)h2, (void)stream, (void)src, (void)ud;
  if (len < sizeof request)
    abort();
  memcpy(buf, request, sizeof request);
  *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)sizeof request;
}

/* The server side, in Lua as the session drives it: feed the peer's bytes, keep the call's
 * queue topped up to 256 KiB, hand back what nghttp2 frames now. */
static const char SERVER[] =
    "local s, stream, sent = require('grpc').server(), nil, 0\n"
    "local chunk = string.rep('z', 32768)\n"
    "function feed(b)\n"
    "  for _, e in ipairs(s:feed(b)) do if e.kind == 'call' then stream = e.stream end end\n"
    "end\n"
    "function pump(total)\n"
    "  while stream and sent < total and s:queued(stream) < 262144 do\n"
    "    s:send_message(stream, chunk); sent = sent + #chunk\n"
    "  end\n"
    "  return s:output()\n"
    "end\n";

static void call_feed(lua_State *L) {
  lua_getglobal(L, "feed");
  lua_pushlstring(L, to_server.p ? to_server.p : "", to_server.len);
  to_server.len = 0;
  if (lua_pcall(L, 1, 0, 0) != LUA_OK)
    fprintf(stderr, "feed: %s\n", lua_tostring(L, -1)), abort();
}

/* One round: the client's bytes to the server, the server's output to the client. */
static void round_trip(lua_State *L, nghttp2_session *client) {
  CHECK(nghttp2_session_send(client) == 0);
  call_feed(L);
  lua_getglobal(L, "pump");
  lua_pushinteger(L, (lua_Integer)TOTAL);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK)
    fprintf(stderr, "pump: %s\n", lua_tostring(L, -1)), abort();
  size_t n;
  const char *out = lua_tolstring(L, -1, &n);
  CHECK(nghttp2_session_mem_recv(client, (const uint8_t *)out, n) == (ssize_t)n);
  lua_pop(L, 1);
}

int main(void) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "grpc", luaopen_myrmex_core_grpc, 0);
  lua_pop(L, 1);
  if (luaL_dostring(L, SERVER) != LUA_OK)
    fprintf(stderr, "%s\n", lua_tostring(L, -1)), abort();

  nghttp2_session_callbacks *cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_send_callback(cb, on_send);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_chunk);
  nghttp2_session *client;
  CHECK(nghttp2_session_client_new(&client, cb, NULL) == 0);
  nghttp2_session_callbacks_del(cb);
  CHECK(nghttp2_submit_settings(client, NGHTTP2_FLAG_NONE, NULL, 0) == 0);
  const nghttp2_nv hdrs[] = {
#define NV(n, v)                                                                                   \
  {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE}
      NV(":method", "POST"),
      NV(":scheme", "http"),
      NV(":authority", "session"),
      NV(":path", "/moby.filesync.v1.FileSync/DiffCopy"),
      NV("content-type", "application/grpc"),
      NV("te", "trailers"),
#undef NV
  };
  nghttp2_data_provider body = {.source = {.ptr = NULL}, .read_callback = request_body};
  CHECK(nghttp2_submit_request(client, NULL, hdrs, sizeof hdrs / sizeof hdrs[0], &body, NULL) > 0);

  size_t base = 0, peak = 0;
  for (int i = 0; i < 100000 && received < TOTAL; i++) {
    round_trip(L, client);
    struct mallinfo2 m = mallinfo2();
    size_t used = m.uordblks + m.hblkhd; /* large blocks are mmapped, counted apart */
    if (i == 10)
      base = used;
    if (used > peak)
      peak = used;
  }
  CHECK(received >= TOTAL);
#ifdef __SANITIZE_ADDRESS__
  (void)base, (void)peak; /* ASan's allocator is not the one mallinfo2 reports on */
#else
  /* What is queued is 256 KiB and a message; 8 MiB leaves room for nghttp2, Lua's garbage and
   * malloc, and is an eighth of what was sent (without the queue's reuse: 127 MiB). */
  CHECK(base > 0 && peak - base < ((size_t)8 << 20));
  if (failures)
    fprintf(stderr, "received %zu bytes, heap grew by %zu KiB\n", received, (peak - base) >> 10);
#endif

  nghttp2_session_del(client);
  lua_close(L);
  free(to_server.p);
  return failures != 0;
}
