/* kernels_avxvnni.c — the int8 GEMM on AVX-VNNI (the VEX-encoded vpdpbusd on 256-bit registers,
 * of CPUs with AVX2 and no AVX-512, e.g. Intel's client cores). Compiled with the AVX2 and
 * AVX-VNNI flags; dispatch installs it over the AVX2 table only when the CPU supports it. */
#include <immintrin.h>
#include <string.h>

#include "kernels.h"

/* 3 rows x 32 columns: 12 accumulators (of the 16 ymm registers), one broadcast per row and
 * group, the panel's four 32-byte quarters read as memory operands. */
#define MRVNNI 3

/* acc += x (u8) . w (s8) as an asm statement: GCC 12 does not tie the intrinsic's accumulator
 * to its destination (see kernels_avx512vnni.c). */
#define DPBUSD_YMM(acc, xv, mem) __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(xv), "m"(mem))

/* Rows below 3: one row at a time. */
static void i8_row_avxvnni(const uint8_t *x, const int8_t *wp, int64_t kq, int32_t *y, int64_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t g = 0; g < kq; g++) {
        const __m256i *w = (const __m256i *)(wp + g * 4 * CR_GEMM_NR);
        int32_t quad;
        memcpy(&quad, x + 4 * g, 4);
        __m256i xv = _mm256_set1_epi32(quad);
        DPBUSD_YMM(a0, xv, w[0]);
        DPBUSD_YMM(a1, xv, w[1]);
        DPBUSD_YMM(a2, xv, w[2]);
        DPBUSD_YMM(a3, xv, w[3]);
    }
    int32_t row[CR_GEMM_NR];
    _mm256_storeu_si256((__m256i *)row, a0);
    _mm256_storeu_si256((__m256i *)(row + 8), a1);
    _mm256_storeu_si256((__m256i *)(row + 16), a2);
    _mm256_storeu_si256((__m256i *)(row + 24), a3);
    memcpy(y, row, (size_t)n * sizeof(int32_t));
}

/* The 3 x 32 tile as one asm loop, accumulators pinned in ymm4..ymm15. */
#define VNNI_ROW(base, bc, a0, a1, a2, a3)                                    \
    "vpbroadcastd (%[" #base "]), %%ymm" #bc "\n\t"                            \
    "%{vex%} vpdpbusd (%[w]), %%ymm" #bc ", %%ymm" #a0 "\n\t"                    \
    "%{vex%} vpdpbusd 32(%[w]), %%ymm" #bc ", %%ymm" #a1 "\n\t"                  \
    "%{vex%} vpdpbusd 64(%[w]), %%ymm" #bc ", %%ymm" #a2 "\n\t"                  \
    "%{vex%} vpdpbusd 96(%[w]), %%ymm" #bc ", %%ymm" #a3 "\n\t"
#define VNNI_STORE(r, a0, a1, a2, a3)                                         \
    "vmovdqa %%ymm" #a0 ", " #r "*128(%[out])\n\t"                              \
    "vmovdqa %%ymm" #a1 ", " #r "*128+32(%[out])\n\t"                           \
    "vmovdqa %%ymm" #a2 ", " #r "*128+64(%[out])\n\t"                           \
    "vmovdqa %%ymm" #a3 ", " #r "*128+96(%[out])\n\t"

static void i8_tile3_avxvnni(const uint8_t *x, int64_t ldx, const int8_t *wp, int64_t kq, int32_t *y,
                             int64_t ldy, int64_t n) {
    _Alignas(32) int32_t out[MRVNNI * CR_GEMM_NR];
    const uint8_t *x0 = x, *x1 = x + ldx, *x2 = x + 2 * ldx;
    const int8_t *w = wp;
    int64_t groups = kq;
    __asm__ volatile(
        "vpxor %%xmm4, %%xmm4, %%xmm4\n\t"
        "vmovdqa %%ymm4, %%ymm5\n\t vmovdqa %%ymm4, %%ymm6\n\t vmovdqa %%ymm4, %%ymm7\n\t"
        "vmovdqa %%ymm4, %%ymm8\n\t vmovdqa %%ymm4, %%ymm9\n\t vmovdqa %%ymm4, %%ymm10\n\t"
        "vmovdqa %%ymm4, %%ymm11\n\t vmovdqa %%ymm4, %%ymm12\n\t vmovdqa %%ymm4, %%ymm13\n\t"
        "vmovdqa %%ymm4, %%ymm14\n\t vmovdqa %%ymm4, %%ymm15\n\t"
        "test %[groups], %[groups]\n\t"
        "jz 2f\n\t"
        "1:\n\t"
        VNNI_ROW(x0, 0, 4, 5, 6, 7)
        VNNI_ROW(x1, 1, 8, 9, 10, 11)
        VNNI_ROW(x2, 2, 12, 13, 14, 15)
        "add $4, %[x0]\n\t add $4, %[x1]\n\t add $4, %[x2]\n\t"
        "sub $-128, %[w]\n\t"
        "dec %[groups]\n\t"
        "jnz 1b\n\t"
        "2:\n\t"
        VNNI_STORE(0, 4, 5, 6, 7) VNNI_STORE(1, 8, 9, 10, 11) VNNI_STORE(2, 12, 13, 14, 15)
        : [x0] "+r"(x0), [x1] "+r"(x1), [x2] "+r"(x2), [w] "+r"(w), [groups] "+r"(groups)
        : [out] "r"(out)
        : "cc", "memory", "xmm0", "xmm1", "xmm2", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
          "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
    for (int i = 0; i < MRVNNI; i++) memcpy(y + i * ldy, out + i * CR_GEMM_NR, (size_t)n * sizeof(int32_t));
}

static void gemm_i8_tile_avxvnni(const uint8_t *x, int64_t ldx, int64_t m, const int8_t *wp, int64_t kq,
                                 int32_t *y, int64_t ldy, int64_t n) {
    if (m == MRVNNI) {
        i8_tile3_avxvnni(x, ldx, wp, kq, y, ldy, n);
        return;
    }
    for (int64_t i = 0; i < m; i++) i8_row_avxvnni(x + i * ldx, wp, kq, y + i * ldy, n);
}

static const cr_kernels avxvnni_table = {
    .isa = CR_ISA_AVXVNNI,
    .gemm_i8_tile = gemm_i8_tile_avxvnni,
    .gemm_i8_mr = MRVNNI,
};

const cr_kernels *cr_kernels_avxvnni(void) { return &avxvnni_table; }
