/* kernels.h — the vector kernels behind one dispatch table.
 *
 * Each kernel has a scalar reference (kernels_ref.c) and ISA versions in files named by ISA
 * (kernels_avx2.c, kernels_avx512.c): only those files are compiled with ISA flags. The table is
 * filled once with the references, then overridden by what the CPU and OS support, capped by the
 * CROSSRANK_ISA environment variable (ref | avx2 | avx512 | avx512bf16).
 *
 * Contracts (all): n >= 0, any n (ragged tails handled), no alignment required; source pointers
 * may point into a memory-mapped checkpoint, so 16-bit sources are read with unaligned loads. */
#ifndef CR_KERNELS_H
#define CR_KERNELS_H

#include <stdint.h>

typedef enum cr_isa {
    CR_ISA_REF = 0,
    CR_ISA_AVX2,        /* AVX2 + FMA + F16C */
    CR_ISA_AVX512,      /* AVX-512 F/BW/VL/DQ */
    CR_ISA_AVX512BF16,  /* AVX-512 + AVX512_BF16 */
    CR_ISA_COUNT
} cr_isa;

/* Output columns per packed weight panel: the packed layout is the same for every ISA, so a model
 * packed once runs under any dispatch level. */
#define CR_GEMM_NR 32

typedef struct cr_kernels {
    cr_isa isa;
    /* y[i, j] = sum_k x[i, k] * wp[k, j] for i < m, j < n, where wp is one packed panel
     * [k][CR_GEMM_NR] (columns past n are zero padding). Each sum is one fused multiply-add chain
     * in increasing k from 0, whatever the tile shape, so every ISA and every m gives bitwise
     * the same result for a row: scores do not depend on batch composition or threads.
     * m <= gemm_mr; rows of x and y have strides ldx, ldy. */
    void (*gemm_f32_tile)(const float *x, int64_t ldx, int64_t m, const float *wp, int64_t k,
                          float *y, int64_t ldy, int64_t n);
    int gemm_mr;
    /* sum_i a[i] * b[i] */
    float (*dot_f32)(const float *a, const float *b, int64_t n);
    /* y[i] += alpha * x[i] */
    void (*axpy_f32)(float alpha, const float *x, float *y, int64_t n);
    /* sum_i x[i]^2 */
    float (*sumsq_f32)(const float *x, int64_t n);
    /* dst[i] = float(src[i]) for bfloat16 / IEEE half sources */
    void (*bf16_to_f32)(const void *src, float *dst, int64_t n);
    void (*f16_to_f32)(const void *src, float *dst, int64_t n);
} cr_kernels;

/* The active table; valid after cr_kernels_init() (idempotent, thread-safe). */
extern const cr_kernels *cr_kern;
void cr_kernels_init(void);

/* Per-ISA tables; NULL when that ISA was not compiled in (non-x86 builds). */
const cr_kernels *cr_kernels_ref(void);
const cr_kernels *cr_kernels_avx2(void);
const cr_kernels *cr_kernels_avx512(void);

/* What the CPU and OS support (before any cap), and the names of ISA levels. */
cr_isa cr_isa_detected(void);
const char *cr_isa_level_name(cr_isa isa);
/* Features as a comma-separated list ("avx2,fma,f16c,avx512f,..."), for cpu_info(). */
const char *cr_cpu_features(void);

#endif
