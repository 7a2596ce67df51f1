/* kernels_avx512vnni.c — the int8 GEMM on AVX512_VNNI (vpdpbusd: four unsigned x signed byte
 * products added into each int32 lane per instruction). Compiled with the AVX-512 and VNNI
 * flags; dispatch installs it only when the CPU and OS support it. */
#include <immintrin.h>
#include <string.h>

#include "kernels.h"

static inline __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
}

/* 12 rows x 32 columns: 24 accumulators, two panel loads and one broadcast per row and group. */
#define MRI8 12

static inline __attribute__((always_inline)) void i8_rows_vnni(const int M, const uint8_t *x, int64_t ldx,
                                                              const int8_t *wp, int64_t kq, int32_t *y,
                                                              int64_t ldy, int64_t n) {
    __m512i acc[MRI8][2];
    for (int i = 0; i < M; i++) acc[i][0] = acc[i][1] = _mm512_setzero_si512();
    for (int64_t g = 0; g < kq; g++) {
        const int8_t *w = wp + g * 4 * CR_GEMM_NR;
        __m512i w0 = _mm512_loadu_si512(w), w1 = _mm512_loadu_si512(w + 64);
        for (int i = 0; i < M; i++) {
            int32_t quad;
            memcpy(&quad, x + i * ldx + 4 * g, 4);
            __m512i xv = _mm512_set1_epi32(quad);
            acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], xv, w0);
            acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], xv, w1);
        }
    }
    __mmask16 m0 = tail_mask(n), m1 = n > 16 ? tail_mask(n - 16) : 0;
    for (int i = 0; i < M; i++) {
        _mm512_mask_storeu_epi32(y + i * ldy, m0, acc[i][0]);
        _mm512_mask_storeu_epi32(y + i * ldy + 16, m1, acc[i][1]);
    }
}

static void gemm_i8_tile_vnni(const uint8_t *x, int64_t ldx, int64_t m, const int8_t *wp, int64_t kq,
                              int32_t *y, int64_t ldy, int64_t n) {
    if (m == MRI8) {
        i8_rows_vnni(MRI8, x, ldx, wp, kq, y, ldy, n);
        return;
    }
    for (int64_t i = 0; i < m; i++) i8_rows_vnni(1, x + i * ldx, ldx, wp, kq, y + i * ldy, ldy, n);
}

/* Peak probe: 12 independent vpdpbusd chains in named registers. Each iteration: 12 x 16 x 8 OP. */
int32_t cr_peak_vnni(int64_t iters) {
    __m512i a0 = _mm512_set1_epi32(0), a1 = _mm512_set1_epi32(1), a2 = _mm512_set1_epi32(2),
            a3 = _mm512_set1_epi32(3), a4 = _mm512_set1_epi32(4), a5 = _mm512_set1_epi32(5),
            a6 = _mm512_set1_epi32(6), a7 = _mm512_set1_epi32(7), a8 = _mm512_set1_epi32(8),
            a9 = _mm512_set1_epi32(9), a10 = _mm512_set1_epi32(10), a11 = _mm512_set1_epi32(11);
    const __m512i x = _mm512_set1_epi8(3), w = _mm512_set1_epi8(-2);
    for (int64_t it = 0; it < iters; it++) {
        a0 = _mm512_dpbusd_epi32(a0, x, w); a1 = _mm512_dpbusd_epi32(a1, x, w); a2 = _mm512_dpbusd_epi32(a2, x, w);
        a3 = _mm512_dpbusd_epi32(a3, x, w); a4 = _mm512_dpbusd_epi32(a4, x, w); a5 = _mm512_dpbusd_epi32(a5, x, w);
        a6 = _mm512_dpbusd_epi32(a6, x, w); a7 = _mm512_dpbusd_epi32(a7, x, w); a8 = _mm512_dpbusd_epi32(a8, x, w);
        a9 = _mm512_dpbusd_epi32(a9, x, w); a10 = _mm512_dpbusd_epi32(a10, x, w); a11 = _mm512_dpbusd_epi32(a11, x, w);
        __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5));
    }
    __m512i s = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                                 _mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7)));
    s = _mm512_add_epi32(s, _mm512_add_epi32(_mm512_add_epi32(a8, a9), _mm512_add_epi32(a10, a11)));
    return _mm512_reduce_add_epi32(s);
}

static const cr_kernels avx512vnni_table = {
    .isa = CR_ISA_AVX512VNNI,
    .gemm_i8_tile = gemm_i8_tile_vnni,
    .gemm_i8_mr = MRI8,
};

const cr_kernels *cr_kernels_avx512vnni(void) { return &avx512vnni_table; }
