/*
 * myrmex.core.transport: the one HTTP client of myrmex, over one curl multi handle.
 *
 * Every engine (Docker, registries, Kubernetes) goes through here; no other file includes
 * curl. A transfer is started with start(opts) and then driven by perform(), which the Lua
 * side (lua/myrmex/http.lua) calls in a loop, or which the myrmex.parallel scheduler calls
 * while branches wait. Lua code is never called from inside a curl callback: response bytes
 * are either buffered (bounded), written to a file, hashed, or queued in a bounded pull
 * buffer that Lua drains with xfer:read() — so a callback may yield, and a slow consumer
 * pauses the transfer instead of growing memory.
 *
 * Boxed handles (luv style): the userdata holds a pointer to a heap struct, because curl keeps
 * pointers to it until the easy handle is removed from the multi handle.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "lib/crypto_api.h"
#include "lib/hasher.h"
#include "lib/curl_api.h"
#include "runtime.h"
#include "source.h"

#define XFER_MT "myrmex.transfer"
#define PULL_CAP (1u << 20)     /* bytes queued for Lua before the transfer pauses */
#define HEADER_CAP (256u << 10) /* a peer's headers beyond this are an attack or a bug */
#define DEFAULT_MAX_BODY (64u << 20)
#define BULK_BUFFER (512L << 10) /* curl's receive/send buffer for blobs and files */

typedef enum { SINK_BUFFER, SINK_PULL, SINK_FILE, SINK_DISCARD } sink_kind;
typedef enum { BODY_NONE, BODY_STRING, BODY_FD, BODY_SOURCE, BODY_STREAM } body_kind;

typedef struct buf {
  char *data;
  size_t len, cap;
} buf;

typedef struct xfer xfer;
struct xfer {
  CURL *easy;
  struct curl_slist *headers;
  struct curl_slist *connect_to;
  xfer *next, *prev; /* the list of transfers in the multi handle */
  int active, done, headers_ready, aborted;
  int local_port; /* of the TCP connection curl picked for this transfer; 0 until then */
  CURLcode result;
  char errbuf[CURL_ERROR_SIZE];
  char why[160]; /* our own reason when we stopped it (body too large, bad source) */
  buf head;      /* raw response header lines of the last response */
  int follow;

  sink_kind sink;
  buf body; /* SINK_BUFFER and SINK_PULL */
  size_t max_body, pull_off;
  int pull_paused; /* curl is holding data because body was full */
  int fd;          /* SINK_FILE */
  char *path, *part;
  EVP_MD_CTX *md;
  mx_hasher *hasher; /* SINK_FILE: md is fed by a thread reading the file back */
  char *want_digest; /* "sha256:hex" to verify at the end */
  char digest[160];
  long long received;

  body_kind body_kind;
  char *body_str;
  size_t body_len, body_off;
  int body_fd;
  mx_source *src; /* BODY_SOURCE, anchored by a registry reference */
  int src_ref;
  xfer *from; /* BODY_STREAM: the transfer whose pull buffer we send */
  int from_ref;
  xfer *feeds;        /* we are the `from` of this transfer */
  int send_paused;    /* our read callback returned PAUSE, waiting on `from` */
  CURLM *own;         /* a pull source's private multi handle (see xfer_source) */
  int hash_sent;      /* md hashes the request body as sent instead of the response */
  int upgrade;        /* a 101 (or 200) hijacked stream: the body is the raw connection */
  curl_socket_t sock; /* upgrade: the connection's socket, for send(); BAD once closed */
};

static CURLM *multi;
static xfer *active_list;
/* Count of events Lua may be waiting for: headers, queued bytes, a finished transfer. */
static unsigned long news;

/* ---- buffers ---- */

static int buf_append(buf *b, const char *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 16384;
    while (cap < b->len + n)
      cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d)
      return -1;
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

static void buf_free(buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

/* ---- digests ---- */

static void digest_update(xfer *x, const char *p, size_t n) {
  if (x->md)
    EVP_DigestUpdate(x->md, p, n);
}

static void digest_final(xfer *x) {
  if (!x->md || x->digest[0])
    return;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(x->md, md, &len);
  const char *name = EVP_MD_get0_name(EVP_MD_CTX_get0_md(x->md));
  int off = snprintf(x->digest, sizeof x->digest,
                     "%s:", strcmp(name, "SHA512") == 0 ? "sha512" : "sha256");
  for (unsigned int i = 0; i < len && off + 2 < (int)sizeof x->digest; i++)
    off += snprintf(x->digest + off, sizeof x->digest - (size_t)off, "%02x", md[i]);
}

/* ---- curl callbacks (no Lua in here) ---- */

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  xfer *x = ud;
  size_t len = size * n;
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0)
    x->head.len = 0; /* a new response (after 100-continue or a redirect) */
  if (x->head.len + len > HEADER_CAP) {
    snprintf(x->why, sizeof x->why, "response headers larger than %u bytes", HEADER_CAP);
    return 0;
  }
  if (buf_append(&x->head, p, len) != 0)
    return 0;
  if (len <= 2 && (p[0] == '\r' || p[0] == '\n')) {
    long code = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
    if ((code >= 200 && !(x->follow && code >= 300 && code < 400)) || (code == 101 && x->upgrade)) {
      x->headers_ready = 1;
      news++;
    }
  }
  return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  xfer *x = ud;
  size_t len = size * n;
  if (!x->headers_ready) {
    x->headers_ready = 1;
    news++;
  }
  switch (x->sink) {
  case SINK_PULL:
    if (x->body.len - x->pull_off >= PULL_CAP) {
      x->pull_paused = 1;
      return CURL_WRITEFUNC_PAUSE; /* curl keeps the bytes and offers them again */
    }
    if (buf_append(&x->body, p, len) != 0)
      return 0;
    news++;
    if (x->feeds && x->feeds->send_paused)
      x->feeds->send_paused = 2; /* wake the consumer after perform returns */
    break;
  case SINK_BUFFER:
    if (x->body.len + len > x->max_body) {
      snprintf(x->why, sizeof x->why, "response larger than %zu bytes", x->max_body);
      return 0;
    }
    if (buf_append(&x->body, p, len) != 0)
      return 0;
    break;
  case SINK_FILE:
    for (size_t off = 0; off < len;) {
      ssize_t w = write(x->fd, p + off, len - off);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0) {
        snprintf(x->why, sizeof x->why, "writing %s: %s", x->path, strerror(errno));
        return 0;
      }
      off += (size_t)w;
    }
    if (x->hasher)
      mx_hasher_wrote(x->hasher, len);
    break;
  case SINK_DISCARD:
    break;
  }
  if (!x->hash_sent && !x->hasher)
    digest_update(x, p, len);
  x->received += (long long)len;
  return len;
}

static size_t produce(xfer *x, char *p, size_t size, size_t n);

/* Called once curl has a connection (new or reused) for the request: note which. */
static int on_prereq(void *ud, char *primary_ip, char *local_ip, int primary_port, int local_port) {
  (void)primary_ip;
  (void)local_ip;
  (void)primary_port;
  ((xfer *)ud)->local_port = local_port;
  return CURL_PREREQFUNC_OK;
}

/* The read callback: produce the next bytes of the body, hashing them when asked (a streamed
 * upload whose digest is only known once sent). */
static size_t on_send(char *p, size_t size, size_t n, void *ud) {
  xfer *x = ud;
  size_t got = produce(x, p, size, n);
  if (x->hash_sent && got > 0 && got <= size * n)
    digest_update(x, p, got);
  return got;
}

/* curl rewinds the body when it sends the request again: a reused connection found dead after
 * the upload, a redirect, an auth round. In-memory and regular-file bodies can start over;
 * streams cannot, nor a body whose digest is being taken as it goes. */
static int on_seek(void *ud, curl_off_t offset, int origin) {
  xfer *x = ud;
  if (origin != SEEK_SET || offset < 0 || x->hash_sent)
    return CURL_SEEKFUNC_CANTSEEK;
  if (x->body_kind == BODY_STRING && (size_t)offset <= x->body_len) {
    x->body_off = (size_t)offset;
    return CURL_SEEKFUNC_OK;
  }
  if (x->body_kind == BODY_FD && lseek(x->body_fd, (off_t)offset, SEEK_SET) == (off_t)offset)
    return CURL_SEEKFUNC_OK;
  return CURL_SEEKFUNC_CANTSEEK;
}

/* n bytes of x's pulled body were read. The writer (curl) tops the buffer up while it is read,
 * so it is rarely empty: past half of PULL_CAP the unread bytes move to the front, or the
 * buffer would grow to the whole body. */
static void pull_consumed(xfer *x, size_t n) {
  x->pull_off += n;
  if (x->pull_off == x->body.len) {
    x->body.len = x->pull_off = 0;
  } else if (x->pull_off >= PULL_CAP / 2) {
    memmove(x->body.data, x->body.data + x->pull_off, x->body.len - x->pull_off);
    x->body.len -= x->pull_off;
    x->pull_off = 0;
  }
}

static size_t produce(xfer *x, char *p, size_t size, size_t n) {
  size_t want = size * n;
  char err[256] = "";
  switch (x->body_kind) {
  case BODY_STRING: {
    size_t left = x->body_len - x->body_off;
    if (want > left)
      want = left;
    memcpy(p, x->body_str + x->body_off, want);
    x->body_off += want;
    return want;
  }
  case BODY_FD:
    for (;;) {
      ssize_t got = read(x->body_fd, p, want);
      if (got >= 0)
        return (size_t)got;
      if (errno != EINTR) {
        snprintf(x->why, sizeof x->why, "reading the request body: %s", strerror(errno));
        return CURL_READFUNC_ABORT;
      }
    }
  case BODY_SOURCE: {
    ssize_t got = x->src->read(x->src->ud, p, want, err, sizeof err);
    if (got < 0) {
      /* why is shorter than err: keep the head of the producer's message */
      snprintf(x->why, sizeof x->why, "request body: %.140s", err[0] ? err : "source failed");
      return CURL_READFUNC_ABORT;
    }
    return (size_t)got;
  }
  case BODY_STREAM: {
    xfer *f = x->from;
    size_t avail = f->body.len - f->pull_off;
    if (avail == 0) {
      if (f->done) {
        if (f->result != CURLE_OK) {
          /* Say why: a digest mismatch, a reset connection and an HTTP error differ. */
          long code = 0;
          curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &code);
          snprintf(x->why, sizeof x->why, "the source transfer failed: %.80s (HTTP %ld)",
                   f->why[0] ? f->why : curl_easy_strerror(f->result), code);
          return CURL_READFUNC_ABORT;
        }
        return 0;
      }
      x->send_paused = 1;
      return CURL_READFUNC_PAUSE;
    }
    if (want > avail)
      want = avail;
    memcpy(p, f->body.data + f->pull_off, want);
    pull_consumed(f, want);
    return want;
  }
  case BODY_NONE:
    return 0;
  }
  return 0;
}

/* ---- upgraded connections ---- */

/* An upgraded transfer writes to its connection's socket itself (curl has no API to send on a
 * connection it is receiving a body from), so it learns the socket when curl makes it and
 * forgets it when curl closes it: the descriptor number could be reused by another open. */
static int on_sockopt(void *ud, curl_socket_t fd, curlsocktype purpose) {
  xfer *x = ud;
  if (purpose == CURLSOCKTYPE_IPCXN)
    x->sock = fd;
  return CURL_SOCKOPT_OK;
}

static int on_close_socket(void *ud, curl_socket_t fd) {
  xfer *x = ud;
  if (x->sock == fd)
    x->sock = CURL_SOCKET_BAD;
  return close(fd);
}

/* ---- lifecycle ---- */

static void xfer_unlink(xfer *x) {
  if (!x->active)
    return;
  if (x->own) {
    curl_multi_remove_handle(x->own, x->easy);
    x->active = 0;
    return;
  }
  curl_multi_remove_handle(multi, x->easy);
  if (x->prev)
    x->prev->next = x->next;
  else
    active_list = x->next;
  if (x->next)
    x->next->prev = x->prev;
  x->next = x->prev = NULL;
  x->active = 0;
}

static void xfer_cleanup_file(xfer *x, int keep) {
  if (x->fd >= 0) {
    close(x->fd);
    x->fd = -1;
  }
  if (x->part) {
    if (!keep)
      unlink(x->part);
    free(x->part);
    x->part = NULL;
  }
}

static void xfer_release(lua_State *L, xfer *x) {
  xfer_unlink(x);
  if (x->feeds)
    x->feeds->from = NULL;
  if (x->from)
    x->from->feeds = NULL;
  if (x->easy)
    curl_easy_cleanup(x->easy);
  x->easy = NULL;
  if (x->own)
    curl_multi_cleanup(x->own);
  x->own = NULL;
  curl_slist_free_all(x->headers);
  x->headers = NULL;
  curl_slist_free_all(x->connect_to);
  x->connect_to = NULL;
  buf_free(&x->head);
  buf_free(&x->body);
  if (x->hasher)
    mx_hasher_finish(x->hasher, 0);
  x->hasher = NULL;
  xfer_cleanup_file(x, 0);
  free(x->path);
  x->path = NULL;
  if (x->md)
    EVP_MD_CTX_free(x->md);
  x->md = NULL;
  free(x->want_digest);
  x->want_digest = NULL;
  free(x->body_str);
  x->body_str = NULL;
  if (x->body_fd >= 0)
    close(x->body_fd);
  x->body_fd = -1;
  if (L) {
    luaL_unref(L, LUA_REGISTRYINDEX, x->src_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, x->from_ref);
  }
  x->src_ref = x->from_ref = LUA_NOREF;
  x->src = NULL;
  x->from = NULL;
}

static xfer **xfer_box(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, XFER_MT);
}

static xfer *xfer_check(lua_State *L, int idx) {
  xfer *x = *xfer_box(L, idx);
  if (!x)
    luaL_error(L, "transfer is closed");
  return x;
}

static int xfer_gc(lua_State *L) {
  xfer **box = xfer_box(L, 1);
  if (*box) {
    xfer_release(L, *box);
    free(*box);
    *box = NULL;
  }
  return 0;
}

/* Whether a transfer other than x works on socket fd. curl may hand x's connection, back in
 * its pool, to a waiting transfer within the same multi_perform, before x is seen done: the
 * bytes waiting are then that transfer's response, not stray bytes of x's. The connection is
 * told by its local port (CURLINFO_ACTIVESOCKET names no socket before a transfer is done); a
 * socket without one (a unix socket) counts as taken while any other transfer runs. */
static int socket_taken(const xfer *x, curl_socket_t fd) {
  struct sockaddr_storage ss = {0};
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
    return 1; /* unknown: leave it to curl */
  int port = ss.ss_family == AF_INET    ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
             : ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                        : 0;
  for (xfer *y = active_list; y; y = y->next)
    if (y != x && !y->done && (port == 0 || y->local_port == port))
      return 1;
  return 0;
}

/* A kept-alive plain connection must be silent between responses. Bytes waiting on it after a
 * complete response (a Content-Length shorter than what the peer sent) would be read as the
 * next request's response, and libcurl 7.88 only drops pooled connections that hit EOF or an
 * error. So the stray bytes are discarded and the socket shut down: curl then sees EOF and
 * opens a fresh connection. TLS is left alone: its stray bytes sit inside OpenSSL, not here.
 * Must run before the easy handle leaves the multi handle, while curl can still name the socket. */
static void drop_if_unclean(xfer *x) {
  char *scheme = NULL;
  curl_socket_t fd = CURL_SOCKET_BAD;
  if (curl_easy_getinfo(x->easy, CURLINFO_SCHEME, &scheme) != CURLE_OK || !scheme ||
      strcasecmp(scheme, "http") != 0)
    return;
  if (curl_easy_getinfo(x->easy, CURLINFO_ACTIVESOCKET, &fd) != CURLE_OK || fd == CURL_SOCKET_BAD)
    return;
  struct pollfd p = {.fd = fd, .events = POLLIN};
  if (poll(&p, 1, 0) <= 0 || socket_taken(x, fd))
    return;
  char junk[4096];
  size_t total = 0;
  ssize_t n;
  while (total < (1u << 20) && (n = recv(fd, junk, sizeof junk, MSG_DONTWAIT)) > 0)
    total += (size_t)n;
  shutdown(fd, SHUT_RDWR);
}

/* Finish a transfer curl reported as done: verify the digest, move the file into place. */
static void xfer_complete(xfer *x, CURLcode rc) {
  x->done = 1;
  x->headers_ready = 1;
  x->result = rc;
  if (rc == CURLE_OK)
    drop_if_unclean(x);
  xfer_unlink(x);
  if (x->feeds && x->feeds->send_paused)
    x->feeds->send_paused = 2;
  if (x->hasher) {
    if (mx_hasher_finish(x->hasher, rc == CURLE_OK) != 0 && rc == CURLE_OK) {
      x->result = rc = CURLE_WRITE_ERROR;
      snprintf(x->why, sizeof x->why, "reading %s back for its digest failed", x->part);
    }
    x->hasher = NULL;
  }
  digest_final(x);
  if (rc == CURLE_OK && x->want_digest && strcmp(x->want_digest, x->digest) != 0) {
    x->result = CURLE_WRITE_ERROR;
    snprintf(x->why, sizeof x->why, "digest mismatch");
  }
  if (x->sink == SINK_FILE) {
    long code = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
    int keep = x->result == CURLE_OK && code >= 200 && code < 300;
    if (keep && (fsync(x->fd) != 0 || rename(x->part, x->path) != 0)) {
      snprintf(x->why, sizeof x->why, "moving %s into place: %s", x->path, strerror(errno));
      x->result = CURLE_WRITE_ERROR;
      keep = 0;
    }
    xfer_cleanup_file(x, keep);
  }
}

/* Unpause a pulled transfer once its reader made room in the buffer (never from inside a
 * callback; curl may refill the buffer right away). */
static void resume_pull(xfer *x) {
  if (x->pull_paused && x->body.len - x->pull_off < PULL_CAP) {
    x->pull_paused = 0;
    curl_easy_pause(x->easy, CURLPAUSE_CONT);
  }
}

/* Resume transfers paused on each other or on their reader. */
static void wake_paused(void) {
  for (xfer *x = active_list; x; x = x->next) {
    if (x->send_paused == 2) {
      x->send_paused = 0;
      curl_easy_pause(x->easy, CURLPAUSE_CONT);
    }
    resume_pull(x);
  }
}

static void collect_done(CURLM *m) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(m, &left)) != NULL) {
    if (msg->msg != CURLMSG_DONE)
      continue;
    xfer *x = NULL;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
    if (x)
      xfer_complete(x, msg->data.result);
    news++;
  }
}

/* One pass over m's transfers; when it brought nothing, wait up to timeout_ms for activity and
 * pass again. Waiting when the first pass already produced something would add the whole
 * timeout to that request's latency: the data that finished it is no longer on the socket. */
static void perform_multi(CURLM *m, int timeout_ms) {
  int running = 0;
  unsigned long before = news;
  curl_multi_perform(m, &running);
  collect_done(m);
  if (timeout_ms > 0 && news == before) {
    int n = 0;
    curl_multi_poll(m, NULL, 0, timeout_ms, &n);
    curl_multi_perform(m, &running);
    collect_done(m);
  }
}

static void drive(int timeout_ms) {
  wake_paused();
  perform_multi(multi, timeout_ms);
  wake_paused();
}

/* Drive a source transfer's private multi handle. */
static void pump_own(xfer *x, int timeout_ms) {
  resume_pull(x);
  perform_multi(x->own, timeout_ms);
}

/* perform([timeout_ms]): drive every transfer once, waiting up to timeout_ms for activity. */
static int tr_perform(lua_State *L) {
  int ms = (int)luaL_optinteger(L, 1, 100);
  drive(ms > 100 ? 100 : ms); /* short waits keep Ctrl-C responsive */
  if (mx_interrupt_take())
    return mx_raise_interrupted(L);
  lua_pushboolean(L, active_list != NULL);
  return 1;
}

/* ---- start(opts) ---- */

static const char *opt_string(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  const char *s = lua_tostring(L, -1);
  lua_pop(L, 1); /* the string stays alive: it belongs to the options table */
  return s;
}

static lua_Integer opt_int(lua_State *L, int t, const char *k, lua_Integer dflt) {
  lua_getfield(L, t, k);
  lua_Integer v = lua_isnil(L, -1) ? dflt : lua_tointeger(L, -1);
  lua_pop(L, 1);
  return v;
}

static int opt_bool(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  int v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

static void set_blob(CURL *e, CURLoption opt, const char *data) {
  struct curl_blob blob = {(void *)data, strlen(data), CURL_BLOB_COPY};
  curl_easy_setopt(e, opt, &blob);
}

static void setup_tls(lua_State *L, int t, xfer *x) {
  lua_getfield(L, t, "tls");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  int tls = lua_gettop(L);
  CURL *e = x->easy;
  const char *s;
  if ((s = opt_string(L, tls, "ca")))
    curl_easy_setopt(e, CURLOPT_CAINFO, s);
  if ((s = opt_string(L, tls, "ca_data")))
    set_blob(e, CURLOPT_CAINFO_BLOB, s);
  if ((s = opt_string(L, tls, "cert")))
    curl_easy_setopt(e, CURLOPT_SSLCERT, s);
  if ((s = opt_string(L, tls, "cert_data")))
    set_blob(e, CURLOPT_SSLCERT_BLOB, s);
  if ((s = opt_string(L, tls, "key")))
    curl_easy_setopt(e, CURLOPT_SSLKEY, s);
  if ((s = opt_string(L, tls, "key_data")))
    set_blob(e, CURLOPT_SSLKEY_BLOB, s);
  if (opt_bool(L, tls, "insecure")) {
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  lua_pop(L, 1);
}

static int setup_sink(lua_State *L, int t, xfer *x) {
  const char *to_file = opt_string(L, t, "to_file");
  const char *mode = opt_string(L, t, "sink");
  x->max_body = (size_t)opt_int(L, t, "max_body", DEFAULT_MAX_BODY);
  if (to_file) {
    x->sink = SINK_FILE;
    x->path = strdup(to_file);
    size_t n = strlen(to_file) + 6;
    x->part = malloc(n);
    if (!x->path || !x->part)
      return luaL_error(L, "http: not enough memory");
    snprintf(x->part, n, "%s.part", to_file);
    x->fd = open(x->part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (x->fd < 0)
      return luaL_error(L, "http: cannot write %s: %s", x->part, strerror(errno));
  } else if (mode && strcmp(mode, "pull") == 0) {
    x->sink = SINK_PULL;
  } else if (mode && strcmp(mode, "discard") == 0) {
    x->sink = SINK_DISCARD;
  } else {
    x->sink = SINK_BUFFER;
  }
  const char *hash = opt_string(L, t, "hash");
  const char *sent = opt_string(L, t, "hash_sent");
  if (sent) {
    hash = sent;
    x->hash_sent = 1;
  }
  const char *want = opt_string(L, t, "digest");
  if (want) {
    x->want_digest = strdup(want);
    if (!hash)
      hash = strncmp(want, "sha512:", 7) == 0 ? "sha512" : "sha256";
  }
  if (hash) {
    const EVP_MD *md = strcmp(hash, "sha512") == 0 ? EVP_sha512() : EVP_sha256();
    x->md = EVP_MD_CTX_new();
    if (!x->md || EVP_DigestInit_ex(x->md, md, NULL) != 1)
      return luaL_error(L, "http: cannot start %s", hash);
    /* A download to a file is hashed from the file by a second thread (inline if none). */
    if (x->sink == SINK_FILE && !x->hash_sent)
      x->hasher = mx_hasher_start(x->part, x->md);
  }
  return 0;
}

/* Append to a header list, raising when curl cannot: curl_slist_append then returns NULL
 * (the old list would leak) and the request would go out without the header. */
static void append_header(lua_State *L, struct curl_slist **list, const char *h) {
  struct curl_slist *l = curl_slist_append(*list, h);
  if (!l)
    luaL_error(L, "http: not enough memory");
  *list = l;
}

static int setup_body(lua_State *L, int t, xfer *x, const char *method) {
  CURL *e = x->easy;
  lua_getfield(L, t, "body");
  int b = lua_gettop(L);
  curl_off_t size = -1;
  if (lua_isnil(L, b)) {
    lua_pop(L, 1);
    if (strcmp(method, "HEAD") == 0)
      curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "GET") != 0) {
      /* An empty body, so that curl really sends a POST (Docker's /start has none). */
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
    }
    return 0;
  }
  if (lua_type(L, b) == LUA_TSTRING) {
    size_t len;
    const char *s = lua_tolstring(L, b, &len);
    x->body_str = malloc(len ? len : 1);
    if (!x->body_str)
      return luaL_error(L, "http: not enough memory");
    memcpy(x->body_str, s, len);
    x->body_len = len;
    x->body_kind = BODY_STRING;
    size = (curl_off_t)len;
  } else if (lua_istable(L, b)) {
    lua_getfield(L, b, "file");
    const char *path = lua_tostring(L, -1);
    if (!path)
      return luaL_error(L, "http: body table needs a file");
    x->body_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (x->body_fd < 0)
      return luaL_error(L, "http: cannot read %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(x->body_fd, &st) == 0 && S_ISREG(st.st_mode))
      size = (curl_off_t)st.st_size;
    lua_pop(L, 1);
    x->body_kind = BODY_FD;
  } else if (luaL_testudata(L, b, MX_SOURCE_MT)) {
    x->src = mx_source_check(L, b);
    if (x->src->closed)
      return luaL_error(L, "http: the body source is closed");
    lua_pushvalue(L, b);
    x->src_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    x->body_kind = BODY_SOURCE;
    size = x->src->size >= 0 ? (curl_off_t)x->src->size : -1;
  } else if (luaL_testudata(L, b, XFER_MT)) {
    xfer *f = xfer_check(L, b);
    if (f->sink != SINK_PULL)
      return luaL_error(L, "http: a transfer used as a body must be opened as a stream");
    if (f->feeds)
      return luaL_error(L, "http: that stream already feeds another request");
    x->from = f;
    f->feeds = x;
    lua_pushvalue(L, b);
    x->from_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    x->body_kind = BODY_STREAM;
    size = (curl_off_t)opt_int(L, t, "body_size", -1);
  } else {
    return luaL_error(L, "http: body must be a string, {file=PATH}, a source or a stream");
  }
  lua_pop(L, 1);
  /* No "Expect: 100-continue" round trip: engines answer at once or not at all. */
  append_header(L, &x->headers, "Expect:");
  if (x->body_kind == BODY_STRING && !x->hash_sent) {
    /* Given as POSTFIELDS, a small body leaves in the same send as the headers (one write and
     * one wake-up of the server per request, not two) and curl can resend it by itself. */
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, size);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body_str);
    return 0;
  }
  if (size < 0)
    size = (curl_off_t)opt_int(L, t, "body_size", -1);
  curl_easy_setopt(e, CURLOPT_POST, 1L);
  curl_easy_setopt(e, CURLOPT_READFUNCTION, on_send);
  curl_easy_setopt(e, CURLOPT_READDATA, x);
  curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, on_seek);
  curl_easy_setopt(e, CURLOPT_SEEKDATA, x);
  curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, size); /* -1: chunked */
  return 0;
}

static int setup_headers(lua_State *L, int t, xfer *x) {
  lua_getfield(L, t, "headers");
  if (lua_istable(L, -1)) {
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, i);
      const char *h = lua_tostring(L, -1);
      if (h)
        append_header(L, &x->headers, h);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  return 0;
}

/*
 * start{url=, method=, unix_socket=, headers={"K: v",...}, body=, body_size=, timeout_ms=,
 *   connect_timeout_ms=, low_speed_time=, tls={...}, username=, password=, proxy=, follow=,
 *   sink="buffer"|"pull"|"discard", to_file=, digest=, hash=, max_body=, connect_to=}
 * The Lua side (http.lua) validates and normalises; this only maps to curl options.
 */
static int tr_start(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  const char *url = opt_string(L, 1, "url");
  if (!url)
    return luaL_error(L, "http: url required");
  const char *method = opt_string(L, 1, "method");
  if (!method)
    method = "GET";
  xfer **box = lua_newuserdatauv(L, sizeof(xfer *), 0);
  *box = NULL;
  luaL_setmetatable(L, XFER_MT);
  xfer *x = calloc(1, sizeof *x);
  if (!x)
    return luaL_error(L, "http: not enough memory");
  *box = x;
  x->fd = x->body_fd = -1;
  x->sock = CURL_SOCKET_BAD;
  x->src_ref = x->from_ref = LUA_NOREF;
  x->easy = curl_easy_init();
  if (!x->easy)
    return luaL_error(L, "http: cannot create a curl handle");
  CURL *e = x->easy;
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)x);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
  curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, on_prereq);
  curl_easy_setopt(e, CURLOPT_PREREQDATA, x);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  const char *s;
  if ((s = opt_string(L, 1, "unix_socket")))
    curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, s);
  if ((s = opt_string(L, 1, "proxy")))
    curl_easy_setopt(e, CURLOPT_PROXY, s);
  else
    curl_easy_setopt(e, CURLOPT_PROXY, ""); /* proxies only when a caller says so */
  if ((s = opt_string(L, 1, "connect_to"))) {
    /* host:port:connect-host:connect-port, for a TLS server name other than the address */
    append_header(L, &x->connect_to, s);
    curl_easy_setopt(e, CURLOPT_CONNECT_TO, x->connect_to);
  }
  if ((s = opt_string(L, 1, "username"))) {
    curl_easy_setopt(e, CURLOPT_USERNAME, s);
    curl_easy_setopt(e, CURLOPT_PASSWORD, opt_string(L, 1, "password"));
    curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
  }
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)opt_int(L, 1, "connect_timeout_ms", 5000));
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)opt_int(L, 1, "timeout_ms", 0));
  lua_Integer lst = opt_int(L, 1, "low_speed_time", 0);
  if (lst > 0) {
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)lst);
  }
  if (opt_bool(L, 1, "follow")) {
    x->follow = 1;
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, 5L);
  }
  if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
  if (opt_bool(L, 1, "upgrade")) {
    /* A connection of its own, never handed back to the pool: after the upgrade it carries
     * the peer's raw stream and our writes, and it ends when either side closes it. */
    x->upgrade = 1;
    curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
    curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
    curl_easy_setopt(e, CURLOPT_SOCKOPTFUNCTION, on_sockopt);
    curl_easy_setopt(e, CURLOPT_SOCKOPTDATA, x);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, x);
    append_header(L, &x->headers, "Connection: Upgrade");
    const char *proto = opt_string(L, 1, "upgrade_protocol");
    lua_pushfstring(L, "Upgrade: %s", proto ? proto : "tcp");
    append_header(L, &x->headers, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  setup_tls(L, 1, x);
  setup_sink(L, 1, x);
  setup_body(L, 1, x, method);
  /* Bulk bodies (layers to a file, files and streams to an engine) in 512 KiB pieces rather
   * than curl's 16 KiB reads and 64 KiB sends: a 32x smaller count of syscalls and callbacks. */
  if (x->sink == SINK_FILE || x->sink == SINK_DISCARD)
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, BULK_BUFFER);
  if (x->body_kind == BODY_FD || x->body_kind == BODY_SOURCE || x->body_kind == BODY_STREAM)
    curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, BULK_BUFFER);
  setup_headers(L, 1, x);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
  if (opt_bool(L, 1, "own")) {
    /* A pull source drives its own multi handle: its reads happen inside other transfers'
     * callbacks, where the shared one must not be re-entered. */
    x->own = curl_multi_init();
    if (!x->own || x->sink != SINK_PULL || curl_multi_add_handle(x->own, e) != CURLM_OK)
      return luaL_error(L, "http: cannot start the source transfer");
    x->active = 1;
    return 1;
  }
  if (curl_multi_add_handle(multi, e) != CURLM_OK)
    return luaL_error(L, "http: cannot start the transfer");
  x->active = 1;
  x->next = active_list;
  if (active_list)
    active_list->prev = x;
  active_list = x;
  return 1;
}

/* ---- transfer methods ---- */

static int xfer_done(lua_State *L) {
  lua_pushboolean(L, xfer_check(L, 1)->done);
  return 1;
}

static int xfer_headers_ready(lua_State *L) {
  lua_pushboolean(L, xfer_check(L, 1)->headers_ready);
  return 1;
}

static const char *code_name(CURLcode rc) {
  switch (rc) {
  case CURLE_OK:
    return NULL;
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_COULDNT_CONNECT:
    return "connect";
  case CURLE_OPERATION_TIMEDOUT:
    return "timeout";
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_ISSUER_ERROR:
    return "tls";
  case CURLE_GOT_NOTHING:
  case CURLE_RECV_ERROR:
  case CURLE_SEND_ERROR:
  case CURLE_PARTIAL_FILE:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
    return "connection";
  case CURLE_WEIRD_SERVER_REPLY:
  case CURLE_BAD_CONTENT_ENCODING:
  case CURLE_TOO_MANY_REDIRECTS:
    return "protocol";
  default:
    return "other";
  }
}

/* One "Name: value" line into map (lower-case name, last wins) and list ({name=, value=},
 * in order). Lines without a colon right after the name (the status line) are skipped. */
static void push_header_line(lua_State *L, const char *p, const char *end, int map, int list) {
  const char *name = p;
  while (p < end && *p != ':' && !isspace((unsigned char)*p))
    p++;
  if (p == name || p == end || *p != ':')
    return;
  size_t name_len = (size_t)(p - name);
  for (p++; p < end && isspace((unsigned char)*p); p++)
    ;
  while (end > p && isspace((unsigned char)end[-1]))
    end--;
  lua_pushlstring(L, p, (size_t)(end - p)); /* the value, for the list entry and the map */
  lua_createtable(L, 0, 2);
  lua_pushlstring(L, name, name_len);
  lua_setfield(L, -2, "name");
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "value");
  lua_rawseti(L, list, (lua_Integer)lua_rawlen(L, list) + 1);
  luaL_Buffer b;
  char *lower = luaL_buffinitsize(L, &b, name_len);
  for (size_t i = 0; i < name_len; i++)
    lower[i] = (char)tolower((unsigned char)name[i]);
  luaL_pushresultsize(&b, name_len);
  lua_insert(L, -2);
  lua_rawset(L, map);
}

/* Push map and list of the header text s[0..n). */
static void push_headers(lua_State *L, const char *s, size_t n) {
  luaL_checkstack(L, 8, "parse_headers");
  lua_createtable(L, 0, 8);
  lua_createtable(L, 8, 0);
  int map = lua_absindex(L, -2), list = lua_absindex(L, -1);
  const char *end = s + n;
  while (s < end) {
    const char *eol = s;
    while (eol < end && *eol != '\r' && *eol != '\n')
      eol++;
    push_header_line(L, s, eol, map, list);
    for (s = eol; s < end && (*s == '\r' || *s == '\n'); s++)
      ;
  }
}

/* parse_headers(raw) -> map, list */
static int tr_parse_headers(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  push_headers(L, s, n);
  return 2;
}

/* x:result() -> {status=, headers=, header_list=, body=?, digest=?, size=, url=} or
 * nil, kind, message  (kind: connect, timeout, tls, connection, protocol, digest, limit, other) */
static int xfer_result(lua_State *L) {
  xfer *x = xfer_check(L, 1);
  if (!x->done)
    return luaL_error(L, "transfer still running");
  if (x->result != CURLE_OK) {
    luaL_pushfail(L);
    const char *kind = code_name(x->result);
    if (x->why[0])
      kind = strcmp(x->why, "digest mismatch") == 0 ? "digest" : "limit";
    lua_pushstring(L, kind);
    lua_pushstring(L,
                   x->why[0] ? x->why : (x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->result)));
    return 3;
  }
  long code = 0;
  char *eff = NULL;
  curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
  curl_easy_getinfo(x->easy, CURLINFO_EFFECTIVE_URL, &eff);
  lua_createtable(L, 0, 7);
  lua_pushinteger(L, code);
  lua_setfield(L, -2, "status");
  push_headers(L, x->head.data ? x->head.data : "", x->head.len);
  lua_setfield(L, -3, "header_list");
  lua_setfield(L, -2, "headers");
  if (x->sink == SINK_BUFFER) {
    lua_pushlstring(L, x->body.data ? x->body.data : "", x->body.len);
    lua_setfield(L, -2, "body");
  }
  if (x->digest[0]) {
    lua_pushstring(L, x->digest);
    lua_setfield(L, -2, "digest");
  }
  lua_pushinteger(L, (lua_Integer)x->received);
  lua_setfield(L, -2, "size");
  if (eff) {
    lua_pushstring(L, eff);
    lua_setfield(L, -2, "url");
  }
  return 1;
}

/* x:head() -> status, headers, header_list (valid once headers_ready) */
static int xfer_head(lua_State *L) {
  xfer *x = xfer_check(L, 1);
  long code = 0;
  curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
  lua_pushinteger(L, code);
  push_headers(L, x->head.data ? x->head.data : "", x->head.len);
  return 3;
}

/* x:read() -> chunk | false (nothing yet, wait) | nil (end of body) */
static int xfer_read(lua_State *L) {
  xfer *x = xfer_check(L, 1);
  if (x->sink != SINK_PULL)
    return luaL_error(L, "transfer was not opened as a stream");
  if (x->feeds)
    return luaL_error(L, "transfer feeds another request; it cannot be read");
  size_t avail = x->body.len - x->pull_off;
  if (avail > 0) {
    lua_pushlstring(L, x->body.data + x->pull_off, avail);
    x->body.len = x->pull_off = 0;
    resume_pull(x);
    return 1;
  }
  if (x->done) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushboolean(L, 0);
  return 1;
}

/* x:pump([timeout_ms]) -> done: drive a source transfer (started with own = true). */
static int xfer_pump(lua_State *L) {
  xfer *x = xfer_check(L, 1);
  if (!x->own)
    return luaL_error(L, "transfer is not a source transfer");
  int ms = (int)luaL_optinteger(L, 2, 100);
  pump_own(x, ms > 100 ? 100 : ms);
  if (mx_interrupt_take())
    return mx_raise_interrupted(L);
  lua_pushboolean(L, x->done);
  return 1;
}

/* The body of a source transfer as an mx_source: read() drives the transfer until bytes or
 * its end arrive, so a C consumer (the tar reader) can pull a response as it streams. ud is
 * the transfer's box, which the source userdata anchors; a closed transfer reads as an error. */
static ssize_t own_read(void *ud, char *out, size_t n, char *err, size_t errlen) {
  for (;;) {
    xfer *x = *(xfer **)ud;
    if (!x) {
      snprintf(err, errlen, "the transfer was closed");
      return -1;
    }
    size_t avail = x->body.len - x->pull_off;
    if (avail > 0) {
      size_t c = avail < n ? avail : n;
      memcpy(out, x->body.data + x->pull_off, c);
      pull_consumed(x, c);
      return (ssize_t)c;
    }
    if (x->done) {
      if (x->result == CURLE_OK)
        return 0;
      const char *why = x->why[0] ? x->why : x->errbuf;
      snprintf(err, errlen, "%s", why[0] ? why : curl_easy_strerror(x->result));
      return -1;
    }
    if (mx_interrupt_due()) {
      snprintf(err, errlen, "interrupted");
      return -1;
    }
    pump_own(x, 100);
  }
}

static void own_close(void *ud) {
  (void)ud;
}

/* x:source() -> a source over the rest of the body (a source transfer only). */
static int xfer_source(lua_State *L) {
  xfer **box = xfer_box(L, 1);
  xfer *x = xfer_check(L, 1);
  if (!x->own)
    return luaL_error(L, "transfer is not a source transfer");
  mx_source *src = mx_source_new(L);
  src->read = own_read;
  src->close = own_close;
  src->ud = box;
  src->closed = 0;
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1); /* the transfer lives as long as its source */
  return 1;
}

/* The writable socket of an upgraded transfer whose response said it switched, or a raise. */
static curl_socket_t upgraded_socket(lua_State *L, xfer *x, const char *fname) {
  if (!x->upgrade)
    luaL_error(L, "%s: the transfer was not started with upgrade = true", fname);
  if (!x->headers_ready)
    luaL_error(L, "%s: the response has not arrived yet", fname);
  long code = 0;
  char *scheme = NULL;
  curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
  if (code != 101 && code != 200)
    luaL_error(L, "%s: the peer answered %d, not a switch of protocols", fname, (int)code);
  curl_easy_getinfo(x->easy, CURLINFO_SCHEME, &scheme);
  /* Bytes written beside curl on a TLS connection would not be encrypted by its session. */
  if (scheme && strcasecmp(scheme, "https") == 0)
    luaL_error(L, "%s: writing to an upgraded TLS connection is not supported", fname);
  return x->sock;
}

/* x:send(data [, from [, drain_first]]) -> bytes sent (0: the peer is not reading yet), or nil,
 * message once the connection is gone. Sends from byte `from` (1-based) of data. When the socket
 * is full it waits up to 100 ms for it to drain while driving every transfer, this one's reply
 * included, so a peer that must write before it reads more is read from meanwhile. With
 * drain_first, a full socket while reply bytes wait unread returns 0 at once instead: the peer
 * may be blocked writing them (a full pull buffer pauses curl), so waiting could only time out. */
static int xfer_send(lua_State *L) {
  xfer *x = xfer_check(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  lua_Integer from = luaL_optinteger(L, 3, 1);
  int drain_first = lua_toboolean(L, 4);
  luaL_argcheck(L, from >= 1 && (size_t)from <= len + 1, 3, "out of range");
  curl_socket_t fd = upgraded_socket(L, x, "send");
  if (fd == CURL_SOCKET_BAD || x->done) {
    luaL_pushfail(L);
    lua_pushstring(L, "the connection is closed");
    return 2;
  }
  size_t off = (size_t)from - 1;
  if (off == len) {
    lua_pushinteger(L, 0);
    return 1;
  }
  for (int round = 0; round < 2; round++) {
    ssize_t n = send(fd, data + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      lua_pushinteger(L, (lua_Integer)n);
      return 1;
    }
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      int err = errno;
      luaL_pushfail(L);
      lua_pushstring(L, strerror(err));
      return 2;
    }
    if (round == 0 && drain_first && x->body.len > x->pull_off)
      break;
    if (round == 0) {
      struct curl_waitfd w = {.fd = fd, .events = CURL_WAIT_POLLOUT, .revents = 0};
      int running = 0, nfds = 0;
      wake_paused();
      curl_multi_poll(multi, &w, 1, 100, &nfds);
      curl_multi_perform(multi, &running);
      collect_done(multi);
      wake_paused();
      if (mx_interrupt_take())
        return mx_raise_interrupted(L);
      if (x->sock == CURL_SOCKET_BAD || x->done)
        break;
    }
  }
  lua_pushinteger(L, 0);
  return 1;
}

/* x:close_write(): end our direction of an upgraded connection (the peer reads EOF, as a
 * process does on its stdin); the peer's direction stays open until it closes it. */
static int xfer_close_write(lua_State *L) {
  xfer *x = xfer_check(L, 1);
  curl_socket_t fd = upgraded_socket(L, x, "close_write");
  if (fd != CURL_SOCKET_BAD && !x->done)
    shutdown(fd, SHUT_WR);
  return 0;
}

static int xfer_abort(lua_State *L) {
  xfer *x = *xfer_box(L, 1);
  if (x && !x->done) {
    x->aborted = 1;
    xfer_unlink(x);
    x->done = 1;
    x->result = CURLE_ABORTED_BY_CALLBACK;
    snprintf(x->why, sizeof x->why, "aborted");
    xfer_cleanup_file(x, 0);
  }
  return 0;
}

static int xfer_tostring(lua_State *L) {
  xfer *x = *xfer_box(L, 1);
  lua_pushfstring(L, "transfer (%s)", !x ? "closed" : x->done ? "done" : "running");
  return 1;
}

static int tr_active(lua_State *L) {
  int n = 0;
  for (xfer *x = active_list; x; x = x->next)
    n++;
  lua_pushinteger(L, n);
  return 1;
}

static int tr_escape(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  /* The Lua buffer (3 bytes per input byte at most) is made before curl allocates, so that
   * nothing that can raise runs while curl's string is held. */
  luaL_Buffer b;
  char *dst = luaL_buffinitsize(L, &b, 3 * len + 1);
  char *out = curl_easy_escape(NULL, s, (int)len);
  if (!out)
    return luaL_error(L, "http.escape: not enough memory");
  size_t n = strlen(out);
  memcpy(dst, out, n + 1); /* with its NUL: the buffer has room, and the copy stays a string */
  curl_free(out);
  luaL_pushresultsize(&b, n);
  return 1;
}

static int tr_version(lua_State *L) {
  lua_pushstring(L, curl_version());
  return 1;
}

static const luaL_Reg xfer_meta[] = {
    {"__gc", xfer_gc}, {"__close", xfer_gc}, {"__tostring", xfer_tostring}, {NULL, NULL}};
static const luaL_Reg xfer_methods[] = {
    {"done", xfer_done},     {"headers_ready", xfer_headers_ready},
    {"result", xfer_result}, {"head", xfer_head},
    {"read", xfer_read},     {"abort", xfer_abort},
    {"pump", xfer_pump},     {"source", xfer_source},
    {"send", xfer_send},     {"close_write", xfer_close_write},
    {"close", xfer_gc},      {NULL, NULL}};
static const luaL_Reg tr_funcs[] = {{"start", tr_start},
                                    {"perform", tr_perform},
                                    {"active", tr_active},
                                    {"escape", tr_escape},
                                    {"parse_headers", tr_parse_headers},
                                    {"version", tr_version},
                                    {NULL, NULL}};

int luaopen_myrmex_core_transport(lua_State *L) {
  mx_curl_load(L);
  mx_crypto_load(L);
  if (!multi) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
      return luaL_error(L, "http: curl initialisation failed");
    multi = curl_multi_init();
    if (!multi)
      return luaL_error(L, "http: cannot create the curl multi handle");
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, 16L);
  }
  luaL_newmetatable(L, XFER_MT);
  luaL_setfuncs(L, xfer_meta, 0);
  luaL_newlib(L, xfer_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, tr_funcs);
  return 1;
}
