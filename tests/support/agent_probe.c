/* A static client of the ssh-agent protocol for spec:docker_build: run in a build step with
 * RUN --mount=type=ssh, it asks the agent at $SSH_AUTH_SOCK for its identities
 * (SSH_AGENTC_REQUEST_IDENTITIES) and prints their count and comments, so a spec can tell that
 * the step reached the agent myrmex forwarded. Built with `cc -static` by the spec. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int read_all(int fd, unsigned char *b, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t k = read(fd, b + got, n - got);
    if (k <= 0)
      return -1;
    got += (size_t)k;
  }
  return 0;
}

static size_t be32(const unsigned char *p) {
  return (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
}

int main(void) {
  const char *path = getenv("SSH_AUTH_SOCK");
  if (!path) {
    puts("no SSH_AUTH_SOCK");
    return 1;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = {0};
  a.sun_family = AF_UNIX;
  strncpy(a.sun_path, path, sizeof a.sun_path - 1);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    perror("connect");
    return 1;
  }
  const unsigned char req[5] = {0, 0, 0, 1, 11};
  unsigned char h[4];
  if (write(fd, req, sizeof req) != (ssize_t)sizeof req || read_all(fd, h, 4) != 0)
    return 1;
  size_t len = be32(h);
  unsigned char *m = len > 0 && len < (1 << 20) ? malloc(len) : NULL;
  if (!m || read_all(fd, m, len) != 0 || len < 5 || m[0] != 12) {
    puts("bad answer");
    return 1;
  }
  size_t n = be32(m + 1), at = 5;
  printf("keys %zu\n", n);
  for (size_t i = 0; i < n && at + 4 <= len; i++) {
    at += 4 + be32(m + at); /* the key blob */
    if (at + 4 > len)
      break;
    size_t cl = be32(m + at);
    at += 4;
    if (at + cl > len)
      break;
    printf("comment %.*s\n", (int)cl, (const char *)m + at);
    at += cl;
  }
  return 0;
}
