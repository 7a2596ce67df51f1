/* kernels_avx2.c — AVX2 + FMA + F16C kernels (the x86-64 baseline that crossrank expects on any
 * CPU of the last decade). Compiled with -mavx2 -mfma -mf16c; called only after dispatch checked
 * the CPU and OS. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "attention_kernels.h"
#include "kernels.h"

static inline float hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

_Static_assert(CR_DOT_LANES == 4 * 8, "dot_f32_avx2 keeps the lanes in four vectors");

static float dot_f32_avx2(const float *a, const float *b, int64_t n) {
    __m256 acc[4]; /* acc[q]: lanes 8q .. 8q + 7 */
    for (int q = 0; q < 4; q++) acc[q] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + CR_DOT_LANES <= n; i += CR_DOT_LANES)
        for (int q = 0; q < 4; q++)
            acc[q] = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8 * q), _mm256_loadu_ps(b + i + 8 * q), acc[q]);
    if (i < n) { /* masked-off lanes add 0 * 0, which leaves a lane's bits as they are */
        const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for (int q = 0; q < 4; q++) {
            __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - i - 8 * q)), iota);
            acc[q] = _mm256_fmadd_ps(_mm256_maskload_ps(a + i + 8 * q, m), _mm256_maskload_ps(b + i + 8 * q, m), acc[q]);
        }
    }
    /* 32 -> 16 -> 8 lanes, then hsum256 folds 8 -> 4 -> 2 -> 1 */
    return hsum256(_mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3])));
}

static void scale_f32_avx2(float alpha, float *x, int64_t n) {
    __m256 va = _mm256_set1_ps(alpha);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(va, _mm256_loadu_ps(x + i)));
    for (; i < n; i++) x[i] *= alpha;
}

static float sumsq_f32_avx2(const float *x, int64_t n) { return dot_f32_avx2(x, x, n); }

static void norm_scale_f32_avx2(const float *x, const float *w, float r, float *y, int64_t n) {
    __m256 vr = _mm256_set1_ps(r);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(w + i), _mm256_mul_ps(_mm256_loadu_ps(x + i), vr)));
    for (; i < n; i++) y[i] = w[i] * (x[i] * r);
}

static void rope_f32_avx2(float *v, const float *c, const float *s, int64_t half) {
    int64_t i = 0;
    for (; i + 8 <= half; i += 8) {
        __m256 x1 = _mm256_loadu_ps(v + i), x2 = _mm256_loadu_ps(v + i + half);
        __m256 vc = _mm256_loadu_ps(c + i), vs = _mm256_loadu_ps(s + i);
        _mm256_storeu_ps(v + i, _mm256_sub_ps(_mm256_mul_ps(x1, vc), _mm256_mul_ps(x2, vs)));
        _mm256_storeu_ps(v + i + half, _mm256_add_ps(_mm256_mul_ps(x2, vc), _mm256_mul_ps(x1, vs)));
    }
    for (; i < half; i++) {
        float x1 = v[i], x2 = v[i + half];
        v[i] = x1 * c[i] - x2 * s[i];
        v[i + half] = x2 * c[i] + x1 * s[i];
    }
}

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

/* The scalar model of TDPBF16PS in float32 FMAs: gemm_bf16_amx_avx512's scheme (kernels_avx512.c)
 * on 8 columns of a panel at a time, with 4 rows' even and odd chains in the 16 registers. */
#define AMX_MODEL_ROWS 4

static void gemm_bf16_amx_avx2(const uint16_t *x, int64_t m, const uint16_t *wp, int64_t kb, int64_t kb_stride,
                               int64_t np, float *out, int64_t ldo, int accumulate, const void *next,
                               int64_t next_bytes) {
    (void)next, (void)next_bytes; /* a prefetch hint */
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | CR_MXCSR_FTZ_DAZ);
    const __m256i odd_half = _mm256_set1_epi32((int)0xffff0000u);
    float xf[16 * CR_AMX_BF16_K] __attribute__((aligned(32)));
    for (int64_t g = 0; g < (m + 15) / 16; g++)
        for (int64_t b = 0; b < kb; b++) {
            const uint16_t *xb = x + (g * kb_stride + b) * 16 * CR_AMX_BF16_K;
            for (int i = 0; i < 16 * CR_AMX_BF16_K; i += 8) {
                __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(xb + i)));
                _mm256_store_ps(xf + i, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
            }
            for (int64_t p = 0; p < np; p++)
                for (int c = 0; c < CR_GEMM_NR; c += 8) {
                    const uint16_t *wb = wp + (p * kb_stride + b) * 16 * 2 * CR_GEMM_NR + 2 * c;
                    for (int r0 = 0; r0 < 16; r0 += AMX_MODEL_ROWS) {
                        __m256 even[AMX_MODEL_ROWS], odd[AMX_MODEL_ROWS];
                        for (int r = 0; r < AMX_MODEL_ROWS; r++) even[r] = odd[r] = _mm256_setzero_ps();
                        for (int t = 0; t < 16; t++) {
                            __m256i w = _mm256_loadu_si256((const __m256i *)(const void *)(wb + t * 2 * CR_GEMM_NR));
                            __m256 we = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
                            __m256 wo = _mm256_castsi256_ps(_mm256_and_si256(w, odd_half));
                            const float *xt = xf + r0 * CR_AMX_BF16_K + 2 * t;
                            for (int r = 0; r < AMX_MODEL_ROWS; r++) {
                                even[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(xt + r * CR_AMX_BF16_K), we, even[r]);
                                odd[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(xt + r * CR_AMX_BF16_K + 1), wo, odd[r]);
                            }
                        }
                        for (int r = 0; r < AMX_MODEL_ROWS; r++) {
                            float *o = out + (g * 16 + r0 + r) * ldo + p * CR_GEMM_NR + c;
                            __m256 acc = b > 0 || accumulate ? _mm256_loadu_ps(o) : _mm256_setzero_ps();
                            _mm256_storeu_ps(o, _mm256_add_ps(acc, _mm256_add_ps(even[r], odd[r])));
                        }
                    }
                }
        }
    _mm_setcsr(csr);
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

/* int8 without VNNI: bytes widened to int16 and multiplied pairwise with vpmaddwd (exact; the
 * saturating vpmaddubsw would not be). One row: per 8 columns two accumulators, holding the
 * (k0+k1) and (k2+k3) halves of each column's group, added at the end. */
static void gemm_i8_tile_avx2(const uint8_t *x, int64_t ldx, int64_t m, const int8_t *wp, int64_t kq,
                              int32_t *y, int64_t ldy, int64_t n) {
    for (int64_t i = 0; i < m; i++) {
        const uint8_t *xi = x + i * ldx;
        __m256i acc[4][2];
        for (int c = 0; c < 4; c++) acc[c][0] = acc[c][1] = _mm256_setzero_si256();
        for (int64_t g = 0; g < kq; g++) {
            uint32_t quad;
            memcpy(&quad, xi + 4 * g, 4);
            /* the 4 bytes as int16, repeated over the register: (x0 x1 x2 x3) x 4 */
            __m256i xv = _mm256_broadcastq_epi64(_mm_cvtepu8_epi16(_mm_cvtsi32_si128((int)quad)));
            const int8_t *w = wp + g * 4 * CR_GEMM_NR;
            for (int c = 0; c < 4; c++) {
                __m128i lo = _mm_loadu_si128((const __m128i *)(w + 32 * c));
                __m128i hi = _mm_loadu_si128((const __m128i *)(w + 32 * c + 16));
                acc[c][0] = _mm256_add_epi32(acc[c][0], _mm256_madd_epi16(_mm256_cvtepi8_epi16(lo), xv));
                acc[c][1] = _mm256_add_epi32(acc[c][1], _mm256_madd_epi16(_mm256_cvtepi8_epi16(hi), xv));
            }
        }
        int32_t row[CR_GEMM_NR];
        for (int c = 0; c < 4; c++) {
            /* acc[c][0] lanes: col 8c+0 (k01, k23), col 8c+1 (...), ..., col 8c+3; acc[c][1]: 8c+4.. */
            int32_t a[8], b[8];
            _mm256_storeu_si256((__m256i *)a, acc[c][0]);
            _mm256_storeu_si256((__m256i *)b, acc[c][1]);
            for (int j = 0; j < 4; j++) {
                row[8 * c + j] = a[2 * j] + a[2 * j + 1];
                row[8 * c + 4 + j] = b[2 * j] + b[2 * j + 1];
            }
        }
        memcpy(y + i * ldy, row, (size_t)n * sizeof(int32_t));
    }
}

static float quantize_u8_avx2(const float *x, int64_t n, uint8_t *out) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 vmax = _mm256_setzero_ps();
    __m256i bad = _mm256_setzero_si256(); /* lanes that saw NaN or Inf */
    const __m256i inf = _mm256_set1_epi32(0x7f800000);
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + k), abs_mask);
        bad = _mm256_or_si256(bad, _mm256_cmpgt_epi32(_mm256_castps_si256(a), _mm256_sub_epi32(inf, _mm256_set1_epi32(1))));
        vmax = _mm256_max_ps(vmax, a);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, vmax);
    float amax = 0.0f;
    for (int i = 0; i < 8; i++) amax = lanes[i] > amax ? lanes[i] : amax;
    int nonfinite = !_mm256_testz_si256(bad, bad);
    for (; k < n; k++) {
        float a = fabsf(x[k]);
        nonfinite |= !(a <= 3.4028234663852886e38f);
        amax = a > amax ? a : amax;
    }
    float s = nonfinite ? NAN : cr_quant_scale(amax);
    if (s != s) {
        memset(out, 128, (size_t)n);
        return s;
    }
    const __m256 inv = _mm256_set1_ps(1.0f / s);
    const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127), off = _mm256_set1_epi32(128);
    for (k = 0; k + 8 <= n; k += 8) {
        __m256i q = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k), inv)); /* nearest even */
        q = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(q, lo), hi), off);
        __m256i w = _mm256_packus_epi16(_mm256_packs_epi32(q, q), _mm256_setzero_si256());
        int32_t b0 = _mm_cvtsi128_si32(_mm256_castsi256_si128(w));
        int32_t b1 = _mm_cvtsi128_si32(_mm256_extracti128_si256(w, 1));
        memcpy(out + k, &b0, 4);
        memcpy(out + k + 4, &b1, 4);
    }
    for (; k < n; k++) {
        float q = nearbyintf(x[k] * (1.0f / s));
        q = q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q;
        out[k] = (uint8_t)((int)q + 128);
    }
    return s;
}

static void i8_outliers_f32_avx2(const int8_t *wp, const int32_t *k, const float *v, int count,
                                 const float *wscale, float *y, int64_t n) {
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 acc = _mm256_setzero_ps();
        for (int t = 0; t < count; t++) {
            /* column j's weight sits in byte k % 4 of its dword: to the top, then sign-extended back */
            const int8_t *group = wp + (int64_t)(k[t] / 4) * 4 * CR_GEMM_NR + 4 * j;
            __m256i d = _mm256_loadu_si256((const __m256i *)group);
            d = _mm256_srai_epi32(_mm256_sll_epi32(d, _mm_cvtsi32_si128(24 - 8 * (k[t] % 4))), 24);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(v[t]), _mm256_cvtepi32_ps(d), acc);
        }
        _mm256_storeu_ps(y + j, _mm256_fmadd_ps(acc, _mm256_loadu_ps(wscale + j), _mm256_loadu_ps(y + j)));
    }
    for (; j < n; j++) {
        float acc = 0.0f;
        for (int t = 0; t < count; t++)
            acc = fmaf(v[t], (float)wp[(k[t] / 4) * 4 * CR_GEMM_NR + 4 * j + k[t] % 4], acc);
        y[j] = fmaf(acc, wscale[j], y[j]);
    }
}

_Static_assert(CR_ABS_SUM_LANES == 8 * 8, "abs_sum_max_f32_avx2 keeps the lanes in eight vectors");

static float abs_sum_max_f32_avx2(const float *x, int64_t n, float *amax) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 acc[8], mx = _mm256_setzero_ps(); /* acc[q]: lanes 8q .. 8q + 7 of the CR_ABS_SUM_LANES */
    for (int q = 0; q < 8; q++) acc[q] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + CR_ABS_SUM_LANES <= n; i += CR_ABS_SUM_LANES)
        for (int q = 0; q < 8; q++) {
            __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + i + 8 * q), abs_mask);
            acc[q] = _mm256_add_ps(acc[q], a);
            mx = _mm256_max_ps(a, mx); /* a NaN lane keeps mx, as the reference's a > mx ? a : mx */
        }
    float lane[CR_ABS_SUM_LANES], lm[8], s = 0.0f, m = 0.0f;
    for (int q = 0; q < 8; q++) _mm256_storeu_ps(lane + 8 * q, acc[q]);
    _mm256_storeu_ps(lm, mx);
    for (int l = 0; l < 8; l++) m = lm[l] > m ? lm[l] : m;
    for (; i < n; i++) {
        float a = fabsf(x[i]);
        lane[i % CR_ABS_SUM_LANES] += a;
        m = a > m ? a : m;
    }
    for (int l = 0; l < CR_ABS_SUM_LANES; l++) s += lane[l];
    *amax = m;
    return s;
}

static int64_t find_above_f32_avx2(const float *x, int64_t n, float threshold, int32_t *idx, int64_t cap) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)), thr = _mm256_set1_ps(threshold);
    int64_t count = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        unsigned hit = (unsigned)_mm256_movemask_ps(
            _mm256_cmp_ps(_mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask), thr, _CMP_GT_OQ));
        for (; hit; hit &= hit - 1, count++)
            if (count < cap) idx[count] = (int32_t)(i + __builtin_ctz(hit));
    }
    for (; i < n; i++)
        if (fabsf(x[i]) > threshold) {
            if (count < cap) idx[count] = (int32_t)i;
            count++;
        }
    return count;
}

static const cr_kernels avx2_table = {
    .isa = CR_ISA_AVX2,
    .gemm_f32_tile = gemm_f32_tile_avx2,
    .gemm_mr = MR2,
    .dot_f32 = dot_f32_avx2,
    .scale_f32 = scale_f32_avx2,
    .norm_scale_f32 = norm_scale_f32_avx2,
    .rope_f32 = rope_f32_avx2,
    .sumsq_f32 = sumsq_f32_avx2,
    .bf16_to_f32 = bf16_to_f32_avx2,
    .f16_to_f32 = f16_to_f32_avx2,
    .gemm_bf16_tile = gemm_bf16_tile_avx2,
    .gemm_bf16_mr = MRB2,
    .f32_to_bf16 = f32_to_bf16_avx2,
    .gemm_i8_tile = gemm_i8_tile_avx2,
    .gemm_i8_mr = 1,
    .quantize_u8 = quantize_u8_avx2,
    .i8_outliers_f32 = i8_outliers_f32_avx2,
    .abs_sum_max_f32 = abs_sum_max_f32_avx2,
    .find_above_f32 = find_above_f32_avx2,
    .exp_f32 = cr_exp_f32_avx2,
    .sigmoid_glu_f32 = cr_sigmoid_glu_f32_avx2,
    .attn_softmax_f32 = cr_attn_softmax_f32_avx2,
    .attn_pv_f32 = cr_attn_pv_f32_avx2_3x32,
    .attn_pv_mr = CR_ATTN_PV_MR_AVX2,
    .attn_p_tiles_bf16 = cr_attn_p_tiles_bf16_ref,
    .attn_q_panel = cr_attn_q_panel_ref,
    .gemm_bf16_amx = gemm_bf16_amx_avx2,
};

const cr_kernels *cr_kernels_avx2(void) { return &avx2_table; }
