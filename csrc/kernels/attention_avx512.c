/* attention_avx512.c — AVX-512 attention kernels (contracts in kernels.h, reference in
 * attention_ref.c). Compiled with the AVX-512 flags; called only after dispatch checked the CPU
 * and OS. Tails use masked loads and stores. */
#include <immintrin.h>

#include "attention_kernels.h"
#include "avx512_inline.h"
#include "kernels.h"

static inline __mmask16 lanes(int64_t left) {
    return left <= 0 ? (__mmask16)0 : left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
}

/* The reference's exp_one on 16 lanes; vscalefps multiplies by 2^k with the one rounding the
 * reference's two-step scaling gives.
 *
 * No instruction here returns a subnormal: Intel cores take a microcode assist of ~150 cycles for
 * every vector instruction with a subnormal result (unless FTZ is on, which would change the
 * bits), and every masked score (-inf, clamped to CR_EXP_LO) lands below the normal range, on
 * every diagonal tile of attention. Where k <= -126, y 2^k < 2^-125 is a multiple of 2^-149 once
 * rounded: n 2^-149 with n = y 2^(k + 149) rounded to an integer (nearest even, as the scaling
 * rounds), n < 2^24, and the float with bits n is exactly that value. */
static inline __m512 exp16(__m512 x) {
    __m512 xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(CR_EXP_LO)), _mm512_set1_ps(CR_EXP_HI));
    __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(CR_EXP_LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(CR_EXP_C1), xc);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(CR_EXP_C2), r);
    __m512 z = _mm512_mul_ps(r, r);
    __m512 y = _mm512_fmadd_ps(_mm512_set1_ps(CR_EXP_P0), r, _mm512_set1_ps(CR_EXP_P1));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(CR_EXP_P2));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(CR_EXP_P3));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(CR_EXP_P4));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(CR_EXP_P5));
    y = _mm512_fmadd_ps(y, z, r);
    y = _mm512_add_ps(y, _mm512_set1_ps(1.0f));
    __mmask16 tiny = _mm512_cmp_ps_mask(k, _mm512_set1_ps(-126.0f), _CMP_LE_OQ);
    __m512 e = _mm512_scalef_ps(y, _mm512_max_ps(k, _mm512_set1_ps(-125.0f)));
    if (tiny) {
        __m512 n = _mm512_maskz_roundscale_ps(tiny, _mm512_maskz_scalef_ps(tiny, y, _mm512_add_ps(k, _mm512_set1_ps(149.0f))),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        e = _mm512_mask_mov_ps(e, tiny, _mm512_castsi512_ps(_mm512_cvtps_epi32(n)));
    }
    /* max/min returned the bound for a NaN lane: give the NaN back */
    return _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);
}

void cr_exp_f32_avx512(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = lanes(n - i);
        _mm512_mask_storeu_ps(y + i, m, exp16(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

void cr_sigmoid_glu_f32_avx512(const float *gate, const float *up, float *h, int64_t n, int gelu_tanh) {
    const __m512 one = _mm512_set1_ps(1.0f), sign = _mm512_set1_ps(-0.0f);
    const __m512 cube = _mm512_set1_ps(CR_GELU_TANH_CUBE), scale = _mm512_set1_ps(CR_GELU_TANH_C);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = lanes(n - i);
        __m512 g = _mm512_maskz_loadu_ps(m, gate + i), u = _mm512_maskz_loadu_ps(m, up + i);
        __m512 c = g;
        if (gelu_tanh) c = _mm512_mul_ps(scale, _mm512_fmadd_ps(_mm512_mul_ps(cube, _mm512_mul_ps(g, g)), g, g));
        __m512 e = exp16(_mm512_xor_ps(c, sign));
        _mm512_mask_storeu_ps(h + i, m, _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), u));
    }
}

void cr_attn_softmax_f32_avx512(float *s, int64_t lds, int64_t k, int64_t n, float *m, float *l, float *alpha) {
    const __m512 ninf = _mm512_set1_ps(-__builtin_inff());
    for (int64_t c = 0; c < n; c += 16) {
        __mmask16 mk = lanes(n - c);
        __m512 m_old = _mm512_maskz_loadu_ps(mk, m + c), mx = m_old;
        for (int64_t j = 0; j < k; j++) mx = _mm512_max_ps(mx, _mm512_maskz_loadu_ps(mk, s + j * lds + c));
        __m512 u = _mm512_mask_mov_ps(mx, _mm512_cmp_ps_mask(mx, ninf, _CMP_EQ_OQ), _mm512_setzero_ps());
        __m512 a = exp16(_mm512_sub_ps(m_old, u)), t = _mm512_setzero_ps();
        for (int64_t j = 0; j < k; j++) {
            __m512 p = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, s + j * lds + c), u));
            _mm512_mask_storeu_ps(s + j * lds + c, mk, p);
            t = _mm512_add_ps(t, p);
        }
        _mm512_mask_storeu_ps(alpha + c, mk, a);
        _mm512_mask_storeu_ps(l + c, mk, _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(mk, l + c), t));
        _mm512_mask_storeu_ps(m + c, mk, mx);
    }
}

/* 6 query rows x 64 value columns: 24 accumulators, 4 value vectors and a broadcast in the 32
 * registers; per key 4 loads and 6 broadcasts feed 24 FMAs. */
#define PV_MR 6

static inline __attribute__((always_inline)) void pv_rows(const int M, const float *p, int64_t ldp,
                                                          const float *v, int64_t ldv, int64_t k,
                                                          const float *alpha, float *o, int64_t ldo,
                                                          int64_t n) {
    for (int64_t j0 = 0; j0 < n; j0 += 64) {
        __mmask16 mk[4];
        for (int c = 0; c < 4; c++) mk[c] = lanes(n - j0 - 16 * c);
        __m512 acc[PV_MR][4];
        for (int i = 0; i < M; i++) {
            __m512 a = alpha ? _mm512_set1_ps(alpha[i]) : _mm512_set1_ps(1.0f);
            for (int c = 0; c < 4; c++) {
                acc[i][c] = _mm512_maskz_loadu_ps(mk[c], o + i * ldo + j0 + 16 * c);
                if (alpha) acc[i][c] = _mm512_mul_ps(acc[i][c], a);
            }
        }
        for (int64_t kk = 0; kk < k; kk++) {
            const float *vr = v + kk * ldv + j0;
            __m512 w0 = _mm512_maskz_loadu_ps(mk[0], vr), w1 = _mm512_maskz_loadu_ps(mk[1], vr + 16),
                   w2 = _mm512_maskz_loadu_ps(mk[2], vr + 32), w3 = _mm512_maskz_loadu_ps(mk[3], vr + 48);
            const float *pr = p + kk * ldp;
            for (int i = 0; i < M; i++) {
                __m512 b = _mm512_set1_ps(pr[i]);
                acc[i][0] = _mm512_fmadd_ps(b, w0, acc[i][0]);
                acc[i][1] = _mm512_fmadd_ps(b, w1, acc[i][1]);
                acc[i][2] = _mm512_fmadd_ps(b, w2, acc[i][2]);
                acc[i][3] = _mm512_fmadd_ps(b, w3, acc[i][3]);
            }
        }
        for (int i = 0; i < M; i++)
            for (int c = 0; c < 4; c++) _mm512_mask_storeu_ps(o + i * ldo + j0 + 16 * c, mk[c], acc[i][c]);
    }
}

void cr_attn_pv_f32_avx512_6x64(const float *p, int64_t ldp, int64_t m, const float *v, int64_t ldv, int64_t k,
                                const float *alpha, float *o, int64_t ldo, int64_t n) {
    switch (m) {
    case 6: pv_rows(6, p, ldp, v, ldv, k, alpha, o, ldo, n); break;
    case 5: pv_rows(5, p, ldp, v, ldv, k, alpha, o, ldo, n); break;
    case 4: pv_rows(4, p, ldp, v, ldv, k, alpha, o, ldo, n); break;
    case 3: pv_rows(3, p, ldp, v, ldv, k, alpha, o, ldo, n); break;
    case 2: pv_rows(2, p, ldp, v, ldv, k, alpha, o, ldo, n); break;
    case 1: pv_rows(1, p, ldp, v, ldv, k, alpha, o, ldo, n); break;
    default: break;
    }
}

/* 16 x 16 floats transposed in registers: unpack pairs, then quads, then the 128-bit lanes. */
static inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    /* u[4 g + k], lane L: rows 4 g .. 4 g + 3 of column 4 L + k */
    __m512 u[16];
    for (int g = 0; g < 4; g++) {
        __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]);
        __m512d c = _mm512_castps_pd(t[4 * g + 2]), d = _mm512_castps_pd(t[4 * g + 3]);
        u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int k = 0; k < 4; k++) {
        __m512 v = _mm512_shuffle_f32x4(u[k], u[4 + k], 0x88), w = _mm512_shuffle_f32x4(u[k], u[4 + k], 0xDD);
        __m512 v2 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0x88), w2 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0xDD);
        r[k] = _mm512_shuffle_f32x4(v, v2, 0x88);
        r[8 + k] = _mm512_shuffle_f32x4(v, v2, 0xDD);
        r[4 + k] = _mm512_shuffle_f32x4(w, w2, 0x88);
        r[12 + k] = _mm512_shuffle_f32x4(w, w2, 0xDD);
    }
}

void cr_attn_p_tiles_bf16_avx512(const float *s, int64_t lds, int64_t k0, int64_t nk, int64_t n, uint16_t *dst) {
    int64_t rows = (n + 15) / 16 * 16;
    for (int64_t c0 = 0; c0 < rows; c0 += 16) {
        __mmask16 mc = lanes(n - c0);
        for (int64_t t0 = 0; t0 < CR_ATTN_KEY_TILE; t0 += 16) {
            /* r[i]: slot t0 + i over the 16 columns (zero where the slot holds no key) */
            __m512 r[16];
            for (int i = 0; i < 16; i++) {
                int64_t key = t0 + i - k0;
                r[i] = key >= 0 && key < nk ? _mm512_maskz_loadu_ps(mc, s + key * lds + c0) : _mm512_setzero_ps();
            }
            transpose16(r);
            uint16_t *d = dst + ((c0 / 16) * 2 + t0 / 32) * 512 + t0 % 32;
            for (int i = 0; i < 16; i++) _mm256_storeu_si256((__m256i *)(void *)(d + i * 32), cr_bf16_round16_avx512(r[i]));
        }
    }
}

void cr_attn_q_panel_avx512(const float *const *q, int64_t n, int64_t D, float scale, int bf16, void *dst) {
    const __m512 sc = _mm512_set1_ps(scale);
    /* 16 columns by 16 elements (float32) or 16 pairs of elements (bf16) at a time, transposed in
     * registers: each 4-byte unit (a float, or a pair of bf16) of a column goes to its row of the
     * panel, 16 columns of a row in one store */
    const int64_t step = bf16 ? 32 : 16, units = bf16 ? D / 2 : D;
    uint32_t *out = dst;
    for (int64_t j0 = 0; j0 < CR_GEMM_NR; j0 += 16)
        for (int64_t d0 = 0; d0 < D; d0 += step) {
            int64_t left = D - d0, u0 = bf16 ? d0 / 2 : d0;
            __m512 r[16];
            for (int k = 0; k < 16; k++) {
                if (j0 + k >= n) {
                    r[k] = _mm512_setzero_ps();
                    continue;
                }
                const float *src = q[j0 + k] + d0;
                __m512 lo = _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes(left), src), sc);
                if (!bf16) {
                    r[k] = lo;
                    continue;
                }
                __m512 hi = _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes(left - 16), src + 16), sc);
                r[k] = _mm512_castsi512_ps(_mm512_inserti64x4(_mm512_castsi256_si512(cr_bf16_round16_avx512(lo)),
                                                              cr_bf16_round16_avx512(hi), 1));
            }
            transpose16(r);
            for (int64_t t = 0; t < 16 && u0 + t < units; t++)
                _mm512_storeu_ps((float *)(void *)(out + (u0 + t) * CR_GEMM_NR + j0), r[t]);
        }
}
