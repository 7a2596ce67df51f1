/* kernels_avx512.c — AVX-512 F/BW/VL/DQ kernels. Compiled with the AVX-512 flags; called only
 * after dispatch checked the CPU bits and that the OS saves the ZMM and opmask state. Tails use
 * masked loads, so no scalar loop. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "attention_kernels.h"
#include "avx512_inline.h"
#include "kernels.h"

static inline __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xffff : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1u);
}

_Static_assert(CR_DOT_LANES == 2 * 16, "dot_f32_avx512 keeps the lanes in two vectors");

static float dot_f32_avx512(const float *a, const float *b, int64_t n) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(); /* lanes 0..15, 16..31 */
    int64_t i = 0;
    for (; i + CR_DOT_LANES <= n; i += CR_DOT_LANES) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
    }
    if (i < n) { /* masked-off lanes add 0 * 0, which leaves a lane's bits as they are */
        __mmask16 m0 = tail_mask(n - i), m1 = tail_mask(n - i - 16);
        acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, a + i), _mm512_maskz_loadu_ps(m0, b + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m1, a + i + 16), _mm512_maskz_loadu_ps(m1, b + i + 16), acc1);
    }
    __m512 v = _mm512_add_ps(acc0, acc1);                                                      /* 32 -> 16 */
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));         /* 16 -> 8 */
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));             /* 8 -> 4 */
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));                                                    /* 4 -> 2 */
    return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));                                   /* 2 -> 1 */
}

static void scale_f32_avx512(float alpha, float *x, int64_t n) {
    __m512 va = _mm512_set1_ps(alpha);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(va, _mm512_maskz_loadu_ps(m, x + i)));
    }
}

static float sumsq_f32_avx512(const float *x, int64_t n) { return dot_f32_avx512(x, x, n); }

static void norm_scale_f32_avx512(const float *x, const float *w, float r, float *y, int64_t n) {
    __m512 vr = _mm512_set1_ps(r);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 t = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vr);
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, w + i), t));
    }
}

static void rope_f32_avx512(float *v, const float *c, const float *s, int64_t half) {
    for (int64_t i = 0; i < half; i += 16) {
        __mmask16 m = tail_mask(half - i);
        __m512 x1 = _mm512_maskz_loadu_ps(m, v + i), x2 = _mm512_maskz_loadu_ps(m, v + i + half);
        __m512 vc = _mm512_maskz_loadu_ps(m, c + i), vs = _mm512_maskz_loadu_ps(m, s + i);
        _mm512_mask_storeu_ps(v + i, m, _mm512_sub_ps(_mm512_mul_ps(x1, vc), _mm512_mul_ps(x2, vs)));
        _mm512_mask_storeu_ps(v + i + half, m, _mm512_add_ps(_mm512_mul_ps(x2, vc), _mm512_mul_ps(x1, vs)));
    }
}

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
_Static_assert(MR512 == 6, "gemm_f32_tile_avx512 has one case per row count up to MR512");

static inline __attribute__((always_inline)) void f32_rows_avx512(const int M, const float *x, int64_t ldx,
                                                                 const float *wp, int64_t k, float *y,
                                                                 int64_t ldy, int64_t n) {
    __m512 acc[MR512][2];
    for (int i = 0; i < M; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int64_t kk = 0; kk < k; kk++) {
        __m512 w0 = _mm512_loadu_ps(wp + kk * CR_GEMM_NR), w1 = _mm512_loadu_ps(wp + kk * CR_GEMM_NR + 16);
        for (int i = 0; i < M; i++) {
            __m512 xv = _mm512_set1_ps(x[i * ldx + kk]);
            acc[i][0] = _mm512_fmadd_ps(xv, w0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(xv, w1, acc[i][1]);
        }
    }
    __mmask16 m0 = tail_mask(n), m1 = n > 16 ? tail_mask(n - 16) : 0;
    for (int i = 0; i < M; i++) {
        _mm512_mask_storeu_ps(y + i * ldy, m0, acc[i][0]);
        _mm512_mask_storeu_ps(y + i * ldy + 16, m1, acc[i][1]);
    }
}

static void gemm_f32_tile_avx512(const float *x, int64_t ldx, int64_t m, const float *wp, int64_t k,
                                 float *y, int64_t ldy, int64_t n) {
    /* one instance per row count: with m known at compile time the accumulators stay in
     * registers (a loop over a run-time m kept them on the stack) */
    switch (m) {
#define F32_ROWS_CASE(M)                               \
    case M:                                            \
        f32_rows_avx512(M, x, ldx, wp, k, y, ldy, n);  \
        return;
        CR_ROW_COUNTS_6(F32_ROWS_CASE)
#undef F32_ROWS_CASE
    }
}

/* bfloat16 widened in registers (AVX-512F without AVX512_BF16): 8 rows x 32 columns. */
#define MRB512 8
_Static_assert(MRB512 == 8, "gemm_bf16_tile_avx512 has one case per row count up to MRB512");

static inline __attribute__((always_inline)) void bf16_rows_avx512(const int M, const uint16_t *x, int64_t ldx,
                                                                  const uint16_t *wp, int64_t kp, float *y,
                                                                  int64_t ldy, int64_t n) {
    const __m512i high = _mm512_set1_epi32((int)0xffff0000u);
    __m512 acc[MRB512][2];
    for (int i = 0; i < M; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int64_t p = 0; p < kp; p++) {
        const uint16_t *w = wp + p * 2 * CR_GEMM_NR;
        __m512i raw0 = _mm512_loadu_si512(w), raw1 = _mm512_loadu_si512(w + 32);
        __m512 w_odd0 = _mm512_castsi512_ps(_mm512_and_si512(raw0, high));
        __m512 w_odd1 = _mm512_castsi512_ps(_mm512_and_si512(raw1, high));
        __m512 w_even0 = _mm512_castsi512_ps(_mm512_slli_epi32(raw0, 16));
        __m512 w_even1 = _mm512_castsi512_ps(_mm512_slli_epi32(raw1, 16));
        for (int i = 0; i < M; i++) {
            int32_t pair;
            memcpy(&pair, x + i * ldx + 2 * p, 4);
            __m512i v = _mm512_set1_epi32(pair);
            __m512 x_odd = _mm512_castsi512_ps(_mm512_and_si512(v, high));
            __m512 x_even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
            acc[i][0] = _mm512_fmadd_ps(x_even, w_even0, _mm512_fmadd_ps(x_odd, w_odd0, acc[i][0]));
            acc[i][1] = _mm512_fmadd_ps(x_even, w_even1, _mm512_fmadd_ps(x_odd, w_odd1, acc[i][1]));
        }
    }
    __mmask16 m0 = tail_mask(n), m1 = n > 16 ? tail_mask(n - 16) : 0;
    for (int i = 0; i < M; i++) {
        _mm512_mask_storeu_ps(y + i * ldy, m0, acc[i][0]);
        _mm512_mask_storeu_ps(y + i * ldy + 16, m1, acc[i][1]);
    }
}

static void gemm_bf16_tile_avx512(const uint16_t *x, int64_t ldx, int64_t m, const uint16_t *wp, int64_t kp,
                                  float *y, int64_t ldy, int64_t n) {
    /* one instance per row count, as the vdpbf16ps kernel: a one-row tail is latency-bound */
    switch (m) {
#define BF16_ROWS_CASE(M)                                 \
    case M:                                               \
        bf16_rows_avx512(M, x, ldx, wp, kp, y, ldy, n);   \
        return;
        CR_ROW_COUNTS_8(BF16_ROWS_CASE)
#undef BF16_ROWS_CASE
    }
}

/* The scalar model of TDPBF16PS (kernels.h) in float32 FMAs, for the levels without tiles or
 * vdpbf16ps (int8 models run attention in the tiles' order everywhere). Per 16-row group and block: the group's
 * bf16 inputs widened once to float32 (so each FMA broadcasts its input from memory), then per
 * 16 columns of a panel 8 rows' even and odd chains in registers, and the block's sum added to
 * the accumulator in out. FTZ and DAZ for the call give the model's flushes. Every row of a
 * group is computed and written, as the contract allows, so there is no row tail. */
#define AMX_MODEL_ROWS 8

static void gemm_bf16_amx_avx512(const uint16_t *x, int64_t m, const uint16_t *wp, int64_t kb, int64_t kb_stride,
                                 int64_t np, float *out, int64_t ldo, int accumulate, const void *next,
                                 int64_t next_bytes) {
    (void)next, (void)next_bytes; /* a prefetch hint */
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | CR_MXCSR_FTZ_DAZ);
    const __m512i odd_half = _mm512_set1_epi32((int)0xffff0000u);
    float xf[16 * CR_AMX_BF16_K] __attribute__((aligned(64)));
    for (int64_t g = 0; g < (m + 15) / 16; g++)
        for (int64_t b = 0; b < kb; b++) {
            const uint16_t *xb = x + (g * kb_stride + b) * 16 * CR_AMX_BF16_K;
            for (int i = 0; i < 16 * CR_AMX_BF16_K; i += 16) {
                __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(xb + i)));
                _mm512_store_ps(xf + i, _mm512_castsi512_ps(_mm512_slli_epi32(h, 16)));
            }
            for (int64_t p = 0; p < np; p++)
                for (int c = 0; c < CR_GEMM_NR; c += 16) {
                    const uint16_t *wb = wp + (p * kb_stride + b) * 16 * 2 * CR_GEMM_NR + 2 * c;
                    for (int r0 = 0; r0 < 16; r0 += AMX_MODEL_ROWS) {
                        __m512 even[AMX_MODEL_ROWS], odd[AMX_MODEL_ROWS];
                        for (int r = 0; r < AMX_MODEL_ROWS; r++) even[r] = odd[r] = _mm512_setzero_ps();
                        for (int t = 0; t < 16; t++) {
                            __m512i w = _mm512_loadu_si512((const void *)(wb + t * 2 * CR_GEMM_NR));
                            __m512 we = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
                            __m512 wo = _mm512_castsi512_ps(_mm512_and_si512(w, odd_half));
                            const float *xt = xf + r0 * CR_AMX_BF16_K + 2 * t;
                            for (int r = 0; r < AMX_MODEL_ROWS; r++) {
                                even[r] = _mm512_fmadd_ps(_mm512_set1_ps(xt[r * CR_AMX_BF16_K]), we, even[r]);
                                odd[r] = _mm512_fmadd_ps(_mm512_set1_ps(xt[r * CR_AMX_BF16_K + 1]), wo, odd[r]);
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

static void f32_to_bf16_avx512(const float *src, uint16_t *dst, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        _mm256_mask_storeu_epi16(dst + i, m, cr_bf16_round16_avx512(_mm512_maskz_loadu_ps(m, src + i)));
    }
}

static float quantize_u8_avx512(const float *x, int64_t n, uint8_t *out) {
    /* four independent max chains (the max does not depend on their order) */
    __m512 vmax[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    __mmask16 bad = 0;
    const __m512i inf = _mm512_set1_epi32(0x7f800000);
    for (int64_t k = 0; k < n; k += 64)
        for (int q = 0; q < 4; q++) {
            __mmask16 m = tail_mask(n - k - 16 * q);
            __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + k + 16 * q));
            bad |= _mm512_cmpge_epi32_mask(_mm512_castps_si512(a), inf);
            vmax[q] = _mm512_max_ps(vmax[q], a);
        }
    __m512 all = _mm512_max_ps(_mm512_max_ps(vmax[0], vmax[1]), _mm512_max_ps(vmax[2], vmax[3]));
    float s = bad ? NAN : cr_quant_scale(_mm512_reduce_max_ps(all));
    if (s != s) {
        memset(out, 128, (size_t)n);
        return s;
    }
    const __m512 inv = _mm512_set1_ps(1.0f / s);
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127), off = _mm512_set1_epi32(128);
    for (int64_t k = 0; k < n; k += 16) {
        __mmask16 m = tail_mask(n - k);
        __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + k), inv)); /* nearest even */
        q = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(q, lo), hi), off);
        _mm_mask_storeu_epi8(out + k, m, _mm512_cvtepi32_epi8(q));
    }
    return s;
}

/* Column j's weight for input k, as float32 lanes: the dword at column j's group of 4 holds it in
 * byte k % 4; shifted to the top and arithmetically back down, it is sign-extended. */
static inline __m512 i8_weights16(const int8_t *group, __mmask16 m, __m128i up) {
    __m512i d = _mm512_maskz_loadu_epi32(m, group);
    return _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_sll_epi32(d, up), 24));
}

static void i8_outliers_f32_avx512(const int8_t *wp, const int32_t *k, const float *v, int count,
                                   const float *wscale, float *y, int64_t n) {
    for (int64_t j = 0; j < n; j += 32) { /* n <= CR_GEMM_NR: one pass; the loop keeps any n correct */
        __mmask16 m0 = tail_mask(n - j), m1 = tail_mask(n - j - 16);
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
        for (int t = 0; t < count; t++) {
            const int8_t *group = wp + (int64_t)(k[t] / 4) * 4 * CR_GEMM_NR + 4 * j;
            __m128i up = _mm_cvtsi32_si128(24 - 8 * (k[t] % 4));
            __m512 vt = _mm512_set1_ps(v[t]);
            acc0 = _mm512_fmadd_ps(vt, i8_weights16(group, m0, up), acc0);
            acc1 = _mm512_fmadd_ps(vt, i8_weights16(group + 64, m1, up), acc1);
        }
        _mm512_mask_storeu_ps(y + j, m0, _mm512_fmadd_ps(acc0, _mm512_maskz_loadu_ps(m0, wscale + j),
                                                         _mm512_maskz_loadu_ps(m0, y + j)));
        _mm512_mask_storeu_ps(y + j + 16, m1, _mm512_fmadd_ps(acc1, _mm512_maskz_loadu_ps(m1, wscale + j + 16),
                                                              _mm512_maskz_loadu_ps(m1, y + j + 16)));
    }
}

_Static_assert(CR_ABS_SUM_LANES == 4 * 16, "abs_sum_max_f32_avx512 keeps the lanes in four vectors");

static float abs_sum_max_f32_avx512(const float *x, int64_t n, float *amax) {
    /* acc[q] holds lanes 16q .. 16q + 15 of the CR_ABS_SUM_LANES */
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    __m512 mx = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += CR_ABS_SUM_LANES)
        for (int q = 0; q < 4; q++) {
            __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(tail_mask(n - i - 16 * q), x + i + 16 * q));
            acc[q] = _mm512_add_ps(acc[q], a);
            mx = _mm512_max_ps(a, mx); /* a NaN lane keeps mx, as the reference's a > mx ? a : mx */
        }
    float lane[CR_ABS_SUM_LANES], s = 0.0f;
    for (int q = 0; q < 4; q++) _mm512_storeu_ps(lane + 16 * q, acc[q]);
    for (int l = 0; l < CR_ABS_SUM_LANES; l++) s += lane[l];
    *amax = _mm512_reduce_max_ps(mx);
    return s;
}

static int64_t find_above_f32_avx512(const float *x, int64_t n, float threshold, int32_t *idx, int64_t cap) {
    const __m512 thr = _mm512_set1_ps(threshold);
    const __m512i step = _mm512_set1_epi32(16);
    __m512i at = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    int64_t count = 0;
    for (int64_t i = 0; i < n; i += 16, at = _mm512_add_epi32(at, step)) {
        __mmask16 m = tail_mask(n - i);
        __mmask16 hit = _mm512_mask_cmp_ps_mask(m, _mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + i)), thr, _CMP_GT_OQ);
        if (!hit) continue;
        int found = __builtin_popcount((unsigned)hit);
        if (count + found <= cap) {
            _mm512_mask_compressstoreu_epi32(idx + count, hit, at);
        } else {
            for (int64_t c = count; c < cap && hit; c++, hit &= (__mmask16)(hit - 1))
                idx[c] = (int32_t)(i + __builtin_ctz((unsigned)hit));
        }
        count += found;
    }
    return count;
}

static const cr_kernels avx512_table = {
    .isa = CR_ISA_AVX512,
    .gemm_f32_tile = gemm_f32_tile_avx512,
    .gemm_mr = MR512,
    .dot_f32 = dot_f32_avx512,
    .scale_f32 = scale_f32_avx512,
    .norm_scale_f32 = norm_scale_f32_avx512,
    .rope_f32 = rope_f32_avx512,
    .sumsq_f32 = sumsq_f32_avx512,
    .bf16_to_f32 = bf16_to_f32_avx512,
    .f16_to_f32 = f16_to_f32_avx512,
    .gemm_bf16_tile = gemm_bf16_tile_avx512,
    .gemm_bf16_mr = MRB512,
    .f32_to_bf16 = f32_to_bf16_avx512,
    .quantize_u8 = quantize_u8_avx512,
    .i8_outliers_f32 = i8_outliers_f32_avx512,
    .abs_sum_max_f32 = abs_sum_max_f32_avx512,
    .find_above_f32 = find_above_f32_avx512,
    .exp_f32 = cr_exp_f32_avx512,
    .sigmoid_glu_f32 = cr_sigmoid_glu_f32_avx512,
    .attn_softmax_f32 = cr_attn_softmax_f32_avx512,
    .attn_pv_f32 = cr_attn_pv_f32_avx512_6x64,
    .attn_pv_mr = CR_ATTN_PV_MR_AVX512,
    .attn_p_tiles_bf16 = cr_attn_p_tiles_bf16_avx512,
    .attn_q_panel = cr_attn_q_panel_avx512,
    .gemm_bf16_amx = gemm_bf16_amx_avx512,
};

const cr_kernels *cr_kernels_avx512(void) { return &avx512_table; }

/* Peak probe: 12 independent FMA chains held in named registers (an array lets the compiler
 * interchange the loops and keep the chains in memory). Each iteration: 12 x 16 x 2 FLOP. */
float cr_peak_fma_avx512(int64_t iters) {
    __m512 a0 = _mm512_set1_ps(0.1f), a1 = _mm512_set1_ps(0.2f), a2 = _mm512_set1_ps(0.3f),
           a3 = _mm512_set1_ps(0.4f), a4 = _mm512_set1_ps(0.5f), a5 = _mm512_set1_ps(0.6f),
           a6 = _mm512_set1_ps(0.7f), a7 = _mm512_set1_ps(0.8f), a8 = _mm512_set1_ps(0.9f),
           a9 = _mm512_set1_ps(1.0f), a10 = _mm512_set1_ps(1.1f), a11 = _mm512_set1_ps(1.2f);
    const __m512 m = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-4f);
    for (int64_t it = 0; it < iters; it++) {
        a0 = _mm512_fmadd_ps(a0, m, c); a1 = _mm512_fmadd_ps(a1, m, c); a2 = _mm512_fmadd_ps(a2, m, c);
        a3 = _mm512_fmadd_ps(a3, m, c); a4 = _mm512_fmadd_ps(a4, m, c); a5 = _mm512_fmadd_ps(a5, m, c);
        a6 = _mm512_fmadd_ps(a6, m, c); a7 = _mm512_fmadd_ps(a7, m, c); a8 = _mm512_fmadd_ps(a8, m, c);
        a9 = _mm512_fmadd_ps(a9, m, c); a10 = _mm512_fmadd_ps(a10, m, c); a11 = _mm512_fmadd_ps(a11, m, c);
        __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5));
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                             _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    return _mm512_reduce_add_ps(s);
}
