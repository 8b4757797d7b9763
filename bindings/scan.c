/*
 * myrmex.core.scan: the fast path of myrmex.scan for the two things that cost the most on a
 * large report: normalizing a Trivy report into findings, and writing findings as CSV.
 *
 * The report is parsed by cJSON (bindings/json.h: the same reading, UTF-8 check, NUL handling
 * and error messages as json.decode_file) and the finding tables are built straight from the
 * tree, without the generic JSON -> Lua conversion of the whole report. Every rule is the one
 * of lua/myrmex/scan/trivy.lua and model.lua, bit for bit (tests/spec/scan_fast_spec.lua runs
 * both on every fixture and on malformed reports): a field of the wrong type is absent, a
 * duplicate key's last value wins, a list of strings keeps only its strings.
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <lauxlib.h>
#include <lua.h>

#include "json.h"
#include "lib/tables.h"

#define BUF_MT "myrmex.scan.buffer"

/* ---- reading the tree ---- */

typedef struct {
  const mx_json_doc *doc;
  int array_mt; /* stack index of the decoder's array metatable */
} reader;

static int is_table(const cJSON *v) {
  return v && (cJSON_IsArray(v) || cJSON_IsObject(v));
}

/* model.str: a non-empty string. */
static const char *str_of(const cJSON *v) {
  return v && cJSON_IsString(v) && v->valuestring[0] ? v->valuestring : NULL;
}

static int has_marker(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s == 0xFF)
      return 1;
  return 0;
}

/* A string of the tree as decode gives it: in a NUL-marked tree 0xFF stands for U+0000. */
static void push_text(lua_State *L, const reader *r, const char *s) {
  size_t n = strlen(s);
  if (!r->doc->marked || !has_marker(s)) {
    lua_pushlstring(L, s, n);
    return;
  }
  char *copy = lua_newuserdatauv(L, n, 0);
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if ((unsigned char)c == 0xFF)
      c = '\0';
    copy[i] = c;
  }
  lua_pushlstring(L, copy, n);
  lua_remove(L, -2);
}

/* t[key] = str(v) when there is one. */
static void set_str(lua_State *L, const reader *r, const char *key, const cJSON *v) {
  const char *s = str_of(v);
  if (s) {
    push_text(L, r, s);
    lua_setfield(L, -2, key);
  }
}

/* An object's members by name, each the last of its name (a Lua table keeps the last of a
 * duplicate key). `out` gets NULL for absent names and for every name of a non-object. */
static void fields(const cJSON *obj, const char *const *names, int n, const cJSON **out) {
  for (int i = 0; i < n; i++)
    out[i] = NULL;
  if (!obj || !cJSON_IsObject(obj))
    return;
  for (const cJSON *c = obj->child; c; c = c->next)
    for (int i = 0; i < n; i++)
      if (c->string[0] == names[i][0] && strcmp(c->string, names[i]) == 0) {
        out[i] = c;
        break;
      }
}

static const cJSON *field(const cJSON *obj, const char *name) {
  const cJSON *v;
  fields(obj, &name, 1, &v);
  return v;
}

/* A decoded number as decode pushes it: an integer when integral and within +-2^53. */
static int integral(double d) {
  return floor(d) == d && fabs(d) <= 9007199254740992.0;
}
static void push_num(lua_State *L, double d) {
  if (integral(d))
    lua_pushinteger(L, (lua_Integer)d);
  else
    lua_pushnumber(L, d);
}

/* model.score: a number from 0 to 10. */
static int score_of(const cJSON *v, double *out) {
  if (!v || !cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= 10))
    return 0;
  *out = v->valuedouble;
  return 1;
}

/* math.type(v) == "integer" for a decoded number. */
static int int_of(const cJSON *v, lua_Integer *out) {
  if (!v || !cJSON_IsNumber(v) || !integral(v->valuedouble))
    return 0;
  *out = (lua_Integer)v->valuedouble;
  return 1;
}

/* Lua's type() of a decoded value, for the messages about dropped entries. */
static const char *lua_type_of(const cJSON *v) {
  if (cJSON_IsString(v))
    return "string";
  if (cJSON_IsNumber(v))
    return "number";
  if (cJSON_IsBool(v))
    return "boolean";
  if (cJSON_IsNull(v))
    return "userdata"; /* json.null is a light userdata */
  return "table";
}

/* model.strings: the list itself when it holds only strings (decoded: an array table with the
 * array metatable; an object decodes as itself too, its length being 0), only its strings when
 * it holds other things, {} when it is no table. */
static void push_strings(lua_State *L, const reader *r, cJSON *v) {
  if (!is_table(v)) {
    lua_newtable(L);
    return;
  }
  if (cJSON_IsObject(v)) {
    mx_json_push(L, r->doc, v);
    return;
  }
  int n = 0, all = 1;
  for (const cJSON *c = v->child; c; c = c->next) {
    n++;
    all = all && cJSON_IsString(c);
  }
  lua_createtable(L, n, 0);
  lua_Integer i = 0;
  for (const cJSON *c = v->child; c; c = c->next)
    if (cJSON_IsString(c)) {
      push_text(L, r, c->valuestring);
      lua_rawseti(L, -2, ++i);
    }
  if (all) {
    lua_pushvalue(L, r->array_mt);
    lua_setmetatable(L, -2);
  }
}

/* ---- model.severity and model.ecosystem ---- */

static const char *const SEVERITY_ALIASES[][2] = {
    {"CRITICAL", "CRITICAL"}, {"HIGH", "HIGH"},
    {"MEDIUM", "MEDIUM"},     {"MODERATE", "MEDIUM"},
    {"LOW", "LOW"},           {"NEGLIGIBLE", "LOW"},
    {"UNKNOWN", "UNKNOWN"},   {"UNSPECIFIED", "UNKNOWN"},
    {"NONE", "UNKNOWN"},      {"INFO", "UNKNOWN"},
    {"", "UNKNOWN"}};

static const char *severity_of(const cJSON *v) {
  if (!v || !cJSON_IsString(v))
    return "UNKNOWN";
  char up[16];
  size_t n = strlen(v->valuestring);
  if (n >= sizeof up)
    return "UNKNOWN";
  for (size_t i = 0; i <= n; i++)
    up[i] = (char)toupper((unsigned char)v->valuestring[i]);
  for (size_t i = 0; i < sizeof SEVERITY_ALIASES / sizeof *SEVERITY_ALIASES; i++)
    if (strcmp(up, SEVERITY_ALIASES[i][0]) == 0)
      return SEVERITY_ALIASES[i][1];
  return "UNKNOWN";
}

static const char *const OS_TYPES[] = {
    "deb",         "rpm",           "apk",
    "alpine",      "debian",        "ubuntu",
    "redhat",      "centos",        "rocky",
    "alma",        "amazon",        "oracle",
    "photon",      "suse",          "suse linux enterprise micro",
    "opensuse",    "opensuse.leap", "opensuse.tumbleweed",
    "wolfi",       "chainguard",    "mariner",
    "cbl-mariner", "azurelinux",    "bottlerocket",
    "slem",        "sles",          "alpm",
    "portage",     "os-pkgs",       NULL};

static const char *const ECOSYSTEM[][2] = {{"jar", "maven"},
                                           {"pom", "maven"},
                                           {"gradle", "maven"},
                                           {"java-archive", "maven"},
                                           {"maven", "maven"},
                                           {"jenkins-plugin", "maven"},
                                           {"sbt", "maven"},
                                           {"gomod", "golang"},
                                           {"gobinary", "golang"},
                                           {"go-module", "golang"},
                                           {"golang", "golang"},
                                           {"npm", "npm"},
                                           {"yarn", "npm"},
                                           {"pnpm", "npm"},
                                           {"node-pkg", "npm"},
                                           {"bun", "npm"},
                                           {"pip", "pypi"},
                                           {"pipenv", "pypi"},
                                           {"poetry", "pypi"},
                                           {"python-pkg", "pypi"},
                                           {"python", "pypi"},
                                           {"uv", "pypi"},
                                           {"pypi", "pypi"},
                                           {"bundler", "gem"},
                                           {"gemspec", "gem"},
                                           {"gem", "gem"},
                                           {"cargo", "cargo"},
                                           {"rust-binary", "cargo"},
                                           {"rust-crate", "cargo"},
                                           {"nuget", "nuget"},
                                           {"dotnet-core", "nuget"},
                                           {"packages-props", "nuget"},
                                           {"dotnet", "nuget"},
                                           {"composer", "composer"},
                                           {"php-composer", "composer"},
                                           {"composer-vendor", "composer"},
                                           {"conan", "conan"},
                                           {"cocoapods", "cocoapods"},
                                           {"swift", "swift"},
                                           {"pub", "pub"},
                                           {"hex", "hex"},
                                           {"conda", "conda"},
                                           {"conda-pkg", "conda"},
                                           {"mix", "hex"},
                                           {"hackage", "hackage"},
                                           {"binary", "binary"},
                                           {NULL, NULL}};

/* model.ecosystem of str(word): "os", a language ecosystem, else the word in lower case. */
static void push_ecosystem(lua_State *L, const reader *r, const char *word) {
  if (!word) {
    lua_pushliteral(L, "unknown");
    return;
  }
  size_t n = strlen(word);
  char *low = lua_newuserdatauv(L, n + 1, 0);
  for (size_t i = 0; i <= n; i++)
    low[i] = (char)tolower((unsigned char)word[i]);
  const char *name = NULL;
  for (int i = 0; OS_TYPES[i] && !name; i++)
    if (strcmp(low, OS_TYPES[i]) == 0)
      name = "os";
  for (int i = 0; ECOSYSTEM[i][0] && !name; i++)
    if (strcmp(low, ECOSYSTEM[i][0]) == 0)
      name = ECOSYSTEM[i][1];
  if (name)
    lua_pushstring(L, name);
  else
    push_text(L, r, low);
  lua_remove(L, -2);
}

/* ---- CVSS ---- */

/* Two strings of the tree in Lua's order (bytes, U+0000 lowest; 0xFF stands for it). */
static int text_cmp(const reader *r, const char *a, const char *b) {
  for (;; a++, b++) {
    unsigned x = (unsigned char)*a, y = (unsigned char)*b;
    if (r->doc->marked) {
      x = x == 0xFF ? 1 : x == 0 ? 0 : x + 1;
      y = y == 0xFF ? 1 : y == 0 ? 0 : y + 1;
    }
    if (x != y || x == 0)
      return (int)x - (int)y;
  }
}

/* Whether a later member of the same object has this member's name (then it is the one a
 * decoded table holds). */
static int shadowed(const cJSON *c) {
  for (const cJSON *d = c->next; d; d = d->next)
    if (strcmp(d->string, c->string) == 0)
      return 1;
  return 0;
}

static const char *const CVSS_FIELDS[] = {"V2Score",  "V2Vector", "V3Score",
                                          "V3Vector", "V40Score", "V40Vector"};
enum { V2S, V2V, V3S, V3V, V4S, V4V };

/* The best score of model.best_cvss, found while the per-source table is built. */
typedef struct {
  const char *source;
  int old, pref;
  double score, value;
  const cJSON *vector;
} best_cvss;

static int preference(const char *source, const char *prefer) {
  if (prefer && strcmp(source, prefer) == 0)
    return 0;
  return strcmp(source, "nvd") == 0      ? 1
         : strcmp(source, "ghsa") == 0   ? 2
         : strcmp(source, "redhat") == 0 ? 3
                                         : 9;
}

/* Lexicographic on (modern first, preference, higher score, name), as model.best_cvss. */
static void consider(const reader *r, best_cvss *b, const char *source, const cJSON **f,
                     const char *prefer) {
  double v2 = 0, v3 = 0, v4 = 0;
  int has2 = score_of(f[V2S], &v2), has3 = score_of(f[V3S], &v3), has4 = score_of(f[V4S], &v4);
  if (!has2 && !has3 && !has4)
    return;
  int old = !has3 && !has4;
  double score = has3 ? v3 : has4 ? v4 : v2;
  int pref = preference(source, prefer);
  int better = b->source == NULL;
  if (!better) {
    if (old != b->old)
      better = b->old;
    else if (pref != b->pref)
      better = pref < b->pref;
    else if (score != b->score)
      better = score > b->score;
    else
      better = text_cmp(r, source, b->source) < 0;
  }
  if (better) {
    b->source = source;
    b->old = old;
    b->pref = pref;
    b->score = score;
    b->value = score;
    b->vector = has3 ? f[V3V] : has4 ? f[V4V] : f[V2V];
  }
}

static void set_score(lua_State *L, const char *key, const cJSON *v) {
  double d;
  if (score_of(v, &d)) {
    push_num(L, d);
    lua_setfield(L, -2, key);
  }
}

/* Pushes the finding's `cvss` table ({source = {v3_score=, ...}}) and fills `best`. */
static void push_cvss(lua_State *L, const reader *r, const cJSON *raw, const char *prefer,
                      best_cvss *best) {
  lua_newtable(L);
  if (!raw || !cJSON_IsObject(raw))
    return;
  for (const cJSON *c = raw->child; c; c = c->next) {
    if (!is_table(c) || shadowed(c))
      continue;
    const cJSON *f[6];
    fields(c, CVSS_FIELDS, 6, f);
    push_text(L, r, c->string);
    lua_createtable(L, 0, 6);
    set_score(L, "v2_score", f[V2S]);
    set_str(L, r, "v2_vector", f[V2V]);
    set_score(L, "v3_score", f[V3S]);
    set_str(L, r, "v3_vector", f[V3V]);
    set_score(L, "v4_score", f[V4S]);
    set_str(L, r, "v4_vector", f[V4V]);
    lua_rawset(L, -3);
    consider(r, best, c->string, f, prefer);
  }
}

/* ---- a Trivy finding ---- */

static const char *const FIX_STATE[][2] = {{"fixed", "fixed"},
                                           {"affected", "not_fixed"},
                                           {"will_not_fix", "wont_fix"},
                                           {"fix_deferred", "deferred"},
                                           {"end_of_life", "end_of_life"},
                                           {"under_investigation", "unknown"},
                                           {"unknown", "unknown"},
                                           {NULL, NULL}};

static const char *fix_state(const char *fixed, const char *status) {
  if (fixed)
    return "fixed";
  if (!status)
    status = "unknown";
  for (int i = 0; FIX_STATE[i][0]; i++)
    if (strcmp(status, FIX_STATE[i][0]) == 0)
      return FIX_STATE[i][1];
  return "unknown";
}

static const char *const VULN_FIELDS[] = {"VulnerabilityID", "VendorIDs",     "PkgName",
                                          "PkgID",           "PkgIdentifier", "InstalledVersion",
                                          "FixedVersion",    "Status",        "Severity",
                                          "SeveritySource",  "CVSS",          "Title",
                                          "Description",     "References",    "PrimaryURL",
                                          "CweIDs",          "PkgPath",       "Layer",
                                          "Fingerprint",     "PublishedDate", "LastModifiedDate"};
enum {
  F_ID,
  F_VENDOR,
  F_PKG,
  F_PKGID,
  F_IDENT,
  F_INSTALLED,
  F_FIXED,
  F_STATUS,
  F_SEV,
  F_SEVSRC,
  F_CVSS,
  F_TITLE,
  F_DESC,
  F_REFS,
  F_URL,
  F_CWE,
  F_PATH,
  F_LAYER,
  F_FPR,
  F_PUB,
  F_MOD,
  F_COUNT
};

/* What a Result gives each of its findings, as stack indices. */
typedef struct {
  int target, eco, pkg_type, class_name, index;
  const cJSON *packages; /* Result.Packages when it is a table */
} result_ctx;

static void set_index(lua_State *L, const char *key, int idx) {
  if (idx) {
    lua_pushvalue(L, idx);
    lua_setfield(L, -2, key);
  }
}

/* The lines a package is declared on (Result.Packages[].Locations), for SARIF. */
static void set_lines(lua_State *L, const cJSON *packages, const char *name, const char *version) {
  static const char *const PKG_FIELDS[] = {"Name", "Version", "Locations"};
  static const char *const LINE_FIELDS[] = {"StartLine", "EndLine"};
  if (!cJSON_IsArray(packages))
    return;
  for (const cJSON *p = packages->child; p; p = p->next) {
    if (!is_table(p))
      continue;
    const cJSON *f[3];
    fields(p, PKG_FIELDS, 3, f);
    const char *n = str_of(f[0]), *v = str_of(f[1]);
    if (!((n == name || (n && name && strcmp(n, name) == 0)) &&
          (v == version || (v && version && strcmp(v, version) == 0))))
      continue;
    if (!cJSON_IsArray(f[2]))
      return;
    lua_Integer k = 0;
    for (const cJSON *l = f[2]->child; l; l = l->next) {
      const cJSON *lf[2];
      lua_Integer start, end;
      fields(l, LINE_FIELDS, 2, lf);
      if (!is_table(l) || !int_of(lf[0], &start))
        continue;
      if (!int_of(lf[1], &end))
        end = start;
      if (k == 0)
        lua_newtable(L);
      lua_createtable(L, 0, 2);
      lua_pushinteger(L, start);
      lua_setfield(L, -2, "start_line");
      lua_pushinteger(L, end);
      lua_setfield(L, -2, "end_line");
      lua_rawseti(L, -2, ++k);
    }
    if (k > 0)
      lua_setfield(L, -2, "lines");
    return;
  }
}

/* Pushes the finding of one Vulnerabilities entry (an object with a VulnerabilityID). */
static void push_finding(lua_State *L, const reader *r, const cJSON **f, const result_ctx *rc) {
  lua_createtable(L, 0, 32);
  const char *sev_source = str_of(f[F_SEVSRC]);
  best_cvss best = {0};
  push_cvss(L, r, f[F_CVSS], sev_source, &best);
  lua_setfield(L, -2, "cvss");
  if (best.source) {
    push_num(L, best.value);
    lua_setfield(L, -2, "cvss_score");
    set_str(L, r, "cvss_vector", best.vector);
    push_text(L, r, best.source);
    lua_setfield(L, -2, "cvss_source");
  }
  set_str(L, r, "id", f[F_ID]);
  push_strings(L, r, (cJSON *)f[F_VENDOR]);
  lua_setfield(L, -2, "aliases");
  set_str(L, r, "package", f[F_PKG]);
  set_str(L, r, "pkg_id", f[F_PKGID]);
  set_index(L, "type", rc->eco);
  set_index(L, "pkg_type", rc->pkg_type);
  if (is_table(f[F_IDENT]))
    set_str(L, r, "purl", field(f[F_IDENT], "PURL"));
  set_str(L, r, "installed_version", f[F_INSTALLED]);
  const char *fixed = str_of(f[F_FIXED]);
  set_str(L, r, "fixed_version", f[F_FIXED]);
  lua_pushstring(L, fix_state(fixed, str_of(f[F_STATUS])));
  lua_setfield(L, -2, "fix_state");
  lua_pushstring(L, severity_of(f[F_SEV]));
  lua_setfield(L, -2, "severity");
  set_str(L, r, "scanner_severity", f[F_SEV]);
  set_str(L, r, "severity_source", f[F_SEVSRC]);
  set_str(L, r, "title", f[F_TITLE]);
  set_str(L, r, "description", f[F_DESC]);
  push_strings(L, r, (cJSON *)f[F_REFS]);
  lua_setfield(L, -2, "references");
  set_str(L, r, "primary_url", f[F_URL]);
  if (is_table(f[F_CWE])) {
    push_strings(L, r, (cJSON *)f[F_CWE]);
    lua_setfield(L, -2, "cwe");
  }
  set_index(L, "target", rc->target);
  set_str(L, r, "path", f[F_PATH]);
  if (is_table(f[F_LAYER])) {
    static const char *const LAYER_FIELDS[] = {"DiffID", "Digest"};
    const cJSON *lf[2];
    fields(f[F_LAYER], LAYER_FIELDS, 2, lf);
    set_str(L, r, "layer", str_of(lf[0]) ? lf[0] : lf[1]);
  }
  set_str(L, r, "fingerprint", f[F_FPR]);
  set_str(L, r, "published", f[F_PUB]);
  set_str(L, r, "modified", f[F_MOD]);
  lua_pushliteral(L, "trivy");
  lua_setfield(L, -2, "scanner");
  set_index(L, "class", rc->class_name);
  lua_pushvalue(L, rc->index);
  lua_setfield(L, -2, "result_index");
  if (rc->packages)
    set_lines(L, rc->packages, str_of(f[F_PKG]), str_of(f[F_INSTALLED]));
}

/* ---- misconfigurations ---- */

static const char *const MISCONF_FIELDS[] = {
    "CauseMetadata", "ID",   "AVDID",    "Title",  "Description", "Message",
    "Resolution",    "Type", "Severity", "Status", "References",  "PrimaryURL"};
enum {
  M_CAUSE,
  M_ID,
  M_AVDID,
  M_TITLE,
  M_DESC,
  M_MSG,
  M_RES,
  M_TYPE,
  M_SEV,
  M_STATUS,
  M_REFS,
  M_URL
};

static void set_line(lua_State *L, const char *key, const cJSON *v) {
  lua_Integer line;
  if (int_of(v, &line)) {
    lua_pushinteger(L, line);
    lua_setfield(L, -2, key);
  }
}

/* What a misconfiguration, secret and license take from their Trivy Result (res: Target, Type,
 * Class) and where they stand in the report: as trivy.lua's entries. */
static void set_origin(lua_State *L, const reader *r, const cJSON **res, int index, int with_type) {
  set_str(L, r, "target", res[0]);
  set_str(L, r, "class", res[2]);
  if (with_type)
    set_str(L, r, "type", res[1]);
  lua_pushvalue(L, index);
  lua_setfield(L, -2, "result_index");
  lua_pushliteral(L, "trivy");
  lua_setfield(L, -2, "scanner");
}

static void push_misconfiguration(lua_State *L, const reader *r, const cJSON *m, const cJSON **res,
                                  int index) {
  static const char *const LINE_FIELDS[] = {"StartLine", "EndLine"};
  const cJSON *f[12], *lines[2];
  fields(m, MISCONF_FIELDS, 12, f);
  fields(is_table(f[M_CAUSE]) ? f[M_CAUSE] : NULL, LINE_FIELDS, 2, lines);
  lua_createtable(L, 0, 18);
  set_line(L, "start_line", lines[0]);
  set_line(L, "end_line", lines[1]);
  set_str(L, r, "id", str_of(f[M_ID]) ? f[M_ID] : f[M_AVDID]);
  set_str(L, r, "title", f[M_TITLE]);
  set_str(L, r, "description", f[M_DESC]);
  set_str(L, r, "message", f[M_MSG]);
  set_str(L, r, "resolution", f[M_RES]);
  set_str(L, r, "check_type", f[M_TYPE]);
  lua_pushstring(L, severity_of(f[M_SEV]));
  lua_setfield(L, -2, "severity");
  set_str(L, r, "status", f[M_STATUS]);
  push_strings(L, r, (cJSON *)f[M_REFS]);
  lua_setfield(L, -2, "references");
  set_str(L, r, "primary_url", f[M_URL]);
  set_origin(L, r, res, index, 1);
}

/* A secret (Result.Secrets[]), as trivy.lua's secret(). */
static void push_secret(lua_State *L, const reader *r, const cJSON *x, const cJSON **res,
                        int index) {
  static const char *const SECRET_FIELDS[] = {"RuleID",    "Category", "Severity", "Title",
                                              "StartLine", "EndLine",  "Match"};
  const cJSON *f[7];
  fields(x, SECRET_FIELDS, 7, f);
  lua_createtable(L, 0, 13);
  set_str(L, r, "id", f[0]);
  set_str(L, r, "category", f[1]);
  lua_pushstring(L, severity_of(f[2]));
  lua_setfield(L, -2, "severity");
  set_str(L, r, "title", f[3]);
  set_line(L, "start_line", f[4]);
  set_line(L, "end_line", f[5]);
  set_str(L, r, "match", f[6]);
  set_origin(L, r, res, index, 1);
}

/* A license (Result.Licenses[]), as trivy.lua's license(). */
static void push_license(lua_State *L, const reader *r, const cJSON *x, const cJSON **res,
                         int index) {
  static const char *const LICENSE_FIELDS[] = {"Name",     "PkgName",  "FilePath",
                                               "Category", "Severity", "Link"};
  const cJSON *f[6];
  fields(x, LICENSE_FIELDS, 6, f);
  lua_createtable(L, 0, 10);
  set_str(L, r, "name", f[0]);
  set_str(L, r, "package", f[1]);
  set_str(L, r, "file_path", f[2]);
  set_str(L, r, "category", f[3]);
  lua_pushstring(L, severity_of(f[4]));
  lua_setfield(L, -2, "severity");
  set_str(L, r, "link", f[5]);
  set_origin(L, r, res, index, 0);
}

/* ---- a Trivy report ---- */

/* Stack slots of trivy_normalize's frame. */
enum { S_DOC = 1, S_ARRAY_MT, S_FINDINGS, S_MISCONFS, S_SECRETS, S_LICENSES, S_DROPPED };

static void drop(lua_State *L, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_rawseti(L, S_DROPPED, (lua_Integer)lua_rawlen(L, S_DROPPED) + 1);
}

static const char *const RESULT_FIELDS[] = {"Target",          "Type",     "Class",
                                            "Vulnerabilities", "Packages", "Misconfigurations",
                                            "Secrets",         "Licenses"};

/* Appends one table per object or array in the list `list` to the table at slot `to`. */
typedef void (*push_item)(lua_State *L, const reader *r, const cJSON *x, const cJSON **res,
                          int index);
static void read_items(lua_State *L, const reader *r, const cJSON *list, const cJSON **res,
                       int index, push_item push, int to) {
  if (!cJSON_IsArray(list))
    return;
  for (const cJSON *x = list->child; x; x = x->next)
    if (is_table(x)) {
      push(L, r, x, res, index);
      lua_rawseti(L, to, (lua_Integer)lua_rawlen(L, to) + 1);
    }
}

/* The findings and misconfigurations of Results[i]. */
static void read_result(lua_State *L, const reader *r, const cJSON *res, int i) {
  const cJSON *rf[8];
  fields(res, RESULT_FIELDS, 8, rf);
  int top = lua_gettop(L);
  result_ctx rc = {0};
  const char *pkg_type = str_of(rf[1]);
  const cJSON *cls = rf[2];
  int os = cls && cJSON_IsString(cls) && strcmp(cls->valuestring, "os-pkgs") == 0;
  if (os)
    lua_pushliteral(L, "os");
  else
    push_ecosystem(L, r, pkg_type);
  rc.eco = lua_gettop(L);
  if (pkg_type) {
    push_text(L, r, pkg_type);
    rc.pkg_type = lua_gettop(L);
  }
  if (str_of(rf[0])) {
    push_text(L, r, str_of(rf[0]));
    rc.target = lua_gettop(L);
  }
  if (str_of(cls)) {
    push_text(L, r, str_of(cls));
    rc.class_name = lua_gettop(L);
  }
  lua_pushinteger(L, i);
  rc.index = lua_gettop(L);
  rc.packages = is_table(rf[4]) ? rf[4] : NULL;
  if (cJSON_IsArray(rf[3])) {
    int j = 0;
    for (const cJSON *v = rf[3]->child; v; v = v->next) {
      j++;
      const cJSON *f[F_COUNT];
      fields(v, VULN_FIELDS, F_COUNT, f);
      if (is_table(v) && str_of(f[F_ID])) {
        push_finding(L, r, f, &rc);
        lua_rawseti(L, S_FINDINGS, (lua_Integer)lua_rawlen(L, S_FINDINGS) + 1);
      } else if (!is_table(v)) {
        drop(L, "Results[%d].Vulnerabilities[%d]: a JSON %s, not an object", i, j, lua_type_of(v));
      } else {
        drop(L, "Results[%d].Vulnerabilities[%d]: no VulnerabilityID string", i, j);
      }
    }
  }
  read_items(L, r, rf[5], rf, rc.index, push_misconfiguration, S_MISCONFS);
  read_items(L, r, rf[6], rf, rc.index, push_secret, S_SECRETS);
  read_items(L, r, rf[7], rf, rc.index, push_license, S_LICENSES);
  lua_settop(L, top);
}

/* The image digest from Metadata.RepoDigests[1] ("name@sha256:..."). */
static void set_digest(lua_State *L, const reader *r, const cJSON *digests) {
  if (!cJSON_IsArray(digests))
    return;
  const char *first = str_of(digests->child);
  const char *at = first ? strrchr(first, '@') : NULL;
  if (!at || strncmp(at + 1, "sha256:", 7) != 0 || !at[8])
    return;
  for (const char *p = at + 8; *p; p++)
    if (!isxdigit((unsigned char)*p))
      return;
  push_text(L, r, at + 1);
  lua_setfield(L, -2, "digest");
}

static void read_metadata(lua_State *L, const reader *r, const cJSON *meta) {
  static const char *const META_FIELDS[] = {"RepoDigests", "ImageID", "RepoTags", "OS"};
  static const char *const OS_FIELDS[] = {"Family", "Name", "EOSL"};
  const cJSON *mf[4];
  fields(is_table(meta) ? meta : NULL, META_FIELDS, 4, mf);
  set_digest(L, r, mf[0]);
  set_str(L, r, "image_id", mf[1]);
  if (is_table(mf[2])) {
    push_strings(L, r, (cJSON *)mf[2]);
    lua_setfield(L, -2, "repo_tags");
  }
  if (is_table(mf[0])) {
    push_strings(L, r, (cJSON *)mf[0]);
    lua_setfield(L, -2, "repo_digests");
  }
  if (is_table(mf[3])) {
    const cJSON *of[3];
    fields(mf[3], OS_FIELDS, 3, of);
    lua_createtable(L, 0, 3);
    set_str(L, r, "family", of[0]);
    set_str(L, r, "name", of[1]);
    lua_pushboolean(L, of[2] && cJSON_IsTrue(of[2]));
    lua_setfield(L, -2, "eosl");
    lua_setfield(L, -2, "os");
  }
}

/* (doc userdata, root) -> the table trivy.normalize passes to model.result. Protected: run
 * under lua_pcall so that the caller frees the tree and restarts the collector on error. */
static int trivy_normalize(lua_State *L) {
  static const char *const DOC_FIELDS[] = {"Results",  "ArtifactName", "ArtifactType",
                                           "Metadata", "Trivy",        "CreatedAt"};
  const mx_json_doc *doc = lua_touserdata(L, 1);
  lua_settop(L, S_DOC);
  luaL_getmetatable(L, MX_ARRAY_MT);
  for (int slot = S_FINDINGS; slot <= S_DROPPED; slot++)
    lua_newtable(L);
  reader r = {doc, S_ARRAY_MT};
  const cJSON *df[6];
  fields(doc->root, DOC_FIELDS, 6, df);
  if (cJSON_IsArray(df[0])) {
    /* Each Result is freed once read, so the tree shrinks while the findings grow (a large
     * report never has its whole tree and all its findings in memory at once). */
    cJSON *results = (cJSON *)df[0];
    int i = 0;
    for (cJSON *res = results->child; res; res = results->child) {
      i++;
      if (is_table(res))
        read_result(L, &r, res, i);
      else
        drop(L, "Results[%d]: a JSON %s, not an object", i, lua_type_of(res));
      results->child = res->next;
      mx_json_free(res);
    }
  }
  lua_createtable(L, 0, 16);
  set_str(L, &r, "image", df[1]);
  set_str(L, &r, "artifact_type", df[2]);
  read_metadata(L, &r, df[3]);
  lua_pushliteral(L, "trivy");
  lua_setfield(L, -2, "scanner");
  if (is_table(df[4]))
    set_str(L, &r, "scanner_version", field(df[4], "Version"));
  set_str(L, &r, "time", df[5]);
  lua_pushvalue(L, S_FINDINGS);
  lua_setfield(L, -2, "findings");
  lua_pushvalue(L, S_MISCONFS);
  lua_setfield(L, -2, "misconfigurations");
  lua_pushvalue(L, S_SECRETS);
  lua_setfield(L, -2, "secrets");
  lua_pushvalue(L, S_LICENSES);
  lua_setfield(L, -2, "licenses");
  lua_pushvalue(L, S_DROPPED);
  lua_setfield(L, -2, "dropped");
  return 1;
}

/* ---- a Grype report (lua/myrmex/scan/grype.lua) ---- */

/* A string of the tree as real bytes (0xFF markers back to NUL), kept alive on the stack:
 * pushes one value, returns its bytes. */
static const char *real_bytes(lua_State *L, const reader *r, const char *s, size_t *len) {
  push_text(L, r, s);
  return lua_tolstring(L, -1, len);
}

/* grype.lua's source_name: Grype names CVSS sources by e-mail-like ids. Pushes the name. */
static void push_source_name(lua_State *L, const reader *r, const cJSON *v) {
  const char *s = str_of(v);
  if (!s) {
    lua_pushliteral(L, "unknown");
    return;
  }
  size_t n;
  const char *bytes = real_bytes(L, r, s, &n);
  char *low = lua_newuserdatauv(L, n + 1, 0);
  for (size_t i = 0; i < n; i++)
    low[i] = (char)tolower((unsigned char)bytes[i]);
  low[n] = '\0';
  /* find(..., plain) on the whole string: memmem, since NULs may be inside */
  if (memmem(low, n, "nvd", 3))
    lua_pushliteral(L, "nvd");
  else if (memmem(low, n, "redhat", 6))
    lua_pushliteral(L, "redhat");
  else if (memmem(low, n, "github", 6) || memmem(low, n, "ghsa", 4))
    lua_pushliteral(L, "ghsa");
  else
    lua_pushlstring(L, low, n);
  lua_replace(L, -3);
  lua_pop(L, 1);
}

/* The first character of tostring(str(version) or num(version) or ""), which picks the CVSS
 * version a Grype record is of (a number written as Lua writes it). */
static char version_first(lua_State *L, const cJSON *v) {
  const char *s = str_of(v);
  if (s) {
    char first = s[0];
    if ((unsigned char)first == 0xFF)
      first = '\0';
    return first;
  }
  if (!v || !cJSON_IsNumber(v))
    return '\0';
  push_num(L, v->valuedouble);
  char first = lua_tostring(L, -1)[0];
  lua_pop(L, 1);
  return first;
}

/* grype.lua's add_cvss: a record's CVSS entries into the table at `out`, not replacing what
 * an earlier record gave for that source and version. */
static void add_cvss(lua_State *L, const reader *r, int out, const cJSON *list) {
  static const char *const CVSS_FIELDS_G[] = {"metrics", "source", "version", "vector"};
  if (!cJSON_IsArray(list))
    return;
  for (const cJSON *c = list->child; c; c = c->next) {
    const cJSON *f[4];
    double score;
    fields(c, CVSS_FIELDS_G, 4, f);
    if (!is_table(c) || !is_table(f[0]) || !score_of(field(f[0], "baseScore"), &score))
      continue;
    char first = version_first(L, f[2]);
    const char *key = first == '2' ? "v2_score" : first == '4' ? "v4_score" : "v3_score";
    const char *vkey = first == '2' ? "v2_vector" : first == '4' ? "v4_vector" : "v3_vector";
    push_source_name(L, r, f[1]);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, out) != LUA_TTABLE) {
      lua_pop(L, 1);
      lua_newtable(L);
      lua_pushvalue(L, -2);
      lua_pushvalue(L, -2);
      lua_rawset(L, out);
    }
    int absent = lua_getfield(L, -1, key) == LUA_TNIL;
    lua_pop(L, 1);
    if (absent) {
      push_num(L, score);
      lua_setfield(L, -2, key);
      set_str(L, r, vkey, f[3]);
    }
    lua_pop(L, 2);
  }
}

/* grype.lua's add_urls: the strings of a list not seen yet, onto `refs`. */
static void add_urls(lua_State *L, const reader *r, int refs, int seen, const cJSON *urls) {
  if (!cJSON_IsArray(urls))
    return;
  for (const cJSON *u = urls->child; u; u = u->next) {
    if (!cJSON_IsString(u))
      continue;
    push_text(L, r, u->valuestring);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, seen) != LUA_TNIL) {
      lua_pop(L, 2);
      continue;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushboolean(L, 1);
    lua_rawset(L, seen);
    lua_rawseti(L, refs, (lua_Integer)lua_rawlen(L, refs) + 1);
  }
}

/* model.best_cvss's preference of a source (a Lua string, NULs and all). */
static int preference_of(lua_State *L, int idx) {
  size_t n;
  const char *s = lua_tolstring(L, idx, &n);
  return strlen(s) != n ? 9 : preference(s, NULL);
}

/* model.best_cvss over the per-source table at `t` (no preferred source): sets cvss_score,
 * cvss_vector and cvss_source on the table at the top. */
static void set_best_cvss(lua_State *L, int t) {
  static const char *const ORDER[][2] = {
      {"v3_score", "v3_vector"}, {"v4_score", "v4_vector"}, {"v2_score", "v2_vector"}};
  int top = lua_gettop(L), found = 0, b_old = 0, b_pref = 0;
  double b_score = 0;
  lua_pushnil(L); /* the best source so far */
  int best = top + 1;
  lua_pushnil(L);
  while (lua_next(L, t)) {
    int entry = lua_gettop(L), key = entry - 1;
    lua_getfield(L, entry, "v3_score");
    lua_getfield(L, entry, "v4_score");
    lua_getfield(L, entry, "v2_score");
    int old = lua_isnil(L, -3) && lua_isnil(L, -2);
    int at = !lua_isnil(L, -3) ? -3 : !lua_isnil(L, -2) ? -2 : -1;
    if (lua_type(L, key) == LUA_TSTRING && !lua_isnil(L, at)) {
      double score = lua_tonumber(L, at);
      int pref = preference_of(L, key);
      int better = !found;
      if (!better) {
        if (old != b_old)
          better = b_old;
        else if (pref != b_pref)
          better = pref < b_pref;
        else if (score != b_score)
          better = score > b_score;
        else
          better = lua_compare(L, key, best, LUA_OPLT);
      }
      if (better) {
        lua_pushvalue(L, key);
        lua_replace(L, best);
        found = 1;
        b_old = old;
        b_pref = pref;
        b_score = score;
      }
    }
    lua_settop(L, key);
  }
  if (found) {
    lua_pushvalue(L, best);
    lua_rawget(L, t);
    int e = lua_gettop(L);
    for (int i = 0; i < 3; i++) {
      if (lua_getfield(L, e, ORDER[i][0]) == LUA_TNIL) {
        lua_pop(L, 1);
        continue;
      }
      lua_setfield(L, top, "cvss_score");
      lua_getfield(L, e, ORDER[i][1]);
      lua_setfield(L, top, "cvss_vector");
      lua_pushvalue(L, best);
      lua_setfield(L, top, "cvss_source");
      break;
    }
  }
  lua_settop(L, top);
}

/* %XX escapes of a purl part decoded (model.parse_purl's unescape), pushed. */
static void push_unescaped(lua_State *L, const char *s, size_t n) {
  char *out = lua_newuserdatauv(L, n + 1, 0);
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
        isxdigit((unsigned char)s[i + 2])) {
      char hex[3] = {s[i + 1], s[i + 2], '\0'};
      out[k++] = (char)strtol(hex, NULL, 16);
      i += 2;
    } else {
      out[k++] = s[i];
    }
  }
  lua_pushlstring(L, out, k);
  lua_remove(L, -2);
}

static int purl_type_char(unsigned char c) {
  return isalnum(c) || c == '.' || c == '+' || c == '-';
}

/* model.purl_package_name(model.parse_purl(purl)) pushed, or nothing pushed and 0 when the
 * string is no purl. */
static int push_purl_name(lua_State *L, const char *s, size_t n) {
  if (n < 5 || memcmp(s, "pkg:", 4) != 0)
    return 0;
  size_t t = 4;
  while (t < n && purl_type_char((unsigned char)s[t]))
    t++;
  if (t == 4 || t >= n || s[t] != '/' || t + 1 >= n)
    return 0;
  char type[16] = "";
  size_t tl = t - 4;
  if (tl < sizeof type)
    for (size_t i = 0; i < tl; i++)
      type[i] = (char)tolower((unsigned char)s[4 + i]);
  const char *rest = s + t + 1;
  size_t rn = n - t - 1;
  const char *cut = memchr(rest, '#', rn);
  if (cut)
    rn = (size_t)(cut - rest);
  cut = memchr(rest, '?', rn);
  if (cut)
    rn = (size_t)(cut - rest);
  size_t pn = rn; /* the path: up to the last "@" that has no "/" after it */
  for (size_t i = rn; i-- > 0;)
    if (rest[i] == '@') {
      if (!memchr(rest + i, '/', rn - i))
        pn = i;
      break;
    }
  size_t slash = pn; /* the last "/" with something after it */
  for (size_t i = pn; i-- > 0;)
    if (rest[i] == '/') {
      if (i + 1 < pn)
        slash = i;
      break;
    }
  if (slash == pn) {
    push_unescaped(L, rest, pn);
    return 1;
  }
  const char *sep =
      strcmp(type, "maven") == 0 ? ":"
      : strcmp(type, "golang") == 0 || strcmp(type, "npm") == 0 || strcmp(type, "composer") == 0
          ? "/"
          : NULL;
  if (!sep) {
    push_unescaped(L, rest + slash + 1, pn - slash - 1);
    return 1;
  }
  push_unescaped(L, rest, slash);
  lua_pushstring(L, sep);
  push_unescaped(L, rest + slash + 1, pn - slash - 1);
  lua_concat(L, 3);
  return 1;
}

static const char *const GRYPE_FIX_STATE[][2] = {{"fixed", "fixed"},
                                                 {"not-fixed", "not_fixed"},
                                                 {"wont-fix", "wont_fix"},
                                                 {"unknown", "unknown"},
                                                 {NULL, NULL}};

static const char *grype_fix_state(const char *state) {
  if (!state)
    state = "unknown";
  for (int i = 0; GRYPE_FIX_STATE[i][0]; i++)
    if (strcmp(state, GRYPE_FIX_STATE[i][0]) == 0)
      return GRYPE_FIX_STATE[i][1];
  return "unknown";
}

/* fix.versions joined with ", " (set as fixed_version), and fix_state. */
static void set_fix(lua_State *L, const reader *r, const cJSON *fix) {
  static const char *const FIX_FIELDS[] = {"versions", "state"};
  const cJSON *f[2];
  fields(is_table(fix) ? fix : NULL, FIX_FIELDS, 2, f);
  int n = 0;
  if (cJSON_IsArray(f[0]))
    for (const cJSON *v = f[0]->child; v; v = v->next)
      if (cJSON_IsString(v)) {
        if (n++ > 0)
          lua_pushliteral(L, ", ");
        push_text(L, r, v->valuestring);
        if (n > 1)
          lua_concat(L, 3);
      }
  if (n > 0)
    lua_setfield(L, -2, "fixed_version");
  lua_pushstring(L, n > 0 ? "fixed" : grype_fix_state(str_of(f[1])));
  lua_setfield(L, -2, "fix_state");
}

static const char *const GRYPE_VULN_FIELDS[] = {"id",  "cvss",     "urls",      "description",
                                                "fix", "severity", "namespace", "dataSource"};
enum { G_ID, G_CVSS, G_URLS, G_DESC, G_FIX, G_SEV, G_NS, G_SRC };

/* Pushes the finding of one match (grype.lua's finding). */
static void push_grype_finding(lua_State *L, const reader *r, const cJSON **v, const cJSON *a,
                               const cJSON *related, int target) {
  static const char *const ART_FIELDS[] = {"type", "purl", "name", "version", "locations"};
  static const char *const REL_FIELDS[] = {"id", "cvss", "urls", "description"};
  static const char *const LOC_FIELDS[] = {"path", "layerID"};
  int top = lua_gettop(L);
  lua_createtable(L, 0, 24);
  int f = top + 1;
  lua_newtable(L); /* cvss */
  lua_newtable(L); /* aliases */
  lua_newtable(L); /* refs */
  lua_newtable(L); /* seen */
  int cvss = f + 1, aliases = f + 2, refs = f + 3, seen = f + 4;
  add_cvss(L, r, cvss, v[G_CVSS]);
  add_urls(L, r, refs, seen, v[G_URLS]);
  const cJSON *description = str_of(v[G_DESC]) ? v[G_DESC] : NULL;
  if (cJSON_IsArray(related))
    for (const cJSON *rel = related->child; rel; rel = rel->next) {
      const cJSON *rf[4];
      if (!is_table(rel))
        continue;
      fields(rel, REL_FIELDS, 4, rf);
      const char *rid = str_of(rf[0]);
      if (rid && strcmp(rid, v[G_ID]->valuestring) != 0) {
        push_text(L, r, rid);
        lua_rawseti(L, aliases, (lua_Integer)lua_rawlen(L, aliases) + 1);
      }
      add_cvss(L, r, cvss, rf[1]);
      add_urls(L, r, refs, seen, rf[2]);
      if (!description && str_of(rf[3]))
        description = rf[3];
    }
  lua_settop(L, f + 3);
  lua_setfield(L, f, "references");
  lua_setfield(L, f, "aliases");
  lua_pushvalue(L, cvss);
  lua_setfield(L, f, "cvss");
  lua_insert(L, f); /* cvss below the finding */
  cvss = f++;
  set_best_cvss(L, cvss);
  set_str(L, r, "id", v[G_ID]);
  const cJSON *af[5];
  fields(a, ART_FIELDS, 5, af);
  const char *pkg_type = str_of(af[0]);
  push_ecosystem(L, r, pkg_type);
  int os = lua_rawlen(L, -1) == 2 && strcmp(lua_tostring(L, -1), "os") == 0;
  lua_setfield(L, f, "type");
  set_str(L, r, "pkg_type", af[0]);
  set_str(L, r, "purl", af[1]);
  size_t n;
  const char *purl = str_of(af[1]) ? real_bytes(L, r, str_of(af[1]), &n) : NULL;
  int named = purl && !os && push_purl_name(L, purl, n);
  if (named)
    lua_setfield(L, f, "package");
  lua_settop(L, f);
  if (!named)
    set_str(L, r, "package", af[2]);
  set_str(L, r, "installed_version", af[3]);
  set_fix(L, r, v[G_FIX]);
  lua_pushstring(L, severity_of(v[G_SEV]));
  lua_setfield(L, f, "severity");
  set_str(L, r, "scanner_severity", v[G_SEV]);
  set_str(L, r, "severity_source", v[G_NS]);
  set_str(L, r, "description", description);
  set_str(L, r, "primary_url", v[G_SRC]);
  set_index(L, "target", target);
  const cJSON *loc = cJSON_IsArray(af[4]) ? af[4]->child : NULL;
  if (is_table(loc)) {
    const cJSON *lf[2];
    fields(loc, LOC_FIELDS, 2, lf);
    set_str(L, r, "path", lf[0]);
    set_str(L, r, "layer", lf[1]);
  }
  lua_pushliteral(L, "grype");
  lua_setfield(L, f, "scanner");
  lua_remove(L, cvss);
}

/* source.target of a Grype report: image, image_id, repo_tags, digest onto the result at the
 * top; pushes the image (or nil) and returns its stack index (0 when there is none). */
static int read_grype_target(lua_State *L, const reader *r, const cJSON *target) {
  static const char *const T_FIELDS[] = {"userInput", "imageID", "tags", "repoDigests",
                                         "manifestDigest"};
  int res = lua_gettop(L);
  if (!is_table(target)) {
    set_str(L, r, "image", target);
  } else {
    const cJSON *tf[5];
    fields(target, T_FIELDS, 5, tf);
    set_str(L, r, "image", tf[0]);
    set_str(L, r, "image_id", tf[1]);
    if (is_table(tf[2])) {
      push_strings(L, r, (cJSON *)tf[2]);
      lua_setfield(L, res, "repo_tags");
    }
    set_digest(L, r, tf[3]);
    int has_digest = lua_getfield(L, res, "digest") != LUA_TNIL;
    lua_pop(L, 1);
    if (!has_digest)
      set_str(L, r, "digest", tf[4]);
  }
  if (lua_getfield(L, res, "image") == LUA_TNIL) {
    lua_pop(L, 1);
    return 0;
  }
  return lua_gettop(L);
}

/* (doc userdata) -> the table grype.normalize passes to model.result; protected, as
 * trivy_normalize. */
static int grype_normalize(lua_State *L) {
  static const char *const DOC_FIELDS[] = {"source", "matches", "descriptor", "distro"};
  static const char *const SRC_FIELDS[] = {"target", "type"};
  static const char *const MATCH_FIELDS[] = {"vulnerability", "artifact", "relatedVulnerabilities"};
  const mx_json_doc *doc = lua_touserdata(L, 1);
  lua_settop(L, S_DOC);
  luaL_getmetatable(L, MX_ARRAY_MT);
  for (int slot = S_FINDINGS; slot <= S_DROPPED; slot++)
    lua_newtable(L);
  reader r = {doc, S_ARRAY_MT};
  const cJSON *df[4], *sf[2];
  fields(doc->root, DOC_FIELDS, 4, df);
  fields(is_table(df[0]) ? df[0] : NULL, SRC_FIELDS, 2, sf);
  lua_createtable(L, 0, 16);
  int res = lua_gettop(L);
  int image = read_grype_target(L, &r, sf[0]);
  if (cJSON_IsArray(df[1])) {
    cJSON *matches = (cJSON *)df[1];
    int i = 0;
    for (cJSON *m = matches->child; m; m = matches->child) {
      const cJSON *mf[3], *vf[8];
      i++;
      fields(m, MATCH_FIELDS, 3, mf);
      const cJSON *v = is_table(m) && is_table(mf[0]) ? mf[0] : NULL;
      fields(v, GRYPE_VULN_FIELDS, 8, vf);
      if (v && str_of(vf[G_ID])) {
        push_grype_finding(L, &r, vf, is_table(mf[1]) ? mf[1] : NULL, mf[2], image);
        lua_rawseti(L, S_FINDINGS, (lua_Integer)lua_rawlen(L, S_FINDINGS) + 1);
      } else if (!is_table(m)) {
        drop(L, "matches[%d]: a JSON %s, not an object", i, lua_type_of(m));
      } else {
        drop(L, "matches[%d]: no vulnerability with an id string", i);
      }
      matches->child = m->next; /* freed once read, as Trivy's Results */
      mx_json_free(m);
    }
  }
  lua_settop(L, res);
  set_str(L, &r, "artifact_type", sf[1]);
  if (is_table(df[3])) {
    static const char *const DISTRO_FIELDS[] = {"name", "version"};
    const cJSON *of[2];
    fields(df[3], DISTRO_FIELDS, 2, of);
    lua_createtable(L, 0, 2);
    set_str(L, &r, "family", of[0]);
    set_str(L, &r, "name", of[1]);
    lua_setfield(L, res, "os");
  }
  lua_pushliteral(L, "grype");
  lua_setfield(L, res, "scanner");
  if (is_table(df[2])) {
    static const char *const D_FIELDS[] = {"version", "timestamp"};
    const cJSON *d[2];
    fields(df[2], D_FIELDS, 2, d);
    set_str(L, &r, "scanner_version", d[0]);
    set_str(L, &r, "time", d[1]);
  }
  lua_pushvalue(L, S_FINDINGS);
  lua_setfield(L, res, "findings");
  lua_pushvalue(L, S_DROPPED);
  lua_setfield(L, res, "dropped");
  return 1;
}

/* trivy.detect / grype.detect on the root: the keys are present (null counts). */
static const char *detect(const cJSON *root) {
  if (!cJSON_IsObject(root))
    return NULL;
  if (field(root, "SchemaVersion") && (field(root, "Results") || field(root, "ArtifactName")))
    return "trivy";
  if (field(root, "matches") && (field(root, "descriptor") || field(root, "source")))
    return "grype";
  return NULL;
}

/* Documents from this many bytes up are read with the collector stopped, as json.decode
 * converts them: building the findings makes no garbage for it to find. */
#define STOP_GC_FROM ((size_t)1 << 20)

/* After the parse: ("trivy" or "grype", fields for model.result) when the report is one (and
 * the format asked for, if any, is that one), else ("doc", the decoded document). */
static int normalize_or_decode(lua_State *L, mx_json_doc *doc, const char *format) {
  const char *kind = detect(doc->root);
  if (kind && (!format || strcmp(format, kind) == 0)) {
    int running = doc->size >= STOP_GC_FROM && lua_gc(L, LUA_GCISRUNNING);
    if (running)
      lua_gc(L, LUA_GCSTOP);
    lua_pushcfunction(L, strcmp(kind, "trivy") == 0 ? trivy_normalize : grype_normalize);
    lua_pushlightuserdata(L, doc);
    int status = lua_pcall(L, 1, 1, 0);
    if (running)
      lua_gc(L, LUA_GCRESTART);
    mx_json_close(doc);
    if (status != LUA_OK)
      return lua_error(L);
    lua_pushstring(L, kind);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushliteral(L, "doc");
  int running = doc->size >= STOP_GC_FROM && lua_gc(L, LUA_GCISRUNNING);
  if (running)
    lua_gc(L, LUA_GCSTOP);
  mx_json_push(L, doc, doc->root);
  if (running)
    lua_gc(L, LUA_GCRESTART);
  mx_json_close(doc);
  return 2;
}

/* scan.read_file(path, format?) -> kind, value (see normalize_or_decode). Raises what
 * json.decode_file raises on a file that is no JSON. */
static int scan_read_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  const char *format = luaL_optstring(L, 2, NULL);
  mx_json_doc doc = {0};
  mx_json_parse_file(L, path, &doc);
  return normalize_or_decode(L, &doc, format);
}

/* scan.read_text(text, format?) -> kind, value; raises what json.decode raises. */
static int scan_read_text(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  const char *format = luaL_optstring(L, 2, NULL);
  mx_json_doc doc = {0};
  mx_json_parse(L, s, n, &doc);
  return normalize_or_decode(L, &doc, format);
}

/* ---- CSV ---- */

/* A growing byte buffer in a userdata, so that an error (out of memory, a __tostring that
 * raises) frees it through __gc. */
typedef struct {
  char *p;
  size_t n, cap;
} strbuf;

/* The buffer's memory back now: the collector does not count it, so leaving it to __gc
 * would let a CSV export hold one chunk's worth per call until the next cycle. */
static void buf_release(strbuf *b) {
  free(b->p);
  b->p = NULL;
  b->n = b->cap = 0;
}

static int buf_gc(lua_State *L) {
  buf_release(luaL_checkudata(L, 1, BUF_MT));
  return 0;
}

/* Room for n more bytes; 0 only after luaL_error, which does not return. */
static int buf_grow(lua_State *L, strbuf *b, size_t n) {
  size_t cap = b->cap ? b->cap : 65536;
  while (cap < b->n + n)
    cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p)
    return luaL_error(L, "scan.export: not enough memory"), 0;
  b->p = p;
  b->cap = cap;
  return 1;
}

static inline void buf_add(lua_State *L, strbuf *b, const char *s, size_t n) {
  if (n == 0)
    return;
  if ((!b->p || b->n + n > b->cap) && !buf_grow(L, b, n))
    return;
  memcpy(b->p + b->n, s, n);
  b->n += n;
}

/* RFC 4180 quoting (export.csv_field) and, unless raw, OWASP's formula neutralising
 * (export.csv_neutral_field): a cell starting with = + - @ tab or CR gets a ' and quotes. */
static void add_cell(lua_State *L, strbuf *b, const char *s, size_t n, int raw) {
  char first = '\0';
  if (n > 0)
    first = s[0];
  int formula = !raw && (first == '=' || first == '+' || first == '-' || first == '@' ||
                         first == '\t' || first == '\r');
  int quote = memchr(s, '"', n) != NULL;
  if (!formula && !quote && !memchr(s, ',', n) && !memchr(s, '\n', n) && !memchr(s, '\r', n)) {
    buf_add(L, b, s, n);
    return;
  }
  buf_add(L, b, formula ? "\"'" : "\"", formula ? 2 : 1);
  if (quote) {
    for (const char *p = s, *end = s + n; p < end;) {
      const char *q = memchr(p, '"', (size_t)(end - p));
      size_t len = q ? (size_t)(q - p) + 1 : (size_t)(end - p);
      buf_add(L, b, p, len);
      if (q)
        buf_add(L, b, "\"", 1);
      p += len;
    }
  } else {
    buf_add(L, b, s, n);
  }
  buf_add(L, b, "\"", 1);
}

enum { C_PLAIN, C_LIST, C_SCORE, C_SCANNER };

static const char *const LIST_COLUMNS[] = {"aliases", "references", "cwe", "locations", NULL};
static const char *const PLAIN_COLUMNS[] = {"id",
                                            "severity",
                                            "cvss_vector",
                                            "cvss_source",
                                            "package",
                                            "type",
                                            "pkg_type",
                                            "installed_version",
                                            "fixed_version",
                                            "fix_state",
                                            "purl",
                                            "title",
                                            "target",
                                            "path",
                                            "layer",
                                            "description",
                                            "primary_url",
                                            "scanner_severity",
                                            "published",
                                            "modified",
                                            NULL};

static int column_kind(const char *name) {
  for (int i = 0; LIST_COLUMNS[i]; i++)
    if (strcmp(name, LIST_COLUMNS[i]) == 0)
      return C_LIST;
  for (int i = 0; PLAIN_COLUMNS[i]; i++)
    if (strcmp(name, PLAIN_COLUMNS[i]) == 0)
      return C_PLAIN;
  if (strcmp(name, "cvss_score") == 0)
    return C_SCORE;
  if (strcmp(name, "scanner") == 0)
    return C_SCANNER;
  return -1;
}

/* table.concat(list, " ") of the list at the top (popped); 0 when concat would raise. */
static int add_joined(lua_State *L, strbuf *cell) {
  if (!lua_istable(L, -1))
    return 0;
  lua_Integer n = luaL_len(L, -1);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, -1, i);
    size_t len;
    const char *s = lua_isstring(L, -1) ? lua_tolstring(L, -1, &len) : NULL;
    if (s) {
      if (i > 1)
        buf_add(L, cell, " ", 1);
      buf_add(L, cell, s, len);
    }
    lua_pop(L, 1);
    if (!s)
      return 0;
  }
  lua_pop(L, 1);
  return 1;
}

/* The value of one column of the finding at index `f` (export.CSV_VALUE): *s and *len point
 * into a string left on the stack or into `cell`; 0 when the Lua getter would raise on it (the
 * caller leaves the row to the Lua writer). The caller pops what this pushed. */
static int cell_value(lua_State *L, int f, const char *name, int kind, strbuf *cell, const char **s,
                      size_t *len) {
  int ok = 1;
  *s = "";
  *len = 0;
  cell->n = 0;
  if (kind == C_SCANNER) {
    if (lua_getfield(L, f, "found_by") != LUA_TNIL && lua_toboolean(L, -1)) {
      ok = add_joined(L, cell);
    } else if (lua_getfield(L, f, "scanner") != LUA_TNIL && lua_toboolean(L, -1)) {
      ok = lua_isstring(L, -1);
      if (ok)
        *s = lua_tolstring(L, -1, len);
      return ok;
    }
  } else if (lua_getfield(L, f, name) == LUA_TNIL || (kind != C_PLAIN && !lua_toboolean(L, -1))) {
    return 1; /* "" */
  } else if (kind == C_LIST) {
    ok = add_joined(L, cell);
  } else if (kind == C_SCORE) {
    ok = lua_isnumber(L, -1);
    if (ok) {
      char num[64];
      int k = snprintf(num, sizeof num, "%.1f", (double)lua_tonumber(L, -1));
      buf_add(L, cell, num, (size_t)k);
    }
  } else {
    /* tostring(v); a string is itself (no string metatable has a __tostring) */
    *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, len) : luaL_tolstring(L, -1, len);
    return 1;
  }
  *s = cell->p ? cell->p : "";
  *len = cell->n;
  return ok;
}

/* scan.csv_rows(findings, columns, raw, from, to) -> the CSV rows of findings[from..to]
 * (CRLF after each), or nil when one of them has a value the Lua writer must handle (a list
 * holding a table, a score that is no number: the Lua writer raises its error on it). */
static int scan_csv_rows(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  int raw = lua_toboolean(L, 3);
  lua_Integer from = luaL_checkinteger(L, 4), to = luaL_checkinteger(L, 5);
  int ncol = (int)luaL_len(L, 2);
  int *kinds = lua_newuserdatauv(L, sizeof(int) * (size_t)(ncol > 0 ? ncol : 1), 0);
  lua_createtable(L, ncol, 0); /* the names, kept alive */
  int names = lua_gettop(L);
  for (int c = 1; c <= ncol; c++) {
    lua_geti(L, 2, c);
    kinds[c - 1] = lua_type(L, -1) == LUA_TSTRING ? column_kind(lua_tostring(L, -1)) : -1;
    if (kinds[c - 1] < 0)
      return luaL_error(L, "scan.csv_rows: columns[%d]: no such column", c);
    lua_rawseti(L, names, c);
  }
  strbuf *out = lua_newuserdatauv(L, sizeof(strbuf), 0);
  *out = (strbuf){0};
  luaL_setmetatable(L, BUF_MT);
  strbuf *cell = lua_newuserdatauv(L, sizeof(strbuf), 0);
  *cell = (strbuf){0};
  luaL_setmetatable(L, BUF_MT);
  for (lua_Integer i = from; i <= to; i++) {
    if (lua_geti(L, 1, i) != LUA_TTABLE) {
      buf_release(out);
      buf_release(cell);
      lua_pushnil(L);
      return 1;
    }
    int f = lua_gettop(L);
    for (int c = 0; c < ncol; c++) {
      lua_rawgeti(L, names, c + 1);
      const char *s;
      size_t len;
      if (!cell_value(L, f, lua_tostring(L, -1), kinds[c], cell, &s, &len)) {
        buf_release(out);
        buf_release(cell);
        lua_pushnil(L);
        return 1;
      }
      if (c > 0)
        buf_add(L, out, ",", 1);
      add_cell(L, out, s, len, raw);
      lua_settop(L, f);
    }
    buf_add(L, out, "\r\n", 2);
    lua_pop(L, 1);
  }
  lua_pushlstring(L, out->p ? out->p : "", out->n);
  buf_release(out);
  buf_release(cell);
  return 1;
}

/* scan.csv_known(name) -> whether csv_rows writes that column. */
static int scan_csv_known(lua_State *L) {
  lua_pushboolean(L, column_kind(luaL_checkstring(L, 1)) >= 0);
  return 1;
}

/* ---- SARIF ---- */

/*
 * The rules and results of export.sarif (lua/myrmex/scan/export.lua) for vulnerability
 * findings, and the results of the Lua writer's other entries, written here byte for byte as
 * the Lua writer writes them (spec:scan_fast compares the two on every fixture). Strings are
 * printed by cJSON through json.h, as json.quote prints them. What Lua would do differently
 * (a NUL to mark, invalid UTF-8 or a value of another type to raise on) is not written here:
 * the item is handed back and the Lua writer writes it, raising what it raises.
 */

typedef struct {
  const char *s;
  size_t n;
} str;

/* The value at the top as a string: 1 for a string (*out set) or, when `opt`, nil (*out is
 * `dflt`); 0 for anything else. The value stays on the stack, anchoring the string. */
static int str_at(lua_State *L, int opt, const char *dflt, str *out) {
  int t = lua_type(L, -1);
  if (t == LUA_TSTRING) {
    out->s = lua_tolstring(L, -1, &out->n);
    return 1;
  }
  out->s = dflt;
  out->n = dflt ? strlen(dflt) : 0;
  return opt && t == LUA_TNIL;
}

static int str_field(lua_State *L, int t, const char *key, const char *dflt, str *out) {
  lua_getfield(L, t, key);
  return str_at(L, dflt != NULL, dflt, out);
}

/* What a vulnerability finding's rule and result are made of (export.vuln_entry, vuln_rule,
 * cvss_data). The strings are anchored on the stack above the finding. */
typedef struct {
  str id, sev, pkg, pkg_or_unknown, installed, fixed, title, desc, url, path, name, score;
  int cvss;      /* stack index of the CVSS table (cvss_data's c), or 0 */
  int locations; /* stack index of f.locations when it has more than one, or 0 */
  int lines;     /* stack index of f.lines, or 0 */
} vuln;

static const char *const RULE_NAMES[][2] = {{"os-pkgs", "OsPackageVulnerability"},
                                            {"lang-pkgs", "LanguageSpecificPackageVulnerability"},
                                            {"config", "Misconfiguration"},
                                            {"secret", "Secret"},
                                            {"license", "License"},
                                            {"license-file", "License"}};

static const char *rule_name(const str *class) {
  for (size_t i = 0; i < sizeof RULE_NAMES / sizeof RULE_NAMES[0]; i++)
    if (strcmp(class->s, RULE_NAMES[i][0]) == 0 && strlen(class->s) == class->n)
      return RULE_NAMES[i][1];
  return "UnknownIssue";
}

/* export.SARIF_LEVEL and FALLBACK_SCORE by severity. */
static const char *const SARIF_SEVERITY[][3] = {{"CRITICAL", "error", "9.5"},
                                                {"HIGH", "error", "8.0"},
                                                {"MEDIUM", "warning", "5.5"},
                                                {"LOW", "note", "2.0"},
                                                {"UNKNOWN", "note", "0.0"}};

static const char *severity_info(const str *sev, int what, const char *dflt) {
  for (size_t i = 0; i < sizeof SARIF_SEVERITY / sizeof SARIF_SEVERITY[0]; i++)
    if (sev->s && strcmp(sev->s, SARIF_SEVERITY[i][0]) == 0 && strlen(sev->s) == sev->n)
      return SARIF_SEVERITY[i][what];
  return dflt;
}

/* GitHub code scanning refuses a result with more locations; the Lua writer reads it as
 * scan.SARIF_MAX_LOCATIONS, so both writers cut at the same place. */
#define SARIF_MAX_LOCATIONS 1000

/* Each of a list's first min(#list, SARIF_MAX_LOCATIONS) items passes `ok`. */
static int list_ok(lua_State *L, int list, int (*ok)(lua_State *L)) {
  lua_Integer n = luaL_len(L, list);
  if (n > SARIF_MAX_LOCATIONS)
    n = SARIF_MAX_LOCATIONS;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, list, i);
    int good = ok(L);
    lua_pop(L, 1);
    if (!good)
      return 0;
  }
  return 1;
}

static int is_string(lua_State *L) {
  return lua_type(L, -1) == LUA_TSTRING;
}

/* A line range {start_line=, end_line=} of integers (the Lua writer concatenates them). */
static int is_range(lua_State *L) {
  if (!lua_istable(L, -1))
    return 0;
  lua_getfield(L, -1, "start_line");
  lua_getfield(L, -2, "end_line");
  int ok = lua_isinteger(L, -1) && lua_isinteger(L, -2);
  lua_pop(L, 2);
  return ok;
}

/* f.locations (URIs, used when more than one) or else f.lines (ranges), checked. */
static int read_places(lua_State *L, int f, vuln *v) {
  v->locations = v->lines = 0;
  int t = lua_getfield(L, f, "locations");
  if (t != LUA_TNIL) {
    if (t != LUA_TTABLE)
      return 0;
    if (luaL_len(L, -1) > 1) {
      v->locations = lua_gettop(L);
      return list_ok(L, v->locations, is_string);
    }
  }
  t = lua_getfield(L, f, "lines");
  if (t == LUA_TNIL)
    return 1;
  v->lines = lua_gettop(L);
  return t == LUA_TTABLE && list_ok(L, v->lines, is_range);
}

/* A CVSS value of cvss_data's put: 1 when usable (absent, or of the type the writer prints). */
static int cvss_value(lua_State *L, int c, const char *key, int number) {
  int t = lua_getfield(L, c, key);
  lua_pop(L, 1);
  return t == LUA_TNIL || t == (number ? LUA_TNUMBER : LUA_TSTRING);
}

/* cvss[key] for the string key at the top (kept): 1 when absent or a table (then v->cvss). */
static int cvss_entry(lua_State *L, int cvss, vuln *v) {
  lua_pushvalue(L, -1);
  int t = lua_gettable(L, cvss);
  if (t == LUA_TTABLE)
    v->cvss = lua_gettop(L);
  return t == LUA_TNIL || t == LUA_TTABLE;
}

/* cvss_data's table c: f.cvss[f.severity_source], or for other scanners f.cvss[f.cvss_source]. */
static int read_cvss(lua_State *L, int f, const str *scanner, vuln *v) {
  v->cvss = 0;
  int t = lua_getfield(L, f, "cvss");
  if (t != LUA_TNIL && t != LUA_TTABLE)
    return 0;
  int cvss = lua_gettop(L);
  str src;
  if (!str_field(L, f, "severity_source", "", &src))
    return 0;
  if (t == LUA_TTABLE && lua_type(L, -1) == LUA_TSTRING && !cvss_entry(L, cvss, v))
    return 0;
  int trivy = strcmp(scanner->s, "trivy") == 0 && scanner->n == 5;
  if (!v->cvss && !trivy && lua_type(L, cvss) == LUA_TTABLE) {
    if (!str_field(L, f, "cvss_source", "", &src))
      return 0;
    if (lua_type(L, -1) == LUA_TSTRING && !cvss_entry(L, cvss, v))
      return 0;
  }
  if (v->cvss) {
    static const char *const KEYS[] = {"v2_vector", "v3_vector", "v4_vector"};
    static const char *const SCORES[] = {"v2_score", "v3_score", "v4_score"};
    for (int i = 0; i < 3; i++)
      if (!cvss_value(L, v->cvss, KEYS[i], 0) || !cvss_value(L, v->cvss, SCORES[i], 1))
        return 0;
  }
  return 1;
}

/* security-severity as cvss_data makes it: the v3 score with one decimal, for other scanners
 * without a CVSS table their score, else the severity's fallback (absent for an unknown one). */
static int read_score(lua_State *L, int f, const str *scanner, vuln *v, char *num, size_t size) {
  int trivy = strcmp(scanner->s, "trivy") == 0 && scanner->n == 5;
  const char *fallback = severity_info(&v->sev, 2, NULL);
  v->score.s = fallback;
  v->score.n = fallback ? strlen(fallback) : 0;
  if (v->cvss)
    lua_getfield(L, v->cvss, "v3_score");
  else if (!trivy)
    lua_getfield(L, f, "cvss_score");
  else
    return 1;
  int t = lua_type(L, -1);
  if (t != LUA_TNIL && t != LUA_TNUMBER)
    return 0;
  if (t == LUA_TNUMBER && (!v->cvss || lua_tonumber(L, -1) != 0)) {
    v->score.n = (size_t)snprintf(num, size, "%.1f", (double)lua_tonumber(L, -1));
    v->score.s = num;
  }
  return 1;
}

/* class_of(f): f.class, else "os-pkgs" for type "os", else "lang-pkgs"; 0 for a value of
 * another type. */
static int read_class(lua_State *L, int f, str *class) {
  if (lua_getfield(L, f, "class") != LUA_TNIL)
    return str_at(L, 0, NULL, class);
  str type;
  if (!str_field(L, f, "type", "", &type))
    return 0;
  int os = type.n == 2 && strcmp(type.s, "os") == 0;
  *class = os ? (str){"os-pkgs", 7} : (str){"lang-pkgs", 9};
  return 1;
}

/* The finding at f with its path and URL (export.vuln_path, url_of) as the writer reads it,
 * with what only its rule needs when `rule`; 0 when a value is not of the type this writer
 * handles. Pushes what it reads. */
static int read_vuln(lua_State *L, int f, int path, int url, vuln *v, int rule, char *num,
                     size_t size) {
  if (!lua_checkstack(L, 40))
    return 0;
  lua_pushvalue(L, path);
  if (!str_at(L, 0, NULL, &v->path))
    return 0;
  lua_pushvalue(L, url);
  if (!str_at(L, 0, NULL, &v->url))
    return 0;
  if (!str_field(L, f, "id", NULL, &v->id) || !str_field(L, f, "severity", NULL, &v->sev))
    return 0;
  int has_pkg = lua_getfield(L, f, "package") == LUA_TSTRING;
  if (!str_at(L, 1, "", &v->pkg))
    return 0;
  v->pkg_or_unknown = has_pkg ? v->pkg : (str){"?", 1};
  if (!str_field(L, f, "installed_version", "", &v->installed) ||
      !str_field(L, f, "fixed_version", "", &v->fixed))
    return 0;
  if (!rule)
    return read_places(L, f, v);
  str class, scanner;
  if (!str_field(L, f, "title", "", &v->title) || !str_field(L, f, "description", "", &v->desc) ||
      !read_class(L, f, &class) || !str_field(L, f, "scanner", NULL, &scanner))
    return 0;
  v->name.s = rule_name(&class);
  v->name.n = strlen(v->name.s);
  return read_cvss(L, f, &scanner, v) && read_score(L, f, &scanner, v, num, size);
}

#define ADD_LIT(L, b, lit) buf_add(L, b, lit, sizeof(lit) - 1)

static void add_str(lua_State *L, strbuf *b, const str *s) {
  buf_add(L, b, s->s, s->n);
}

/* json.quote(s) appended; 0 when it is left to Lua (a NUL, invalid UTF-8). s[n] is '\0'. */
static int add_quoted(lua_State *L, strbuf *b, const char *s, size_t n) {
  size_t room = MX_JSON_QUOTE_ROOM(n);
  if ((!b->p || b->n + room > b->cap) && !buf_grow(L, b, room))
    return 0;
  size_t k = mx_json_quote_into(s, n, b->p + b->n);
  b->n += k;
  return k > 0;
}

static int add_quoted_str(lua_State *L, strbuf *b, const str *s) {
  return add_quoted(L, b, s->s, s->n);
}

/* `b` (emptied first) gets string.format(f, ...) for a format of %s only, NUL-terminated. */
static void add_format(lua_State *L, strbuf *b, const char *f, const str *args) {
  b->n = 0;
  for (const char *p = f; *p;) {
    const char *q = strstr(p, "%s");
    size_t len = q ? (size_t)(q - p) : strlen(p);
    buf_add(L, b, p, len);
    if (!q)
      break;
    add_str(L, b, args++);
    p = q + 2;
  }
  buf_add(L, b, "", 1);
  b->n--;
}

/* The quoted text of format(f, ...). */
static int add_quoted_format(lua_State *L, strbuf *b, strbuf *scratch, const char *f,
                             const str *args) {
  add_format(L, scratch, f, args);
  return add_quoted(L, b, scratch->p, scratch->n);
}

/* export.uri_escape(s) quoted: path characters kept, the rest %XX, and a ":" in the first
 * segment escaped too (it would read as a URI scheme). */
static void add_uri(lua_State *L, strbuf *b, const str *s) {
  static const char KEEP[] = "-._~/:@!$&'*+,;=";
  static const char HEX[] = "0123456789ABCDEF";
  size_t room = 3 * s->n + 2; /* every byte escaped, and the quotes */
  if ((!b->p || b->n + room > b->cap) && !buf_grow(L, b, room))
    return;
  char *out = b->p + b->n;
  int first = 1;
  *out++ = '"';
  for (size_t i = 0; i < s->n; i++) {
    unsigned char c = (unsigned char)s->s[i];
    int alnum = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
    if (c == '/')
      first = 0;
    if (alnum || (c && strchr(KEEP, c) && !(first && c == ':'))) {
      *out++ = (char)c;
    } else {
      *out++ = '%';
      *out++ = HEX[c >> 4];
      *out++ = HEX[c & 15];
    }
  }
  *out++ = '"';
  b->n = (size_t)(out - b->p);
}

static void add_int(lua_State *L, strbuf *b, lua_Integer i) {
  char num[32];
  buf_add(L, b, num, (size_t)snprintf(num, sizeof num, "%lld", (long long)i));
}

/* export.location: one physical location with its (already quoted) message. */
static void add_location(lua_State *L, strbuf *b, const str *uri, lua_Integer first,
                         lua_Integer last, const strbuf *msg) {
  if (first == 0 && last == 0)
    first = last = 1;
  ADD_LIT(L, b, "{\"physicalLocation\":{\"artifactLocation\":{\"uri\":");
  add_uri(L, b, uri);
  ADD_LIT(L, b, ",\"uriBaseId\":\"ROOTPATH\"},\"region\":{\"startLine\":");
  add_int(L, b, first);
  ADD_LIT(L, b, ",\"startColumn\":1,\"endLine\":");
  add_int(L, b, last);
  ADD_LIT(L, b, ",\"endColumn\":1}},\"message\":{\"text\":");
  buf_add(L, b, msg->p, msg->n);
  ADD_LIT(L, b, "}}");
}

/* The line range at the top (checked by is_range), popped. */
static void range_at(lua_State *L, lua_Integer *first, lua_Integer *last) {
  lua_getfield(L, -1, "start_line");
  lua_getfield(L, -2, "end_line");
  *first = lua_tointeger(L, -2);
  *last = lua_tointeger(L, -1);
  lua_pop(L, 3);
}

typedef struct {
  strbuf *out;
  strbuf *msg;               /* the quoted location message */
  strbuf *where, *text, *fp; /* a result's location message, message and fingerprint */
  str dockerfile;            /* s NULL without the dockerfile option */
  lua_Integer line;
} sarif_writer;

/* The locations of a result (export.result_json): the Dockerfile's line when given, else one
 * per URI (vulnerabilities found at several), else one per line range, else the path's line 1. */
static void add_locations(lua_State *L, sarif_writer *w, const str *path, int uris, int lines) {
  strbuf *b = w->out;
  if (w->dockerfile.s) {
    add_location(L, b, &w->dockerfile, w->line, w->line, w->msg);
    return;
  }
  int list = uris ? uris : lines;
  if (!list) {
    add_location(L, b, path, 1, 1, w->msg);
    return;
  }
  lua_Integer n = luaL_len(L, list);
  for (lua_Integer i = 1; i <= n && i <= SARIF_MAX_LOCATIONS; i++) {
    if (i > 1)
      buf_add(L, b, ",", 1);
    lua_geti(L, list, i);
    if (uris) {
      str uri;
      str_at(L, 0, NULL, &uri);
      add_location(L, b, &uri, 1, 1, w->msg);
      lua_pop(L, 1);
    } else {
      lua_Integer first, last;
      range_at(L, &first, &last);
      add_location(L, b, path, first, last, w->msg);
    }
  }
}

/* What a result is made of: export.vuln_entry's fields, or those of a Lua entry. */
typedef struct {
  str id, sev, message, path, fingerprint;
  int uris, lines;
} result_parts;

/* A result (export.result_json) with its location message `where` (NUL-terminated). */
static int add_result(lua_State *L, sarif_writer *w, const result_parts *r, const str *where,
                      lua_Integer rule) {
  strbuf *b = w->out;
  w->msg->n = 0;
  if (!add_quoted_str(L, w->msg, where))
    return 0;
  ADD_LIT(L, b, "{\"ruleId\":");
  if (!add_quoted_str(L, b, &r->id))
    return 0;
  ADD_LIT(L, b, ",\"ruleIndex\":");
  add_int(L, b, rule);
  ADD_LIT(L, b, ",\"level\":\"");
  const char *level = severity_info(&r->sev, 1, "none");
  buf_add(L, b, level, strlen(level));
  ADD_LIT(L, b, "\",\"message\":{\"text\":");
  if (!add_quoted_str(L, b, &r->message))
    return 0;
  ADD_LIT(L, b, "},\"locations\":[");
  add_locations(L, w, &r->path, r->uris, r->lines);
  ADD_LIT(L, b, "],\"partialFingerprints\":{\"myrmexVulnerability/v1\":");
  if (!add_quoted_str(L, b, &r->fingerprint))
    return 0;
  ADD_LIT(L, b, "}}");
  return 1;
}

static const char RESULT_TEXT[] = "Package: %s\nInstalled Version: %s\nVulnerability %s\n"
                                  "Severity: %s\nFixed Version: %s\nLink: [%s](%s)";

/* A vulnerability finding's result, its texts made as export.vuln_entry makes them. */
static int vuln_result(lua_State *L, sarif_writer *w, const vuln *v, lua_Integer rule) {
  const str fp_parts[] = {v->id, v->pkg_or_unknown, v->installed, v->path};
  add_format(L, w->fp, "%s|%s|%s|%s", fp_parts);
  const str text[] = {v->pkg, v->installed, v->id, v->sev, v->fixed, v->id, v->url};
  add_format(L, w->text, RESULT_TEXT, text);
  const str where_parts[] = {v->path, v->pkg, v->installed};
  add_format(L, w->where, "%s: %s@%s", where_parts);
  result_parts r = {v->id,        v->sev,  {w->text->p, w->text->n}, v->path, {w->fp->p, w->fp->n},
                    v->locations, v->lines};
  str where = {w->where->p, w->where->n};
  return add_result(L, w, &r, &where, rule);
}

/* A Lua entry's result (misconfiguration, secret, license, or a finding Lua made). */
static int entry_result(lua_State *L, sarif_writer *w, int e, lua_Integer rule) {
  result_parts r = {{NULL, 0}, {NULL, 0}, {NULL, 0}, {NULL, 0}, {NULL, 0}, 0, 0};
  str where;
  if (!lua_checkstack(L, 20))
    return 0;
  lua_getfield(L, e, "sev");
  if (!str_at(L, 1, NULL, &r.sev) || !str_field(L, e, "id", NULL, &r.id) ||
      !str_field(L, e, "message", NULL, &r.message) || !str_field(L, e, "path", NULL, &r.path) ||
      !str_field(L, e, "fingerprint", NULL, &r.fingerprint) ||
      !str_field(L, e, "location_message", NULL, &where) || lua_getfield(L, e, "uris") != LUA_TNIL)
    return 0;
  int t = lua_getfield(L, e, "lines");
  if (t != LUA_TNIL) {
    r.lines = lua_gettop(L);
    if (t != LUA_TTABLE || !list_ok(L, r.lines, is_range))
      return 0;
  }
  return add_result(L, w, &r, &where, rule);
}

/* Two scratch buffers and the output, in userdata freed by __gc if an error comes. */
static strbuf *new_buf(lua_State *L) {
  strbuf *b = lua_newuserdatauv(L, sizeof(strbuf), 0);
  *b = (strbuf){0};
  luaL_setmetatable(L, BUF_MT);
  return b;
}

/* Push the text written so far and the index of the first item not written; buffers freed. */
static int sarif_done(lua_State *L, strbuf *const *bufs, int nbufs, lua_Integer next) {
  lua_pushlstring(L, bufs[0]->p ? bufs[0]->p : "", bufs[0]->n);
  lua_pushinteger(L, next);
  for (int i = 0; i < nbufs; i++)
    buf_release(bufs[i]);
  return 2;
}

/* Push entry k of each of the five parallel tables at stack indices 1-5 (the item and its
 * columns); returns the top below them. */
static int push_columns(lua_State *L, lua_Integer k) {
  int top = lua_gettop(L);
  for (int t = 1; t <= 5; t++)
    lua_geti(L, t, k);
  return top;
}

/* scan.sarif_results(entries, finding, paths, urls, rule_of, dockerfile|false, line, from, to)
 * -> the results of entries[from..to] (each after "\n" or ",\n"), up to the first one left to
 * the Lua writer, and that one's index (to + 1 when none). */
static int scan_sarif_results(lua_State *L) {
  for (int i = 1; i <= 5; i++)
    luaL_checktype(L, i, LUA_TTABLE);
  lua_Integer line = luaL_checkinteger(L, 7), from = luaL_checkinteger(L, 8),
              to = luaL_checkinteger(L, 9);
  sarif_writer w = {new_buf(L), new_buf(L), new_buf(L), new_buf(L), new_buf(L), {NULL, 0}, line};
  if (lua_type(L, 6) == LUA_TSTRING)
    w.dockerfile.s = lua_tolstring(L, 6, &w.dockerfile.n);
  strbuf *bufs[] = {w.out, w.msg, w.where, w.text, w.fp};
  char num[64];
  lua_Integer k = from;
  for (; k <= to; k++) {
    int top = push_columns(L, k);
    size_t mark = w.out->n;
    int ok = lua_isinteger(L, -1) && lua_istable(L, top + 1);
    lua_Integer rule = lua_tointeger(L, -1);
    buf_add(L, w.out, k > 1 ? ",\n" : "\n", k > 1 ? 2 : 1);
    if (ok && lua_toboolean(L, top + 2)) {
      vuln v;
      ok = read_vuln(L, top + 1, top + 3, top + 4, &v, 0, num, sizeof num) &&
           vuln_result(L, &w, &v, rule);
    } else if (ok) {
      ok = entry_result(L, &w, top + 1, rule);
    }
    lua_settop(L, top);
    if (!ok) {
      w.out->n = mark;
      break;
    }
  }
  return sarif_done(L, bufs, 5, k);
}

static const char HELP_TEXT[] = "Vulnerability %s\nSeverity: %s\nPackage: %s\nFixed Version: %s\n"
                                "Link: [%s](%s)\n%s";
static const char HELP_MARKDOWN[] =
    "**Vulnerability %s**\n| Severity | Package | Fixed Version | Link |\n"
    "| --- | --- | --- | --- |\n|%s|%s|%s|[%s](%s)|\n\n%s";

/* A CVSS property of the rule (cvss_data's put: absent, "" and 0 are left out); 0 when it is
 * left to Lua. */
static int add_cvss_prop(lua_State *L, strbuf *b, int c, const char *key, const char *name) {
  int t = lua_getfield(L, c, key);
  int ok = 1;
  if (t == LUA_TSTRING && lua_rawlen(L, -1) > 0) {
    buf_add(L, b, name, strlen(name));
    ok = add_quoted(L, b, lua_tostring(L, -1), lua_rawlen(L, -1));
    buf_add(L, b, ",", 1);
  } else if (t == LUA_TNUMBER && lua_tonumber(L, -1) != 0) {
    char num[32];
    const char *text = mx_json_number(L, -1, num, sizeof num);
    ok = text != NULL;
    if (ok) {
      buf_add(L, b, name, strlen(name));
      buf_add(L, b, text, strlen(text));
      buf_add(L, b, ",", 1);
    }
  }
  lua_pop(L, 1);
  return ok;
}

/* The rule's properties: CVSS, precision, security-severity and tags, keys sorted. */
static int add_rule_props(lua_State *L, strbuf *b, const vuln *v) {
  if (v->cvss) {
    static const char *const KEYS[][2] = {
        {"v2_score", "\"cvssv2_score\":"},      {"v2_vector", "\"cvssv2_vector\":"},
        {"v3_score", "\"cvssv3_baseScore\":"},  {"v3_vector", "\"cvssv3_vector\":"},
        {"v4_score", "\"cvssv40_baseScore\":"}, {"v4_vector", "\"cvssv40_vector\":"}};
    for (size_t i = 0; i < sizeof KEYS / sizeof KEYS[0]; i++)
      if (!add_cvss_prop(L, b, v->cvss, KEYS[i][0], KEYS[i][1]))
        return 0;
  }
  ADD_LIT(L, b, "\"precision\":\"very-high\",");
  if (v->score.s) {
    ADD_LIT(L, b, "\"security-severity\":");
    if (!add_quoted_str(L, b, &v->score))
      return 0;
    buf_add(L, b, ",", 1);
  }
  ADD_LIT(L, b, "\"tags\":[\"vulnerability\",\"security\",");
  if (!add_quoted_str(L, b, &v->sev))
    return 0;
  ADD_LIT(L, b, "]");
  return 1;
}

/* A vulnerability's rule (export.vuln_rule and rule_json); `help` is its helpUri or NULL. */
static int vuln_rule(lua_State *L, sarif_writer *w, const vuln *v, const str *help) {
  strbuf *b = w->out;
  ADD_LIT(L, b, "{\"id\":");
  if (!add_quoted_str(L, b, &v->id))
    return 0;
  ADD_LIT(L, b, ",\"name\":\"");
  add_str(L, b, &v->name);
  ADD_LIT(L, b, "\",\"shortDescription\":{\"text\":");
  if (!add_quoted_str(L, b, &v->title))
    return 0;
  ADD_LIT(L, b, "},\"fullDescription\":{\"text\":");
  if (!add_quoted_str(L, b, v->desc.n ? &v->desc : &v->title))
    return 0;
  ADD_LIT(L, b, "},\"defaultConfiguration\":{\"level\":\"");
  const char *level = severity_info(&v->sev, 1, "none");
  buf_add(L, b, level, strlen(level));
  ADD_LIT(L, b, "\"}");
  if (help->s) {
    ADD_LIT(L, b, ",\"helpUri\":");
    if (!add_quoted_str(L, b, help))
      return 0;
  }
  const str args[] = {v->id, v->sev, v->pkg, v->fixed, v->id, v->url, v->desc};
  ADD_LIT(L, b, ",\"help\":{\"text\":");
  if (!add_quoted_format(L, b, w->text, HELP_TEXT, args))
    return 0;
  ADD_LIT(L, b, ",\"markdown\":");
  if (!add_quoted_format(L, b, w->text, HELP_MARKDOWN, args))
    return 0;
  ADD_LIT(L, b, "},\"properties\":{");
  if (!add_rule_props(L, b, v))
    return 0;
  ADD_LIT(L, b, "}}");
  return 1;
}

/* scan.sarif_rules(items, finding, paths, urls, helps, from, to) -> the rules of items[from..to]
 * (each after "\n" or ",\n"; helps[i] the rule's helpUri or false), up to the first one left
 * to the Lua writer (one that is not a finding, or that Lua must write), and its index. */
static int scan_sarif_rules(lua_State *L) {
  for (int i = 1; i <= 5; i++)
    luaL_checktype(L, i, LUA_TTABLE);
  lua_Integer from = luaL_checkinteger(L, 6), to = luaL_checkinteger(L, 7);
  sarif_writer w = {new_buf(L), NULL, NULL, new_buf(L), NULL, {NULL, 0}, 0};
  strbuf *bufs[] = {w.out, w.text};
  char num[64];
  lua_Integer i = from;
  for (; i <= to; i++) {
    int top = push_columns(L, i);
    size_t mark = w.out->n;
    str help = {NULL, 0};
    int ok = lua_istable(L, top + 1) && lua_toboolean(L, top + 2) &&
             (lua_type(L, -1) == LUA_TSTRING || lua_toboolean(L, -1) == 0);
    if (ok && lua_type(L, -1) == LUA_TSTRING)
      help.s = lua_tolstring(L, -1, &help.n);
    buf_add(L, w.out, i > 1 ? ",\n" : "\n", i > 1 ? 2 : 1);
    vuln v;
    ok = ok && read_vuln(L, top + 1, top + 3, top + 4, &v, 1, num, sizeof num) &&
         vuln_rule(L, &w, &v, &help);
    lua_settop(L, top);
    if (!ok) {
      w.out->n = mark;
      break;
    }
  }
  return sarif_done(L, bufs, 2, i);
}

int luaopen_myrmex_core_scan(lua_State *L) {
  static const luaL_Reg funcs[] = {{"read_file", scan_read_file},
                                   {"read_text", scan_read_text},
                                   {"csv_rows", scan_csv_rows},
                                   {"csv_known", scan_csv_known},
                                   {"sarif_rules", scan_sarif_rules},
                                   {"sarif_results", scan_sarif_results},
                                   {NULL, NULL}};
  luaL_newmetatable(L, BUF_MT);
  lua_pushcfunction(L, buf_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  /* The decoder's metatables, which this module's tables carry too. */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "myrmex.core.json");
  lua_call(L, 1, 0);
  luaL_newlib(L, funcs);
  lua_pushinteger(L, SARIF_MAX_LOCATIONS);
  lua_setfield(L, -2, "SARIF_MAX_LOCATIONS");
  return 1;
}
