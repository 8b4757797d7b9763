#include "tables.h"

#include <lauxlib.h>

lua_Integer mx_array_length(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_getmetatable(L, idx)) {
    luaL_getmetatable(L, MX_ARRAY_MT);
    int array = lua_rawequal(L, -1, -2);
    lua_pop(L, 1);
    luaL_getmetatable(L, MX_OBJECT_MT);
    int object = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (array)
      return (lua_Integer)lua_rawlen(L, idx);
    if (object)
      return -1;
  }
  lua_Integer n = 0, max = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1) {
      lua_pop(L, 1);
      return -1;
    }
    lua_Integer k = lua_tointeger(L, -1);
    if (k > max)
      max = k;
    n++;
  }
  return (n > 0 && n == max) ? n : -1;
}
