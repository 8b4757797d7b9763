/*
 * The one rule the JSON and YAML encoders share for a Lua table: is it an array (a JSON array,
 * a YAML sequence) or an object (a mapping)? Kept in one place so both formats always agree.
 */
#ifndef MYRMEX_TABLES_H
#define MYRMEX_TABLES_H

#include <lua.h>

/* The metatables myrmex.json.array() and myrmex.json.object() set on a table. */
#define MX_ARRAY_MT "myrmex.json.array"
#define MX_OBJECT_MT "myrmex.json.object"

/* The array length of the table at idx: its raw length when marked as an array; -1 when marked
 * as an object, empty, or keyed other than exactly 1..n. */
lua_Integer mx_array_length(lua_State *L, int idx);

#endif
