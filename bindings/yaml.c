/*
 * myrmex.core.yaml: YAML <-> Lua through libyaml.
 *
 * libyaml only tokenises; what a plain scalar *means* is decided here, by one of two schemas:
 *
 *  - "kubernetes" (the default) reads YAML the way kubectl and the API server do: the Go
 *    library sigs.k8s.io/yaml runs the YAML through go-yaml v2 (YAML 1.1 resolution: y/yes/on
 *    and n/no/off are booleans, 0777 and 0o777 octal, 0b101 binary, underscores in numbers)
 *    and then turns mapping keys into strings for JSON. Timestamps stay strings.
 *  - "core" is the YAML 1.2 core schema (only true/false, null, decimal/0o/0x integers).
 *
 * Values: mappings and sequences are tables carrying myrmex.json's object/array marker
 * metatables, null is myrmex.json's null sentinel, so json.encode(yaml.load(x)) is the JSON
 * kubectl would send. Aliases are deep copies (mutating one use does not change another),
 * counted so that a "billion laughs" document fails fast instead of eating memory.
 *
 * Memory: the parser, the current event and the emitter live in userdata whose __gc frees
 * them, so any luaL_error on the way (bad input, out of memory) leaks nothing.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <lauxlib.h>
#include <lua.h>
#include <yaml.h>

#include "lib/crypto_api.h"
#include "lib/tables.h"

#define LOADER_MT "myrmex.yaml.loader"
#define DUMPER_MT "myrmex.yaml.dumper"
#define ARRAY_MT MX_ARRAY_MT
#define OBJECT_MT MX_OBJECT_MT
#define MAX_DEPTH 1000
/* Nodes copied through aliases may not exceed this plus ten times the nodes parsed. */
#define ALIAS_BUDGET 100000

#define TAG_PREFIX "tag:yaml.org,2002:"

enum schema { SCHEMA_K8S, SCHEMA_CORE };
enum kind { K_NULL, K_BOOL, K_INT, K_UINT, K_FLOAT, K_STR };

typedef struct {
  enum kind k;
  int b;
  long long i;
  unsigned long long u;
  double d;
} rval;

/* The null sentinel is myrmex.json's; it is fetched once in luaopen and kept here. */
static void *null_sentinel;

/* ------------------------------------------------------------------ scalar resolution */

static int in_list(const char *s, const char *const *list) {
  for (; *list; list++)
    if (strcmp(s, *list) == 0)
      return 1;
  return 0;
}

static const char *const K8S_TRUE[] = {"y",    "Y",    "yes", "Yes", "YES", "true",
                                       "True", "TRUE", "on",  "On",  "ON",  NULL};
static const char *const K8S_FALSE[] = {"n",     "N",     "no",  "No",  "NO",  "false",
                                        "False", "FALSE", "off", "Off", "OFF", NULL};
static const char *const CORE_TRUE[] = {"true", "True", "TRUE", NULL};
static const char *const CORE_FALSE[] = {"false", "False", "FALSE", NULL};
static const char *const NULLS[] = {"", "~", "null", "Null", "NULL", NULL};
static const char *const POS_INF[] = {".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", NULL};
static const char *const NEG_INF[] = {"-.inf", "-.Inf", "-.INF", NULL};
static const char *const NANS[] = {".nan", ".NaN", ".NAN", NULL};

/* The words every schema maps to a non-string value (null, bool, inf, nan). */
static int resolve_word(const char *s, enum schema sc, rval *v) {
  if (in_list(s, NULLS))
    v->k = K_NULL;
  else if (in_list(s, sc == SCHEMA_K8S ? K8S_TRUE : CORE_TRUE))
    v->k = K_BOOL, v->b = 1;
  else if (in_list(s, sc == SCHEMA_K8S ? K8S_FALSE : CORE_FALSE))
    v->k = K_BOOL, v->b = 0;
  else if (in_list(s, POS_INF))
    v->k = K_FLOAT, v->d = HUGE_VAL;
  else if (in_list(s, NEG_INF))
    v->k = K_FLOAT, v->d = -HUGE_VAL;
  else if (in_list(s, NANS))
    v->k = K_FLOAT, v->d = NAN;
  else
    return 0;
  return 1;
}

static int digit_value(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return 99;
}

/* Digits of `base` only, at least one, into *out; 0 on overflow of 64 bits or bad digit. */
static int parse_digits(const char *s, int base, unsigned long long *out) {
  unsigned long long n = 0;
  if (!*s)
    return 0;
  for (; *s; s++) {
    int d = digit_value((unsigned char)*s);
    if (d >= base || n > (ULLONG_MAX - (unsigned)d) / (unsigned)base)
      return 0;
    n = n * (unsigned)base + (unsigned)d;
  }
  *out = n;
  return 1;
}

/* Signed magnitude into an int64 (or a uint64 for large unsigned ones, as Go's ParseUint). */
static int settle_int(int neg, int signed_text, unsigned long long mag, rval *v) {
  if (neg) {
    if (mag > (unsigned long long)LLONG_MAX + 1)
      return 0;
    v->k = K_INT;
    v->i = mag == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)mag;
  } else if (mag <= (unsigned long long)LLONG_MAX) {
    v->k = K_INT, v->i = (long long)mag;
  } else if (!signed_text) {
    v->k = K_UINT, v->u = mag;
  } else {
    return 0;
  }
  return 1;
}

/* Go's strconv.ParseInt(s, 0, 64) then ParseUint: sign, 0x/0o/0b prefix, leading 0 = octal. */
static int go_int(const char *s, rval *v) {
  int neg = *s == '-', sign = (*s == '-' || *s == '+');
  const char *p = s + sign;
  int base = 10;
  if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
    base = 16, p += 2;
  else if (p[0] == '0' && (p[1] == 'o' || p[1] == 'O'))
    base = 8, p += 2;
  else if (p[0] == '0' && (p[1] == 'b' || p[1] == 'B'))
    base = 2, p += 2;
  else if (p[0] == '0' && p[1])
    base = 8, p += 1;
  unsigned long long mag;
  return parse_digits(p, base, &mag) && settle_int(neg, sign, mag, v);
}

/* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? : the float syntax of go-yaml and of
 * the YAML 1.2 core schema. */
static int float_syntax(const char *s) {
  if (*s == '-' || *s == '+')
    s++;
  int before = 0, after = 0;
  while (isdigit((unsigned char)*s))
    s++, before++;
  if (*s == '.') {
    s++;
    while (isdigit((unsigned char)*s))
      s++, after++;
    if (!before && !after)
      return 0;
  } else if (!before) {
    return 0;
  }
  if (*s == 'e' || *s == 'E') {
    s++;
    if (*s == '-' || *s == '+')
      s++;
    if (!isdigit((unsigned char)*s))
      return 0;
    while (isdigit((unsigned char)*s))
      s++;
  }
  return *s == '\0';
}

/* A float the way Go's ParseFloat takes it: out of range is an error (the text stays a
 * string in go-yaml), underflow is not. */
static int go_float(const char *s, rval *v) {
  errno = 0;
  double d = strtod(s, NULL);
  if (errno == ERANGE && isinf(d))
    return 0;
  v->k = K_FLOAT, v->d = d;
  return 1;
}

/* go-yaml v2's resolve(): the first byte picks what the scalar may be. */
static void resolve_k8s(const char *s, size_t n, rval *v) {
  v->k = K_STR;
  if (resolve_word(s, SCHEMA_K8S, v))
    return;
  unsigned char c = (unsigned char)s[0];
  if (c == '.') {
    if (float_syntax(s))
      go_float(s, v);
    return;
  }
  if (!(isdigit(c) || c == '+' || c == '-'))
    return;
  /* go-yaml drops every underscore first. Long texts without one are read in place; a
   * long one with underscores stays a string (no number needs that many characters). */
  char buf[128];
  const char *plain = s;
  if (memchr(s, '_', n)) {
    if (n >= sizeof buf)
      return;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
      if (s[i] != '_')
        buf[k++] = s[i];
    buf[k] = '\0';
    plain = buf;
  }
  if (go_int(plain, v))
    return;
  if (float_syntax(plain))
    go_float(plain, v);
}

/* YAML 1.2 core schema; integers too large for 64 bits become floats. */
static void resolve_core(const char *s, size_t n, rval *v) {
  v->k = K_STR;
  if (resolve_word(s, SCHEMA_CORE, v))
    return;
  const char *p = s + (*s == '-' || *s == '+');
  unsigned long long mag;
  if (s[0] == '0' && (s[1] == 'x' || s[1] == 'o')) {
    int base = s[1] == 'x' ? 16 : 8;
    if (parse_digits(s + 2, base, &mag) && settle_int(0, 0, mag, v)) {
      if (v->k == K_UINT)
        v->k = K_FLOAT, v->d = (double)v->u;
      return;
    }
    v->k = K_STR;
    return;
  }
  if (*p && strspn(p, "0123456789") == strlen(p)) {
    if (parse_digits(p, 10, &mag) && settle_int(*s == '-', 1, mag, v))
      return;
    v->k = K_FLOAT, v->d = strtod(s, NULL);
    return;
  }
  if (float_syntax(s))
    v->k = K_FLOAT, v->d = strtod(s, NULL);
  (void)n;
}

static void resolve_plain(enum schema sc, const char *s, size_t n, rval *v) {
  if (sc == SCHEMA_K8S)
    resolve_k8s(s, n, v);
  else
    resolve_core(s, n, v);
}

/* ------------------------------------------------------------------ loader state */

typedef struct {
  yaml_parser_t parser;
  yaml_event_t ev;
  int parser_live, event_live;
  const char *input;
  size_t len;
  enum schema schema;
  int anchors; /* stack index: anchor name -> value (false while its node is open) */
  int sizes;   /* stack index: anchor name -> number of nodes in the value */
  long nodes, copied;
} loader;

static void loader_free(loader *ld) {
  if (ld->event_live)
    yaml_event_delete(&ld->ev);
  if (ld->parser_live)
    yaml_parser_delete(&ld->parser);
  ld->event_live = ld->parser_live = 0;
}

static int loader_gc(lua_State *L) {
  loader_free(luaL_checkudata(L, 1, LOADER_MT));
  return 0;
}

/* Line and column (1-based, in characters) of a byte offset: libyaml's reader errors
 * (invalid UTF-8, control characters) give an offset, not a mark. */
static void offset_position(const loader *ld, size_t off, size_t *line, size_t *col) {
  *line = 1, *col = 1;
  for (size_t i = 0; i < off && i < ld->len; i++) {
    unsigned char c = (unsigned char)ld->input[i];
    if (c == '\n')
      (*line)++, *col = 1;
    else if ((c & 0xC0) != 0x80)
      (*col)++;
  }
}

/* Parse errors are raised without a "file:line:" prefix: the position that matters is the
 * one in the YAML text, and it is in the message. */
static int raise_at(lua_State *L, size_t line, size_t col, const char *msg) {
  lua_pushfstring(L, "yaml: line %d column %d: %s", (int)line, (int)col, msg);
  return lua_error(L);
}

static int parser_error(lua_State *L, loader *ld) {
  yaml_parser_t *p = &ld->parser;
  const char *problem = p->problem ? p->problem : "cannot parse";
  size_t line = p->problem_mark.line + 1, col = p->problem_mark.column + 1;
  char msg[512];
  if (p->error == YAML_READER_ERROR) {
    offset_position(ld, p->problem_offset, &line, &col);
    if (strstr(problem, "UTF-8") && p->problem_value != -1)
      snprintf(msg, sizeof msg, "invalid UTF-8 (%s 0x%02X at byte %zu)", problem,
               (unsigned)p->problem_value & 0xFF, p->problem_offset + 1);
    else if (p->problem_value != -1)
      snprintf(msg, sizeof msg, "%s (#x%X at byte %zu)", problem, (unsigned)p->problem_value,
               p->problem_offset + 1);
    else
      snprintf(msg, sizeof msg, "%s", problem);
  } else if (p->context) {
    snprintf(msg, sizeof msg, "%s (%s at line %zu column %zu)", problem, p->context,
             p->context_mark.line + 1, p->context_mark.column + 1);
  } else {
    snprintf(msg, sizeof msg, "%s", problem);
  }
  return raise_at(L, line, col, msg);
}

/* Errors about the meaning of a node carry the node's start. */
static int node_error(lua_State *L, const yaml_mark_t *m, const char *fmt, const char *arg) {
  return raise_at(L, m->line + 1, m->column + 1, lua_pushfstring(L, fmt, arg));
}

static void next_event(lua_State *L, loader *ld) {
  if (ld->event_live) {
    yaml_event_delete(&ld->ev);
    ld->event_live = 0;
  }
  if (!yaml_parser_parse(&ld->parser, &ld->ev))
    parser_error(L, ld);
  ld->event_live = 1;
}

/* ------------------------------------------------------------------ building values */

static void build_node(lua_State *L, loader *ld, int depth);

static void push_resolved(lua_State *L, const rval *v) {
  switch (v->k) {
  case K_NULL:
    lua_pushlightuserdata(L, null_sentinel);
    break;
  case K_BOOL:
    lua_pushboolean(L, v->b);
    break;
  case K_INT:
    lua_pushinteger(L, (lua_Integer)v->i);
    break;
  case K_UINT:
    lua_pushnumber(L, (lua_Number)v->u); /* beyond int64: Lua has only a float for it */
    break;
  case K_FLOAT:
    lua_pushnumber(L, v->d);
    break;
  case K_STR:
    break;
  }
}

/* !!binary: base64 with any whitespace inside, decoded by OpenSSL. */
static void push_binary(lua_State *L, loader *ld, const char *s, size_t n) {
  luaL_Buffer clean;
  luaL_buffinit(L, &clean);
  for (size_t i = 0; i < n; i++)
    if (!isspace((unsigned char)s[i]))
      luaL_addchar(&clean, s[i]);
  luaL_pushresult(&clean);
  size_t m;
  const char *b64 = lua_tolstring(L, -1, &m);
  if (m % 4 != 0)
    node_error(L, &ld->ev.start_mark, "!!binary value is not base64%s", "");
  mx_crypto_load(L); /* only now: most YAML has no !!binary */
  unsigned char *out = lua_newuserdatauv(L, m / 4 * 3 + 1, 0);
  int got = m ? EVP_DecodeBlock(out, (const unsigned char *)b64, (int)m) : 0;
  if (got < 0)
    node_error(L, &ld->ev.start_mark, "!!binary value is not base64%s", "");
  if (m >= 1 && b64[m - 1] == '=')
    got--;
  if (m >= 2 && b64[m - 2] == '=')
    got--;
  lua_pushlstring(L, (const char *)out, (size_t)got);
  lua_replace(L, -3);
  lua_pop(L, 1);
}

/* A scalar with an explicit standard tag (!!int "12", !!str 12, !!binary ...). */
static void push_tagged_scalar(lua_State *L, loader *ld, const char *tag, const char *s, size_t n) {
  const char *name = tag + strlen(TAG_PREFIX);
  if (strcmp(name, "binary") == 0) {
    push_binary(L, ld, s, n);
    return;
  }
  enum kind want = strcmp(name, "int") == 0     ? K_INT
                   : strcmp(name, "float") == 0 ? K_FLOAT
                   : strcmp(name, "bool") == 0  ? K_BOOL
                   : strcmp(name, "null") == 0  ? K_NULL
                                                : K_STR;
  rval v;
  if (want != K_STR)
    resolve_plain(ld->schema, s, n, &v);
  if (want == K_STR) {
    lua_pushlstring(L, s, n);
    return;
  }
  if (want == K_FLOAT && v.k == K_INT)
    v.k = K_FLOAT, v.d = (double)v.i;
  if (want == K_FLOAT && v.k == K_UINT)
    v.k = K_FLOAT, v.d = (double)v.u;
  if (v.k != want && !(want == K_INT && v.k == K_UINT))
    node_error(L, &ld->ev.start_mark, "value does not match its tag !!%s", name);
  push_resolved(L, &v);
}

static void push_scalar(lua_State *L, loader *ld) {
  const yaml_event_t *e = &ld->ev;
  const char *s = (const char *)e->data.scalar.value;
  size_t n = e->data.scalar.length;
  const char *tag = (const char *)e->data.scalar.tag;
  if (tag && strncmp(tag, TAG_PREFIX, strlen(TAG_PREFIX)) == 0) {
    push_tagged_scalar(L, ld, tag, s, n);
    return;
  }
  /* Quoted, block and custom-tagged (!foo) scalars are strings, as in go-yaml. */
  if (tag || e->data.scalar.style != YAML_PLAIN_SCALAR_STYLE || strlen(s) != n) {
    lua_pushlstring(L, s, n);
    return;
  }
  rval v;
  resolve_plain(ld->schema, s, n, &v);
  if (v.k == K_STR)
    lua_pushlstring(L, s, n);
  else
    push_resolved(L, &v);
}

/* Deep copy of the value at the top (an alias use), keeping the marker metatables. */
static void copy_value(lua_State *L, int depth, const yaml_mark_t *m) {
  if (lua_type(L, -1) != LUA_TTABLE)
    return;
  if (depth > MAX_DEPTH)
    node_error(L, m, "nesting deeper than 1000 levels%s", "");
  luaL_checkstack(L, 6, "yaml: nesting too deep");
  int src = lua_gettop(L);
  lua_createtable(L, (int)lua_rawlen(L, src), 0);
  lua_pushnil(L);
  while (lua_next(L, src)) {
    copy_value(L, depth + 1, m);
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
  if (lua_getmetatable(L, src))
    lua_setmetatable(L, -2);
  lua_replace(L, src);
}

static void push_alias(lua_State *L, loader *ld, int depth) {
  const char *name = (const char *)ld->ev.data.alias.anchor;
  lua_getfield(L, ld->anchors, name);
  if (lua_isnil(L, -1))
    node_error(L, &ld->ev.start_mark, "unknown anchor '%s'", name);
  if (lua_rawequal(L, -1, ld->anchors))
    node_error(L, &ld->ev.start_mark, "alias *%s is used inside its own anchored node", name);
  lua_getfield(L, ld->sizes, name);
  long size = (long)lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (ld->copied + size > ALIAS_BUDGET + 10 * (ld->nodes - ld->copied))
    node_error(L, &ld->ev.start_mark,
               "aliases expand to too many nodes (at *%s; a \"billion laughs\" document?)", name);
  ld->copied += size;
  ld->nodes += size;
  copy_value(L, depth, &ld->ev.start_mark);
}

/* Anchor bookkeeping: the name is pushed below the value while the node is open. */
static void anchor_open(lua_State *L, loader *ld, const yaml_char_t *anchor) {
  if (!anchor)
    return;
  lua_pushstring(L, (const char *)anchor);
  lua_pushvalue(L, -1);
  lua_pushvalue(L, ld->anchors); /* the anchors table itself marks "open" */
  lua_rawset(L, ld->anchors);
}

static void anchor_close(lua_State *L, loader *ld, int had_anchor, long nodes_before) {
  if (!had_anchor)
    return;
  /* stack: ... name value */
  lua_pushvalue(L, -2);
  lua_pushvalue(L, -2);
  lua_rawset(L, ld->anchors);
  lua_pushvalue(L, -2);
  lua_pushinteger(L, ld->nodes - nodes_before);
  lua_rawset(L, ld->sizes);
  lua_remove(L, -2);
}

static void build_sequence(lua_State *L, loader *ld, int depth) {
  lua_newtable(L);
  lua_Integer i = 0;
  for (;;) {
    next_event(L, ld);
    if (ld->ev.type == YAML_SEQUENCE_END_EVENT)
      break;
    build_node(L, ld, depth + 1);
    lua_rawseti(L, -2, ++i);
  }
  luaL_setmetatable(L, ARRAY_MT);
}

/* ---- mapping keys and merges */

/* Go's strconv.FormatFloat(f, 'g', -1, 32): how sigs.k8s.io/yaml spells a float key. */
static void go_float32_text(char *buf, size_t size, double d) {
  if (isnan(d)) {
    snprintf(buf, size, ".nan");
    return;
  }
  if (isinf(d)) {
    snprintf(buf, size, d > 0 ? ".inf" : "-.inf");
    return;
  }
  float f = (float)d;
  if (isinf(f)) { /* beyond float32: Go prints +Inf, which sigs.k8s.io/yaml spells .inf */
    snprintf(buf, size, f > 0 ? ".inf" : "-.inf");
    return;
  }
  char t[64];
  int p = 1;
  for (; p < 9; p++) {
    snprintf(t, sizeof t, "%.*e", p - 1, (double)f);
    if ((float)strtod(t, NULL) == f)
      break;
  }
  snprintf(t, sizeof t, "%.*e", p - 1, (double)f);
  int exp = atoi(strchr(t, 'e') + 1);
  if (exp < -4 || exp >= 6)
    snprintf(buf, size, "%s", t);
  else
    snprintf(buf, size, "%.*f", p - 1 - exp > 0 ? p - 1 - exp : 0, (double)f);
}

/* Replace the key at the top with its string form, as sigs.k8s.io/yaml does for JSON. */
static void stringify_key(lua_State *L, const yaml_mark_t *m) {
  char buf[64];
  switch (lua_type(L, -1)) {
  case LUA_TSTRING:
    return;
  case LUA_TBOOLEAN:
    snprintf(buf, sizeof buf, "%s", lua_toboolean(L, -1) ? "true" : "false");
    break;
  case LUA_TNUMBER:
    if (lua_isinteger(L, -1))
      snprintf(buf, sizeof buf, "%lld", (long long)lua_tointeger(L, -1));
    else
      go_float32_text(buf, sizeof buf, lua_tonumber(L, -1));
    break;
  case LUA_TTABLE:
    node_error(L, m, "a mapping or sequence cannot be a mapping key%s", "");
    return;
  default:
    node_error(L, m, "null cannot be a mapping key%s", "");
    return;
  }
  lua_pop(L, 1);
  lua_pushstring(L, buf);
}

static int is_marked(lua_State *L, int idx, const char *mt) {
  if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx))
    return 0;
  luaL_getmetatable(L, mt);
  int same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same;
}

/* Copy the entries of mapping `src` into mapping `dst`; `overwrite` is go-yaml v2's rule,
 * otherwise keys already present win (the YAML merge-key spec). */
static void merge_into(lua_State *L, int dst, int src, int overwrite) {
  lua_pushnil(L);
  while (lua_next(L, src)) {
    lua_pushvalue(L, -2);
    int present = lua_rawget(L, dst) != LUA_TNIL;
    lua_pop(L, 1);
    if (overwrite || !present) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, dst);
    } else {
      lua_pop(L, 1);
    }
  }
}

/* The value of a `<<` key is at the top: a mapping or a list of mappings. In the
 * kubernetes schema it is applied now, overwriting (go-yaml v2, where earlier list items
 * win); in the core schema it is queued in `pending` and applied at the end. */
static void handle_merge(lua_State *L, loader *ld, int map, int *pending, const yaml_mark_t *m) {
  int v = lua_gettop(L);
  int list = is_marked(L, v, ARRAY_MT);
  if (!list && !is_marked(L, v, OBJECT_MT))
    node_error(L, m, "the value of a merge key << must be a mapping or a list of mappings%s", "");
  lua_Integer n = list ? (lua_Integer)lua_rawlen(L, v) : 1;
  for (lua_Integer i = 1; i <= n; i++) {
    if (list)
      lua_rawgeti(L, v, i);
    else
      lua_pushvalue(L, v);
    if (!is_marked(L, -1, OBJECT_MT))
      node_error(L, m, "the value of a merge key << must be a mapping or a list of mappings%s", "");
    lua_pop(L, 1);
  }
  if (ld->schema == SCHEMA_K8S) {
    for (lua_Integer i = n; i >= 1; i--) {
      if (list)
        lua_rawgeti(L, v, i);
      else
        lua_pushvalue(L, v);
      merge_into(L, map, lua_gettop(L), 1);
      lua_pop(L, 1);
    }
  } else {
    if (!*pending) {
      lua_newtable(L);
      lua_replace(L, *pending = map + 1);
    }
    for (lua_Integer i = 1; i <= n; i++) {
      if (list)
        lua_rawgeti(L, v, i);
      else
        lua_pushvalue(L, v);
      lua_rawseti(L, *pending, (lua_Integer)lua_rawlen(L, *pending) + 1);
    }
  }
  lua_pop(L, 1);
}

static int is_merge_key(const yaml_event_t *e) {
  if (e->type != YAML_SCALAR_EVENT || strcmp((const char *)e->data.scalar.value, "<<") != 0)
    return 0;
  const char *tag = (const char *)e->data.scalar.tag;
  if (tag)
    return strcmp(tag, TAG_PREFIX "merge") == 0;
  return e->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

/* The key event is current; push its string form and leave the value to the caller. */
static void build_key(lua_State *L, loader *ld, int depth, yaml_mark_t *m) {
  *m = ld->ev.start_mark;
  if (ld->ev.type == YAML_SCALAR_EVENT && ld->ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
      !ld->ev.data.scalar.tag) {
    rval v;
    const char *s = (const char *)ld->ev.data.scalar.value;
    resolve_plain(ld->schema, s, ld->ev.data.scalar.length, &v);
    /* sigs.k8s.io/yaml refuses uint64 keys; a float key would print differently. */
    if (v.k == K_UINT)
      node_error(L, m, "mapping key %s is beyond the 64-bit integer range", s);
  }
  build_node(L, ld, depth + 1);
  stringify_key(L, m);
}

static void build_mapping(lua_State *L, loader *ld, int depth) {
  lua_newtable(L);
  int map = lua_gettop(L);
  lua_pushnil(L); /* slot for the core schema's pending merges */
  int pending = 0;
  for (;;) {
    next_event(L, ld);
    if (ld->ev.type == YAML_MAPPING_END_EVENT)
      break;
    yaml_mark_t m = ld->ev.start_mark;
    if (is_merge_key(&ld->ev)) {
      next_event(L, ld);
      build_node(L, ld, depth + 1);
      handle_merge(L, ld, map, &pending, &m);
      continue;
    }
    build_key(L, ld, depth, &m);
    if (ld->schema == SCHEMA_CORE) {
      lua_pushvalue(L, -1);
      if (lua_rawget(L, map) != LUA_TNIL)
        node_error(L, &m, "duplicate mapping key '%s'", lua_tostring(L, -2));
      lua_pop(L, 1);
    }
    next_event(L, ld);
    build_node(L, ld, depth + 1);
    lua_rawset(L, map);
  }
  if (pending) {
    lua_Integer n = (lua_Integer)lua_rawlen(L, pending);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, pending, i);
      merge_into(L, map, lua_gettop(L), 0);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  luaL_setmetatable(L, OBJECT_MT);
}

/* Push the value of the node whose first event is current. */
static void build_node(lua_State *L, loader *ld, int depth) {
  if (depth > MAX_DEPTH)
    node_error(L, &ld->ev.start_mark, "nesting deeper than 1000 levels%s", "");
  luaL_checkstack(L, 10, "yaml: nesting too deep");
  long before = ld->nodes++;
  const yaml_char_t *anchor = NULL;
  switch (ld->ev.type) {
  case YAML_ALIAS_EVENT:
    ld->nodes--;
    push_alias(L, ld, depth);
    return;
  case YAML_SCALAR_EVENT:
    anchor = ld->ev.data.scalar.anchor;
    anchor_open(L, ld, anchor);
    push_scalar(L, ld);
    break;
  case YAML_SEQUENCE_START_EVENT:
    anchor = ld->ev.data.sequence_start.anchor;
    anchor_open(L, ld, anchor);
    build_sequence(L, ld, depth);
    break;
  case YAML_MAPPING_START_EVENT:
    anchor = ld->ev.data.mapping_start.anchor;
    anchor_open(L, ld, anchor);
    build_mapping(L, ld, depth);
    break;
  default:
    node_error(L, &ld->ev.start_mark, "unexpected parser event%s", "");
  }
  anchor_close(L, ld, anchor != NULL, before);
}

/* ------------------------------------------------------------------ load_all */

static enum schema check_schema(lua_State *L, int idx) {
  static const char *const names[] = {"kubernetes", "core", NULL};
  return luaL_checkoption(L, idx, "kubernetes", names) == 0 ? SCHEMA_K8S : SCHEMA_CORE;
}

/* load_all(text [, schema]) -> array of documents (an empty document is null). */
static int yaml_load_all(lua_State *L) {
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  enum schema sc = check_schema(L, 2);
  lua_settop(L, 1);
  loader *ld = lua_newuserdatauv(L, sizeof *ld, 0);
  memset(ld, 0, sizeof *ld);
  luaL_setmetatable(L, LOADER_MT);
  if (!yaml_parser_initialize(&ld->parser))
    return luaL_error(L, "yaml: not enough memory");
  ld->parser_live = 1;
  ld->input = text, ld->len = len, ld->schema = sc;
  yaml_parser_set_input_string(&ld->parser, (const unsigned char *)text, len);
  lua_newtable(L); /* 3: documents */
  lua_newtable(L); /* 4: anchors */
  lua_newtable(L); /* 5: sizes */
  ld->anchors = 4, ld->sizes = 5;
  lua_Integer n = 0;
  for (;;) {
    next_event(L, ld);
    if (ld->ev.type == YAML_STREAM_END_EVENT)
      break;
    if (ld->ev.type != YAML_DOCUMENT_START_EVENT)
      continue;
    /* Anchors belong to one document. */
    lua_newtable(L);
    lua_replace(L, 4);
    lua_newtable(L);
    lua_replace(L, 5);
    next_event(L, ld);
    build_node(L, ld, 1);
    lua_rawseti(L, 3, ++n);
    next_event(L, ld); /* DOCUMENT_END */
  }
  loader_free(ld);
  lua_settop(L, 3);
  luaL_setmetatable(L, ARRAY_MT);
  return 1;
}

/* ------------------------------------------------------------------ dumping */

typedef struct {
  yaml_emitter_t emitter;
  int emitter_live;
  char *buf;
  size_t len, cap;
  int path; /* stack index of the path table (keys from the root, for errors) */
} dumper;

static void dumper_free(dumper *d) {
  if (d->emitter_live)
    yaml_emitter_delete(&d->emitter);
  d->emitter_live = 0;
  free(d->buf);
  d->buf = NULL;
}

static int dumper_gc(lua_State *L) {
  dumper_free(luaL_checkudata(L, 1, DUMPER_MT));
  return 0;
}

static int write_handler(void *data, unsigned char *bytes, size_t size) {
  dumper *d = data;
  if (d->len + size > d->cap) {
    size_t cap = d->cap ? d->cap : 4096;
    while (cap < d->len + size)
      cap *= 2;
    char *nb = realloc(d->buf, cap);
    if (!nb)
      return 0;
    d->buf = nb, d->cap = cap;
  }
  memcpy(d->buf + d->len, bytes, size);
  d->len += size;
  return 1;
}

/* "spec.containers[2].image" from the path table, for error messages. */
static const char *path_text(lua_State *L, dumper *d) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  lua_Integer n = (lua_Integer)lua_rawlen(L, d->path);
  if (n == 0)
    luaL_addstring(&b, "(root)");
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, d->path, i);
    if (lua_isinteger(L, -1)) {
      lua_pushfstring(L, "[%d]", (int)lua_tointeger(L, -1));
    } else {
      lua_pushfstring(L, "%s%s", i > 1 ? "." : "", lua_tostring(L, -1));
    }
    lua_remove(L, -2);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  return lua_tostring(L, -1);
}

static int dump_error(lua_State *L, dumper *d, const char *msg) {
  const char *where = path_text(L, d);
  lua_pushfstring(L, "yaml.dump: %s: %s", where, msg);
  return lua_error(L);
}

static void emit(lua_State *L, dumper *d, yaml_event_t *e) {
  if (!yaml_emitter_emit(&d->emitter, e))
    dump_error(L, d, d->emitter.problem ? d->emitter.problem : "cannot write YAML");
}

/* Would a reader take this plain text for something other than a string? Checked against
 * both schemas, and against YAML 1.1 timestamps and base-60 numbers (12:30) which other
 * readers (PyYAML) still resolve. */
static int needs_quotes(const char *s, size_t n) {
  rval v;
  resolve_k8s(s, n, &v);
  if (v.k != K_STR)
    return 1;
  resolve_core(s, n, &v);
  if (v.k != K_STR)
    return 1;
  if (strcmp(s, "<<") == 0 || strcmp(s, "=") == 0)
    return 1;
  if (n && isdigit((unsigned char)s[0]) && strspn(s, "0123456789:-+._eETtZz ") == n)
    return 1;
  static const char *const words[] = {"yes",   "no",   "on", "off", "true",
                                      "false", "null", "y",  "n",   NULL};
  for (const char *const *w = words; *w; w++)
    if (strcasecmp(s, *w) == 0)
      return 1;
  return 0;
}

static void emit_scalar(lua_State *L, dumper *d, const char *s, size_t n, int plain_ok) {
  yaml_event_t e;
  yaml_scalar_style_t style = YAML_ANY_SCALAR_STYLE;
  if (memchr(s, '\n', n))
    style = YAML_LITERAL_SCALAR_STYLE;
  if (n > 0x7fffffff)
    dump_error(L, d, "string longer than 2 GiB");
  if (!yaml_scalar_event_initialize(&e, NULL, NULL, (yaml_char_t *)s, (int)n, plain_ok, 1, style))
    dump_error(L, d, "string is not valid UTF-8");
  emit(L, d, &e);
}

/* Floats are written so that every reader sees a float: 1.0, 1.0e+20, .inf, .nan. */
static void float_text(char *buf, size_t size, double v) {
  if (isnan(v)) {
    snprintf(buf, size, ".nan");
    return;
  }
  if (isinf(v)) {
    snprintf(buf, size, v > 0 ? ".inf" : "-.inf");
    return;
  }
  for (int p = 1; p <= 17; p++) {
    snprintf(buf, size, "%.*g", p, v);
    if (strtod(buf, NULL) == v)
      break;
  }
  char *x = strchr(buf, 'e');
  int exp = x ? atoi(x + 1) : 0;
  if (x && exp >= 0 && exp < 16) /* 100 rather than 1e+02 */
    snprintf(buf, size, "%.*g", exp + 1, v);
  if (!strchr(buf, '.')) {
    char *e = strchr(buf, 'e');
    char tail[32] = "";
    if (e) {
      snprintf(tail, sizeof tail, "%s", e);
      *e = '\0';
    }
    size_t len = strlen(buf);
    snprintf(buf + len, size - len, ".0%s", tail);
  }
}

static void dump_value(lua_State *L, dumper *d, int idx, int depth);

static void dump_sequence(lua_State *L, dumper *d, int idx, lua_Integer n, int depth) {
  yaml_event_t e;
  yaml_sequence_start_event_initialize(&e, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE);
  emit(L, d, &e);
  lua_Integer slot = (lua_Integer)lua_rawlen(L, d->path) + 1;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_pushinteger(L, i);
    lua_rawseti(L, d->path, slot);
    lua_rawgeti(L, idx, i);
    dump_value(L, d, lua_gettop(L), depth + 1);
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  lua_rawseti(L, d->path, slot);
  yaml_sequence_end_event_initialize(&e);
  emit(L, d, &e);
}

typedef struct {
  const char *text;
  size_t len;
  lua_Integer slot;
} key_ref;

static int compare_key_refs(const void *pa, const void *pb) {
  const key_ref *a = pa, *b = pb;
  int c = memcmp(a->text, b->text, a->len < b->len ? a->len : b->len);
  return c ? c : (a->len > b->len) - (a->len < b->len);
}

/* Push `origs` (slot -> the key as stored) and `order` (a key_ref array sorted by the key's
 * text) for the mapping at idx. Sorted keys make the output reproducible, and it is the
 * order kubectl prints. Key texts stay alive in `texts`, also pushed. */
static key_ref *sorted_keys(lua_State *L, dumper *d, int idx, lua_Integer *count) {
  lua_newtable(L);
  int origs = lua_gettop(L);
  lua_newtable(L);
  int texts = origs + 1;
  lua_Integer n = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    int t = lua_type(L, -1);
    if (t == LUA_TBOOLEAN)
      lua_pushstring(L, lua_toboolean(L, -1) ? "true" : "false");
    else if (t == LUA_TSTRING || t == LUA_TNUMBER)
      luaL_tolstring(L, -1, NULL);
    else
      dump_error(L, d, lua_pushfstring(L, "a %s cannot be a mapping key", luaL_typename(L, -1)));
    lua_rawseti(L, texts, ++n);
    lua_pushvalue(L, -1);
    lua_rawseti(L, origs, n);
  }
  key_ref *refs = lua_newuserdatauv(L, sizeof(key_ref) * (size_t)(n ? n : 1), 0);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, texts, i);
    refs[i - 1].text = lua_tolstring(L, -1, &refs[i - 1].len);
    refs[i - 1].slot = i;
    lua_pop(L, 1);
  }
  qsort(refs, (size_t)n, sizeof *refs, compare_key_refs);
  *count = n;
  return refs;
}

static void dump_mapping(lua_State *L, dumper *d, int idx, int depth) {
  yaml_event_t e;
  int top = lua_gettop(L);
  lua_Integer n;
  key_ref *refs = sorted_keys(L, d, idx, &n);
  int origs = top + 1;
  yaml_mapping_start_event_initialize(&e, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE);
  emit(L, d, &e);
  lua_Integer slot = (lua_Integer)lua_rawlen(L, d->path) + 1;
  for (lua_Integer i = 0; i < n; i++) {
    const char *k = refs[i].text;
    lua_pushlstring(L, k, refs[i].len);
    lua_rawseti(L, d->path, slot);
    emit_scalar(L, d, k, refs[i].len, !needs_quotes(k, refs[i].len));
    lua_rawgeti(L, origs, refs[i].slot);
    lua_rawget(L, idx);
    dump_value(L, d, lua_gettop(L), depth + 1);
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  lua_rawseti(L, d->path, slot);
  lua_settop(L, top);
  yaml_mapping_end_event_initialize(&e);
  emit(L, d, &e);
}

static void dump_value(lua_State *L, dumper *d, int idx, int depth) {
  char buf[64];
  luaL_checkstack(L, 12, "yaml.dump: nesting too deep");
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    emit_scalar(L, d, "null", 4, 1);
    return;
  case LUA_TBOOLEAN:
    emit_scalar(L, d, lua_toboolean(L, idx) ? "true" : "false", lua_toboolean(L, idx) ? 4 : 5, 1);
    return;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx))
      snprintf(buf, sizeof buf, "%lld", (long long)lua_tointeger(L, idx));
    else
      float_text(buf, sizeof buf, lua_tonumber(L, idx));
    emit_scalar(L, d, buf, strlen(buf), 1);
    return;
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    emit_scalar(L, d, s, n, !needs_quotes(s, n));
    return;
  }
  case LUA_TTABLE: {
    if (depth > MAX_DEPTH)
      dump_error(L, d, "nesting deeper than 1000 levels (a cycle?)");
    lua_Integer n = mx_array_length(L, idx);
    if (n >= 0)
      dump_sequence(L, d, idx, n, depth);
    else
      dump_mapping(L, d, idx, depth);
    return;
  }
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == null_sentinel) {
      emit_scalar(L, d, "null", 4, 1);
      return;
    }
    /* fallthrough */
  default:
    dump_error(L, d, lua_pushfstring(L, "cannot dump a %s", luaL_typename(L, idx)));
  }
}

/* dump_all(list) -> text: each item of the list is one document. */
static int yaml_dump_all(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  dumper *d = lua_newuserdatauv(L, sizeof *d, 0); /* 2 */
  memset(d, 0, sizeof *d);
  luaL_setmetatable(L, DUMPER_MT);
  lua_newtable(L); /* 3: path */
  d->path = 3;
  if (!yaml_emitter_initialize(&d->emitter))
    return luaL_error(L, "yaml.dump: not enough memory");
  d->emitter_live = 1;
  yaml_emitter_set_output(&d->emitter, write_handler, d);
  yaml_emitter_set_unicode(&d->emitter, 1);
  yaml_emitter_set_width(&d->emitter, -1); /* no folding of long strings */
  yaml_emitter_set_indent(&d->emitter, 2);
  yaml_event_t e;
  yaml_stream_start_event_initialize(&e, YAML_UTF8_ENCODING);
  emit(L, d, &e);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
  for (lua_Integer i = 1; i <= n; i++) {
    yaml_document_start_event_initialize(&e, NULL, NULL, NULL, 1);
    emit(L, d, &e);
    lua_rawgeti(L, 1, i);
    dump_value(L, d, lua_gettop(L), 1);
    lua_pop(L, 1);
    yaml_document_end_event_initialize(&e, 1);
    emit(L, d, &e);
  }
  yaml_stream_end_event_initialize(&e);
  emit(L, d, &e);
  if (!yaml_emitter_flush(&d->emitter))
    return luaL_error(L, "yaml.dump: not enough memory");
  lua_pushlstring(L, d->buf ? d->buf : "", d->len);
  dumper_free(d);
  return 1;
}

/* resolve(text [, schema]) -> the value a plain scalar `text` stands for; and whether
 * dump would quote it. For tests and for tools that build YAML by hand. */
static int yaml_resolve(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  enum schema sc = check_schema(L, 2);
  rval v;
  resolve_plain(sc, s, n, &v);
  if (v.k == K_STR)
    lua_pushvalue(L, 1);
  else
    push_resolved(L, &v);
  lua_pushboolean(L, needs_quotes(s, n));
  return 2;
}

static const luaL_Reg yaml_funcs[] = {{"load_all", yaml_load_all},
                                      {"dump_all", yaml_dump_all},
                                      {"resolve", yaml_resolve},
                                      {NULL, NULL}};

int luaopen_myrmex_core_yaml(lua_State *L) {
  /* The markers and the null sentinel are myrmex.json's, so both modules agree. */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "myrmex.core.json");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "null");
  null_sentinel = lua_touserdata(L, -1);
  lua_pop(L, 2);
  luaL_newmetatable(L, LOADER_MT);
  lua_pushcfunction(L, loader_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, DUMPER_MT);
  lua_pushcfunction(L, dumper_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newlib(L, yaml_funcs);
  lua_pushlightuserdata(L, null_sentinel);
  lua_setfield(L, -2, "null");
  return 1;
}
