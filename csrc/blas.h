/* blas.h — the one place crossrank calls a system BLAS (OpenBLAS), behind a thin interface.
 *
 * OpenBLAS is optional: setup.py defines CR_HAVE_OPENBLAS and links it when pkg-config finds it
 * (or CROSSRANK_BLAS=system demands it); otherwise this interface reports it absent and the
 * opt-in CROSSRANK_GEMM=openblas path fails with an error that says how to rebuild. crossrank's
 * own float32 panels are the default and do not need it. */
#ifndef CR_BLAS_H
#define CR_BLAS_H

#include <stdint.h>

#include "crossrank.h" /* cr_blas_name() */

/* y[rows, n] (row stride ldy) = x[rows, k] (row stride ldx) @ w[n, k]^T, float32, row-major,
 * on `threads` OpenBLAS threads. Only call when cr_blas_name() is not NULL. */
void cr_blas_sgemm_xwt(int64_t rows, int64_t n, int64_t k, const float *x, int64_t ldx,
                       const float *w, float *y, int64_t ldy, int threads);

#endif
