/* attention.h — causal grouped-query attention over a packed batch.
 *
 * Contract: the queries of a sequence's span attend to its prefix K/V (if any, key positions
 * 0..prefix_len-1) followed by the span's own K/V up to and including themselves; a layer window
 * w > 0 keeps only keys with pos_q - pos_k < w (a query always keeps itself). Sequences never see
 * each other.
 *
 * Exactness: each output row is a function of its own query and keys only. Keys are walked in
 * tiles of CR_ATTN_KEY_TILE at fixed boundaries of the key index counted from the sequence's
 * first key (prefix keys first), and every reduction has a fixed order, so a row's bits do not
 * depend on the other rows or sequences of the pass, on whether its first keys come from a
 * prefix handle, on the thread count, or on the ISA level. */
#ifndef CR_ATTENTION_H
#define CR_ATTENTION_H

#include <stdatomic.h>
#include <stdint.h>

#include "crossrank.h"
#include "error.h"
#include "kernels/kernels.h"

typedef struct cr_attn_args {
    const float *qkv;              /* [T, qkv_stride]: q at column 0, k at NH*D, v at (NH+NKV)*D */
    int64_t qkv_stride;
    int64_t n_heads, n_kv_heads, head_dim;
    float scale;                   /* > 0 */
    const int32_t *pos;            /* [T] */
    int64_t n_seqs;
    const int64_t *seq_start;      /* [S+1] */
    const cr_prefix *const *prefix;/* [S] or NULL */
    const int64_t *prefix_len;     /* [S] or NULL */
    int64_t layer;
    int32_t window;                /* 0 = full */
    int last_only;                 /* only the last query row of each sequence */
    int bf16_scores;               /* QK^T from q and k rounded to bfloat16 (float32 sums, the
                                    * gemm_bf16_tile chain), for bf16 / int8 models; the
                                    * softmax, P V and last_only rows stay float32. Even D only. */
    int tiles;                     /* with bf16_scores: QK^T and P V through the table's
                                    * gemm_bf16_amx (K and V, P rounded to bfloat16, float32 sums
                                    * in TDPBF16PS's order: AMX tiles, below AMX their float32
                                    * model, the reference table the scalar one; the same bits);
                                    * D a multiple of 32. The softmax and last_only rows stay
                                    * float32. bf16 models on AMX, int8 models everywhere. */
    float *out;                    /* [T or S, out_stride]: head h at column h*D */
    int64_t out_stride;
    /* Instead of out (NULL: out): each row's head h, D values, handed to put(put_ctx, row,
     * h*D, values, D) from the worker that computed it (the values as out would hold them). */
    void (*put)(void *ctx, int64_t row, int64_t col, const float *v, int64_t n);
    void *put_ctx;
    cr_buf *stage_buf;             /* tile path: where the staged K/V tiles go, kept from call to
                                    * call (NULL: allocated and freed by the call) */
    float *scratch;                /* [threads, scratch_stride], 64-byte aligned */
    int64_t scratch_stride;        /* >= cr_attention_scratch_floats(), a multiple of 16 */
    int threads;
    const atomic_int *abort;
    const cr_kernels *kern;        /* kernel table; NULL = the active one (cr_kern) */
} cr_attn_args;

/* Floats of scratch one worker needs: O(tile), whatever the sequence lengths. */
int64_t cr_attention_scratch_floats(int64_t n_heads, int64_t n_kv_heads, int64_t head_dim);

cr_status cr_attention(const cr_attn_args *a);

#endif
