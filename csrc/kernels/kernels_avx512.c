/* kernels_avx512.c — AVX-512 F/BW/VL/DQ kernels. Compiled with the AVX-512 flags; called only
 * after dispatch checked the CPU bits and that the OS saves the ZMM and opmask state. Tails use
 * masked loads, so no scalar loop. */
#include <immintrin.h>

#include "kernels.h"

static inline __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
}

static float dot_f32_avx512(const float *a, const float *b, int64_t n) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
    }
    for (; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

static void axpy_f32_avx512(float alpha, const float *x, float *y, int64_t n) {
    __m512 va = _mm512_set1_ps(alpha);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 vy = _mm512_maskz_loadu_ps(m, y + i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), vy));
    }
}

static float sumsq_f32_avx512(const float *x, int64_t n) { return dot_f32_avx512(x, x, n); }

static void bf16_to_f32_avx512(const void *src, float *dst, int64_t n) {
    const uint16_t *p = src;
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m256i h = _mm256_maskz_loadu_epi16(m, p + i);
        __m512i w = _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16);
        _mm512_mask_storeu_ps(dst + i, m, _mm512_castsi512_ps(w));
    }
}

static void f16_to_f32_avx512(const void *src, float *dst, int64_t n) {
    const uint16_t *p = src;
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m256i h = _mm256_maskz_loadu_epi16(m, p + i);
        _mm512_mask_storeu_ps(dst + i, m, _mm512_cvtph_ps(h));
    }
}

/* 6 rows x 32 columns: 12 accumulators, two panel loads and six broadcasts per k. */
#define MR512 6

static void gemm_f32_tile_avx512(const float *x, int64_t ldx, int64_t m, const float *wp, int64_t k,
                                 float *y, int64_t ldy, int64_t n) {
    __m512 acc[MR512][2];
    for (int i = 0; i < MR512; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    if (m == MR512) {
        for (int64_t kk = 0; kk < k; kk++) {
            __m512 w0 = _mm512_loadu_ps(wp + kk * CR_GEMM_NR), w1 = _mm512_loadu_ps(wp + kk * CR_GEMM_NR + 16);
            for (int i = 0; i < MR512; i++) {
                __m512 xv = _mm512_set1_ps(x[i * ldx + kk]);
                acc[i][0] = _mm512_fmadd_ps(xv, w0, acc[i][0]);
                acc[i][1] = _mm512_fmadd_ps(xv, w1, acc[i][1]);
            }
        }
    } else {
        for (int64_t kk = 0; kk < k; kk++) {
            __m512 w0 = _mm512_loadu_ps(wp + kk * CR_GEMM_NR), w1 = _mm512_loadu_ps(wp + kk * CR_GEMM_NR + 16);
            for (int64_t i = 0; i < m; i++) {
                __m512 xv = _mm512_set1_ps(x[i * ldx + kk]);
                acc[i][0] = _mm512_fmadd_ps(xv, w0, acc[i][0]);
                acc[i][1] = _mm512_fmadd_ps(xv, w1, acc[i][1]);
            }
        }
    }
    __mmask16 m0 = tail_mask(n), m1 = tail_mask(n > 16 ? n - 16 : 0);
    if (n <= 16) m1 = 0;
    for (int64_t i = 0; i < m; i++) {
        _mm512_mask_storeu_ps(y + i * ldy, m0, acc[i][0]);
        _mm512_mask_storeu_ps(y + i * ldy + 16, m1, acc[i][1]);
    }
}

static const cr_kernels avx512_table = {
    .isa = CR_ISA_AVX512,
    .gemm_f32_tile = gemm_f32_tile_avx512,
    .gemm_mr = MR512,
    .dot_f32 = dot_f32_avx512,
    .axpy_f32 = axpy_f32_avx512,
    .sumsq_f32 = sumsq_f32_avx512,
    .bf16_to_f32 = bf16_to_f32_avx512,
    .f16_to_f32 = f16_to_f32_avx512,
};

const cr_kernels *cr_kernels_avx512(void) { return &avx512_table; }
