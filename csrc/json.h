/* json.h — a small strict JSON (RFC 8259) parser into a read-only tree, for safetensors headers
 * and shard indexes, which come from untrusted files.
 *
 * Strict means: exactly one value and nothing after it but whitespace; nesting at most
 * CR_JSON_MAX_DEPTH levels; strings are valid UTF-8 without raw control characters, escapes
 * (including \u escapes of surrogate pairs) are decoded to UTF-8 and lone surrogates are rejected; no
 * object has the same key twice. The input is a byte range, not a C string: nothing past `len`
 * is read.
 *
 * Numbers are checked against the grammar; integer literals (no fraction, no exponent) also keep
 * their magnitude as a uint64_t with an overflow flag, which is all the checkpoint code needs
 * (offsets are u64, shape entries non-negative int64). Other numbers carry no value. */
#ifndef CR_JSON_H
#define CR_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "crossrank.h"

#define CR_JSON_MAX_DEPTH 64
#define CR_JSON_MAX_INPUT 0xFFFFFFFEu   /* counts and lengths fit in 32 bits */
/* Values (scalars, arrays, objects, keys) one document may hold. Each costs a 16-byte node, and a
 * hostile text of "[0,0,0,...]" holds one per 2 bytes: without a cap a 100 MB safetensors header
 * would build an 800 MB tree. 4M values (64 MB of nodes, at most twice that while an array grows)
 * is ample for real files: a tensor entry is about 12 values, an index entry 2. */
#define CR_JSON_MAX_VALUES (1u << 22)

typedef enum cr_json_type {
    CR_JSON_NULL = 0, CR_JSON_BOOL, CR_JSON_NUMBER, CR_JSON_STRING, CR_JSON_ARRAY, CR_JSON_OBJECT
} cr_json_type;

/* cr_json.flags */
#define CR_JSON_TRUE 1u        /* BOOL: the value is true */
#define CR_JSON_INTEGER 1u     /* NUMBER: integer literal, `u.magnitude` is meaningful */
#define CR_JSON_NEGATIVE 2u    /* NUMBER: has a leading '-' */
#define CR_JSON_OVERFLOW 4u    /* NUMBER: integer literal whose magnitude exceeds UINT64_MAX */

/* One value; 16 bytes so that a hostile header of tiny values stays bounded in memory. */
typedef struct cr_json {
    uint8_t type;                 /* cr_json_type */
    uint8_t flags;                /* CR_JSON_* flags above */
    uint32_t len;                 /* STRING: bytes; ARRAY: items; OBJECT: members */
    union {
        const char *str;          /* STRING: UTF-8, NUL-terminated, may contain NUL (see len) */
        struct cr_json *items;    /* ARRAY: [len]; OBJECT: [2*len] key, value, key, value... */
        uint64_t magnitude;       /* NUMBER with CR_JSON_INTEGER: absolute value */
    } u;
} cr_json;

/* A parsed document: owns the tree and the decoded strings. */
typedef struct cr_json_doc {
    cr_json root;
    char *strings;                /* arena holding every decoded string */
} cr_json_doc;

/* Parses text[0..len). On failure returns CR_E_FORMAT (CR_E_NOMEM if out of memory) with a
 * message "... at byte K", and *doc is left empty. A text of more than CR_JSON_MAX_VALUES values
 * is refused as soon as the count is passed, before the tree grows further. */
cr_status cr_json_parse(const char *text, size_t len, cr_json_doc *doc);
void cr_json_free(cr_json_doc *doc);   /* accepts a zeroed doc */

/* Object members by position: key (a STRING) and value. */
static inline const cr_json *cr_json_key(const cr_json *obj, size_t i) { return &obj->u.items[2 * i]; }
static inline const cr_json *cr_json_value(const cr_json *obj, size_t i) { return &obj->u.items[2 * i + 1]; }

/* The value under `key` in an object, or NULL. */
const cr_json *cr_json_get(const cr_json *obj, const char *key);

/* 1 if v is a STRING equal to the C string s (no embedded NUL). */
int cr_json_string_is(const cr_json *v, const char *s);

/* Reading an integer as uint64_t, with the reason when it cannot be. */
typedef enum cr_json_int {
    CR_JSON_INT_OK = 0,
    CR_JSON_INT_NOT_INTEGER,   /* not a number, or has a fraction or exponent */
    CR_JSON_INT_NEGATIVE,      /* a negative integer (-0 reads as 0) */
    CR_JSON_INT_TOO_LARGE,     /* greater than UINT64_MAX */
} cr_json_int;
cr_json_int cr_json_to_u64(const cr_json *v, uint64_t *out);

/* "null", "a boolean", "a number", "a string", "an array" or "an object", for messages. */
const char *cr_json_type_name(const cr_json *v);

#endif
