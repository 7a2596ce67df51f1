/* attention.c — causal grouped-query attention (see attention.h).
 *
 * Work is split into tasks of (sequence, KV head, block of query rows); the query heads that share
 * a KV head run together so each K/V row is loaded once per group. Each row's softmax is exact
 * (max-subtracted, float32), over scores kept in a per-worker scratch of O(keys) floats. The
 * reduction order of a row depends only on its own keys, so scores do not depend on how
 * sequences are batched or on the thread count. */
#include "attention.h"

#include <math.h>
#include <stdlib.h>

#include "error.h"
#include "kernels/kernels.h"
#include "model.h"
#include "threads.h"

#define CR_ATTN_QUERY_BLOCK 32

typedef struct attn_job {
    const cr_attn_args *a;
    int64_t *block_seq;            /* [n_blocks] */
    int64_t *block_row0;           /* [n_blocks] first query row (within the span) */
    int64_t n_blocks;
} attn_job;

/* One query row of one head: out = softmax(q . K^T * scale) V over the allowed keys. */
static void attend_row(const cr_attn_args *a, const float *q, int32_t pos_q,
                       const float *pk, const float *pv, int64_t n_pre,          /* prefix keys */
                       const float *k0, const float *v0, int64_t n_own,          /* own keys */
                       const int32_t *pos_own, int64_t kv_stride_own, int64_t kv_stride_pre,
                       float *scores, float *out) {
    const cr_kernels *K = cr_kern;
    int64_t D = a->head_dim;
    int32_t w = a->window;
    float mx = -INFINITY;
    /* prefix keys sit at positions 0..n_pre-1 */
    int64_t pre_first = 0;
    if (w > 0 && (int64_t)pos_q - w + 1 > 0) pre_first = (int64_t)pos_q - w + 1;
    for (int64_t j = pre_first; j < n_pre; j++) {
        float s = K->dot_f32(q, pk + j * kv_stride_pre, D) * a->scale;
        scores[j] = s;
        if (s > mx) mx = s;
    }
    int64_t own_first = 0;
    if (w > 0)
        while (own_first < n_own - 1 && (int64_t)pos_q - pos_own[own_first] >= w) own_first++;
    float *own_scores = scores + n_pre;
    for (int64_t j = own_first; j < n_own; j++) {
        float s = K->dot_f32(q, k0 + j * kv_stride_own, D) * a->scale;
        own_scores[j] = s;
        if (s > mx) mx = s;
    }
    float sum = 0.0f;
    for (int64_t j = pre_first; j < n_pre; j++) {
        scores[j] = expf(scores[j] - mx);
        sum += scores[j];
    }
    for (int64_t j = own_first; j < n_own; j++) {
        own_scores[j] = expf(own_scores[j] - mx);
        sum += own_scores[j];
    }
    float inv = 1.0f / sum;
    for (int64_t d = 0; d < D; d++) out[d] = 0.0f;
    for (int64_t j = pre_first; j < n_pre; j++) K->axpy_f32(scores[j] * inv, pv + j * kv_stride_pre, out, D);
    for (int64_t j = own_first; j < n_own; j++) K->axpy_f32(own_scores[j] * inv, v0 + j * kv_stride_own, out, D);
}

static void attn_task(void *ctx, int64_t task, int worker) {
    const attn_job *job = ctx;
    const cr_attn_args *a = job->a;
    int64_t NH = a->n_heads, NKV = a->n_kv_heads, D = a->head_dim;
    int64_t group = NH / NKV;
    int64_t blk = task / NKV, g = task % NKV;
    int64_t s = job->block_seq[blk];
    int64_t start = a->seq_start[s], len = a->seq_start[s + 1] - start;
    int64_t row0 = job->block_row0[blk];
    int64_t row1 = a->last_only ? len : (row0 + CR_ATTN_QUERY_BLOCK < len ? row0 + CR_ATTN_QUERY_BLOCK : len);

    const float *pk = NULL, *pv = NULL;
    int64_t n_pre = 0, kv_dim = NKV * D;
    if (a->prefix && a->prefix[s]) {
        const cr_prefix *p = a->prefix[s];
        n_pre = a->prefix_len ? a->prefix_len[s] : p->len;
        pk = p->k + (a->layer * p->len) * kv_dim + g * D;
        pv = p->v + (a->layer * p->len) * kv_dim + g * D;
    }
    const float *base = a->qkv + start * a->qkv_stride;
    const float *k0 = base + NH * D + g * D;
    const float *v0 = base + (NH + NKV) * D + g * D;
    float *scores = a->scratch + (int64_t)worker * a->scratch_stride;

    for (int64_t i = row0; i < row1; i++) {
        for (int64_t hh = 0; hh < group; hh++) {
            int64_t h = g * group + hh;
            const float *q = base + i * a->qkv_stride + h * D;
            int64_t out_row = a->last_only ? s : start + i;
            float *out = a->out + out_row * a->out_stride + h * D;
            attend_row(a, q, a->pos[start + i], pk, pv, n_pre, k0, v0, i + 1, a->pos + start,
                       a->qkv_stride, kv_dim, scores, out);
        }
    }
}

cr_status cr_attention(const cr_attn_args *a) {
    attn_job job = {.a = a};
    int64_t n_blocks = 0;
    for (int64_t s = 0; s < a->n_seqs; s++) {
        int64_t len = a->seq_start[s + 1] - a->seq_start[s];
        n_blocks += a->last_only ? 1 : (len + CR_ATTN_QUERY_BLOCK - 1) / CR_ATTN_QUERY_BLOCK;
    }
    job.block_seq = cr_malloc_array((size_t)n_blocks, sizeof(int64_t), "attention blocks");
    job.block_row0 = cr_malloc_array((size_t)n_blocks, sizeof(int64_t), "attention blocks");
    if (!job.block_seq || !job.block_row0) {
        free(job.block_seq);
        free(job.block_row0);
        return CR_E_NOMEM;
    }
    int64_t b = 0;
    for (int64_t s = 0; s < a->n_seqs; s++) {
        int64_t len = a->seq_start[s + 1] - a->seq_start[s];
        if (a->last_only) {
            job.block_seq[b] = s;
            job.block_row0[b++] = len - 1;
            continue;
        }
        for (int64_t r = 0; r < len; r += CR_ATTN_QUERY_BLOCK) {
            job.block_seq[b] = s;
            job.block_row0[b++] = r;
        }
    }
    job.n_blocks = n_blocks;
    cr_status st = cr_pool_run(a->threads, n_blocks * a->n_kv_heads, attn_task, &job, a->abort);
    free(job.block_seq);
    free(job.block_row0);
    return st;
}
