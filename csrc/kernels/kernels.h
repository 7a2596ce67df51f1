/* kernels.h — the vector kernels behind one dispatch table.
 *
 * Each kernel has a scalar reference (kernels_ref.c) and ISA versions in files named by ISA
 * (kernels_avx2.c, kernels_avx512.c, kernels_avx512bf16.c): only those files are compiled with ISA flags. The table is
 * filled once with the references, then overridden by what the CPU and OS support, capped by the
 * CROSSRANK_ISA environment variable (ref | avx2 | avxvnni | avx512 | avx512vnni | avx512bf16 | amx).
 *
 * Contracts (all): n >= 0, any n (ragged tails handled), no alignment required; source pointers
 * may point into a memory-mapped checkpoint, so 16-bit sources are read with unaligned loads. */
#ifndef CR_KERNELS_H
#define CR_KERNELS_H

#include <stdint.h>

#include "crossrank.h"

typedef enum cr_isa {
    CR_ISA_REF = 0,
    CR_ISA_AVX2,        /* AVX2 + FMA + F16C */
    CR_ISA_AVXVNNI,     /* AVX2 + AVX-VNNI (256-bit vpdpbusd); a side level: AVX-512 CPUs may lack it */
    CR_ISA_AVX512,      /* AVX-512 F/BW/VL/DQ */
    CR_ISA_AVX512VNNI,  /* AVX-512 + AVX512_VNNI */
    CR_ISA_AVX512BF16,  /* AVX-512 + AVX512_VNNI + AVX512_BF16 */
    CR_ISA_AMX,         /* AVX512BF16 + AMX-TILE/BF16/INT8 (tdpbf16ps, tdpbusd), usable once the OS allows */
    CR_ISA_COUNT
} cr_isa;

/* CASE(1) .. CASE(n): the cases of a switch on a tile's row count, each of which calls an
 * always-inlined kernel body with that count as a constant (accumulators of a count known at
 * compile time stay in registers; a row tail run one row at a time is latency-bound). */
#define CR_ROW_COUNTS_6(CASE) CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6)
#define CR_ROW_COUNTS_8(CASE) CR_ROW_COUNTS_6(CASE) CASE(7) CASE(8)
#define CR_ROW_COUNTS_12(CASE) CR_ROW_COUNTS_8(CASE) CASE(9) CASE(10) CASE(11) CASE(12)

/* Output columns per packed weight panel: the packed layout is the same for every ISA, so a model
 * packed once runs under any dispatch level. */
#define CR_GEMM_NR 32

/* Keys per attention tile (attention.h). Part of the numerics (the online softmax rescales at
 * tile boundaries), so one constant for every ISA; 64 measured best against 32, 96 and 128. */
#define CR_ATTN_KEY_TILE 64

/* Lanes of abs_sum_max_f32's fixed summation order. */
#define CR_ABS_SUM_LANES 64

/* Lanes of dot_f32's and sumsq_f32's fixed summation order (see dot_f32 below). */
#define CR_DOT_LANES 32

typedef struct cr_kernels {
    cr_isa isa;
    /* y[i, j] = sum_k x[i, k] * wp[k, j] for i < m, j < n, where wp is one packed panel
     * [k][CR_GEMM_NR] (columns past n are zero padding). Each sum is one fused multiply-add chain
     * in increasing k from 0, whatever the tile shape, so every ISA and every m gives bitwise
     * the same result for a row: scores do not depend on batch composition or threads.
     * m <= gemm_mr; rows of x and y have strides ldx, ldy. */
    void (*gemm_f32_tile)(const float *x, int64_t ldx, int64_t m, const float *wp, int64_t k,
                          float *y, int64_t ldy, int64_t n);
    int gemm_mr;
    /* sum_i a[i] * b[i] in one fixed order, so every table returns the same bits: lane l of
     * CR_DOT_LANES accumulates a[i] * b[i] for i = l mod CR_DOT_LANES, one fused multiply-add each
     * in increasing i, from +0; then the lanes fold in halves (lane l += lane l + h for l < h,
     * h = 16, 8, 4, 2, 1) and lane 0 is the sum. */
    float (*dot_f32)(const float *a, const float *b, int64_t n);
    /* x[i] = alpha * x[i], in place: one rounding, the same bits on every ISA */
    void (*scale_f32)(float alpha, float *x, int64_t n);
    /* dot_f32(x, x): the same order and bits */
    float (*sumsq_f32)(const float *x, int64_t n);
    /* y[i] = w[i] * (x[i] * r): two float32 products in that order, no fused step, so every ISA
     * gives the same bits (y may be x). An RMS norm's scaling, r = 1 / sqrt(mean(x^2) + eps). */
    void (*norm_scale_f32)(const float *x, const float *w, float r, float *y, int64_t n);
    /* Rotate-half RoPE on one head vector v[0 .. 2 half), in place: with x1 = v[i], x2 = v[i + half],
     * v[i] = x1 c[i] - x2 s[i] and v[i + half] = x2 c[i] + x1 s[i], each product rounded before
     * the difference or sum (no fused step): the same bits on every ISA. */
    void (*rope_f32)(float *v, const float *c, const float *s, int64_t half);
    /* dst[i] = float(src[i]) for bfloat16 / IEEE half sources */
    void (*bf16_to_f32)(const void *src, float *dst, int64_t n);
    void (*f16_to_f32)(const void *src, float *dst, int64_t n);

    /* bfloat16 GEMM on one packed panel. x: m rows of bfloat16 (row stride ldx elements), each
     * row kp pairs (x[2p], x[2p+1]); wp: a panel [kp][CR_GEMM_NR][2], column j's pair adjacent
     * (element 2p in the low half). y[i, j] = the float32 chain over p = 0..kp-1 of
     * acc += x[2p+1] w[2p+1, j]; acc += x[2p] w[2p, j], each step a fused multiply-add (bf16
     * products are exact in float32) — the order AVX512_BF16's vdpbf16ps defines. So every ISA
     * gives the same sums up to denormal flushing, and a row's result never depends on m. */
    void (*gemm_bf16_tile)(const uint16_t *x, int64_t ldx, int64_t m, const uint16_t *wp, int64_t kp,
                           float *y, int64_t ldy, int64_t n);
    int gemm_bf16_mr;
    /* dst[i] = bfloat16(src[i]), rounded to nearest even; NaN stays a (quiet) NaN. */
    void (*f32_to_bf16)(const float *src, uint16_t *dst, int64_t n);

    /* int8 GEMM on one packed panel, exact in int32. x: m rows of unsigned bytes (row stride ldx
     * bytes), each row kq groups of 4; wp: a panel [kq][CR_GEMM_NR][4] of signed bytes, column
     * j's group of 4 adjacent. y[i, j] = sum_k x[i, k] * w[k, j] (int32, row stride ldy), for
     * j < n. Integer sums do not depend on order: every ISA gives the same bits. The caller keeps
     * sums inside int32 (K * 255 * 127 < 2^31 for K < 66,000). */
    void (*gemm_i8_tile)(const uint8_t *x, int64_t ldx, int64_t m, const int8_t *wp, int64_t kq,
                         int32_t *y, int64_t ldy, int64_t n);
    int gemm_i8_mr;
    /* Optional (NULL: linear.c applies the same formula in C): gemm_i8_tile fused with the
     * dequantization, y[i, j] = (float)(sum_k x[i, k] w[k, j] - 128 colsum[j]) *
     * (xscale[i] * wscale[j]) as float32, the same operations in the same order (so the same
     * bits); the sums never leave the registers. */
    void (*gemm_i8_tile_f32)(const uint8_t *x, int64_t ldx, int64_t m, const int8_t *wp, int64_t kq,
                             float *y, int64_t ldy, int64_t n, const float *xscale,
                             const int32_t *colsum, const float *wscale);
    /* Per-row symmetric int8 quantization of x[0..n): s = max|x| / 127 (1 when all zero),
     * out[k] = clamp(round_nearest_even(x[k] * (1 / s)), -127, 127) + 128; returns s. A row with
     * NaN or Inf returns NaN and writes 128 everywhere. Every ISA gives the same bytes. */
    float (*quantize_u8)(const float *x, int64_t n, uint8_t *out);
    /* The outlier inputs of one row of an int8 layer (those quantize_u8 did not see), in float32
     * against one packed panel's dequantized weights: for j < n <= CR_GEMM_NR, acc is the float32
     * chain acc = fma(v[t], (float)w(k[t], j), acc) over t < count from 0, then
     * y[j] = fma(acc, wscale[j], y[j]); w(k, j) = wp[(k / 4) 4 CR_GEMM_NR + 4 j + k % 4] (the
     * gemm_i8_tile panel layout), 0 <= k[t] < 4 kq. Every ISA gives the same bits. */
    void (*i8_outliers_f32)(const int8_t *wp, const int32_t *k, const float *v, int count,
                            const float *wscale, float *y, int64_t n);
    /* sum |x[i]|, lane l of CR_ABS_SUM_LANES summing the i = l mod CR_ABS_SUM_LANES in increasing
     * i and the lanes then added in order (so every ISA gives the same bits; 64 lanes are four
     * independent zmm chains); *amax = max |x[i]|, NaN skipped (the sum carries it), 0 for n = 0. */
    float (*abs_sum_max_f32)(const float *x, int64_t n, float *amax);
    /* The indices i < n with |x[i]| > threshold (never a NaN), increasing: the first `cap` into
     * idx; returns how many there are. */
    int64_t (*find_above_f32)(const float *x, int64_t n, float threshold, int32_t *idx, int64_t cap);

    /* Attention (attention.c; functions in attention_*.c). Every ISA returns the same bits as the
     * reference for each of these, so attention does not depend on the dispatch level either.
     *
     * y[i] = e^x[i] in float32 (Cephes' expf with fused steps, see attention_kernels.h): within
     * 2 ulp of the correctly rounded result where it is normal, rounded once where it is
     * subnormal; e^-inf = 0, e^+inf = +inf, a NaN comes back unchanged. */
    void (*exp_f32)(const float *x, float *y, int64_t n);
    /* Gated MLP activations of the form g sigmoid(c), times the up projection:
     * h[i] = (g / (1 + e^-c)) * up[i] with g = gate[i], e^ exp_f32's, and
     *   c = g                                            SiLU (gelu_tanh = 0)
     *   c = CR_GELU_TANH_C * fma(0.044715 (g g), g, g)   tanh GELU (gelu_tanh = 1), since
     *       0.5 g (1 + tanh(z)) = g sigmoid(2 z) with z = sqrt(2/pi) (g + 0.044715 g^3).
     * Every ISA gives the same bits (h may alias gate or up). */
    void (*sigmoid_glu_f32)(const float *gate, const float *up, float *h, int64_t n, int gelu_tanh);
    /* One key tile of online softmax over score columns. s is [k][lds]: column c < n holds one
     * query's scores for k keys (masked keys -inf). Per column, with M = max(m[c], max_j s[j][c])
     * and u = M (0 while M is -inf): alpha[c] = e^(m[c] - u); s[j][c] = e^(s[j][c] - u);
     * l[c] = fma(alpha[c], l[c], t) where t is the float32 sum of the new s[j][c] in increasing j
     * from 0; m[c] = M. e^ is exp_f32's. A column whose keys are all masked so far keeps
     * m = -inf, l = 0 and gets alpha = 0 and p = 0. n >= 0, k >= 0, lds >= n. */
    void (*attn_softmax_f32)(float *s, int64_t lds, int64_t k, int64_t n, float *m, float *l, float *alpha);
    /* o[i][j] = alpha[i] o[i][j] + sum_kk p[kk][i] v[kk][j] for i < m <= attn_pv_mr, j < n (any n):
     * p key-major with row stride ldp, v rows of stride ldv, o rows of stride ldo. Each output is
     * t = o[i][j] * alpha[i] (t = o[i][j] when alpha is NULL), then t = fma(p[kk][i], v[kk][j], t)
     * for kk increasing from 0: the same bits for every ISA and every m, and a call over keys
     * [0, a) followed by one over [a, k) with alpha NULL gives the bits of one call over [0, k). */
    void (*attn_pv_f32)(const float *p, int64_t ldp, int64_t m, const float *v, int64_t ldv, int64_t k,
                        const float *alpha, float *o, int64_t ldo, int64_t n);
    int attn_pv_mr;
    /* The probabilities of one key tile as the A operand of gemm_bf16_amx for P V (the tile path
     * of attention.c): s is key-major, key k0 + i of the tile in row i < nk (row stride lds), as
     * attn_softmax_f32 leaves it. For columns c < 16 ceil(n / 16) and tile slots t <
     * CR_ATTN_KEY_TILE: dst[((c / 16) 2 + t / 32) 512 + (c % 16) 32 + t % 32] is f32_to_bf16 of
     * s[t - k0][c] where k0 <= t < k0 + nk and c < n, else +0; two blocks of 32 slots per 16-row
     * group, every A tile one contiguous KiB. 0 <= k0, k0 + nk <= CR_ATTN_KEY_TILE. Pure data
     * movement and one rounding: every ISA gives the same bits. */
    void (*attn_p_tiles_bf16)(const float *s, int64_t lds, int64_t k0, int64_t nk, int64_t n, uint16_t *dst);
    /* A block's queries as one weight panel of the scores' GEMM: column j < n <= CR_GEMM_NR holds
     * q[j][d] * scale (one float32 product) for d < D, laid out as gemm_f32_tile's panel
     * [D][CR_GEMM_NR] floats (bf16 = 0), or rounded as cr_f32_to_bf16_one into gemm_bf16_tile's
     * [D / 2][CR_GEMM_NR][2] (bf16 = 1, D even); columns n .. CR_GEMM_NR - 1 are +0. Pure data
     * movement around one product and one rounding: every ISA gives the same bits. */
    void (*attn_q_panel)(const float *const *q, int64_t n, int64_t D, float scale, int bf16, void *dst);

    /* AMX GEMMs over np <= CR_AMX_PANELS consecutive packed panels whose K is padded to whole
     * blocks (kernels_amx.c). Below AMX the bf16 entry is a model of the tiles' order with the
     * same bits (vdpbf16ps on AVX512_BF16, float32 FMAs in the AVX2 and AVX-512 tables; it serves
     * int8 models' attention) and the int8 one the scalar model of kernels_ref.c. x: rows in tile
     * order, so that every A tile is one contiguous KiB: row 16 g + r, block b at
     * x + (g kb_stride + b) 16 B + r B (B = CR_AMX_BF16_K or CR_AMX_I8_K elements), for
     * 16 ceil(m / 16) rows (the caller pads the last group; a row's result is the same whatever rows
     * are beside it). The call computes rows i < m <= CR_AMX_ROWS. wp: np panels of kb_stride
     * blocks of 16 rows of [CR_GEMM_NR][2] bf16 pairs (the gemm_bf16_tile layout, kp = 16 kb) or
     * [CR_GEMM_NR][4] int8 groups (the gemm_i8_tile layout, kq = 16 kb), panel after panel. out:
     * rows of stride ldo elements; out[i ldo + p CR_GEMM_NR + j] is column j of panel p for row i,
     * written for every row i < 16 ceil(m / 16) (rows past m: junk). Tiles read and write whole
     * 64-byte rows: x and wp are read in blocks b < kb of each group and panel, never past.
     *
     * bfloat16 (a block is 32 elements of K): the order of TDPBF16PS as measured on Intel Emerald
     * Rapids (the hardware matches it bitwise; the SDM's pseudo-code reads as one chain of even,
     * odd, even, ... products, which the hardware does not do). Per block b, with products
     * e_t = x[32b + 2t] w[32b + 2t, j] and o_t = x[32b + 2t + 1] w[32b + 2t + 1, j] (t = 0..15),
     * two chains E = fma(.. fma(+0 + e_0) ..) + e_15 and O likewise over o_t, each step one
     * rounding of the exact product plus the chain, then acc = acc + (E + O), from acc = +0, b
     * increasing. Rounding is to nearest even; bf16 inputs and every result below the normal
     * range are flushed to zero (DAZ/FTZ); sums that overflow are not modelled. This is not
     * vdpbf16ps's order, so AMX bf16 is its own level (within the bfloat16 accuracy bar of the
     * others). A row's result does not depend on m, n or the rows beside it.
     * int8 (a block is 64 elements): exact int32 sums, the bits of gemm_i8_tile.
     * K in pieces: a call sums kb blocks starting where x and wp point, with kb_stride the blocks of
     * a whole row (the stride between x's 16-row groups, kb_stride blocks of 16 B elements, and
     * between wp's panels); kb_stride = kb for all of K. With `accumulate`, the sums start from the
     * values in out (which the call for the blocks before left there) instead of +0, so K summed
     * over several calls, in block order, gives the bits of one call.
     * next / next_bytes (NULL / 0 for none): a hint, bytes the caller reads after this call (its
     * next weights); the kernel asks for them into L2 while it works. Never read, results unchanged. */
    void (*gemm_bf16_amx)(const uint16_t *x, int64_t m, const uint16_t *wp, int64_t kb, int64_t kb_stride,
                          int64_t np, float *out, int64_t ldo, int accumulate, const void *next,
                          int64_t next_bytes);
    void (*gemm_i8_amx)(const uint8_t *x, int64_t m, const int8_t *wp, int64_t kb, int64_t kb_stride, int64_t np,
                        int32_t *out, int64_t ldo, int accumulate, const void *next, int64_t next_bytes);
    /* Optional (NULL: linear.c runs the same formula in C): the int8 epilogue of
     * gemm_i8_tile_f32 on sums already computed, y[i, j] = (float)(acc[i, j] - 128 colsum[j]) *
     * (xscale[i] * wscale[j]) for i < rows, j < cols (acc row stride ldacc, y row stride ldy): the
     * same operations in the same order, so the same bits. acc may be y itself (ldacc = ldy): each
     * 16 sums are loaded before their 16 results are stored over them. */
    void (*i8_dequant_f32)(const int32_t *acc, int64_t ldacc, int64_t rows, int64_t cols, const float *xscale,
                           const int32_t *colsum, const float *wscale, float *y, int64_t ldy);
    /* The AMX table only (linear_amx.c, which runs only on that table): dst[i ldd + c] =
     * src[i lds + c] for i < rows, c < cols (times scale[i scale_stride] when scale is not NULL,
     * one float32 product, as scale_f32 rounds it), with stores that bypass the caches where a
     * row's 64-byte lines are whole, for results that are written once and read back only much
     * later. Ordered before the caller's next atomic or lock (a fence at the end). */
    void (*store_rows_stream)(float *dst, int64_t ldd, const float *src, int64_t lds, int64_t rows, int64_t cols,
                              const float *scale, int64_t scale_stride);
} cr_kernels;

/* Rows and packed panels of one AMX GEMM call. */
#define CR_AMX_ROWS 64
#define CR_AMX_PANELS 4

/* K elements per AMX block: one 64-byte tile row of bf16 (32) or of int8 (64). */
#define CR_AMX_BF16_K 32
#define CR_AMX_I8_K 64

/* MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6): the float32 models of the AMX
 * bf16 tiles set them for a call to flush inputs and results below the normal range as the tiles
 * do. (A result that rounds up to the smallest normal from below it is flushed by FTZ and kept by
 * the scalar model's gradual underflow: a window of 2^-150 at 1.2e-38, never met by scores.) */
#define CR_MXCSR_FTZ_DAZ 0x8040u

/* One float32 -> bfloat16, round to nearest even (the scalar definition; used for packing). */
uint16_t cr_f32_to_bf16_one(float f);
/* The scale quantize_u8 uses for a row whose max |x| is amax (NaN when amax is not finite). */
float cr_quant_scale(float amax);

/* The active table; valid after cr_kernels_init() (idempotent, thread-safe). */
extern const cr_kernels *cr_kern;
void cr_kernels_init(void);

/* Per-ISA tables; NULL when that ISA was not compiled in (non-x86 builds). */
const cr_kernels *cr_kernels_ref(void);
const cr_kernels *cr_kernels_avx2(void);
const cr_kernels *cr_kernels_avx512(void);
/* Only the entries AVX512_BF16 speeds up (the bf16 GEMM and conversion); the rest is AVX-512's. */
const cr_kernels *cr_kernels_avx512bf16(void);
/* Only the int8 GEMM (vpdpbusd). */
const cr_kernels *cr_kernels_avx512vnni(void);
const cr_kernels *cr_kernels_avxvnni(void);

/* Only the AMX GEMMs (tile kernels); NULL when not compiled in. */
const cr_kernels *cr_kernels_amx(void);

/* The complete table of one level (compiled in; the caller checks the CPU runs it). */
const cr_kernels *cr_kernels_level(cr_isa level);
/* The table whose every entry may run now: the active one, or, where the OS refused the tiles,
 * the AVX512BF16 level's (the AMX table's vector entries, with that level's model of the tiles). */
const cr_kernels *cr_kernels_runnable(void);

/* Peak probes for benchmarks (register-only loops; callers check the ISA first): independent
 * chains of AVX-512 FMA (384 FLOP per iteration) or vdpbf16ps (768 FLOP per iteration). */
float cr_peak_fma_avx512(int64_t iters);
float cr_peak_dpbf16(int64_t iters);
int32_t cr_peak_vnni(int64_t iters); /* vpdpbusd: 1536 integer OP per iteration */

/* AMX tile peaks (register-only loops on 4 accumulator tiles; callers check cr_amx_usable first):
 * TDPBF16PS, 4 x 16 x 16 x 32 x 2 FLOP per iteration; TDPBUSD, 4 x 16 x 16 x 64 x 2 OP. */
float cr_peak_amx_bf16(int64_t iters);
float cr_peak_amx_i8(int64_t iters);

/* cr_amx_usable(): whether the AMX kernels may run (crossrank.h says when it asks the permission). */
/* "usable", "not asked yet", or why not ("refused by the kernel: ...", "not supported: ..."). */
const char *cr_amx_state(void);
/* The CPUID vendor string ("GenuineIntel", "AuthenticAMD", ...; "" when unknown). */
const char *cr_cpu_vendor(void);

/* What the CPU and OS support (before any cap), and the names of ISA levels. */
cr_isa cr_isa_detected(void);
/* Whether this CPU and OS can run the level's table (every level up to the detected one, except
 * AVX-VNNI, which needs its own feature bit). */
int cr_isa_runnable(cr_isa level);
const char *cr_isa_level_name(cr_isa isa);
/* Features as a comma-separated list ("avx2,fma,f16c,avx512f,..."), for cpu_info(). */
const char *cr_cpu_features(void);

#endif
