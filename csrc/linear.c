/* linear.c — cr_linear_apply and weight packing.
 *
 * Panels (the default): W [n_out, n_in] is stored as ceil(n_out/NR) panels of [n_in][NR]
 * (zero-padded columns), so a microkernel streams one panel while a few rows of x are broadcast.
 * Work is split into (row block, panel) tasks on the pool. OpenBLAS (CROSSRANK_GEMM=openblas)
 * keeps the HF layout and runs sgemm from the calling thread while the pool is idle. */
#include "linear.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "kernels/kernels.h"
#include "threads.h"

/* OpenBLAS rows per call: the abort flag is seen between calls. */
#define CR_BLAS_ROW_BLOCK 512
/* Rows of x per task: with one panel ([n_in][32] floats) it stays in L2 for the seed shapes. */
#define CR_PANEL_ROW_BLOCK 48

static int use_openblas(void) {
    const char *v = getenv("CROSSRANK_GEMM");
    return v && strcmp(v, "openblas") == 0;
}

/* bf16 pair panels: panel p, pair q, column j holds (w[c, 2q], w[c, 2q+1]) for c = p NR + j,
 * zero past n_out and past n_in. */
static cr_status pack_bf16(cr_linear *W) {
    int64_t panels = (W->n_out + CR_GEMM_NR - 1) / CR_GEMM_NR, kp = (W->n_in + 1) / 2;
    size_t count;
    if (!cr_mul_size((size_t)panels * CR_GEMM_NR, (size_t)kp * 2, &count) ||
        !cr_mul_size(count, sizeof(uint16_t), &count))
        return cr_fail(CR_E_NOMEM, "packed weight size overflows");
    uint16_t *packed = cr_aligned_alloc(count, "packed bf16 weight");
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
    W->fmt = CR_FMT_BF16_PANELS;
    return CR_OK;
}

/* int8 panels: symmetric per output channel (scale = max|w_j| / 127, round to nearest), panel p,
 * group g, column j holding w[c, 4g .. 4g+3] for c = p NR + j; zero padding. */
static cr_status pack_i8(cr_linear *W) {
    int64_t panels = (W->n_out + CR_GEMM_NR - 1) / CR_GEMM_NR, kq = (W->n_in + 3) / 4;
    size_t count;
    if (!cr_mul_size((size_t)panels * CR_GEMM_NR, (size_t)kq * 4, &count))
        return cr_fail(CR_E_NOMEM, "packed weight size overflows");
    int8_t *packed = cr_aligned_alloc(count, "packed int8 weight");
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
        for (int64_t k = 0; k < W->n_in; k++) amax = fmaxf(amax, fabsf(row[k]));
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
    W->fmt = CR_FMT_I8_PANELS;
    return CR_OK;
}

cr_status cr_linear_pack(cr_linear *W, cr_dtype compute) {
    if (W->fmt != CR_FMT_F32_BLAS) return CR_OK;
    if (compute == CR_DT_BF16) return pack_bf16(W);
    if (compute == CR_DT_I8) {
        if (W->n_in >= 66000) /* int32 sums: K * 255 * 127 must stay below 2^31 */
            return cr_fail(CR_E_UNSUPPORTED, "int8 layers need fewer than 66000 inputs, got %lld",
                           (long long)W->n_in);
        return pack_i8(W);
    }
    if (use_openblas()) return CR_OK;
    int64_t panels = (W->n_out + CR_GEMM_NR - 1) / CR_GEMM_NR;
    size_t count;
    if (!cr_mul_size((size_t)panels * CR_GEMM_NR, (size_t)W->n_in, &count) ||
        !cr_mul_size(count, sizeof(float), &count))
        return cr_fail(CR_E_NOMEM, "packed weight size overflows");
    float *packed = cr_aligned_alloc(count, "packed weight");
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
    if (W->fmt == CR_FMT_I8_PANELS)
        return (W->n_out + CR_GEMM_NR - 1) / CR_GEMM_NR * CR_GEMM_NR * ((W->n_in + 3) / 4 * 4) +
               W->n_out * (int64_t)(2 * sizeof(float) + (W->bias ? sizeof(float) : 0));
    if (W->fmt == CR_FMT_BF16_PANELS)
        return (W->n_out + CR_GEMM_NR - 1) / CR_GEMM_NR * CR_GEMM_NR * ((W->n_in + 1) / 2 * 2) *
                   (int64_t)sizeof(uint16_t) + (W->bias ? W->n_out * (int64_t)sizeof(float) : 0);
    int64_t rows = W->fmt == CR_FMT_F32_PANELS ? (W->n_out + CR_GEMM_NR - 1) / CR_GEMM_NR * CR_GEMM_NR : W->n_out;
    return (rows * W->n_in + (W->bias ? W->n_out : 0)) * (int64_t)sizeof(float);
}

typedef struct panel_job {
    const cr_linear *W;
    const float *x;
    const uint16_t *xb; /* bf16 panels: x rounded to bf16, rows of 2 kp (zero-padded) */
    const uint8_t *xq;  /* int8 panels: x quantized + 128, rows of 4 kq */
    const float *xscale;/* int8 panels: per-row scale of xq */
    int64_t ldx, m;
    float *y;
    int64_t ldy;
    int64_t n_panels;
} panel_job;

static void add_bias(const float *bias, float *y, int64_t ldy, int64_t rows, int64_t cols) {
    if (!bias) return;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t c = 0; c < cols; c++) y[i * ldy + c] += bias[c];
}

/* Rows of one tile height of the active format. */
static int64_t tile_rows(cr_format fmt, const cr_kernels *K) {
    if (fmt == CR_FMT_BF16_PANELS) return K->gemm_bf16_mr;
    if (fmt == CR_FMT_I8_PANELS) return K->gemm_i8_mr <= 16 ? K->gemm_i8_mr : 16; /* see acc below */
    return K->gemm_mr;
}

/* y[r .. r+rows, c0 .. c0+cols) for panel p, in the job's weight format. */
static void tile(const panel_job *j, const cr_kernels *K, int64_t r, int64_t rows, int64_t p, int64_t c0,
                 int64_t cols) {
    const cr_linear *W = j->W;
    float *y = j->y + r * j->ldy + c0;
    if (W->fmt == CR_FMT_F32_PANELS) {
        K->gemm_f32_tile(j->x + r * j->ldx, j->ldx, rows, W->w + p * W->n_in * CR_GEMM_NR, W->n_in, y, j->ldy,
                         cols);
    } else if (W->fmt == CR_FMT_BF16_PANELS) {
        int64_t kp = (W->n_in + 1) / 2;
        K->gemm_bf16_tile(j->xb + r * 2 * kp, 2 * kp, rows, W->wb + p * kp * 2 * CR_GEMM_NR, kp, y, j->ldy, cols);
    } else {
        int64_t kq = (W->n_in + 3) / 4;
        int32_t acc[16 * CR_GEMM_NR];
        K->gemm_i8_tile(j->xq + r * 4 * kq, 4 * kq, rows, W->wq + p * kq * 4 * CR_GEMM_NR, kq, acc, CR_GEMM_NR,
                        cols);
        for (int64_t i = 0; i < rows; i++) {
            float sx = j->xscale[r + i];
            for (int64_t c = 0; c < cols; c++) {
                /* sum x_q w_q = acc - 128 colsum: the unsigned inputs carry an offset of 128 */
                int32_t exact = acc[i * CR_GEMM_NR + c] - 128 * W->colsum[c0 + c];
                y[i * j->ldy + c] = (float)exact * (sx * W->wscale[c0 + c]);
            }
        }
    }
    add_bias(W->bias ? W->bias + c0 : NULL, y, j->ldy, rows, cols);
}

/* One task: a block of CR_PANEL_ROW_BLOCK rows against one panel of CR_GEMM_NR columns. */
static void panel_task(void *ctx, int64_t task, int worker) {
    const panel_job *j = ctx;
    const cr_kernels *K = cr_kern;
    int64_t block = task / j->n_panels, p = task % j->n_panels;
    int64_t r0 = block * CR_PANEL_ROW_BLOCK;
    int64_t r1 = r0 + CR_PANEL_ROW_BLOCK < j->m ? r0 + CR_PANEL_ROW_BLOCK : j->m;
    int64_t c0 = p * CR_GEMM_NR;
    int64_t cols = j->W->n_out - c0 < CR_GEMM_NR ? j->W->n_out - c0 : CR_GEMM_NR;
    int64_t mr = tile_rows(j->W->fmt, K);
    for (int64_t r = r0; r < r1; r += mr) tile(j, K, r, r1 - r < mr ? r1 - r : mr, p, c0, cols);
}

static cr_status apply_blas(const cr_linear *W, const float *x, int64_t ldx, int64_t m, float *y,
                            int64_t ldy, const cr_exec *ex) {
    openblas_set_num_threads(ex->threads);
    for (int64_t r0 = 0; r0 < m; r0 += CR_BLAS_ROW_BLOCK) {
        if (cr_aborted(ex->abort)) return cr_fail(CR_E_ABORTED, "cancelled");
        int64_t rows = m - r0 < CR_BLAS_ROW_BLOCK ? m - r0 : CR_BLAS_ROW_BLOCK;
        float *yb = y + r0 * ldy;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)rows, (blasint)W->n_out,
                    (blasint)W->n_in, 1.0f, x + r0 * ldx, (blasint)ldx, W->w, (blasint)W->n_in,
                    0.0f, yb, (blasint)ldy);
        if (W->bias)
            for (int64_t r = 0; r < rows; r++)
                for (int64_t j = 0; j < W->n_out; j++) yb[r * ldy + j] += W->bias[j];
    }
    return CR_OK;
}

cr_status cr_linear_apply(const cr_linear *W, const float *x, int64_t ldx, int64_t m,
                          float *y, int64_t ldy, const cr_exec *ex) {
    if (m <= 0) return CR_OK;
    if (W->fmt == CR_FMT_F32_BLAS) return apply_blas(W, x, ldx, m, y, ldy, ex);
    panel_job j = {.W = W, .x = x, .ldx = ldx, .m = m, .y = y, .ldy = ldy,
                   .n_panels = (W->n_out + CR_GEMM_NR - 1) / CR_GEMM_NR};
    int64_t blocks = (m + CR_PANEL_ROW_BLOCK - 1) / CR_PANEL_ROW_BLOCK;
    if (W->fmt == CR_FMT_F32_PANELS)
        return cr_pool_run(ex->threads, blocks * j.n_panels, panel_task, &j, ex->abort);

    if (W->fmt == CR_FMT_I8_PANELS) {
        int64_t kq = (W->n_in + 3) / 4;
        size_t count;
        if (!cr_mul_size((size_t)m, (size_t)kq * 4, &count))
            return cr_fail(CR_E_NOMEM, "int8 input size overflows");
        uint8_t *xq = cr_aligned_alloc(count, "int8 inputs");
        float *xscale = cr_malloc_array((size_t)m, sizeof(float), "int8 input scales");
        if (!xq || !xscale) {
            free(xq);
            free(xscale);
            return CR_E_NOMEM;
        }
        /* Per-row (per-token) symmetric quantization; a row holding NaN or Inf gets a NaN scale,
         * so its outputs are NaN, not a plausible number. Padding bytes are the zero point. */
        for (int64_t r = 0; r < m; r++) {
            xscale[r] = cr_kern->quantize_u8(x + r * ldx, W->n_in, xq + r * 4 * kq);
            memset(xq + r * 4 * kq + W->n_in, 128, (size_t)(4 * kq - W->n_in));
        }
        j.xq = xq;
        j.xscale = xscale;
        cr_status st = cr_pool_run(ex->threads, blocks * j.n_panels, panel_task, &j, ex->abort);
        free(xq);
        free(xscale);
        return st;
    }

    /* bf16: round the inputs once per call, rows padded to whole pairs. */
    int64_t kp = (W->n_in + 1) / 2;
    size_t count;
    if (!cr_mul_size((size_t)m, (size_t)kp * 2 * sizeof(uint16_t), &count))
        return cr_fail(CR_E_NOMEM, "bf16 input size overflows");
    uint16_t *xb = cr_aligned_alloc(count, "bf16 inputs");
    if (!xb) return CR_E_NOMEM;
    for (int64_t r = 0; r < m; r++) {
        cr_kern->f32_to_bf16(x + r * ldx, xb + r * 2 * kp, W->n_in);
        if (W->n_in % 2) xb[r * 2 * kp + W->n_in] = 0;
    }
    j.xb = xb;
    cr_status st = cr_pool_run(ex->threads, blocks * j.n_panels, panel_task, &j, ex->abort);
    free(xb);
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
