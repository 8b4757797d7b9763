/*
 * The parse half of myrmex.core.json for other bindings (bindings/scan.c): the same reading,
 * UTF-8 check, NUL handling and error messages as json.decode / json.decode_file, but the
 * cJSON tree is handed over instead of converted, so a binding can build its own tables
 * from it without a generic conversion of the whole document. And the print half for writers
 * in C (scan's SARIF): json.encode's numbers and json.quote's strings, printed the same way.
 */
#ifndef MYRMEX_JSON_H
#define MYRMEX_JSON_H

#include <stddef.h>

#include <cjson/cJSON.h>
#include <lua.h>

typedef struct {
  cJSON *root;
  /* 1 when the tree came from a NUL-marked copy: 0xFF in its strings stands for U+0000 */
  int marked;
  size_t size; /* bytes of text parsed */
  void *box;   /* the userdata holding the tree (freed by its __gc if not closed) */
} mx_json_doc;

/* Parse s[0..n): pushes the box that owns the tree; raises "json.decode: ..." on bad input. */
int mx_json_parse(lua_State *L, const char *s, size_t n, mx_json_doc *doc);
/* Parse a file: pushes the box; raises "json.decode_file: PATH: ..." as decode_file does. */
int mx_json_parse_file(lua_State *L, const char *path, mx_json_doc *doc);
/* Push `item` as json.decode would give it (consumes the item's children). */
void mx_json_push(lua_State *L, const mx_json_doc *doc, cJSON *item);
/* Free `item` and all below it now; its parent must no longer point at it (unlink it first). */
void mx_json_free(cJSON *item);
/* Free the tree now (the box stays valid and empty). */
void mx_json_close(mx_json_doc *doc);

/* json.encode's text of the number at idx into buf; NULL for NaN and infinities. */
const char *mx_json_number(lua_State *L, int idx, char *buf, size_t size);
/* json.quote(s) printed by cJSON into out, which has room for MX_JSON_QUOTE_ROOM(len) bytes
 * (s[len] is '\0'): the literal's length, or 0 when s has a NUL or is not valid UTF-8. The room
 * is the worst case (six bytes per input byte, \u00XX) plus the quotes, the terminating NUL
 * and the one byte more that cJSON's printer asks for than it writes. */
#define MX_JSON_QUOTE_ROOM(len) (6 * (len) + 8)
size_t mx_json_quote_into(const char *s, size_t len, char *out);

#endif
