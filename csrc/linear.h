/* linear.h — cr_linear: every projection of the forward goes through cr_linear_apply, whatever
 * the weight format. The format tag selects the kernel; packed data, scales and per-column sums
 * live here so quantized formats slot in without touching the forward. */
#ifndef CR_LINEAR_H
#define CR_LINEAR_H

#include <stdatomic.h>
#include <stdint.h>

#include "crossrank.h"

typedef enum cr_format {
    CR_FMT_F32 = 0,   /* w: [n_out, n_in] float32, row-major (HF layout), through OpenBLAS sgemm */
} cr_format;

typedef struct cr_linear {
    cr_format fmt;
    int64_t n_out, n_in;
    float *w;         /* F32: [n_out, n_in], 64-byte aligned, owned */
    float *bias;      /* [n_out] or NULL, owned */
} cr_linear;

/* How a call may use the machine: threads for BLAS and the pool, and the abort flag. */
typedef struct cr_exec {
    int threads;
    const atomic_int *abort;
} cr_exec;

/* y[m, n_out] (row stride ldy) = x[m, n_in] (row stride ldx) @ W^T + bias. Rows are processed in
 * blocks with the abort flag checked between them. Call with the engine lock held. */
cr_status cr_linear_apply(const cr_linear *W, const float *x, int64_t ldx, int64_t m,
                          float *y, int64_t ldy, const cr_exec *ex);

void cr_linear_free(cr_linear *W);  /* frees the owned buffers; accepts a zeroed struct */

#endif
