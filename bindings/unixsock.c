/*
 * myrmex.core.unixsock: a non-blocking client of a local Unix stream socket.
 *
 *   unixsock.connect(path) -> socket | nil, message
 *   s:read([max])  -> bytes | false (nothing yet) | nil (the peer closed)   never waits
 *   s:write(bytes [, from]) -> bytes written from `from` (0: the socket is full) | nil, message
 *   s:close_write()          the peer reads end-of-file
 *   s:close()                also __gc / __close
 *
 * For BuildKit's SSH forwarding: the engine's sshforward.SSH/ForwardAgent stream is relayed
 * to the user's ssh-agent socket (SSH_AUTH_SOCK). The session loop polls it between HTTP/2
 * reads, so nothing here blocks.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#define SOCK_MT "myrmex.unixsock"

typedef struct {
  int fd;
} usock;

static usock *check_sock(lua_State *L) {
  usock *s = luaL_checkudata(L, 1, SOCK_MT);
  if (s->fd < 0)
    luaL_error(L, "unixsock: the socket is closed");
  return s;
}

static int us_close(lua_State *L) {
  usock *s = luaL_checkudata(L, 1, SOCK_MT);
  if (s->fd >= 0) {
    close(s->fd);
    s->fd = -1;
  }
  return 0;
}

static int us_connect(lua_State *L) {
  size_t n;
  const char *path = luaL_checklstring(L, 1, &n);
  struct sockaddr_un addr;
  if (n >= sizeof addr.sun_path)
    return luaL_argerror(L, 1, "socket path too long");
  usock *s = lua_newuserdatauv(L, sizeof *s, 0);
  s->fd = -1;
  luaL_setmetatable(L, SOCK_MT);
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path, n + 1);
  s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  /* Connected while blocking (a local socket answers at once or refuses), then non-blocking. */
  if (s->fd < 0 || connect(s->fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
      fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) | O_NONBLOCK) != 0) {
    int e = errno;
    if (s->fd >= 0)
      close(s->fd);
    s->fd = -1;
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, strerror(e));
    return 2;
  }
  return 1;
}

static int us_read(lua_State *L) {
  usock *s = check_sock(L);
  lua_Integer max = luaL_optinteger(L, 2, 65536);
  if (max <= 0 || max > (1 << 24))
    return luaL_argerror(L, 2, "max out of range");
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, (size_t)max);
  ssize_t k = recv(s->fd, p, (size_t)max, 0);
  if (k < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      lua_pushboolean(L, 0);
      return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  if (k == 0) {
    lua_pushnil(L);
    return 1;
  }
  luaL_pushresultsize(&b, (size_t)k);
  return 1;
}

static int us_write(lua_State *L) {
  usock *s = check_sock(L);
  size_t n;
  const char *data = luaL_checklstring(L, 2, &n);
  lua_Integer from = luaL_optinteger(L, 3, 1);
  if (from < 1 || (size_t)from > n + 1)
    return luaL_argerror(L, 3, "out of range");
  ssize_t k = send(s->fd, data + from - 1, n - (size_t)(from - 1), MSG_NOSIGNAL);
  if (k < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      lua_pushinteger(L, 0);
      return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  lua_pushinteger(L, (lua_Integer)k);
  return 1;
}

static int us_close_write(lua_State *L) {
  usock *s = check_sock(L);
  shutdown(s->fd, SHUT_WR);
  return 0;
}

static const luaL_Reg sock_meta[] = {{"__gc", us_close}, {"__close", us_close}, {NULL, NULL}};
static const luaL_Reg sock_methods[] = {{"read", us_read},
                                        {"write", us_write},
                                        {"close_write", us_close_write},
                                        {"close", us_close},
                                        {NULL, NULL}};
static const luaL_Reg funcs[] = {{"connect", us_connect}, {NULL, NULL}};

int luaopen_myrmex_core_unixsock(lua_State *L) {
  luaL_newmetatable(L, SOCK_MT);
  luaL_setfuncs(L, sock_meta, 0);
  luaL_newlib(L, sock_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
