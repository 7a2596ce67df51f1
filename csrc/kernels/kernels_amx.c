/* kernels_amx.c — the bfloat16 and int8 GEMMs on AMX tiles (TDPBF16PS, TDPBUSD). Compiled with
 * the AMX flags; dispatch installs them only when the CPU and XCR0 have the tile state, and
 * linear.c calls them only after cr_amx_usable() (the Linux permission) said yes.
 *
 * One call computes up to 64 rows x 4 packed panels (128 columns) over all of K: per row pair and
 * panel, four accumulator tiles C[r][c] of 16 x 16 float32 / int32 that stay in the tiles over K,
 * two A tiles (16-row groups of x, each a contiguous KiB in the caller's tile-order scratch) and
 * two B tiles (panel columns 0-15 and 16-31, the two 64-byte halves of each 128-byte panel row:
 * the gemm_*_tile panels are already in the pair / quad layout tiles want). Row tails are zero
 * rows of the caller's padded scratch, so a row always goes through the same tile instructions
 * over the same K blocks whatever m is. The tile configuration is loaded at every entry (another
 * library in the same thread may have left its own) and released on exit.
 *
 * Measured on one Emerald Rapids core (thread CPU time, so the other processes on the machine do
 * not count): ~70% of the tile peak when the operands sit in L2, 37-48% at the Qwen3-0.6B layer
 * shapes through linear.c (inputs and weights from L3, results streamed out). Each K step loads
 * 4 KiB of tiles for 64 cycles of multiplies, so with both operands in L2 the loads bound it.
 * Chunking K through the accumulators (so A and B chunks stay in L1) and prefetching the next
 * step's tiles into L1 measured slower; the gain came from the tile-order A, from reloading each
 * tile as soon as its last reader issued, and (in linear.c) from keeping the inputs in L2 and
 * streaming the results out. The optional `next` region is asked into L2 a few lines per step. */
#include <immintrin.h>
#include <string.h>

#include "kernels.h"

typedef struct tile_config {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* Tiles: 0..3 accumulators C[r][c] at 2 r + c; 4, 5 the A row tiles; 6, 7 the B column tiles;
 * every tile 16 rows of 64 bytes. */
static void configure(void) {
    _Alignas(64) tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    _tile_loadconfig(&cfg);
}

/* Up to `lines` more 64-byte lines of next[0, bytes) into L2, from byte `asked`; returns how far
 * the asking has got. */
static inline __attribute__((always_inline)) int64_t ask_l2(const char *next, int64_t bytes, int64_t asked,
                                                            int64_t lines) {
    for (int64_t q = 0; q < lines && asked < bytes; q++, asked += 64) _mm_prefetch(next + asked, _MM_HINT_T1);
    return asked;
}

/* One call (kernels.h): out[i ldo + p CR_GEMM_NR + j] for panels p < np, rows i < 16 ceil(m / 16),
 * j < CR_GEMM_NR, over kb blocks of K with the accumulators in tiles (from out's values when
 * `accumulate`, else from zero). x in tile order (each A tile one contiguous KiB, 16-row groups
 * kb_stride KiB apart), wp panels kb_stride blocks apart of 16 rows of 128 bytes (two B tiles side
 * by side), outputs of 4 bytes. Byte pointers; `bf16` picks the instruction (a constant after
 * inlining). */
static inline __attribute__((always_inline)) void amx_gemm(const char *x, int64_t m, const char *wp, int64_t kb,
                                                          int64_t kb_stride, int64_t np, char *out, int64_t ldo,
                                                          int accumulate, const char *next, int64_t next_bytes,
                                                          const int bf16) {
    configure();
    const int64_t so = ldo * 4, panel = kb_stride * 2048;
    const int groups = (int)((m + 15) / 16);
    /* the caller's next operands, asked into L2 a few lines per K block over the whole call (a
     * burst of prefetches would fill the miss queue and stall the tile loads behind it) */
    const int64_t steps = np * ((groups + 1) / 2) * kb;
    const int64_t per_step = next ? (next_bytes / 64 + steps - 1) / steps : 0;
    int64_t asked = 0;
    for (int64_t p = 0; p < np; p++) {
        const char *w = wp + p * panel;
        for (int g = 0; g < groups; g += 2) {
            char *o = out + g * 16 * so + p * CR_GEMM_NR * 4;
            const char *x0 = x + g * kb_stride * 1024, *x1 = x0 + kb_stride * 1024;
            if (g + 1 < groups) {
                if (accumulate) {
                    _tile_loadd(0, o, so);
                    _tile_loadd(1, o + 64, so);
                    _tile_loadd(2, o + 16 * so, so);
                    _tile_loadd(3, o + 16 * so + 64, so);
                } else {
                    _tile_zero(0);
                    _tile_zero(1);
                    _tile_zero(2);
                    _tile_zero(3);
                }
                /* software-pipelined: each tile is reloaded for block b + 1 as soon as the last
                 * instruction of block b reading it has issued, so loads overlap the multiplies */
                _tile_loadd(4, x0, 64);
                _tile_loadd(6, w, 128);
                _tile_loadd(7, w + 64, 128);
                _tile_loadd(5, x1, 64);
                for (int64_t b = 0; b < kb; b++) {
                    const int more = b + 1 < kb;
                    asked = ask_l2(next, next_bytes, asked, per_step);
                    if (bf16) {
                        _tile_dpbf16ps(0, 4, 6);
                        _tile_dpbf16ps(1, 4, 7);
                    } else {
                        _tile_dpbusd(0, 4, 6);
                        _tile_dpbusd(1, 4, 7);
                    }
                    if (more) _tile_loadd(4, x0 + (b + 1) * 1024, 64);
                    if (bf16)
                        _tile_dpbf16ps(2, 5, 6);
                    else
                        _tile_dpbusd(2, 5, 6);
                    if (more) _tile_loadd(6, w + (b + 1) * 2048, 128);
                    if (bf16)
                        _tile_dpbf16ps(3, 5, 7);
                    else
                        _tile_dpbusd(3, 5, 7);
                    if (more) {
                        _tile_loadd(5, x1 + (b + 1) * 1024, 64);
                        _tile_loadd(7, w + (b + 1) * 2048 + 64, 128);
                    }
                }
                _tile_stored(0, o, so);
                _tile_stored(1, o + 64, so);
                _tile_stored(2, o + 16 * so, so);
                _tile_stored(3, o + 16 * so + 64, so);
            } else {
                if (accumulate) {
                    _tile_loadd(0, o, so);
                    _tile_loadd(1, o + 64, so);
                } else {
                    _tile_zero(0);
                    _tile_zero(1);
                }
                _tile_loadd(4, x0, 64);
                _tile_loadd(6, w, 128);
                _tile_loadd(7, w + 64, 128);
                for (int64_t b = 0; b < kb; b++) {
                    const int more = b + 1 < kb;
                    asked = ask_l2(next, next_bytes, asked, per_step);
                    if (bf16)
                        _tile_dpbf16ps(0, 4, 6);
                    else
                        _tile_dpbusd(0, 4, 6);
                    if (more) _tile_loadd(6, w + (b + 1) * 2048, 128);
                    if (bf16)
                        _tile_dpbf16ps(1, 4, 7);
                    else
                        _tile_dpbusd(1, 4, 7);
                    if (more) {
                        _tile_loadd(4, x0 + (b + 1) * 1024, 64);
                        _tile_loadd(7, w + (b + 1) * 2048 + 64, 128);
                    }
                }
                _tile_stored(0, o, so);
                _tile_stored(1, o + 64, so);
            }
        }
    }
    _tile_release();
}

static void gemm_bf16_amx(const uint16_t *x, int64_t m, const uint16_t *wp, int64_t kb, int64_t kb_stride, int64_t np,
                          float *out, int64_t ldo, int accumulate, const void *next, int64_t next_bytes) {
    amx_gemm((const char *)x, m, (const char *)wp, kb, kb_stride, np, (char *)out, ldo, accumulate, next, next_bytes,
             1);
}

static void gemm_i8_amx(const uint8_t *x, int64_t m, const int8_t *wp, int64_t kb, int64_t kb_stride, int64_t np,
                        int32_t *out, int64_t ldo, int accumulate, const void *next, int64_t next_bytes) {
    amx_gemm((const char *)x, m, (const char *)wp, kb, kb_stride, np, (char *)out, ldo, accumulate, next, next_bytes,
             0);
}

static inline __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
}

static void i8_dequant_f32_avx512(const int32_t *acc, int64_t ldacc, int64_t rows, int64_t cols, const float *xscale,
                                  const int32_t *colsum, const float *wscale, float *y, int64_t ldy) {
    for (int64_t c = 0; c < cols; c += 16) {
        __mmask16 k = tail_mask(cols - c);
        /* 128 colsum: the unsigned inputs carry an offset of 128 */
        const __m512i off = _mm512_slli_epi32(_mm512_maskz_loadu_epi32(k, colsum + c), 7);
        const __m512 ws = _mm512_maskz_loadu_ps(k, wscale + c);
        for (int64_t i = 0; i < rows; i++) {
            __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_maskz_loadu_epi32(k, acc + i * ldacc + c), off));
            _mm512_mask_storeu_ps(y + i * ldy + c, k, _mm512_mul_ps(v, _mm512_mul_ps(_mm512_set1_ps(xscale[i]), ws)));
        }
    }
}

/* Rows of a finished float32 block to their place in y, with non-temporal stores where a row's
 * 64-byte lines are whole: y is written once per call and read by the next step, long after this
 * core's caches would have held it, and plain stores first read every line from memory. The fence
 * orders these stores before whatever tells another thread the block is done. */
static void store_rows_stream(float *dst, int64_t ldd, const float *src, int64_t lds, int64_t rows, int64_t cols,
                              const float *scale, int64_t scale_stride) {
    for (int64_t i = 0; i < rows; i++) {
        float *d = dst + i * ldd;
        const float *s = src + i * lds;
        int64_t c = 0;
        if (scale) { /* the row times its scale on the way out: one pass over src, not two */
            __m512 f = _mm512_set1_ps(scale[i * scale_stride]);
            if (((uintptr_t)d & 63) == 0)
                for (; c + 16 <= cols; c += 16) _mm512_stream_ps(d + c, _mm512_mul_ps(f, _mm512_loadu_ps(s + c)));
            for (; c < cols; c += 16) {
                __mmask16 k = tail_mask(cols - c);
                _mm512_mask_storeu_ps(d + c, k, _mm512_mul_ps(f, _mm512_maskz_loadu_ps(k, s + c)));
            }
            continue;
        }
        if (((uintptr_t)d & 63) == 0)
            for (; c + 16 <= cols; c += 16) _mm512_stream_ps(d + c, _mm512_loadu_ps(s + c));
        for (; c < cols; c += 16) {
            __mmask16 k = tail_mask(cols - c);
            _mm512_mask_storeu_ps(d + c, k, _mm512_maskz_loadu_ps(k, s + c));
        }
    }
    _mm_sfence();
}

static const cr_kernels amx_table = {
    .isa = CR_ISA_AMX,
    .gemm_bf16_amx = gemm_bf16_amx,
    .gemm_i8_amx = gemm_i8_amx,
    .i8_dequant_f32 = i8_dequant_f32_avx512,
    .store_rows_stream = store_rows_stream,
};

const cr_kernels *cr_kernels_amx(void) { return &amx_table; }

/* Peak probes: four accumulator tiles fed from two A and two B tiles loaded once, so the loop is
 * the tile multiplier alone. Operands are small normal numbers / small integers. */
float cr_peak_amx_bf16(int64_t iters) {
    _Alignas(64) uint16_t src[16 * 32];
    _Alignas(64) float out[16 * 16];
    for (int i = 0; i < 16 * 32; i++) src[i] = 0x3c00; /* 2^-7: sums stay far from overflow */
    configure();
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    _tile_loadd(4, src, 64); _tile_loadd(5, src, 64); _tile_loadd(6, src, 64); _tile_loadd(7, src, 64);
    for (int64_t it = 0; it < iters; it++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, out, 64);
    _tile_release();
    return out[0];
}

float cr_peak_amx_i8(int64_t iters) {
    _Alignas(64) uint8_t src[16 * 64];
    _Alignas(64) int32_t out[16 * 16];
    memset(src, 1, sizeof src);
    configure();
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    _tile_loadd(4, src, 64); _tile_loadd(5, src, 64); _tile_loadd(6, src, 64); _tile_loadd(7, src, 64);
    for (int64_t it = 0; it < iters; it++) {
        _tile_dpbusd(0, 4, 6);
        _tile_dpbusd(1, 4, 7);
        _tile_dpbusd(2, 5, 6);
        _tile_dpbusd(3, 5, 7);
    }
    _tile_stored(0, out, 64);
    _tile_release();
    return (float)out[0];
}
