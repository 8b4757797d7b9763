/* libwebsockets through the lazily loaded table; see dynlib.h. Only bindings/websocket.c uses
 * it: the WebSocket client of the Kubernetes exec, attach and port-forward streams. */
#ifndef MYRMEX_LWS_API_H
#define MYRMEX_LWS_API_H

#include <libwebsockets.h>

#include "dynlib.h"

// clang-format off
#define MX_LWS_FUNCS(X) \
  X(lws_add_http_header_by_name) X(lws_callback_on_writable) X(lws_client_connect_via_info)   \
  X(lws_close_reason) X(lws_context_destroy) X(lws_context_user) X(lws_create_context)          \
  X(lws_get_context) X(lws_get_socket_fd) X(lws_hdr_copy) X(lws_http_client_http_response) X(lws_is_final_fragment)  \
  X(lws_service) X(lws_service_adjust_timeout) X(lws_set_log_level) X(lws_write)
// clang-format on

struct mx_lws_api {
#define MX_FIELD(f) __typeof__(f) *f;
  MX_LWS_FUNCS(MX_FIELD)
#undef MX_FIELD
};
extern struct mx_lws_api mx_lws;

#ifndef MX_DYNLIB_IMPL
#define lws_add_http_header_by_name (*mx_lws.lws_add_http_header_by_name)
#define lws_callback_on_writable (*mx_lws.lws_callback_on_writable)
#define lws_client_connect_via_info (*mx_lws.lws_client_connect_via_info)
#define lws_close_reason (*mx_lws.lws_close_reason)
#define lws_context_destroy (*mx_lws.lws_context_destroy)
#define lws_context_user (*mx_lws.lws_context_user)
#define lws_create_context (*mx_lws.lws_create_context)
#define lws_get_context (*mx_lws.lws_get_context)
#define lws_get_socket_fd (*mx_lws.lws_get_socket_fd)
#define lws_hdr_copy (*mx_lws.lws_hdr_copy)
#define lws_http_client_http_response (*mx_lws.lws_http_client_http_response)
#define lws_is_final_fragment (*mx_lws.lws_is_final_fragment)
#define lws_service (*mx_lws.lws_service)
#define lws_service_adjust_timeout (*mx_lws.lws_service_adjust_timeout)
#define lws_set_log_level (*mx_lws.lws_set_log_level)
#define lws_write (*mx_lws.lws_write)
#endif

#endif
