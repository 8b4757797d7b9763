#ifndef MYRMEX_HOST_RUNTIME_H
#define MYRMEX_HOST_RUNTIME_H

#include <lua.h>

/* Open the standard libraries and put every binding and embedded Lua module in
 * package.preload (or on package.path first when MYRMEX_LUA_PATH is set). */
void mx_open(lua_State *L);
/* Install SIGINT/SIGTERM handlers and the count hook that turns them into Lua errors. */
void mx_install_signals(lua_State *L);

#endif
