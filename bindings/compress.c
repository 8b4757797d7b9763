/*
 * myrmex.core.compress: layer compression and decompression as sources (source.h), so a
 * layer goes from a tar entry, a file or a download through gzip or zstd into an upload
 * without passing through Lua and with bounded memory.
 *
 * Both digests a registry push needs come from the same pass: the sha256 of the uncompressed
 * bytes (the image config's diff id) and of the compressed bytes (the blob digest), with
 * both sizes. They are read from the job handle returned next to the source once the source
 * has been read to its end.
 *
 * gzip is compressed with libdeflate, about 2.6 times less CPU than zlib at the same level
 * (docs/registry.md has the figures), so that both cores work on one layer: the input is cut
 * into independent blocks, each compressed by a worker thread into a gzip member of its own,
 * and the members are written in order. RFC 1952 allows any number of members and every
 * client reads them (Go's compress/gzip, so docker, containerd, skopeo and crane; zlib's
 * inflate via the decoder below). libdeflate has no streaming and no preset dictionary, so
 * the blocks cannot be chained into one deflate stream; at 1 MiB the cost of starting each
 * block afresh is under 0.1 % of the output. The workers form one pool for the process, so
 * layers compressed at the same time share the cores. zstd uses libzstd's own worker threads
 * (ZSTD_c_nbWorkers). Reads from the wrapped source stay in the thread that reads this one:
 * sources such as the transport's are not safe to read elsewhere. Decoding uses zlib, whose
 * inflate streams.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <libdeflate.h>
#include <lua.h>
#include <zlib.h>
#include <zstd.h>

#include "lib/crypto_api.h"
#include "runtime.h"
#include "source.h"

#define JOB_MT "myrmex.compress.job"
#define MAX_THREADS 16
#define GZIP_MAX_LEVEL 12 /* libdeflate's levels: 10-12 are its slow, thorough ones */
#define GZIP_DEFAULT_LEVEL 6
#define GZIP_DEFAULT_BLOCK (1024 * 1024)
#define ZSTD_JOB_SIZE (1 << 20)

/* A zstd frame starts with 28 b5 2f fd (ZSTD_isFrame is in libzstd's static-only API). */
static int is_zstd(const unsigned char *p, size_t n) {
  return n >= 4 && p[0] == 0x28 && p[1] == 0xb5 && p[2] == 0x2f && p[3] == 0xfd;
}

enum { FMT_NONE, FMT_GZIP, FMT_ZSTD };
enum { SLOT_FREE, SLOT_QUEUED, SLOT_DONE, SLOT_FAILED };

/* One block of a gzip stream: its input and the gzip member it compressed to. */
typedef struct slot {
  unsigned char *in, *out;
  size_t in_len, out_len, out_cap;
  int state;
  struct slot *next_job; /* the pool's queue */
  struct cstream *owner;
} slot;

typedef struct cstream {
  int decode; /* 1: decompress (gzip, zstd or plain, detected), 0: compress */
  int format; /* compress: FMT_GZIP / FMT_ZSTD; decode: what was detected */
  int level;
  int refs;     /* the source and the job handle; freed when both are gone */
  int finished; /* the whole output has been handed out */
  int failed;
  char err[200];
  mx_source *inner; /* borrowed: anchored by the job handle's user value */
  int inner_eof;
  EVP_MD_CTX *md_raw, *md_out; /* uncompressed, compressed */
  char raw_digest[80], out_digest[80];
  int64_t raw_size, out_size;
  /* gzip blocks: a ring; head is the next to hand out, tail the one being filled. queued
   * counts the blocks from head on that are queued, being compressed or compressed and not yet
   * handed out; the input is read into the tail block whenever queued < nslots. */
  slot *slots;
  int nslots, head, tail, queued;
  int threads; /* blocks this stream keeps the workers busy with */
  size_t block_size;
  int members;    /* blocks queued so far (an empty input still gets one member) */
  size_t out_pos; /* in the head slot */
  /* zstd, and decoding */
  ZSTD_CCtx *zc;
  ZSTD_DCtx *zd;
  z_stream zs;
  int zs_live;
  unsigned char *ibuf, *obuf;
  size_t icap, ocap;
  ZSTD_inBuffer zin;
  ZSTD_outBuffer zout;
  size_t opos;
  int zend; /* the encoder has been told the input ended */
  int sniffed;
} cstream;

/* ---- the gzip worker pool ---- */

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_work = PTHREAD_COND_INITIALIZER;
static pthread_cond_t pool_done = PTHREAD_COND_INITIALIZER;
static slot *queue_head, *queue_tail;
static int pool_threads;

static int online_cpus(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  if (n < 1)
    return 1;
  return n > MAX_THREADS ? MAX_THREADS : (int)n;
}

/* Compress one block into a gzip member. A worker keeps one compressor per level it has
 * been asked for (each holds its match finder's tables, a few hundred KiB). */
static int deflate_block(struct libdeflate_compressor **by_level, slot *s, int level) {
  if (!by_level[level])
    by_level[level] = libdeflate_alloc_compressor(level);
  if (!by_level[level])
    return -1;
  s->out_len = libdeflate_gzip_compress(by_level[level], s->in, s->in_len, s->out, s->out_cap);
  return s->out_len > 0 ? 0 : -1;
}

static void *pool_main(void *arg) {
  (void)arg;
  struct libdeflate_compressor *by_level[GZIP_MAX_LEVEL + 1] = {0};
  pthread_mutex_lock(&pool_mu);
  for (;;) {
    while (!queue_head)
      pthread_cond_wait(&pool_work, &pool_mu);
    slot *s = queue_head;
    queue_head = s->next_job;
    if (!queue_head)
      queue_tail = NULL;
    int level = s->owner->level;
    pthread_mutex_unlock(&pool_mu);
    int rc = deflate_block(by_level, s, level);
    pthread_mutex_lock(&pool_mu);
    s->state = rc == 0 ? SLOT_DONE : SLOT_FAILED;
    pthread_cond_broadcast(&pool_done);
  }
  return NULL;
}

/* Start the pool once; 0 when at least one worker runs. */
static int pool_start(void) {
  pthread_mutex_lock(&pool_mu);
  int want = online_cpus();
  while (pool_threads < want) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, pool_main, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0)
      break;
    pool_threads++;
  }
  int ok = pool_threads > 0 ? 0 : -1;
  pthread_mutex_unlock(&pool_mu);
  return ok;
}

/* Wait until no block of cs is queued or being deflated (before its buffers are freed). */
static void pool_drain(cstream *cs) {
  pthread_mutex_lock(&pool_mu);
  /* Blocks still waiting in the queue are taken out; one a worker holds is waited for. */
  slot **pp = &queue_head;
  queue_tail = NULL;
  while (*pp) {
    if ((*pp)->owner == cs) {
      (*pp)->state = SLOT_FREE;
      *pp = (*pp)->next_job;
    } else {
      queue_tail = *pp;
      pp = &(*pp)->next_job;
    }
  }
  for (int i = 0; i < cs->nslots; i++)
    while (cs->slots[i].state == SLOT_QUEUED)
      pthread_cond_wait(&pool_done, &pool_mu);
  pthread_mutex_unlock(&pool_mu);
}

/* ---- shared pieces ---- */

static void set_err(cstream *cs, const char *fmt, const char *what) {
  if (!cs->failed)
    snprintf(cs->err, sizeof cs->err, fmt, what);
  cs->failed = 1;
}

static void hex_final(EVP_MD_CTX *md, char *out, size_t outlen) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(md, d, &len);
  int at = snprintf(out, outlen, "sha256:");
  for (unsigned int i = 0; i < len && (size_t)at + 2 * i + 3 <= outlen; i++)
    snprintf(out + at + 2 * i, 3, "%02x", d[i]);
}

static void finish(cstream *cs) {
  if (cs->finished)
    return;
  cs->finished = 1;
  hex_final(cs->md_raw, cs->raw_digest, sizeof cs->raw_digest);
  hex_final(cs->md_out, cs->out_digest, sizeof cs->out_digest);
}

/* Read from the wrapped source; -1 with cs->err set on failure. */
static ssize_t inner_read(cstream *cs, unsigned char *buf, size_t n) {
  char err[160] = "";
  if (mx_interrupt_due()) {
    set_err(cs, "%s", "interrupted");
    return -1;
  }
  ssize_t got =
      cs->inner->closed ? -1 : cs->inner->read(cs->inner->ud, (char *)buf, n, err, sizeof err);
  if (got < 0)
    set_err(cs, "%s", err[0] ? err : "the wrapped source failed");
  if (got == 0)
    cs->inner_eof = 1;
  return got;
}

/* Hand out n bytes of compressed output (hashed and counted as they go). */
static size_t emit(cstream *cs, char *buf, const unsigned char *from, size_t n) {
  memcpy(buf, from, n);
  EVP_DigestUpdate(cs->md_out, from, n);
  cs->out_size += (int64_t)n;
  return n;
}

/* ---- gzip ---- */

static int slots_alloc(cstream *cs) {
  cs->slots = calloc((size_t)cs->nslots, sizeof *cs->slots);
  if (!cs->slots)
    return -1;
  size_t cap = libdeflate_gzip_compress_bound(NULL, cs->block_size);
  for (int i = 0; i < cs->nslots; i++) {
    slot *s = &cs->slots[i];
    s->owner = cs;
    s->in = malloc(cs->block_size);
    s->out = malloc(cap);
    s->out_cap = cap;
    if (!s->in || !s->out)
      return -1;
  }
  return 0;
}

static void slot_queue(cstream *cs, slot *s) {
  pthread_mutex_lock(&pool_mu);
  s->state = SLOT_QUEUED;
  s->next_job = NULL;
  if (queue_tail)
    queue_tail->next_job = s;
  else
    queue_head = s;
  queue_tail = s;
  pthread_cond_signal(&pool_work);
  pthread_mutex_unlock(&pool_mu);
  cs->queued++;
  cs->members++;
  cs->tail = (cs->tail + 1) % cs->nslots;
}

/* One read from the wrapped source into the block being filled, queued for a worker once
 * full or at the end. One read, not a whole block: the caller hands out finished blocks in
 * between, so neither the source's writer nor the upload waits for a block to fill. */
static int gzip_read_ahead(cstream *cs) {
  slot *s = &cs->slots[cs->tail];
  ssize_t got = inner_read(cs, s->in + s->in_len, cs->block_size - s->in_len);
  if (got < 0)
    return -1;
  EVP_DigestUpdate(cs->md_raw, s->in + s->in_len, (size_t)got);
  s->in_len += (size_t)got;
  cs->raw_size += got;
  /* An empty block is a member only when it is the whole input (an empty gzip file). */
  if (s->in_len == cs->block_size || (cs->inner_eof && (s->in_len > 0 || cs->members == 0)))
    slot_queue(cs, s);
  return 0;
}

/* The head block once a worker is done with it; -1 if it failed. Reads ahead while waiting. */
static int gzip_wait_head(cstream *cs) {
  slot *s = &cs->slots[cs->head];
  for (;;) {
    pthread_mutex_lock(&pool_mu);
    int state = s->state;
    if (state == SLOT_QUEUED && (cs->inner_eof || cs->queued == cs->nslots)) {
      while (s->state == SLOT_QUEUED) /* nothing to read: wait */
        pthread_cond_wait(&pool_done, &pool_mu);
      state = s->state;
    }
    pthread_mutex_unlock(&pool_mu);
    if (state == SLOT_DONE)
      return 0;
    if (state != SLOT_QUEUED) {
      set_err(cs, "%s", "gzip: compression failed (out of memory?)");
      return -1;
    }
    if (gzip_read_ahead(cs) < 0)
      return -1;
  }
}

/* Whether fewer blocks wait for or are under compression than there are workers for this
 * stream: then reading more input comes before handing out a finished block. */
static int gzip_workers_starve(cstream *cs) {
  int pending = 0;
  pthread_mutex_lock(&pool_mu);
  for (int i = 0; i < cs->queued; i++)
    pending += cs->slots[(cs->head + i) % cs->nslots].state == SLOT_QUEUED;
  pthread_mutex_unlock(&pool_mu);
  return pending < cs->threads;
}

static ssize_t gzip_read(cstream *cs, char *buf, size_t n) {
  for (;;) {
    /* Keep the workers fed before sending: a finished block waits a read, the cores do not. */
    if (!cs->inner_eof && cs->queued > 0 && cs->queued < cs->nslots && gzip_workers_starve(cs) &&
        gzip_read_ahead(cs) < 0)
      return -1;
    if (cs->queued == 0) {
      if (cs->inner_eof) {
        finish(cs);
        return 0;
      }
      if (gzip_read_ahead(cs) < 0)
        return -1;
      continue;
    }
    if (gzip_wait_head(cs) < 0)
      return -1;
    slot *s = &cs->slots[cs->head];
    if (cs->out_pos < s->out_len) {
      size_t c = s->out_len - cs->out_pos;
      if (c > n)
        c = n;
      emit(cs, buf, s->out + cs->out_pos, c);
      cs->out_pos += c;
      return (ssize_t)c;
    }
    /* The head block is out: its slot takes input again. */
    s->state = SLOT_FREE;
    s->in_len = 0;
    cs->out_pos = 0;
    cs->queued--;
    cs->head = (cs->head + 1) % cs->nslots;
  }
}

/* ---- zstd ---- */

static ssize_t zstd_read(cstream *cs, char *buf, size_t n) {
  for (;;) {
    if (cs->opos < cs->zout.pos) {
      size_t c = cs->zout.pos - cs->opos;
      if (c > n)
        c = n;
      emit(cs, buf, cs->obuf + cs->opos, c);
      cs->opos += c;
      return (ssize_t)c;
    }
    if (cs->zend) {
      finish(cs);
      return 0;
    }
    cs->zout = (ZSTD_outBuffer){cs->obuf, cs->ocap, 0};
    cs->opos = 0;
    if (cs->zin.pos == cs->zin.size && !cs->inner_eof) {
      ssize_t got = inner_read(cs, cs->ibuf, cs->icap);
      if (got < 0)
        return -1;
      EVP_DigestUpdate(cs->md_raw, cs->ibuf, (size_t)got);
      cs->raw_size += got;
      cs->zin = (ZSTD_inBuffer){cs->ibuf, (size_t)got, 0};
    }
    /* In multi-threaded mode this blocks only when no input could be taken in. */
    size_t rc = ZSTD_compressStream2(cs->zc, &cs->zout, &cs->zin,
                                     cs->inner_eof ? ZSTD_e_end : ZSTD_e_continue);
    if (ZSTD_isError(rc)) {
      set_err(cs, "zstd: %s", ZSTD_getErrorName(rc));
      return -1;
    }
    if (cs->inner_eof && rc == 0)
      cs->zend = 1; /* everything is in zout: hand it out, then the end */
  }
}

/* ---- decoding: gzip (any number of members), zstd, or plain bytes passed through ---- */

static ssize_t decode_read(cstream *cs, char *out, size_t n) {
  for (;;) {
    if (cs->finished)
      return 0;
    if (cs->zin.pos == cs->zin.size && !cs->inner_eof) {
      ssize_t got = inner_read(cs, cs->ibuf, cs->icap);
      if (got < 0)
        return -1;
      EVP_DigestUpdate(cs->md_out, cs->ibuf, (size_t)got);
      cs->out_size += got;
      cs->zin = (ZSTD_inBuffer){cs->ibuf, (size_t)got, 0};
      if (!cs->sniffed && got > 0) {
        cs->sniffed = 1;
        /* The magic is read from the first chunk; a source yielding under 4 bytes at first
         * and being compressed is not something a tar or a socket does. */
        if (got >= 2 && cs->ibuf[0] == 0x1f && cs->ibuf[1] == 0x8b) {
          cs->format = FMT_GZIP;
          memset(&cs->zs, 0, sizeof cs->zs);
          if (inflateInit2(&cs->zs, 15 + 16) != Z_OK) {
            set_err(cs, "%s", "gzip: out of memory");
            return -1;
          }
          cs->zs_live = 1;
        } else if (is_zstd(cs->ibuf, (size_t)got)) {
          cs->format = FMT_ZSTD;
          cs->zd = ZSTD_createDCtx();
          if (!cs->zd) {
            set_err(cs, "%s", "zstd: out of memory");
            return -1;
          }
        }
      }
    }
    size_t avail = cs->zin.size - cs->zin.pos;
    if (avail == 0 && cs->inner_eof) {
      if (cs->format == FMT_GZIP && cs->zs_live && cs->zs.total_in > 0) {
        set_err(cs, "%s", "gzip: the stream ends inside a member (truncated)");
        return -1;
      }
      if (cs->format == FMT_ZSTD && cs->zend) {
        set_err(cs, "%s", "zstd: the stream ends inside a frame (truncated)");
        return -1;
      }
      finish(cs);
      return 0;
    }
    const unsigned char *in = cs->ibuf + cs->zin.pos;
    size_t produced = 0;
    if (cs->format == FMT_NONE) {
      produced = avail < n ? avail : n;
      memcpy(out, in, produced);
      cs->zin.pos += produced;
    } else if (cs->format == FMT_GZIP) {
      if (!cs->zs_live) {
        /* Another gzip member follows the last one (pigz -i, concatenated streams). */
        if (inflateReset(&cs->zs) != Z_OK) {
          set_err(cs, "%s", "gzip: cannot continue with the next member");
          return -1;
        }
        cs->zs_live = 1;
      }
      cs->zs.next_in = (unsigned char *)in;
      cs->zs.avail_in = (uInt)avail;
      cs->zs.next_out = (unsigned char *)out;
      cs->zs.avail_out = (uInt)n;
      int rc = inflate(&cs->zs, Z_NO_FLUSH);
      if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
        set_err(cs, "gzip: %s", cs->zs.msg ? cs->zs.msg : "corrupt data");
        return -1;
      }
      cs->zin.pos += avail - cs->zs.avail_in;
      produced = n - cs->zs.avail_out;
      if (rc == Z_STREAM_END) {
        cs->zs_live = 0;
        cs->zs.total_in = 0;
      }
    } else {
      ZSTD_outBuffer o = {out, n, 0};
      size_t rc = ZSTD_decompressStream(cs->zd, &o, &cs->zin);
      if (ZSTD_isError(rc)) {
        set_err(cs, "zstd: %s", ZSTD_getErrorName(rc));
        return -1;
      }
      cs->zend = rc != 0; /* inside a frame */
      produced = o.pos;
    }
    if (produced > 0) {
      EVP_DigestUpdate(cs->md_raw, out, produced);
      cs->raw_size += (int64_t)produced;
      return (ssize_t)produced;
    }
  }
}

/* ---- the source and the job handle ---- */

static void cstream_release(cstream *cs) {
  if (--cs->refs > 0)
    return;
  if (cs->slots) {
    pool_drain(cs);
    for (int i = 0; i < cs->nslots; i++) {
      free(cs->slots[i].in);
      free(cs->slots[i].out);
    }
    free(cs->slots);
  }
  if (cs->zc)
    ZSTD_freeCCtx(cs->zc);
  if (cs->zd)
    ZSTD_freeDCtx(cs->zd);
  if (cs->format == FMT_GZIP && cs->decode)
    inflateEnd(&cs->zs);
  free(cs->ibuf);
  free(cs->obuf);
  if (cs->md_raw)
    EVP_MD_CTX_free(cs->md_raw);
  if (cs->md_out)
    EVP_MD_CTX_free(cs->md_out);
  free(cs);
}

static ssize_t cs_read(void *ud, char *buf, size_t n, char *err, size_t errlen) {
  cstream *cs = ud;
  if (cs->failed) {
    snprintf(err, errlen, "%s", cs->err);
    return -1;
  }
  if (n == 0)
    return 0;
  ssize_t got;
  if (cs->decode)
    got = decode_read(cs, buf, n);
  else if (cs->format == FMT_GZIP)
    got = gzip_read(cs, buf, n);
  else
    got = zstd_read(cs, buf, n);
  if (got < 0)
    snprintf(err, errlen, "%s", cs->err);
  return got;
}

static void cs_close(void *ud) {
  cstream *cs = ud;
  /* Stop the workers on this stream's blocks now rather than at the job's collection. */
  if (cs->slots)
    pool_drain(cs);
  cstream_release(cs);
}

typedef struct {
  cstream *cs;
} jobbox;

static cstream *job_check(lua_State *L) {
  jobbox *b = luaL_checkudata(L, 1, JOB_MT);
  if (!b->cs)
    luaL_error(L, "compress: the job is closed");
  return b->cs;
}

static int job_gc(lua_State *L) {
  jobbox *b = luaL_checkudata(L, 1, JOB_MT);
  if (b->cs) {
    cstream_release(b->cs);
    b->cs = NULL;
  }
  return 0;
}

static const char *const FORMAT_NAMES[] = {"none", "gzip", "zstd", NULL};

/* job:result() -> {digest=, size=, diff_id=, raw_size=, format=} once the source has been read
 * to its end; nil and the reason before that or after a failure. digest and size are the
 * compressed stream's, diff_id and raw_size the uncompressed one's. */
static int job_result(lua_State *L) {
  cstream *cs = job_check(L);
  if (cs->failed || !cs->finished) {
    luaL_pushfail(L);
    lua_pushstring(L, cs->failed ? cs->err : "the stream has not been read to its end");
    return 2;
  }
  lua_createtable(L, 0, 5);
  lua_pushstring(L, cs->out_digest);
  lua_setfield(L, -2, "digest");
  lua_pushinteger(L, (lua_Integer)cs->out_size);
  lua_setfield(L, -2, "size");
  lua_pushstring(L, cs->raw_digest);
  lua_setfield(L, -2, "diff_id");
  lua_pushinteger(L, (lua_Integer)cs->raw_size);
  lua_setfield(L, -2, "raw_size");
  lua_pushstring(L, FORMAT_NAMES[cs->format]);
  lua_setfield(L, -2, "format");
  return 1;
}

static int job_tostring(lua_State *L) {
  jobbox *b = luaL_checkudata(L, 1, JOB_MT);
  lua_pushfstring(L, "compress job (%s)", !b->cs ? "closed" : b->cs->finished ? "done" : "running");
  return 1;
}

static int opt_int_field(lua_State *L, int t, const char *k, int def, int lo, int hi,
                         const char *fname) {
  if (lua_isnoneornil(L, t))
    return def;
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return def;
  }
  int isnum;
  lua_Integer v = lua_tointegerx(L, -1, &isnum);
  lua_pop(L, 1);
  if (!isnum || v < lo || v > hi)
    luaL_error(L, "compress.%s: %s must be an integer from %d to %d", fname, k, lo, hi);
  return (int)v;
}

/* Make the stream and its two Lua faces: the source (pushed first) and the job handle. The
 * job handle's user value anchors the wrapped source; the new source's anchors the job. */
static cstream *push_pair(lua_State *L, int inner_idx, int decode) {
  mx_source *inner = mx_source_check(L, inner_idx);
  if (inner->closed)
    luaL_error(L, "compress: the wrapped source is closed");
  mx_source *src = mx_source_new(L);
  jobbox *b = lua_newuserdatauv(L, sizeof *b, 1);
  b->cs = NULL;
  luaL_setmetatable(L, JOB_MT);
  lua_pushvalue(L, inner_idx);
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, -3, 1);
  cstream *cs = calloc(1, sizeof *cs);
  if (!cs) {
    luaL_error(L, "compress: not enough memory");
    return NULL; /* not reached: luaL_error does not return */
  }
  b->cs = cs;
  cs->refs = 1; /* the job; the source takes its reference once it is live */
  cs->decode = decode;
  cs->inner = inner;
  cs->md_raw = EVP_MD_CTX_new();
  cs->md_out = EVP_MD_CTX_new();
  if (!cs->md_raw || !cs->md_out || EVP_DigestInit_ex(cs->md_raw, EVP_sha256(), NULL) != 1 ||
      EVP_DigestInit_ex(cs->md_out, EVP_sha256(), NULL) != 1)
    luaL_error(L, "compress: OpenSSL could not start sha256");
  (void)src;
  return cs;
}

static void go_live(lua_State *L, cstream *cs) {
  mx_source *src = mx_source_check(L, -2);
  cs->refs++;
  src->read = cs_read;
  src->close = cs_close;
  src->ud = cs;
  src->closed = 0;
}

/* compress.encoder(source, {format = "gzip"|"zstd", level = ?, threads = ?, block_size = ?})
 * -> source, job. The source yields the compressed stream; job:result() gives the digests. */
static int compress_encoder(lua_State *L) {
  mx_source_check(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_getfield(L, 2, "format");
  const char *fname = lua_tostring(L, -1);
  int fmt = !fname                   ? FMT_NONE
            : !strcmp(fname, "gzip") ? FMT_GZIP
            : !strcmp(fname, "zstd") ? FMT_ZSTD
                                     : FMT_NONE;
  lua_pop(L, 1);
  if (fmt == FMT_NONE)
    return luaL_error(L, "compress.encoder: format must be \"gzip\" or \"zstd\"");
  int level = opt_int_field(L, 2, "level", fmt == FMT_GZIP ? GZIP_DEFAULT_LEVEL : 3, 1,
                            fmt == FMT_GZIP ? GZIP_MAX_LEVEL : ZSTD_maxCLevel(), "encoder");
  int threads = opt_int_field(L, 2, "threads", online_cpus(), 1, MAX_THREADS, "encoder");
  int block_bytes =
      opt_int_field(L, 2, "block_size", GZIP_DEFAULT_BLOCK, 64 * 1024, 16 * 1024 * 1024, "encoder");
  cstream *cs = push_pair(L, 1, 0);
  cs->format = fmt;
  cs->level = level;
  if (fmt == FMT_GZIP) {
    if (pool_start() != 0)
      return luaL_error(L, "compress.encoder: cannot start a worker thread");
    cs->block_size = (size_t)block_bytes;
    /* Blocks in flight: one per worker, the one being handed out and the one being filled.
     * More only hold more input in memory (1 MiB each): the workers are already fed. */
    cs->threads = threads;
    cs->nslots = threads + 2;
    if (slots_alloc(cs) != 0)
      return luaL_error(L, "compress.encoder: not enough memory");
  } else {
    cs->zc = ZSTD_createCCtx();
    cs->icap = ZSTD_CStreamInSize();
    cs->ocap = ZSTD_CStreamOutSize();
    cs->ibuf = malloc(cs->icap);
    cs->obuf = malloc(cs->ocap);
    if (!cs->zc || !cs->ibuf || !cs->obuf)
      return luaL_error(L, "compress.encoder: not enough memory");
    ZSTD_CCtx_setParameter(cs->zc, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(cs->zc, ZSTD_c_checksumFlag, 1);
    /* Always the multi-threaded mode, even for one thread: its output depends on the job
     * size only, not on the number of workers, so a layer compresses to the same digest on
     * every machine. Each worker holds a job's input and output: the default job (4 windows,
     * 8 MiB at level 3) takes a push past 60 MiB of RSS; 1 MiB jobs keep it under 30. A
     * libzstd built without threads refuses the parameter and compresses in this thread. */
    if (!ZSTD_isError(ZSTD_CCtx_setParameter(cs->zc, ZSTD_c_nbWorkers, threads)))
      ZSTD_CCtx_setParameter(cs->zc, ZSTD_c_jobSize, ZSTD_JOB_SIZE);
  }
  go_live(L, cs);
  return 2;
}

/* compress.decoder(source) -> source, job: the uncompressed bytes of a gzip or zstd stream
 * (told apart by their magic; other bytes pass through unchanged). job:result() gives the
 * digest and size of what was read (digest, size) and of what came out (diff_id, raw_size). */
static int compress_decoder(lua_State *L) {
  cstream *cs = push_pair(L, 1, 1);
  cs->format = FMT_NONE;
  cs->icap = 256 * 1024;
  cs->ibuf = malloc(cs->icap);
  if (!cs->ibuf)
    return luaL_error(L, "compress.decoder: not enough memory");
  go_live(L, cs);
  return 2;
}

/* compress.detect(bytes) -> "gzip" | "zstd" | "none": what the first bytes of a blob are. */
static int compress_detect(lua_State *L) {
  size_t n;
  const unsigned char *p = (const unsigned char *)luaL_checklstring(L, 1, &n);
  if (n >= 2 && p[0] == 0x1f && p[1] == 0x8b)
    lua_pushliteral(L, "gzip");
  else if (is_zstd(p, n))
    lua_pushliteral(L, "zstd");
  else
    lua_pushliteral(L, "none");
  return 1;
}

/* compress.threads() -> the worker threads a stream uses by default (online CPUs, capped). */
static int compress_threads(lua_State *L) {
  lua_pushinteger(L, online_cpus());
  return 1;
}

static const luaL_Reg job_meta[] = {
    {"__gc", job_gc}, {"__close", job_gc}, {"__tostring", job_tostring}, {NULL, NULL}};
static const luaL_Reg job_methods[] = {{"result", job_result}, {NULL, NULL}};
static const luaL_Reg compress_funcs[] = {{"encoder", compress_encoder},
                                          {"decoder", compress_decoder},
                                          {"detect", compress_detect},
                                          {"threads", compress_threads},
                                          {NULL, NULL}};

int luaopen_myrmex_core_compress(lua_State *L) {
  mx_crypto_load(L);
  luaL_newmetatable(L, JOB_MT);
  luaL_setfuncs(L, job_meta, 0);
  luaL_newlib(L, job_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, compress_funcs);
  return 1;
}
