/* linear.c — cr_linear_apply. float32 goes through OpenBLAS sgemm, called from the orchestrating
 * thread while the pool is idle (the engine lock guarantees it), in row blocks so that a long
 * prompt can be cancelled between blocks. */
#include "linear.h"

#include <cblas.h>
#include <stdlib.h>

#include "error.h"
#include "threads.h"

/* Rows per GEMM call: big enough for full BLAS efficiency, small enough that the abort flag is
 * seen well within a second on the largest seed shapes. */
#define CR_LINEAR_ROW_BLOCK 512

cr_status cr_linear_apply(const cr_linear *W, const float *x, int64_t ldx, int64_t m,
                          float *y, int64_t ldy, const cr_exec *ex) {
    if (W->fmt != CR_FMT_F32) return cr_fail(CR_E_UNSUPPORTED, "weight format %d has no kernel", W->fmt);
    for (int64_t r0 = 0; r0 < m; r0 += CR_LINEAR_ROW_BLOCK) {
        if (cr_aborted(ex->abort)) return cr_fail(CR_E_ABORTED, "cancelled");
        int64_t rows = m - r0 < CR_LINEAR_ROW_BLOCK ? m - r0 : CR_LINEAR_ROW_BLOCK;
        float *yb = y + r0 * ldy;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)rows, (blasint)W->n_out,
                    (blasint)W->n_in, 1.0f, x + r0 * ldx, (blasint)ldx, W->w, (blasint)W->n_in,
                    0.0f, yb, (blasint)ldy);
        if (W->bias) {
            for (int64_t r = 0; r < rows; r++) {
                float *row = yb + r * ldy;
                for (int64_t j = 0; j < W->n_out; j++) row[j] += W->bias[j];
            }
        }
    }
    return CR_OK;
}

void cr_linear_free(cr_linear *W) {
    if (!W) return;
    free(W->w);
    free(W->bias);
    W->w = NULL;
    W->bias = NULL;
}
