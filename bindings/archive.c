/*
 * myrmex.core.archive: tar streams through libarchive, never held whole in memory.
 *
 *   pack{dir=, exclude=, dockerfile=}  a build context as a source (bindings/source.h), produced
 *                                      on demand by a small state machine: each read() walks one
 *                                      more directory entry or one more chunk of a file, so a
 *                                      300 MiB context costs one chunk of memory;
 *   match(patterns, path)              the .dockerignore matcher pack uses (Docker's semantics);
 *   open(path|source)                  a streaming reader (tar, tar.gz, tar.zst, ...);
 *   writer(path|nil, opts)             a writer; with no path it spools to an unlinked temp file
 *                                      that writer:source() hands to a consumer;
 *   extract(path|source, dest, opts)   unpacks, refusing anything that would land outside dest.
 *
 * Every handle is a userdata created closed-safe before anything is acquired, so an error
 * raised half-way leaks nothing: __gc releases what is held.
 */
#include <errno.h>
#include <fcntl.h>
#include <fts.h>
#include <limits.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "fsutil_wire.pb-c.h"
#include "lib/archive_api.h"
#include "lib/crypto_api.h"
#include "runtime.h"
#include "source.h"

#define READER_MT "myrmex.archive.reader"
#define ADD_MT "myrmex.archive.add"
#define MATCHER_MT "myrmex.archive.matcher"
#define WRITER_MT "myrmex.archive.writer"
#define CHUNK ((size_t)65536)
#define DEFAULT_READ_ALL_MAX ((lua_Integer)16 * 1024 * 1024)

static int is_source(lua_State *L, int idx) {
  return luaL_testudata(L, idx, MX_SOURCE_MT) != NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* The .dockerignore matcher: each pattern becomes an anchored POSIX ERE, as Docker turns it     */
/* into a Go regexp; the last pattern that matches the path or one of its parents decides.     */

typedef struct {
  regex_t re;
  char *text; /* the cleaned pattern, without "!" */
  int exclusion;
  int compiled;
} mx_pattern;

typedef struct {
  mx_pattern *v;
  size_t n, cap;
  int has_exclusions;
} mx_matcher;

/* Go's filepath.Clean, in place: drop "." and empty elements, fold "x/..". */
static void clean_path(char *p) {
  int rooted = p[0] == '/';
  char *out = p, *r = p;
  size_t keep = 0; /* length of the leading run of ".." that cannot be folded */
  if (rooted)
    *out++ = '/', r++;
  char *base = out;
  while (*r) {
    char *end = strchr(r, '/');
    size_t len = end ? (size_t)(end - r) : strlen(r);
    if (len == 0 || (len == 1 && r[0] == '.')) {
      /* skip */
    } else if (len == 2 && r[0] == '.' && r[1] == '.') {
      if ((size_t)(out - base) > keep) {
        while (out > base + keep && out[-1] != '/')
          out--;
        if (out > base + keep)
          out--;
      } else if (!rooted) {
        if (out > base)
          *out++ = '/';
        memcpy(out, "..", 2);
        out += 2;
        keep = (size_t)(out - base);
      }
    } else {
      if (out > base)
        *out++ = '/';
      memmove(out, r, len);
      out += len;
    }
    r += len + (end ? 1 : 0);
  }
  if (out == p)
    *out++ = '.';
  *out = '\0';
}

static int ere_special(int c) {
  return c && strchr(".[]()*+?{}|^$\\", c) != NULL;
}

/* Translate one cleaned pattern to an anchored ERE (Docker's patternmatcher rules). */
static void pattern_to_ere(const char *p, luaL_Buffer *b) {
  luaL_addchar(b, '^');
  while (*p) {
    char c = *p++;
    if (c == '*' && *p == '*') {
      p++;
      if (*p == '/')
        p++;
      luaL_addstring(b, *p ? "(.*/)?" : ".*");
    } else if (c == '*') {
      luaL_addstring(b, "[^/]*");
    } else if (c == '?') {
      luaL_addstring(b, "[^/]");
    } else if (c == '[') {
      /* A bracket expression passes through to the regex engine, as in Docker. */
      luaL_addchar(b, c);
      while (*p && *p != ']') {
        if (*p == '\\' && p[1])
          p++;
        luaL_addchar(b, *p++);
      }
      if (*p)
        luaL_addchar(b, *p++);
    } else if (c == '\\') {
      if (*p) {
        if (ere_special(*p))
          luaL_addchar(b, '\\');
        luaL_addchar(b, *p++);
      } else {
        luaL_addstring(b, "\\\\");
      }
    } else {
      if (ere_special(c))
        luaL_addchar(b, '\\');
      luaL_addchar(b, c);
    }
  }
  luaL_addchar(b, '$');
}

static void matcher_free(mx_matcher *m) {
  for (size_t i = 0; i < m->n; i++) {
    if (m->v[i].compiled)
      regfree(&m->v[i].re);
    free(m->v[i].text);
  }
  free(m->v);
  memset(m, 0, sizeof *m);
}

/* Add one raw pattern line; returns NULL or an error message (static or in err). */
static const char *matcher_add(lua_State *L, mx_matcher *m, const char *raw, char *err,
                               size_t errlen) {
  while (*raw == ' ' || *raw == '\t')
    raw++;
  int exclusion = raw[0] == '!';
  if (exclusion) {
    raw++;
    while (*raw == ' ' || *raw == '\t')
      raw++;
  }
  size_t len = strlen(raw);
  while (len && (raw[len - 1] == ' ' || raw[len - 1] == '\t' || raw[len - 1] == '\r'))
    len--;
  if (len == 0)
    return NULL;
  if (m->n == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 8;
    mx_pattern *v = realloc(m->v, cap * sizeof *v);
    if (!v)
      return "out of memory";
    m->v = v, m->cap = cap;
  }
  mx_pattern *pt = &m->v[m->n];
  memset(pt, 0, sizeof *pt);
  if (!(pt->text = strndup(raw, len)))
    return "out of memory";
  m->n++;
  clean_path(pt->text);
  if (pt->text[0] == '/' && pt->text[1])
    memmove(pt->text, pt->text + 1, strlen(pt->text));
  pt->exclusion = exclusion;
  m->has_exclusions |= exclusion;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  pattern_to_ere(pt->text, &b);
  luaL_pushresult(&b);
  int rc = regcomp(&pt->re, lua_tostring(L, -1), REG_EXTENDED | REG_NOSUB);
  lua_pop(L, 1);
  if (rc != 0) {
    snprintf(err, errlen, "bad pattern %s", pt->text);
    return err;
  }
  pt->compiled = 1;
  return NULL;
}

static int pattern_hits(const mx_pattern *pt, const char *path) {
  if (regexec(&pt->re, path, 0, NULL, 0) == 0)
    return 1;
  /* A pattern that matches a parent directory excludes everything below it. */
  char buf[PATH_MAX];
  size_t len = strlen(path);
  if (len >= sizeof buf)
    return 0;
  memcpy(buf, path, len + 1);
  for (char *s = buf; (s = strchr(s, '/')) != NULL; s++) {
    *s = '\0';
    int hit = regexec(&pt->re, buf, 0, NULL, 0) == 0;
    *s = '/';
    if (hit)
      return 1;
  }
  return 0;
}

static int matcher_excluded(const mx_matcher *m, const char *path) {
  int matched = 0;
  for (size_t i = 0; i < m->n; i++) {
    const mx_pattern *pt = &m->v[i];
    if (pt->exclusion != matched)
      continue;
    if (pattern_hits(pt, path))
      matched = !pt->exclusion;
  }
  return matched;
}

/* Docker only walks into an excluded directory when an exception pattern names a path
 * inside it literally; mirroring that keeps our context byte-for-byte what the CLI sends. */
static int matcher_may_reinclude(const mx_matcher *m, const char *dir) {
  if (!m->has_exclusions)
    return 0;
  size_t dl = strlen(dir);
  for (size_t i = 0; i < m->n; i++) {
    const char *t = m->v[i].text;
    size_t tl = strlen(t);
    if (!m->v[i].exclusion || tl < dl)
      continue;
    if (strncmp(t, dir, dl) == 0 && (t[dl] == '/' || t[dl] == '\0'))
      return 1;
  }
  return 0;
}

/* lua_error, declared noreturn so that static analysis knows nothing runs after it. */
static void raise_top(lua_State *L) __attribute__((noreturn));
static void raise_top(lua_State *L) {
  lua_error(L);
  abort(); /* not reached */
}

/* Fill m from the Lua list at idx; raises a plain error naming fname on a bad pattern. The
 * caller owns m through a userdata whose __gc frees it, so nothing is freed here. */
static void matcher_from_lua(lua_State *L, int idx, mx_matcher *m, const char *fname) {
  char err[PATH_MAX + 32];
  lua_Integer n = luaL_len(L, idx);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, idx, i);
    const char *raw = lua_tostring(L, -1);
    const char *msg = raw ? matcher_add(L, m, raw, err, sizeof err) : "patterns must be strings";
    lua_pop(L, 1);
    if (msg) {
      lua_pushfstring(L, "%s: exclude[%d]: %s", fname, (int)i, msg);
      matcher_free(m);
      raise_top(L);
    }
  }
}

static int matcher_gc(lua_State *L) {
  matcher_free(lua_touserdata(L, 1));
  return 0;
}

/* match(patterns, path) -> true when path is excluded. The matcher lives in a userdata whose
 * __gc frees its patterns: reading the Lua list can raise (out of memory) half-way. */
static int ar_match(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  const char *path = luaL_checkstring(L, 2);
  mx_matcher *m = lua_newuserdatauv(L, sizeof *m, 0);
  memset(m, 0, sizeof *m);
  luaL_setmetatable(L, MATCHER_MT);
  matcher_from_lua(L, 1, m, "archive.match");
  char buf[PATH_MAX];
  snprintf(buf, sizeof buf, "%s", path);
  clean_path(buf);
  int hit = matcher_excluded(m, buf[0] == '/' && buf[1] ? buf + 1 : buf);
  matcher_free(m);
  lua_pushboolean(L, hit);
  return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Digests (OpenSSL), shared by reader:digest, reader:copy_to and writer checks.               */

typedef struct {
  EVP_MD_CTX *ctx;
  char alg[16];
} mx_digest;

static int digest_begin(mx_digest *d, const char *alg) {
  const EVP_MD *md = EVP_get_digestbyname(alg);
  snprintf(d->alg, sizeof d->alg, "%s", alg);
  d->ctx = md ? EVP_MD_CTX_new() : NULL;
  if (!d->ctx)
    return -1;
  return EVP_DigestInit_ex(d->ctx, md, NULL) == 1 ? 0 : -1;
}

/* Finish into "alg:hex" (out must hold 16 + 2*64 + 2 bytes) and free the context. */
static void digest_end(mx_digest *d, char *out, size_t outlen) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(d->ctx, md, &n);
  EVP_MD_CTX_free(d->ctx);
  d->ctx = NULL;
  size_t off = (size_t)snprintf(out, outlen, "%s:", d->alg);
  for (unsigned int i = 0; i < n && off + 2 < outlen; i++)
    off += (size_t)snprintf(out + off, outlen - off, "%02x", md[i]);
}

/* ------------------------------------------------------------------------------------------ */
/* pack: a build context as a source. read() advances a walk (fts) one step at a time and     */
/* hands out the bytes libarchive wrote into a small buffer.                                   */

enum { PACK_WALK, PACK_EXTRA, PACK_FINISH, PACK_DONE };

typedef struct {
  struct archive *a;
  struct archive_entry_linkresolver *links;
  FTS *fts;
  mx_matcher m;
  int phase;
  int fd;            /* file whose data is being written, or -1 */
  int64_t remaining; /* bytes of it still to write */
  char *out;         /* tar bytes produced but not yet read */
  size_t out_len, out_off, out_cap;
  char *chunk;
  char *extra_path, *extra_name; /* a Dockerfile from outside the context */
  char *ignore_path;             /* the context's .dockerignore, rewritten when extra_name is set */
  size_t rootlen;
  char err[PATH_MAX + 128];
} pack_state;

static la_ssize_t pack_sink(struct archive *a, void *ud, const void *buf, size_t n) {
  pack_state *ps = ud;
  if (ps->out_len + n > ps->out_cap) {
    size_t cap = ps->out_cap ? ps->out_cap : CHUNK;
    while (cap < ps->out_len + n)
      cap *= 2;
    char *p = realloc(ps->out, cap);
    if (!p) {
      archive_set_error(a, ENOMEM, "out of memory");
      return -1;
    }
    ps->out = p, ps->out_cap = cap;
  }
  memcpy(ps->out + ps->out_len, buf, n);
  ps->out_len += n;
  return (la_ssize_t)n;
}

/* Record a failure of the file system (errno) for pack_read to report; returns -1. */
static int pack_fail(pack_state *ps, const char *what, const char *path) {
  snprintf(ps->err, sizeof ps->err, "%s %s: %s", what, path, strerror(errno));
  return -1;
}

/* Record a failure inside libarchive; returns -1. */
static int pack_fail_archive(pack_state *ps, const char *what, const char *path) {
  snprintf(ps->err, sizeof ps->err, "%s %s: %s", what, path, archive_error_string(ps->a));
  return -1;
}

/* Write the header of e and arrange for its data (fd) to follow; takes ownership of fd. */
static int pack_emit(pack_state *ps, struct archive_entry *e, int fd) {
  struct archive_entry *spare = NULL;
  if (archive_entry_filetype(e) != AE_IFREG)
    archive_entry_set_size(e, 0);
  archive_entry_linkify(ps->links, &e, &spare);
  int64_t size = archive_entry_size(e);
  int rc = archive_write_header(ps->a, e);
  if (rc >= ARCHIVE_WARN && fd >= 0 && size > 0 && archive_entry_hardlink(e) == NULL) {
    ps->fd = fd, ps->remaining = size;
    fd = -1;
  }
  if (fd >= 0)
    close(fd);
  if (rc < ARCHIVE_WARN)
    pack_fail_archive(ps, "write", archive_entry_pathname(e));
  archive_entry_free(e);
  archive_entry_free(spare);
  return rc < ARCHIVE_WARN ? -1 : 0;
}

static int fts_by_name(const FTSENT **a, const FTSENT **b) {
  return strcmp((*a)->fts_name, (*b)->fts_name);
}

/* One directory entry: skip or exclude it, or write its header. */
static int pack_visit(pack_state *ps, FTSENT *f) {
  if (f->fts_level == 0 || f->fts_info == FTS_DP)
    return 0;
  if (f->fts_info == FTS_DNR || f->fts_info == FTS_ERR || f->fts_info == FTS_NS) {
    errno = f->fts_errno;
    return pack_fail(ps, "read", f->fts_path);
  }
  const char *rel = f->fts_path + ps->rootlen + 1;
  if (ps->ignore_path && f->fts_level == 1 && strcmp(rel, ".dockerignore") == 0)
    return 0; /* written after the walk, naming the Dockerfile from outside (pack_ignore) */
  if (matcher_excluded(&ps->m, rel)) {
    if (f->fts_info == FTS_D && !matcher_may_reinclude(&ps->m, rel))
      fts_set(ps->fts, f, FTS_SKIP);
    return 0;
  }
  const struct stat *st = f->fts_statp;
  if (S_ISSOCK(st->st_mode))
    return 0; /* tar cannot carry sockets, and Docker skips them too */
  struct archive_entry *e = archive_entry_new();
  archive_entry_copy_stat(e, st);
  archive_entry_set_pathname(e, rel);
  /* As the docker CLI does: the daemon should not see the builder's own user ids. */
  archive_entry_set_uid(e, 0);
  archive_entry_set_gid(e, 0);
  int fd = -1;
  if (S_ISLNK(st->st_mode)) {
    char target[PATH_MAX];
    ssize_t n = readlink(f->fts_accpath, target, sizeof target - 1);
    if (n < 0) {
      archive_entry_free(e);
      return pack_fail(ps, "readlink", f->fts_path);
    }
    target[n] = '\0';
    archive_entry_set_symlink(e, target);
  } else if (S_ISREG(st->st_mode)) {
    fd = open(f->fts_accpath, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      archive_entry_free(e);
      return pack_fail(ps, "open", f->fts_path);
    }
  }
  return pack_emit(ps, e, fd);
}

static int pack_extra(pack_state *ps) {
  int fd = open(ps->extra_path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    if (fd >= 0)
      close(fd);
    errno = errno ? errno : EINVAL;
    return pack_fail(ps, "dockerfile", ps->extra_path);
  }
  struct archive_entry *e = archive_entry_new();
  archive_entry_copy_stat(e, &st);
  archive_entry_set_pathname(e, ps->extra_name);
  archive_entry_set_uid(e, 0);
  archive_entry_set_gid(e, 0);
  archive_entry_set_nlink(e, 1);
  return pack_emit(ps, e, fd);
}

/* The context's .dockerignore (or an empty one) with the outside Dockerfile's generated name
 * appended, as the docker CLI does: the daemon then leaves that file out of `COPY .`. */
static int pack_ignore(pack_state *ps) {
  char *text = NULL;
  size_t len = 0;
  struct stat st;
  int fd = open(ps->ignore_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
    if (st.st_size > (1 << 20)) {
      close(fd);
      errno = EFBIG;
      return pack_fail(ps, "read", ps->ignore_path);
    }
    text = malloc((size_t)st.st_size + strlen(ps->extra_name) + 3);
    ssize_t n = text ? read(fd, text, (size_t)st.st_size) : -1;
    close(fd);
    if (n < 0) {
      free(text);
      return pack_fail(ps, "read", ps->ignore_path);
    }
    len = (size_t)n;
  } else {
    if (fd >= 0)
      close(fd);
    text = malloc(strlen(ps->extra_name) + 3);
  }
  if (!text) {
    errno = ENOMEM;
    return pack_fail(ps, "write", ".dockerignore");
  }
  len += (size_t)sprintf(text + len, "\n%s\n", ps->extra_name);
  struct archive_entry *e = archive_entry_new();
  archive_entry_set_pathname(e, ".dockerignore");
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_set_perm(e, 0644);
  archive_entry_set_size(e, (la_int64_t)len);
  archive_entry_set_mtime(e, time(NULL), 0);
  int rc = archive_write_header(ps->a, e) < ARCHIVE_WARN || archive_write_data(ps->a, text, len) < 0
               ? pack_fail_archive(ps, "write", ".dockerignore")
               : 0;
  archive_entry_free(e);
  free(text);
  return rc;
}

/* Stream the next chunk of the current file. A file that shrank is an error: the header has
 * promised its size already. */
static int pack_data(pack_state *ps) {
  size_t want = ps->remaining < (int64_t)CHUNK ? (size_t)ps->remaining : CHUNK;
  ssize_t n = read(ps->fd, ps->chunk, want);
  if (n <= 0) {
    if (n == 0)
      errno = ENODATA; /* the file shrank after its header promised a size */
    close(ps->fd);
    ps->fd = -1;
    return pack_fail(ps, "read", "(file changed while packing?)");
  }
  if (archive_write_data(ps->a, ps->chunk, (size_t)n) < 0)
    return pack_fail_archive(ps, "write", "");
  ps->remaining -= n;
  if (ps->remaining == 0) {
    close(ps->fd);
    ps->fd = -1;
  }
  return 0;
}

static int pack_step(pack_state *ps) {
  if (ps->fd >= 0)
    return pack_data(ps);
  switch (ps->phase) {
  case PACK_WALK: {
    errno = 0;
    FTSENT *f = fts_read(ps->fts);
    if (f)
      return pack_visit(ps, f);
    if (errno)
      return pack_fail(ps, "walk", "");
    ps->phase = ps->extra_path ? PACK_EXTRA : PACK_FINISH;
    return 0;
  }
  case PACK_EXTRA:
    ps->phase = PACK_FINISH;
    if (pack_ignore(ps) < 0)
      return -1;
    return pack_extra(ps);
  case PACK_FINISH:
    ps->phase = PACK_DONE;
    return archive_write_close(ps->a) == ARCHIVE_OK ? 0 : pack_fail_archive(ps, "finish", "");
  }
  return 0;
}

static ssize_t pack_read(void *ud, char *buf, size_t n, char *err, size_t errlen) {
  pack_state *ps = ud;
  while (ps->out_off == ps->out_len && ps->phase != PACK_DONE) {
    ps->out_off = ps->out_len = 0;
    if (pack_step(ps) < 0) {
      snprintf(err, errlen, "archive.pack: %s", ps->err);
      return -1;
    }
  }
  size_t avail = ps->out_len - ps->out_off;
  if (avail < n)
    n = avail;
  memcpy(buf, ps->out + ps->out_off, n);
  ps->out_off += n;
  return (ssize_t)n;
}

static void pack_close(void *ud) {
  pack_state *ps = ud;
  if (!ps)
    return;
  if (ps->a)
    archive_write_free(ps->a);
  if (ps->links)
    archive_entry_linkresolver_free(ps->links);
  if (ps->fts)
    fts_close(ps->fts);
  if (ps->fd >= 0)
    close(ps->fd);
  matcher_free(&ps->m);
  free(ps->out);
  free(ps->chunk);
  free(ps->extra_path);
  free(ps->extra_name);
  free(ps->ignore_path);
  free(ps);
}

/* Force-include a path the daemon needs (the Dockerfile, .dockerignore), as the CLI does. */
static void pack_keep(lua_State *L, pack_state *ps, const char *rel) {
  char err[64];
  if (matcher_excluded(&ps->m, rel)) {
    lua_pushfstring(L, "!%s", rel);
    matcher_add(L, &ps->m, lua_tostring(L, -1), err, sizeof err);
    lua_pop(L, 1);
  }
}

/* A Dockerfile outside the context travels under a random name; returns that name or NULL. */
static const char *pack_dockerfile(lua_State *L, pack_state *ps, const char *root, const char *df) {
  char rel[PATH_MAX], real[PATH_MAX];
  size_t rl = strlen(root);
  if (df[0] != '/')
    snprintf(rel, sizeof rel, "%s", df);
  else if (strncmp(df, root, rl) == 0 && df[rl] == '/')
    snprintf(rel, sizeof rel, "%s", df + rl + 1);
  else
    snprintf(rel, sizeof rel, "../");
  clean_path(rel);
  if (strcmp(rel, "..") != 0 && strncmp(rel, "../", 3) != 0) {
    pack_keep(L, ps, rel);
    lua_pushstring(L, rel);
    return lua_tostring(L, -1);
  }
  lua_pushfstring(L, "%s%s%s", df[0] == '/' ? "" : root, df[0] == '/' ? "" : "/", df);
  int found = realpath(lua_tostring(L, -1), real) != NULL;
  lua_pop(L, 1);
  if (!found)
    return NULL; /* a missing Dockerfile is for the daemon to report */
  unsigned char rnd[8];
  char name[48];
  FILE *u = fopen("/dev/urandom", "rb");
  size_t got = u ? fread(rnd, 1, sizeof rnd, u) : 0;
  if (u)
    fclose(u);
  if (got != sizeof rnd)
    memset(rnd, 0x5a, sizeof rnd);
  snprintf(name, sizeof name, ".dockerfile.%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1],
           rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
  ps->extra_path = strdup(real);
  ps->extra_name = strdup(name);
  lua_pushfstring(L, "%s/.dockerignore", root);
  ps->ignore_path = strdup(lua_tostring(L, -1));
  lua_pop(L, 1);
  if (!ps->extra_path || !ps->extra_name || !ps->ignore_path)
    luaL_error(L, "archive.pack: out of memory");
  lua_pushstring(L, name);
  return lua_tostring(L, -1);
}

static void pack_open_archive(lua_State *L, pack_state *ps) {
  ps->a = archive_write_new();
  ps->links = archive_entry_linkresolver_new();
  ps->chunk = malloc(CHUNK);
  if (!ps->a || !ps->links || !ps->chunk)
    luaL_error(L, "archive.pack: out of memory");
  archive_write_set_format_pax_restricted(ps->a);
  archive_entry_linkresolver_set_strategy(ps->links, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  archive_write_set_bytes_in_last_block(ps->a, 1);
  if (archive_write_open2(ps->a, ps, NULL, pack_sink, NULL, NULL) != ARCHIVE_OK)
    luaL_error(L, "archive.pack: %s", archive_error_string(ps->a));
}

/* pack{dir=, exclude=?, dockerfile=?, buildkit=?} -> source, Dockerfile name in the tar or nil */
static int ar_pack(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "dir");
  const char *dir = lua_tostring(L, -1);
  if (!dir)
    return luaL_error(L, "archive.pack: dir must be a string");
  char root[PATH_MAX];
  struct stat st;
  int found = realpath(dir, root) && stat(root, &st) == 0;
  if (!found || !S_ISDIR(st.st_mode)) {
    lua_pushfstring(L, "archive.pack: %s: %s", dir, found ? "not a directory" : strerror(errno));
    return mx_raise_error(L, "NotFound", NULL, lua_tostring(L, -1));
  }
  mx_source *src = mx_source_new(L); /* index 3 */
  pack_state *ps = calloc(1, sizeof *ps);
  if (!ps)
    return luaL_error(L, "archive.pack: out of memory");
  ps->fd = -1;
  src->ud = ps, src->read = pack_read, src->close = pack_close;
  src->closed = 0;
  lua_getfield(L, 1, "exclude");
  if (!lua_isnil(L, -1)) {
    luaL_argexpected(L, lua_istable(L, -1), 1, "exclude: list of patterns");
    matcher_from_lua(L, lua_absindex(L, -1), &ps->m, "archive.pack");
  }
  lua_pop(L, 1);
  /* The classic builder applies .dockerignore itself and needs it; BuildKit reads none from an
   * uploaded context (every pattern is applied here), so there it goes only where it matches. */
  lua_getfield(L, 1, "buildkit");
  int buildkit = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (!buildkit)
    pack_keep(L, ps, ".dockerignore");
  lua_getfield(L, 1, "dockerfile");
  const char *df = lua_tostring(L, -1);
  if (!df)
    pack_keep(L, ps, "Dockerfile");
  if (!df || !pack_dockerfile(L, ps, root, df))
    lua_pushnil(L);
  pack_open_archive(L, ps);
  char *argv[] = {root, NULL};
  ps->rootlen = strlen(root);
  ps->fts = fts_open(argv, FTS_PHYSICAL | FTS_NOCHDIR | FTS_COMFOLLOW, fts_by_name);
  if (!ps->fts)
    return luaL_error(L, "archive.pack: %s: %s", root, strerror(errno));
  lua_pushvalue(L, 3);
  lua_insert(L, -2);
  return 2;
}

/* ------------------------------------------------------------------------------------------ */
/* Reader                                                                                     */

typedef struct {
  struct archive *a;
  struct archive_entry *cur; /* owned by a; NULL before the first entry and after the end */
  mx_source *src;            /* anchored in the userdata's user value */
  char *buf;                 /* entry data handed to Lua */
  char *inbuf;               /* raw bytes pulled from src: libarchive reads from it while
                                copying entry data into buf, so the two must not be one */
  int eof;
  unsigned long gen; /* bumped at every entry, so an entry source knows its entry is gone */
  /* A data block of the current entry fetched by sniff() and not consumed yet: it points into
   * libarchive's buffer, valid until the next call on a. */
  const char *pend;
  size_t pend_len;
  int64_t next_off; /* offset the next archive_read_data_block should return */
  int used_data;    /* archive_read_data was called on this entry: it may hold a partial
                       block, so data_block (the zero-copy path) must not be mixed in */
  int block_mode;   /* data_block was called on this entry: archive_read_data would now pad
                       the blocks already taken with zeros, so everything goes by blocks */
} reader;

static int reader_block(reader *r, const void **p, size_t *n);

/* Up to n bytes of the current entry, by blocks once a block was taken, else through
 * archive_read_data. */
static la_ssize_t reader_take(reader *r, char *buf, size_t n) {
  if (r->block_mode && r->pend_len == 0) {
    const void *p;
    size_t k;
    int rc = reader_block(r, &p, &k);
    if (rc <= 0)
      return rc;
    r->pend = p, r->pend_len = k;
  }
  if (r->pend_len > 0) {
    size_t k = r->pend_len < n ? r->pend_len : n;
    memcpy(buf, r->pend, k);
    r->pend += k, r->pend_len -= k;
    return (la_ssize_t)k;
  }
  r->used_data = 1;
  return archive_read_data(r->a, buf, n);
}

/* The next data block of the current entry without a copy: 1 with p and n set, 0 at its end,
 * -1 on error (a sparse entry's hole included: the zero-copy path does not fill holes). */
static int reader_block(reader *r, const void **p, size_t *n) {
  if (r->pend_len > 0) {
    *p = r->pend, *n = r->pend_len;
    r->pend_len = 0;
    return 1;
  }
  la_int64_t off;
  r->block_mode = 1;
  int rc = archive_read_data_block(r->a, p, n, &off);
  if (rc == ARCHIVE_EOF)
    return 0;
  if (rc < ARCHIVE_WARN)
    return -1;
  if (off != r->next_off) {
    archive_set_error(r->a, EINVAL, "sparse entries cannot be read as a source");
    return -1;
  }
  r->next_off += (int64_t)*n;
  return 1;
}

static la_ssize_t reader_pull(struct archive *a, void *ud, const void **out) {
  reader *r = ud;
  char err[256] = "";
  ssize_t n = r->src->read(r->src->ud, r->inbuf, CHUNK, err, sizeof err);
  if (n < 0) {
    archive_set_error(a, EIO, "%s", err[0] ? err : "source read failed");
    return -1;
  }
  *out = r->inbuf;
  return n;
}

static ssize_t entry_src_read(void *ud, char *buf, size_t n, char *err, size_t errlen);

typedef struct {
  reader *r;
  unsigned long gen;
  char *pre;
  size_t prelen, prepos;
  int fast; /* the outer entry was only sniffed: its blocks can be handed over uncopied */
} entry_src;

/* An inner reader over an entry source takes the outer reader's data blocks as they are, so
 * a layer inside a saved image is not copied on its way through. */
static la_ssize_t reader_pull_entry(struct archive *a, void *ud, const void **out) {
  reader *inner = ud;
  entry_src *es = inner->src->ud;
  if (es->prepos < es->prelen) {
    *out = es->pre + es->prepos;
    size_t k = es->prelen - es->prepos;
    es->prepos = es->prelen;
    return (la_ssize_t)k;
  }
  reader *r = es->r;
  if (!r->a || r->gen != es->gen || !r->cur) {
    archive_set_error(a, EIO, "the archive entry behind this source is gone");
    return -1;
  }
  size_t n = 0;
  int rc = reader_block(r, out, &n);
  if (rc < 0) {
    const char *m = archive_error_string(r->a);
    archive_set_error(a, EIO, "%s", m ? m : "unreadable entry data");
    return -1;
  }
  return rc == 0 ? 0 : (la_ssize_t)n;
}

static reader *reader_check(lua_State *L) {
  reader *r = luaL_checkudata(L, 1, READER_MT);
  if (!r->a)
    luaL_error(L, "archive reader is closed");
  return r;
}

static void reader_release(reader *r) {
  if (r->a)
    archive_read_free(r->a);
  r->a = NULL;
  r->cur = NULL;
  if (r->src)
    mx_source_close(r->src);
  r->src = NULL;
  free(r->buf);
  r->buf = NULL;
  free(r->inbuf);
  r->inbuf = NULL;
}

static int reader_close(lua_State *L) {
  reader_release(luaL_checkudata(L, 1, READER_MT));
  return 0;
}

static int reader_raise(lua_State *L, reader *r, const char *what) {
  const char *msg = r->a ? archive_error_string(r->a) : NULL;
  lua_pushfstring(L, "archive: %s: %s", what, msg ? msg : "unreadable archive");
  return mx_raise_error(L, "Invalid", NULL, lua_tostring(L, -1));
}

/* Push a new reader over the path or source at idx (the source is taken over). */
static reader *reader_new(lua_State *L, int idx, const char *fname) {
  idx = lua_absindex(L, idx);
  reader *r = lua_newuserdatauv(L, sizeof *r, 1);
  memset(r, 0, sizeof *r);
  luaL_setmetatable(L, READER_MT);
  r->a = archive_read_new();
  r->buf = malloc(CHUNK);
  r->inbuf = malloc(CHUNK);
  if (!r->a || !r->buf || !r->inbuf)
    luaL_error(L, "%s: out of memory", fname);
  archive_read_support_filter_all(r->a);
  archive_read_support_format_tar(r->a);
  archive_read_support_format_gnutar(r->a);
  int rc;
  if (is_source(L, idx)) {
    r->src = mx_source_check(L, idx);
    if (r->src->closed)
      luaL_error(L, "%s: source is closed", fname);
    lua_pushvalue(L, idx);
    lua_setiuservalue(L, -2, 1);
    int fast = r->src->read == entry_src_read && ((entry_src *)r->src->ud)->fast;
    rc = archive_read_open(r->a, r, NULL, fast ? reader_pull_entry : reader_pull, NULL);
  } else {
    const char *path = lua_tostring(L, idx);
    if (!path)
      luaL_error(L, "%s: path or source expected", fname);
    if (access(path, R_OK) != 0) {
      lua_pushfstring(L, "%s: %s: %s", fname, path, strerror(errno));
      mx_raise_error(L, "NotFound", NULL, lua_tostring(L, -1));
    }
    rc = archive_read_open_filename(r->a, path, CHUNK);
  }
  if (rc != ARCHIVE_OK)
    reader_raise(L, r, "open");
  return r;
}

static const char *entry_type(struct archive_entry *e) {
  if (archive_entry_hardlink(e))
    return "hardlink";
  switch (archive_entry_filetype(e)) {
  case AE_IFREG:
    return "file";
  case AE_IFDIR:
    return "dir";
  case AE_IFLNK:
    return "symlink";
  case AE_IFCHR:
    return "char";
  case AE_IFBLK:
    return "block";
  case AE_IFIFO:
    return "fifo";
  case AE_IFSOCK:
    return "socket";
  }
  return "other";
}

static void set_str(lua_State *L, const char *k, const char *v) {
  if (v) {
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
  }
}

static void set_int(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

static void push_entry(lua_State *L, struct archive_entry *e) {
  lua_createtable(L, 0, 10);
  set_str(L, "path", archive_entry_pathname(e));
  set_str(L, "type", entry_type(e));
  set_int(L, "size", archive_entry_size_is_set(e) ? archive_entry_size(e) : 0);
  set_int(L, "mode", archive_entry_perm(e));
  set_str(L, "linkname",
          archive_entry_hardlink(e) ? archive_entry_hardlink(e) : archive_entry_symlink(e));
  set_int(L, "uid", archive_entry_uid(e));
  set_int(L, "gid", archive_entry_gid(e));
  set_int(L, "mtime", archive_entry_mtime(e));
  set_str(L, "uname", archive_entry_uname(e));
  set_str(L, "gname", archive_entry_gname(e));
}

/* Move to the next entry: 1, or 0 at the end; raises on a broken archive or an interrupt. */
static int reader_advance(lua_State *L, reader *r) {
  if (!r->a || r->eof)
    return 0;
  if (mx_interrupt_take())
    return mx_raise_interrupted(L);
  r->gen++;
  r->pend = NULL, r->pend_len = 0, r->next_off = 0, r->used_data = 0, r->block_mode = 0;
  int rc = archive_read_next_header(r->a, &r->cur);
  if (rc == ARCHIVE_EOF) {
    r->eof = 1;
    r->cur = NULL;
    return 0;
  }
  if (rc < ARCHIVE_WARN)
    return reader_raise(L, r, "next entry");
  return 1;
}

static int reader_next(lua_State *L) {
  reader *r = luaL_checkudata(L, lua_upvalueindex(1), READER_MT);
  if (!reader_advance(L, r))
    return 0;
  push_entry(L, r->cur);
  return 1;
}

/* r:entries() -> iterator over entry tables. */
static int reader_entries(lua_State *L) {
  reader_check(L);
  lua_pushvalue(L, 1);
  lua_pushcclosure(L, reader_next, 1);
  return 1;
}

static reader *reader_current(lua_State *L, const char *fname) {
  reader *r = reader_check(L);
  if (!r->cur)
    luaL_error(L, "%s: no current entry (call it inside the entries() loop)", fname);
  return r;
}

/* Next data chunk of the current entry: >0 bytes, 0 at its end; raises on a broken archive. */
static la_ssize_t reader_chunk(lua_State *L, reader *r) {
  la_ssize_t n = reader_take(r, r->buf, CHUNK);
  if (n < 0)
    reader_raise(L, r, archive_entry_pathname(r->cur));
  return n;
}

/* r:read() -> next chunk of the current entry's data, or nil at its end. */
static int reader_read(lua_State *L) {
  reader *r = reader_current(L, "reader:read");
  la_ssize_t n = reader_chunk(L, r);
  if (n == 0)
    return 0;
  lua_pushlstring(L, r->buf, (size_t)n);
  return 1;
}

/* r:read_all([max]) -> the rest of the current entry's data (raises Invalid above max). */
static int reader_read_all(lua_State *L) {
  reader *r = reader_current(L, "reader:read_all");
  lua_Integer max = luaL_optinteger(L, 2, DEFAULT_READ_ALL_MAX);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  lua_Integer total = 0;
  la_ssize_t n;
  while ((n = reader_chunk(L, r)) > 0) {
    total += n;
    if (total > max) {
      lua_pushfstring(L, "archive: %s: larger than %I bytes", archive_entry_pathname(r->cur), max);
      return mx_raise_error(L, "Invalid", NULL, lua_tostring(L, -1));
    }
    luaL_addlstring(&b, r->buf, (size_t)n);
  }
  luaL_pushresult(&b);
  return 1;
}

/* r:digest([alg]) -> "alg:hex", size of the rest of the current entry's data. */
static int reader_digest(lua_State *L) {
  reader *r = reader_current(L, "reader:digest");
  const char *alg = luaL_optstring(L, 2, "sha256");
  mx_digest d = {0};
  if (digest_begin(&d, alg) != 0) {
    EVP_MD_CTX_free(d.ctx);
    return luaL_error(L, "reader:digest: unknown algorithm %s", alg);
  }
  lua_Integer size = 0;
  la_ssize_t n;
  while ((n = reader_take(r, r->buf, CHUNK)) > 0) {
    EVP_DigestUpdate(d.ctx, r->buf, (size_t)n);
    size += n;
  }
  char hex[200];
  digest_end(&d, hex, sizeof hex);
  if (n < 0)
    return reader_raise(L, r, archive_entry_pathname(r->cur));
  lua_pushstring(L, hex);
  lua_pushinteger(L, size);
  return 2;
}

/* Copy the current entry's data to fd, hashing it when d is set; -1 with a message pushed. */
static int reader_pump(lua_State *L, reader *r, int fd, mx_digest *d, lua_Integer *size) {
  la_ssize_t n;
  while ((n = reader_take(r, r->buf, CHUNK)) > 0) {
    if (d->ctx)
      EVP_DigestUpdate(d->ctx, r->buf, (size_t)n);
    for (la_ssize_t off = 0; off < n;) {
      ssize_t w = write(fd, r->buf + off, (size_t)(n - off));
      if (w < 0 && errno == EINTR)
        continue;
      if (w < 0) {
        lua_pushfstring(L, "write: %s", strerror(errno));
        return -1;
      }
      off += w;
    }
    *size += n;
  }
  if (n < 0) {
    lua_pushfstring(L, "%s", archive_error_string(r->a));
    return -1;
  }
  return 0;
}

/* r:copy_to(path, {digest=?, mode=?}) -> "sha256:hex", size. Atomic: a temp file renamed. */
static int reader_copy_to(lua_State *L) {
  reader *r = reader_current(L, "reader:copy_to");
  const char *path = luaL_checkstring(L, 2);
  const char *want = NULL;
  lua_Integer mode = 0644;
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, "digest");
    want = lua_tostring(L, -1);
    lua_getfield(L, 3, "mode");
    mode = luaL_optinteger(L, -1, 0644);
    lua_pop(L, 1);
  }
  char alg[16] = "sha256";
  const char *colon = want ? strchr(want, ':') : NULL;
  if (colon && (size_t)(colon - want) < sizeof alg)
    snprintf(alg, sizeof alg, "%.*s", (int)(colon - want), want);
  mx_digest d = {0};
  if (digest_begin(&d, alg) != 0) {
    EVP_MD_CTX_free(d.ctx);
    return luaL_error(L, "reader:copy_to: unknown digest algorithm %s", alg);
  }
  char tmp[PATH_MAX + 16];
  int fd = -1;
  if (snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) < (int)sizeof tmp)
    fd = mkstemp(tmp);
  if (fd < 0) {
    EVP_MD_CTX_free(d.ctx);
    lua_pushfstring(L, "archive: %s: %s", path, strerror(errno));
    return mx_raise_error(L, "Engine", NULL, lua_tostring(L, -1));
  }
  lua_Integer size = 0;
  const char *code = reader_pump(L, r, fd, &d, &size) != 0 ? "Engine" : NULL;
  char got[200];
  digest_end(&d, got, sizeof got);
  if (!code && fchmod(fd, (mode_t)mode) != 0)
    code = "Engine", lua_pushstring(L, strerror(errno));
  if (close(fd) != 0 && !code)
    code = "Engine", lua_pushstring(L, strerror(errno));
  if (!code && want && strcmp(want, got) != 0)
    code = "DigestMismatch", lua_pushfstring(L, "expected %s, got %s", want, got);
  if (!code && rename(tmp, path) != 0)
    code = "Engine", lua_pushstring(L, strerror(errno));
  if (code) {
    unlink(tmp);
    lua_pushfstring(L, "archive: %s: %s", path, lua_tostring(L, -1));
    return mx_raise_error(L, code, NULL, lua_tostring(L, -1));
  }
  lua_pushstring(L, got);
  lua_pushinteger(L, size);
  return 2;
}

/* An entry's data as a source, so a tar inside a tar (layers in a saved image) is read in the
 * same pass. The prefix lets a caller that already looked at the first chunk put it back. */

static ssize_t entry_src_read(void *ud, char *buf, size_t n, char *err, size_t errlen) {
  entry_src *es = ud;
  if (es->prepos < es->prelen) {
    size_t k = es->prelen - es->prepos < n ? es->prelen - es->prepos : n;
    memcpy(buf, es->pre + es->prepos, k);
    es->prepos += k;
    return (ssize_t)k;
  }
  if (!es->r->a || es->r->gen != es->gen || !es->r->cur) {
    snprintf(err, errlen, "the archive entry behind this source is gone");
    return -1;
  }
  la_ssize_t got = reader_take(es->r, buf, n);
  if (got < 0) {
    const char *m = archive_error_string(es->r->a);
    snprintf(err, errlen, "%s", m ? m : "unreadable entry data");
    return -1;
  }
  return (ssize_t)got;
}

static void entry_src_close(void *ud) {
  entry_src *es = ud;
  free(es->pre);
  free(es);
}

/* r:source([prefix]) -> source of prefix .. the rest of the current entry's data; valid while
 * the reader stays on that entry (it keeps the reader alive). */
static int reader_source(lua_State *L) {
  reader *r = reader_current(L, "reader:source");
  size_t plen = 0;
  const char *pre = luaL_optlstring(L, 2, "", &plen);
  mx_source *s = mx_source_new(L); /* closed until filled in, so errors below leak nothing */
  entry_src *es = calloc(1, sizeof *es);
  if (!es || (plen && !(es->pre = malloc(plen)))) {
    free(es);
    return luaL_error(L, "reader:source: out of memory");
  }
  if (plen)
    memcpy(es->pre, pre, plen);
  es->prelen = plen, es->r = r, es->gen = r->gen, es->fast = !r->used_data;
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  s->ud = es, s->read = entry_src_read, s->close = entry_src_close;
  s->size = -1;
  s->closed = 0;
  return 1;
}

/* r:sniff([n]) -> the first n (default 512) bytes of the current entry's data, which stay
 * unread: read(), read_all(), source() and the rest still see them. */
static int reader_sniff(lua_State *L) {
  reader *r = reader_current(L, "reader:sniff");
  lua_Integer want = luaL_optinteger(L, 2, 512);
  if (r->used_data || (r->block_mode && r->pend_len == 0))
    return luaL_error(L, "reader:sniff: the entry's data is already being read");
  if (!r->block_mode) {
    const void *p;
    size_t n;
    int rc = reader_block(r, &p, &n);
    if (rc < 0)
      return reader_raise(L, r, archive_entry_pathname(r->cur));
    r->pend = rc ? p : NULL, r->pend_len = rc ? n : 0;
  }
  lua_pushlstring(L, r->pend ? r->pend : "",
                  r->pend_len < (size_t)want ? r->pend_len : (size_t)want);
  return 1;
}

/* r:bytes() -> bytes read so far after decompression, and before it. */
static int reader_bytes(lua_State *L) {
  reader *r = reader_check(L);
  lua_pushinteger(L, (lua_Integer)archive_filter_bytes(r->a, 0));
  lua_pushinteger(L, (lua_Integer)archive_filter_bytes(r->a, -1));
  return 2;
}

/* ------------------------------------------------------------------------------------------ */
/* Path lists: the entries of a layer tar, kept compactly for myrmex.image. An image of 100k   */
/* files would cost several Lua tables per path (~150 bytes each) if listed through entries(); */
/* here a path costs its bytes plus one 24-byte record, and no garbage is made while reading.  */

#define PATHS_MT "myrmex.archive.paths"
#define KEEP_MAX 8

typedef struct {
  int64_t size;  /* data size of a regular file, else 0 */
  size_t off;    /* of the NUL-terminated path in names */
  uint16_t mode; /* permission bits */
  char kind;     /* f d l h o, w (whiteout of path), q (opaque marker of directory path) */
} path_rec;

typedef struct {
  char *names;
  size_t names_len, names_cap;
  path_rec *v;
  size_t n, cap;
} pathlist;

static int paths_gc(lua_State *L) {
  pathlist *pl = luaL_checkudata(L, 1, PATHS_MT);
  free(pl->names);
  free(pl->v);
  pl->names = NULL, pl->v = NULL, pl->n = 0;
  return 0;
}

static int paths_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)((pathlist *)luaL_checkudata(L, 1, PATHS_MT))->n);
  return 1;
}

/* Room for one more record and a path of len bytes (and its NUL); 0 when memory ran out. */
static int paths_reserve(pathlist *pl, size_t len) {
  if (pl->n == pl->cap) {
    size_t cap = pl->cap ? pl->cap * 2 : 256;
    path_rec *v = realloc(pl->v, cap * sizeof *v);
    if (!v)
      return 0;
    pl->v = v, pl->cap = cap;
  }
  if (pl->names_len + len + 1 > pl->names_cap) {
    size_t cap = pl->names_cap ? pl->names_cap : 4096;
    while (cap < pl->names_len + len + 1)
      cap *= 2;
    char *names = realloc(pl->names, cap);
    if (!names)
      return 0;
    pl->names = names, pl->names_cap = cap;
  }
  return 1;
}

/* A tar path as a key, as myrmex.image.scan.norm: no leading "./" or "/", no trailing "/". */
static const char *paths_norm(const char *p, size_t *len) {
  size_t n = strlen(p);
  if (p[0] == '.' && p[1] == '/')
    p += 2, n -= 2;
  while (*p == '/')
    p++, n--;
  while (n > 0 && p[n - 1] == '/')
    n--;
  if (n == 1 && p[0] == '.')
    n = 0;
  *len = n;
  return p;
}

/* Docker's layer conventions, applied in place to the path at p (length *len): ".wh.<name>"
 * removes name, ".wh..wh..opq" makes its directory opaque, other ".wh..wh." names are AUFS
 * bookkeeping (0: not part of the file system). Returns the entry's kind. */
static char paths_whiteout(char *p, size_t *len, char kind) {
  if (!strstr(p, ".wh."))
    return kind;
  char *slash = strrchr(p, '/');
  char *base = slash ? slash + 1 : p;
  if (strcmp(base, ".wh..wh..opq") == 0) {
    *len = slash ? (size_t)(slash - p) : 0;
    p[*len] = '\0';
    return 'q';
  }
  if (strncmp(base, ".wh..wh.", 8) == 0)
    return 0;
  if (strncmp(base, ".wh.", 4) == 0) {
    memmove(base, base + 4, strlen(base + 4) + 1);
    *len -= 4;
    return 'w';
  }
  return kind;
}

/* entry_type's kinds as one letter: f d l h, o for the rest. */
static char paths_kind(struct archive_entry *e) {
  static const char *const names[] = {"file", "dir", "symlink", "hardlink"};
  const char *t = entry_type(e);
  for (int i = 0; i < 4; i++)
    if (strcmp(t, names[i]) == 0)
      return "fdlh"[i];
  return 'o';
}

/* Push the current entry's data (it is known to be at most max bytes). */
static void paths_push_data(lua_State *L, reader *r) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  la_ssize_t n;
  while ((n = reader_chunk(L, r)) > 0)
    luaL_addlstring(&b, r->buf, (size_t)n);
  luaL_pushresult(&b);
}

typedef struct {
  const char *keep[KEEP_MAX];
  int nkeep;
  lua_Integer keep_max, every;
  int tick, kept; /* stack slots: the tick function (0: none), the last kept content */
} paths_opts;

/* An optional positive integer option k of the table at t. */
static lua_Integer paths_opt_count(lua_State *L, int t, const char *k, lua_Integer dflt) {
  int isint = 0;
  int type = lua_getfield(L, t, k);
  lua_Integer v = lua_tointegerx(L, -1, &isint);
  lua_pop(L, 1);
  if (type == LUA_TNIL)
    return dflt;
  if (!isint || v <= 0)
    luaL_error(L, "reader:paths: %s must be a positive integer", k);
  return v;
}

static void paths_read_opts(lua_State *L, int t, paths_opts *o) {
  memset(o, 0, sizeof *o);
  o->keep_max = 65536, o->every = 256;
  if (lua_isnoneornil(L, t))
    return;
  if (!lua_istable(L, t))
    luaL_error(L, "reader:paths: options table expected, got %s", luaL_typename(L, t));
  int type = lua_getfield(L, t, "tick");
  if (type != LUA_TNIL && type != LUA_TFUNCTION)
    luaL_error(L, "reader:paths: tick must be a function");
  if (type == LUA_TFUNCTION)
    o->tick = lua_gettop(L);
  else
    lua_pop(L, 1);
  o->keep_max = paths_opt_count(L, t, "keep_max", o->keep_max);
  o->every = paths_opt_count(L, t, "every", o->every);
  type = lua_getfield(L, t, "keep");
  if (type != LUA_TNIL && type != LUA_TTABLE)
    luaL_error(L, "reader:paths: keep must be a list of paths");
  if (type == LUA_TTABLE) {
    for (int i = 1; i <= KEEP_MAX; i++) {
      int is_str = lua_rawgeti(L, -1, i) == LUA_TSTRING;
      if (is_str)
        o->keep[o->nkeep++] = lua_tostring(L, -1); /* anchored by the options table */
      lua_pop(L, 1);
      if (!is_str)
        break;
    }
  }
  lua_pop(L, 1);
}

static int paths_keep(const paths_opts *o, const char *p) {
  for (int i = 0; i < o->nkeep; i++)
    if (strcmp(o->keep[i], p) == 0)
      return 1;
  return 0;
}

/* Append the current entry; returns 0 when it is not part of the file system. */
static int paths_add(lua_State *L, pathlist *pl, struct archive_entry *e) {
  const char *raw = archive_entry_pathname(e);
  if (!raw)
    return mx_raise_error(L, "Invalid", "image", "image tar: an entry has no path");
  size_t len;
  const char *p = paths_norm(raw, &len);
  if (!paths_reserve(pl, len))
    return luaL_error(L, "reader:paths: out of memory");
  char *dst = pl->names + pl->names_len;
  memcpy(dst, p, len);
  dst[len] = '\0';
  char kind = paths_whiteout(dst, &len, paths_kind(e));
  if (!kind)
    return 0;
  path_rec *rec = &pl->v[pl->n++];
  rec->off = pl->names_len, rec->kind = kind, rec->mode = (uint16_t)archive_entry_perm(e);
  rec->size = kind == 'f' && archive_entry_size_is_set(e) ? archive_entry_size(e) : 0;
  pl->names_len += len + 1;
  return 1;
}

/* r:paths{tick=, every=, keep=, keep_max=} -> list, kept: the rest of the archive as a path
 * list (whiteouts resolved, paths normalized), and the data of the last regular file whose
 * path is in keep (at most 8 paths) and whose size is below keep_max. tick() is called every
 * `every` listed entries, so a long layer can show progress. */
static int reader_paths(lua_State *L) {
  reader *r = reader_check(L);
  paths_opts o;
  paths_read_opts(L, 2, &o);
  lua_pushnil(L);
  o.kept = lua_gettop(L);
  pathlist *pl = lua_newuserdatauv(L, sizeof *pl, 0);
  memset(pl, 0, sizeof *pl);
  luaL_setmetatable(L, PATHS_MT);
  while (reader_advance(L, r)) {
    if (!paths_add(L, pl, r->cur))
      continue;
    path_rec *rec = &pl->v[pl->n - 1];
    if (o.nkeep && rec->kind == 'f' && rec->size < o.keep_max &&
        paths_keep(&o, pl->names + rec->off)) {
      paths_push_data(L, r);
      lua_replace(L, o.kept);
    }
    if (o.tick && pl->n % (size_t)o.every == 0) {
      lua_pushvalue(L, o.tick);
      lua_call(L, 0, 0);
    }
  }
  lua_pushvalue(L, o.kept);
  return 2;
}

/* list:arrays() -> path, size, kind, mode, parent: five Lua arrays (kinds as one-letter
 * strings; parent is the path up to its last "/", "" at the top), so a caller walking the
 * tree needs no string matching of its own. */
static int paths_arrays(lua_State *L) {
  pathlist *pl = luaL_checkudata(L, 1, PATHS_MT);
  int n = pl->n > INT_MAX ? INT_MAX : (int)pl->n;
  for (int t = 0; t < 5; t++)
    lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    const path_rec *rec = &pl->v[i];
    const char *p = pl->names + rec->off;
    lua_pushstring(L, p);
    lua_rawseti(L, -6, i + 1);
    lua_pushinteger(L, rec->size);
    lua_rawseti(L, -5, i + 1);
    lua_pushlstring(L, &rec->kind, 1);
    lua_rawseti(L, -4, i + 1);
    lua_pushinteger(L, rec->mode);
    lua_rawseti(L, -3, i + 1);
    const char *slash = strrchr(p, '/');
    lua_pushlstring(L, p, slash ? (size_t)(slash - p) : 0);
    lua_rawseti(L, -2, i + 1);
  }
  return 5;
}

/* open(path | source) -> reader */
static int ar_open(lua_State *L) {
  luaL_checkany(L, 1);
  reader_new(L, 1, "archive.open");
  return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Writer                                                                                     */

typedef struct {
  struct archive *a;
  int fd;     /* the output (a temp file until close renames it), or -1 */
  char *path; /* final name; NULL for a spool */
  char *tmp;  /* temp name while writing to a path */
  int done;   /* archive finished, fd still readable for a spool */
} writer;

static writer *writer_check(lua_State *L, const char *fname) {
  writer *w = luaL_checkudata(L, 1, WRITER_MT);
  if (!w->a)
    luaL_error(L, "%s: writer is closed", fname);
  return w;
}

static void writer_abort(writer *w) {
  if (w->a)
    archive_write_free(w->a);
  w->a = NULL;
  if (w->fd >= 0)
    close(w->fd);
  w->fd = -1;
  if (w->tmp)
    unlink(w->tmp);
  free(w->tmp);
  free(w->path);
  w->tmp = w->path = NULL;
}

static int writer_gc(lua_State *L) {
  writer *w = luaL_checkudata(L, 1, WRITER_MT);
  writer_abort(w);
  return 0;
}

static int writer_raise(lua_State *L, writer *w, const char *what) {
  lua_pushfstring(L, "archive writer: %s: %s", what,
                  w->a && archive_error_string(w->a) ? archive_error_string(w->a)
                                                     : strerror(errno));
  return mx_raise_error(L, "Engine", NULL, lua_tostring(L, -1));
}

static int entry_filetype(lua_State *L, const char *type) {
  static const char *const names[] = {"file", "dir", "symlink", "hardlink", NULL};
  static const int types[] = {AE_IFREG, AE_IFDIR, AE_IFLNK, AE_IFREG};
  for (int i = 0; names[i]; i++)
    if (strcmp(type, names[i]) == 0)
      return types[i];
  return luaL_error(L, "writer:add: type must be file, dir, symlink or hardlink, not %s", type);
}

static lua_Integer opt_int_field(lua_State *L, int t, const char *k, lua_Integer dflt) {
  lua_getfield(L, t, k);
  lua_Integer v = lua_isnil(L, -1) ? dflt : luaL_checkinteger(L, -1);
  lua_pop(L, 1);
  return v;
}

/* Write n bytes pulled from fd (or a source) as the current entry's data. */
static int writer_pump_fd(writer *w, int fd, int64_t n, char *buf) {
  while (n > 0) {
    ssize_t got = read(fd, buf, n < (int64_t)CHUNK ? (size_t)n : CHUNK);
    if (got <= 0)
      return -1;
    if (archive_write_data(w->a, buf, (size_t)got) < 0)
      return -1;
    n -= got;
  }
  return 0;
}

static int writer_pump_source(writer *w, mx_source *s, int64_t n, char *buf, char *err,
                              size_t errlen) {
  while (n > 0) {
    ssize_t got = s->read(s->ud, buf, n < (int64_t)CHUNK ? (size_t)n : CHUNK, err, errlen);
    if (got <= 0) {
      if (got == 0)
        snprintf(err, errlen, "source ended %lld bytes early", (long long)n);
      return -1;
    }
    if (archive_write_data(w->a, buf, (size_t)got) < 0)
      return -1;
    n -= got;
  }
  return 0;
}

/* A source of unknown length is spooled to an unlinked temp file first: tar headers carry
 * the size before the data. Returns the fd (at offset 0) and sets *size, or -1. */
static int spool_source(mx_source *s, int64_t *size, char *buf, char *err, size_t errlen) {
  FILE *f = tmpfile();
  if (!f) {
    snprintf(err, errlen, "tmpfile: %s", strerror(errno));
    return -1;
  }
  int fd = dup(fileno(f));
  fclose(f);
  *size = 0;
  ssize_t got;
  while ((got = s->read(s->ud, buf, CHUNK, err, errlen)) > 0) {
    if (write(fd, buf, (size_t)got) != got) {
      snprintf(err, errlen, "spool: %s", strerror(errno));
      close(fd);
      return -1;
    }
    *size += got;
  }
  if (got < 0 || lseek(fd, 0, SEEK_SET) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* What one writer:add needs, boxed in a userdata so that an error raised half-way (a bad
 * field, a failing source) still closes the file and frees the entry. */
typedef struct {
  struct archive_entry *e;
  const char *str; /* data given as a string, anchored by the options table */
  size_t len;
  int fd;         /* data from a file or a spool, or -1 */
  mx_source *src; /* data from a source of known size */
  int64_t size;
  char buf[CHUNK];
} add_box;

static int add_box_gc(lua_State *L) {
  add_box *ab = lua_touserdata(L, 1);
  if (ab->fd >= 0)
    close(ab->fd);
  ab->fd = -1;
  archive_entry_free(ab->e);
  ab->e = NULL;
  return 0;
}

static add_box *add_box_new(lua_State *L) {
  add_box *ab = lua_newuserdatauv(L, sizeof *ab, 0);
  ab->e = NULL, ab->str = NULL, ab->src = NULL, ab->fd = -1, ab->size = 0, ab->len = 0;
  luaL_setmetatable(L, ADD_MT);
  return ab;
}

/* Resolve opts.data (at stack index di) into the box. */
static void writer_data(lua_State *L, int di, lua_Integer given, add_box *ab) {
  char err[256] = "";
  if (lua_type(L, di) == LUA_TSTRING) {
    ab->str = lua_tolstring(L, di, &ab->len);
    ab->size = (int64_t)ab->len;
  } else if (lua_istable(L, di)) {
    lua_getfield(L, di, "file");
    const char *file = lua_tostring(L, -1);
    struct stat st = {0};
    if (!file)
      luaL_error(L, "writer:add: data table needs file=PATH");
    if ((ab->fd = open(file, O_RDONLY | O_CLOEXEC)) < 0 || fstat(ab->fd, &st) != 0) {
      lua_pushfstring(L, "archive: %s: %s", file, strerror(errno));
      mx_raise_error(L, "NotFound", NULL, lua_tostring(L, -1));
      return; /* not reached */
    }
    ab->size = st.st_size;
    lua_pop(L, 1);
  } else if (is_source(L, di)) {
    ab->src = mx_source_check(L, di);
    ab->size = given >= 0 ? given : ab->src->size;
    if (ab->size < 0) {
      if ((ab->fd = spool_source(ab->src, &ab->size, ab->buf, err, sizeof err)) < 0)
        mx_raise_error(L, "Engine", NULL, err);
      ab->src = NULL;
    }
  } else if (!lua_isnil(L, di)) {
    luaL_error(L, "writer:add: data must be a string, {file=PATH} or a source");
  }
}

/* Build the entry from the options table t; all checks run before anything is allocated. */
static struct archive_entry *writer_entry(lua_State *L, int t, int64_t size) {
  lua_getfield(L, t, "path");
  const char *path = lua_tostring(L, -1);
  if (!path)
    luaL_error(L, "writer:add: path must be a string");
  lua_getfield(L, t, "type");
  const char *type = luaL_optstring(L, -1, "file");
  int ft = entry_filetype(L, type);
  int hard = strcmp(type, "hardlink") == 0;
  lua_getfield(L, t, "linkname");
  const char *link = lua_tostring(L, -1);
  if ((ft == AE_IFLNK || hard) && !link)
    luaL_error(L, "writer:add: a %s needs linkname", type);
  lua_Integer mode = opt_int_field(L, t, "mode", ft == AE_IFREG ? 0644 : 0755);
  lua_Integer uid = opt_int_field(L, t, "uid", 0), gid = opt_int_field(L, t, "gid", 0);
  lua_Integer mtime = opt_int_field(L, t, "mtime", 0);
  struct archive_entry *e = archive_entry_new();
  if (!e)
    luaL_error(L, "writer:add: out of memory");
  archive_entry_set_pathname(e, path);
  archive_entry_set_filetype(e, (unsigned)ft);
  archive_entry_set_perm(e, (mode_t)mode);
  archive_entry_set_uid(e, uid);
  archive_entry_set_gid(e, gid);
  archive_entry_set_mtime(e, (time_t)mtime, 0);
  if (ft == AE_IFLNK)
    archive_entry_set_symlink(e, link);
  else if (hard)
    archive_entry_set_hardlink(e, link);
  archive_entry_set_size(e, ft == AE_IFREG && !hard ? size : 0);
  lua_pop(L, 3);
  return e;
}

/* w:add{path=, data=?, mode=?, type=?, linkname=?, size=?, mtime=?, uid=?, gid=?} */
static int writer_add(lua_State *L) {
  writer *w = writer_check(L, "writer:add");
  luaL_checktype(L, 2, LUA_TTABLE);
  if (w->done)
    return luaL_error(L, "writer:add: writer already finished (source() was called)");
  lua_Integer given = opt_int_field(L, 2, "size", -1);
  lua_getfield(L, 2, "data"); /* index 3: anchors the string or source */
  add_box *ab = add_box_new(L);
  writer_data(L, 3, given, ab);
  ab->e = writer_entry(L, 2, ab->size);
  int64_t size = archive_entry_size(ab->e);
  int ok = archive_write_header(w->a, ab->e) >= ARCHIVE_WARN;
  char err[256] = "";
  if (ok && size > 0) {
    if (ab->str)
      ok = archive_write_data(w->a, ab->str, ab->len) >= 0;
    else if (ab->fd >= 0)
      ok = writer_pump_fd(w, ab->fd, size, ab->buf) == 0;
    else if (ab->src)
      ok = writer_pump_source(w, ab->src, size, ab->buf, err, sizeof err) == 0;
  }
  if (!ok)
    return err[0] ? mx_raise_error(L, "Engine", NULL, err) : writer_raise(L, w, "add");
  /* Freed now rather than by __gc: a finalizer called while memory is exhausted can fail
   * and is then skipped, so __gc is kept for the error path only. */
  archive_entry_free(ab->e);
  ab->e = NULL;
  return 0;
}

/* Finish the archive; for a path, move the temp file into place. */
static int writer_finish(lua_State *L, writer *w) {
  if (w->done)
    return 0;
  if (archive_write_close(w->a) != ARCHIVE_OK)
    return writer_raise(L, w, "close");
  w->done = 1;
  if (!w->path)
    return 0;
  if (fsync(w->fd) != 0 || close(w->fd) != 0) {
    w->fd = -1;
    return writer_raise(L, w, w->path);
  }
  w->fd = -1;
  if (rename(w->tmp, w->path) != 0)
    return writer_raise(L, w, w->path);
  free(w->tmp);
  w->tmp = NULL;
  return 0;
}

/* w:close() -> bytes written. */
static int writer_close(lua_State *L) {
  writer *w = luaL_checkudata(L, 1, WRITER_MT);
  if (!w->a)
    return 0;
  writer_finish(L, w);
  lua_Integer n = archive_filter_bytes(w->a, -1);
  writer_abort(w);
  lua_pushinteger(L, n);
  return 1;
}

/* __close: finish on a normal scope exit, abandon (and remove the temp file) on an error. */
static int writer_close_meta(lua_State *L) {
  if (!lua_isnil(L, 2))
    return writer_gc(L);
  return writer_close(L);
}

typedef struct {
  int fd;
} fd_source;

static ssize_t fd_source_read(void *ud, char *buf, size_t n, char *err, size_t errlen) {
  fd_source *fs = ud;
  ssize_t got;
  while ((got = read(fs->fd, buf, n)) < 0 && errno == EINTR)
    ;
  if (got < 0)
    snprintf(err, errlen, "read: %s", strerror(errno));
  return got;
}

static void fd_source_close(void *ud) {
  fd_source *fs = ud;
  close(fs->fd);
  free(fs);
}

/* w:source() -> finishes a spooling writer and returns its tar as a source of known size. */
static int writer_source(lua_State *L) {
  writer *w = writer_check(L, "writer:source");
  if (w->path)
    return luaL_error(L, "writer:source: only for a writer opened without a path");
  writer_finish(L, w);
  mx_source *s = mx_source_new(L);
  fd_source *fs = malloc(sizeof *fs);
  if (!fs)
    return luaL_error(L, "writer:source: out of memory");
  fs->fd = -1;
  s->ud = fs, s->read = fd_source_read, s->close = fd_source_close;
  s->closed = 0;
  struct stat st;
  fs->fd = dup(w->fd);
  if (fs->fd < 0 || fstat(fs->fd, &st) != 0)
    return writer_raise(L, w, "source");
  s->size = st.st_size;
  /* A dup shares the offset: rewind once, the writer never writes again. */
  lseek(fs->fd, 0, SEEK_SET);
  return 1;
}

static void writer_set_options(lua_State *L, writer *w, int opts) {
  const char *format = "pax", *compression = "none";
  if (lua_istable(L, opts)) {
    lua_getfield(L, opts, "format");
    format = luaL_optstring(L, -1, "pax");
    lua_getfield(L, opts, "compression");
    compression = luaL_optstring(L, -1, "none");
    lua_pop(L, 2); /* both strings stay referenced by opts */
  }
  int rc = strcmp(format, "pax") == 0     ? archive_write_set_format_pax_restricted(w->a)
           : strcmp(format, "ustar") == 0 ? archive_write_set_format_ustar(w->a)
           : strcmp(format, "gnutar") == 0
               ? archive_write_set_format_gnutar(w->a)
               : luaL_error(L, "archive.writer: unknown format %s", format);
  if (strcmp(compression, "gzip") == 0)
    rc |= archive_write_add_filter_gzip(w->a);
  else if (strcmp(compression, "zstd") == 0)
    rc |= archive_write_add_filter_zstd(w->a);
  else if (strcmp(compression, "none") != 0)
    luaL_error(L, "archive.writer: unknown compression %s", compression);
  if (rc != ARCHIVE_OK)
    writer_raise(L, w, "options");
  archive_write_set_bytes_in_last_block(w->a, 1);
}

/* writer(path | nil, {format="pax"|"ustar"|"gnutar", compression="gzip"|"zstd"|nil}) */
static int ar_writer(lua_State *L) {
  const char *path = luaL_optstring(L, 1, NULL);
  writer *w = lua_newuserdatauv(L, sizeof *w, 0);
  memset(w, 0, sizeof *w);
  w->fd = -1;
  luaL_setmetatable(L, WRITER_MT);
  if (!(w->a = archive_write_new()))
    return luaL_error(L, "archive.writer: out of memory");
  writer_set_options(L, w, 2);
  if (path) {
    w->path = strdup(path);
    lua_pushfstring(L, "%s.tmp.XXXXXX", path);
    w->tmp = strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
    if (!w->path || !w->tmp)
      return luaL_error(L, "archive.writer: out of memory");
    w->fd = mkstemp(w->tmp);
    if (w->fd < 0) {
      free(w->tmp);
      w->tmp = NULL;
    } else {
      fchmod(w->fd, 0644);
    }
  } else {
    FILE *f = tmpfile();
    w->fd = f ? dup(fileno(f)) : -1;
    if (f)
      fclose(f);
  }
  if (w->fd < 0)
    return writer_raise(L, w, path ? path : "temp file");
  if (archive_write_open_fd(w->a, w->fd) != ARCHIVE_OK)
    return writer_raise(L, w, "open");
  return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* extract                                                                                    */

/*
 * True when a ".." in p comes after a name ("a/../b"). Lexical cleaning folds such a pair, but
 * the kernel does not when the name is a symlink (or becomes one later in the archive): with
 * u -> ".", "u/.." is the parent of the destination, not the destination. Leading ".." only
 * climb real directories (entries are never written through symlinks), so they are checked
 * lexically; a ".." after a name is refused.
 */
static int dotdot_after_name(const char *p) {
  int seen_name = 0;
  while (*p) {
    while (*p == '/')
      p++;
    size_t n = strcspn(p, "/");
    if (n == 2 && p[0] == '.' && p[1] == '.') {
      if (seen_name)
        return 1;
    } else if (n > 0 && !(n == 1 && p[0] == '.')) {
      seen_name = 1;
    }
    p += n;
  }
  return 0;
}

/* True when rel (relative, already checked) joined with a link target stays inside. */
static int link_stays_inside(const char *rel, const char *target) {
  if (target[0] == '/' || dotdot_after_name(target))
    return 0;
  char buf[PATH_MAX * 2];
  const char *slash = strrchr(rel, '/');
  int dl = slash ? (int)(slash - rel) : 0;
  snprintf(buf, sizeof buf, "%.*s%s%s", dl, rel, dl ? "/" : "", target);
  clean_path(buf);
  return !(strcmp(buf, "..") == 0 || strncmp(buf, "../", 3) == 0);
}

static int path_is_safe(const char *p) {
  if (p[0] == '/')
    return 0;
  char buf[PATH_MAX];
  snprintf(buf, sizeof buf, "%s", p);
  clean_path(buf);
  return !(strcmp(buf, "..") == 0 || strncmp(buf, "../", 3) == 0);
}

/* Drop the first n components; NULL when nothing is left. */
static const char *strip_components(const char *p, int n) {
  while (n-- > 0) {
    while (*p == '/')
      p++;
    p = strchr(p, '/');
    if (!p)
      return NULL;
    p++;
  }
  return *p ? p : NULL;
}

typedef struct {
  struct archive *disk;
  char dest[PATH_MAX];
  int strip;
  lua_Integer count;
} extract_ctx;

/* Rewrite one entry's names below dest; 1 = write it, 0 = skip it, -1 = refuse (msg pushed). */
static int extract_place(lua_State *L, extract_ctx *x, struct archive_entry *e) {
  const char *orig = archive_entry_pathname(e);
  const char *rel = strip_components(orig, x->strip);
  if (!rel)
    return 0;
  const char *hard = archive_entry_hardlink(e);
  const char *hrel = hard ? strip_components(hard, x->strip) : NULL;
  const char *sym = archive_entry_symlink(e);
  if (!path_is_safe(rel) || (hard && (!hrel || !path_is_safe(hrel) || dotdot_after_name(hrel))) ||
      (sym && !link_stays_inside(rel, sym))) {
    lua_pushfstring(L, "archive.extract: refusing %s: it would land outside %s", orig, x->dest);
    return -1;
  }
  /* Owners are not restored, so a set-id bit would make the file set-id to whoever extracts
   * (root, for a daemon-side copy): an image layer must not be able to plant that. */
  archive_entry_set_perm(e, archive_entry_perm(e) & ~(mode_t)(S_ISUID | S_ISGID));
  char full[PATH_MAX * 2];
  snprintf(full, sizeof full, "%s/%s", x->dest, rel);
  if (hrel) {
    char hfull[PATH_MAX * 2];
    snprintf(hfull, sizeof hfull, "%s/%s", x->dest, hrel);
    archive_entry_copy_hardlink(e, hfull);
  }
  archive_entry_copy_pathname(e, full);
  return 1;
}

static int extract_entry(lua_State *L, extract_ctx *x, reader *r) {
  int ok = extract_place(L, x, r->cur);
  if (ok <= 0)
    return ok;
  if (archive_write_header(x->disk, r->cur) < ARCHIVE_WARN) {
    lua_pushfstring(L, "archive.extract: %s", archive_error_string(x->disk));
    return -1;
  }
  const void *blk;
  size_t len;
  la_int64_t off;
  int rc;
  while ((rc = archive_read_data_block(r->a, &blk, &len, &off)) == ARCHIVE_OK) {
    if (archive_write_data_block(x->disk, blk, len, off) < ARCHIVE_WARN) {
      lua_pushfstring(L, "archive.extract: %s", archive_error_string(x->disk));
      return -1;
    }
  }
  if (rc != ARCHIVE_EOF || archive_write_finish_entry(x->disk) < ARCHIVE_WARN) {
    lua_pushfstring(L, "archive.extract: %s",
                    archive_error_string(rc != ARCHIVE_EOF ? r->a : x->disk));
    return -1;
  }
  x->count++;
  return 1;
}

static int extract_gc(lua_State *L) {
  extract_ctx *x = lua_touserdata(L, 1);
  if (x->disk)
    archive_write_free(x->disk);
  x->disk = NULL;
  return 0;
}

/* extract(path | source, dest, {strip=?}) -> number of entries written */
static int ar_extract(lua_State *L) {
  luaL_checkany(L, 1);
  const char *dest = luaL_checkstring(L, 2);
  int strip = lua_istable(L, 3) ? (int)opt_int_field(L, 3, "strip", 0) : 0;
  lua_settop(L, 2);
  extract_ctx *x = lua_newuserdatauv(L, sizeof *x, 0);
  memset(x, 0, sizeof *x);
  x->strip = strip;
  lua_newtable(L);
  lua_pushcfunction(L, extract_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  if (mkdir(dest, 0755) != 0 && errno != EEXIST)
    return luaL_error(L, "archive.extract: %s: %s", dest, strerror(errno));
  if (!realpath(dest, x->dest))
    return luaL_error(L, "archive.extract: %s: %s", dest, strerror(errno));
  reader *r = reader_new(L, 1, "archive.extract");
  x->disk = archive_write_disk_new();
  archive_write_disk_set_options(x->disk, ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM |
                                              ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                                              ARCHIVE_EXTRACT_SECURE_NODOTDOT);
  int rc;
  while ((rc = archive_read_next_header(r->a, &r->cur)) != ARCHIVE_EOF) {
    if (rc < ARCHIVE_WARN)
      return reader_raise(L, r, "extract");
    if (extract_entry(L, x, r) < 0)
      return mx_raise_error(L, "Invalid", NULL, lua_tostring(L, -1));
    if (mx_interrupt_take())
      return mx_raise_interrupted(L);
  }
  r->cur = NULL;
  if (archive_write_close(x->disk) != ARCHIVE_OK)
    return luaL_error(L, "archive.extract: %s", archive_error_string(x->disk));
  reader_release(r);
  lua_pushinteger(L, x->count);
  return 1;
}

/* ------------------------------------------------------------------------------------------ */

static void new_class(lua_State *L, const char *name, const luaL_Reg *meta,
                      const luaL_Reg *methods) {
  luaL_newmetatable(L, name);
  luaL_setfuncs(L, meta, 0);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

/* ------------------------------------------------------------------------------------------ */
/* sync_walk: the sender side of BuildKit's file sync (FileSync/DiffCopy in the build session). */
/* The engine asks for a directory with include/exclude patterns; the sender walks it and      */
/* sends one STAT packet per entry in walk order (names sorted, parents first: the order the   */
/* receiver checks), then the data of each file the receiver requests by its STAT's ordinal.   */
/* The receiver compares the stats with its copy from the last build and requests only what    */
/* changed, which is what makes a rebuild after a one-file change send one file.              */

#define SYNC_MT "myrmex.archive.sync"
#define SYNC_CHUNK ((size_t)32768)

typedef struct {
  FTS *fts;
  mx_matcher inc, exc;
  int has_inc, has_exc;
  size_t rootlen;
  char **files; /* by STAT ordinal: the relative path of a regular file, else NULL */
  size_t nfiles, capfiles;
  /* Directories walked into but not sent yet (include patterns: sent before the first entry
   * under them that is included), as the chain from the top. */
  struct pend {
    char *rel;
    struct stat st;
    short level;
  } pend[64];
  int npend;
  int done;
  char *root;
  /* the file being sent */
  int fd;
  uint32_t fd_id;
  char *chunk;
} sync_walker;

/* Go's os.FileMode for a stat: permission bits plus the type and special bits Go defines. */
static uint32_t go_mode(mode_t m) {
  uint32_t g = m & 0777;
  if (S_ISDIR(m))
    g |= 1u << 31;
  else if (S_ISLNK(m))
    g |= 1u << 27;
  else if (S_ISFIFO(m))
    g |= 1u << 25;
  else if (S_ISSOCK(m))
    g |= 1u << 24;
  else if (S_ISCHR(m))
    g |= 1u << 26 | 1u << 21;
  else if (S_ISBLK(m))
    g |= 1u << 26;
  if (m & S_ISUID)
    g |= 1u << 23;
  if (m & S_ISGID)
    g |= 1u << 22;
  if (m & S_ISVTX)
    g |= 1u << 20;
  return g;
}

static void push_packet(lua_State *L, const Myrmex__Fsutil__Packet *p) {
  size_t len = myrmex__fsutil__packet__get_packed_size(p);
  uint8_t *out = lua_newuserdatauv(L, len ? len : 1, 0);
  myrmex__fsutil__packet__pack(p, out);
  lua_pushlstring(L, (const char *)out, len);
  lua_remove(L, -2);
}

static sync_walker *check_sync(lua_State *L) {
  return luaL_checkudata(L, 1, SYNC_MT);
}

static sync_walker *check_open_sync(lua_State *L) {
  sync_walker *w = check_sync(L);
  if (!w->root)
    luaL_error(L, "archive.sync_walk: the walker is closed");
  return w;
}

static int sync_close(lua_State *L) {
  sync_walker *w = check_sync(L);
  if (w->fts) {
    fts_close(w->fts);
    w->fts = NULL;
  }
  if (w->fd >= 0) {
    close(w->fd);
    w->fd = -1;
  }
  for (size_t i = 0; i < w->nfiles; i++)
    free(w->files[i]);
  free(w->files);
  w->files = NULL, w->nfiles = w->capfiles = 0;
  for (int i = 0; i < w->npend; i++)
    free(w->pend[i].rel);
  w->npend = 0;
  if (w->has_inc)
    matcher_free(&w->inc);
  if (w->has_exc)
    matcher_free(&w->exc);
  w->has_inc = w->has_exc = 0;
  free(w->root);
  w->root = NULL;
  free(w->chunk);
  w->chunk = NULL;
  return 0;
}

/* Record the next STAT ordinal (a regular file's path, for its data) and push its packet. */
static void sync_emit(lua_State *L, sync_walker *w, const char *rel, const struct stat *st,
                      const char *link) {
  if (w->nfiles == w->capfiles) {
    size_t cap = w->capfiles ? w->capfiles * 2 : 256;
    char **p = realloc(w->files, cap * sizeof *p);
    if (!p) {
      luaL_error(L, "archive.sync_walk: out of memory");
      return;
    }
    w->files = p, w->capfiles = cap;
  }
  char *path = S_ISREG(st->st_mode) ? strdup(rel) : NULL;
  if (S_ISREG(st->st_mode) && !path) {
    luaL_error(L, "archive.sync_walk: out of memory");
    return;
  }
  w->files[w->nfiles] = path;
  w->nfiles++;
  Myrmex__Fsutil__Stat fs = MYRMEX__FSUTIL__STAT__INIT;
  fs.path = (char *)rel;
  fs.mode = go_mode(st->st_mode);
  /* As the tar context: the engine sees no ids of the machine that built. */
  fs.uid = 0, fs.gid = 0;
  fs.size = S_ISREG(st->st_mode) ? (int64_t)st->st_size : 0;
  fs.mod_time = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
  if (link)
    fs.linkname = (char *)link;
  if (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode)) {
    fs.devmajor = (int64_t)major(st->st_rdev);
    fs.devminor = (int64_t)minor(st->st_rdev);
  }
  Myrmex__Fsutil__Packet p = MYRMEX__FSUTIL__PACKET__INIT;
  p.type = MYRMEX__FSUTIL__PACKET__PACKET_TYPE__PACKET_STAT;
  p.stat = &fs;
  push_packet(L, &p);
}

/* w:next(max) -> list of up to max encoded STAT packets; {} once the walk is over (the caller
 * then sends the empty STAT that ends the list); nil, why on a read error. */
static int sync_next(lua_State *L) {
  sync_walker *w = check_open_sync(L);
  lua_Integer max = luaL_optinteger(L, 2, 256);
  lua_newtable(L);
  int n = 0;
  while (!w->done && n < max) {
    errno = 0;
    FTSENT *f = fts_read(w->fts);
    if (!f) {
      if (errno) {
        lua_pushnil(L);
        lua_pushfstring(L, "walking %s: %s", w->root, strerror(errno));
        return 2;
      }
      w->done = 1;
      break;
    }
    if (f->fts_level == 0)
      continue;
    if (f->fts_info == FTS_DP) {
      if (w->npend > 0 && w->pend[w->npend - 1].level == f->fts_level) {
        free(w->pend[w->npend - 1].rel);
        w->npend--;
      }
      continue;
    }
    if (f->fts_info == FTS_DNR || f->fts_info == FTS_ERR || f->fts_info == FTS_NS) {
      lua_pushnil(L);
      lua_pushfstring(L, "reading %s: %s", f->fts_path, strerror(f->fts_errno));
      return 2;
    }
    const char *rel = f->fts_path + w->rootlen + 1;
    const struct stat *st = f->fts_statp;
    if (S_ISSOCK(st->st_mode))
      continue;
    int excluded = w->has_exc && matcher_excluded(&w->exc, rel);
    if (excluded && (f->fts_info != FTS_D || !matcher_may_reinclude(&w->exc, rel))) {
      if (f->fts_info == FTS_D)
        fts_set(w->fts, f, FTS_SKIP);
      continue;
    }
    /* An excluded directory an exception reopens, or one not included itself, is sent only
     * before the first entry under it that is: the receiver wants every parent first. */
    if (excluded || (w->has_inc && !matcher_excluded(&w->inc, rel))) {
      /* Not included itself: a directory may still hold included paths. */
      if (f->fts_info == FTS_D) {
        if (w->npend == (int)(sizeof w->pend / sizeof w->pend[0])) {
          fts_set(w->fts, f, FTS_SKIP);
          continue;
        }
        char *copy = strdup(rel);
        if (!copy)
          return luaL_error(L, "archive.sync_walk: out of memory");
        w->pend[w->npend].rel = copy;
        w->pend[w->npend].st = *st;
        w->pend[w->npend].level = f->fts_level;
        w->npend++;
      }
      continue;
    }
    /* Directories above this entry not sent yet go first, outermost first. */
    for (int i = 0; i < w->npend; i++) {
      if (w->pend[i].rel) {
        sync_emit(L, w, w->pend[i].rel, &w->pend[i].st, NULL);
        lua_rawseti(L, -2, ++n);
        free(w->pend[i].rel);
        w->pend[i].rel = NULL; /* sent; the slot stays to match its FTS_DP */
      }
    }
    char target[PATH_MAX];
    const char *link = NULL;
    if (S_ISLNK(st->st_mode)) {
      ssize_t k = readlink(f->fts_accpath, target, sizeof target - 1);
      if (k < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "readlink %s: %s", f->fts_path, strerror(errno));
        return 2;
      }
      target[k] = '\0';
      link = target;
    }
    sync_emit(L, w, rel, st, link);
    lua_rawseti(L, -2, ++n);
  }
  return 1;
}

/* w:read(id) -> the next DATA packet of file id, and true when it is the empty one that ends
 * the file; nil, why when id is no file or it cannot be read. */
static int sync_read(lua_State *L) {
  sync_walker *w = check_open_sync(L);
  lua_Integer id = luaL_checkinteger(L, 2);
  if (id < 0 || (size_t)id >= w->nfiles || !w->files[id]) {
    lua_pushnil(L);
    lua_pushfstring(L, "no file with id %I", id);
    return 2;
  }
  if (w->fd < 0 || w->fd_id != (uint32_t)id) {
    if (w->fd >= 0)
      close(w->fd);
    lua_pushfstring(L, "%s/%s", w->root, w->files[id]);
    w->fd = open(lua_tostring(L, -1), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    lua_pop(L, 1);
    w->fd_id = (uint32_t)id;
    if (w->fd < 0) {
      lua_pushnil(L);
      lua_pushfstring(L, "open %s: %s", w->files[id], strerror(errno));
      return 2;
    }
  }
  if (!w->chunk && !(w->chunk = malloc(SYNC_CHUNK)))
    return luaL_error(L, "archive.sync_walk: out of memory");
  ssize_t k = read(w->fd, w->chunk, SYNC_CHUNK);
  if (k < 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "read %s: %s", w->files[id], strerror(errno));
    return 2;
  }
  Myrmex__Fsutil__Packet p = MYRMEX__FSUTIL__PACKET__INIT;
  p.type = MYRMEX__FSUTIL__PACKET__PACKET_TYPE__PACKET_DATA;
  p.id = (uint32_t)id;
  p.data.data = (uint8_t *)w->chunk, p.data.len = (size_t)k;
  if (k == 0) {
    close(w->fd);
    w->fd = -1;
  }
  push_packet(L, &p);
  lua_pushboolean(L, k == 0);
  return 2;
}

/* sync_walk{dir=, include=?, exclude=?} -> walker */
static int ar_sync_walk(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "dir");
  const char *dir = lua_tostring(L, -1);
  if (!dir)
    return luaL_error(L, "archive.sync_walk: dir must be a string");
  char root[PATH_MAX];
  struct stat st;
  int found = realpath(dir, root) && stat(root, &st) == 0;
  if (!found || !S_ISDIR(st.st_mode)) {
    lua_pushfstring(L, "archive.sync_walk: %s: %s", dir,
                    found ? "not a directory" : strerror(errno));
    return mx_raise_error(L, "NotFound", NULL, lua_tostring(L, -1));
  }
  sync_walker *w = lua_newuserdatauv(L, sizeof *w, 0);
  memset(w, 0, sizeof *w);
  w->fd = -1;
  luaL_setmetatable(L, SYNC_MT);
  int wi = lua_gettop(L);
  w->root = strdup(root);
  if (!w->root)
    return luaL_error(L, "archive.sync_walk: out of memory");
  w->rootlen = strlen(root);
  lua_getfield(L, 1, "include");
  if (!lua_isnil(L, -1)) {
    luaL_argexpected(L, lua_istable(L, -1), 1, "include: list of patterns");
    w->has_inc = 1;
    matcher_from_lua(L, lua_absindex(L, -1), &w->inc, "archive.sync_walk");
  }
  lua_pop(L, 1);
  lua_getfield(L, 1, "exclude");
  if (!lua_isnil(L, -1)) {
    luaL_argexpected(L, lua_istable(L, -1), 1, "exclude: list of patterns");
    w->has_exc = 1;
    matcher_from_lua(L, lua_absindex(L, -1), &w->exc, "archive.sync_walk");
  }
  lua_pop(L, 1);
  char *argv[] = {root, NULL};
  w->fts = fts_open(argv, FTS_PHYSICAL | FTS_NOCHDIR | FTS_COMFOLLOW, fts_by_name);
  if (!w->fts)
    return luaL_error(L, "archive.sync_walk: %s: %s", root, strerror(errno));
  lua_pushvalue(L, wi);
  return 1;
}

/* decode_sync_packet(bytes) -> {type=, id=, data=} | nil, why (a packet from the receiver) */
static int ar_decode_sync_packet(lua_State *L) {
  size_t n;
  const char *data = luaL_checklstring(L, 1, &n);
  Myrmex__Fsutil__Packet *p = myrmex__fsutil__packet__unpack(NULL, n, (const uint8_t *)data);
  if (!p) {
    lua_pushnil(L);
    lua_pushfstring(L, "not a file sync packet (%I bytes)", (lua_Integer)n);
    return 2;
  }
  static const char *const TYPES[] = {"stat", "req", "data", "fin", "err"};
  const char *type = (unsigned)p->type < 5 ? TYPES[p->type] : "unknown";
  uint32_t id = p->id;
  /* Copied onto the stack before anything can raise, then freed. */
  lua_pushlstring(L, p->data.len ? (const char *)p->data.data : "", p->data.len);
  myrmex__fsutil__packet__free_unpacked(p, NULL);
  lua_createtable(L, 0, 3);
  lua_insert(L, -2);
  lua_setfield(L, -2, "data");
  lua_pushstring(L, type);
  lua_setfield(L, -2, "type");
  lua_pushinteger(L, id);
  lua_setfield(L, -2, "id");
  return 1;
}

/* sync_packet(type [, id]) -> an encoded STAT (empty: the end of the list) or FIN packet */
static int ar_sync_packet(lua_State *L) {
  static const char *const TYPES[] = {"stat", "fin", "err", NULL};
  int t = luaL_checkoption(L, 1, NULL, TYPES);
  Myrmex__Fsutil__Packet p = MYRMEX__FSUTIL__PACKET__INIT;
  p.type = t == 0   ? MYRMEX__FSUTIL__PACKET__PACKET_TYPE__PACKET_STAT
           : t == 1 ? MYRMEX__FSUTIL__PACKET__PACKET_TYPE__PACKET_FIN
                    : MYRMEX__FSUTIL__PACKET__PACKET_TYPE__PACKET_ERR;
  size_t len = 0;
  const char *msg = t == 2 ? luaL_checklstring(L, 2, &len) : NULL;
  p.data.data = (uint8_t *)msg, p.data.len = len; /* only read by pack */
  push_packet(L, &p);
  return 1;
}

int luaopen_myrmex_core_archive(lua_State *L) {
  mx_archive_load(L);
  mx_crypto_load(L);
  static const luaL_Reg reader_meta[] = {{"__gc", reader_close}, {"__close", reader_close}, {0, 0}};
  static const luaL_Reg reader_methods[] = {{"entries", reader_entries},
                                            {"read", reader_read},
                                            {"read_all", reader_read_all},
                                            {"digest", reader_digest},
                                            {"copy_to", reader_copy_to},
                                            {"close", reader_close},
                                            {"source", reader_source},
                                            {"bytes", reader_bytes},
                                            {"sniff", reader_sniff},
                                            {"paths", reader_paths},
                                            {0, 0}};
  static const luaL_Reg writer_meta[] = {
      {"__gc", writer_gc}, {"__close", writer_close_meta}, {0, 0}};
  static const luaL_Reg writer_methods[] = {
      {"add", writer_add}, {"close", writer_close}, {"source", writer_source}, {0, 0}};
  static const luaL_Reg funcs[] = {{"pack", ar_pack},
                                   {"match", ar_match},
                                   {"open", ar_open},
                                   {"writer", ar_writer},
                                   {"extract", ar_extract},
                                   {"sync_walk", ar_sync_walk},
                                   {"decode_sync_packet", ar_decode_sync_packet},
                                   {"sync_packet", ar_sync_packet},
                                   {0, 0}};
  new_class(L, READER_MT, reader_meta, reader_methods);
  new_class(L, WRITER_MT, writer_meta, writer_methods);
  static const luaL_Reg sync_meta[] = {{"__gc", sync_close}, {"__close", sync_close}, {0, 0}};
  static const luaL_Reg sync_methods[] = {
      {"next", sync_next}, {"read", sync_read}, {"close", sync_close}, {0, 0}};
  new_class(L, SYNC_MT, sync_meta, sync_methods);
  static const luaL_Reg paths_meta[] = {{"__gc", paths_gc}, {"__len", paths_len}, {0, 0}};
  static const luaL_Reg paths_methods[] = {{"arrays", paths_arrays}, {0, 0}};
  new_class(L, PATHS_MT, paths_meta, paths_methods);
  /* Made here, not on first use: a metatable registered half-made when memory ran out (no
   * __gc yet) would leak every later box. */
  static const luaL_Reg add_meta[] = {{"__gc", add_box_gc}, {0, 0}};
  static const luaL_Reg matcher_meta[] = {{"__gc", matcher_gc}, {0, 0}};
  luaL_newmetatable(L, ADD_MT);
  luaL_setfuncs(L, add_meta, 0);
  luaL_newmetatable(L, MATCHER_MT);
  luaL_setfuncs(L, matcher_meta, 0);
  lua_pop(L, 2);
  luaL_newlib(L, funcs);
  return 1;
}
