/* json.c — strict recursive-descent JSON parser (RFC 8259) producing the cr_json tree of json.h.
 *
 * Memory: every decoded string goes into one arena of len + 1 bytes, allocated up front. A string
 * token of r raw bytes (quotes included) decodes to at most r - 2 bytes (no escape grows), so the
 * strings plus their NUL terminators always fit and never move. Each array or object owns one
 * exactly-sized array of 16-byte nodes; scalars need no allocation of their own. */
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

typedef struct parser {
    const unsigned char *s;   /* the input, not NUL-terminated */
    size_t len;
    size_t pos;               /* next byte to read */
    char *arena;              /* decoded strings, len + 1 bytes */
    size_t arena_used;
    size_t values_left;       /* budget of values (CR_JSON_MAX_VALUES): bounds the tree's memory */
} parser;

/* The children of an array or object while it is being parsed. */
typedef struct node_list {
    cr_json *items;
    size_t n, cap;
} node_list;

static cr_status fail_at(size_t pos, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static cr_status fail_at(size_t pos, const char *fmt, ...) {
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return cr_fail(CR_E_FORMAT, "%s at byte %zu", what, pos);
}

static void free_value(cr_json *v) {
    if (v->type == CR_JSON_ARRAY || v->type == CR_JSON_OBJECT) {
        size_t n = v->type == CR_JSON_OBJECT ? 2 * (size_t)v->len : v->len;
        for (size_t i = 0; i < n; i++) free_value(&v->u.items[i]);
        free(v->u.items);
    }
    memset(v, 0, sizeof *v);
}

static cr_status list_push(node_list *list, const cr_json *v) {
    if (list->n == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 4;
        size_t bytes;
        if (!cr_mul_size(cap, sizeof *list->items, &bytes))
            return cr_fail(CR_E_NOMEM, "JSON array or object too large");
        cr_json *grown = realloc(list->items, bytes);
        if (!grown) return cr_fail(CR_E_NOMEM, "out of memory allocating %zu bytes for JSON nodes", bytes);
        list->items = grown;
        list->cap = cap;
    }
    list->items[list->n++] = *v;
    return CR_OK;
}

/* Hands the children over, trimmed to size (a failed trim keeps the larger block). */
static cr_json *list_finish(node_list *list) {
    if (list->n == 0) {
        free(list->items);
        return NULL;
    }
    cr_json *trimmed = realloc(list->items, list->n * sizeof *list->items);
    return trimmed ? trimmed : list->items;
}

static void list_free(node_list *list) {
    for (size_t i = 0; i < list->n; i++) free_value(&list->items[i]);
    free(list->items);
    memset(list, 0, sizeof *list);
}

static void skip_whitespace(parser *p) {
    while (p->pos < p->len) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static cr_status unexpected(const parser *p, const char *expected) {
    if (p->pos >= p->len) return fail_at(p->pos, "unexpected end of input, expected %s", expected);
    unsigned char c = p->s[p->pos];
    if (c > 0x20 && c < 0x7f) return fail_at(p->pos, "unexpected character '%c', expected %s", c, expected);
    return fail_at(p->pos, "unexpected byte 0x%02x, expected %s", c, expected);
}

/* Length of the well-formed UTF-8 sequence at s (Unicode table 3-7: no overlongs, no surrogates,
 * nothing above U+10FFFF), or 0 if it is not one. */
static size_t utf8_sequence_length(const unsigned char *s, size_t avail) {
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t n;
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c == 0xE0) { n = 3; lo = 0xA0; }
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) n = 3;
    else if (c == 0xED) { n = 3; hi = 0x9F; }
    else if (c == 0xF0) { n = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) n = 4;
    else if (c == 0xF4) { n = 4; hi = 0x8F; }
    else return 0;
    if (avail < n || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return n;
}

static size_t utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The 4 hex digits at p->s[at], or -1 if they are missing or not hex. */
static long read_hex4(const parser *p, size_t at) {
    if (at > p->len || p->len - at < 4) return -1;
    long v = 0;
    for (size_t i = 0; i < 4; i++) {
        unsigned char c = p->s[at + i];
        int d = is_digit(c) ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10
              : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Decodes the escape at p->pos (a backslash) into dst; returns the bytes written in *n. */
static cr_status parse_escape(parser *p, char *dst, size_t *n) {
    size_t at = p->pos;
    if (p->len - at < 2) return fail_at(at, "unterminated escape in string");
    unsigned char e = p->s[at + 1];
    static const char simple_from[] = "\"\\/bfnrt", simple_to[] = "\"\\/\b\f\n\r\t";
    const char *hit = memchr(simple_from, e, sizeof simple_from - 1);
    if (hit) {
        dst[0] = simple_to[hit - simple_from];
        *n = 1;
        p->pos += 2;
        return CR_OK;
    }
    if (e != 'u') {
        if (e > 0x20 && e < 0x7f) return fail_at(at, "invalid escape '\\%c' in string", e);
        return fail_at(at, "invalid escape (backslash before byte 0x%02x) in string", e);
    }
    long unit = read_hex4(p, at + 2);
    if (unit < 0) return fail_at(at, "invalid \\u escape (expected 4 hex digits)");
    uint32_t cp = (uint32_t)unit;
    size_t consumed = 6;
    if (cp >= 0xDC00 && cp <= 0xDFFF) return fail_at(at, "lone low surrogate \\u%04X in string", (unsigned)cp);
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        /* A high surrogate must be followed at once by an escaped low surrogate. */
        long low = -1;
        if (p->len - at >= 8 && p->s[at + 6] == '\\' && p->s[at + 7] == 'u') low = read_hex4(p, at + 8);
        if (low < 0xDC00 || low > 0xDFFF)
            return fail_at(at, "lone high surrogate \\u%04X in string (no low surrogate follows)", (unsigned)cp);
        cp = 0x10000 + ((cp - 0xD800) << 10) + ((uint32_t)low - 0xDC00);
        consumed = 12;
    }
    *n = utf8_encode(cp, dst);
    p->pos += consumed;
    return CR_OK;
}

static cr_status parse_string(parser *p, cr_json *out) {
    size_t start = p->pos;
    char *dst = p->arena + p->arena_used;
    size_t n = 0;
    p->pos++;   /* the opening quote */
    for (;;) {
        if (p->pos >= p->len) return fail_at(start, "unterminated string");
        unsigned char c = p->s[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c == '\\') {
            size_t written = 0;
            cr_status st = parse_escape(p, dst + n, &written);
            if (st) return st;
            n += written;
        } else if (c < 0x20) {
            return fail_at(p->pos, "raw control character 0x%02x in string (must be escaped)", c);
        } else if (c < 0x80) {
            dst[n++] = (char)c;
            p->pos++;
        } else {
            size_t k = utf8_sequence_length(p->s + p->pos, p->len - p->pos);
            if (!k) return fail_at(p->pos, "invalid UTF-8 in string");
            memcpy(dst + n, p->s + p->pos, k);
            n += k;
            p->pos += k;
        }
    }
    dst[n] = '\0';
    p->arena_used += n + 1;
    out->type = CR_JSON_STRING;
    out->len = (uint32_t)n;
    out->u.str = dst;
    return CR_OK;
}

static cr_status parse_number(parser *p, cr_json *out) {
    size_t start = p->pos;
    uint8_t flags = CR_JSON_INTEGER;
    uint64_t magnitude = 0;
    if (p->s[p->pos] == '-') {
        flags |= CR_JSON_NEGATIVE;
        p->pos++;
    }
    if (p->pos >= p->len || !is_digit(p->s[p->pos])) return fail_at(start, "invalid number (expected a digit)");
    if (p->s[p->pos] == '0') {
        p->pos++;
        if (p->pos < p->len && is_digit(p->s[p->pos])) return fail_at(start, "invalid number (leading zero)");
    } else {
        while (p->pos < p->len && is_digit(p->s[p->pos])) {
            if (__builtin_mul_overflow(magnitude, 10, &magnitude) ||
                __builtin_add_overflow(magnitude, (uint64_t)(p->s[p->pos] - '0'), &magnitude))
                flags |= CR_JSON_OVERFLOW;
            p->pos++;
        }
    }
    if (p->pos < p->len && p->s[p->pos] == '.') {
        flags &= (uint8_t)~(CR_JSON_INTEGER | CR_JSON_OVERFLOW);
        p->pos++;
        if (p->pos >= p->len || !is_digit(p->s[p->pos])) return fail_at(start, "invalid number (expected a digit after '.')");
        while (p->pos < p->len && is_digit(p->s[p->pos])) p->pos++;
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        flags &= (uint8_t)~(CR_JSON_INTEGER | CR_JSON_OVERFLOW);
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
        if (p->pos >= p->len || !is_digit(p->s[p->pos])) return fail_at(start, "invalid number (expected a digit in the exponent)");
        while (p->pos < p->len && is_digit(p->s[p->pos])) p->pos++;
    }
    out->type = CR_JSON_NUMBER;
    out->flags = flags;
    out->u.magnitude = (flags & CR_JSON_INTEGER) ? magnitude : 0;
    return CR_OK;
}

static int match_literal(parser *p, const char *word) {
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0) return 0;
    p->pos += n;
    return 1;
}

static int compare_keys(const void *a, const void *b) {
    const cr_json *x = *(const cr_json *const *)a, *y = *(const cr_json *const *)b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->u.str, y->u.str, n);
    if (c) return c;
    return (x->len > y->len) - (x->len < y->len);
}

/* members holds n key/value pairs. Small objects are checked pairwise, large ones by sorting so a
 * header with millions of keys stays O(n log n). */
static cr_status check_duplicate_keys(const cr_json *members, size_t n, size_t object_pos) {
    const cr_json *dup = NULL;
    const cr_json **keys = NULL;
    if (n <= 8) {
        for (size_t i = 0; i < n && !dup; i++)
            for (size_t j = i + 1; j < n && !dup; j++) {
                const cr_json *a = &members[2 * i], *b = &members[2 * j];
                if (compare_keys(&a, &b) == 0) dup = a;
            }
    } else {
        keys = cr_malloc_array(n, sizeof *keys, "JSON object keys");
        if (!keys) return CR_E_NOMEM;
        for (size_t i = 0; i < n; i++) keys[i] = &members[2 * i];
        qsort(keys, n, sizeof *keys, compare_keys);
        for (size_t i = 1; i < n && !dup; i++)
            if (compare_keys(&keys[i - 1], &keys[i]) == 0) dup = keys[i];
    }
    free(keys);
    if (dup) {
        int shown = dup->len > 200 ? 200 : (int)dup->len;
        return fail_at(object_pos, "duplicate key \"%.*s\" in the object", shown, dup->u.str);
    }
    return CR_OK;
}

static cr_status parse_value(parser *p, cr_json *out, int depth);

static cr_status parse_array(parser *p, cr_json *out, int depth) {
    size_t start = p->pos;
    node_list list = {0};
    cr_status st;
    if (depth > CR_JSON_MAX_DEPTH) return fail_at(start, "nesting deeper than %d levels", CR_JSON_MAX_DEPTH);
    p->pos++;
    skip_whitespace(p);
    if (p->pos < p->len && p->s[p->pos] == ']') {
        p->pos++;
        goto done;
    }
    for (;;) {
        cr_json item;
        st = parse_value(p, &item, depth);
        if (st) goto fail;
        st = list_push(&list, &item);
        if (st) {
            free_value(&item);
            goto fail;
        }
        skip_whitespace(p);
        if (p->pos < p->len && p->s[p->pos] == ']') {
            p->pos++;
            break;
        }
        if (p->pos >= p->len || p->s[p->pos] != ',') {
            st = unexpected(p, "',' or ']' in array");
            goto fail;
        }
        p->pos++;
    }
done:
    out->type = CR_JSON_ARRAY;
    out->len = (uint32_t)list.n;
    out->u.items = list_finish(&list);
    return CR_OK;
fail:
    list_free(&list);
    return st;
}

static cr_status parse_object(parser *p, cr_json *out, int depth) {
    size_t start = p->pos;
    node_list list = {0};
    cr_status st;
    if (depth > CR_JSON_MAX_DEPTH) return fail_at(start, "nesting deeper than %d levels", CR_JSON_MAX_DEPTH);
    p->pos++;
    skip_whitespace(p);
    if (p->pos < p->len && p->s[p->pos] == '}') {
        p->pos++;
        goto done;
    }
    for (;;) {
        cr_json key = {0}, value;
        skip_whitespace(p);
        if (p->pos >= p->len || p->s[p->pos] != '"') {
            st = unexpected(p, "a string key in object");
            goto fail;
        }
        if (p->values_left == 0) {
            st = fail_at(p->pos, "more than %u values in the JSON text", CR_JSON_MAX_VALUES);
            goto fail;
        }
        p->values_left--;
        st = parse_string(p, &key);
        if (st) goto fail;
        st = list_push(&list, &key);
        if (st) goto fail;
        skip_whitespace(p);
        if (p->pos >= p->len || p->s[p->pos] != ':') {
            st = unexpected(p, "':' after object key");
            goto fail;
        }
        p->pos++;
        st = parse_value(p, &value, depth);
        if (st) goto fail;
        st = list_push(&list, &value);
        if (st) {
            free_value(&value);
            goto fail;
        }
        skip_whitespace(p);
        if (p->pos < p->len && p->s[p->pos] == '}') {
            p->pos++;
            break;
        }
        if (p->pos >= p->len || p->s[p->pos] != ',') {
            st = unexpected(p, "',' or '}' in object");
            goto fail;
        }
        p->pos++;
    }
    st = check_duplicate_keys(list.items, list.n / 2, start);
    if (st) goto fail;
done:
    out->type = CR_JSON_OBJECT;
    out->len = (uint32_t)(list.n / 2);
    out->u.items = list_finish(&list);
    return CR_OK;
fail:
    list_free(&list);
    return st;
}

/* On failure *out is left zeroed (a null), so callers can free it unconditionally. */
static cr_status parse_value(parser *p, cr_json *out, int depth) {
    memset(out, 0, sizeof *out);
    skip_whitespace(p);
    if (p->pos >= p->len) return unexpected(p, "a value");
    if (p->values_left == 0)
        return fail_at(p->pos, "more than %u values in the JSON text", CR_JSON_MAX_VALUES);
    p->values_left--;
    switch (p->s[p->pos]) {
    case '{': return parse_object(p, out, depth + 1);
    case '[': return parse_array(p, out, depth + 1);
    case '"': return parse_string(p, out);
    case 't':
    case 'f':
    case 'n':
        if (match_literal(p, "true")) {
            out->type = CR_JSON_BOOL;
            out->flags = CR_JSON_TRUE;
        } else if (match_literal(p, "false")) {
            out->type = CR_JSON_BOOL;
        } else if (match_literal(p, "null")) {
            out->type = CR_JSON_NULL;
        } else {
            return unexpected(p, "a value");
        }
        return CR_OK;
    default:
        if (p->s[p->pos] == '-' || is_digit(p->s[p->pos])) return parse_number(p, out);
        return unexpected(p, "a value");
    }
}

cr_status cr_json_parse(const char *text, size_t len, cr_json_doc *doc) {
    parser p = {0};
    cr_status st;
    memset(doc, 0, sizeof *doc);
    if (len > CR_JSON_MAX_INPUT)
        return cr_fail(CR_E_FORMAT, "JSON text of %zu bytes exceeds the %u-byte limit", len, CR_JSON_MAX_INPUT);
    p.s = (const unsigned char *)text;
    p.len = len;
    p.values_left = CR_JSON_MAX_VALUES;
    p.arena = cr_malloc(len + 1, "JSON strings");
    if (!p.arena) return CR_E_NOMEM;
    st = parse_value(&p, &doc->root, 0);
    if (st) goto fail;
    skip_whitespace(&p);
    if (p.pos != len) {
        st = fail_at(p.pos, "unexpected data after the JSON value");
        goto fail;
    }
    doc->strings = p.arena;
    return CR_OK;
fail:
    free_value(&doc->root);
    free(p.arena);
    memset(doc, 0, sizeof *doc);
    return st;
}

void cr_json_free(cr_json_doc *doc) {
    if (!doc) return;
    free_value(&doc->root);
    free(doc->strings);
    doc->strings = NULL;
}

int cr_json_string_is(const cr_json *v, const char *s) {
    size_t n = strlen(s);
    return v->type == CR_JSON_STRING && v->len == n && memcmp(v->u.str, s, n) == 0;
}

const cr_json *cr_json_get(const cr_json *obj, const char *key) {
    if (obj->type != CR_JSON_OBJECT) return NULL;
    for (size_t i = 0; i < obj->len; i++)
        if (cr_json_string_is(cr_json_key(obj, i), key)) return cr_json_value(obj, i);
    return NULL;
}

cr_json_int cr_json_to_u64(const cr_json *v, uint64_t *out) {
    if (v->type != CR_JSON_NUMBER || !(v->flags & CR_JSON_INTEGER)) return CR_JSON_INT_NOT_INTEGER;
    if (v->flags & CR_JSON_OVERFLOW) return (v->flags & CR_JSON_NEGATIVE) ? CR_JSON_INT_NEGATIVE : CR_JSON_INT_TOO_LARGE;
    if ((v->flags & CR_JSON_NEGATIVE) && v->u.magnitude != 0) return CR_JSON_INT_NEGATIVE;
    *out = v->u.magnitude;
    return CR_JSON_INT_OK;
}

const char *cr_json_type_name(const cr_json *v) {
    static const char *const names[] = {"null", "a boolean", "a number", "a string", "an array", "an object"};
    return v->type < sizeof names / sizeof names[0] ? names[v->type] : "an unknown value";
}
