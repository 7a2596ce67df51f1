/* linear_amx.c — the AMX side of cr_linear_apply: how a call's work is cut into tasks (row ranges
 * against spans of weight-panel groups, K whole or in pieces) and the tasks themselves. linear.c
 * converts the inputs into the tile order first and owns the job. */
#include <stdlib.h>
#include <string.h>

#include "linear_job.h"

/* Bytes of L2 one AMX task plans for: its row range's converted inputs and two panel groups of
 * weights (the one it computes, the next one on its way in), sized for the 2 MiB L2 of the cores
 * that have AMX (Sapphire, Emerald and Granite Rapids) with room for the worker's result block. */
#define CR_AMX_L2_BYTES (3 << 19)

/* Blocks of K one AMX task sums at a time when whole rows leave room in L2 for a single row block
 * beside two groups of one panel (K from ~6,000 bf16: the down projections of the 4B and 8B
 * shapes), which then read their inputs from L3 again for every 32 columns. In pieces of 32 blocks
 * (2 KiB per row), ranges and groups keep their K = 1024 sizes; the price is the sums, stored to y
 * and loaded again once per piece, which measured slower than whole rows where those still fit
 * ranges of two blocks (K = 2048 and 3072 at 0.6B, 4096 at 8B). */
#define CR_AMX_K_BLOCKS 32

/* The epilogue of each of np panels from p0 in a finished block of sums (row stride ldo): int8's
 * dequantization and outliers in place, then the bias. */
static void finish_panels(const panel_job *j, const cr_kernels *K, int64_t r, int64_t rows, int64_t p0, int64_t np,
                          float *out, int64_t ldo) {
    const cr_linear *W = j->W;
    int64_t len = row_len(W->fmt, W->n_in);
    for (int64_t q = 0; q < np; q++) {
        int64_t c0 = (p0 + q) * CR_GEMM_NR;
        int64_t cols = W->n_out - c0 < CR_GEMM_NR ? W->n_out - c0 : CR_GEMM_NR;
        float *sums = out + q * CR_GEMM_NR;
        /* int8: the AVX-512 epilogue turns the int32 sums into float32 in place (its loads and
         * stores are of the same 64 bytes, through intrinsics that may alias anything) */
        if (W->fmt == CR_FMT_I8_AMX)
            cr_linear_i8_finish(j, K, r, rows, W->wq + (p0 + q) * len * CR_GEMM_NR, c0, cols,
                                (const int32_t *)(void *)sums, ldo, sums, ldo);
        add_bias(W->bias ? W->bias + c0 : NULL, sums, ldo, rows, cols);
    }
}

/* The sums of a block of CR_AMX_ROWS rows from row r against the np panels from p0, one kernel
 * call, into out (row stride ldo). */
static void block_sums(const panel_job *j, int64_t r, int64_t rows, int64_t p0, int64_t np, float *out, int64_t ldo,
                       const void *next, int64_t next_bytes) {
    const cr_kernels *K = cr_kern;
    const cr_linear *W = j->W;
    int64_t len = row_len(W->fmt, W->n_in), kb = len / CR_AMX_BLOCK_ELEMS(W->fmt);
    if (W->fmt == CR_FMT_BF16_AMX)
        K->gemm_bf16_amx(j->xb + r * len, rows, W->wb + p0 * len * CR_GEMM_NR, kb, kb, np, out, ldo, 0, next,
                         next_bytes);
    else
        K->gemm_i8_amx(j->q8.q + r * len, rows, W->wq + p0 * len * CR_GEMM_NR, kb, kb, np, (int32_t *)out, ldo, 0, next,
                       next_bytes);
    finish_panels(j, K, r, rows, p0, np, out, ldo);
}

/* A block of CR_AMX_ROWS rows from row r against the panel group from p0 into the worker's own
 * block, each panel's epilogue there, then the finished rows to y. y is written once and read by
 * the next step of the forward: the rows go out with stores that skip this core's caches, so the
 * weights and inputs still to be used stay in L2 and no line of y is first read from memory. With
 * a GLU, the group's up panels into the worker's second block, and h from the two. `next`,
 * `next_up` / `next_bytes`: weights the worker reads after this block, asked into L2 during it. */
static void amx_block(const panel_job *j, int64_t r, int64_t rows, int64_t p0, int64_t np, int worker,
                      const void *next, const void *next_up, int64_t next_bytes) {
    const cr_linear *W = j->W;
    const int64_t ldo = CR_AMX_PANELS * CR_GEMM_NR, block = CR_AMX_PANELS * CR_AMX_ROWS * CR_GEMM_NR;
    float *out = (float *)j->amx_out + (int64_t)worker * (j->glu ? 2 : 1) * block;
    block_sums(j, r, rows, p0, np, out, ldo, next, next_bytes);
    if (j->glu) {
        block_sums(j, r, rows, j->up_panel + p0, np, out + block, ldo, next_up, next_bytes);
        int64_t c0 = p0 * CR_GEMM_NR, cols = j->glu->n - c0 < np * CR_GEMM_NR ? j->glu->n - c0 : np * CR_GEMM_NR;
        cr_glu_block(j->glu, r, rows, c0, cols, out, out + block, ldo);
        return;
    }
    int64_t c_end = (p0 + np) * CR_GEMM_NR < W->n_out ? (p0 + np) * CR_GEMM_NR : W->n_out;
    cr_kern->store_rows_stream(j->y + r * j->ldy + p0 * CR_GEMM_NR, j->ldy, out, ldo, rows, c_end - p0 * CR_GEMM_NR, NULL, 0);
}

/* Blocks k0 .. k0 + nk of K (of kb) of the CR_AMX_ROWS-row block from row r against the panel group
 * from p0, for a block whose rows are whole 16-row groups and whose panels are all within y: the
 * sums accumulate in y itself (int8: as int32 until the last piece), and after the last piece each
 * panel's epilogue runs there in place. */
static void amx_piece(const panel_job *j, int64_t r, int64_t rows, int64_t p0, int64_t np, int64_t k0, int64_t nk,
                      int64_t kb) {
    const cr_kernels *K = cr_kern;
    const cr_linear *W = j->W;
    int64_t len = row_len(W->fmt, W->n_in);
    float *y = j->y + r * j->ldy + p0 * CR_GEMM_NR;
    /* a block of inputs is 16 rows of 64 bytes in tile order, a block of a panel 16 x 128 bytes */
    size_t x_off = (size_t)(k0 * 16 * CR_AMX_BLOCK_BYTES), w_off = (size_t)(k0 * 32 * CR_AMX_BLOCK_BYTES);
    if (W->fmt == CR_FMT_BF16_AMX)
        K->gemm_bf16_amx((const uint16_t *)(void *)((const char *)(j->xb + r * len) + x_off), rows,
                         (const uint16_t *)(void *)((const char *)(W->wb + p0 * len * CR_GEMM_NR) + w_off), nk, kb, np,
                         y, j->ldy, k0 > 0, NULL, 0);
    else
        K->gemm_i8_amx(j->q8.q + r * len + x_off, rows, W->wq + p0 * len * CR_GEMM_NR + w_off, nk, kb, np,
                       (int32_t *)(void *)y, j->ldy, k0 > 0, NULL, 0);
    if (k0 + nk < kb) return;
    finish_panels(j, K, r, rows, p0, np, y, j->ldy);
}

/* One AMX task: a range of amx_range row blocks against a span of amx_span panel groups (of
 * amx_np panels each), group after group. The range's inputs stay in L2 for the whole span (the
 * range and two groups are sized to CR_AMX_L2_BYTES), so each group's weights are the only operand
 * that comes from L3 or memory, once per range, asked into L2 while the group before it computes.
 * Consecutive tasks are the ranges of one span, so the threads running at one time read the same
 * weights, which L3 holds for all of them. A range is the larger operand (512 rows against 128
 * columns at K = 1024), so it is the one kept: streaming the inputs against resident weights
 * would read four times the bytes per FLOP. */
void cr_amx_task(void *ctx, int64_t task, int worker) {
    const panel_job *j = ctx;
    const cr_linear *W = j->W;
    int64_t blocks = (j->m + CR_AMX_ROWS - 1) / CR_AMX_ROWS, ranges = (blocks + j->amx_range - 1) / j->amx_range;
    int64_t groups = (j->n_panels + j->amx_np - 1) / j->amx_np;
    int64_t b0 = task % ranges * j->amx_range, b1 = b0 + j->amx_range < blocks ? b0 + j->amx_range : blocks;
    int64_t g0 = task / ranges * j->amx_span, g1 = g0 + j->amx_span < groups ? g0 + j->amx_span : groups;
    int64_t len = row_len(W->fmt, W->n_in), kb = len / CR_AMX_BLOCK_ELEMS(W->fmt), kc = j->amx_kc;
    int64_t panel_bytes = kb * 32 * CR_AMX_BLOCK_BYTES;
    const char *weights = W->fmt == CR_FMT_BF16_AMX ? (const char *)W->wb : (const char *)W->wq;
    if (kc < kb) {
        /* K in pieces, each over the whole range and span; blocks that are not whole 16-row groups
         * or reach past y's columns (at most the last of each) take all of K at once, in the first */
        for (int64_t k0 = 0; k0 < kb; k0 += kc)
            for (int64_t g = g0; g < g1; g++)
                for (int64_t b = b0; b < b1; b++) {
                    int64_t r = b * CR_AMX_ROWS, p0 = g * j->amx_np;
                    int64_t rows = j->m - r < CR_AMX_ROWS ? j->m - r : CR_AMX_ROWS;
                    int64_t np = j->n_panels - p0 < j->amx_np ? j->n_panels - p0 : j->amx_np;
                    if (rows % 16 == 0 && (p0 + np) * CR_GEMM_NR <= W->n_out)
                        amx_piece(j, r, rows, p0, np, k0, kb - k0 < kc ? kb - k0 : kc, kb);
                    else if (k0 == 0)
                        amx_block(j, r, rows, p0, np, worker, NULL, NULL, 0);
                }
        return;
    }
    for (int64_t g = g0; g < g1; g++) {
        /* the next group's weights, a slice per block */
        int64_t next_p = (g + 1) * j->amx_np;
        int64_t next_np = j->n_panels - next_p < j->amx_np ? j->n_panels - next_p : j->amx_np;
        int64_t total = g + 1 < g1 ? next_np * panel_bytes : 0, slice = (total + (b1 - b0) - 1) / (b1 - b0);
        int64_t p0 = g * j->amx_np, np = j->n_panels - p0 < j->amx_np ? j->n_panels - p0 : j->amx_np;
        for (int64_t b = b0; b < b1; b++) {
            int64_t r = b * CR_AMX_ROWS, rows = j->m - r < CR_AMX_ROWS ? j->m - r : CR_AMX_ROWS;
            int64_t from = (b - b0) * slice, bytes = total - from < slice ? total - from : slice;
            const char *next = bytes > 0 ? weights + next_p * panel_bytes + from : NULL;
            const char *next_up = bytes > 0 && j->glu ? weights + (j->up_panel + next_p) * panel_bytes + from : NULL;
            amx_block(j, r, rows, p0, np, worker, next, next_up, bytes > 0 ? bytes : 0);
        }
    }
}

int64_t cr_amx_plan(panel_job *j, int64_t blocks, int threads) {
    const cr_linear *W = j->W;
    int64_t len = row_len(W->fmt, W->n_in), n_tasks = 1;
    /* Groups of panels whose two take at most half of CR_AMX_L2_BYTES, row ranges whose inputs
     * fill the rest, each range against all the groups; then, while that leaves under 4 tasks
     * per thread, shorter spans of groups, shorter ranges and fewer panels per group, in that
     * order. None changes a result bit: every output element is one chain over all of K in
     * block order, in one call or in pieces, and all of it in one task. */
    int64_t kb = len / CR_AMX_BLOCK_ELEMS(W->fmt), sides = j->glu ? 2 : 1; /* a GLU's group: gate and up */
    j->amx_kc = kb;
    for (;;) {
        int64_t row_bytes = j->amx_kc * CR_AMX_BLOCK_BYTES, block_bytes = CR_AMX_ROWS * row_bytes;
        j->amx_np = CR_AMX_PANELS;
        while (j->amx_np > 1 && 2 * sides * j->amx_np * CR_GEMM_NR * row_bytes > CR_AMX_L2_BYTES / 2) j->amx_np /= 2;
        int64_t room = CR_AMX_L2_BYTES - 2 * sides * j->amx_np * CR_GEMM_NR * row_bytes;
        j->amx_range = room > block_bytes ? room / block_bytes : 1;
        /* whole rows, unless they leave room for a single row block (K in pieces then) */
        if (j->amx_range >= 2 || j->amx_kc <= CR_AMX_K_BLOCKS) break;
        j->amx_kc = CR_AMX_K_BLOCKS;
    }
    j->amx_range = j->amx_range < blocks ? j->amx_range : blocks;
    j->amx_span = (j->n_panels + j->amx_np - 1) / j->amx_np;
    for (;;) {
        int64_t groups = (j->n_panels + j->amx_np - 1) / j->amx_np;
        n_tasks = (blocks + j->amx_range - 1) / j->amx_range * ((groups + j->amx_span - 1) / j->amx_span);
        if (n_tasks >= 4 * (int64_t)threads) break;
        if (j->amx_span > 1)
            j->amx_span = (j->amx_span + 1) / 2;
        else if (j->amx_range > 1)
            j->amx_range = (j->amx_range + 1) / 2;
        else if (j->amx_np > 1)
            j->amx_np /= 2;
        else
            break;
    }
    return n_tasks;
}
