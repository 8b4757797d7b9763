/*
 * myrmex.core.websocket: a WebSocket client (RFC 6455) over libwebsockets, for the Kubernetes
 * exec, attach and port-forward streams (the channel protocols v5/v4.channel.k8s.io ride on
 * binary messages; forward() below runs port-forwards in a thread). libwebsockets does the
 * handshake, framing, masking and TLS; this file only queues messages both ways.
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
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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
  char *const *headers; /* "name:" and value pairs, NULL-terminated (the params') */
  msg *in_head, *in_tail;
  size_t in_bytes, max_queue;
  unsigned char *frag; /* the message being received, in fragments */
  size_t frag_len, frag_cap;
  msg *out_head, *out_tail;
} ws_conn;

typedef struct {
  ws_conn *c;
  struct ws_params_s *p;
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
    for (char *const *h = c->headers; h && h[0]; h += 2)
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
  free(c); /* its headers belong to the ws_params it was started from */
}

static ws_conn *check_conn(lua_State *L) {
  ws_box *b = luaL_checkudata(L, 1, WS_MT);
  if (!b->c)
    luaL_error(L, "websocket: connection already closed");
  return b->c;
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

/* What a connection is made from, owned (strings copied): a forwarder's thread opens one
 * connection per accepted socket from it, long after the Lua call returned. */
typedef struct ws_params_s {
  int tls, port, insecure;
  char host[256], path[4096];
  char *url, *protocols, *ca, *cert, *key, *server_name;
  char *proxy; /* "[user:pass@]host:port" of an HTTP proxy tunnelled through (CONNECT), or NULL */
  char *ca_data, *cert_data, *key_data;
  size_t ca_len, cert_len, key_len, max_queue;
  char **headers; /* "name:" and value pairs, NULL-terminated */
} ws_params;

static void params_free(ws_params *p) {
  if (!p)
    return;
  free(p->url);
  free(p->protocols);
  free(p->ca);
  free(p->cert);
  free(p->key);
  free(p->server_name);
  free(p->proxy);
  free(p->ca_data);
  free(p->cert_data);
  free(p->key_data);
  for (char **h = p->headers; h && *h; h++)
    free(*h);
  free(p->headers);
  free(p);
}

static char *dup_or_null(const char *s, size_t n) {
  if (!s)
    return NULL;
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

/* Copy a string field of table t (absent: NULL). Sets *oom when a copy failed. */
static char *copy_field(lua_State *L, int t, const char *k, size_t *len, int *oom) {
  size_t n = 0;
  const char *s = opt_lstring(L, t, k, &n);
  char *d = dup_or_null(s, n);
  if (s && !d)
    *oom = 1;
  if (len)
    *len = n;
  return d;
}

/* The headers table ({"Name: value", ...}) as lws wants them: "name:" and value. 1 on success,
 * 0 out of memory, -1 a header without ':'. */
static int copy_headers(lua_State *L, int t, ws_params *p) {
  lua_getfield(L, t, "headers");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return 1;
  }
  luaL_checktype(L, -1, LUA_TTABLE);
  lua_Integer n = luaL_len(L, -1);
  p->headers = calloc((size_t)(2 * n + 1), sizeof(char *));
  if (!p->headers)
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
    p->headers[2 * (i - 1)] = name;
    p->headers[2 * (i - 1) + 1] = value;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 1;
}

/* Read {url=, protocols=, headers=, tls={...}, max_queue=} at index t into a new ws_params;
 * raises (naming fname) on misuse, after freeing what it made. */
static ws_params *params_read(lua_State *L, int t, const char *fname) {
  luaL_checktype(L, t, LUA_TTABLE);
  ws_params *p = calloc(1, sizeof *p);
  if (!p) {
    luaL_error(L, "%s: out of memory", fname);
    return NULL; /* not reached: luaL_error does not return */
  }
  int oom = 0;
  size_t n;
  p->url = copy_field(L, t, "url", &n, &oom);
  p->protocols = copy_field(L, t, "protocols", NULL, &oom);
  p->proxy = copy_field(L, t, "proxy", NULL, &oom);
  lua_getfield(L, t, "max_queue");
  lua_Integer mq = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
  lua_pop(L, 1);
  p->max_queue = mq > 0 ? (size_t)mq : WS_DEFAULT_MAX_QUEUE;
  lua_getfield(L, t, "tls");
  int tt = lua_gettop(L);
  if (lua_istable(L, tt)) {
    p->ca = copy_field(L, tt, "ca", NULL, &oom);
    p->cert = copy_field(L, tt, "cert", NULL, &oom);
    p->key = copy_field(L, tt, "key", NULL, &oom);
    p->server_name = copy_field(L, tt, "server_name", NULL, &oom);
    p->ca_data = copy_field(L, tt, "ca_data", &p->ca_len, &oom);
    p->cert_data = copy_field(L, tt, "cert_data", &p->cert_len, &oom);
    p->key_data = copy_field(L, tt, "key_data", &p->key_len, &oom);
    p->insecure = opt_bool(L, tt, "insecure");
  }
  lua_pop(L, 1);
  const char *why = NULL;
  if (oom)
    why = "out of memory";
  else if (!p->url)
    why = "url required";
  else if (!parse_url(p->url, &p->tls, p->host, sizeof p->host, &p->port, p->path, sizeof p->path))
    why = "cannot parse url";
  else if (p->proxy && !strchr(p->proxy, ':'))
    why = "proxy must be [user:password@]host:port";
  else {
    int hr = copy_headers(L, t, p);
    if (hr <= 0)
      why = hr < 0 ? "headers must be \"Name: value\" strings" : "out of memory";
  }
  if (why) {
    params_free(p);
    luaL_error(L, "%s: %s", fname, why);
  }
  return p;
}

/* Make c's context and start connecting; 0, or -1 when the context cannot be made (TLS files
 * or data unusable). */
static int conn_start(ws_conn *c, const ws_params *p) {
  c->max_queue = p->max_queue;
  c->headers = p->headers;
  struct lws_context_creation_info info;
  memset(&info, 0, sizeof info);
  info.port = CONTEXT_PORT_NO_LISTEN;
  info.protocols = PROTOCOLS;
  info.user = c;
  info.gid = -1;
  info.uid = -1;
  /* The proxy is the caller's decision (kubeconfig proxy-url, HTTPS_PROXY less NO_PROXY). lws
   * tunnels through it with CONNECT, then does TLS and the upgrade inside the tunnel. Without
   * one, lws would read $http_proxy itself, ignoring NO_PROXY; an empty address (no port)
   * makes it use none. */
  info.http_proxy_address = p->proxy ? p->proxy : "";
  if (p->tls) {
    info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.client_ssl_ca_filepath = p->ca;
    info.client_ssl_ca_mem = p->ca_data;
    info.client_ssl_ca_mem_len = (unsigned int)p->ca_len;
    info.client_ssl_cert_filepath = p->cert;
    info.client_ssl_cert_mem = p->cert_data;
    info.client_ssl_cert_mem_len = (unsigned int)p->cert_len;
    info.client_ssl_private_key_filepath = p->key;
    info.client_ssl_key_mem = p->key_data;
    info.client_ssl_key_mem_len = (unsigned int)p->key_len;
  }
  c->ctx = lws_create_context(&info);
  if (!c->ctx)
    return -1;
  struct lws_client_connect_info ci;
  memset(&ci, 0, sizeof ci);
  ci.context = c->ctx;
  ci.address = p->host;
  ci.port = p->port;
  ci.path = p->path;
  ci.host = p->server_name ? p->server_name : p->host;
  ci.origin = ci.host;
  ci.protocol = p->protocols;
  ci.local_protocol_name = PROTOCOLS[0].name;
  ci.alpn = "http/1.1";
  ci.pwsi = &c->wsi;
  if (p->tls) {
    ci.ssl_connection = LCCSCF_USE_SSL;
    if (p->insecure)
      ci.ssl_connection |=
          LCCSCF_ALLOW_SELFSIGNED | LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK | LCCSCF_ALLOW_INSECURE;
  }
  if (!lws_client_connect_via_info(&ci) && c->state != WS_FAILED) {
    c->state = WS_FAILED;
    set_error(c, "WebSocket connection failed", "could not start connecting");
  }
  return 0;
}

/* connect{url=, protocols="a,b", headers={...}, proxy="[user:pass@]host:port", tls={ca=,
 * ca_data=, cert=, cert_data=, key=, key_data=, insecure=, server_name=}, max_queue=}
 * -> connection (connecting; poll it) */
static int ws_connect(lua_State *L) {
  ws_box *b = lua_newuserdatauv(L, sizeof *b, 0); /* closed until the connection exists */
  b->c = NULL;
  b->p = NULL;
  luaL_setmetatable(L, WS_MT);
  b->p = params_read(L, 1, "websocket.connect");
  ws_conn *c = calloc(1, sizeof *c);
  if (!c)
    return luaL_error(L, "websocket.connect: out of memory");
  b->c = c;
  if (conn_start(c, b->p) < 0) {
    luaL_pushfail(L);
    lua_pushstring(L, "connect");
    lua_pushfstring(L, "cannot set up a WebSocket client for %s (TLS files or data unusable?)",
                    b->p->url);
    return 3;
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
  struct ws_params_s *p = b->p;
  b->c = NULL;
  b->p = NULL;
  conn_free(c);
  params_free(p);
  return 0;
}

/* ---- port-forward ---------------------------------------------------------------------
 * forward{url=, protocols=, headers=, tls=} -> forwarder: a thread listening on 127.0.0.1:0
 * that carries each accepted connection over a WebSocket of its own to url (a pod's
 * portforward subresource with ports=P). The kubelet's port-forward channels: 0 data, 1 error,
 * each opened by the server with the port as 2 bytes (little-endian) that are not data. The
 * thread touches no Lua state: it has its own copies of the parameters and its own lws
 * contexts, and stops when the write end of its wake pipe is closed. */
#define FWD_MT "myrmex.websocket.forwarder"
#define FWD_MAX_PAIRS 64
#define FWD_CHUNK 32768

typedef struct {
  ws_conn *c;
  int tcp;
  int opened[2]; /* the channel's port prefix was seen */
  int eof;       /* the local side ended */
} fwd_pair;

typedef struct {
  ws_params *p;
  int listen_fd, wake[2], port;
  pthread_t thread;
  int started;
  pthread_mutex_t mu;
  char error[256]; /* the last connection's failure, for info() */
  long accepted, failed;
} forwarder;

typedef struct {
  forwarder *f;
} fwd_box;

static void fwd_error(forwarder *f, const char *text) {
  pthread_mutex_lock(&f->mu);
  snprintf(f->error, sizeof f->error, "%s", text);
  f->failed++;
  pthread_mutex_unlock(&f->mu);
}

static int send_all(int fd, const unsigned char *d, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, d, n, MSG_NOSIGNAL);
    if (w < 0)
      return -1;
    d += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Deliver what the WebSocket received to the local socket; 0 to go on, -1 when the pair ends. */
static int fwd_drain(forwarder *f, fwd_pair *pr) {
  msg *m;
  while ((m = pr->c->in_head)) {
    pr->c->in_head = m->next;
    if (!pr->c->in_head)
      pr->c->in_tail = NULL;
    pr->c->in_bytes -= m->len;
    int ch = m->len ? m->data[0] : -1;
    const unsigned char *d = m->data + 1;
    size_t n = m->len ? m->len - 1 : 0;
    if ((ch == 0 || ch == 1) && !pr->opened[ch]) {
      pr->opened[ch] = 1;
      size_t skip = n < 2 ? n : 2;
      d += skip;
      n -= skip;
    }
    int rc = 0;
    if (ch == 0 && n > 0)
      rc = send_all(pr->tcp, d, n);
    else if (ch == 1 && n > 0) {
      char buf[256];
      snprintf(buf, sizeof buf, "%.*s", (int)(n < 255 ? n : 255), (const char *)d);
      fwd_error(f, buf);
      rc = -1;
    }
    free(m);
    if (rc < 0)
      return -1;
  }
  return 0;
}

static void fwd_pair_end(fwd_pair *pr) {
  if (pr->tcp >= 0)
    close(pr->tcp);
  conn_free(pr->c);
  pr->tcp = -1;
  pr->c = NULL;
}

static void *fwd_main(void *arg) {
  forwarder *f = arg;
  fwd_pair pairs[FWD_MAX_PAIRS];
  memset(pairs, 0, sizeof pairs);
  int np = 0;
  unsigned char buf[FWD_CHUNK + 1 + LWS_PRE];
  for (;;) {
    struct pollfd fds[2 + 2 * FWD_MAX_PAIRS];
    int nf = 0;
    fds[nf++] = (struct pollfd){f->wake[0], POLLIN, 0};
    fds[nf++] = (struct pollfd){f->listen_fd, (short)(np < FWD_MAX_PAIRS ? POLLIN : 0), 0};
    for (int i = 0; i < np; i++) {
      ws_conn *c = pairs[i].c;
      /* Read the local side only once the WebSocket is open and its queue is short. */
      int want_tcp = c->state == WS_OPEN && !pairs[i].eof && !c->out_head;
      fds[nf++] = (struct pollfd){pairs[i].tcp, (short)(want_tcp ? POLLIN : 0), 0};
      int wfd = c->wsi ? (int)lws_get_socket_fd(c->wsi) : -1;
      short ev = POLLIN;
      if (c->state == WS_CONNECTING || c->out_head || c->closing)
        ev = (short)(ev | POLLOUT);
      fds[nf++] = (struct pollfd){wfd, (short)(wfd >= 0 ? ev : 0), 0};
    }
    int wait = 100;
    for (int i = 0; i < np; i++)
      if (lws_service_adjust_timeout(pairs[i].c->ctx, 100, 0) == 0)
        wait = 0;
    (void)poll(fds, (nfds_t)nf, wait);
    if (fds[0].revents)
      break; /* woken: the owner closed us */
    if (fds[1].revents & POLLIN) {
      int s = accept(f->listen_fd, NULL, NULL);
      if (s >= 0) {
        ws_conn *c = calloc(1, sizeof *c);
        if (!c || conn_start(c, f->p) < 0) {
          fwd_error(f, "cannot set up a WebSocket client (TLS files or data unusable?)");
          conn_free(c);
          close(s);
        } else {
          pairs[np++] = (fwd_pair){c, s, {0, 0}, 0};
          pthread_mutex_lock(&f->mu);
          f->accepted++;
          pthread_mutex_unlock(&f->mu);
        }
      }
    }
    for (int i = 0; i < np; i++) {
      fwd_pair *pr = &pairs[i];
      short tre = fds[2 + 2 * i].revents;
      (void)lws_service(pr->c->ctx, -1);
      int end = fwd_drain(f, pr) < 0;
      if (!end && (tre & (POLLIN | POLLHUP | POLLERR)) && pr->c->state == WS_OPEN) {
        buf[LWS_PRE] = 0; /* the data channel */
        ssize_t r = recv(pr->tcp, buf + LWS_PRE + 1, FWD_CHUNK, 0);
        if (r > 0) {
          msg *m = malloc(sizeof *m + LWS_PRE + 1 + (size_t)r);
          if (m) {
            m->next = NULL;
            m->len = 1 + (size_t)r;
            memcpy(m->data + LWS_PRE, buf + LWS_PRE, m->len);
            if (pr->c->out_tail)
              pr->c->out_tail->next = m;
            else
              pr->c->out_head = m;
            pr->c->out_tail = m;
            lws_callback_on_writable(pr->c->wsi);
          }
        } else {
          pr->eof = 1; /* the local client is done: close the stream after what is queued */
          pr->c->closing = 1;
          if (pr->c->wsi)
            lws_callback_on_writable(pr->c->wsi);
        }
      }
      if (pr->c->state == WS_FAILED) {
        if (pr->c->error[0])
          fwd_error(f, pr->c->error);
        end = 1;
      } else if (pr->c->state == WS_CLOSED) {
        end = 1;
      }
      if (end) {
        fwd_pair_end(pr);
        pairs[i--] = pairs[--np];
      }
    }
  }
  for (int i = 0; i < np; i++)
    fwd_pair_end(&pairs[i]);
  return NULL;
}

static void fwd_free(forwarder *f) {
  if (!f)
    return;
  if (f->started) {
    close(f->wake[1]); /* wakes the thread */
    pthread_join(f->thread, NULL);
    close(f->wake[0]);
  }
  if (f->listen_fd >= 0)
    close(f->listen_fd);
  pthread_mutex_destroy(&f->mu);
  params_free(f->p);
  free(f);
}

static int ws_forward(lua_State *L) {
  fwd_box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->f = NULL;
  luaL_setmetatable(L, FWD_MT);
  ws_params *p = params_read(L, 1, "websocket.forward");
  forwarder *f = calloc(1, sizeof *f);
  if (!f) {
    params_free(p);
    return luaL_error(L, "websocket.forward: out of memory");
  }
  f->p = p;
  f->listen_fd = -1;
  pthread_mutex_init(&f->mu, NULL);
  b->f = f;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  f->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (f->listen_fd < 0 || bind(f->listen_fd, (struct sockaddr *)&a, sizeof a) < 0 ||
      listen(f->listen_fd, 16) < 0 || getsockname(f->listen_fd, (struct sockaddr *)&a, &al) < 0) {
    luaL_pushfail(L);
    lua_pushstring(L, "connect");
    lua_pushfstring(L, "cannot listen on 127.0.0.1: %s", strerror(errno));
    return 3;
  }
  f->port = ntohs(a.sin_port);
  if (pipe2(f->wake, O_CLOEXEC) < 0)
    return luaL_error(L, "websocket.forward: pipe: %s", strerror(errno));
  if (pthread_create(&f->thread, NULL, fwd_main, f) != 0) {
    close(f->wake[0]);
    close(f->wake[1]);
    return luaL_error(L, "websocket.forward: cannot start its thread");
  }
  f->started = 1;
  return 1;
}

static forwarder *check_fwd(lua_State *L) {
  fwd_box *b = luaL_checkudata(L, 1, FWD_MT);
  if (!b->f)
    luaL_error(L, "websocket: forwarder already closed");
  return b->f;
}

/* port() -> the local loopback port */
static int fwd_port(lua_State *L) {
  lua_pushinteger(L, check_fwd(L)->port);
  return 1;
}

/* info() -> {accepted=, failed=, error=} */
static int fwd_info(lua_State *L) {
  forwarder *f = check_fwd(L);
  pthread_mutex_lock(&f->mu);
  long acc = f->accepted, failed = f->failed;
  char err[sizeof f->error];
  memcpy(err, f->error, sizeof err);
  pthread_mutex_unlock(&f->mu);
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, acc);
  lua_setfield(L, -2, "accepted");
  lua_pushinteger(L, failed);
  lua_setfield(L, -2, "failed");
  if (err[0]) {
    lua_pushstring(L, err);
    lua_setfield(L, -2, "error");
  }
  return 1;
}

static int fwd_gc(lua_State *L) {
  fwd_box *b = luaL_checkudata(L, 1, FWD_MT);
  forwarder *f = b->f;
  b->f = NULL;
  fwd_free(f);
  return 0;
}

static const luaL_Reg fwd_meta[] = {{"__gc", fwd_gc}, {"__close", fwd_gc}, {NULL, NULL}};
static const luaL_Reg fwd_methods[] = {
    {"port", fwd_port}, {"info", fwd_info}, {"close", fwd_gc}, {NULL, NULL}};

static const luaL_Reg ws_meta[] = {{"__gc", ws_gc}, {"__close", ws_gc}, {NULL, NULL}};
static const luaL_Reg ws_methods[] = {
    {"poll", ws_poll}, {"recv", ws_recv}, {"send", ws_send}, {"shutdown", ws_shutdown},
    {"info", ws_info}, {"close", ws_gc},  {NULL, NULL}};
static const luaL_Reg ws_funcs[] = {{"connect", ws_connect}, {"forward", ws_forward}, {NULL, NULL}};

int luaopen_myrmex_core_websocket(lua_State *L) {
  mx_lws_load(L);
  lws_set_log_level(0, NULL); /* errors reach Lua as values, not as lines on stderr */
  luaL_newmetatable(L, WS_MT);
  luaL_setfuncs(L, ws_meta, 0);
  luaL_newlib(L, ws_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newmetatable(L, FWD_MT);
  luaL_setfuncs(L, fwd_meta, 0);
  luaL_newlib(L, fwd_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, ws_funcs);
  return 1;
}
