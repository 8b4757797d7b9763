#ifndef MYRMEX_HOST_RUNTIME_H
#define MYRMEX_HOST_RUNTIME_H

#include <lua.h>

/* Open the standard libraries and put every binding and embedded Lua module in
 * package.preload (or on package.path first when MYRMEX_LUA_PATH is set). */
void mx_open(lua_State *L);
/* Install SIGINT/SIGTERM handlers; they hook the running threads so that the signal becomes
 * an Interrupted error in Lua (coroutine.resume and wrap are replaced to record those). */
void mx_install_signals(lua_State *L);

#endif
