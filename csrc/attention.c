/* attention.c — causal grouped-query attention in key tiles with an online softmax (see
 * attention.h for the contract).
 *
 * A task is one (sequence, KV head, block of query rows); its columns are the block's rows times
 * the query heads sharing that KV head, so each K/V row is read once for the whole group. The
 * task walks the keys its rows need in tiles of CR_ATTN_KEY_TILE, at boundaries fixed by the key
 * index (prefix keys first), and per tile:
 *   1. copies the tile's K and V rows (prefix handle and/or own span) into contiguous scratch
 *      (prefetched during the previous tile's step 5);
 *   2. scores S^T[key][column] = K_tile . (scale q)^T through gemm_f32_tile, the block's queries
 *      packed once as its weight panels;
 *   3. masks the keys a column may not see, only on tiles that cross a row's causal or window
 *      edge (tiles no row of the block needs are never visited);
 *   4. updates each column's online softmax (running max m and sum l, rescale alpha);
 *   5. O = alpha O + P V (attn_pv_f32).
 * Extra memory per worker is O(tile): packed queries, K/V tile, score tile and accumulator.
 *
 * Why a row's bits depend only on its own keys: every score is one FMA chain over the head
 * dimension, every sum a chain in key order, the rescaling points are the fixed tile boundaries,
 * and a tile (or the part of one) in which a row sees no key, visited because a neighbour row
 * needs it, leaves that row's state exactly unchanged (alpha = 1, p = 0, and fma(0, v, t) = t).
 * The last layer (last_only) scores its one row per head with dot_f32 instead of the panel GEMM;
 * every call with last_only runs that way, so it too is independent of the batch.
 *
 * The tile path (a->tiles: bf16 models on AMX, int8 models on every level): first every
 * (sequence, key tile, KV head) is staged once as tile operands (keys and values rounded to
 * bfloat16) for all the query blocks that visit it; then steps 2 and 5 run through
 * gemm_bf16_amx (below AMX its float32 model): the keys as A against the packed queries as B for the
 * scores, P (rounded to bfloat16, in tile order) as A against the values (pairs of keys) as B,
 * accumulated onto O in the tiles after O's rows were scaled by alpha (only rows with alpha != 1:
 * a product by 1 is exact). P V always covers the tile's 64 slots at their absolute places, the
 * slots a row does not see holding p = 0, so a row's sums are the same whatever its neighbours
 * need. A tile in which a row sees no key leaves its O unchanged: alpha = 1, and adding the zero
 * products changes no bit of an O that the tiles wrote (they flush below the normal range, so it
 * is never subnormal). At ~300 tokens attention is under a tenth of the FLOPs, yet in float32
 * vectors near half of an AMX model's time. */
#include "attention.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "model.h"
#include "threads.h"

/* Query columns (rows x heads of a group) per task. Each tile's K/V is streamed from L3 or
 * memory once per task, so more columns means less traffic per FLOP; 128 keeps a head_dim-128
 * task's scratch (~230 KB) in L2 and measured best against 32, 64 and 256. */
#define CR_ATTN_QUERY_COLS 128

typedef struct attn_shape {
    int64_t group;      /* query heads per KV head */
    int64_t rows;       /* query rows per block */
    int64_t cols;       /* rows * group */
    int64_t ld;         /* score tile row stride: cols rounded up to whole panels */
} attn_shape;

static attn_shape shape_of(int64_t n_heads, int64_t n_kv_heads) {
    attn_shape sh;
    sh.group = n_heads / n_kv_heads;
    sh.rows = CR_ATTN_QUERY_COLS / sh.group > 0 ? CR_ATTN_QUERY_COLS / sh.group : 1;
    sh.cols = sh.rows * sh.group;
    sh.ld = (sh.cols + CR_GEMM_NR - 1) / CR_GEMM_NR * CR_GEMM_NR;
    return sh;
}

static int64_t round16(int64_t n) { return (n + 15) & ~(int64_t)15; }

/* One worker's scratch, carved from its slice of a->scratch. */
typedef struct attn_scratch {
    float *q;           /* [ld / NR][D][NR] packed scaled queries (last_only: [cols][D] rows) */
    float *k, *v;       /* [KEY_TILE][D] the tile's keys and values, contiguous */
    float *s;           /* [KEY_TILE][ld] scores, then probabilities, key-major */
    float *o;           /* [ld][D] unnormalised output (rows past cols: tile-path padding, zero) */
    uint16_t *pt;       /* tile path: [ld][KEY_TILE] bf16 probabilities in tile order */
    float *m, *l, *alpha; /* [ld] running max, running sum, this tile's rescale */
    int32_t *pre_lo, *own_lo, *hi; /* [cols] visible keys: [pre_lo, n_pre) and [own_lo, hi] (int32,
                                    * so the mask loop vectorizes; cr_attention bounds the keys) */
} attn_scratch;

static int64_t scratch_floats(const attn_shape *sh, int64_t D) {
    return round16(sh->ld * D) + 2 * round16(CR_ATTN_KEY_TILE * D) + round16(CR_ATTN_KEY_TILE * sh->ld) +
           round16(sh->ld * D) + round16(sh->ld * CR_ATTN_KEY_TILE / 2) +
           3 * round16(sh->ld) + 3 * round16(sh->cols);
}

int64_t cr_attention_scratch_floats(int64_t n_heads, int64_t n_kv_heads, int64_t head_dim) {
    if (n_kv_heads < 1 || n_heads < n_kv_heads || head_dim < 1) return 16; /* cr_attention refuses these */
    attn_shape sh = shape_of(n_heads, n_kv_heads);
    return round16(scratch_floats(&sh, head_dim));
}

static attn_scratch carve(float *base, const attn_shape *sh, int64_t D) {
    attn_scratch w;
    w.q = base;
    base += round16(sh->ld * D);
    w.k = base;
    base += round16(CR_ATTN_KEY_TILE * D);
    w.v = base;
    base += round16(CR_ATTN_KEY_TILE * D);
    w.s = base;
    base += round16(CR_ATTN_KEY_TILE * sh->ld);
    w.o = base;
    base += round16(sh->ld * D);
    w.pt = (uint16_t *)(void *)base;
    base += round16(sh->ld * CR_ATTN_KEY_TILE / 2);
    w.m = base;
    base += round16(sh->ld);
    w.l = base;
    base += round16(sh->ld);
    w.alpha = base;
    base += round16(sh->ld);
    /* int32 arrays, one float's room per entry */
    w.pre_lo = (int32_t *)(void *)base;
    base += round16(sh->cols);
    w.own_lo = (int32_t *)(void *)base;
    base += round16(sh->cols);
    w.hi = (int32_t *)(void *)base;
    return w;
}

/* Where a sequence's keys live: key j < n_pre is row j of the prefix handle, key j >= n_pre row
 * j - n_pre of the span in the q|k|v buffer. */
typedef struct kv_src {
    const float *pk, *pv;
    int64_t n_pre, ld_pre;
    const float *k0, *v0;
    int64_t ld_own;
} kv_src;

/* A run of keys [b, e) from one source: rows k, v with stride ld. */
typedef struct kv_run {
    int64_t b, e, ld;
    const float *k, *v;
} kv_run;

/* Splits keys [kb, ke) into at most two runs (prefix, own); returns how many. */
static int key_runs(const kv_src *src, int64_t kb, int64_t ke, kv_run run[2]) {
    int n = 0;
    if (kb < src->n_pre) {
        int64_t e = ke < src->n_pre ? ke : src->n_pre;
        run[n++] = (kv_run){kb, e, src->ld_pre, src->pk + kb * src->ld_pre, src->pv + kb * src->ld_pre};
    }
    if (ke > src->n_pre) {
        int64_t b = kb > src->n_pre ? kb : src->n_pre;
        run[n++] = (kv_run){b, ke, src->ld_own, src->k0 + (b - src->n_pre) * src->ld_own,
                            src->v0 + (b - src->n_pre) * src->ld_own};
    }
    return n;
}

/* How many keys sequence s has: its prefix handle's, then its own. */
static int64_t seq_keys(const cr_attn_args *a, int64_t s) {
    int64_t n_pre = a->prefix && a->prefix[s] ? (a->prefix_len ? a->prefix_len[s] : a->prefix[s]->len) : 0;
    return n_pre + a->seq_start[s + 1] - a->seq_start[s];
}

/* Where sequence s's keys live for KV head g (prefix handle first, then the span in q|k|v). */
static kv_src kv_source(const cr_attn_args *a, int64_t s, int64_t g) {
    int64_t NH = a->n_heads, NKV = a->n_kv_heads, D = a->head_dim;
    kv_src src = {0};
    if (a->prefix && a->prefix[s]) {
        const cr_prefix *p = a->prefix[s];
        int64_t kv_dim = NKV * D;
        src.n_pre = a->prefix_len ? a->prefix_len[s] : p->len;
        src.ld_pre = kv_dim;
        src.pk = p->k + (a->layer * p->len) * kv_dim + g * D;
        src.pv = p->v + (a->layer * p->len) * kv_dim + g * D;
    }
    const float *base = a->qkv + a->seq_start[s] * a->qkv_stride;
    src.k0 = base + NH * D + g * D;
    src.v0 = base + (NH + NKV) * D + g * D;
    src.ld_own = a->qkv_stride;
    return src;
}

/* Tile path, staged once per call: each (sequence, key tile, KV head) as the operands of every
 * query block that visits it. Keys: the A operand of the scores, slot t (key 64 ti + t) in row t
 * of gemm_bf16_amx's tile order; values: the B operand of P V, slot t of value column d at
 * [(d / 32) 2048 + (t / 2) 64 + (d % 32) 2 + t % 2] (D / 32 panels of two blocks of 16 key pairs).
 * Slots past the sequence's last key are zero, so a probability of 0 there meets a 0. */
#define STAGE_TILE_ELEMS(D) (2 * CR_ATTN_KEY_TILE * (D)) /* bf16 elements: keys, then values */

typedef struct stage_job {
    const cr_attn_args *a;
    const cr_kernels *K;
    const int64_t *tile_seq, *tile_base; /* [tiles] the tile's sequence; [S] its first tile */
    uint16_t *stage;
} stage_job;

static void stage_task(void *ctx, int64_t task, int worker) {
    const stage_job *job = ctx;
    const cr_attn_args *a = job->a;
    const int64_t D = a->head_dim, NKV = a->n_kv_heads, B = CR_AMX_BF16_K, kbD = D / CR_AMX_BF16_K;
    int64_t tile = task / NKV, g = task % NKV, s = job->tile_seq[tile];
    int64_t t0 = (tile - job->tile_base[s]) * CR_ATTN_KEY_TILE;
    kv_src src = kv_source(a, s, g);
    int64_t n_keys = seq_keys(a, s), ke = t0 + CR_ATTN_KEY_TILE < n_keys ? t0 + CR_ATTN_KEY_TILE : n_keys;
    uint16_t *kt = job->stage + (tile * NKV + g) * STAGE_TILE_ELEMS(D), *vp = kt + CR_ATTN_KEY_TILE * D;
    uint32_t *vp32 = (uint32_t *)(void *)vp;
    /* two converted rows, in this worker's attention scratch (not in use yet) */
    uint16_t *lo = (uint16_t *)(void *)(a->scratch + (int64_t)worker * a->scratch_stride), *hi = lo + D;
    if (ke < t0 + CR_ATTN_KEY_TILE) memset(kt, 0, (size_t)STAGE_TILE_ELEMS(D) * sizeof(uint16_t));
    kv_run run[2];
    int n_runs = key_runs(&src, t0, ke, run);
    for (int r = 0; r < n_runs; r++)
        for (int64_t j = run[r].b; j < run[r].e; j++) {
            int64_t t = j - t0;
            if (j + 2 < run[r].e) /* rows a q|k|v row apart, written long before: ask for a later one */
                for (int64_t d = 0; d < D; d += 16) {
                    __builtin_prefetch(run[r].k + (j + 2 - run[r].b) * run[r].ld + d, 0, 3);
                    __builtin_prefetch(run[r].v + (j + 2 - run[r].b) * run[r].ld + d, 0, 3);
                }
            job->K->f32_to_bf16(run[r].k + (j - run[r].b) * run[r].ld, lo, D);
            for (int64_t b = 0; b < kbD; b++)
                memcpy(kt + ((t / 16) * kbD + b) * 16 * B + (t % 16) * B, lo + b * B, (size_t)B * sizeof(uint16_t));
            /* values by pairs of slots: an even slot's row with the next key's (which may come
             * from the other run, or not exist: zero) */
            if (t % 2) continue;
            job->K->f32_to_bf16(run[r].v + (j - run[r].b) * run[r].ld, lo, D);
            if (j + 1 < ke) {
                const kv_run *nr = j + 1 < run[r].e ? &run[r] : &run[r + 1];
                job->K->f32_to_bf16(nr->v + (j + 1 - nr->b) * nr->ld, hi, D);
            } else {
                memset(hi, 0, (size_t)D * sizeof(uint16_t));
            }
            for (int64_t p = 0; p < D / 32; p++) {
                uint32_t *cell = vp32 + p * 1024 + (t / 2) * 32;
                for (int d = 0; d < 32; d++) cell[d] = (uint32_t)lo[p * 32 + d] | (uint32_t)hi[p * 32 + d] << 16;
            }
        }
}

/* Tile path, step 5: P (key-major fp32, key k0 + i of the tile in row i < nk) rounded into tile
 * order; O = alpha O (rows with alpha != 1; not on the block's first tile, where O is still all
 * zeros, so alpha O changes no bit), then O += P V on the tiles over the tile's 64 slots. */
static void tile_pv(const cr_kernels *K, const float *s, int64_t lds, int64_t k0, int64_t nk, int64_t cols,
                    uint16_t *pt, const uint16_t *vp, int64_t D, const float *alpha, float *o, int first) {
    const int64_t kbT = CR_ATTN_KEY_TILE / CR_AMX_BF16_K, panels = D / CR_GEMM_NR;
    K->attn_p_tiles_bf16(s, lds, k0, nk, cols, pt);
    for (int64_t c = 0; c < cols && !first; c++)
        if (alpha[c] != 1.0f) K->scale_f32(alpha[c], o + c * D, D);
    for (int64_t c0 = 0; c0 < cols; c0 += CR_AMX_ROWS)
        for (int64_t p = 0; p < panels; p += CR_AMX_PANELS)
            K->gemm_bf16_amx(pt + c0 * CR_ATTN_KEY_TILE, cols - c0 < CR_AMX_ROWS ? cols - c0 : CR_AMX_ROWS,
                             vp + p * kbT * 16 * 2 * CR_GEMM_NR, kbT, kbT,
                             panels - p < CR_AMX_PANELS ? panels - p : CR_AMX_PANELS, o + c0 * D + p * CR_GEMM_NR, D,
                             1, NULL, 0);
}

typedef struct attn_job {
    const cr_attn_args *a;
    const cr_kernels *K;
    attn_shape sh;
    const uint16_t *stage;         /* tile path: the staged tiles (stage_task) */
    const int64_t *tile_base;      /* tile path: [S] each sequence's first staged tile */
    int64_t *block_seq;            /* [n_blocks] */
    int64_t *block_row0;           /* [n_blocks] first query row (within the span) */
    int64_t n_blocks;
} attn_job;

static void attn_task(void *ctx, int64_t task, int worker) {
    const attn_job *job = ctx;
    const cr_attn_args *a = job->a;
    const cr_kernels *K = job->K;
    const attn_shape *sh = &job->sh;
    const int64_t TK = CR_ATTN_KEY_TILE, NR = CR_GEMM_NR;
    int64_t NKV = a->n_kv_heads, D = a->head_dim, group = sh->group, ld = sh->ld;
    /* KV head by KV head, so consecutive tasks stream the same K/V and find it in L3; within a
     * head, blocks last first, so the longest (the last rows of each sequence) start early and
     * short ones fill the end */
    int64_t g = task / job->n_blocks, blk = job->n_blocks - 1 - task % job->n_blocks;
    int64_t s = job->block_seq[blk];
    int64_t start = a->seq_start[s], len = a->seq_start[s + 1] - start;
    int64_t r0 = job->block_row0[blk];
    int64_t r1 = a->last_only ? len : (r0 + sh->rows < len ? r0 + sh->rows : len);
    int64_t cols = (r1 - r0) * group;
    attn_scratch w = carve(a->scratch + (int64_t)worker * a->scratch_stride, sh, D);
    kv_src src = kv_source(a, s, g);
    const float *base = a->qkv + start * a->qkv_stride;
    int64_t n_pre = src.n_pre;

    /* Visible keys of each row, as the per-row definition has them: prefix keys j >= pos_q - w + 1
     * and own keys from the first whose position is within the window (never past the query
     * itself). With positions that never decrease, the first own key only moves forward from row
     * to row, so the scan resumes where the previous row stopped. */
    int32_t win = a->window;
    int64_t klo = INT64_MAX, khi = -1, max_lo = -1, min_hi = INT64_MAX, own_first = 0;
    int gap = 0;                   /* some row sees prefix keys but not the first own keys */
    for (int64_t i = r0; i < r1; i++) {
        int32_t pq = a->pos[start + i];
        int64_t pre_lo = 0;
        if (win > 0 && (int64_t)pq - win + 1 > 0) pre_lo = (int64_t)pq - win + 1;
        if (pre_lo > n_pre) pre_lo = n_pre;
        if (i == r0 || a->pos[start + i] < a->pos[start + i - 1]) own_first = 0;
        if (win > 0)
            while (own_first < i && (int64_t)pq - a->pos[start + own_first] >= win) own_first++;
        int64_t own_lo = n_pre + own_first, hi = n_pre + i;
        int64_t lo = pre_lo < n_pre ? pre_lo : own_lo;
        gap |= pre_lo < n_pre && own_first > 0;
        for (int64_t hh = 0; hh < group; hh++) {
            int64_t c = (i - r0) * group + hh;
            w.pre_lo[c] = (int32_t)pre_lo;
            w.own_lo[c] = (int32_t)own_lo;
            w.hi[c] = (int32_t)hi;
        }
        klo = lo < klo ? lo : klo;
        khi = hi > khi ? hi : khi;
        max_lo = lo > max_lo ? lo : max_lo;
        min_hi = hi < min_hi ? hi : min_hi;
    }

    /* the block's queries times the scale: column c is row r0 + c / group, head g*group + c % group;
     * as weight panels of gemm_f32_tile ([D][NR] floats) or, for bf16 scores, of gemm_bf16_tile
     * ([D/2][NR][2] bfloat16, in the same bytes: half of them) */
    int64_t panels = (cols + NR - 1) / NR;
    int bf16 = a->bf16_scores && !a->last_only, tiles = bf16 && a->tiles;
    uint16_t *qb = (uint16_t *)(void *)w.q, *kb16 = (uint16_t *)(void *)w.k;
#define QUERY_OF(c) (base + (r0 + (c) / group) * a->qkv_stride + (g * group + (c) % group) * D)
    if (a->last_only) {
        for (int64_t c = 0; c < cols; c++) {
            const float *q = QUERY_OF(c);
            for (int64_t d = 0; d < D; d++) w.q[c * D + d] = q[d] * a->scale;
        }
    } else {
        const float *col[CR_GEMM_NR];
        for (int64_t p = 0; p < panels; p++) {
            int64_t n = cols - p * NR < NR ? cols - p * NR : NR;
            for (int64_t j = 0; j < n; j++) col[j] = QUERY_OF(p * NR + j);
            /* the next panel's rows sit a q|k|v row apart, written long before: ask for them now */
            for (int64_t c = (p + 1) * NR; c < cols && c < (p + 2) * NR; c++)
                for (int64_t d = 0; d < D; d += 16) __builtin_prefetch(QUERY_OF(c) + d, 0, 3);
            K->attn_q_panel(col, n, D, a->scale, bf16, bf16 ? (void *)(qb + p * D * NR) : (void *)(w.q + p * D * NR));
        }
    }
#undef QUERY_OF
    for (int64_t c = 0; c < cols; c++) {
        w.m[c] = -INFINITY;
        w.l[c] = 0.0f;
    }
    /* the tile path accumulates whole 16-row groups: its padding rows are zeros too */
    memset(w.o, 0, (size_t)((tiles ? round16(cols) : cols) * D) * sizeof(float));
    float *o = w.o;

    int64_t mr = K->gemm_mr, bmr = K->gemm_bf16_mr, pv_mr = K->attn_pv_mr;
    for (int64_t t0 = klo - klo % TK; t0 <= khi; t0 += TK) {
        int64_t kb = t0 > klo ? t0 : klo, ke = t0 + TK < khi + 1 ? t0 + TK : khi + 1;
        kv_run run[2];
        int n_runs = key_runs(&src, kb, ke, run);

        /* 1. the tile's keys and values, copied contiguous (the tile path has them staged): in
         *    place, rows sit at the q|k|v stride, a power of two for most models, which maps a
         *    tile's rows to the same cache sets. The last row's scores read K in place. */
        const uint16_t *kt = tiles ? job->stage + ((job->tile_base[s] + t0 / TK) * NKV + g) * STAGE_TILE_ELEMS(D)
                                   : NULL;
        if (!tiles)
            for (int r = 0; r < n_runs; r++)
                for (int64_t j = run[r].b; j < run[r].e; j++) {
                    const float *kr = run[r].k + (j - run[r].b) * run[r].ld;
                    const float *vr = run[r].v + (j - run[r].b) * run[r].ld;
                    if (bf16)
                        K->f32_to_bf16(kr, kb16 + (j - kb) * D, D);
                    else if (!a->last_only)
                        memcpy(w.k + (j - kb) * D, kr, (size_t)D * sizeof(float));
                    memcpy(w.v + (j - kb) * D, vr, (size_t)D * sizeof(float));
                }

        /* 2. scores */
        int64_t nk = ke - kb;
        if (a->last_only) {
            for (int r = 0; r < n_runs; r++)
                for (int64_t j = run[r].b; j < run[r].e; j++)
                    for (int64_t c = 0; c < cols; c++)
                        w.s[(j - kb) * ld + c] = K->dot_f32(run[r].k + (j - run[r].b) * run[r].ld, w.q + c * D, D);
        } else if (tiles) {
            /* staged keys: score row t is slot t; the rows before kb are computed and not read */
            for (int64_t p = 0; p < panels; p += CR_AMX_PANELS)
                K->gemm_bf16_amx(kt, ke - t0, qb + p * D * NR, D / CR_AMX_BF16_K, D / CR_AMX_BF16_K,
                                 panels - p < CR_AMX_PANELS ? panels - p : CR_AMX_PANELS, w.s + p * NR, ld, 0, NULL, 0);
        } else if (bf16) {
            for (int64_t p = 0; p < panels; p++)
                for (int64_t j = 0; j < nk; j += bmr) {
                    int64_t m = nk - j < bmr ? nk - j : bmr;
                    K->gemm_bf16_tile(kb16 + j * D, D, m, qb + p * D * NR, D / 2, w.s + j * ld + p * NR, ld,
                                      cols - p * NR < NR ? cols - p * NR : NR);
                }
        } else {
            for (int64_t p = 0; p < panels; p++)
                for (int64_t j = 0; j < nk; j += mr) {
                    int64_t m = nk - j < mr ? nk - j : mr;
                    K->gemm_f32_tile(w.k + j * D, D, m, w.q + p * D * NR, D, w.s + j * ld + p * NR, ld,
                                     cols - p * NR < NR ? cols - p * NR : NR);
                }
        }

        /* 3. mask, where a row's visible keys begin or end inside the tile (sk: key kb's scores) */
        float *sk = w.s + (tiles ? (kb - t0) * ld : 0);
        if (gap || kb < max_lo || ke - 1 > min_hi)
            for (int64_t j = kb; j < ke; j++) {
                float *srow = sk + (j - kb) * ld;
                int32_t jj = (int32_t)j;
                if (j < n_pre)
                    for (int64_t c = 0; c < cols; c++) srow[c] = jj >= w.pre_lo[c] ? srow[c] : -INFINITY;
                else
                    for (int64_t c = 0; c < cols; c++)
                        srow[c] = ((jj >= w.own_lo[c]) & (jj <= w.hi[c])) ? srow[c] : -INFINITY;
            }

        /* 4. online softmax; 5. O = alpha O + P V. The next tile's rows come from L3 or memory:
         *    ask for them a few at a time between the P V steps (a burst of prefetches would
         *    overflow the miss queue and be dropped). */
        K->attn_softmax_f32(sk, ld, nk, cols, w.m, w.l, w.alpha);
        if (tiles) {
            tile_pv(K, sk, ld, kb - t0, nk, cols, w.pt, kt + TK * D, D, w.alpha, o, t0 == klo - klo % TK);
            continue;
        }
        int64_t nb = ke, ne = ke + TK < khi + 1 ? ke + TK : khi + 1, next_row = nb;
        kv_run next[2];
        int n_next = ke <= khi ? key_runs(&src, nb, ne, next) : 0;
        int64_t chunks = (cols + pv_mr - 1) / pv_mr, per_chunk = (ne - nb + chunks - 1) / chunks;
        for (int64_t c = 0; c < cols; c += pv_mr) {
            for (int64_t stop = next_row + per_chunk; n_next && next_row < ne && next_row < stop; next_row++) {
                const kv_run *nr = &next[n_next == 2 && next_row >= next[1].b];
                const float *kr = nr->k + (next_row - nr->b) * nr->ld, *vr = nr->v + (next_row - nr->b) * nr->ld;
                for (int64_t d = 0; d < D; d += 16) {
                    __builtin_prefetch(kr + d, 0, 2);
                    __builtin_prefetch(vr + d, 0, 2);
                }
            }
            K->attn_pv_f32(w.s + c, ld, cols - c < pv_mr ? cols - c : pv_mr, w.v, D, nk, w.alpha + c,
                           o + c * D, D, D);
        }
    }

    /* normalise: every row sees at least itself, so l >= 1 */
    if (!a->put && !a->last_only && K->store_rows_stream) {
        /* float32 rows that the o projection's tasks on other cores read (int8 quantizes them):
         * streamed out where the table has the streaming copy (AMX hosts), so those cores read
         * them from memory, not from this core's cache. int8 at 16 threads on an Emerald Rapids
         * measured faster in all four pairs of runs (4-24%, a shared host). Column c is query row
         * c / group of head g group + c % group; the store multiplies it by 1 / l on the way. */
        for (int64_t c = 0; c < cols; c++) w.alpha[c] = 1.0f / w.l[c];
        for (int64_t h = 0; h < group; h++)
            K->store_rows_stream(a->out + (start + r0) * a->out_stride + (g * group + h) * D, a->out_stride,
                                 o + h * D, group * D, r1 - r0, D, w.alpha + h, group);
        return;
    }
    for (int64_t c = 0; c < cols; c++) {
        int64_t row = a->last_only ? s : start + r0 + c / group, col = (g * group + c % group) * D;
        K->scale_f32(1.0f / w.l[c], o + c * D, D); /* in place: o's column is not read again */
        if (a->put)
            a->put(a->put_ctx, row, col, o + c * D, D);
        else
            memcpy(a->out + row * a->out_stride + col, o + c * D, (size_t)D * sizeof(float));
    }
}

/* The work blocks of a pass: per sequence, query rows [row0, row0 + rows) (only the last row
 * when a->last_only), as two arrays of *n_blocks entries the caller frees. */
static cr_status attention_blocks(const cr_attn_args *a, int64_t rows, int64_t **block_seq, int64_t **block_row0,
                                  int64_t *n_blocks) {
    int64_t n = 0;
    for (int64_t s = 0; s < a->n_seqs; s++) {
        int64_t len = a->seq_start[s + 1] - a->seq_start[s];
        n += a->last_only ? 1 : (len + rows - 1) / rows;
    }
    int64_t *seq = cr_malloc_array((size_t)n, sizeof(int64_t), "attention blocks");
    int64_t *row0 = cr_malloc_array((size_t)n, sizeof(int64_t), "attention blocks");
    if (!seq || !row0) {
        free(seq);
        free(row0);
        return CR_E_NOMEM;
    }
    int64_t b = 0;
    for (int64_t s = 0; s < a->n_seqs; s++) {
        int64_t len = a->seq_start[s + 1] - a->seq_start[s];
        if (a->last_only) {
            seq[b] = s;
            row0[b++] = len - 1;
            continue;
        }
        for (int64_t r = 0; r < len; r += rows) {
            seq[b] = s;
            row0[b++] = r;
        }
    }
    *block_seq = seq;
    *block_row0 = row0;
    *n_blocks = n;
    return CR_OK;
}

cr_status cr_attention(const cr_attn_args *a) {
    if (a->n_kv_heads < 1 || a->n_heads < 1 || a->n_heads % a->n_kv_heads || !(a->scale > 0.0f))
        return cr_fail(CR_E_ARG, "attention: %lld heads over %lld KV heads with scale %g",
                       (long long)a->n_heads, (long long)a->n_kv_heads, (double)a->scale);
    if (a->bf16_scores && a->head_dim % 2)
        return cr_fail(CR_E_ARG, "attention: bf16 scores need an even head_dim, got %lld", (long long)a->head_dim);
    if (a->tiles && (!a->bf16_scores || a->head_dim % CR_AMX_BF16_K))
        return cr_fail(CR_E_ARG, "attention: tiles need bf16 scores and a head_dim that is a multiple of %d, got %lld",
                       CR_AMX_BF16_K, (long long)a->head_dim);
    for (int64_t s = 0; s < a->n_seqs; s++) /* key indices are int32 in the mask */
        if (seq_keys(a, s) > INT32_MAX)
            return cr_fail(CR_E_ARG, "attention: sequence %lld has more than 2^31 - 1 keys", (long long)s);
    attn_job job = {.a = a, .K = a->kern ? a->kern : cr_kern, .sh = shape_of(a->n_heads, a->n_kv_heads)};
    if (a->scratch_stride < cr_attention_scratch_floats(a->n_heads, a->n_kv_heads, a->head_dim))
        return cr_fail(CR_E_ARG, "attention: scratch of %lld floats per worker, %lld needed",
                       (long long)a->scratch_stride,
                       (long long)cr_attention_scratch_floats(a->n_heads, a->n_kv_heads, a->head_dim));
    int64_t *tile_seq = NULL, *tile_base = NULL, n_tiles = 0;
    uint16_t *stage = NULL;
    cr_status st = CR_OK;
    if (a->tiles && !a->last_only) {
        /* every sequence's keys, staged once as tile operands for all its query blocks */
        tile_base = cr_malloc_array((size_t)a->n_seqs, sizeof(int64_t), "attention tiles");
        if (!tile_base) return CR_E_NOMEM;
        for (int64_t s = 0; s < a->n_seqs; s++) {
            tile_base[s] = n_tiles;
            n_tiles += (seq_keys(a, s) + CR_ATTN_KEY_TILE - 1) / CR_ATTN_KEY_TILE;
        }
        size_t count;
        tile_seq = cr_malloc_array((size_t)n_tiles, sizeof(int64_t), "attention tiles");
        if (tile_seq && cr_mul_size((size_t)(n_tiles * a->n_kv_heads), (size_t)STAGE_TILE_ELEMS(a->head_dim) * 2,
                                    &count))
            stage = a->stage_buf ? cr_buf_get(a->stage_buf, count, 1, 0, "attention key and value tiles")
                                 : cr_aligned_alloc(count, "attention key and value tiles");
        if (!stage) {
            free(tile_seq);
            free(tile_base);
            return CR_E_NOMEM;
        }
        for (int64_t s = 0, t = 0; s < a->n_seqs; s++)
            for (; t < (s + 1 < a->n_seqs ? tile_base[s + 1] : n_tiles); t++) tile_seq[t] = s;
        stage_job sj = {.a = a, .K = job.K, .tile_seq = tile_seq, .tile_base = tile_base, .stage = stage};
        st = cr_pool_run(a->threads, n_tiles * a->n_kv_heads, stage_task, &sj, a->abort);
        job.stage = stage;
        job.tile_base = tile_base;
    }
    if (st == CR_OK) st = attention_blocks(a, job.sh.rows, &job.block_seq, &job.block_row0, &job.n_blocks);
    if (st == CR_OK) {
        st = cr_pool_run(a->threads, job.n_blocks * a->n_kv_heads, attn_task, &job, a->abort);
        free(job.block_seq);
        free(job.block_row0);
    }
    if (!a->stage_buf) free(stage);
    free(tile_seq);
    free(tile_base);
    return st;
}

