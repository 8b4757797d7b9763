/* The showcase app: a static program that answers its health check and prints a greeting. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--health") == 0) {
    puts("ok");
    return 0;
  }
  printf("hello from a %s image built by myrmex\n", argc > 1 ? argv[1] : "scratch");
  return 0;
}
