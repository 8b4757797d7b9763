/*
 * A digest computed in a second thread from a file while another writes it: the transport's
 * downloads to a file hand the hashing (the largest CPU cost of a layer pull) to a core of
 * its own instead of doing it between socket reads. The thread also starts the writeback of
 * each piece it has hashed, so that the writer's final fsync is short.
 */
#ifndef MYRMEX_HASHER_H
#define MYRMEX_HASHER_H

#include <stddef.h>

#include <openssl/evp.h>

typedef struct mx_hasher mx_hasher;

/* Start hashing `path` into `md` (borrowed until mx_hasher_finish) as bytes are reported
 * written. NULL when no thread could be started: the caller then hashes inline. */
mx_hasher *mx_hasher_start(const char *path, EVP_MD_CTX *md);

/* The writer appended n more bytes to the file. */
void mx_hasher_wrote(mx_hasher *h, size_t n);

/* Stop the thread and free h. With complete = 1, wait until every written byte is in md and
 * return 0, or -1 when the file could not be read back; with 0, abandon the digest. */
int mx_hasher_finish(mx_hasher *h, int complete);

#endif
