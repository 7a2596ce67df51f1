/* safetensors.h — validated, memory-mapped reading of safetensors checkpoints (single file or
 * sharded through model.safetensors.index.json).
 *
 * File layout: [u64 little-endian N][N bytes of UTF-8 JSON header][data section]. The header maps
 * each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the
 * data section), plus an optional "__metadata__" object of string values.
 *
 * Every rule is checked before any pointer into the data is formed: N within the file and at most
 * CR_ST_MAX_HEADER; well-formed JSON, no duplicate keys; known dtypes; shape entries non-negative;
 * prod(shape) * dtype size computed with overflow checks and equal to end - begin; the ranges,
 * sorted, start at 0, leave no hole, do not overlap and end exactly at the end of the file. Data
 * pointers may be unaligned: readers copy with memcpy, never dereference them as typed pointers. */
#ifndef CR_SAFETENSORS_H
#define CR_SAFETENSORS_H

#include "crossrank.h"

#define CR_ST_MAX_HEADER (100u * 1000u * 1000u) /* bytes of JSON header accepted */
#define CR_ST_MAX_DIMS 8

typedef struct cr_st_tensor {
    char *name;                    /* NUL-terminated, owned */
    cr_dtype dtype;
    int ndim;                      /* 0..CR_ST_MAX_DIMS */
    int64_t shape[CR_ST_MAX_DIMS];
    uint64_t begin, end;           /* byte range within the data section */
} cr_st_tensor;

typedef struct cr_st_header {
    cr_st_tensor *tensors;         /* [n_tensors], sorted by name */
    size_t n_tensors;
    uint64_t data_offset;          /* 8 + N: where the data section starts in the file */
} cr_st_header;

/* Parses and fully validates the header of a safetensors file held in memory (file_len bytes,
 * the whole file). Pure function of its input: the fuzz target. `label` names the file in
 * messages. On failure *out is left empty and a message says what is wrong. */
cr_status cr_st_parse(const uint8_t *file, uint64_t file_len, const char *label, cr_st_header *out);
void cr_st_header_free(cr_st_header *h);   /* accepts NULL and a zeroed header */

/* A shard index (model.safetensors.index.json): the shard file names and which shard holds each
 * tensor. Shard names must be plain file names (no directory part, no "..", not absolute, no
 * control characters) so they stay inside the model directory. */
typedef struct cr_st_index {
    char **shards;                 /* [n_shards] distinct file names, owned */
    size_t n_shards;
    char **names;                  /* [n_entries] tensor names, sorted, owned */
    size_t *shard_of;              /* [n_entries] index into shards */
    size_t n_entries;
} cr_st_index;

cr_status cr_st_parse_index(const char *json, size_t len, const char *label, cr_st_index *out);
void cr_st_index_free(cr_st_index *idx);   /* accepts NULL and a zeroed index */

/* A view of one tensor of an open checkpoint. */
typedef struct cr_tensor_view {
    const char *name;
    cr_dtype dtype;
    int ndim;
    const int64_t *shape;          /* [ndim] */
    const uint8_t *data;           /* nbytes bytes, possibly unaligned */
    uint64_t nbytes;
    const char *file;              /* shard file name, for messages */
} cr_tensor_view;

/* cr_checkpoint_open / _close / _n_tensors / _tensor are the public part (crossrank.h); each file
 * is validated with cr_st_parse. The loader reads the data through views: */
void cr_checkpoint_get(const cr_checkpoint *ck, size_t i, cr_tensor_view *out);
/* Returns 1 and fills *out if the tensor exists, else 0. */
int cr_checkpoint_find(const cr_checkpoint *ck, const char *name, cr_tensor_view *out);

/* Tells the kernel the pages of a tensor that has been copied out are no longer needed. */
void cr_checkpoint_release(const cr_checkpoint *ck, const cr_tensor_view *t);

#endif
