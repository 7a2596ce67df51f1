/* safetensors.c — validated, memory-mapped reading of safetensors checkpoints.
 *
 * File layout (all of it untrusted):
 *   bytes [0, 8)          N, the header length, u64 little-endian
 *   bytes [8, 8 + N)      UTF-8 JSON object: name -> {"dtype": "F32", "shape": [d0, ...],
 *                         "data_offsets": [begin, end]}, plus an optional "__metadata__" object
 *                         of string values. The writer may pad it with trailing spaces.
 *   bytes [8 + N, size)   data section; tensor bytes at [begin, end) relative to its start,
 *                         row-major, little-endian, not necessarily aligned.
 *
 * Sharded checkpoints add model.safetensors.index.json: {"metadata": {...}, "weight_map":
 * {tensor name: shard file name}}. Every shard is a complete safetensors file of its own.
 *
 * Every rule is checked on the header before a pointer into the data is formed, and every
 * offset computation is overflow-checked (see safetensors.h for the list). Opening a checkpoint
 * directory (mapping its files, checking the index against them) is checkpoint.c's job. */
#include "safetensors.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "json.h"

static const struct {
    const char *name;
    size_t size;
} dtype_table[CR_DT_COUNT] = {
    [CR_DT_F32] = {"F32", 4},         [CR_DT_BF16] = {"BF16", 2},       [CR_DT_F16] = {"F16", 2},
    [CR_DT_F64] = {"F64", 8},         [CR_DT_I64] = {"I64", 8},         [CR_DT_I32] = {"I32", 4},
    [CR_DT_I16] = {"I16", 2},         [CR_DT_I8] = {"I8", 1},           [CR_DT_U8] = {"U8", 1},
    [CR_DT_BOOL] = {"BOOL", 1},       [CR_DT_F8_E4M3] = {"F8_E4M3", 1}, [CR_DT_F8_E5M2] = {"F8_E5M2", 1},
    [CR_DT_U16] = {"U16", 2},         [CR_DT_U32] = {"U32", 4},         [CR_DT_U64] = {"U64", 8},
};

size_t cr_dtype_size(cr_dtype dt) {
    return (unsigned)dt < CR_DT_COUNT ? dtype_table[dt].size : 0;
}

const char *cr_dtype_name(cr_dtype dt) {
    return (unsigned)dt < CR_DT_COUNT ? dtype_table[dt].name : "unknown";
}

static int dtype_from_json(const cr_json *v, cr_dtype *out) {
    for (int dt = 0; dt < CR_DT_COUNT; dt++)
        if (cr_json_string_is(v, dtype_table[dt].name)) {
            *out = (cr_dtype)dt;
            return 1;
        }
    return 0;
}

static uint64_t read_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* "[2, 3]" into buf, for messages. */
static const char *format_shape(const int64_t *shape, int ndim, char *buf, size_t cap) {
    size_t used = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && used < cap; d++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%" PRId64, d ? ", " : "", shape[d]);
    if (used < cap) snprintf(buf + used, cap - used, "]");
    return buf;
}

/* ---- header ---------------------------------------------------------------------------------- */

/* Reads shape[i] or data_offsets[i] as a u64, with a message naming the field on failure. */
static cr_status read_u64_field(const char *label, const char *tensor, const char *field, size_t i,
                                const cr_json *v, uint64_t *out) {
    switch (cr_json_to_u64(v, out)) {
    case CR_JSON_INT_OK:
        return CR_OK;
    case CR_JSON_INT_NEGATIVE:
        if (v->flags & CR_JSON_OVERFLOW)
            return cr_fail(CR_E_FORMAT, "%s: tensor %s: %s[%zu] is negative, must be a non-negative integer",
                           label, tensor, field, i);
        return cr_fail(CR_E_FORMAT, "%s: tensor %s: %s[%zu] is negative (-%" PRIu64 "), must be a non-negative integer",
                       label, tensor, field, i, v->u.magnitude);
    case CR_JSON_INT_TOO_LARGE:
        return cr_fail(CR_E_FORMAT, "%s: tensor %s: %s[%zu] is larger than 2^64 - 1", label, tensor, field, i);
    default:
        return cr_fail(CR_E_FORMAT, "%s: tensor %s: %s[%zu] is %s, must be a non-negative integer",
                       label, tensor, field, i,
                       v->type == CR_JSON_NUMBER ? "a non-integer number" : cr_json_type_name(v));
    }
}

static cr_status parse_shape(const char *label, const char *name, const cr_json *v, cr_st_tensor *t) {
    if (v->type != CR_JSON_ARRAY)
        return cr_fail(CR_E_FORMAT, "%s: tensor %s: shape is %s, must be a list of non-negative integers",
                       label, name, cr_json_type_name(v));
    if (v->len > CR_ST_MAX_DIMS)
        return cr_fail(CR_E_FORMAT, "%s: tensor %s: shape has %u dimensions, more than the %d supported",
                       label, name, (unsigned)v->len, CR_ST_MAX_DIMS);
    for (size_t d = 0; d < v->len; d++) {
        uint64_t dim;
        cr_status st = read_u64_field(label, name, "shape", d, &v->u.items[d], &dim);
        if (st) return st;
        if (dim > (uint64_t)INT64_MAX)
            return cr_fail(CR_E_FORMAT, "%s: tensor %s: shape[%zu] = %" PRIu64 " is larger than 2^63 - 1",
                           label, name, d, dim);
        t->shape[d] = (int64_t)dim;
    }
    t->ndim = (int)v->len;
    return CR_OK;
}

static cr_status parse_offsets(const char *label, const char *name, const cr_json *v, cr_st_tensor *t) {
    if (v->type != CR_JSON_ARRAY)
        return cr_fail(CR_E_FORMAT, "%s: tensor %s: data_offsets is %s, must be [begin, end]",
                       label, name, cr_json_type_name(v));
    if (v->len != 2)
        return cr_fail(CR_E_FORMAT, "%s: tensor %s: data_offsets has %u entries, must be [begin, end]",
                       label, name, (unsigned)v->len);
    cr_status st = read_u64_field(label, name, "data_offsets", 0, &v->u.items[0], &t->begin);
    if (!st) st = read_u64_field(label, name, "data_offsets", 1, &v->u.items[1], &t->end);
    if (st) return st;
    if (t->begin > t->end)
        return cr_fail(CR_E_FORMAT, "%s: tensor %s: data_offsets [%" PRIu64 ", %" PRIu64 "] end before they begin",
                       label, name, t->begin, t->end);
    return CR_OK;
}

/* Parses one "name": {...} entry into *t; checks it against itself and the data section size. */
static cr_status parse_tensor_entry(const char *label, const cr_json *key, const cr_json *entry,
                                    uint64_t data_len, cr_st_tensor *t) {
    const char *name = key->u.str;
    const cr_json *dtype = NULL, *shape = NULL, *offsets = NULL;
    char shape_text[256];
    cr_status st;

    memset(t, 0, sizeof *t);
    if (key->len == 0) return cr_fail(CR_E_FORMAT, "%s: a tensor has an empty name", label);
    if (memchr(name, '\0', key->len))
        return cr_fail(CR_E_FORMAT, "%s: tensor name \"%s\\u0000...\" contains a NUL character", label, name);
    if (entry->type != CR_JSON_OBJECT)
        return cr_fail(CR_E_FORMAT, "%s: tensor %s: entry is %s, must be an object with dtype, shape and data_offsets",
                       label, name, cr_json_type_name(entry));
    for (size_t i = 0; i < entry->len; i++) {
        const cr_json *field = cr_json_key(entry, i), *value = cr_json_value(entry, i);
        if (cr_json_string_is(field, "dtype")) dtype = value;
        else if (cr_json_string_is(field, "shape")) shape = value;
        else if (cr_json_string_is(field, "data_offsets")) offsets = value;
        else return cr_fail(CR_E_FORMAT, "%s: tensor %s: unknown field \"%s\"", label, name, field->u.str);
    }
    if (!dtype) return cr_fail(CR_E_FORMAT, "%s: tensor %s: missing \"dtype\"", label, name);
    if (!shape) return cr_fail(CR_E_FORMAT, "%s: tensor %s: missing \"shape\"", label, name);
    if (!offsets) return cr_fail(CR_E_FORMAT, "%s: tensor %s: missing \"data_offsets\"", label, name);

    if (dtype->type != CR_JSON_STRING)
        return cr_fail(CR_E_FORMAT, "%s: tensor %s: dtype is %s, must be a string",
                       label, name, cr_json_type_name(dtype));
    if (!dtype_from_json(dtype, &t->dtype))
        return cr_fail(CR_E_FORMAT, "%s: tensor %s: unknown dtype \"%s\"", label, name, dtype->u.str);
    st = parse_shape(label, name, shape, t);
    if (!st) st = parse_offsets(label, name, offsets, t);
    if (st) return st;

    /* Byte size = prod(shape) * dtype size; a zero dimension makes it 0 whatever the others are. */
    uint64_t nbytes = cr_dtype_size(t->dtype);
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] == 0) nbytes = 0;
    for (int d = 0; d < t->ndim && nbytes; d++)
        if (__builtin_mul_overflow(nbytes, (uint64_t)t->shape[d], &nbytes))
            return cr_fail(CR_E_FORMAT, "%s: tensor %s: byte size of shape %s x %s overflows 64 bits",
                           label, name, format_shape(t->shape, t->ndim, shape_text, sizeof shape_text),
                           cr_dtype_name(t->dtype));
    if (nbytes != t->end - t->begin)
        return cr_fail(CR_E_FORMAT,
                       "%s: tensor %s: shape %s of %s needs %" PRIu64 " bytes, but data_offsets [%" PRIu64
                       ", %" PRIu64 "] span %" PRIu64,
                       label, name, format_shape(t->shape, t->ndim, shape_text, sizeof shape_text),
                       cr_dtype_name(t->dtype), nbytes, t->begin, t->end, t->end - t->begin);
    if (t->end > data_len)
        return cr_fail(CR_E_FORMAT,
                       "%s: tensor %s: data_offsets [%" PRIu64 ", %" PRIu64 "] run past the end of the "
                       "data section (%" PRIu64 " bytes)",
                       label, name, t->begin, t->end, data_len);

    t->name = cr_strndup(name, key->len, "tensor name");
    return t->name ? CR_OK : CR_E_NOMEM;
}

static cr_status check_metadata(const char *label, const cr_json *v) {
    if (v->type != CR_JSON_OBJECT)
        return cr_fail(CR_E_FORMAT, "%s: __metadata__ is %s, must be an object of strings",
                       label, cr_json_type_name(v));
    for (size_t i = 0; i < v->len; i++)
        if (cr_json_value(v, i)->type != CR_JSON_STRING)
            return cr_fail(CR_E_FORMAT, "%s: __metadata__ value for \"%s\" is %s, must be a string",
                           label, cr_json_key(v, i)->u.str, cr_json_type_name(cr_json_value(v, i)));
    return CR_OK;
}

static int compare_by_offset(const void *a, const void *b) {
    const cr_st_tensor *x = *(const cr_st_tensor *const *)a, *y = *(const cr_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int compare_by_name(const void *a, const void *b) {
    return strcmp(((const cr_st_tensor *)a)->name, ((const cr_st_tensor *)b)->name);
}

/* Sorted by begin, the ranges must tile the data section exactly: start at 0, no hole, no
 * overlap, end at its last byte. Every end is already known to be within the section. */
static cr_status check_layout(const char *label, const cr_st_tensor *tensors, size_t n, uint64_t data_len) {
    const cr_st_tensor **order = cr_malloc_array(n, sizeof *order, "tensor order");
    const cr_st_tensor *prev = NULL;
    uint64_t covered = 0;
    cr_status st = CR_OK;
    if (!order) return CR_E_NOMEM;
    for (size_t i = 0; i < n; i++) order[i] = &tensors[i];
    qsort(order, n, sizeof *order, compare_by_offset);
    for (size_t i = 0; i < n; i++) {
        const cr_st_tensor *t = order[i];
        if (t->begin > covered && !prev) {
            st = cr_fail(CR_E_FORMAT, "%s: hole of %" PRIu64 " bytes at the start of the data section, "
                         "before tensor %s (begins at %" PRIu64 ")", label, t->begin, t->name, t->begin);
            goto done;
        }
        if (t->begin > covered) {
            st = cr_fail(CR_E_FORMAT, "%s: hole of %" PRIu64 " bytes between tensor %s (ends at %" PRIu64
                         ") and tensor %s (begins at %" PRIu64 ")",
                         label, t->begin - covered, prev->name, covered, t->name, t->begin);
            goto done;
        }
        if (t->begin < covered) {
            st = cr_fail(CR_E_FORMAT, "%s: tensors %s [%" PRIu64 ", %" PRIu64 "] and %s [%" PRIu64 ", %" PRIu64
                         "] overlap", label, prev->name, prev->begin, prev->end, t->name, t->begin, t->end);
            goto done;
        }
        covered = t->end;
        prev = t;
    }
    if (covered < data_len)
        st = cr_fail(CR_E_FORMAT, "%s: %" PRIu64 " extra bytes after the last tensor (tensors end at byte %" PRIu64
                     " of a %" PRIu64 "-byte data section)", label, data_len - covered, covered, data_len);
done:
    free(order);
    return st;
}

cr_status cr_st_parse(const uint8_t *file, uint64_t file_len, const char *label, cr_st_header *out) {
    cr_json_doc doc = {0};
    cr_st_tensor *tensors = NULL;
    size_t n_tensors = 0;
    uint64_t header_len, data_len;
    cr_status st;

    memset(out, 0, sizeof *out);
    if (!label) label = "safetensors file";
    if (file_len < 8) {
        st = cr_fail(CR_E_FORMAT, "%s: file is %" PRIu64 " bytes, shorter than the 8-byte header length",
                     label, file_len);
        goto fail;
    }
    header_len = read_le64(file);
    if (header_len > CR_ST_MAX_HEADER) {
        st = cr_fail(CR_E_FORMAT, "%s: header length %" PRIu64 " exceeds the limit of %u bytes",
                     label, header_len, CR_ST_MAX_HEADER);
        goto fail;
    }
    if (header_len > file_len - 8) {
        st = cr_fail(CR_E_FORMAT, "%s: header length %" PRIu64 " runs past the end of the file (%" PRIu64
                     " bytes after the length)", label, header_len, file_len - 8);
        goto fail;
    }
    data_len = file_len - 8 - header_len;

    st = cr_json_parse((const char *)file + 8, (size_t)header_len, &doc);
    if (st) {
        cr_error_prefix("%s: invalid header JSON", label);
        goto fail;
    }
    if (doc.root.type != CR_JSON_OBJECT) {
        st = cr_fail(CR_E_FORMAT, "%s: header is %s, must be a JSON object", label, cr_json_type_name(&doc.root));
        goto fail;
    }
    tensors = cr_calloc(doc.root.len, sizeof *tensors, "tensor table");
    if (!tensors) {
        st = CR_E_NOMEM;
        goto fail;
    }
    for (size_t i = 0; i < doc.root.len; i++) {
        const cr_json *key = cr_json_key(&doc.root, i), *value = cr_json_value(&doc.root, i);
        if (cr_json_string_is(key, "__metadata__")) {
            st = check_metadata(label, value);
        } else {
            st = parse_tensor_entry(label, key, value, data_len, &tensors[n_tensors]);
            if (!st) n_tensors++;
        }
        if (st) goto fail;
    }
    st = check_layout(label, tensors, n_tensors, data_len);
    if (st) goto fail;
    qsort(tensors, n_tensors, sizeof *tensors, compare_by_name);

    out->tensors = tensors;
    out->n_tensors = n_tensors;
    out->data_offset = 8 + header_len;
    cr_json_free(&doc);
    return CR_OK;
fail:
    for (size_t i = 0; i < n_tensors; i++) free(tensors[i].name);
    free(tensors);
    cr_json_free(&doc);
    return st;
}

void cr_st_header_free(cr_st_header *h) {
    if (!h) return;
    for (size_t i = 0; i < h->n_tensors; i++) free(h->tensors[i].name);
    free(h->tensors);
    memset(h, 0, sizeof *h);
}

/* ---- shard index ----------------------------------------------------------------------------- */

/* Why a shard name, joined to the model directory, would not name a plain file in it, or NULL when
 * it does: no separator of either kind (which also rules out absolute paths), not "." or "..", no
 * control characters or NUL (the reason says which, as a NUL also cuts the name in the message). */
static const char *shard_name_problem(const cr_json *s) {
    if (s->len == 0) return "is empty";
    if (cr_json_string_is(s, ".") || cr_json_string_is(s, "..")) return "names a directory";
    for (size_t i = 0; i < s->len; i++) {
        unsigned char c = (unsigned char)s->u.str[i];
        if (c == '/' || c == '\\') return "holds a path separator, so it escapes the model directory";
        if (c == 0) return "holds a NUL character";
        if (c < 0x20 || c == 0x7f) return "holds a control character";
    }
    return NULL;
}

typedef struct index_pair {
    const char *name;
    const char *shard;
} index_pair;

static int compare_pair_shard(const void *a, const void *b) {
    return strcmp(((const index_pair *)a)->shard, ((const index_pair *)b)->shard);
}

static int compare_pair_name(const void *a, const void *b) {
    return strcmp(((const index_pair *)a)->name, ((const index_pair *)b)->name);
}

/* Position of s in sorted[0..n), or n. */
static size_t find_sorted(char *const *sorted, size_t n, const char *s) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(sorted[mid], s);
        if (c == 0) return mid;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return n;
}

cr_status cr_st_parse_index(const char *json, size_t len, const char *label, cr_st_index *out) {
    cr_json_doc doc = {0};
    index_pair *pairs = NULL;
    const cr_json *map, *metadata;
    size_t n = 0, n_shards = 0;
    cr_status st;

    memset(out, 0, sizeof *out);
    if (!label) label = "shard index";
    st = cr_json_parse(json, len, &doc);
    if (st) {
        cr_error_prefix("%s: invalid JSON", label);
        goto fail;
    }
    if (doc.root.type != CR_JSON_OBJECT) {
        st = cr_fail(CR_E_FORMAT, "%s: index is %s, must be a JSON object", label, cr_json_type_name(&doc.root));
        goto fail;
    }
    metadata = cr_json_get(&doc.root, "metadata");
    if (metadata && metadata->type != CR_JSON_OBJECT) {
        st = cr_fail(CR_E_FORMAT, "%s: \"metadata\" is %s, must be an object", label, cr_json_type_name(metadata));
        goto fail;
    }
    map = cr_json_get(&doc.root, "weight_map");
    if (!map || map->type != CR_JSON_OBJECT) {
        st = cr_fail(CR_E_FORMAT, "%s: \"weight_map\" is %s, must be an object of tensor name -> shard file",
                     label, map ? cr_json_type_name(map) : "missing");
        goto fail;
    }

    n = map->len;
    pairs = cr_malloc_array(n, sizeof *pairs, "shard index entries");
    if (!pairs) {
        st = CR_E_NOMEM;
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        const cr_json *name = cr_json_key(map, i), *shard = cr_json_value(map, i);
        if (name->len == 0 || memchr(name->u.str, '\0', name->len)) {
            st = cr_fail(CR_E_FORMAT, "%s: weight_map has an empty tensor name or one containing NUL", label);
            goto fail;
        }
        if (shard->type != CR_JSON_STRING) {
            st = cr_fail(CR_E_FORMAT, "%s: weight_map entry for tensor %s is %s, must be a shard file name",
                         label, name->u.str, cr_json_type_name(shard));
            goto fail;
        }
        const char *problem = shard_name_problem(shard);
        if (problem) {
            st = cr_fail(CR_E_FORMAT, "%s: shard name \"%s\" for tensor %s %s (must be a plain file name in the "
                         "model directory)", label, shard->u.str, name->u.str, problem);
            goto fail;
        }
        pairs[i].name = name->u.str;
        pairs[i].shard = shard->u.str;
    }

    /* The distinct shard names, sorted. */
    qsort(pairs, n, sizeof *pairs, compare_pair_shard);
    for (size_t i = 0; i < n; i++)
        if (i == 0 || strcmp(pairs[i - 1].shard, pairs[i].shard) != 0) n_shards++;
    out->shards = cr_calloc(n_shards, sizeof *out->shards, "shard names");
    if (!out->shards) {
        st = CR_E_NOMEM;
        goto fail;
    }
    out->n_shards = n_shards;
    for (size_t i = 0, s = 0; i < n; i++) {
        if (i > 0 && strcmp(pairs[i - 1].shard, pairs[i].shard) == 0) continue;
        out->shards[s] = cr_strndup(pairs[i].shard, strlen(pairs[i].shard), "shard name");
        if (!out->shards[s++]) {
            st = CR_E_NOMEM;
            goto fail;
        }
    }

    /* The tensor names, sorted, each with its shard. */
    qsort(pairs, n, sizeof *pairs, compare_pair_name);
    out->names = cr_calloc(n, sizeof *out->names, "tensor names");
    out->shard_of = cr_malloc_array(n, sizeof *out->shard_of, "tensor shards");
    if (!out->names || !out->shard_of) {
        st = CR_E_NOMEM;
        goto fail;
    }
    out->n_entries = n;
    for (size_t i = 0; i < n; i++) {
        out->names[i] = cr_strndup(pairs[i].name, strlen(pairs[i].name), "tensor name");
        if (!out->names[i]) {
            st = CR_E_NOMEM;
            goto fail;
        }
        out->shard_of[i] = find_sorted(out->shards, n_shards, pairs[i].shard);
    }
    free(pairs);
    cr_json_free(&doc);
    return CR_OK;
fail:
    cr_st_index_free(out);
    free(pairs);
    cr_json_free(&doc);
    return st;
}

void cr_st_index_free(cr_st_index *idx) {
    if (!idx) return;
    for (size_t i = 0; i < idx->n_shards; i++) free(idx->shards[i]);
    free(idx->shards);
    if (idx->names)
        for (size_t i = 0; i < idx->n_entries; i++) free(idx->names[i]);
    free(idx->names);
    free(idx->shard_of);
    memset(idx, 0, sizeof *idx);
}
