/* attention.h — causal grouped-query attention over a packed batch.
 *
 * Contract: the queries of a sequence's span attend to its prefix K/V (if any, key positions
 * 0..prefix_len-1) followed by the span's own K/V up to and including themselves; a layer window
 * w > 0 keeps only keys with pos_q - pos_k < w. Sequences never see each other. */
#ifndef CR_ATTENTION_H
#define CR_ATTENTION_H

#include <stdatomic.h>
#include <stdint.h>

#include "crossrank.h"

typedef struct cr_attn_args {
    const float *qkv;              /* [T, qkv_stride]: q at column 0, k at NH*D, v at (NH+NKV)*D */
    int64_t qkv_stride;
    int64_t n_heads, n_kv_heads, head_dim;
    float scale;
    const int32_t *pos;            /* [T] */
    int64_t n_seqs;
    const int64_t *seq_start;      /* [S+1] */
    const cr_prefix *const *prefix;/* [S] or NULL */
    const int64_t *prefix_len;     /* [S] or NULL */
    int64_t layer;
    int32_t window;                /* 0 = full */
    int last_only;                 /* only the last query row of each sequence */
    float *out;                    /* [T or S, out_stride]: head h at column h*D */
    int64_t out_stride;
    float *scratch;                /* [threads, scratch_stride] scores */
    int64_t scratch_stride;        /* >= the longest prefix + span */
    int threads;
    const atomic_int *abort;
} cr_attn_args;

cr_status cr_attention(const cr_attn_args *a);

#endif
