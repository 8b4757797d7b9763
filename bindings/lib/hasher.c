#include "hasher.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "crypto_api.h"

#define CHUNK (1u << 20)

struct mx_hasher {
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int fd;
  EVP_MD_CTX *md;
  long long written; /* under mu */
  int stop;          /* under mu: 1 = hash what was written, then end; 2 = end now */
  int failed;        /* the thread's own until joined */
};

/* How many bytes may be hashed next: waits for the writer; 0 means the thread must end. */
static long long next_span(mx_hasher *h, long long hashed) {
  pthread_mutex_lock(&h->mu);
  while (h->written == hashed && !h->stop)
    pthread_cond_wait(&h->cv, &h->mu);
  long long avail = h->stop == 2 ? 0 : h->written - hashed;
  pthread_mutex_unlock(&h->mu);
  return avail;
}

static void *run(void *arg) {
  mx_hasher *h = arg;
  char *buf = malloc(CHUNK);
  long long hashed = 0;
  h->failed = buf == NULL;
  while (!h->failed) {
    long long avail = next_span(h, hashed);
    if (avail == 0)
      break;
    ssize_t n = pread(h->fd, buf, avail < CHUNK ? (size_t)avail : CHUNK, (off_t)hashed);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      h->failed = 1;
      break;
    }
    EVP_DigestUpdate(h->md, buf, (size_t)n);
    /* Start writing back what is hashed: the fsync before the file's rename then finds little
     * left to flush (a 256 MiB layer: 150 ms -> 1 ms), instead of stalling every transfer. */
    sync_file_range(h->fd, (off_t)hashed, (off_t)n, SYNC_FILE_RANGE_WRITE);
    hashed += n;
  }
  free(buf);
  return NULL;
}

mx_hasher *mx_hasher_start(const char *path, EVP_MD_CTX *md) {
  mx_hasher *h = calloc(1, sizeof *h);
  if (!h)
    return NULL;
  h->md = md;
  h->fd = open(path, O_RDONLY | O_CLOEXEC);
  if (h->fd < 0) {
    free(h);
    return NULL;
  }
  pthread_mutex_init(&h->mu, NULL);
  pthread_cond_init(&h->cv, NULL);
  /* The thread starts with every signal blocked: SIGINT must reach the thread that polls, so
   * that its wait returns EINTR and the interrupt is seen at once. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&h->thread, NULL, run, h);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    close(h->fd);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h);
    return NULL;
  }
  return h;
}

void mx_hasher_wrote(mx_hasher *h, size_t n) {
  pthread_mutex_lock(&h->mu);
  h->written += (long long)n;
  pthread_cond_signal(&h->cv);
  pthread_mutex_unlock(&h->mu);
}

int mx_hasher_finish(mx_hasher *h, int complete) {
  pthread_mutex_lock(&h->mu);
  h->stop = complete ? 1 : 2;
  pthread_cond_signal(&h->cv);
  pthread_mutex_unlock(&h->mu);
  pthread_join(h->thread, NULL);
  int rc = h->failed ? -1 : 0;
  close(h->fd);
  pthread_mutex_destroy(&h->mu);
  pthread_cond_destroy(&h->cv);
  free(h);
  return rc;
}
