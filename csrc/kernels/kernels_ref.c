/* kernels_ref.c — scalar reference kernels: the definition every ISA version is tested against,
 * and what runs on CPUs without AVX2 or on other architectures. */
#include <math.h>
#include <string.h>

#include "attention_kernels.h"
#include "kernels.h"

static float dot_f32_ref(const float *a, const float *b, int64_t n) {
    float lane[CR_DOT_LANES] = {0};
    for (int64_t i = 0; i < n; i++) lane[i % CR_DOT_LANES] = fmaf(a[i], b[i], lane[i % CR_DOT_LANES]);
    for (int half = CR_DOT_LANES / 2; half >= 1; half /= 2)
        for (int l = 0; l < half; l++) lane[l] += lane[l + half];
    return lane[0];
}

static void scale_f32_ref(float alpha, float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] *= alpha;
}

static float sumsq_f32_ref(const float *x, int64_t n) { return dot_f32_ref(x, x, n); }

static void norm_scale_f32_ref(const float *x, const float *w, float r, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = w[i] * (x[i] * r);
}

static void rope_f32_ref(float *v, const float *c, const float *s, int64_t half) {
    for (int64_t i = 0; i < half; i++) {
        float x1 = v[i], x2 = v[i + half];
        v[i] = x1 * c[i] - x2 * s[i];
        v[i + half] = x2 * c[i] + x1 * s[i];
    }
}

static void bf16_to_f32_ref(const void *src, float *dst, int64_t n) {
    const unsigned char *p = src;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        uint32_t bits = (uint32_t)h << 16;
        memcpy(&dst[i], &bits, 4);
    }
}

/* IEEE binary16 -> binary32, exact for every input (subnormals, infinities, NaN payloads). */
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {
        /* subnormal half: value = mant * 2^-24, exactly representable as a normal float */
        float f = (float)mant * 5.9604644775390625e-08f;
        memcpy(&bits, &f, 4);
        bits |= sign;
    }
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

static void f16_to_f32_ref(const void *src, float *dst, int64_t n) {
    const unsigned char *p = src;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        dst[i] = half_to_float(h);
    }
}

static void gemm_f32_tile_ref(const float *x, int64_t ldx, int64_t m, const float *wp, int64_t k,
                              float *y, int64_t ldy, int64_t n) {
    for (int64_t i = 0; i < m; i++) {
        float acc[CR_GEMM_NR] = {0};
        const float *xi = x + i * ldx;
        for (int64_t kk = 0; kk < k; kk++) {
            const float *w = wp + kk * CR_GEMM_NR;
            for (int j = 0; j < CR_GEMM_NR; j++) acc[j] = fmaf(xi[kk], w[j], acc[j]);
        }
        for (int64_t j = 0; j < n; j++) y[i * ldy + j] = acc[j];
    }
}

static inline float bf16_value(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static void gemm_bf16_tile_ref(const uint16_t *x, int64_t ldx, int64_t m, const uint16_t *wp, int64_t kp,
                               float *y, int64_t ldy, int64_t n) {
    for (int64_t i = 0; i < m; i++) {
        float acc[CR_GEMM_NR] = {0};
        const uint16_t *xi = x + i * ldx;
        for (int64_t p = 0; p < kp; p++) {
            float x_even = bf16_value(xi[2 * p]), x_odd = bf16_value(xi[2 * p + 1]);
            const uint16_t *w = wp + p * 2 * CR_GEMM_NR;
            for (int j = 0; j < CR_GEMM_NR; j++) {
                acc[j] = fmaf(x_odd, bf16_value(w[2 * j + 1]), acc[j]);
                acc[j] = fmaf(x_even, bf16_value(w[2 * j]), acc[j]);
            }
        }
        for (int64_t j = 0; j < n; j++) y[i * ldy + j] = acc[j];
    }
}

/* Below the normal range to a zero of the same sign (AMX's DAZ / FTZ). */
static inline float flush_denormal(float f) {
    return fabsf(f) < 1.17549435e-38f ? copysignf(0.0f, f) : f;
}

/* The scalar model of TDPBF16PS (kernels.h) for one 32-element block of one output: an even and
 * an odd chain from +0 of fused steps (exact product, one rounding), added together and then to
 * the accumulator; inputs and every result flushed below the normal range. xb: the block's 32
 * inputs; wb: the panel's 16 rows of the block; j: the column. */
static float tdpbf16ps_block(const uint16_t *xb, const uint16_t *wb, int64_t j, float acc) {
    float even = 0.0f, odd = 0.0f;
    for (int t = 0; t < 16; t++) {
        const uint16_t *w = wb + t * 2 * CR_GEMM_NR + 2 * j;
        /* the product is not rounded on its own (a denormal product counts too) */
        even = flush_denormal(fmaf(flush_denormal(bf16_value(xb[2 * t])), flush_denormal(bf16_value(w[0])), even));
        odd = flush_denormal(fmaf(flush_denormal(bf16_value(xb[2 * t + 1])), flush_denormal(bf16_value(w[1])), odd));
    }
    return flush_denormal(acc + flush_denormal(even + odd));
}

/* x in the AMX tile order: row i's block b. */
#define AMX_X_BLOCK(x, i, b, kb, B) ((x) + ((((i) / 16) * (kb) + (b)) * 16 + (i) % 16) * (B))

static void gemm_bf16_amx_ref(const uint16_t *x, int64_t m, const uint16_t *wp, int64_t kb, int64_t kb_stride,
                              int64_t np, float *out, int64_t ldo, int accumulate, const void *next,
                              int64_t next_bytes) {
    (void)next, (void)next_bytes; /* a prefetch hint */
    for (int64_t i = 0; i < m; i++)
        for (int64_t p = 0; p < np; p++)
            for (int64_t j = 0; j < CR_GEMM_NR; j++) {
                float acc = accumulate ? out[i * ldo + p * CR_GEMM_NR + j] : 0.0f;
                for (int64_t b = 0; b < kb; b++)
                    acc = tdpbf16ps_block(AMX_X_BLOCK(x, i, b, kb_stride, CR_AMX_BF16_K),
                                          wp + (p * kb_stride + b) * 16 * 2 * CR_GEMM_NR, j, acc);
                out[i * ldo + p * CR_GEMM_NR + j] = acc;
            }
}

uint16_t cr_f32_to_bf16_one(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((b >> 16) | 0x40u); /* quiet NaN */
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

static void f32_to_bf16_ref(const float *src, uint16_t *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = cr_f32_to_bf16_one(src[i]);
}

static void gemm_i8_tile_ref(const uint8_t *x, int64_t ldx, int64_t m, const int8_t *wp, int64_t kq,
                             int32_t *y, int64_t ldy, int64_t n) {
    for (int64_t i = 0; i < m; i++) {
        int32_t acc[CR_GEMM_NR] = {0};
        const uint8_t *xi = x + i * ldx;
        for (int64_t g = 0; g < kq; g++) {
            const int8_t *w = wp + g * 4 * CR_GEMM_NR;
            for (int j = 0; j < CR_GEMM_NR; j++)
                for (int b = 0; b < 4; b++) acc[j] += (int32_t)xi[4 * g + b] * (int32_t)w[4 * j + b];
        }
        for (int64_t j = 0; j < n; j++) y[i * ldy + j] = acc[j];
    }
}

/* AMX int8: exact sums, the bits of gemm_i8_tile over the 16 kb groups of the padded panels. */
static void gemm_i8_amx_ref(const uint8_t *x, int64_t m, const int8_t *wp, int64_t kb, int64_t kb_stride,
                            int64_t np, int32_t *out, int64_t ldo, int accumulate, const void *next,
                            int64_t next_bytes) {
    (void)next, (void)next_bytes; /* a prefetch hint */
    for (int64_t i = 0; i < m; i++)
        for (int64_t p = 0; p < np; p++) {
            int32_t acc[CR_GEMM_NR] = {0};
            if (accumulate) memcpy(acc, out + i * ldo + p * CR_GEMM_NR, sizeof acc);
            for (int64_t b = 0; b < kb; b++) {
                const uint8_t *xb = AMX_X_BLOCK(x, i, b, kb_stride, CR_AMX_I8_K);
                const int8_t *wb = wp + (p * kb_stride + b) * 16 * 4 * CR_GEMM_NR;
                for (int t = 0; t < 16; t++)
                    for (int j = 0; j < CR_GEMM_NR; j++)
                        for (int e = 0; e < 4; e++)
                            acc[j] += (int32_t)xb[4 * t + e] * (int32_t)wb[t * 4 * CR_GEMM_NR + 4 * j + e];
            }
            memcpy(out + i * ldo + p * CR_GEMM_NR, acc, sizeof acc);
        }
}

float cr_quant_scale(float amax) {
    if (!(amax <= 3.4028234663852886e38f)) return NAN; /* NaN or Inf */
    return amax > 0.0f ? amax / 127.0f : 1.0f;
}

static float quantize_u8_ref(const float *x, int64_t n, uint8_t *out) {
    float amax = 0.0f;
    for (int64_t k = 0; k < n; k++) {
        float a = fabsf(x[k]);
        amax = a > amax || a != a ? a : amax;
    }
    float s = cr_quant_scale(amax);
    if (s != s) {
        memset(out, 128, (size_t)n);
        return s;
    }
    float inv = 1.0f / s;
    for (int64_t k = 0; k < n; k++) {
        float q = nearbyintf(x[k] * inv);
        q = q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q;
        out[k] = (uint8_t)((int)q + 128);
    }
    return s;
}

static void i8_outliers_f32_ref(const int8_t *wp, const int32_t *k, const float *v, int count,
                                const float *wscale, float *y, int64_t n) {
    for (int64_t j = 0; j < n; j++) {
        float acc = 0.0f;
        for (int t = 0; t < count; t++)
            acc = fmaf(v[t], (float)wp[(k[t] / 4) * 4 * CR_GEMM_NR + 4 * j + k[t] % 4], acc);
        y[j] = fmaf(acc, wscale[j], y[j]);
    }
}

static float abs_sum_max_f32_ref(const float *x, int64_t n, float *amax) {
    float lane[CR_ABS_SUM_LANES] = {0}, mx = 0.0f, sum = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        lane[i % CR_ABS_SUM_LANES] += a;
        mx = a > mx ? a : mx;
    }
    for (int l = 0; l < CR_ABS_SUM_LANES; l++) sum += lane[l];
    *amax = mx;
    return sum;
}

static int64_t find_above_f32_ref(const float *x, int64_t n, float threshold, int32_t *idx, int64_t cap) {
    int64_t count = 0;
    for (int64_t i = 0; i < n; i++)
        if (fabsf(x[i]) > threshold) {
            if (count < cap) idx[count] = (int32_t)i;
            count++;
        }
    return count;
}

static const cr_kernels ref_table = {
    .isa = CR_ISA_REF,
    .gemm_f32_tile = gemm_f32_tile_ref,
    .gemm_mr = 4,
    .dot_f32 = dot_f32_ref,
    .scale_f32 = scale_f32_ref,
    .norm_scale_f32 = norm_scale_f32_ref,
    .rope_f32 = rope_f32_ref,
    .sumsq_f32 = sumsq_f32_ref,
    .bf16_to_f32 = bf16_to_f32_ref,
    .f16_to_f32 = f16_to_f32_ref,
    .gemm_bf16_tile = gemm_bf16_tile_ref,
    .gemm_bf16_mr = 4,
    .f32_to_bf16 = f32_to_bf16_ref,
    .gemm_i8_tile = gemm_i8_tile_ref,
    .gemm_i8_mr = 4,
    .quantize_u8 = quantize_u8_ref,
    .i8_outliers_f32 = i8_outliers_f32_ref,
    .abs_sum_max_f32 = abs_sum_max_f32_ref,
    .find_above_f32 = find_above_f32_ref,
    .exp_f32 = cr_exp_f32_ref,
    .sigmoid_glu_f32 = cr_sigmoid_glu_f32_ref,
    .attn_softmax_f32 = cr_attn_softmax_f32_ref,
    .attn_pv_f32 = cr_attn_pv_f32_ref,
    .attn_pv_mr = CR_ATTN_PV_MR_REF,
    .attn_p_tiles_bf16 = cr_attn_p_tiles_bf16_ref,
    .attn_q_panel = cr_attn_q_panel_ref,
    .gemm_bf16_amx = gemm_bf16_amx_ref,
    .gemm_i8_amx = gemm_i8_amx_ref,
};

const cr_kernels *cr_kernels_ref(void) { return &ref_table; }
