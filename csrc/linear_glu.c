/* linear_glu.c — the gated MLP's activation as the epilogue of the gate|up projection
 * (cr_linear_apply_glu): h = act(gate) * up from sums still in the computing core's cache, written
 * where the down projection reads it (its own bf16 rows, or float32 rows). Stored as float32 and
 * read back by a pass of its own, the 2 I sums per token were the largest buffer of a layer. int8
 * rows are quantized a whole row at a time (its scale and outliers need all of it), so there the
 * epilogue writes float32 h and a pass quantizes it row by row (cr_glu_rows). */
#include <math.h>

#include "kernels/kernels.h"
#include "linear_job.h"
#include "threads.h"

/* h = act(gate) * up over n elements. SiLU and tanh GELU are both g sigmoid(c(g)), one vector
 * kernel; the exact (erf) GELU stays scalar. */
static void glu_act(cr_activation act, const float *gate, const float *up, float *h, int64_t n) {
    if (act != CR_ACT_GELU) {
        cr_kern->sigmoid_glu_f32(gate, up, h, n, act == CR_ACT_GELU_TANH);
        return;
    }
    for (int64_t j = 0; j < n; j++) {
        float g = gate[j];
        h[j] = 0.5f * g * (1.0f + erff(g * 0.7071067811865476f)) * up[j];
    }
}

void cr_glu_block(const cr_glu *glu, int64_t r, int64_t rows, int64_t c0, int64_t cols, const float *g,
                  const float *u, int64_t ld) {
    if (glu->rows) {
        for (int64_t i = 0; i < rows; i++) {
            float part[CR_GLU_PART];
            glu_act(glu->act, g + i * ld, u + i * ld, part, cols);
            cr_linear_put_bf16(glu->to, glu->rows, r + i, c0, part, cols);
        }
        return;
    }
    for (int64_t i = 0; i < rows; i++)
        glu_act(glu->act, g + i * ld, u + i * ld, glu->h + (r + i) * glu->ldh + c0, cols);
}

typedef struct glu_rows_job {
    const cr_glu *glu;
    float *y;
    int64_t ldy, up, m;
    uint8_t *tmp;
} glu_rows_job;

/* Rows per task of cr_glu_rows */
#define CR_GLU_ROWS 8

static void glu_rows_task(void *ctx, int64_t task, int worker) {
    const glu_rows_job *j = ctx;
    const cr_glu *glu = j->glu;
    int64_t r0 = task * CR_GLU_ROWS, rows = j->m - r0 < CR_GLU_ROWS ? j->m - r0 : CR_GLU_ROWS;
    float *y = j->y + r0 * j->ldy;
    if (glu->q8) { /* a whole row of h (over its gate sums, unless it is h already), then quantized */
        uint8_t *tmp = j->tmp + (int64_t)worker * cr_linear_row_elems(glu->to);
        for (int64_t i = 0; i < rows; i++) {
            float *row = y + i * j->ldy;
            if (j->up >= 0) glu_act(glu->act, row, row + j->up, row, glu->n);
            cr_linear_put_i8(glu->to, glu->q8, r0 + i, row, tmp);
        }
        return;
    }
    for (int64_t c0 = 0; c0 < glu->n; c0 += CR_GLU_PART)
        cr_glu_block(glu, r0, rows, c0, glu->n - c0 < CR_GLU_PART ? glu->n - c0 : CR_GLU_PART, y + c0,
                     y + j->up + c0, j->ldy);
}

cr_status cr_glu_rows(const cr_glu *glu, float *y, int64_t ldy, int64_t up, int64_t m, uint8_t *tmp,
                      const cr_exec *ex) {
    glu_rows_job j = {glu, y, ldy, up, m, tmp};
    return cr_pool_run(ex->threads, (m + CR_GLU_ROWS - 1) / CR_GLU_ROWS, glu_rows_task, &j, ex->abort);
}
