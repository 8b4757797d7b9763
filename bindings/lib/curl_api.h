/* libcurl through the lazily loaded table; see dynlib.h. curl.h wraps the *_setopt/getinfo
 * functions in macros (its compile-time option checks); they are dropped here so the names can
 * stand for the pointers. */
#ifndef MYRMEX_CURL_API_H
#define MYRMEX_CURL_API_H

#define CURL_DISABLE_TYPECHECK
#include <curl/curl.h>

#include "dynlib.h"

// clang-format off
#define MX_CURL_FUNCS(X) \
  X(curl_easy_cleanup) X(curl_easy_escape) X(curl_easy_getinfo) X(curl_easy_init)              \
  X(curl_easy_pause) X(curl_easy_setopt) X(curl_easy_strerror) X(curl_free)                    \
  X(curl_global_init) X(curl_multi_add_handle) X(curl_multi_cleanup) X(curl_multi_info_read)  \
  X(curl_multi_init) X(curl_multi_perform) X(curl_multi_poll) X(curl_multi_remove_handle)      \
  X(curl_multi_setopt) X(curl_slist_append) X(curl_slist_free_all) X(curl_version)
// clang-format on

struct mx_curl_api {
#define MX_FIELD(f) __typeof__(f) *f;
  MX_CURL_FUNCS(MX_FIELD)
#undef MX_FIELD
};
extern struct mx_curl_api mx_curl;

#ifndef MX_DYNLIB_IMPL
#undef curl_easy_setopt
#undef curl_easy_getinfo
#undef curl_multi_setopt
#define curl_global_init (*mx_curl.curl_global_init)
#define curl_version (*mx_curl.curl_version)
#define curl_free (*mx_curl.curl_free)
#define curl_easy_init (*mx_curl.curl_easy_init)
#define curl_easy_cleanup (*mx_curl.curl_easy_cleanup)
#define curl_easy_setopt (*mx_curl.curl_easy_setopt)
#define curl_easy_getinfo (*mx_curl.curl_easy_getinfo)
#define curl_easy_pause (*mx_curl.curl_easy_pause)
#define curl_easy_strerror (*mx_curl.curl_easy_strerror)
#define curl_easy_escape (*mx_curl.curl_easy_escape)
#define curl_slist_append (*mx_curl.curl_slist_append)
#define curl_slist_free_all (*mx_curl.curl_slist_free_all)
#define curl_multi_init (*mx_curl.curl_multi_init)
#define curl_multi_setopt (*mx_curl.curl_multi_setopt)
#define curl_multi_add_handle (*mx_curl.curl_multi_add_handle)
#define curl_multi_cleanup (*mx_curl.curl_multi_cleanup)
#define curl_multi_remove_handle (*mx_curl.curl_multi_remove_handle)
#define curl_multi_perform (*mx_curl.curl_multi_perform)
#define curl_multi_poll (*mx_curl.curl_multi_poll)
#define curl_multi_info_read (*mx_curl.curl_multi_info_read)
#endif

#endif
