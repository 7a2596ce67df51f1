/* blas.c — OpenBLAS behind blas.h, compiled to "absent" when the build has no OpenBLAS. */
#include "blas.h"

#ifdef CR_HAVE_OPENBLAS
#include <cblas.h>

const char *cr_blas_name(void) { return "openblas"; }

void cr_blas_sgemm_xwt(int64_t rows, int64_t n, int64_t k, const float *x, int64_t ldx,
                       const float *w, float *y, int64_t ldy, int threads) {
    openblas_set_num_threads(threads);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)rows, (blasint)n, (blasint)k, 1.0f,
                x, (blasint)ldx, w, (blasint)k, 0.0f, y, (blasint)ldy);
}

#else

const char *cr_blas_name(void) { return (const char *)0; }

/* Unreachable: every caller checks cr_blas_name() first. */
void cr_blas_sgemm_xwt(int64_t rows, int64_t n, int64_t k, const float *x, int64_t ldx,
                       const float *w, float *y, int64_t ldy, int threads) {
    (void)rows, (void)n, (void)k, (void)x, (void)ldx, (void)w, (void)y, (void)ldy, (void)threads;
}

#endif
