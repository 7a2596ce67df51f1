/* kernels_avx512bf16.c — the bfloat16 GEMM on AVX512_BF16 (vdpbf16ps: two bf16 products added
 * into each float32 lane per instruction) and the rounding conversion (vcvtneps2bf16). Compiled
 * with the AVX-512 and AVX512_BF16 flags; dispatch installs these entries over the AVX-512 table
 * only when the CPU and OS support them. */
#include <immintrin.h>
#include <string.h>

#include "kernels.h"

static inline __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
}

/* 12 rows x 32 columns: 24 accumulators, two panel loads and one broadcast per row and pair. */
#define MRBF 12
_Static_assert(MRBF == 12, "gemm_bf16_tile_dp has one case per row count up to MRBF");

static inline __attribute__((always_inline)) void bf16_rows_dp(const int M, const uint16_t *x, int64_t ldx,
                                                              const uint16_t *wp, int64_t kp, float *y,
                                                              int64_t ldy, int64_t n) {
    __m512 acc[MRBF][2];
    for (int i = 0; i < M; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int64_t p = 0; p < kp; p++) {
        const uint16_t *w = wp + p * 2 * CR_GEMM_NR;
        __m512bh w0 = (__m512bh)_mm512_loadu_si512(w), w1 = (__m512bh)_mm512_loadu_si512(w + 32);
        for (int i = 0; i < M; i++) {
            int32_t pair;
            memcpy(&pair, x + i * ldx + 2 * p, 4);
            __m512bh xv = (__m512bh)_mm512_set1_epi32(pair);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], xv, w0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], xv, w1);
        }
    }
    __mmask16 m0 = tail_mask(n), m1 = n > 16 ? tail_mask(n - 16) : 0;
    for (int i = 0; i < M; i++) {
        _mm512_mask_storeu_ps(y + i * ldy, m0, acc[i][0]);
        _mm512_mask_storeu_ps(y + i * ldy + 16, m1, acc[i][1]);
    }
}

static void gemm_bf16_tile_dp(const uint16_t *x, int64_t ldx, int64_t m, const uint16_t *wp, int64_t kp,
                              float *y, int64_t ldy, int64_t n) {
    /* one instance per row count: a row tail run one row at a time is a single chain pair, bound
     * by vdpbf16ps's latency at a sixth of the tile's rate */
    switch (m) {
#define BF16_ROWS_CASE(M)                             \
    case M:                                           \
        bf16_rows_dp(M, x, ldx, wp, kp, y, ldy, n);   \
        return;
        CR_ROW_COUNTS_12(BF16_ROWS_CASE)
#undef BF16_ROWS_CASE
    }
}

static void f32_to_bf16_cvtne(const float *src, uint16_t *dst, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i));
        _mm256_mask_storeu_epi16(dst + i, m, (__m256i)h);
    }
}

/* The scalar model of TDPBF16PS (kernels.h) at vdpbf16ps's rate, for int8 models' attention on
 * this level. vdpbf16ps adds the high product of a pair, then the low one, each with one rounding
 * and the flushes the model asks for, so a pair whose high half is product 2t of a chain and whose
 * low half is product 2t + 1 is two steps of that chain in one instruction. Per block, the even
 * chain E takes pairs (x[4s], x[4s + 2]) and the odd chain O pairs (x[4s + 1], x[4s + 3]), s < 8:
 * the inputs are permuted into that order once per 16-row group and block, the weights in
 * registers from the panel's (w[2t], w[2t + 1]) pairs. The block's sum is added to out in float32
 * with FTZ/DAZ set for the call. Every row of a group is computed and written (no row tail). */
#define AMX_MODEL_ROWS 8

static void gemm_bf16_amx_dp(const uint16_t *x, int64_t m, const uint16_t *wp, int64_t kb, int64_t kb_stride,
                             int64_t np, float *out, int64_t ldo, int accumulate, const void *next,
                             int64_t next_bytes) {
    (void)next, (void)next_bytes; /* a prefetch hint */
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | CR_MXCSR_FTZ_DAZ);
    /* word i of a permuted block row: dword s < 8 is (x[4s + 2], x[4s]) (low, high), dword 8 + s
     * is (x[4s + 3], x[4s + 1]) */
    uint16_t order[32];
    for (int s = 0; s < 8; s++) {
        order[2 * s] = (uint16_t)(4 * s + 2);
        order[2 * s + 1] = (uint16_t)(4 * s);
        order[16 + 2 * s] = (uint16_t)(4 * s + 3);
        order[17 + 2 * s] = (uint16_t)(4 * s + 1);
    }
    const __m512i perm = _mm512_loadu_si512(order);
    const __m512i low = _mm512_set1_epi32(0xffff), high = _mm512_set1_epi32((int)0xffff0000u);
    int32_t xd[16 * 16] __attribute__((aligned(64)));
    for (int64_t g = 0; g < (m + 15) / 16; g++)
        for (int64_t b = 0; b < kb; b++) {
            const uint16_t *xb = x + (g * kb_stride + b) * 16 * CR_AMX_BF16_K;
            for (int r = 0; r < 16; r++)
                _mm512_store_si512(xd + 16 * r, _mm512_permutexvar_epi16(
                                                    perm, _mm512_loadu_si512(xb + r * CR_AMX_BF16_K)));
            for (int64_t p = 0; p < np; p++)
                for (int c = 0; c < CR_GEMM_NR; c += 16) {
                    const uint16_t *wb = wp + (p * kb_stride + b) * 16 * 2 * CR_GEMM_NR + 2 * c;
                    for (int r0 = 0; r0 < 16; r0 += AMX_MODEL_ROWS) {
                        __m512 even[AMX_MODEL_ROWS], odd[AMX_MODEL_ROWS];
                        for (int r = 0; r < AMX_MODEL_ROWS; r++) even[r] = odd[r] = _mm512_setzero_ps();
                        for (int s = 0; s < 8; s++) {
                            /* pair rows 2s, 2s + 1: (w[4s], w[4s + 1]) and (w[4s + 2], w[4s + 3]) */
                            __m512i p0 = _mm512_loadu_si512(wb + 2 * s * 2 * CR_GEMM_NR);
                            __m512i p1 = _mm512_loadu_si512(wb + (2 * s + 1) * 2 * CR_GEMM_NR);
                            /* a | (b & c): 0xf8 */
                            __m512bh we =
                                (__m512bh)_mm512_ternarylogic_epi32(_mm512_slli_epi32(p0, 16), p1, low, 0xf8);
                            __m512bh wo =
                                (__m512bh)_mm512_ternarylogic_epi32(_mm512_srli_epi32(p1, 16), p0, high, 0xf8);
                            const int32_t *xs = xd + 16 * r0 + s;
                            for (int r = 0; r < AMX_MODEL_ROWS; r++) {
                                even[r] = _mm512_dpbf16_ps(even[r], (__m512bh)_mm512_set1_epi32(xs[16 * r]), we);
                                odd[r] = _mm512_dpbf16_ps(odd[r], (__m512bh)_mm512_set1_epi32(xs[16 * r + 8]), wo);
                            }
                        }
                        for (int r = 0; r < AMX_MODEL_ROWS; r++) {
                            float *o = out + (g * 16 + r0 + r) * ldo + p * CR_GEMM_NR + c;
                            __m512 acc = b > 0 || accumulate ? _mm512_loadu_ps(o) : _mm512_setzero_ps();
                            _mm512_storeu_ps(o, _mm512_add_ps(acc, _mm512_add_ps(even[r], odd[r])));
                        }
                    }
                }
        }
    _mm_setcsr(csr);
}

static const cr_kernels avx512bf16_table = {
    .isa = CR_ISA_AVX512BF16,
    .gemm_bf16_tile = gemm_bf16_tile_dp,
    .gemm_bf16_mr = MRBF,
    .f32_to_bf16 = f32_to_bf16_cvtne,
    .gemm_bf16_amx = gemm_bf16_amx_dp,
};

const cr_kernels *cr_kernels_avx512bf16(void) { return &avx512bf16_table; }

/* Peak probe: 12 independent vdpbf16ps chains in named registers (an array lets GCC interchange
 * the loops and keep the chains in memory). Each iteration: 12 x 16 x 4 FLOP. */
float cr_peak_dpbf16(int64_t iters) {
    __m512 a0 = _mm512_set1_ps(0.1f), a1 = _mm512_set1_ps(0.2f), a2 = _mm512_set1_ps(0.3f),
           a3 = _mm512_set1_ps(0.4f), a4 = _mm512_set1_ps(0.5f), a5 = _mm512_set1_ps(0.6f),
           a6 = _mm512_set1_ps(0.7f), a7 = _mm512_set1_ps(0.8f), a8 = _mm512_set1_ps(0.9f),
           a9 = _mm512_set1_ps(1.0f), a10 = _mm512_set1_ps(1.1f), a11 = _mm512_set1_ps(1.2f);
    const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), w = (__m512bh)_mm512_set1_epi16(0x3800);
    for (int64_t it = 0; it < iters; it++) {
        a0 = _mm512_dpbf16_ps(a0, x, w); a1 = _mm512_dpbf16_ps(a1, x, w); a2 = _mm512_dpbf16_ps(a2, x, w);
        a3 = _mm512_dpbf16_ps(a3, x, w); a4 = _mm512_dpbf16_ps(a4, x, w); a5 = _mm512_dpbf16_ps(a5, x, w);
        a6 = _mm512_dpbf16_ps(a6, x, w); a7 = _mm512_dpbf16_ps(a7, x, w); a8 = _mm512_dpbf16_ps(a8, x, w);
        a9 = _mm512_dpbf16_ps(a9, x, w); a10 = _mm512_dpbf16_ps(a10, x, w); a11 = _mm512_dpbf16_ps(a11, x, w);
        __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5));
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                             _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    return _mm512_reduce_add_ps(s);
}
