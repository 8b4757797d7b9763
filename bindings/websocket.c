/*
 * myrmex.core.websocket: a WebSocket client (RFC 6455) over libwebsockets, for the Kubernetes
 * exec and attach streams (the channel protocols v5/v4.channel.k8s.io ride on binary
 * messages). libwebsockets does the handshake, framing, masking and TLS; this file only queues
 * messages both ways.
 *
 * Each connection has its own lws context, driven by conn:poll(ms), which services it for at
 * most ms milliseconds and returns the state. lws's own service call waits on its internal
 * timers (up to 30 s here), so the waiting is a poll() of ours on the connection's socket;
 * lws then serves what is ready without waiting (lws_service with a negative timeout). Lua
 * loops over poll, so a Ctrl-C hook runs between two polls and nothing here blocks for long.
 * Messages received are queued (bounded by max_queue bytes) until conn:recv() takes them;
 * conn:send() queues a binary message that the next polls write.
 *
 * The userdata holds a pointer to a heap object (the callbacks of a context being destroyed
 * still reach it), freed by __gc/__close after the context.
 */
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "lib/lws_api.h"

#define WS_MT "myrmex.websocket"
#define WS_DEFAULT_MAX_QUEUE (64u << 20)

typedef struct msg {
  struct msg *next;
  size_t len;
  unsigned char data[]; /* LWS_PRE bytes of room first for outgoing messages */
} msg;

enum ws_state { WS_CONNECTING, WS_OPEN, WS_CLOSED, WS_FAILED };

typedef struct {
  struct lws_context *ctx;
  struct lws *wsi;
  enum ws_state state;
  int closing;     /* close() asked: send a close frame once the queue is written */
  int http_status; /* of a refused upgrade */
  int close_code;  /* from the peer's close frame */
  char error[256];
  char protocol[64];
  char **headers; /* "name:" and value pairs, NULL-terminated */
  msg *in_head, *in_tail;
  size_t in_bytes, max_queue;
  unsigned char *frag; /* the message being received, in fragments */
  size_t frag_len, frag_cap;
  msg *out_head, *out_tail;
} ws_conn;

typedef struct {
  ws_conn *c;
} ws_box;

static const char *const STATE_NAMES[] = {"connecting", "open", "closed", "failed"};

static void set_error(ws_conn *c, const char *what, const char *detail) {
  snprintf(c->error, sizeof c->error, "%s%s%s", what, detail ? ": " : "", detail ? detail : "");
}

static void free_list(msg *m) {
  while (m) {
    msg *n = m->next;
    free(m);
    m = n;
  }
}

static int on_event(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len) {
  (void)user;
  struct lws_context *ctx = lws_get_context(wsi);
  ws_conn *c = ctx ? lws_context_user(ctx) : NULL;
  if (!c)
    return 0;
  switch (reason) {
  case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
    unsigned char **p = (unsigned char **)in;
    unsigned char *end = *p + len;
    for (char **h = c->headers; h && h[0]; h += 2)
      if (lws_add_http_header_by_name(wsi, (const unsigned char *)h[0], (const unsigned char *)h[1],
                                      (int)strlen(h[1]), p, end))
        return -1;
    break;
  }
  case LWS_CALLBACK_CLIENT_FILTER_PRE_ESTABLISH:
    /* The handshake's headers are still there: the subprotocol the server chose. */
    if (lws_hdr_copy(wsi, c->protocol, (int)sizeof c->protocol, WSI_TOKEN_PROTOCOL) < 0)
      c->protocol[0] = '\0';
    break;
  case LWS_CALLBACK_CLIENT_ESTABLISHED:
    c->state = WS_OPEN;
    if (c->out_head || c->closing)
      lws_callback_on_writable(wsi);
    break;
  case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
    c->http_status = (int)lws_http_client_http_response(wsi);
    set_error(c, "WebSocket connection failed", in ? (const char *)in : NULL);
    c->state = WS_FAILED;
    c->wsi = NULL;
    break;
  case LWS_CALLBACK_CLIENT_RECEIVE: {
    if (c->frag_len + len > c->frag_cap) {
      size_t cap = c->frag_cap ? c->frag_cap : 4096;
      while (cap < c->frag_len + len)
        cap *= 2;
      unsigned char *nf = realloc(c->frag, cap);
      if (!nf) {
        set_error(c, "out of memory receiving a WebSocket message", NULL);
        return -1;
      }
      c->frag = nf;
      c->frag_cap = cap;
    }
    memcpy(c->frag + c->frag_len, in, len);
    c->frag_len += len;
    if (!lws_is_final_fragment(wsi))
      break;
    if (c->in_bytes + c->frag_len > c->max_queue) {
      set_error(c, "received WebSocket messages exceed max_queue unread bytes", NULL);
      c->state = WS_FAILED;
      return -1;
    }
    msg *m = malloc(sizeof *m + c->frag_len);
    if (!m) {
      set_error(c, "out of memory receiving a WebSocket message", NULL);
      return -1;
    }
    m->next = NULL;
    m->len = c->frag_len;
    memcpy(m->data, c->frag, c->frag_len);
    c->frag_len = 0;
    if (c->in_tail)
      c->in_tail->next = m;
    else
      c->in_head = m;
    c->in_tail = m;
    c->in_bytes += m->len;
    break;
  }
  case LWS_CALLBACK_CLIENT_WRITEABLE: {
    msg *m = c->out_head;
    if (m) {
      c->out_head = m->next;
      if (!c->out_head)
        c->out_tail = NULL;
      int n = lws_write(wsi, m->data + LWS_PRE, m->len, LWS_WRITE_BINARY);
      free(m);
      if (n < 0) {
        set_error(c, "WebSocket write failed", NULL);
        return -1;
      }
      if (c->out_head || c->closing)
        lws_callback_on_writable(wsi);
      break;
    }
    if (c->closing) {
      lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, NULL, 0);
      return -1;
    }
    break;
  }
  case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
    if (len >= 2)
      c->close_code = (((const unsigned char *)in)[0] << 8) | ((const unsigned char *)in)[1];
    break;
  case LWS_CALLBACK_CLIENT_CLOSED:
    if (c->state != WS_FAILED)
      c->state = WS_CLOSED;
    c->wsi = NULL;
    break;
  default:
    break;
  }
  return 0;
}

static const struct lws_protocols PROTOCOLS[] = {{"myrmex-ws", on_event, 0, 0, 0, NULL, 0},
                                                 {NULL, NULL, 0, 0, 0, NULL, 0}};

static void conn_free(ws_conn *c) {
  if (!c)
    return;
  if (c->ctx) {
    struct lws_context *ctx = c->ctx;
    c->ctx = NULL;
    lws_context_destroy(ctx); /* its callbacks still see c, through the context's user */
  }
  free_list(c->in_head);
  free_list(c->out_head);
  free(c->frag);
  for (char **h = c->headers; h && *h; h++)
    free(*h);
  free(c->headers);
  free(c);
}

static ws_conn *check_conn(lua_State *L) {
  ws_box *b = luaL_checkudata(L, 1, WS_MT);
  if (!b->c)
    luaL_error(L, "websocket: connection already closed");
  return b->c;
}

static const char *opt_string(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  const char *s = lua_isnil(L, -1) ? NULL : luaL_checkstring(L, -1);
  lua_pop(L, 1);
  return s; /* stays valid: the table holds the string */
}

static int opt_bool(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  int v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* A Lua string's bytes with their length, or NULL (the table keeps it alive). */
static const char *opt_lstring(lua_State *L, int t, const char *k, size_t *n) {
  lua_getfield(L, t, k);
  const char *s = lua_isnil(L, -1) ? NULL : luaL_checklstring(L, -1, n);
  lua_pop(L, 1);
  return s;
}

/* Split "wss://host:port/path?q" into its parts (host and path copied into buffers). */
static int parse_url(const char *url, int *tls, char *host, size_t hostcap, int *port, char *path,
                     size_t pathcap) {
  const char *p;
  if (strncmp(url, "wss://", 6) == 0 || strncmp(url, "https://", 8) == 0) {
    *tls = 1;
    p = strstr(url, "://") + 3;
  } else if (strncmp(url, "ws://", 5) == 0 || strncmp(url, "http://", 7) == 0) {
    *tls = 0;
    p = strstr(url, "://") + 3;
  } else {
    return 0;
  }
  const char *hs = p, *he;
  if (*p == '[') {
    hs = p + 1;
    he = strchr(hs, ']');
    if (!he)
      return 0;
    p = he + 1;
  } else {
    he = p + strcspn(p, ":/?");
    p = he;
  }
  if ((size_t)(he - hs) >= hostcap || he == hs)
    return 0;
  memcpy(host, hs, (size_t)(he - hs));
  host[he - hs] = '\0';
  *port = *tls ? 443 : 80;
  if (*p == ':') {
    char *end;
    long v = strtol(p + 1, &end, 10);
    if (v <= 0 || v > 65535)
      return 0;
    *port = (int)v;
    p = end;
  }
  if (*p == '\0')
    p = "/";
  size_t n = strlen(p), at = 0;
  if (n + 2 > pathcap)
    return 0;
  if (*p == '?')
    path[at++] = '/';
  memcpy(path + at, p, n + 1);
  return 1;
}

/* Copy the headers table ({"Name: value", ...}) as lws wants them: "name:" and value. */
static int copy_headers(lua_State *L, int t, ws_conn *c) {
  lua_getfield(L, t, "headers");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return 1;
  }
  luaL_checktype(L, -1, LUA_TTABLE);
  lua_Integer n = luaL_len(L, -1);
  c->headers = calloc((size_t)(2 * n + 1), sizeof(char *));
  if (!c->headers)
    return 0;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    const char *h = lua_tostring(L, -1);
    const char *colon = h ? strchr(h, ':') : NULL;
    if (!colon) {
      lua_pop(L, 2);
      return -1;
    }
    size_t nl = (size_t)(colon - h);
    char *name = malloc(nl + 2);
    const char *v = colon + 1;
    while (*v == ' ')
      v++;
    char *value = strdup(v);
    if (!name || !value) {
      free(name);
      free(value);
      lua_pop(L, 2);
      return 0;
    }
    for (size_t k = 0; k < nl; k++)
      name[k] = (char)((h[k] >= 'A' && h[k] <= 'Z') ? h[k] + 32 : h[k]);
    name[nl] = ':';
    name[nl + 1] = '\0';
    c->headers[2 * (i - 1)] = name;
    c->headers[2 * (i - 1) + 1] = value;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 1;
}

/* connect{url=, protocols="a,b", headers={...}, tls={ca=, ca_data=, cert=, cert_data=, key=,
 * key_data=, insecure=, server_name=}, max_queue=} -> connection (connecting; poll it) */
static int ws_connect(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  const char *url = opt_string(L, 1, "url");
  if (!url)
    return luaL_error(L, "websocket.connect: url required");
  int tls = 0, port = 0;
  char host[256], path[4096];
  if (!parse_url(url, &tls, host, sizeof host, &port, path, sizeof path))
    return luaL_error(L, "websocket.connect: cannot parse url '%s'", url);
  const char *protocols = opt_string(L, 1, "protocols");
  lua_getfield(L, 1, "max_queue");
  lua_Integer max_queue = luaL_optinteger(L, -1, WS_DEFAULT_MAX_QUEUE);
  lua_pop(L, 1);

  const char *ca = NULL, *cert = NULL, *key = NULL, *server_name = NULL;
  const char *ca_data = NULL, *cert_data = NULL, *key_data = NULL;
  size_t ca_len = 0, cert_len = 0, key_len = 0;
  int insecure = 0;
  lua_getfield(L, 1, "tls");
  int tt = lua_gettop(L);
  if (lua_istable(L, tt)) {
    ca = opt_string(L, tt, "ca");
    cert = opt_string(L, tt, "cert");
    key = opt_string(L, tt, "key");
    server_name = opt_string(L, tt, "server_name");
    ca_data = opt_lstring(L, tt, "ca_data", &ca_len);
    cert_data = opt_lstring(L, tt, "cert_data", &cert_len);
    key_data = opt_lstring(L, tt, "key_data", &key_len);
    insecure = opt_bool(L, tt, "insecure");
  }

  ws_box *b = lua_newuserdatauv(L, sizeof *b, 0); /* closed until the connection exists */
  b->c = NULL;
  luaL_setmetatable(L, WS_MT);
  ws_conn *c = calloc(1, sizeof *c);
  if (!c)
    return luaL_error(L, "websocket.connect: out of memory");
  b->c = c;
  c->max_queue = max_queue > 0 ? (size_t)max_queue : WS_DEFAULT_MAX_QUEUE;
  int hr = copy_headers(L, 1, c);
  if (hr <= 0)
    return luaL_error(L, hr < 0 ? "websocket.connect: headers must be \"Name: value\" strings"
                                : "websocket.connect: out of memory");

  struct lws_context_creation_info info;
  memset(&info, 0, sizeof info);
  info.port = CONTEXT_PORT_NO_LISTEN;
  info.protocols = PROTOCOLS;
  info.user = c;
  info.gid = -1;
  info.uid = -1;
  if (tls) {
    info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.client_ssl_ca_filepath = ca;
    info.client_ssl_ca_mem = ca_data;
    info.client_ssl_ca_mem_len = (unsigned int)ca_len;
    info.client_ssl_cert_filepath = cert;
    info.client_ssl_cert_mem = cert_data;
    info.client_ssl_cert_mem_len = (unsigned int)cert_len;
    info.client_ssl_private_key_filepath = key;
    info.client_ssl_key_mem = key_data;
    info.client_ssl_key_mem_len = (unsigned int)key_len;
  }
  c->ctx = lws_create_context(&info);
  if (!c->ctx) {
    luaL_pushfail(L);
    lua_pushstring(L, "connect");
    lua_pushfstring(L, "cannot set up a WebSocket client for %s (TLS files or data unusable?)",
                    url);
    return 3;
  }

  struct lws_client_connect_info ci;
  memset(&ci, 0, sizeof ci);
  ci.context = c->ctx;
  ci.address = host;
  ci.port = port;
  ci.path = path;
  ci.host = server_name ? server_name : host;
  ci.origin = ci.host;
  ci.protocol = protocols;
  ci.local_protocol_name = PROTOCOLS[0].name;
  ci.alpn = "http/1.1";
  ci.pwsi = &c->wsi;
  if (tls) {
    ci.ssl_connection = LCCSCF_USE_SSL;
    if (insecure)
      ci.ssl_connection |=
          LCCSCF_ALLOW_SELFSIGNED | LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK | LCCSCF_ALLOW_INSECURE;
  }
  if (!lws_client_connect_via_info(&ci) && c->state != WS_FAILED) {
    c->state = WS_FAILED;
    set_error(c, "WebSocket connection failed", "could not start connecting");
  }
  return 1;
}

/* poll(ms) -> state: service the connection until something happened or ms passed. */
static int ws_poll(lua_State *L) {
  ws_conn *c = check_conn(L);
  lua_Integer ms = luaL_optinteger(L, 2, 100);
  if (c->ctx && (c->state == WS_CONNECTING || c->state == WS_OPEN)) {
    /* 0 when lws already holds work (TLS bytes read ahead, a pending write): do not wait. */
    int wait = lws_service_adjust_timeout(c->ctx, ms < 0 ? 0 : (int)ms, 0);
    int fd = c->wsi ? (int)lws_get_socket_fd(c->wsi) : -1;
    if (fd >= 0 && wait > 0) {
      struct pollfd p = {fd, POLLIN, 0};
      if (c->state == WS_CONNECTING || c->out_head || c->closing)
        p.events |= POLLOUT;
      (void)poll(&p, 1, wait);
    }
    /* A negative timeout makes lws poll its sockets without waiting and serve what is ready,
     * its timers and its pending work. */
    (void)lws_service(c->ctx, -1);
  }
  lua_pushstring(L, STATE_NAMES[c->state]);
  return 1;
}

/* recv() -> the next message received (a string), or nil when none is queued. */
static int ws_recv(lua_State *L) {
  ws_conn *c = check_conn(L);
  msg *m = c->in_head;
  if (!m) {
    lua_pushnil(L);
    return 1;
  }
  /* Pushing can raise (out of memory): the message leaves the queue only once it is pushed. */
  lua_pushlstring(L, (const char *)m->data, m->len);
  c->in_head = m->next;
  if (!c->in_head)
    c->in_tail = NULL;
  c->in_bytes -= m->len;
  free(m);
  return 1;
}

/* send(data): queue one binary message. */
static int ws_send(lua_State *L) {
  ws_conn *c = check_conn(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  if (c->state == WS_CLOSED || c->state == WS_FAILED || c->closing)
    return luaL_error(L, "websocket.send: the connection is %s",
                      c->closing ? "closing" : STATE_NAMES[c->state]);
  msg *m = malloc(sizeof *m + LWS_PRE + n);
  if (!m)
    return luaL_error(L, "websocket.send: out of memory");
  m->next = NULL;
  m->len = n;
  memcpy(m->data + LWS_PRE, s, n);
  if (c->out_tail)
    c->out_tail->next = m;
  else
    c->out_head = m;
  c->out_tail = m;
  if (c->wsi && c->state == WS_OPEN)
    lws_callback_on_writable(c->wsi);
  return 0;
}

/* shutdown(): send a close frame after what is queued (the peer then closes). */
static int ws_shutdown(lua_State *L) {
  ws_conn *c = check_conn(L);
  c->closing = 1;
  if (c->wsi && c->state == WS_OPEN)
    lws_callback_on_writable(c->wsi);
  return 0;
}

/* info() -> {state=, protocol=, error=, http_status=, close_code=, queued=} */
static int ws_info(lua_State *L) {
  ws_conn *c = check_conn(L);
  lua_createtable(L, 0, 6);
  lua_pushstring(L, STATE_NAMES[c->state]);
  lua_setfield(L, -2, "state");
  if (c->protocol[0]) {
    lua_pushstring(L, c->protocol);
    lua_setfield(L, -2, "protocol");
  }
  if (c->error[0]) {
    lua_pushstring(L, c->error);
    lua_setfield(L, -2, "error");
  }
  if (c->http_status) {
    lua_pushinteger(L, c->http_status);
    lua_setfield(L, -2, "http_status");
  }
  if (c->close_code) {
    lua_pushinteger(L, c->close_code);
    lua_setfield(L, -2, "close_code");
  }
  lua_pushinteger(L, (lua_Integer)c->in_bytes);
  lua_setfield(L, -2, "queued");
  return 1;
}

static int ws_gc(lua_State *L) {
  ws_box *b = luaL_checkudata(L, 1, WS_MT);
  ws_conn *c = b->c;
  b->c = NULL;
  conn_free(c);
  return 0;
}

static const luaL_Reg ws_meta[] = {{"__gc", ws_gc}, {"__close", ws_gc}, {NULL, NULL}};
static const luaL_Reg ws_methods[] = {
    {"poll", ws_poll}, {"recv", ws_recv}, {"send", ws_send}, {"shutdown", ws_shutdown},
    {"info", ws_info}, {"close", ws_gc},  {NULL, NULL}};
static const luaL_Reg ws_funcs[] = {{"connect", ws_connect}, {NULL, NULL}};

int luaopen_myrmex_core_websocket(lua_State *L) {
  mx_lws_load(L);
  lws_set_log_level(0, NULL); /* errors reach Lua as values, not as lines on stderr */
  luaL_newmetatable(L, WS_MT);
  luaL_setfuncs(L, ws_meta, 0);
  luaL_newlib(L, ws_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, ws_funcs);
  return 1;
}
