/* linear.c — cr_linear_apply and weight packing.
 *
 * Panels (the default): W [n_out, n_in] is stored as ceil(n_out/NR) panels of [n_in][NR]
 * (zero-padded columns), so a microkernel streams one panel while a few rows of x are broadcast.
 * Work is split into (row block, panel) tasks on the pool. OpenBLAS (CROSSRANK_GEMM=openblas, in
 * builds that link it: blas.h) keeps the HF layout and runs sgemm from the calling thread while the
 * pool is idle. */
#include "linear.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "error.h"
#include "kernels/kernels.h"
#include "linear_job.h"
#include "threads.h"

/* OpenBLAS rows per call: the abort flag is seen between calls. */
#define CR_BLAS_ROW_BLOCK 512
/* Rows of x per task: with one panel ([n_in][32] floats) it stays in L2 for the seed shapes. */
#define CR_PANEL_ROW_BLOCK 48

static int use_openblas(void) {
    const char *v = getenv("CROSSRANK_GEMM");
    return v && strcmp(v, "openblas") == 0;
}

static cr_status blas_missing(void) {
    return cr_fail(CR_E_UNSUPPORTED,
                   "CROSSRANK_GEMM=openblas, but this build of crossrank has no OpenBLAS (binary wheels "
                   "ship without it: crossrank's own float32 kernels are faster). Unset CROSSRANK_GEMM, or "
                   "rebuild from source against OpenBLAS: install libopenblas-dev and pkg-config, then "
                   "CROSSRANK_BLAS=system pip install --no-binary crossrank --force-reinstall crossrank "
                   "(or CROSSRANK_BLAS=system pip install . in a clone)");
}

/* bf16 pair panels: panel p, pair q, column j holds (w[c, 2q], w[c, 2q+1]) for c = p NR + j,
 * zero past n_out and past n_in (and up to whole AMX blocks for fmt CR_FMT_BF16_AMX). */
static cr_status pack_bf16(cr_linear *W, cr_format fmt) {
    int64_t panels = (W->n_out + CR_GEMM_NR - 1) / CR_GEMM_NR, kp = row_len(fmt, W->n_in) / 2;
    size_t count;
    if (!cr_mul_size((size_t)panels * CR_GEMM_NR, (size_t)kp * 2, &count) ||
        !cr_mul_size(count, sizeof(uint16_t), &count))
        return cr_fail(CR_E_NOMEM, "packed weight size overflows");
    uint16_t *packed = cr_weight_alloc(count, "packed bf16 weight");
    if (!packed) return CR_E_NOMEM;
    for (int64_t p = 0; p < panels; p++) {
        uint16_t *panel = packed + p * kp * 2 * CR_GEMM_NR;
        for (int64_t j = 0; j < CR_GEMM_NR; j++) {
            int64_t c = p * CR_GEMM_NR + j;
            const float *row = c < W->n_out ? W->w + c * W->n_in : NULL;
            for (int64_t k = 0; k < 2 * kp; k++)
                panel[(k / 2) * 2 * CR_GEMM_NR + 2 * j + (k & 1)] =
                    row && k < W->n_in ? cr_f32_to_bf16_one(row[k]) : 0;
        }
    }
    free(W->w);
    W->w = NULL;
    W->wb = packed;
    W->fmt = fmt;
    return CR_OK;
}

/* int8 panels: symmetric per output channel (scale = max|w_j| / 127, round to nearest), panel p,
 * group g, column j holding w[c, 4g .. 4g+3] for c = p NR + j; zero padding (to whole AMX blocks
 * for fmt CR_FMT_I8_AMX). */
static cr_status pack_i8(cr_linear *W, cr_format fmt) {
    int64_t panels = (W->n_out + CR_GEMM_NR - 1) / CR_GEMM_NR, kq = row_len(fmt, W->n_in) / 4;
    size_t count;
    if (!cr_mul_size((size_t)panels * CR_GEMM_NR, (size_t)kq * 4, &count))
        return cr_fail(CR_E_NOMEM, "packed weight size overflows");
    int8_t *packed = cr_weight_alloc(count, "packed int8 weight");
    float *scale = cr_malloc_array((size_t)W->n_out, sizeof(float), "int8 weight scales");
    int32_t *colsum = cr_malloc_array((size_t)W->n_out, sizeof(int32_t), "int8 column sums");
    if (!packed || !scale || !colsum) {
        free(packed);
        free(scale);
        free(colsum);
        return CR_E_NOMEM;
    }
    memset(packed, 0, count);
    for (int64_t c = 0; c < W->n_out; c++) {
        const float *row = W->w + c * W->n_in;
        float amax = 0.0f;
        for (int64_t k = 0; k < W->n_in; k++) {
            /* fmaxf would skip a NaN (and is a libm call here): NaN must win, to poison the scale */
            float a = fabsf(row[k]);
            amax = a > amax || a != a ? a : amax;
        }
        float s = amax > 0.0f && isfinite(amax) ? amax / 127.0f : 1.0f;
        scale[c] = isfinite(amax) ? s : NAN; /* a non-finite weight poisons its channel visibly */
        int32_t sum = 0;
        int8_t *panel = packed + (c / CR_GEMM_NR) * kq * 4 * CR_GEMM_NR;
        int64_t j = c % CR_GEMM_NR;
        for (int64_t k = 0; k < W->n_in; k++) {
            float q = isfinite(amax) ? nearbyintf(row[k] / s) : 0.0f;
            int8_t v = (int8_t)(q > 127.0f ? 127 : q < -127.0f ? -127 : q);
            panel[(k / 4) * 4 * CR_GEMM_NR + 4 * j + (k & 3)] = v;
            sum += v;
        }
        colsum[c] = sum;
    }
    free(W->w);
    W->w = NULL;
    W->wq = packed;
    W->wscale = scale;
    W->colsum = colsum;
    W->fmt = fmt;
    return CR_OK;
}

cr_status cr_linear_pack(cr_linear *W, cr_dtype compute) {
    if (W->fmt != CR_FMT_F32_BLAS) return CR_OK;
    /* the first bf16 / int8 pack is the first AMX use: the permission is asked there, once */
    if (compute == CR_DT_BF16) return pack_bf16(W, cr_amx_usable() ? CR_FMT_BF16_AMX : CR_FMT_BF16_PANELS);
    if (compute == CR_DT_I8) {
        if (W->n_in >= 66000) /* int32 sums: K * 255 * 127 must stay below 2^31 */
            return cr_fail(CR_E_UNSUPPORTED, "int8 layers need fewer than 66000 inputs, got %lld",
                           (long long)W->n_in);
        return pack_i8(W, cr_amx_usable() ? CR_FMT_I8_AMX : CR_FMT_I8_PANELS);
    }
    if (use_openblas()) return cr_blas_name() ? CR_OK : blas_missing();
    int64_t panels = (W->n_out + CR_GEMM_NR - 1) / CR_GEMM_NR;
    size_t count;
    if (!cr_mul_size((size_t)panels * CR_GEMM_NR, (size_t)W->n_in, &count) ||
        !cr_mul_size(count, sizeof(float), &count))
        return cr_fail(CR_E_NOMEM, "packed weight size overflows");
    float *packed = cr_weight_alloc(count, "packed weight");
    if (!packed) return CR_E_NOMEM;
    for (int64_t p = 0; p < panels; p++) {
        float *panel = packed + p * W->n_in * CR_GEMM_NR;
        int64_t cols = W->n_out - p * CR_GEMM_NR < CR_GEMM_NR ? W->n_out - p * CR_GEMM_NR : CR_GEMM_NR;
        for (int64_t k = 0; k < W->n_in; k++) {
            float *dst = panel + k * CR_GEMM_NR;
            for (int64_t j = 0; j < cols; j++) dst[j] = W->w[(p * CR_GEMM_NR + j) * W->n_in + k];
            for (int64_t j = cols; j < CR_GEMM_NR; j++) dst[j] = 0.0f;
        }
    }
    free(W->w);
    W->w = packed;
    W->fmt = CR_FMT_F32_PANELS;
    return CR_OK;
}

int64_t cr_linear_bytes(const cr_linear *W) {
    if (W->fmt == CR_FMT_I8_PANELS || W->fmt == CR_FMT_I8_AMX)
        return (W->n_out + CR_GEMM_NR - 1) / CR_GEMM_NR * CR_GEMM_NR * row_len(W->fmt, W->n_in) +
               W->n_out * (int64_t)(2 * sizeof(float) + (W->bias ? sizeof(float) : 0));
    if (W->fmt == CR_FMT_BF16_PANELS || W->fmt == CR_FMT_BF16_AMX)
        return (W->n_out + CR_GEMM_NR - 1) / CR_GEMM_NR * CR_GEMM_NR * row_len(W->fmt, W->n_in) *
                   (int64_t)sizeof(uint16_t) + (W->bias ? W->n_out * (int64_t)sizeof(float) : 0);
    int64_t rows = W->fmt == CR_FMT_F32_PANELS ? (W->n_out + CR_GEMM_NR - 1) / CR_GEMM_NR * CR_GEMM_NR : W->n_out;
    return (rows * W->n_in + (W->bias ? W->n_out : 0)) * (int64_t)sizeof(float);
}

/* Rows of one tile height of the active format. */
static int64_t tile_rows(cr_format fmt, const cr_kernels *K) {
    if (fmt == CR_FMT_BF16_PANELS) return K->gemm_bf16_mr;
    if (fmt == CR_FMT_I8_PANELS) return K->gemm_i8_mr <= 16 ? K->gemm_i8_mr : 16; /* see acc below */
    return K->gemm_mr;
}

void cr_linear_i8_finish(const panel_job *j, const cr_kernels *K, int64_t r, int64_t rows, const int8_t *panel,
                         int64_t c0, int64_t cols, const int32_t *acc, int64_t ldacc, float *y, int64_t ldy) {
    /* Local restrict pointers: through W-> the compiler must assume each store to y may change
     * them, reloads them every column and leaves the loop scalar. */
    const int32_t *restrict colsum = j->W->colsum + c0;
    const float *restrict wscale = j->W->wscale + c0;
    if (acc && K->i8_dequant_f32) {
        K->i8_dequant_f32(acc, ldacc, rows, cols, j->q8.scale + r, colsum, wscale, y, ldy);
    } else if (acc) {
        for (int64_t i = 0; i < rows; i++) {
            float sx = j->q8.scale[r + i], *restrict yr = y + i * ldy;
            const int32_t *restrict acc_row = acc + i * ldacc;
            for (int64_t c = 0; c < cols; c++) {
                /* sum x_q w_q = acc - 128 colsum: the unsigned inputs carry an offset of 128 */
                int32_t exact = acc_row[c] - 128 * colsum[c];
                yr[c] = (float)exact * (sx * wscale[c]);
            }
        }
    }
    for (int64_t i = 0; i < rows; i++)
        if (j->q8.n_outliers[r + i])
            K->i8_outliers_f32(panel, j->q8.outlier_k + (r + i) * CR_I8_MAX_OUTLIERS,
                               j->q8.outlier_x + (r + i) * CR_I8_MAX_OUTLIERS, j->q8.n_outliers[r + i], wscale,
                               y + i * ldy, cols);
}

/* Rows r .. r+rows, columns c0 .. c0+cols of the output, panel p, into y (row stride ldy, at row r
 * and column c0), in the job's weight format (not the AMX ones). */
static void tile(const panel_job *j, const cr_kernels *K, int64_t r, int64_t rows, int64_t p, int64_t c0,
                 int64_t cols, float *y, int64_t ldy) {
    const cr_linear *W = j->W;
    if (W->fmt == CR_FMT_F32_PANELS) {
        K->gemm_f32_tile(j->x + r * j->ldx, j->ldx, rows, W->w + p * W->n_in * CR_GEMM_NR, W->n_in, y, ldy, cols);
    } else if (W->fmt == CR_FMT_BF16_PANELS) {
        int64_t len = row_len(W->fmt, W->n_in);
        K->gemm_bf16_tile(j->xb + r * len, len, rows, W->wb + p * len * CR_GEMM_NR, len / 2, y, ldy, cols);
    } else {
        int64_t len = row_len(W->fmt, W->n_in), kq = len / 4;
        const int8_t *panel = W->wq + p * len * CR_GEMM_NR;
        const int32_t *colsum = W->colsum + c0;
        const float *wscale = W->wscale + c0;
        if (K->gemm_i8_tile_f32) {
            K->gemm_i8_tile_f32(j->q8.q + r * len, len, rows, panel, kq, y, ldy, cols, j->q8.scale + r, colsum,
                                wscale);
            cr_linear_i8_finish(j, K, r, rows, panel, c0, cols, NULL, 0, y, ldy);
        } else {
            int32_t acc[16 * CR_GEMM_NR];
            K->gemm_i8_tile(j->q8.q + r * len, len, rows, panel, kq, acc, CR_GEMM_NR, cols);
            cr_linear_i8_finish(j, K, r, rows, panel, c0, cols, acc, CR_GEMM_NR, y, ldy);
        }
    }
    add_bias(W->bias ? W->bias + c0 : NULL, y, ldy, rows, cols);
}

static int64_t block_rows(cr_format fmt) { return is_amx(fmt) ? CR_AMX_ROWS : CR_PANEL_ROW_BLOCK; }

/* One task: a block of block_rows() rows against one panel of CR_GEMM_NR columns; with a GLU, gate
 * panel p and its up panel, a tile height at a time into the worker's stack, then h. */
static void panel_task(void *ctx, int64_t task, int worker) {
    const panel_job *j = ctx;
    const cr_kernels *K = cr_kern;
    int64_t block = task / j->n_panels, p = task % j->n_panels, rb = block_rows(j->W->fmt);
    int64_t r0 = block * rb;
    int64_t r1 = r0 + rb < j->m ? r0 + rb : j->m;
    int64_t c0 = p * CR_GEMM_NR, mr = tile_rows(j->W->fmt, K);
    if (j->glu) {
        if (mr > 16) mr = 16; /* the stack tiles' height (every table's is at most 12) */
        int64_t cols = j->glu->n - c0 < CR_GEMM_NR ? j->glu->n - c0 : CR_GEMM_NR, up = j->up_panel + p;
        float g[16 * CR_GEMM_NR], u[16 * CR_GEMM_NR];
        for (int64_t r = r0; r < r1; r += mr) {
            int64_t rows = r1 - r < mr ? r1 - r : mr;
            tile(j, K, r, rows, p, c0, CR_GEMM_NR, g, CR_GEMM_NR);
            tile(j, K, r, rows, up, up * CR_GEMM_NR, CR_GEMM_NR, u, CR_GEMM_NR);
            cr_glu_block(j->glu, r, rows, c0, cols, g, u, CR_GEMM_NR);
        }
        return;
    }
    int64_t cols = j->W->n_out - c0 < CR_GEMM_NR ? j->W->n_out - c0 : CR_GEMM_NR;
    for (int64_t r = r0; r < r1; r += mr)
        tile(j, K, r, r1 - r < mr ? r1 - r : mr, p, c0, cols, j->y + r * j->ldy + c0, j->ldy);
}

/* Rows of x per conversion task: the inputs are rounded (bf16) or quantized (int8) on the pool,
 * since on the calling thread alone that pass left the other workers idle. */
#define CR_CONVERT_ROWS 32

/* One conversion task: rows [task CR_CONVERT_ROWS, ...) of x into the job's bf16 or int8 rows. */
static void convert_task(void *ctx, int64_t task, int worker) {
    const panel_job *j = ctx;
    const cr_linear *W = j->W;
    int64_t r0 = task * CR_CONVERT_ROWS, r1 = r0 + CR_CONVERT_ROWS < j->m ? r0 + CR_CONVERT_ROWS : j->m;
    int64_t len = row_len(W->fmt, W->n_in);
    if (W->fmt == CR_FMT_I8_PANELS || W->fmt == CR_FMT_I8_AMX) {
        for (int64_t r = r0; r < r1; r++)
            cr_linear_quantize_row(W, j->x + r * j->ldx, j->scratch + (int64_t)worker * W->n_in, &j->q8, r,
                                   is_amx(W->fmt) ? (uint8_t *)j->row_tmp + (int64_t)worker * len : NULL);
        return;
    }
    for (int64_t r = r0; r < r1; r++)
        cr_linear_round_row(W, j->x + r * j->ldx, j->xb, r,
                            is_amx(W->fmt) ? (uint16_t *)j->row_tmp + (int64_t)worker * len : NULL);
}

static cr_status apply_blas(const cr_linear *W, const float *x, int64_t ldx, int64_t m, float *y,
                            int64_t ldy, const cr_exec *ex) {
    if (!cr_blas_name()) return blas_missing();
    for (int64_t r0 = 0; r0 < m; r0 += CR_BLAS_ROW_BLOCK) {
        if (cr_aborted(ex->abort)) return cr_fail(CR_E_ABORTED, "cancelled");
        int64_t rows = m - r0 < CR_BLAS_ROW_BLOCK ? m - r0 : CR_BLAS_ROW_BLOCK;
        float *yb = y + r0 * ldy;
        cr_blas_sgemm_xwt(rows, W->n_out, W->n_in, x + r0 * ldx, ldx, W->w, yb, ldy, ex->threads);
        if (W->bias)
            for (int64_t r = 0; r < rows; r++)
                for (int64_t j = 0; j < W->n_out; j++) yb[r * ldy + j] += W->bias[j];
    }
    return CR_OK;
}

/* Slots of a cr_linear_scratch, one per buffer of a call. */
enum { WS_AMX_OUT, WS_ROW_TMP, WS_INPUTS, WS_XSCALE, WS_N_OUTLIERS, WS_OUTLIER_K, WS_OUTLIER_X, WS_ROW_SCRATCH,
       WS_GLU_SUMS, WS_GLU_TMP };

/* count x size bytes of the call's workspace, 64-byte aligned: the exec's scratch slot, grown to
 * fit (its old contents not kept), or without a scratch a fresh allocation that ws_done frees. */
static void *ws_get(const cr_exec *ex, int slot, size_t count, size_t size, const char *what) {
    if (ex->scratch) return cr_buf_get(&ex->scratch->buf[slot], count, size, 0, what);
    size_t bytes;
    if (!cr_mul_size(count, size, &bytes)) {
        cr_fail(CR_E_NOMEM, "size of %s overflows", what);
        return NULL;
    }
    return cr_aligned_alloc(bytes, what);
}

static void ws_done(const cr_exec *ex, void *buf) {
    if (!ex->scratch) free(buf);
}

void cr_linear_scratch_free(cr_linear_scratch *s) {
    for (int i = 0; i < CR_LINEAR_SCRATCH_SLOTS; i++) cr_buf_free(&s->buf[i]);
}

/* cr_linear_apply, or with glu cr_linear_apply_glu where the job can turn its sums into h itself
 * (the panel formats; AMX while each task sums all of K at once). */
static cr_status apply(const cr_linear *W, const cr_linear_in *in, int64_t m, float *y, int64_t ldy, const cr_glu *glu,
                       const cr_exec *ex) {
    if (m <= 0) return CR_OK;
    if (W->fmt == CR_FMT_F32_BLAS) return apply_blas(W, in->x, in->ldx, m, y, ldy, ex);
    const uint16_t *xb_given = in->xb;
    const cr_i8_rows *q8_given = in->q8;
    panel_job j = {.W = W, .x = in->x, .ldx = in->ldx, .m = m, .y = y, .ldy = ldy, .glu = glu,
                   .n_panels = (W->n_out + CR_GEMM_NR - 1) / CR_GEMM_NR};
    if (glu) { /* tasks over the gate panels that h needs, each with its up panel */
        j.up_panel = W->n_out / 2 / CR_GEMM_NR;
        j.n_panels = (glu->n + CR_GEMM_NR - 1) / CR_GEMM_NR;
    }
    int64_t blocks = (m + block_rows(W->fmt) - 1) / block_rows(W->fmt);
    if (W->fmt == CR_FMT_F32_PANELS)
        return cr_pool_run(ex->threads, blocks * j.n_panels, panel_task, &j, ex->abort);
    /* AMX formats exist only once the permission was granted, and then the AMX table (with its
     * epilogue entries) is the active one; never run tiles without both */
    if (is_amx(W->fmt) && (!cr_amx_usable() || !cr_kern->i8_dequant_f32 || !cr_kern->store_rows_stream))
        return cr_fail(CR_E_UNSUPPORTED, "this layer was packed for AMX tiles, which this process may not use");
    int64_t len = row_len(W->fmt, W->n_in);
    /* AMX: the converted rows are padded with zero rows to a multiple of 16 (tile loads read whole
     * 16-row groups), tasks are (row range, span of panel groups), each worker has its own out block
     * (with a GLU two: gate and up) */
    int64_t m_rows = is_amx(W->fmt) ? (m + 15) / 16 * 16 : m;
    int i8 = W->fmt == CR_FMT_I8_PANELS || W->fmt == CR_FMT_I8_AMX, given = xb_given || q8_given, ok = 1;
    int64_t n_tasks = blocks * j.n_panels;
    cr_task_fn task_fn = panel_task;
    if (is_amx(W->fmt)) {
        n_tasks = cr_amx_plan(&j, blocks, ex->threads);
        task_fn = cr_amx_task;
        j.amx_out = ws_get(ex, WS_AMX_OUT, (size_t)ex->threads * (glu ? 2 : 1),
                           CR_AMX_PANELS * CR_AMX_ROWS * CR_GEMM_NR * sizeof(float), "AMX accumulators");
        /* the conversion's one row per worker; rows their producer wrote need none */
        if (!given) j.row_tmp = ws_get(ex, WS_ROW_TMP, (size_t)ex->threads, (size_t)len * sizeof(uint16_t),
                                       "AMX row scratch");
        ok = j.amx_out && (given || j.row_tmp);
    }
    if (i8 && q8_given) {
        j.q8 = *q8_given;
    } else if (i8 && ok) {
        ok = (j.q8.q = ws_get(ex, WS_INPUTS, (size_t)m_rows, (size_t)len, "int8 inputs")) &&
             (j.q8.scale = ws_get(ex, WS_XSCALE, (size_t)m, sizeof(float), "int8 input scales")) &&
             (j.q8.n_outliers = ws_get(ex, WS_N_OUTLIERS, (size_t)m, sizeof(int32_t), "int8 outlier counts")) &&
             (j.q8.outlier_k = ws_get(ex, WS_OUTLIER_K, (size_t)m * CR_I8_MAX_OUTLIERS, sizeof(int32_t),
                                   "int8 outlier indices")) &&
             (j.q8.outlier_x = ws_get(ex, WS_OUTLIER_X, (size_t)m * CR_I8_MAX_OUTLIERS, sizeof(float),
                                   "int8 outlier values")) &&
             (j.scratch = ws_get(ex, WS_ROW_SCRATCH, (size_t)ex->threads, (size_t)W->n_in * sizeof(float),
                                 "int8 row scratch"));
        /* the part-filled last 16-row group (tile order keeps it contiguous): zero rows */
        if (ok) memset(j.q8.q + m / 16 * 16 * len, 0, (size_t)((m_rows - m / 16 * 16) * len));
    } else if (xb_given) {
        j.xb = (uint16_t *)xb_given;
    } else if (ok) {
        /* bf16: the inputs rounded once per call, rows padded to whole pairs (AMX: whole blocks) */
        ok = (j.xb = ws_get(ex, WS_INPUTS, (size_t)m_rows, (size_t)len * sizeof(uint16_t), "bf16 inputs")) != NULL;
        if (ok) memset(j.xb + m / 16 * 16 * len, 0, (size_t)((m_rows - m / 16 * 16) * len) * sizeof(uint16_t));
    }
    cr_status st = ok ? CR_OK : CR_E_NOMEM;
    if (st == CR_OK && !given)
        st = cr_pool_run(ex->threads, (m + CR_CONVERT_ROWS - 1) / CR_CONVERT_ROWS, convert_task, &j, ex->abort);
    if (st == CR_OK) st = cr_pool_run(ex->threads, n_tasks, task_fn, &j, ex->abort);
    ws_done(ex, j.amx_out);
    ws_done(ex, j.row_tmp);
    if (!given) {
        ws_done(ex, j.xb);
        ws_done(ex, j.q8.q);
        ws_done(ex, j.q8.scale);
        ws_done(ex, j.q8.n_outliers);
        ws_done(ex, j.q8.outlier_k);
        ws_done(ex, j.q8.outlier_x);
        ws_done(ex, j.scratch);
    }
    return st;
}

/* One input form given, and the layer able to take it. */
static cr_status check_in(const cr_linear *W, const cr_linear_in *in) {
    if (!!in->x + !!in->xb + !!in->q8 != 1) return cr_fail(CR_E_ARG, "linear: give exactly one form of the inputs");
    if (in->xb && !cr_linear_takes_bf16_rows(W)) return cr_fail(CR_E_ARG, "this layer does not take bfloat16 rows");
    if (in->q8 && !cr_linear_takes_i8_rows(W)) return cr_fail(CR_E_ARG, "this layer does not take int8 rows");
    return CR_OK;
}

cr_status cr_linear_apply(const cr_linear *W, const cr_linear_in *in, int64_t m, float *y, int64_t ldy,
                          const cr_exec *ex) {
    cr_status st = check_in(W, in);
    return st ? st : apply(W, in, m, y, ldy, NULL, ex);
}

/* Whether a job on this layer computes the GLU in its tasks: not on OpenBLAS; the panel formats
 * always; AMX while its plan sums all of K in one call (K in pieces accumulates in y, which a
 * fused call has not). */
static int glu_fuses(const cr_linear *W, const cr_glu *glu, int64_t m, const cr_exec *ex) {
    if (W->fmt == CR_FMT_F32_BLAS) return 0;
    if (!is_amx(W->fmt)) return 1;
    panel_job probe = {.W = W, .m = m, .glu = glu, .n_panels = (glu->n + CR_GEMM_NR - 1) / CR_GEMM_NR};
    cr_amx_plan(&probe, (m + CR_AMX_ROWS - 1) / CR_AMX_ROWS, ex->threads);
    return probe.amx_kc * CR_AMX_BLOCK_ELEMS(W->fmt) >= row_len(W->fmt, W->n_in);
}

/* One destination for h, and a layer `to` of n inputs that takes it. */
static int glu_valid(const cr_linear *W, const cr_glu *glu) {
    if (W->n_out % (2 * CR_GEMM_NR) || glu->n < 1 || glu->n > W->n_out / 2) return 0;
    if (!!glu->rows + !!glu->q8 + !!glu->h != 1) return 0;
    if (glu->h) return glu->ldh >= glu->n;
    return glu->to && glu->to->n_in == glu->n &&
           (glu->rows ? cr_linear_takes_bf16_rows(glu->to) : cr_linear_takes_i8_rows(glu->to));
}

cr_status cr_linear_apply_glu(const cr_linear *W, const cr_linear_in *in, int64_t m, const cr_glu *glu,
                              const cr_exec *ex) {
    cr_status st = check_in(W, in);
    if (st) return st;
    if (!glu_valid(W, glu))
        return cr_fail(CR_E_ARG, "GLU: %lld columns of h from a gate|up layer of %lld outputs, which needs two "
                       "halves of whole %d-column panels and one destination that takes them",
                       (long long)glu->n, (long long)W->n_out, CR_GEMM_NR);
    int fused = glu_fuses(W, glu, m, ex);
    if (fused && !glu->q8) return apply(W, in, m, NULL, 0, glu, ex);
    /* int8 rows: h as float32 rows (fused) or the sums (not), then each row whole from them */
    int64_t cols = fused ? glu->n : W->n_out;
    float *rows = ws_get(ex, WS_GLU_SUMS, (size_t)(m > 0 ? m : 1), (size_t)cols * sizeof(float),
                         fused ? "GLU activations" : "gate|up sums");
    uint8_t *tmp = glu->q8 ? ws_get(ex, WS_GLU_TMP, (size_t)ex->threads, (size_t)cr_linear_row_elems(glu->to),
                                    "int8 row scratch")
                           : NULL;
    if (rows && (tmp || !glu->q8)) {
        cr_glu to_h = {.act = glu->act, .n = glu->n, .h = rows, .ldh = cols};
        st = fused ? apply(W, in, m, NULL, 0, &to_h, ex) : apply(W, in, m, rows, cols, NULL, ex);
        if (st == CR_OK && m > 0) st = cr_glu_rows(glu, rows, cols, fused ? -1 : W->n_out / 2, m, tmp, ex);
    } else {
        st = CR_E_NOMEM;
    }
    ws_done(ex, rows);
    ws_done(ex, tmp);
    return st;
}

void cr_linear_free(cr_linear *W) {
    if (!W) return;
    free(W->w);
    free(W->wb);
    free(W->wq);
    free(W->wscale);
    free(W->colsum);
    free(W->bias);
    W->w = NULL;
    W->wb = NULL;
    W->wq = NULL;
    W->wscale = NULL;
    W->colsum = NULL;
    W->bias = NULL;
}
