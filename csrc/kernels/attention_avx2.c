/* attention_avx2.c — AVX2 + FMA attention kernels (contracts in kernels.h, reference in
 * attention_ref.c). Compiled with -mavx2 -mfma -mf16c; called only after dispatch checked the
 * CPU and OS. Tails use vmaskmovps loads and stores (masked-off lanes are neither read nor
 * written, so no access past the arrays). */
#include <immintrin.h>

#include "attention_kernels.h"
#include "kernels.h"

/* Lane mask for the first `left` of 8 lanes (all for left >= 8, none for left <= 0). */
static inline __m256i lanes(int64_t left) {
    int32_t l = left <= 0 ? 0 : left >= 8 ? 8 : (int32_t)left;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(l), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* The reference's exp_one on 8 lanes: y * 2^k as y * 2^(k/2) * 2^(k - k/2), the first product
 * exact, the second rounding once. As in exp16 (attention_avx512.c), no instruction returns a
 * subnormal (Intel cores take a microcode assist for each one): where k <= -126 the result is the
 * float whose bits are n = y 2^(k + 149) rounded to an integer. */
static inline __m256 exp8(__m256 x) {
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(CR_EXP_LO)), _mm256_set1_ps(CR_EXP_HI));
    __m256 k = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(CR_EXP_LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(CR_EXP_C1), xc);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(CR_EXP_C2), r);
    __m256 z = _mm256_mul_ps(r, r);
    __m256 y = _mm256_fmadd_ps(_mm256_set1_ps(CR_EXP_P0), r, _mm256_set1_ps(CR_EXP_P1));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(CR_EXP_P2));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(CR_EXP_P3));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(CR_EXP_P4));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(CR_EXP_P5));
    y = _mm256_fmadd_ps(y, z, r);
    y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
    const __m256i bias = _mm256_set1_epi32(127);
    __m256 tiny = _mm256_cmp_ps(k, _mm256_set1_ps(-126.0f), _CMP_LE_OQ);
    __m256i ki = _mm256_cvtps_epi32(_mm256_max_ps(k, _mm256_set1_ps(-125.0f)));
    __m256i k1 = _mm256_srai_epi32(ki, 1), k2 = _mm256_sub_epi32(ki, k1);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, bias), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, bias), 23));
    __m256 e = _mm256_mul_ps(_mm256_mul_ps(y, s1), s2);
    if (_mm256_movemask_ps(tiny)) {
        /* 2^(k + 149) for k in [-150, -126], else 2^0: only the tiny lanes are kept */
        __m256i kt = _mm256_and_si256(_mm256_castps_si256(tiny), _mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(149)));
        __m256 n = _mm256_round_ps(_mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(kt, bias), 23))),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        e = _mm256_blendv_ps(e, _mm256_castsi256_ps(_mm256_cvtps_epi32(n)), tiny);
    }
    /* max/min returned the bound for a NaN lane: give the NaN back */
    return _mm256_blendv_ps(e, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

void cr_exp_f32_avx2(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i += 8) {
        __m256i m = lanes(n - i);
        _mm256_maskstore_ps(y + i, m, exp8(_mm256_maskload_ps(x + i, m)));
    }
}

void cr_sigmoid_glu_f32_avx2(const float *gate, const float *up, float *h, int64_t n, int gelu_tanh) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    const __m256 cube = _mm256_set1_ps(CR_GELU_TANH_CUBE), scale = _mm256_set1_ps(CR_GELU_TANH_C);
    for (int64_t i = 0; i < n; i += 8) {
        __m256i m = lanes(n - i);
        __m256 g = _mm256_maskload_ps(gate + i, m), u = _mm256_maskload_ps(up + i, m);
        __m256 c = g;
        if (gelu_tanh) c = _mm256_mul_ps(scale, _mm256_fmadd_ps(_mm256_mul_ps(cube, _mm256_mul_ps(g, g)), g, g));
        __m256 e = exp8(_mm256_xor_ps(c, sign));
        _mm256_maskstore_ps(h + i, m, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), u));
    }
}

void cr_attn_softmax_f32_avx2(float *s, int64_t lds, int64_t k, int64_t n, float *m, float *l, float *alpha) {
    const __m256 ninf = _mm256_set1_ps(-__builtin_inff());
    for (int64_t c = 0; c < n; c += 8) {
        __m256i mk = lanes(n - c);
        __m256 m_old = _mm256_maskload_ps(m + c, mk), mx = m_old;
        for (int64_t j = 0; j < k; j++) mx = _mm256_max_ps(mx, _mm256_maskload_ps(s + j * lds + c, mk));
        __m256 u = _mm256_blendv_ps(mx, _mm256_setzero_ps(), _mm256_cmp_ps(mx, ninf, _CMP_EQ_OQ));
        __m256 a = exp8(_mm256_sub_ps(m_old, u)), t = _mm256_setzero_ps();
        for (int64_t j = 0; j < k; j++) {
            __m256 p = exp8(_mm256_sub_ps(_mm256_maskload_ps(s + j * lds + c, mk), u));
            _mm256_maskstore_ps(s + j * lds + c, mk, p);
            t = _mm256_add_ps(t, p);
        }
        _mm256_maskstore_ps(alpha + c, mk, a);
        _mm256_maskstore_ps(l + c, mk, _mm256_fmadd_ps(a, _mm256_maskload_ps(l + c, mk), t));
        _mm256_maskstore_ps(m + c, mk, mx);
    }
}

/* 3 query rows x 32 value columns: 12 accumulators, 4 value vectors and a broadcast in the 16
 * registers. */
#define PV_MR 3

static inline __attribute__((always_inline)) void pv_rows(const int M, const float *p, int64_t ldp,
                                                          const float *v, int64_t ldv, int64_t k,
                                                          const float *alpha, float *o, int64_t ldo,
                                                          int64_t n) {
    for (int64_t j0 = 0; j0 < n; j0 += 32) {
        __m256i mk[4];
        for (int c = 0; c < 4; c++) mk[c] = lanes(n - j0 - 8 * c);
        __m256 acc[PV_MR][4];
        for (int i = 0; i < M; i++) {
            __m256 a = alpha ? _mm256_set1_ps(alpha[i]) : _mm256_set1_ps(1.0f);
            for (int c = 0; c < 4; c++) {
                acc[i][c] = _mm256_maskload_ps(o + i * ldo + j0 + 8 * c, mk[c]);
                if (alpha) acc[i][c] = _mm256_mul_ps(acc[i][c], a);
            }
        }
        for (int64_t kk = 0; kk < k; kk++) {
            const float *vr = v + kk * ldv + j0;
            __m256 w0 = _mm256_maskload_ps(vr, mk[0]), w1 = _mm256_maskload_ps(vr + 8, mk[1]),
                   w2 = _mm256_maskload_ps(vr + 16, mk[2]), w3 = _mm256_maskload_ps(vr + 24, mk[3]);
            const float *pr = p + kk * ldp;
            for (int i = 0; i < M; i++) {
                __m256 b = _mm256_broadcast_ss(pr + i);
                acc[i][0] = _mm256_fmadd_ps(b, w0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(b, w1, acc[i][1]);
                acc[i][2] = _mm256_fmadd_ps(b, w2, acc[i][2]);
                acc[i][3] = _mm256_fmadd_ps(b, w3, acc[i][3]);
            }
        }
        for (int i = 0; i < M; i++)
            for (int c = 0; c < 4; c++) _mm256_maskstore_ps(o + i * ldo + j0 + 8 * c, mk[c], acc[i][c]);
    }
}

void cr_attn_pv_f32_avx2_3x32(const float *p, int64_t ldp, int64_t m, const float *v, int64_t ldv, int64_t k,
                              const float *alpha, float *o, int64_t ldo, int64_t n) {
    switch (m) {
    case 3: pv_rows(3, p, ldp, v, ldv, k, alpha, o, ldo, n); break;
    case 2: pv_rows(2, p, ldp, v, ldv, k, alpha, o, ldo, n); break;
    case 1: pv_rows(1, p, ldp, v, ldv, k, alpha, o, ldo, n); break;
    default: break;
    }
}
