/* kernels_amx.c — the bfloat16 and int8 GEMMs on AMX tiles (TDPBF16PS, TDPBUSD). Compiled with
 * the AMX flags; dispatch installs them only when the CPU and XCR0 have the tile state, and
 * linear.c calls them only after cr_amx_usable() (the Linux permission) said yes.
 *
 * One call computes up to 32 rows x 32 columns (one packed panel) over all of K: four
 * accumulator tiles C[r][c] of 16 x 16 float32 / int32, two A tiles (rows 0-15 and 16-31 of x)
 * and two B tiles (panel columns 0-15 and 16-31, which are the two 64-byte halves of each 128-byte
 * panel row: the gemm_*_tile panels are already in the pair / quad layout tiles want). Row tails
 * configure the second row tile with fewer rows, so a row always goes through the same tile
 * instructions over the same K blocks whatever m is. The tile configuration is loaded at every
 * entry (another library in the same thread may have left its own) and released on exit. */
#include <immintrin.h>
#include <string.h>

#include "kernels.h"

typedef struct tile_config {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* Tiles: 0..3 accumulators C[r][c] at 2 r + c; 4, 5 the A row tiles; 6, 7 the B column tiles. */
static void configure(int64_t m) {
    _Alignas(64) tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    int r0 = m < 16 ? (int)m : 16, r1 = m > 16 ? (int)m - 16 : 0;
    for (int t = 0; t < 8; t++) cfg.colsb[t] = 64;
    cfg.rows[0] = cfg.rows[1] = cfg.rows[4] = (uint8_t)r0;
    cfg.rows[2] = cfg.rows[3] = cfg.rows[5] = (uint8_t)r1;
    cfg.rows[6] = cfg.rows[7] = 16;
    if (!r1) cfg.colsb[2] = cfg.colsb[3] = cfg.colsb[5] = 0; /* unused tiles stay unconfigured */
    _tile_loadconfig(&cfg);
}

/* The C tiles into out [32][32] (4-byte elements), then rows < m, columns < n into y. */
static inline void store_c(int64_t m, void *out, void *y, int64_t ldy, int64_t n) {
    char *o = out;
    _tile_stored(0, o, 128);
    _tile_stored(1, o + 64, 128);
    if (m > 16) {
        _tile_stored(2, o + 16 * 128, 128);
        _tile_stored(3, o + 16 * 128 + 64, 128);
    }
    for (int64_t i = 0; i < m; i++) memcpy((char *)y + i * ldy * 4, o + i * 128, (size_t)n * 4);
}

static void gemm_bf16_amx(const uint16_t *x, int64_t ldx, int64_t m, const uint16_t *wp, int64_t kb,
                          float *y, int64_t ldy, int64_t n) {
    _Alignas(64) float out[32 * CR_GEMM_NR];
    configure(m);
    const int64_t sx = ldx * 2, blk = 16 * 2 * CR_GEMM_NR; /* panel elements per K block */
    _tile_zero(0);
    _tile_zero(1);
    if (m > 16) {
        _tile_zero(2);
        _tile_zero(3);
        const uint16_t *x1 = x + 16 * ldx;
        for (int64_t b = 0; b < kb; b++) {
            _tile_loadd(6, wp + b * blk, 128);
            _tile_loadd(7, wp + b * blk + 32, 128);
            _tile_loadd(4, x + b * CR_AMX_BF16_K, sx);
            _tile_loadd(5, x1 + b * CR_AMX_BF16_K, sx);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
    } else {
        for (int64_t b = 0; b < kb; b++) {
            _tile_loadd(6, wp + b * blk, 128);
            _tile_loadd(7, wp + b * blk + 32, 128);
            _tile_loadd(4, x + b * CR_AMX_BF16_K, sx);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
        }
    }
    store_c(m, out, y, ldy, n);
    _tile_release();
}

static void gemm_i8_amx(const uint8_t *x, int64_t ldx, int64_t m, const int8_t *wp, int64_t kb, int32_t *y,
                        int64_t ldy, int64_t n) {
    _Alignas(64) int32_t out[32 * CR_GEMM_NR];
    configure(m);
    const int64_t blk = 16 * 4 * CR_GEMM_NR; /* panel bytes per K block */
    _tile_zero(0);
    _tile_zero(1);
    if (m > 16) {
        _tile_zero(2);
        _tile_zero(3);
        const uint8_t *x1 = x + 16 * ldx;
        for (int64_t b = 0; b < kb; b++) {
            _tile_loadd(6, wp + b * blk, 128);
            _tile_loadd(7, wp + b * blk + 64, 128);
            _tile_loadd(4, x + b * CR_AMX_I8_K, ldx);
            _tile_loadd(5, x1 + b * CR_AMX_I8_K, ldx);
            _tile_dpbusd(0, 4, 6);
            _tile_dpbusd(1, 4, 7);
            _tile_dpbusd(2, 5, 6);
            _tile_dpbusd(3, 5, 7);
        }
    } else {
        for (int64_t b = 0; b < kb; b++) {
            _tile_loadd(6, wp + b * blk, 128);
            _tile_loadd(7, wp + b * blk + 64, 128);
            _tile_loadd(4, x + b * CR_AMX_I8_K, ldx);
            _tile_dpbusd(0, 4, 6);
            _tile_dpbusd(1, 4, 7);
        }
    }
    store_c(m, out, y, ldy, n);
    _tile_release();
}

static const cr_kernels amx_table = {
    .isa = CR_ISA_AMX,
    .gemm_bf16_amx = gemm_bf16_amx,
    .gemm_i8_amx = gemm_i8_amx,
    .gemm_amx_mr = 32,
};

const cr_kernels *cr_kernels_amx(void) { return &amx_table; }

/* Peak probes: four accumulator tiles fed from two A and two B tiles loaded once, so the loop is
 * the tile multiplier alone. Operands are small normal numbers / small integers. */
float cr_peak_amx_bf16(int64_t iters) {
    _Alignas(64) uint16_t src[16 * 32];
    _Alignas(64) float out[16 * 16];
    for (int i = 0; i < 16 * 32; i++) src[i] = 0x3c00; /* 2^-7: sums stay far from overflow */
    configure(32);
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
    configure(32);
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
