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
#include "threads.h"

/* OpenBLAS rows per call: the abort flag is seen between calls. */
#define CR_BLAS_ROW_BLOCK 512
/* Rows of x per task: with one panel ([n_in][32] floats) it stays in L2 for the seed shapes. */
#define CR_PANEL_ROW_BLOCK 48

/* int8 inputs: one per-token scale cannot serve a row whose few huge entries (the outlier
 * channels of real LLMs, e.g. at down_proj's inputs) are tens of times the rest: the rest would
 * round to a handful of levels. Such entries, above CR_I8_OUTLIER_RATIO times the row's mean
 * |x|, are taken out of the quantized row (at most CR_I8_MAX_OUTLIERS per row, the largest) and
 * applied in float32 against the dequantized int8 weights. A Gaussian row never has one
 * (12 mean|x| is 9.6 sigma), so ordinary rows cost one extra read. */
#define CR_I8_OUTLIER_RATIO 12.0f
#define CR_I8_MAX_OUTLIERS 16

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

static int is_amx(cr_format fmt) { return fmt == CR_FMT_BF16_AMX || fmt == CR_FMT_I8_AMX; }

/* Elements of one converted input row, which is also the K extent (in elements, padding
 * included) of one packed panel: a panel holds row_len(fmt) x CR_GEMM_NR weights. */
static int64_t row_len(cr_format fmt, int64_t n_in) {
    switch (fmt) {
    case CR_FMT_BF16_PANELS: return (n_in + 1) / 2 * 2;
    case CR_FMT_BF16_AMX: return (n_in + CR_AMX_BF16_K - 1) / CR_AMX_BF16_K * CR_AMX_BF16_K;
    case CR_FMT_I8_PANELS: return (n_in + 3) / 4 * 4;
    case CR_FMT_I8_AMX: return (n_in + CR_AMX_I8_K - 1) / CR_AMX_I8_K * CR_AMX_I8_K;
    default: return n_in;
    }
}

/* bf16 pair panels: panel p, pair q, column j holds (w[c, 2q], w[c, 2q+1]) for c = p NR + j,
 * zero past n_out and past n_in (and up to whole AMX blocks for fmt CR_FMT_BF16_AMX). */
static cr_status pack_bf16(cr_linear *W, cr_format fmt) {
    int64_t panels = (W->n_out + CR_GEMM_NR - 1) / CR_GEMM_NR, kp = row_len(fmt, W->n_in) / 2;
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
    if (W->fmt == CR_FMT_I8_PANELS || W->fmt == CR_FMT_I8_AMX)
        return (W->n_out + CR_GEMM_NR - 1) / CR_GEMM_NR * CR_GEMM_NR * row_len(W->fmt, W->n_in) +
               W->n_out * (int64_t)(2 * sizeof(float) + (W->bias ? sizeof(float) : 0));
    if (W->fmt == CR_FMT_BF16_PANELS || W->fmt == CR_FMT_BF16_AMX)
        return (W->n_out + CR_GEMM_NR - 1) / CR_GEMM_NR * CR_GEMM_NR * row_len(W->fmt, W->n_in) *
                   (int64_t)sizeof(uint16_t) + (W->bias ? W->n_out * (int64_t)sizeof(float) : 0);
    int64_t rows = W->fmt == CR_FMT_F32_PANELS ? (W->n_out + CR_GEMM_NR - 1) / CR_GEMM_NR * CR_GEMM_NR : W->n_out;
    return (rows * W->n_in + (W->bias ? W->n_out : 0)) * (int64_t)sizeof(float);
}

typedef struct panel_job {
    const cr_linear *W;
    const float *x;
    uint16_t *xb;       /* bf16 formats: x rounded to bf16, rows of row_len (zero-padded) */
    uint8_t *xq;        /* int8 formats: x quantized + 128, rows of row_len */
    float *xscale;      /* int8 panels: per-row scale of xq */
    int32_t *n_outliers;/* int8 panels: per row, how many inputs were taken out of xq ... */
    int32_t *outlier_k; /* ... their input indices, CR_I8_MAX_OUTLIERS per row ... */
    float *outlier_x;   /* ... and their float32 values */
    float *scratch;     /* int8 panels: one row of n_in floats per worker */
    int64_t ldx, m;
    float *y;
    int64_t ldy;
    int64_t n_panels;
    void *amx_out;      /* AMX formats: one [CR_AMX_PANELS][CR_AMX_ROWS][CR_GEMM_NR] block per worker */
    int64_t amx_np;     /* AMX formats: panels per group (CR_AMX_PANELS, fewer for long K or few tasks) */
    int64_t amx_range;  /* AMX formats: row blocks per task, which meet the task's panels in turn */
    int64_t amx_span;   /* AMX formats: panel groups per task */
    int64_t amx_kc;     /* AMX formats: blocks of K summed at a time (all of them unless K is long) */
    void *row_tmp;      /* AMX formats: one converted row (row_len elements) per worker; xb / xq are
                         * in the tile order of kernels.h, zero rows up to a multiple of 16 */
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

/* The rest of an int8 tile of rows r .. r+rows, columns c0 .. c0+cols of one panel, into y (row
 * stride ldy, at row r and column c0): the epilogue of gemm_i8_tile_f32 in C (the same operations,
 * so the same bits) from the exact sums acc (row stride ldacc; NULL when y holds the dequantized
 * sums already; acc may be y itself only where K->i8_dequant_f32 exists), then the rows' outlier
 * inputs in float32 against the (dequantized) int8 weights. */
static void i8_finish(const panel_job *j, const cr_kernels *K, int64_t r, int64_t rows, const int8_t *panel,
                      int64_t c0, int64_t cols, const int32_t *acc, int64_t ldacc, float *y, int64_t ldy) {
    /* Local restrict pointers: through W-> the compiler must assume each store to y may change
     * them, reloads them every column and leaves the loop scalar. */
    const int32_t *restrict colsum = j->W->colsum + c0;
    const float *restrict wscale = j->W->wscale + c0;
    if (acc && K->i8_dequant_f32) {
        K->i8_dequant_f32(acc, ldacc, rows, cols, j->xscale + r, colsum, wscale, y, ldy);
    } else if (acc) {
        for (int64_t i = 0; i < rows; i++) {
            float sx = j->xscale[r + i], *restrict yr = y + i * ldy;
            const int32_t *restrict acc_row = acc + i * ldacc;
            for (int64_t c = 0; c < cols; c++) {
                /* sum x_q w_q = acc - 128 colsum: the unsigned inputs carry an offset of 128 */
                int32_t exact = acc_row[c] - 128 * colsum[c];
                yr[c] = (float)exact * (sx * wscale[c]);
            }
        }
    }
    for (int64_t i = 0; i < rows; i++)
        if (j->n_outliers[r + i])
            K->i8_outliers_f32(panel, j->outlier_k + (r + i) * CR_I8_MAX_OUTLIERS,
                               j->outlier_x + (r + i) * CR_I8_MAX_OUTLIERS, j->n_outliers[r + i], wscale,
                               y + i * ldy, cols);
}

/* y[r .. r+rows, c0 .. c0+cols) for panel p, in the job's weight format (not the AMX ones). */
static void tile(const panel_job *j, const cr_kernels *K, int64_t r, int64_t rows, int64_t p, int64_t c0,
                 int64_t cols) {
    const cr_linear *W = j->W;
    float *y = j->y + r * j->ldy + c0;
    if (W->fmt == CR_FMT_F32_PANELS) {
        K->gemm_f32_tile(j->x + r * j->ldx, j->ldx, rows, W->w + p * W->n_in * CR_GEMM_NR, W->n_in, y, j->ldy,
                         cols);
    } else if (W->fmt == CR_FMT_BF16_PANELS) {
        int64_t len = row_len(W->fmt, W->n_in);
        K->gemm_bf16_tile(j->xb + r * len, len, rows, W->wb + p * len * CR_GEMM_NR, len / 2, y, j->ldy, cols);
    } else {
        int64_t len = row_len(W->fmt, W->n_in), kq = len / 4;
        const int8_t *panel = W->wq + p * len * CR_GEMM_NR;
        const int32_t *colsum = W->colsum + c0;
        const float *wscale = W->wscale + c0;
        if (K->gemm_i8_tile_f32) {
            K->gemm_i8_tile_f32(j->xq + r * len, len, rows, panel, kq, y, j->ldy, cols, j->xscale + r,
                                colsum, wscale);
            i8_finish(j, K, r, rows, panel, c0, cols, NULL, 0, y, j->ldy);
        } else {
            int32_t acc[16 * CR_GEMM_NR];
            K->gemm_i8_tile(j->xq + r * len, len, rows, panel, kq, acc, CR_GEMM_NR, cols);
            i8_finish(j, K, r, rows, panel, c0, cols, acc, CR_GEMM_NR, y, j->ldy);
        }
    }
    add_bias(W->bias ? W->bias + c0 : NULL, y, j->ldy, rows, cols);
}

/* Bytes of L2 one AMX task plans for: its row range's converted inputs and two panel groups of
 * weights (the one it computes, the next one on its way in), sized for the 2 MiB L2 of the cores
 * that have AMX (Sapphire, Emerald and Granite Rapids) with room for the worker's result block. */
#define CR_AMX_L2_BYTES (3 << 19)

/* K elements of one AMX block (one 64-byte tile row of a row of inputs, 16 of them per block of a
 * weight column pair / quad: 64 bytes per row or column either way). */
#define CR_AMX_BLOCK_ELEMS(fmt) ((fmt) == CR_FMT_BF16_AMX ? CR_AMX_BF16_K : CR_AMX_I8_K)
#define CR_AMX_BLOCK_BYTES 64

/* Blocks of K one AMX task sums at a time when whole rows leave room in L2 for a single row block
 * beside two groups of one panel (K from ~6,000 bf16: the down projections of the 4B and 8B
 * shapes), which then read their inputs from L3 again for every 32 columns. In pieces of 32 blocks
 * (2 KiB per row), ranges and groups keep their K = 1024 sizes; the price is the sums, stored to y
 * and loaded again once per piece, which measured slower than whole rows where those still fit
 * ranges of two blocks (K = 2048 and 3072 at 0.6B, 4096 at 8B). */
#define CR_AMX_K_BLOCKS 32

static int64_t block_rows(cr_format fmt) { return is_amx(fmt) ? CR_AMX_ROWS : CR_PANEL_ROW_BLOCK; }

/* A block of CR_AMX_ROWS rows from row r against the panel group from p0 (one kernel call) into
 * the worker's own block, each panel's epilogue there (int8: dequantization and outliers in place;
 * bias), then the finished rows to y. y is written once and read by the next step of the forward:
 * the rows go out with stores that skip this core's caches, so the weights and inputs still to be
 * used stay in L2 and no line of y is first read from memory. `next` / `next_bytes`: weights the
 * worker reads after this block, asked into L2 during it. */
static void amx_block(const panel_job *j, int64_t r, int64_t p0, int worker, const void *next, int64_t next_bytes) {
    const cr_kernels *K = cr_kern;
    const cr_linear *W = j->W;
    int64_t rows = j->m - r < CR_AMX_ROWS ? j->m - r : CR_AMX_ROWS;
    int64_t np = j->n_panels - p0 < j->amx_np ? j->n_panels - p0 : j->amx_np;
    int64_t len = row_len(W->fmt, W->n_in);
    float *out = (float *)j->amx_out + (int64_t)worker * CR_AMX_PANELS * CR_AMX_ROWS * CR_GEMM_NR;
    const int64_t ldo = CR_AMX_PANELS * CR_GEMM_NR;
    int64_t kb = len / CR_AMX_BLOCK_ELEMS(W->fmt);
    if (W->fmt == CR_FMT_BF16_AMX)
        K->gemm_bf16_amx(j->xb + r * len, rows, W->wb + p0 * len * CR_GEMM_NR, kb, kb, np, out, ldo, 0, next,
                         next_bytes);
    else
        K->gemm_i8_amx(j->xq + r * len, rows, W->wq + p0 * len * CR_GEMM_NR, kb, kb, np, (int32_t *)out, ldo, 0, next,
                       next_bytes);
    int64_t c_end = (p0 + np) * CR_GEMM_NR < W->n_out ? (p0 + np) * CR_GEMM_NR : W->n_out;
    for (int64_t q = 0; q < np; q++) {
        int64_t c0 = (p0 + q) * CR_GEMM_NR;
        int64_t cols = W->n_out - c0 < CR_GEMM_NR ? W->n_out - c0 : CR_GEMM_NR;
        float *sums = out + q * CR_GEMM_NR;
        /* int8: the AVX-512 epilogue turns the int32 sums into float32 in place (its loads and
         * stores are of the same 64 bytes, through intrinsics that may alias anything) */
        if (W->fmt == CR_FMT_I8_AMX)
            i8_finish(j, K, r, rows, W->wq + (p0 + q) * len * CR_GEMM_NR, c0, cols, (const int32_t *)(void *)sums,
                      ldo, sums, ldo);
        add_bias(W->bias ? W->bias + c0 : NULL, sums, ldo, rows, cols);
    }
    K->store_rows_stream(j->y + r * j->ldy + p0 * CR_GEMM_NR, j->ldy, out, ldo, rows, c_end - p0 * CR_GEMM_NR);
}

/* Blocks k0 .. k0 + nk of K (of kb) of the CR_AMX_ROWS-row block from row r against the panel group
 * from p0, for a block whose rows are whole 16-row groups and whose panels are all within y: the
 * sums accumulate in y itself (int8: as int32 until the last piece), and after the last piece each
 * panel's epilogue runs there in place. */
static void amx_piece(const panel_job *j, int64_t r, int64_t p0, int64_t k0, int64_t nk, int64_t kb) {
    const cr_kernels *K = cr_kern;
    const cr_linear *W = j->W;
    int64_t rows = j->m - r < CR_AMX_ROWS ? j->m - r : CR_AMX_ROWS;
    int64_t np = j->n_panels - p0 < j->amx_np ? j->n_panels - p0 : j->amx_np;
    int64_t len = row_len(W->fmt, W->n_in);
    float *y = j->y + r * j->ldy + p0 * CR_GEMM_NR;
    /* a block of inputs is 16 rows of 64 bytes in tile order, a block of a panel 16 x 128 bytes */
    size_t x_off = (size_t)(k0 * 16 * CR_AMX_BLOCK_BYTES), w_off = (size_t)(k0 * 32 * CR_AMX_BLOCK_BYTES);
    if (W->fmt == CR_FMT_BF16_AMX)
        K->gemm_bf16_amx((const uint16_t *)(void *)((const char *)(j->xb + r * len) + x_off), rows,
                         (const uint16_t *)(void *)((const char *)(W->wb + p0 * len * CR_GEMM_NR) + w_off), nk, kb, np,
                         y, j->ldy, k0 > 0, NULL, 0);
    else
        K->gemm_i8_amx(j->xq + r * len + x_off, rows, W->wq + p0 * len * CR_GEMM_NR + w_off, nk, kb, np,
                       (int32_t *)(void *)y, j->ldy, k0 > 0, NULL, 0);
    if (k0 + nk < kb) return;
    for (int64_t q = 0; q < np; q++) {
        int64_t c0 = (p0 + q) * CR_GEMM_NR;
        float *yq = y + q * CR_GEMM_NR;
        if (W->fmt == CR_FMT_I8_AMX)
            i8_finish(j, K, r, rows, W->wq + (p0 + q) * len * CR_GEMM_NR, c0, CR_GEMM_NR,
                      (const int32_t *)(void *)yq, j->ldy, yq, j->ldy);
        add_bias(W->bias ? W->bias + c0 : NULL, yq, j->ldy, rows, CR_GEMM_NR);
    }
}

/* One AMX task: a range of amx_range row blocks against a span of amx_span panel groups (of
 * amx_np panels each), group after group. The range's inputs stay in L2 for the whole span (the
 * range and two groups are sized to CR_AMX_L2_BYTES), so each group's weights are the only operand
 * that comes from L3 or memory, once per range, asked into L2 while the group before it computes.
 * Consecutive tasks are the ranges of one span, so the threads running at one time read the same
 * weights, which L3 holds for all of them. (Before, a task was one range against one group, and
 * every range's inputs came from L3 again for each group of 128 columns: at K = 1024, 512-row
 * ranges, four times the bytes per FLOP.) */
static void amx_task(void *ctx, int64_t task, int worker) {
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
                        amx_piece(j, r, p0, k0, kb - k0 < kc ? kb - k0 : kc, kb);
                    else if (k0 == 0)
                        amx_block(j, r, p0, worker, NULL, 0);
                }
        return;
    }
    for (int64_t g = g0; g < g1; g++) {
        /* the next group's weights, a slice per block */
        int64_t next_p = (g + 1) * j->amx_np, next_np = j->n_panels - next_p < j->amx_np ? j->n_panels - next_p : j->amx_np;
        int64_t total = g + 1 < g1 ? next_np * panel_bytes : 0, slice = (total + (b1 - b0) - 1) / (b1 - b0);
        for (int64_t b = b0; b < b1; b++) {
            int64_t from = (b - b0) * slice, bytes = total - from < slice ? total - from : slice;
            amx_block(j, b * CR_AMX_ROWS, g * j->amx_np, worker, bytes > 0 ? weights + next_p * panel_bytes + from : NULL,
                      bytes > 0 ? bytes : 0);
        }
    }
}

/* One task: a block of block_rows() rows against one panel of CR_GEMM_NR columns. */
static void panel_task(void *ctx, int64_t task, int worker) {
    const panel_job *j = ctx;
    const cr_kernels *K = cr_kern;
    int64_t block = task / j->n_panels, p = task % j->n_panels, rb = block_rows(j->W->fmt);
    int64_t r0 = block * rb;
    int64_t r1 = r0 + rb < j->m ? r0 + rb : j->m;
    int64_t c0 = p * CR_GEMM_NR;
    int64_t cols = j->W->n_out - c0 < CR_GEMM_NR ? j->W->n_out - c0 : CR_GEMM_NR;
    int64_t mr = tile_rows(j->W->fmt, K);
    for (int64_t r = r0; r < r1; r += mr) tile(j, K, r, r1 - r < mr ? r1 - r : mr, p, c0, cols);
}

/* Candidates a row's scan collects at once; a row with more (rare) is scanned again in C. */
#define CR_I8_OUTLIER_SCAN 64

/* Inserts input i (value x) into the outlier list kept sorted by |x|, descending, of at most
 * CR_I8_MAX_OUTLIERS; when full, the smallest falls off. Returns the new count. */
static int32_t keep_outlier(int32_t count, int64_t i, float x, int32_t *k, float *v) {
    float a = fabsf(x);
    if (count == CR_I8_MAX_OUTLIERS && !(a > fabsf(v[count - 1]))) return count;
    int32_t t = count < CR_I8_MAX_OUTLIERS ? count++ : count - 1;
    for (; t > 0 && fabsf(v[t - 1]) < a; t--) {
        k[t] = k[t - 1];
        v[t] = v[t - 1];
    }
    k[t] = (int32_t)i;
    v[t] = x;
    return count;
}

/* The row's outliers (|x| > CR_I8_OUTLIER_RATIO mean |x|) into k[] / v[], largest |x| first;
 * returns how many. None for a row with NaN or Inf (quantize_u8 marks it) or of all zeros. */
static int32_t take_outliers(const float *x, int64_t n, int32_t *k, float *v) {
    float amax, sum = cr_kern->abs_sum_max_f32(x, n, &amax);
    float threshold = CR_I8_OUTLIER_RATIO * (sum / (float)n);
    if (!(amax > threshold) || !isfinite(sum)) return 0;
    int32_t found[CR_I8_OUTLIER_SCAN], count = 0;
    int64_t total = cr_kern->find_above_f32(x, n, threshold, found, CR_I8_OUTLIER_SCAN);
    if (total <= CR_I8_OUTLIER_SCAN) {
        for (int64_t t = 0; t < total; t++) count = keep_outlier(count, found[t], x[found[t]], k, v);
    } else {
        for (int64_t i = 0; i < n; i++)
            if (fabsf(x[i]) > threshold) count = keep_outlier(count, i, x[i], k, v);
    }
    return count;
}

/* Rows of x per conversion task: the inputs are rounded (bf16) or quantized (int8) on the pool,
 * since on the calling thread alone that pass left the other workers idle. */
#define CR_CONVERT_ROWS 32

/* Row r (len elements of elem bytes) into the AMX tile order of kernels.h: block b of the row at
 * dst + ((r / 16) (len / block) + b) 16 block + (r % 16) block, so every A tile is one KiB. */
static void to_tile_order(const void *row, int64_t r, int64_t len, int64_t block, size_t elem, void *dst) {
    int64_t kb = len / block;
    for (int64_t b = 0; b < kb; b++)
        memcpy((char *)dst + (size_t)((((r / 16) * kb + b) * 16 + r % 16) * block) * elem,
               (const char *)row + (size_t)(b * block) * elem, (size_t)block * elem);
}

/* One conversion task: rows [task CR_CONVERT_ROWS, ...) of x into the job's bf16 or int8 rows. */
static void convert_task(void *ctx, int64_t task, int worker) {
    const panel_job *j = ctx;
    const cr_linear *W = j->W;
    int64_t r0 = task * CR_CONVERT_ROWS, r1 = r0 + CR_CONVERT_ROWS < j->m ? r0 + CR_CONVERT_ROWS : j->m;
    for (int64_t r = r0; r < r1; r++) {
        int64_t len = row_len(W->fmt, W->n_in);
        if (W->fmt == CR_FMT_I8_PANELS || W->fmt == CR_FMT_I8_AMX) {
            /* Per-row (per-token) symmetric quantization of what is left after the outliers are
             * taken out; a row holding NaN or Inf gets a NaN scale, so its outputs are NaN, not a
             * plausible number. Padding bytes are the zero point. */
            const float *row = j->x + r * j->ldx;
            int32_t *ok = j->outlier_k + r * CR_I8_MAX_OUTLIERS;
            float *ov = j->outlier_x + r * CR_I8_MAX_OUTLIERS;
            int32_t n_out = take_outliers(row, W->n_in, ok, ov);
            j->n_outliers[r] = n_out;
            if (n_out) {
                float *rest = j->scratch + (int64_t)worker * W->n_in;
                memcpy(rest, row, (size_t)W->n_in * sizeof(float));
                for (int32_t t = 0; t < n_out; t++) rest[ok[t]] = 0.0f;
                row = rest;
            }
            uint8_t *q = is_amx(W->fmt) ? (uint8_t *)j->row_tmp + (int64_t)worker * len : j->xq + r * len;
            j->xscale[r] = cr_kern->quantize_u8(row, W->n_in, q);
            memset(q + W->n_in, 128, (size_t)(len - W->n_in));
            if (is_amx(W->fmt)) to_tile_order(q, r, len, CR_AMX_I8_K, 1, j->xq);
        } else {
            uint16_t *row = is_amx(W->fmt) ? (uint16_t *)j->row_tmp + (int64_t)worker * len : j->xb + r * len;
            cr_kern->f32_to_bf16(j->x + r * j->ldx, row, W->n_in);
            memset(row + W->n_in, 0, (size_t)(len - W->n_in) * sizeof(uint16_t));
            if (is_amx(W->fmt)) to_tile_order(row, r, len, CR_AMX_BF16_K, 2, j->xb);
        }
    }
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

cr_status cr_linear_apply(const cr_linear *W, const float *x, int64_t ldx, int64_t m,
                          float *y, int64_t ldy, const cr_exec *ex) {
    if (m <= 0) return CR_OK;
    if (W->fmt == CR_FMT_F32_BLAS) return apply_blas(W, x, ldx, m, y, ldy, ex);
    panel_job j = {.W = W, .x = x, .ldx = ldx, .m = m, .y = y, .ldy = ldy,
                   .n_panels = (W->n_out + CR_GEMM_NR - 1) / CR_GEMM_NR};
    int64_t blocks = (m + block_rows(W->fmt) - 1) / block_rows(W->fmt);
    if (W->fmt == CR_FMT_F32_PANELS)
        return cr_pool_run(ex->threads, blocks * j.n_panels, panel_task, &j, ex->abort);
    /* AMX formats exist only once the permission was granted, and then the AMX table (with its
     * epilogue entries) is the active one; never run tiles without both */
    if (is_amx(W->fmt) && (!cr_amx_usable() || !cr_kern->i8_dequant_f32 || !cr_kern->store_rows_stream))
        return cr_fail(CR_E_UNSUPPORTED, "this layer was packed for AMX tiles, which this process may not use");
    int64_t len = row_len(W->fmt, W->n_in);
    /* AMX: the converted rows are padded with zero rows to a multiple of 16 (tile loads read whole
     * 16-row groups), tasks are (row range, span of panel groups), each worker has its own out block */
    int64_t m_rows = is_amx(W->fmt) ? (m + 15) / 16 * 16 : m;
    int64_t n_tasks = blocks * j.n_panels;
    cr_task_fn task_fn = panel_task;
    if (is_amx(W->fmt)) {
        /* Groups of panels whose two take at most half of CR_AMX_L2_BYTES, row ranges whose inputs
         * fill the rest, each range against all the groups; then, while that leaves under 4 tasks
         * per thread, shorter spans of groups, shorter ranges and fewer panels per group, in that
         * order. None changes a result bit: every output element is one chain over all of K in
         * block order, in one call or in pieces, and all of it in one task. */
        int64_t kb = len / CR_AMX_BLOCK_ELEMS(W->fmt);
        j.amx_kc = kb;
        for (;;) {
            int64_t row_bytes = j.amx_kc * CR_AMX_BLOCK_BYTES, block_bytes = CR_AMX_ROWS * row_bytes;
            j.amx_np = CR_AMX_PANELS;
            while (j.amx_np > 1 && 2 * j.amx_np * CR_GEMM_NR * row_bytes > CR_AMX_L2_BYTES / 2) j.amx_np /= 2;
            int64_t room = CR_AMX_L2_BYTES - 2 * j.amx_np * CR_GEMM_NR * row_bytes;
            j.amx_range = room > block_bytes ? room / block_bytes : 1;
            /* whole rows, unless they leave room for a single row block (K in pieces then) */
            if (j.amx_range >= 2 || j.amx_kc <= CR_AMX_K_BLOCKS) break;
            j.amx_kc = CR_AMX_K_BLOCKS;
        }
        j.amx_range = j.amx_range < blocks ? j.amx_range : blocks;
        j.amx_span = (j.n_panels + j.amx_np - 1) / j.amx_np;
        for (;;) {
            int64_t groups = (j.n_panels + j.amx_np - 1) / j.amx_np;
            n_tasks = (blocks + j.amx_range - 1) / j.amx_range * ((groups + j.amx_span - 1) / j.amx_span);
            if (n_tasks >= 4 * (int64_t)ex->threads) break;
            if (j.amx_span > 1)
                j.amx_span = (j.amx_span + 1) / 2;
            else if (j.amx_range > 1)
                j.amx_range = (j.amx_range + 1) / 2;
            else if (j.amx_np > 1)
                j.amx_np /= 2;
            else
                break;
        }
        task_fn = amx_task;
        j.amx_out = cr_aligned_alloc((size_t)ex->threads * CR_AMX_PANELS * CR_AMX_ROWS * CR_GEMM_NR * sizeof(float),
                                     "AMX accumulators");
        j.row_tmp = cr_malloc_array((size_t)ex->threads, (size_t)len * sizeof(uint16_t), "AMX row scratch");
        if (!j.amx_out || !j.row_tmp) {
            free(j.amx_out);
            free(j.row_tmp);
            return CR_E_NOMEM;
        }
    }

    if (W->fmt == CR_FMT_I8_PANELS || W->fmt == CR_FMT_I8_AMX) {
        size_t count;
        if (!cr_mul_size((size_t)m_rows, (size_t)len, &count)) {
            free(j.amx_out);
            free(j.row_tmp);
            return cr_fail(CR_E_NOMEM, "int8 input size overflows");
        }
        j.xq = cr_aligned_alloc(count, "int8 inputs");
        j.xscale = cr_malloc_array((size_t)m, sizeof(float), "int8 input scales");
        j.n_outliers = cr_malloc_array((size_t)m, sizeof(int32_t), "int8 outlier counts");
        j.outlier_k = cr_malloc_array((size_t)m * CR_I8_MAX_OUTLIERS, sizeof(int32_t), "int8 outlier indices");
        j.outlier_x = cr_malloc_array((size_t)m * CR_I8_MAX_OUTLIERS, sizeof(float), "int8 outlier values");
        j.scratch = cr_malloc_array((size_t)ex->threads, (size_t)W->n_in * sizeof(float), "int8 row scratch");
        cr_status st = CR_E_NOMEM;
        if (j.xq && j.xscale && j.n_outliers && j.outlier_k && j.outlier_x && j.scratch) {
            /* the part-filled last 16-row group (tile order keeps it contiguous): zero rows */
            memset(j.xq + m / 16 * 16 * len, 0, (size_t)((m_rows - m / 16 * 16) * len));
            st = cr_pool_run(ex->threads, (m + CR_CONVERT_ROWS - 1) / CR_CONVERT_ROWS, convert_task, &j, ex->abort);
            if (st == CR_OK) st = cr_pool_run(ex->threads, n_tasks, task_fn, &j, ex->abort);
        }
        free(j.amx_out);
        free(j.xq);
        free(j.xscale);
        free(j.n_outliers);
        free(j.outlier_k);
        free(j.outlier_x);
        free(j.scratch);
        return st;
    }

    /* bf16: round the inputs once per call, rows padded to whole pairs (AMX: whole blocks). */
    size_t count;
    uint16_t *xb = NULL;
    if (!cr_mul_size((size_t)m_rows, (size_t)len * sizeof(uint16_t), &count))
        cr_fail(CR_E_NOMEM, "bf16 input size overflows");
    else
        xb = cr_aligned_alloc(count, "bf16 inputs");
    if (!xb) {
        free(j.amx_out);
        free(j.row_tmp);
        return CR_E_NOMEM;
    }
    j.xb = xb;
    memset(xb + m / 16 * 16 * len, 0, (size_t)((m_rows - m / 16 * 16) * len) * sizeof(uint16_t));
    cr_status st = cr_pool_run(ex->threads, (m + CR_CONVERT_ROWS - 1) / CR_CONVERT_ROWS, convert_task, &j,
                               ex->abort);
    if (st == CR_OK) st = cr_pool_run(ex->threads, n_tasks, task_fn, &j, ex->abort);
    free(xb);
    free(j.amx_out);
    free(j.row_tmp);
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
