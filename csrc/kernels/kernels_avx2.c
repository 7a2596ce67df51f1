/* kernels_avx2.c — AVX2 + FMA + F16C kernels (the x86-64 baseline that crossrank expects on any
 * CPU of the last decade). Compiled with -mavx2 -mfma -mf16c; called only after dispatch checked
 * the CPU and OS. */
#include <immintrin.h>
#include <string.h>

#include "kernels.h"

static inline float hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

static float dot_f32_avx2(const float *a, const float *b, int64_t n) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    for (; i + 8 <= n; i += 8)
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    float s = hsum256(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static void axpy_f32_avx2(float alpha, const float *x, float *y, int64_t n) {
    __m256 va = _mm256_set1_ps(alpha);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += alpha * x[i];
}

static float sumsq_f32_avx2(const float *x, int64_t n) { return dot_f32_avx2(x, x, n); }

static void bf16_to_f32_avx2(const void *src, float *dst, int64_t n) {
    const unsigned char *p = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(p + 2 * i));
        __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(w));
    }
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        uint32_t bits = (uint32_t)h << 16;
        memcpy(&dst[i], &bits, 4);
    }
}

static void f16_to_f32_avx2(const void *src, float *dst, int64_t n) {
    const unsigned char *p = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 2 * i))));
    if (i < n) {
        uint16_t tail[8] = {0};
        float out[8];
        memcpy(tail, p + 2 * i, (size_t)(n - i) * 2);
        _mm256_storeu_ps(out, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)tail)));
        memcpy(dst + i, out, (size_t)(n - i) * 4);
    }
}

/* 3 rows x 32 columns: 12 accumulators and four panel loads per k (all 16 ymm registers). */
#define MR2 3

static void gemm_f32_tile_avx2(const float *x, int64_t ldx, int64_t m, const float *wp, int64_t k,
                               float *y, int64_t ldy, int64_t n) {
    __m256 acc[MR2][4];
    for (int i = 0; i < MR2; i++)
        for (int c = 0; c < 4; c++) acc[i][c] = _mm256_setzero_ps();
    for (int64_t kk = 0; kk < k; kk++) {
        const float *w = wp + kk * CR_GEMM_NR;
        __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps(w + 8), w2 = _mm256_loadu_ps(w + 16),
               w3 = _mm256_loadu_ps(w + 24);
        for (int64_t i = 0; i < m; i++) {
            __m256 xv = _mm256_broadcast_ss(x + i * ldx + kk);
            acc[i][0] = _mm256_fmadd_ps(xv, w0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(xv, w1, acc[i][1]);
            acc[i][2] = _mm256_fmadd_ps(xv, w2, acc[i][2]);
            acc[i][3] = _mm256_fmadd_ps(xv, w3, acc[i][3]);
        }
    }
    for (int64_t i = 0; i < m; i++) {
        float row[CR_GEMM_NR];
        for (int c = 0; c < 4; c++) _mm256_storeu_ps(row + 8 * c, acc[i][c]);
        memcpy(y + i * ldy, row, (size_t)n * sizeof(float));
    }
}

/* bfloat16 widened in registers: a pair's high half is the float of element 2p+1 once masked,
 * its low half shifted up is element 2p. 2 rows x 32 columns: 8 accumulators, 4 broadcasts and
 * 3 registers of panel in flight fit the 16 ymm registers. */
#define MRB2 2

static inline __attribute__((always_inline)) void bf16_rows_avx2(const int M, const uint16_t *x, int64_t ldx,
                                                                const uint16_t *wp, int64_t kp, float *y,
                                                                int64_t ldy, int64_t n) {
    const __m256i high = _mm256_set1_epi32((int)0xffff0000u);
    __m256 acc[MRB2][4];
    for (int i = 0; i < M; i++)
        for (int c = 0; c < 4; c++) acc[i][c] = _mm256_setzero_ps();
    for (int64_t p = 0; p < kp; p++) {
        __m256 x_odd[MRB2], x_even[MRB2];
        for (int i = 0; i < M; i++) {
            int32_t pair;
            memcpy(&pair, x + i * ldx + 2 * p, 4);
            __m256i v = _mm256_set1_epi32(pair);
            x_odd[i] = _mm256_castsi256_ps(_mm256_and_si256(v, high));
            x_even[i] = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
        }
        const uint16_t *w = wp + p * 2 * CR_GEMM_NR;
        for (int c = 0; c < 4; c++) {
            __m256i raw = _mm256_loadu_si256((const __m256i *)(w + 16 * c));
            __m256 w_odd = _mm256_castsi256_ps(_mm256_and_si256(raw, high));
            __m256 w_even = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));
            for (int i = 0; i < M; i++) {
                acc[i][c] = _mm256_fmadd_ps(x_odd[i], w_odd, acc[i][c]);
                acc[i][c] = _mm256_fmadd_ps(x_even[i], w_even, acc[i][c]);
            }
        }
    }
    for (int i = 0; i < M; i++) {
        float row[CR_GEMM_NR];
        for (int c = 0; c < 4; c++) _mm256_storeu_ps(row + 8 * c, acc[i][c]);
        memcpy(y + i * ldy, row, (size_t)n * sizeof(float));
    }
}

static void gemm_bf16_tile_avx2(const uint16_t *x, int64_t ldx, int64_t m, const uint16_t *wp, int64_t kp,
                                float *y, int64_t ldy, int64_t n) {
    if (m == MRB2) {
        bf16_rows_avx2(MRB2, x, ldx, wp, kp, y, ldy, n);
        return;
    }
    for (int64_t i = 0; i < m; i++) bf16_rows_avx2(1, x + i * ldx, ldx, wp, kp, y + i * ldy, ldy, n);
}

static void f32_to_bf16_avx2(const float *src, uint16_t *dst, int64_t n) {
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff),
                  abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000),
                  quiet = _mm256_set1_epi32(0x40);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i b = _mm256_castps_si256(_mm256_loadu_ps(src + i));
        __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), one);
        __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(b, bias), lsb), 16);
        __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(b, abs_mask), inf);
        __m256i out = _mm256_blendv_epi8(rounded, _mm256_or_si256(_mm256_srli_epi32(b, 16), quiet), nan);
        __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(out), _mm256_extracti128_si256(out, 1));
        _mm_storeu_si128((__m128i *)(dst + i), packed);
    }
    for (; i < n; i++) dst[i] = cr_f32_to_bf16_one(src[i]);
}

static const cr_kernels avx2_table = {
    .isa = CR_ISA_AVX2,
    .gemm_f32_tile = gemm_f32_tile_avx2,
    .gemm_mr = MR2,
    .dot_f32 = dot_f32_avx2,
    .axpy_f32 = axpy_f32_avx2,
    .sumsq_f32 = sumsq_f32_avx2,
    .bf16_to_f32 = bf16_to_f32_avx2,
    .f16_to_f32 = f16_to_f32_avx2,
    .gemm_bf16_tile = gemm_bf16_tile_avx2,
    .gemm_bf16_mr = MRB2,
    .f32_to_bf16 = f32_to_bf16_avx2,
};

const cr_kernels *cr_kernels_avx2(void) { return &avx2_table; }
