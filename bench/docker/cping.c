/* The floor of benchmark 1: libcurl loaded and one GET /_ping over the engine's socket, no Lua.
 * Built by run.sh: gcc -O2 cping.c -o cping -lcurl */
#include <curl/curl.h>
static size_t sink(char *p, size_t s, size_t n, void *u) {
  (void)p;
  (void)u;
  return s * n;
}
int main(void) {
  CURL *c = curl_easy_init();
  curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, "/var/run/docker.sock");
  curl_easy_setopt(c, CURLOPT_URL, "http://docker/_ping");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
  int rc = curl_easy_perform(c) != CURLE_OK;
  curl_easy_cleanup(c);
  return rc;
}
