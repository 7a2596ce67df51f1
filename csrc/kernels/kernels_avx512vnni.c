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

/* Rows below 12 (the ragged bottom of a row block): intrinsics, one instance per row count (a
 * tail run one row at a time is one chain pair, bound by vpdpbusd's latency). At most 6 rows
 * at once: 12 accumulators leave GCC room to keep each tied to its instruction. */
#define MRI8_TAIL 6
static inline __attribute__((always_inline)) void i8_rows_vnni(const int M, const uint8_t *x, int64_t ldx,
                                                              const int8_t *wp, int64_t kq, int32_t *y,
                                                              int64_t ldy, int64_t n) {
    __m512i acc[MRI8_TAIL][2];
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
    for (int i = 0; i < M; i++) {
        _mm512_mask_storeu_epi32(y + i * ldy, tail_mask(n), acc[i][0]);
        _mm512_mask_storeu_epi32(y + i * ldy + 16, n > 16 ? tail_mask(n - 16) : 0, acc[i][1]);
    }
}

/* m < MRI8 rows: at most MRI8_TAIL at a time, each in the instance for its count */
static void i8_tail_vnni(const uint8_t *x, int64_t ldx, int64_t m, const int8_t *wp, int64_t kq, int32_t *y,
                         int64_t ldy, int64_t n) {
    for (int64_t r = 0; r < m; r += MRI8_TAIL) {
        const uint8_t *xr = x + r * ldx;
        int32_t *yr = y + r * ldy;
        switch (m - r < MRI8_TAIL ? m - r : MRI8_TAIL) {
#define I8_ROWS_CASE(M)                                  \
    case M:                                              \
        i8_rows_vnni(M, xr, ldx, wp, kq, yr, ldy, n);    \
        break;
            CR_ROW_COUNTS_6(I8_ROWS_CASE)
#undef I8_ROWS_CASE
        }
    }
}

/* The full 12 x 32 tile as one asm loop with the accumulators pinned in zmm8..zmm31. Written
 * out because GCC 12 does not tie the vpdpbusd intrinsic's accumulator to its destination: it
 * copied and spilled every accumulator around every instruction and ran at a third of the
 * VNNI peak. Rows are addressed from four bases (rows 0, 3, 6, 9) plus 0, ldx or 2 ldx. */
#define I8_ROW(disp, base, idx, bc, lo, hi)                                   \
    "vpbroadcastd " #disp "(%[" #base "]" idx "), %%zmm" #bc "\n\t"          \
    "vpdpbusd %%zmm0, %%zmm" #bc ", %%zmm" #lo "\n\t"                       \
    "vpdpbusd %%zmm1, %%zmm" #bc ", %%zmm" #hi "\n\t"
#define I8_GROUP(disp, wdisp0, wdisp1)                                        \
    "vmovdqu64 " #wdisp0 "(%[w]), %%zmm0\n\t"                                \
    "vmovdqu64 " #wdisp1 "(%[w]), %%zmm1\n\t"                                \
    I8_ROW(disp, x0, "", 2, 8, 9)                                             \
    I8_ROW(disp, x0, ",%[l1]", 3, 10, 11)                                     \
    I8_ROW(disp, x0, ",%[l2]", 4, 12, 13)                                     \
    I8_ROW(disp, x3, "", 5, 14, 15)                                           \
    I8_ROW(disp, x3, ",%[l1]", 6, 16, 17)                                     \
    I8_ROW(disp, x3, ",%[l2]", 7, 18, 19)                                     \
    I8_ROW(disp, x6, "", 2, 20, 21)                                           \
    I8_ROW(disp, x6, ",%[l1]", 3, 22, 23)                                     \
    I8_ROW(disp, x6, ",%[l2]", 4, 24, 25)                                     \
    I8_ROW(disp, x9, "", 5, 26, 27)                                           \
    I8_ROW(disp, x9, ",%[l1]", 6, 28, 29)                                     \
    I8_ROW(disp, x9, ",%[l2]", 7, 30, 31)
#define I8_STORE(r, lo, hi)                                                   \
    "vmovdqa64 %%zmm" #lo ", " #r "*128(%[out])\n\t"                          \
    "vmovdqa64 %%zmm" #hi ", " #r "*128+64(%[out])\n\t"

/* The 12 x 32 sums into out (aligned, rows of CR_GEMM_NR). */
static void i8_tile12_vnni(const uint8_t *x, int64_t ldx, const int8_t *wp, int64_t kq, int32_t *out) {
    const uint8_t *x0 = x, *x3 = x + 3 * ldx, *x6 = x + 6 * ldx, *x9 = x + 9 * ldx;
    const int8_t *w = wp;
    int64_t l1 = ldx, l2 = 2 * ldx, pairs = kq / 2, odd = kq & 1;
    __asm__ volatile(
        "vpxord %%zmm8, %%zmm8, %%zmm8\n\t"
        "vmovdqa64 %%zmm8, %%zmm9\n\t vmovdqa64 %%zmm8, %%zmm10\n\t vmovdqa64 %%zmm8, %%zmm11\n\t"
        "vmovdqa64 %%zmm8, %%zmm12\n\t vmovdqa64 %%zmm8, %%zmm13\n\t vmovdqa64 %%zmm8, %%zmm14\n\t"
        "vmovdqa64 %%zmm8, %%zmm15\n\t vmovdqa64 %%zmm8, %%zmm16\n\t vmovdqa64 %%zmm8, %%zmm17\n\t"
        "vmovdqa64 %%zmm8, %%zmm18\n\t vmovdqa64 %%zmm8, %%zmm19\n\t vmovdqa64 %%zmm8, %%zmm20\n\t"
        "vmovdqa64 %%zmm8, %%zmm21\n\t vmovdqa64 %%zmm8, %%zmm22\n\t vmovdqa64 %%zmm8, %%zmm23\n\t"
        "vmovdqa64 %%zmm8, %%zmm24\n\t vmovdqa64 %%zmm8, %%zmm25\n\t vmovdqa64 %%zmm8, %%zmm26\n\t"
        "vmovdqa64 %%zmm8, %%zmm27\n\t vmovdqa64 %%zmm8, %%zmm28\n\t vmovdqa64 %%zmm8, %%zmm29\n\t"
        "vmovdqa64 %%zmm8, %%zmm30\n\t vmovdqa64 %%zmm8, %%zmm31\n\t"
        "test %[pairs], %[pairs]\n\t"
        "jz 2f\n\t"
        "1:\n\t"
        I8_GROUP(0, 0, 64)
        I8_GROUP(4, 128, 192)
        "add $8, %[x0]\n\t add $8, %[x3]\n\t add $8, %[x6]\n\t add $8, %[x9]\n\t"
        "add $256, %[w]\n\t"
        "dec %[pairs]\n\t"
        "jnz 1b\n\t"
        "2:\n\t"
        "test %[odd], %[odd]\n\t"
        "jz 3f\n\t"
        I8_GROUP(0, 0, 64)
        "3:\n\t"
        I8_STORE(0, 8, 9) I8_STORE(1, 10, 11) I8_STORE(2, 12, 13) I8_STORE(3, 14, 15)
        I8_STORE(4, 16, 17) I8_STORE(5, 18, 19) I8_STORE(6, 20, 21) I8_STORE(7, 22, 23)
        I8_STORE(8, 24, 25) I8_STORE(9, 26, 27) I8_STORE(10, 28, 29) I8_STORE(11, 30, 31)
        : [x0] "+r"(x0), [x3] "+r"(x3), [x6] "+r"(x6), [x9] "+r"(x9), [w] "+r"(w), [pairs] "+r"(pairs)
        : [l1] "r"(l1), [l2] "r"(l2), [odd] "r"(odd), [out] "r"(out)
        : "cc", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
          "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18",
          "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28",
          "xmm29", "xmm30", "xmm31");
}

static void gemm_i8_tile_vnni(const uint8_t *x, int64_t ldx, int64_t m, const int8_t *wp, int64_t kq,
                              int32_t *y, int64_t ldy, int64_t n) {
    if (m == MRI8) {
        _Alignas(64) int32_t out[MRI8 * CR_GEMM_NR];
        i8_tile12_vnni(x, ldx, wp, kq, out);
        __mmask16 m0 = tail_mask(n), m1 = n > 16 ? tail_mask(n - 16) : 0;
        for (int i = 0; i < MRI8; i++) {
            _mm512_mask_storeu_epi32(y + i * ldy, m0, _mm512_load_si512(out + i * CR_GEMM_NR));
            _mm512_mask_storeu_epi32(y + i * ldy + 16, m1, _mm512_load_si512(out + i * CR_GEMM_NR + 16));
        }
        return;
    }
    i8_tail_vnni(x, ldx, m, wp, kq, y, ldy, n);
}

/* gemm_i8_tile and the dequantization in one: rows of out (int32 sums) to rows of y. */
static void gemm_i8_tile_f32_vnni(const uint8_t *x, int64_t ldx, int64_t m, const int8_t *wp, int64_t kq,
                                  float *y, int64_t ldy, int64_t n, const float *xscale,
                                  const int32_t *colsum, const float *wscale) {
    _Alignas(64) int32_t out[MRI8 * CR_GEMM_NR];
    if (m == MRI8) {
        i8_tile12_vnni(x, ldx, wp, kq, out);
    } else {
        i8_tail_vnni(x, ldx, m, wp, kq, out, CR_GEMM_NR, CR_GEMM_NR);
    }
    __mmask16 m0 = tail_mask(n), m1 = n > 16 ? tail_mask(n - 16) : 0;
    /* 128 colsum: the unsigned inputs carry an offset of 128 */
    const __m512i off0 = _mm512_slli_epi32(_mm512_maskz_loadu_epi32(m0, colsum), 7);
    const __m512i off1 = _mm512_slli_epi32(_mm512_maskz_loadu_epi32(m1, colsum + 16), 7);
    const __m512 ws0 = _mm512_maskz_loadu_ps(m0, wscale), ws1 = _mm512_maskz_loadu_ps(m1, wscale + 16);
    for (int64_t i = 0; i < m; i++) {
        __m512 sx = _mm512_set1_ps(xscale[i]);
        __m512 lo = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_load_si512(out + i * CR_GEMM_NR), off0));
        __m512 hi = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_load_si512(out + i * CR_GEMM_NR + 16), off1));
        _mm512_mask_storeu_ps(y + i * ldy, m0, _mm512_mul_ps(lo, _mm512_mul_ps(sx, ws0)));
        _mm512_mask_storeu_ps(y + i * ldy + 16, m1, _mm512_mul_ps(hi, _mm512_mul_ps(sx, ws1)));
    }
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
    .gemm_i8_tile_f32 = gemm_i8_tile_f32_vnni,
};

const cr_kernels *cr_kernels_avx512vnni(void) { return &avx512vnni_table; }
