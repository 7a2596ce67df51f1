/* attention_kernels.h — the per-ISA functions behind the attention entries of the kernel table
 * (exp_f32, sigmoid_glu_f32, attn_softmax_f32, attn_pv_f32, attn_p_tiles_bf16; contracts in
 * kernels.h). They live in their own files (attention_ref.c, attention_avx2.c, attention_avx512.c)
 * and each ISA's table points at them.
 *
 * The exponential is Cephes' expf (cephes/single/expf.c: range reduction by ln 2 split in two
 * constants, a degree-5 polynomial), written with one fused multiply-add per step and an exact
 * power-of-two scaling that rounds once, so the scalar reference and every vector version return
 * the same bits for every input. */
#ifndef CR_ATTENTION_KERNELS_H
#define CR_ATTENTION_KERNELS_H

#include <stdint.h>

/* Inputs are clamped to [CR_EXP_LO, CR_EXP_HI]: e^-104 rounds to 0 and e^88.8 overflows to inf,
 * so the clamp changes no result, and the scaling exponent stays in [-150, 128]. */
#define CR_EXP_LO (-104.0f)
#define CR_EXP_HI 88.8f
#define CR_EXP_LOG2E 1.44269504088896341f
#define CR_EXP_C1 0.693359375f        /* ln 2 = C1 - C2, C1 with 9 significant bits */
#define CR_EXP_C2 (-2.12194440e-4f)
#define CR_EXP_P0 1.9875691500e-4f
#define CR_EXP_P1 1.3981999507e-3f
#define CR_EXP_P2 8.3334519073e-3f
#define CR_EXP_P3 4.1665795894e-2f
#define CR_EXP_P4 1.6666665459e-1f
#define CR_EXP_P5 5.0000001201e-1f

#define CR_GELU_TANH_C 1.5957691216057308f /* 2 sqrt(2/pi) */
#define CR_GELU_TANH_CUBE 0.044715f

void cr_exp_f32_ref(const float *x, float *y, int64_t n);
void cr_sigmoid_glu_f32_ref(const float *gate, const float *up, float *h, int64_t n, int gelu_tanh);
void cr_attn_softmax_f32_ref(float *s, int64_t lds, int64_t k, int64_t n, float *m, float *l, float *alpha);
void cr_attn_pv_f32_ref(const float *p, int64_t ldp, int64_t m, const float *v, int64_t ldv, int64_t k,
                        const float *alpha, float *o, int64_t ldo, int64_t n);
#define CR_ATTN_PV_MR_REF 4
void cr_attn_p_tiles_bf16_ref(const float *s, int64_t lds, int64_t k0, int64_t nk, int64_t n, uint16_t *dst);
void cr_attn_q_panel_ref(const float *const *q, int64_t n, int64_t D, float scale, int bf16, void *dst);

void cr_exp_f32_avx2(const float *x, float *y, int64_t n);
void cr_sigmoid_glu_f32_avx2(const float *gate, const float *up, float *h, int64_t n, int gelu_tanh);
void cr_attn_softmax_f32_avx2(float *s, int64_t lds, int64_t k, int64_t n, float *m, float *l, float *alpha);
void cr_attn_pv_f32_avx2_3x32(const float *p, int64_t ldp, int64_t m, const float *v, int64_t ldv, int64_t k,
                              const float *alpha, float *o, int64_t ldo, int64_t n);
#define CR_ATTN_PV_MR_AVX2 3

void cr_exp_f32_avx512(const float *x, float *y, int64_t n);
void cr_sigmoid_glu_f32_avx512(const float *gate, const float *up, float *h, int64_t n, int gelu_tanh);
void cr_attn_softmax_f32_avx512(float *s, int64_t lds, int64_t k, int64_t n, float *m, float *l, float *alpha);
void cr_attn_pv_f32_avx512_6x64(const float *p, int64_t ldp, int64_t m, const float *v, int64_t ldv, int64_t k,
                                const float *alpha, float *o, int64_t ldo, int64_t n);
#define CR_ATTN_PV_MR_AVX512 6
void cr_attn_p_tiles_bf16_avx512(const float *s, int64_t lds, int64_t k0, int64_t nk, int64_t n, uint16_t *dst);
void cr_attn_q_panel_avx512(const float *const *q, int64_t n, int64_t D, float scale, int bf16, void *dst);

#endif
