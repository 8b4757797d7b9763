/* The C tests' one assertion: report the failed condition with its place and keep going, so a
 * run lists every failure; main returns non-zero when `failures` is. */
#ifndef MYRMEX_TEST_CHECK_H
#define MYRMEX_TEST_CHECK_H

#include <stdio.h>

static int failures;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                     \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

#endif
