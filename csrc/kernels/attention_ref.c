/* attention_ref.c — scalar reference of the attention kernels (contracts in kernels.h). Every
 * fused step is an fmaf, so the vector versions reproduce these results bit for bit. */
#include <math.h>
#include <string.h>

#include "attention_kernels.h"
#include "kernels.h"

/* 2^e as a float, for e in [-126, 127]. */
static inline float pow2i(int e) {
    uint32_t bits = (uint32_t)(e + 127) << 23;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline float exp_one(float x) {
    if (x != x) return x;
    float xc = x < CR_EXP_LO ? CR_EXP_LO : x > CR_EXP_HI ? CR_EXP_HI : x;
    float k = rintf(xc * CR_EXP_LOG2E);          /* nearest, ties to even */
    float r = fmaf(k, -CR_EXP_C1, xc);
    r = fmaf(k, -CR_EXP_C2, r);
    float z = r * r;
    float y = fmaf(CR_EXP_P0, r, CR_EXP_P1);
    y = fmaf(y, r, CR_EXP_P2);
    y = fmaf(y, r, CR_EXP_P3);
    y = fmaf(y, r, CR_EXP_P4);
    y = fmaf(y, r, CR_EXP_P5);
    y = fmaf(y, z, r);
    y = y + 1.0f;
    /* y * 2^k in two steps: the first is exact (y is near 1, k1 >= -75), the second rounds once
     * (to a subnormal when the result is one), as AVX-512's vscalefps does in one. */
    int ki = (int)k, k1 = ki / 2, k2 = ki - k1;
    return y * pow2i(k1) * pow2i(k2);
}

void cr_exp_f32_ref(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = exp_one(x[i]);
}

void cr_sigmoid_glu_f32_ref(const float *gate, const float *up, float *h, int64_t n, int gelu_tanh) {
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        float c = gelu_tanh ? CR_GELU_TANH_C * fmaf(CR_GELU_TANH_CUBE * (g * g), g, g) : g;
        h[i] = g / (1.0f + exp_one(-c)) * up[i];
    }
}

void cr_attn_softmax_f32_ref(float *s, int64_t lds, int64_t k, int64_t n, float *m, float *l, float *alpha) {
    for (int64_t c = 0; c < n; c++) {
        float mx = m[c];
        for (int64_t j = 0; j < k; j++) mx = s[j * lds + c] > mx ? s[j * lds + c] : mx;
        float u = mx == -INFINITY ? 0.0f : mx;
        float a = exp_one(m[c] - u), t = 0.0f;
        for (int64_t j = 0; j < k; j++) {
            float p = exp_one(s[j * lds + c] - u);
            s[j * lds + c] = p;
            t += p;
        }
        alpha[c] = a;
        l[c] = fmaf(a, l[c], t);
        m[c] = mx;
    }
}

void cr_attn_pv_f32_ref(const float *p, int64_t ldp, int64_t m, const float *v, int64_t ldv, int64_t k,
                        const float *alpha, float *o, int64_t ldo, int64_t n) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            float t = o[i * ldo + j];
            if (alpha) t *= alpha[i];
            for (int64_t kk = 0; kk < k; kk++) t = fmaf(p[kk * ldp + i], v[kk * ldv + j], t);
            o[i * ldo + j] = t;
        }
}

void cr_attn_p_tiles_bf16_ref(const float *s, int64_t lds, int64_t k0, int64_t nk, int64_t n, uint16_t *dst) {
    int64_t rows = (n + 15) / 16 * 16;
    for (int64_t c = 0; c < rows; c++)
        for (int64_t t = 0; t < CR_ATTN_KEY_TILE; t++) {
            int seen = c < n && t >= k0 && t < k0 + nk;
            dst[((c / 16) * 2 + t / 32) * 512 + (c % 16) * 32 + t % 32] =
                seen ? cr_f32_to_bf16_one(s[(t - k0) * lds + c]) : 0;
        }
}

void cr_attn_q_panel_ref(const float *const *q, int64_t n, int64_t D, float scale, int bf16, void *dst) {
    for (int64_t j = 0; j < CR_GEMM_NR; j++)
        for (int64_t d = 0; d < D; d++) {
            float v = j < n ? q[j][d] * scale : 0.0f;
            if (bf16)
                ((uint16_t *)dst)[(d / 2) * 2 * CR_GEMM_NR + 2 * j + d % 2] = cr_f32_to_bf16_one(v);
            else
                ((float *)dst)[d * CR_GEMM_NR + j] = v;
        }
}
