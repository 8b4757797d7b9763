/*
 * The background hasher (bindings/lib/hasher.h) as the transport uses it: the digest equals
 * a one-shot digest of the bytes whatever the write pattern; abandoning stops at once; a file
 * that turns out shorter than the writes reported is a failure, never a wrong digest.
 */
#include "lib/hasher.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "lib/crypto_api.h"
#include "lib/dynlib.h"

#include "check.h"

static void hex(EVP_MD_CTX *md, char *out) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(md, d, &n);
  for (unsigned int i = 0; i < n; i++)
    sprintf(out + 2 * i, "%02x", d[i]);
}

static EVP_MD_CTX *sha256(void) {
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  EVP_DigestInit_ex(md, EVP_sha256(), NULL);
  return md;
}

/* Writes `len` bytes of `data` in pieces of `piece`, reporting each; returns finish's result
 * and the digest in `out`. */
static int hash_while_writing(const char *path, const char *data, size_t len, size_t piece,
                              char *out) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  EVP_MD_CTX *md = sha256();
  mx_hasher *h = mx_hasher_start(path, md);
  CHECK(h != NULL);
  for (size_t off = 0; off < len; off += piece) {
    size_t n = len - off < piece ? len - off : piece;
    CHECK(write(fd, data + off, n) == (ssize_t)n);
    mx_hasher_wrote(h, n);
  }
  int rc = mx_hasher_finish(h, 1);
  close(fd);
  hex(md, out);
  EVP_MD_CTX_free(md);
  return rc;
}

int main(void) {
  lua_State *L = luaL_newstate();
  mx_crypto_load(L);
  char path[] = "/tmp/mx-test-hasher-XXXXXX";
  int tmp = mkstemp(path);
  CHECK(tmp >= 0);
  close(tmp);

  size_t len = (3u << 20) + 12345; /* several of the thread's 1 MiB reads, and a tail */
  char *data = malloc(len);
  for (size_t i = 0; i < len; i++)
    data[i] = (char)(i * 2654435761u >> 13);
  char want[65], got[65];
  EVP_MD_CTX *md = sha256();
  EVP_DigestUpdate(md, data, len);
  hex(md, want);
  EVP_MD_CTX_free(md);

  size_t pieces[] = {1, 4093, 65536, 1u << 20, len};
  for (size_t i = 0; i < sizeof pieces / sizeof *pieces; i++) {
    size_t n = pieces[i] == 1 ? 20000 : len; /* byte by byte on a prefix only */
    char want_n[65];
    md = sha256();
    EVP_DigestUpdate(md, data, n);
    hex(md, want_n);
    EVP_MD_CTX_free(md);
    CHECK(hash_while_writing(path, data, n, pieces[i], got) == 0);
    CHECK(strcmp(got, n == len ? want : want_n) == 0);
  }

  /* Nothing written: the digest of the empty string. */
  CHECK(hash_while_writing(path, data, 0, 1, got) == 0);
  CHECK(strcmp(got, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0);

  /* Abandoned before any byte came (a transfer closed early): the thread, asleep waiting for
   * the writer, is woken and ends; nothing went into md. */
  md = sha256();
  mx_hasher *h = mx_hasher_start(path, md);
  CHECK(mx_hasher_finish(h, 0) == 0);
  hex(md, got);
  CHECK(strcmp(got, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0);
  EVP_MD_CTX_free(md);

  /* The file holds fewer bytes than reported: a failure, not a digest of what was there. */
  int fd = open(path, O_WRONLY | O_TRUNC);
  CHECK(write(fd, data, 100) == 100);
  close(fd);
  md = sha256();
  h = mx_hasher_start(path, md);
  mx_hasher_wrote(h, 200);
  CHECK(mx_hasher_finish(h, 1) == -1);
  EVP_MD_CTX_free(md);

  /* No file: no thread, the caller hashes inline. */
  unlink(path);
  md = sha256();
  CHECK(mx_hasher_start(path, md) == NULL);
  EVP_MD_CTX_free(md);

  free(data);
  lua_close(L);
  if (failures)
    fprintf(stderr, "%d check(s) failed\n", failures);
  return failures ? 1 : 0;
}
