/* linear_job.h — what linear.c, linear_amx.c, linear_glu.c and linear_rows.c share inside cr_linear_apply (not an API): one
 * call's job, the converted row length of a format, and the epilogues. */
#ifndef CR_LINEAR_JOB_H
#define CR_LINEAR_JOB_H

#include <stdint.h>

#include "kernels/kernels.h"
#include "linear.h"

/* int8 inputs: one per-token scale cannot serve a row whose few huge entries (the outlier
 * channels of real LLMs, e.g. at down_proj's inputs) are tens of times the rest: the rest would
 * round to a handful of levels. Such entries, above CR_I8_OUTLIER_RATIO times the row's mean
 * |x|, are taken out of the quantized row (at most CR_I8_MAX_OUTLIERS per row, linear.h, the
 * largest) and applied in float32 against the dequantized int8 weights. A Gaussian row never has one
 * (12 mean|x| is 9.6 sigma), so ordinary rows cost one extra read. */
#define CR_I8_OUTLIER_RATIO 12.0f

/* K elements of one AMX block (one 64-byte tile row of a row of inputs, 16 of them per block of a
 * weight column pair / quad: 64 bytes per row or column either way). */
#define CR_AMX_BLOCK_ELEMS(fmt) ((fmt) == CR_FMT_BF16_AMX ? CR_AMX_BF16_K : CR_AMX_I8_K)
#define CR_AMX_BLOCK_BYTES 64

static inline int is_amx(cr_format fmt) { return fmt == CR_FMT_BF16_AMX || fmt == CR_FMT_I8_AMX; }

/* Elements of one converted input row, which is also the K extent (in elements, padding
 * included) of one packed panel: a panel holds row_len(fmt) x CR_GEMM_NR weights. */
static inline int64_t row_len(cr_format fmt, int64_t n_in) {
    switch (fmt) {
    case CR_FMT_BF16_PANELS: return (n_in + 1) / 2 * 2;
    case CR_FMT_BF16_AMX: return (n_in + CR_AMX_BF16_K - 1) / CR_AMX_BF16_K * CR_AMX_BF16_K;
    case CR_FMT_I8_PANELS: return (n_in + 3) / 4 * 4;
    case CR_FMT_I8_AMX: return (n_in + CR_AMX_I8_K - 1) / CR_AMX_I8_K * CR_AMX_I8_K;
    default: return n_in;
    }
}

typedef struct panel_job {
    const cr_linear *W;
    const float *x;
    uint16_t *xb;       /* bf16 formats: x rounded to bf16, rows of row_len (zero-padded) */
    cr_i8_rows q8;      /* int8 formats: x quantized + 128 (rows of row_len), per-row scales, and
                         * the inputs taken out of each row (CR_I8_MAX_OUTLIERS slots per row) */
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
    void *row_tmp;      /* AMX formats: one converted row (row_len elements) per worker; xb / q8.q are
                         * in the tile order of kernels.h, zero rows up to a multiple of 16 */
    const cr_glu *glu;  /* cr_linear_apply_glu (then y is unused and n_panels counts the gate panels
                         * that h needs; the AMX out blocks are two per worker: gate, up) */
    int64_t up_panel;   /* with glu: the up half's first panel, W->n_out / 2 / CR_GEMM_NR */
} panel_job;

static inline void add_bias(const float *bias, float *y, int64_t ldy, int64_t rows, int64_t cols) {
    if (!bias) return;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t c = 0; c < cols; c++) y[i * ldy + c] += bias[c];
}

/* The rest of an int8 tile of rows r .. r+rows, columns c0 .. c0+cols of one panel, into y (row
 * stride ldy, at row r and column c0): the epilogue of gemm_i8_tile_f32 in C (the same operations,
 * so the same bits) from the exact sums acc (row stride ldacc; NULL when y holds the dequantized
 * sums already; acc may be y itself only where K->i8_dequant_f32 exists), then the rows' outlier
 * inputs in float32 against the (dequantized) int8 weights. */
void cr_linear_i8_finish(const panel_job *j, const cr_kernels *K, int64_t r, int64_t rows, const int8_t *panel,
                         int64_t c0, int64_t cols, const int32_t *acc, int64_t ldacc, float *y, int64_t ldy);

/* A layer's own input rows (linear_rows.c), from n_in float32 values x. cr_linear_quantize_row:
 * row r of an int8 layer's inputs, per-row (per-token) symmetric quantization of what is left
 * after the outliers are taken out (into the row's slots of d). A row holding NaN or Inf gets a
 * NaN scale, so its outputs are NaN, not a plausible number. Padding bytes are the zero point.
 * Where the row has outliers, the values without them are written to `rest` (n_in floats, which
 * may be x itself) and quantized from there; tmp (AMX: row_len bytes) holds the quantized row on
 * its way into the tile order. cr_linear_round_row: row r of a bf16 layer's inputs in `rows`,
 * rounded to nearest even, K padding zeroed; tmp (AMX: row_len elements) likewise. */
void cr_linear_quantize_row(const cr_linear *W, const float *x, float *rest, const cr_i8_rows *d, int64_t r,
                            uint8_t *tmp);
void cr_linear_round_row(const cr_linear *W, const float *x, uint16_t *rows, int64_t r, uint16_t *tmp);

/* The GLU epilogue (linear_glu.c): h columns [c0, c0 + cols) of rows [r, r + rows) from the gate
 * and up sums g, u (row stride ld, column c0 of each at g, u), to glu's bf16 rows or float32 h
 * (not int8 rows: cr_glu_rows). cols is at most CR_GLU_PART, or ends h's row. */
#define CR_GLU_PART (CR_AMX_PANELS * CR_GEMM_NR)
void cr_glu_block(const cr_glu *glu, int64_t r, int64_t rows, int64_t c0, int64_t cols, const float *g,
                  const float *u, int64_t ld);
/* h over whole rows [0, m) of sums y (row stride ldy, the up half at y + up; y is overwritten),
 * on the pool: the epilogue of a gate|up GEMM that did not run fused. For int8 rows, y may hold h
 * already (the fused epilogue's float32 h, up < 0): then the pass only quantizes. tmp: for int8
 * rows, one row of `to`'s cr_linear_row_elems bytes per worker (the quantized row on its way into
 * the tile order). */
cr_status cr_glu_rows(const cr_glu *glu, float *y, int64_t ldy, int64_t up, int64_t m, uint8_t *tmp,
                      const cr_exec *ex);

/* AMX formats (linear_amx.c): sets the job's amx_* plan for its m rows (`blocks` blocks of
 * CR_AMX_ROWS) at `threads` threads and returns the task count; cr_amx_task runs one task. */
int64_t cr_amx_plan(panel_job *j, int64_t blocks, int threads);
void cr_amx_task(void *ctx, int64_t task, int worker);

#endif
