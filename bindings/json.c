/*
 * myrmex.core.json: JSON <-> Lua through cJSON.
 *
 * Decoded arrays and objects carry marker metatables (json.array_mt / json.object_mt) so
 * that `[]` and `{}` survive a round trip; JSON null is the light-userdata sentinel
 * json.null (other bindings, such as YAML, take it from require("myrmex.core.json").null). Lua
 * integers are written as exact 64-bit integers (cJSON would print them through a double); decoded
 * numbers that are integral and within +-2^53 come back as Lua integers.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <cjson/cJSON.h>
#if CJSON_NESTING_LIMIT != 1000
#error "decode relies on cJSON refusing nesting deeper than MAX_DEPTH (1000)"
#endif
#include <lauxlib.h>
#include <lua.h>

#include "json.h"
#include "lib/tables.h"

#define ARRAY_MT MX_ARRAY_MT
#define OBJECT_MT MX_OBJECT_MT
#define TREE_MT "myrmex.json.tree"

/*
 * Decoding allocates cJSON's tree from an arena of 1 MiB blocks (cJSON's allocation hooks): a
 * tree node costs its 64 bytes instead of malloc's 80, strings lose their chunk header too,
 * which makes the tree of a large document about a quarter smaller. Blocks are aligned to
 * their size, so a pointer finds its block by masking; each block counts its live
 * allocations and is unmapped when the last one is freed. The tree is converted in document
 * order, the order it was allocated in, so blocks are returned while the Lua tables grow.
 */
#define BLOCK_SIZE ((size_t)1 << 20)
#define BIG_ALLOC (BLOCK_SIZE / 8)

typedef struct arena arena;
typedef struct arena_block {
  struct arena_block *prev, *next;
  arena *owner;
  size_t size; /* bytes mapped, header included */
  size_t used; /* bump offset */
  size_t live; /* allocations not yet freed */
} arena_block;

struct arena {
  arena_block *blocks;
  arena_block *cur;
};

#define BLOCK_HEADER ((sizeof(arena_block) + 15) & ~(size_t)15)

/* One emptied block is parked for the next decode instead of unmapped: a small document
 * (an API response, a watch event) then costs no mmap/munmap and no fresh page faults. Its
 * pages past the first SPARE_KEEP bytes are handed back, so a large decode leaves little
 * resident. Decoding is single-threaded, like the cJSON hooks it runs under. */
#define SPARE_KEEP ((size_t)64 << 10)
static arena_block *spare;

static arena_block *link_block(arena *a, arena_block *b, size_t size) {
  b->prev = NULL;
  b->next = a->blocks;
  b->owner = a;
  b->size = size;
  b->used = BLOCK_HEADER;
  b->live = 0;
  if (a->blocks)
    a->blocks->prev = b;
  a->blocks = b;
  return b;
}

static arena_block *map_block(arena *a, size_t size) {
  if (size == BLOCK_SIZE && spare) {
    arena_block *b = spare;
    spare = NULL;
    return link_block(a, b, size);
  }
  size_t total = size + BLOCK_SIZE;
  char *raw = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED)
    return NULL;
  char *start = raw + (BLOCK_SIZE - (uintptr_t)raw % BLOCK_SIZE) % BLOCK_SIZE;
  if (start > raw)
    munmap(raw, (size_t)(start - raw));
  if (raw + total > start + size)
    munmap(start + size, (size_t)(raw + total - (start + size)));
  return link_block(a, (arena_block *)(void *)start, size);
}

static void unmap_block(arena_block *b) {
  arena *a = b->owner;
  if (b->prev)
    b->prev->next = b->next;
  else
    a->blocks = b->next;
  if (b->next)
    b->next->prev = b->prev;
  if (a->cur == b)
    a->cur = NULL;
  if (b->size == BLOCK_SIZE && !spare) {
    if (b->used > SPARE_KEEP)
      madvise((char *)b + SPARE_KEEP, BLOCK_SIZE - SPARE_KEEP, MADV_DONTNEED);
    spare = b;
    return;
  }
  munmap(b, b->size);
}

/* 8-byte aligned: cJSON stores only its nodes (pointers, doubles) and chars here. */
static void *arena_alloc(arena *a, size_t n) {
  n = (n + 7) & ~(size_t)7;
  if (n > BIG_ALLOC) {
    size_t page = 65536; /* a multiple of every page size, a divisor of BLOCK_SIZE */
    arena_block *big = map_block(a, (BLOCK_HEADER + n + page - 1) & ~(page - 1));
    if (!big)
      return NULL;
    big->live = 1;
    return (char *)big + BLOCK_HEADER;
  }
  arena_block *b = a->cur;
  if (!b || b->used + n > b->size) {
    b = map_block(a, BLOCK_SIZE);
    if (!b)
      return NULL;
    arena_block *old = a->cur;
    a->cur = b;
    if (old && old->live == 0)
      unmap_block(old);
  }
  void *p = (char *)b + b->used;
  b->used += n;
  b->live++;
  return p;
}

static void arena_free(void *p) {
  if (!p)
    return;
  arena_block *b = (arena_block *)(void *)((char *)p - (uintptr_t)p % BLOCK_SIZE);
  if (--b->live == 0 && b != b->owner->cur)
    unmap_block(b);
}

static void arena_destroy(arena *a) {
  while (a->blocks)
    unmap_block(a->blocks);
}

/* The arena cJSON allocates from; set only for the duration of one cJSON_Parse call (which
 * cannot raise a Lua error), the hooks being global. */
static arena *parsing_arena;
static void *hook_alloc(size_t n) {
  return arena_alloc(parsing_arena, n);
}

/* C memory held while Lua code may raise: freed by the box's __gc if it does. */
typedef struct {
  cJSON *tree;
  char *text;
  char *marked; /* the text with \u0000 escapes replaced by 0xFF (see mark_nuls) */
  arena arena;
} json_box;

static json_box *new_box(lua_State *L) {
  json_box *box = lua_newuserdatauv(L, sizeof(json_box), 0);
  box->tree = NULL;
  box->text = NULL;
  box->marked = NULL;
  box->arena.blocks = box->arena.cur = NULL;
  luaL_setmetatable(L, TREE_MT);
  return box;
}
#define MAX_DEPTH 1000

/* The null sentinel: a light userdata to a private address, one for the whole process. */
static const char null_sentinel = 0;
#define JSON_NULL ((void *)&null_sentinel)

static int is_null(lua_State *L, int idx) {
  return lua_islightuserdata(L, idx) && lua_touserdata(L, idx) == JSON_NULL;
}

/* ---- decode ---- */

static void push_value(lua_State *L, cJSON *item, int depth);

/* Set while a tree parsed from a NUL-marked text is converted: 0xFF in its strings stands for
 * U+0000 (see mark_nuls). Decoding is single-threaded, like the cJSON hooks. */
static int converting_marked;

/* cJSON strings end at their first NUL, so a decoded U+0000 would cut the string there. In a
 * marked tree 0xFF, a byte valid UTF-8 never holds, stands for it and is turned back here. */
static void push_string(lua_State *L, const char *s) {
  size_t n = strlen(s);
  if (!converting_marked || !strchr(s, (char)0xFF)) {
    lua_pushlstring(L, s, n);
    return;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < n; i++)
    luaL_addchar(&b, (unsigned char)s[i] == 0xFF ? '\0' : s[i]);
  luaL_pushresult(&b);
}

/* Stack slots of the marker metatables during a conversion (see convert). */
#define ARRAY_MT_SLOT 2
#define OBJECT_MT_SLOT 3

static void push_number(lua_State *L, double d) {
  if (floor(d) == d && fabs(d) <= 9007199254740992.0)
    lua_pushinteger(L, (lua_Integer)d);
  else
    lua_pushnumber(L, d);
}

/* Each child is freed as soon as it is converted, so the cJSON tree shrinks while the Lua
 * tables grow: a large report never has both whole in memory at once. Tables are created at
 * their final size (no rehash while filling). */
static void push_container(lua_State *L, cJSON *item, int depth) {
  int array = cJSON_IsArray(item);
  int n = 0;
  for (cJSON *c = item->child; c; c = c->next)
    n++;
  lua_createtable(L, array ? n : 0, array ? 0 : n);
  lua_Integer i = 0;
  cJSON *c;
  while ((c = item->child) != NULL) {
    push_value(L, c, depth + 1);
    if (array) {
      lua_rawseti(L, -2, ++i);
    } else {
      push_string(L, c->string);
      lua_insert(L, -2);
      lua_rawset(L, -3);
    }
    item->child = c->next;
    arena_free(c->valuestring);
    arena_free(c->string);
    arena_free(c);
  }
  lua_pushvalue(L, array ? ARRAY_MT_SLOT : OBJECT_MT_SLOT);
  lua_setmetatable(L, -2);
}

static void push_value(lua_State *L, cJSON *item, int depth) {
  if (depth > MAX_DEPTH)
    luaL_error(L, "json.decode: nesting deeper than %d levels", MAX_DEPTH);
  luaL_checkstack(L, 4, "json.decode: nesting too deep");
  if (cJSON_IsString(item))
    push_string(L, item->valuestring);
  else if (cJSON_IsNumber(item))
    push_number(L, item->valuedouble);
  else if (cJSON_IsBool(item))
    lua_pushboolean(L, cJSON_IsTrue(item));
  else if (cJSON_IsNull(item))
    lua_pushlightuserdata(L, JSON_NULL);
  else
    push_container(L, item, depth);
}

/* The protected part of a decode: (root) -> value. */
static int convert(lua_State *L) {
  cJSON *root = lua_touserdata(L, 1);
  luaL_getmetatable(L, ARRAY_MT);
  luaL_getmetatable(L, OBJECT_MT);
  push_value(L, root, 0);
  return 1;
}

/* cJSON accepts any byte inside strings; JSON text must be UTF-8, so check it first. */
static size_t invalid_utf8_at(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    /* ASCII, most of any JSON text, eight bytes at a time */
    uint64_t word;
    while (i + 8 <= n && (memcpy(&word, s + i, 8), (word & 0x8080808080808080ULL) == 0))
      i += 8;
    if (i >= n)
      break;
    unsigned c = s[i];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > n || (len == 2 && c < 0xC2) || (len == 4 && c > 0xF4))
      return i;
    for (size_t k = 1; k < len; k++)
      if ((s[i + k] & 0xC0) != 0x80)
        return i;
    if (len == 3 && ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] >= 0xA0)))
      return i;
    if (len == 4 && ((c == 0xF0 && s[i + 1] < 0x90) || (c == 0xF4 && s[i + 1] >= 0x90)))
      return i;
    i += len;
  }
  return (size_t)-1;
}

/* Where the nesting first goes deeper than MAX_DEPTH. cJSON stops there itself (its nesting
 * limit is the same 1000), so this runs only to say why a parse failed. */
static size_t too_deep_at(const char *s, size_t n) {
  int depth = 0, in_string = 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (in_string) {
      if (c == '\\')
        i++;
      else if (c == '"')
        in_string = 0;
    } else if (c == '"') {
      in_string = 1;
    } else if (c == '[' || c == '{') {
      if (++depth > MAX_DEPTH)
        return i;
    } else if (c == ']' || c == '}') {
      depth--;
    }
  }
  return (size_t)-1;
}

/* Parse s[0..n) into a tree allocated from the box's arena; NULL and msg (what is wrong, with
 * byte offsets counted from `base` bytes before s: a skipped byte-order mark) on bad input. */
static cJSON *parse_text(json_box *box, const char *s, size_t n, size_t base, char *msg,
                         size_t size) {
  size_t bad = invalid_utf8_at((const unsigned char *)s, n);
  if (bad != (size_t)-1) {
    snprintf(msg, size, "invalid UTF-8 at byte %zu", base + bad + 1);
    return NULL;
  }
  const char *end = NULL;
  cJSON_Hooks hooks = {hook_alloc, arena_free};
  parsing_arena = &box->arena;
  cJSON_InitHooks(&hooks);
  cJSON *root = cJSON_ParseWithLengthOpts(s, n, &end, 0);
  cJSON_InitHooks(NULL);
  parsing_arena = NULL;
  size_t at = end ? (size_t)(end - s) : 0;
  if (root == NULL) {
    size_t deep = too_deep_at(s, n);
    if (deep != (size_t)-1 && deep <= at) {
      snprintf(msg, size, "nesting deeper than %d levels at byte %zu", MAX_DEPTH, base + deep + 1);
      return NULL;
    }
    if (at >= n) {
      snprintf(msg, size, "unexpected end of input at byte %zu", base + n);
      return NULL;
    }
    char near[17];
    size_t k = 0;
    for (; k < 16 && at + k < n && s[at + k] != '\n'; k++)
      near[k] = s[at + k];
    near[k] = '\0';
    snprintf(msg, size, "invalid JSON at byte %zu near '%s'", base + at + 1, near);
    return NULL;
  }
  /* Only whitespace may follow the value. */
  while (at < n && strchr(" \t\r\n", s[at]))
    at++;
  if (at < n) {
    snprintf(msg, size, "trailing data at byte %zu", base + at + 1);
    return NULL;
  }
  return root;
}

/* Whether the valid JSON text s[0..n) has a \u0000 escape (not an escaped backslash followed
 * by "u0000"); when `out` is given, the text is copied there with each such escape replaced by
 * the one byte 0xFF, and the copy's length returned. */
static size_t mark_nuls(const char *s, size_t n, char *out) {
  size_t found = 0, k = 0;
  int in_string = 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (in_string && c == '\\') {
      if (i + 5 < n && memcmp(s + i + 1, "u0000", 5) == 0) {
        found++;
        if (out)
          out[k++] = (char)0xFF;
        i += 5;
        continue;
      }
      if (out)
        out[k++] = c;
      c = s[++i];
    } else if (c == '"') {
      in_string = !in_string;
    }
    if (out)
      out[k++] = c;
  }
  return out ? k : found;
}

/* Whether "\u0000" occurs in s[0..n). memchr to each backslash and a compare there: a
 * twentieth of glibc's memmem's instructions on report text, where backslashes are rare
 * (escaped quotes and newlines of descriptions). */
static int has_nul_escape(const char *s, size_t n) {
  const char *end = s + n;
  for (const char *p = s; (p = memchr(p, '\\', (size_t)(end - p))) != NULL; p++)
    if ((size_t)(end - p) >= 6 && memcmp(p, "\\u0000", 6) == 0)
      return 1;
  return 0;
}

/* A text with U+0000 in a string is parsed again from its marked copy (rare: only then is the
 * text scanned twice). Errors were already reported by the first parse, with true offsets.
 * Sets converting_marked for the conversion that follows. */
static cJSON *reparse_marked(json_box *box, cJSON *root, const char *s, size_t n) {
  converting_marked = 0;
  if (!has_nul_escape(s, n) || mark_nuls(s, n, NULL) == 0)
    return root;
  converting_marked = 1;
  box->marked = malloc(n + 1);
  if (!box->marked)
    return NULL;
  size_t m = mark_nuls(s, n, box->marked);
  arena_destroy(&box->arena);
  cJSON_Hooks hooks = {hook_alloc, arena_free};
  parsing_arena = &box->arena;
  cJSON_InitHooks(&hooks);
  root = cJSON_ParseWithLengthOpts(box->marked, m, NULL, 0);
  cJSON_InitHooks(NULL);
  parsing_arena = NULL;
  free(box->marked);
  box->marked = NULL;
  return root;
}

/* Documents from this many bytes up are converted with the collector stopped: the conversion
 * makes no garbage, so every step it took would only re-traverse the growing tables. Below it
 * the collector is left alone, because restarting it sets its debt to zero and so forces a
 * collection on the next allocation: one per API response or watch event otherwise. */
#define STOP_GC_FROM ((size_t)1 << 20)

/* Convert the tree to Lua and free it. */
static int push_tree(lua_State *L, json_box *box, cJSON *root, size_t text_size) {
  int running = text_size >= STOP_GC_FROM && lua_gc(L, LUA_GCISRUNNING);
  if (running)
    lua_gc(L, LUA_GCSTOP);
  lua_pushcfunction(L, convert);
  lua_pushlightuserdata(L, root);
  int status = lua_pcall(L, 1, 1, 0);
  converting_marked = 0;
  if (running)
    lua_gc(L, LUA_GCRESTART);
  arena_destroy(&box->arena);
  if (status != LUA_OK)
    return lua_error(L);
  return 1;
}

/* Parse text into a tree held by a box pushed on the stack; raises as json.decode does. */
static cJSON *parse_pushed(lua_State *L, const char *s, size_t n, mx_json_doc *doc) {
  json_box *box = new_box(L);
  char msg[96];
  cJSON *root = parse_text(box, s, n, 0, msg, sizeof msg);
  if (!root)
    luaL_error(L, "json.decode: %s", msg);
  cJSON *marked = reparse_marked(box, root, s, n);
  if (!marked)
    luaL_error(L, "json.decode: not enough memory");
  doc->root = marked;
  doc->marked = converting_marked;
  doc->box = box;
  doc->size = n;
  converting_marked = 0;
  return marked;
}

int mx_json_parse(lua_State *L, const char *s, size_t n, mx_json_doc *doc) {
  parse_pushed(L, s, n, doc);
  return 1;
}

static int json_decode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  mx_json_doc doc = {0};
  parse_pushed(L, s, n, &doc);
  converting_marked = doc.marked;
  return push_tree(L, doc.box, doc.root, n);
}

/* Read a whole file into box->text (its length into *n); NULL, or what failed. The size is
 * taken from the file, then the rest read in doubling chunks if it turns out longer (a pipe,
 * a file still being written). */
static const char *read_file(const char *path, json_box *box, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return strerror(errno);
  size_t cap = 65536;
  *n = 0;
  if (fseek(f, 0, SEEK_END) == 0) {
    long size = ftell(f);
    if (size > 0)
      cap = (size_t)size + 1;
    rewind(f);
  }
  box->text = malloc(cap);
  while (box->text) {
    *n += fread(box->text + *n, 1, cap - *n, f);
    if (*n < cap)
      break;
    char *more = realloc(box->text, cap *= 2);
    if (!more)
      free(box->text);
    box->text = more;
  }
  int failed = ferror(f);
  fclose(f);
  if (!box->text)
    return "not enough memory";
  return failed ? "read error" : NULL;
}

/* Like decode, from a file: the text is freed as soon as cJSON has parsed it (cJSON copies
 * the strings), so it is never alive together with the Lua tables. */
int mx_json_parse_file(lua_State *L, const char *path, mx_json_doc *doc) {
  json_box *box = new_box(L);
  size_t n = 0;
  const char *err = read_file(path, box, &n);
  if (err || !box->text)
    return luaL_error(L, "json.decode_file: cannot open %s: %s", path, err ? err : "?");
  /* RFC 8259 lets a parser ignore a UTF-8 byte-order mark; Windows editors write one. */
  size_t skip = n >= 3 && memcmp(box->text, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
  char msg[96];
  cJSON *root = parse_text(box, box->text + skip, n - skip, skip, msg, sizeof msg);
  if (!root)
    return luaL_error(L, "json.decode_file: %s: %s", path, msg);
  cJSON *marked = reparse_marked(box, root, box->text + skip, n - skip);
  free(box->text);
  box->text = NULL;
  if (!marked)
    return luaL_error(L, "json.decode_file: %s: not enough memory", path);
  doc->root = marked;
  doc->marked = converting_marked;
  doc->box = box;
  doc->size = n;
  converting_marked = 0;
  return 1;
}

static int json_decode_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  mx_json_doc doc = {0};
  mx_json_parse_file(L, path, &doc);
  converting_marked = doc.marked;
  return push_tree(L, doc.box, doc.root, doc.size);
}

/* Converts one item as decode would (its children are freed as they are converted). */
void mx_json_push(lua_State *L, const mx_json_doc *doc, cJSON *item) {
  converting_marked = doc->marked;
  lua_pushcfunction(L, convert);
  lua_pushlightuserdata(L, item);
  lua_call(L, 1, 1);
  converting_marked = 0;
}

/* Each node and string goes back to its arena block, so the blocks of a part of the document
 * already read are unmapped while the rest is still being read. */
void mx_json_free(cJSON *item) {
  cJSON *c = item->child;
  while (c) {
    cJSON *next = c->next;
    mx_json_free(c);
    c = next;
  }
  arena_free(item->valuestring);
  arena_free(item->string);
  arena_free(item);
}

void mx_json_close(mx_json_doc *doc) {
  json_box *box = doc->box;
  arena_destroy(&box->arena);
  doc->root = NULL;
}

static int box_gc(lua_State *L) {
  json_box *box = luaL_checkudata(L, 1, TREE_MT);
  cJSON_Delete(box->tree);
  free(box->text);
  free(box->marked);
  arena_destroy(&box->arena);
  box->tree = NULL;
  box->text = NULL;
  box->marked = NULL;
  return 0;
}

/* ---- encode ---- */

/*
 * The tree is built top-down: each container is attached to its parent (the root to a box
 * whose __gc frees it) before its members are converted. A Lua error half-way (out of
 * memory, a failing __index) then leaves nothing unreachable: the whole partial tree hangs
 * from the box.
 */
typedef struct {
  int sort_keys;
  int indent;
  const char *err;
  char msg[64];
  json_box *box;
  int nul; /* a string had a NUL byte: 0xFF stands for it in the tree (see nul_marked) */
} encode_opts;

static int to_json(lua_State *L, int idx, int depth, encode_opts *o, cJSON *parent,
                   const char *key);

/* Attach v to parent (under key for an object) or make it the root; NULL when v is NULL (a
 * failed cJSON allocation) or cannot be attached, v then being freed. */
static cJSON *place(encode_opts *o, cJSON *parent, const char *key, cJSON *v) {
  if (v && !parent) {
    o->box->tree = v;
    return v;
  }
  if (v && (key ? cJSON_AddItemToObject(parent, key, v) : cJSON_AddItemToArray(parent, v)))
    return v;
  cJSON_Delete(v);
  if (!o->err)
    o->err = "not enough memory";
  return NULL;
}

/* cJSON strings end at their first NUL, so a string with NUL bytes goes into the tree with
 * 0xFF in their place (a byte valid UTF-8 never has) and the printed text gets \u0000 back
 * (nul_expand): what json.decode reads from \u0000 encodes again. The marked copy is pushed on
 * the stack, where it stays until the caller pops it. */
static const char *nul_marked(lua_State *L, const char *s, size_t len) {
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, len);
  memcpy(p, s, len);
  for (char *z = memchr(p, 0, len); z; z = memchr(z, 0, len - (size_t)(z - p)))
    memset(z, 0xFF, 1);
  luaL_pushresultsize(&b, len);
  return lua_tostring(L, -1);
}

/* Push `text` with every 0xFF marker written as \u0000. */
static void nul_expand(lua_State *L, const char *text) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (const char *p = text; *p; p++) {
    if ((unsigned char)*p == 0xFF)
      luaL_addstring(&b, "\\u0000");
    else
      luaL_addchar(&b, *p);
  }
  luaL_pushresult(&b);
}

typedef struct {
  const char *s;
  size_t len;
} json_key;

static int cmp_key(const void *a, const void *b) {
  const json_key *x = a, *y = b;
  int c = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);
  return c ? c : (x->len > y->len) - (x->len < y->len);
}

static int object_to_json(lua_State *L, int idx, int depth, encode_opts *o, cJSON *parent,
                          const char *key) {
  int n = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) {
      lua_pop(L, 1);
      o->err = "table key is not a string (mixed or sparse table?)";
      return 0;
    }
    n++;
  }
  cJSON *obj = place(o, parent, key, cJSON_CreateObject());
  if (!obj)
    return 0;
  /* Keys are collected so that sort_keys gives byte-for-byte reproducible output; the array
   * is a userdata so that it is collected whatever happens next. The strings are anchored by
   * the table being encoded. */
  json_key *keys = lua_newuserdatauv(L, sizeof(json_key) * (size_t)(n ? n : 1), 0);
  int k = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    keys[k].s = lua_tolstring(L, -1, &keys[k].len);
    k++;
  }
  if (o->sort_keys)
    qsort(keys, (size_t)n, sizeof(json_key), cmp_key);
  for (int i = 0; i < n; i++) {
    const char *name = keys[i].s;
    int marked = strlen(name) != keys[i].len;
    if (marked) {
      name = nul_marked(L, keys[i].s, keys[i].len);
      o->nul = 1;
    }
    lua_pushlstring(L, keys[i].s, keys[i].len);
    lua_gettable(L, idx);
    int ok = to_json(L, lua_gettop(L), depth + 1, o, obj, name);
    lua_pop(L, 1 + marked);
    if (!ok)
      return 0;
  }
  lua_pop(L, 1);
  return 1;
}

static int table_to_json(lua_State *L, int idx, int depth, encode_opts *o, cJSON *parent,
                         const char *key) {
  if (depth > MAX_DEPTH) {
    o->err = "nesting deeper than 1000 levels (a cycle?)";
    return 0;
  }
  if (!lua_checkstack(L, 6)) {
    o->err = "nesting too deep";
    return 0;
  }
  lua_Integer n = mx_array_length(L, idx);
  if (n < 0)
    return object_to_json(L, idx, depth, o, parent, key);
  cJSON *arr = place(o, parent, key, cJSON_CreateArray());
  if (!arr)
    return 0;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, idx, i);
    int ok = to_json(L, lua_gettop(L), depth + 1, o, arr, NULL);
    lua_pop(L, 1);
    if (!ok)
      return 0;
  }
  return 1;
}

/* The text of a number that reads back as the same number: integers as such, doubles in the
 * shortest of %.15g..%.17g that round-trips. NULL for NaN and infinities. */
const char *mx_json_number(lua_State *L, int idx, char *buf, size_t size) {
  if (lua_isinteger(L, idx)) {
    snprintf(buf, size, "%lld", (long long)lua_tointeger(L, idx));
    return buf;
  }
  double d = lua_tonumber(L, idx);
  if (isnan(d) || isinf(d))
    return NULL;
  snprintf(buf, size, "%.17g", d);
  for (int p = 15; p < 17; p++) {
    char t[32];
    snprintf(t, sizeof t, "%.*g", p, d);
    if (strtod(t, NULL) == d) {
      snprintf(buf, size, "%s", t);
      break;
    }
  }
  return buf;
}

static const char *number_text(lua_State *L, int idx, encode_opts *o, char *buf, size_t size) {
  const char *text = mx_json_number(L, idx, buf, size);
  if (!text)
    o->err = "cannot encode NaN or infinity";
  return text;
}

static int to_json(lua_State *L, int idx, int depth, encode_opts *o, cJSON *parent,
                   const char *key) {
  char buf[32];
  cJSON *v;
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    v = cJSON_CreateNull();
    break;
  case LUA_TBOOLEAN:
    v = cJSON_CreateBool(lua_toboolean(L, idx));
    break;
  case LUA_TNUMBER: {
    const char *text = number_text(L, idx, o, buf, sizeof buf);
    if (!text)
      return 0;
    v = cJSON_CreateRaw(text);
    break;
  }
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (invalid_utf8_at((const unsigned char *)s, len) != (size_t)-1) {
      o->err = "string is not valid UTF-8";
      return 0;
    }
    if (strlen(s) != len) {
      v = cJSON_CreateString(nul_marked(L, s, len));
      lua_pop(L, 1);
      o->nul = 1;
    } else {
      v = cJSON_CreateString(s);
    }
    break;
  }
  case LUA_TTABLE:
    return table_to_json(L, idx, depth, o, parent, key);
  case LUA_TLIGHTUSERDATA:
    if (is_null(L, idx)) {
      v = cJSON_CreateNull();
      break;
    }
    /* fallthrough */
  default:
    snprintf(o->msg, sizeof o->msg, "cannot encode a %s", luaL_typename(L, idx));
    o->err = o->msg;
    return 0;
  }
  return place(o, parent, key, v) != NULL;
}

static int json_encode(lua_State *L) {
  luaL_checkany(L, 1);
  encode_opts o = {0, 0, NULL, "", NULL, 0};
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "sort_keys");
    o.sort_keys = lua_toboolean(L, -1);
    lua_getfield(L, 2, "indent");
    o.indent = lua_toboolean(L, -1);
    lua_pop(L, 2);
  }
  lua_settop(L, 1);
  o.box = new_box(L);
  if (!to_json(L, 1, 0, &o, NULL, NULL))
    return luaL_error(L, "json.encode: %s", o.err);
  o.box->text = o.indent ? cJSON_Print(o.box->tree) : cJSON_PrintUnformatted(o.box->tree);
  cJSON_Delete(o.box->tree);
  o.box->tree = NULL;
  if (!o.box->text)
    return luaL_error(L, "json.encode: not enough memory");
  if (o.nul)
    nul_expand(L, o.box->text);
  else
    lua_pushstring(L, o.box->text);
  cJSON_free(o.box->text);
  o.box->text = NULL;
  return 1;
}

/* A string as a JSON string literal, printed by cJSON from a node on the stack that borrows
 * the Lua string (no copy): for writers that emit a large document piece by piece instead of
 * building its whole tree. Short strings are printed into a stack buffer. */
static int json_quote(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  if (invalid_utf8_at((const unsigned char *)s, len) != (size_t)-1)
    return luaL_error(L, "json.quote: string is not valid UTF-8");
  int marked = strlen(s) != len;
  if (marked)
    s = nul_marked(L, s, len);
  cJSON item;
  memset(&item, 0, sizeof item);
  item.type = cJSON_String;
  memcpy(&item.valuestring, &s, sizeof s); /* borrowed, never written: cJSON only prints it */
  char buf[4096];
  if (cJSON_PrintPreallocated(&item, buf, (int)sizeof buf, 0)) {
    if (marked)
      nul_expand(L, buf);
    else
      lua_pushstring(L, buf);
    return 1;
  }
  json_box *box = new_box(L);
  box->text = cJSON_PrintUnformatted(&item);
  if (!box->text)
    return luaL_error(L, "json.quote: not enough memory");
  if (marked)
    nul_expand(L, box->text);
  else
    lua_pushstring(L, box->text);
  free(box->text);
  box->text = NULL;
  return 1;
}

/* json.quote's text for a writer in C: cJSON prints the literal straight into `out` (room for
 * MX_JSON_QUOTE_ROOM(len) bytes, the worst case of six bytes per input byte) from a node that
 * borrows `s`. 0 for what json.quote does more than print (a NUL to mark, invalid UTF-8 to
 * raise on): the caller leaves that string to json.quote. */
size_t mx_json_quote_into(const char *s, size_t len, char *out) {
  if (strlen(s) != len || invalid_utf8_at((const unsigned char *)s, len) != (size_t)-1)
    return 0;
  cJSON item;
  memset(&item, 0, sizeof item);
  item.type = cJSON_String;
  memcpy(&item.valuestring, &s, sizeof s); /* borrowed, never written: cJSON only prints it */
  size_t room = MX_JSON_QUOTE_ROOM(len);
  if (room > INT_MAX || !cJSON_PrintPreallocated(&item, out, (int)room, 0))
    return 0;
  return strlen(out);
}

/* ---- markers ---- */

static int mark(lua_State *L, const char *mt) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  luaL_setmetatable(L, mt);
  return 1;
}

static int json_array(lua_State *L) {
  return mark(L, ARRAY_MT);
}
static int json_object(lua_State *L) {
  return mark(L, OBJECT_MT);
}

static int json_isnull(lua_State *L) {
  lua_pushboolean(L, is_null(L, 1));
  return 1;
}

static const luaL_Reg json_funcs[] = {{"decode", json_decode}, {"decode_file", json_decode_file},
                                      {"encode", json_encode}, {"quote", json_quote},
                                      {"array", json_array},   {"object", json_object},
                                      {"isnull", json_isnull}, {NULL, NULL}};

int luaopen_myrmex_core_json(lua_State *L) {
  luaL_newmetatable(L, TREE_MT);
  lua_pushcfunction(L, box_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, ARRAY_MT);
  lua_pushliteral(L, "array");
  lua_setfield(L, -2, "__name");
  luaL_newmetatable(L, OBJECT_MT);
  lua_pushliteral(L, "object");
  lua_setfield(L, -2, "__name");
  luaL_newlib(L, json_funcs);
  lua_pushlightuserdata(L, JSON_NULL);
  lua_setfield(L, -2, "null");
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "array_mt");
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "object_mt");
  return 1;
}
