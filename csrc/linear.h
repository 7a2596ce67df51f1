/* linear.h — cr_linear: every projection of the forward goes through cr_linear_apply, whatever
 * the weight format. The format tag selects the kernel; packed data, scales and per-column sums
 * live here so quantized formats slot in without touching the forward. */
#ifndef CR_LINEAR_H
#define CR_LINEAR_H

#include <stdatomic.h>
#include <stdint.h>

#include "crossrank.h"
#include "error.h"

typedef enum cr_format {
    CR_FMT_F32_PANELS = 0, /* w: [ceil(n_out/NR)][n_in][NR] float32 panels, crossrank's kernels */
    CR_FMT_F32_BLAS,       /* w: [n_out, n_in] float32, row-major (HF layout), OpenBLAS sgemm */
    CR_FMT_BF16_PANELS,    /* wb: [ceil(n_out/NR)][ceil(n_in/2)][NR][2] bfloat16 pair panels */
    CR_FMT_I8_PANELS,      /* wq: [ceil(n_out/NR)][ceil(n_in/4)][NR][4] int8 panels, wscale, colsum */
    /* AMX tiles (packed only once cr_amx_usable() said yes): the two panel layouts above with K
     * zero-padded to whole tile rows, ceil(n_in/32) blocks of 16 pairs / ceil(n_in/64) blocks of
     * 16 groups, so a tile load never reads past the panel. */
    CR_FMT_BF16_AMX,       /* wb: [ceil(n_out/NR)][16 ceil(n_in/32)][NR][2] */
    CR_FMT_I8_AMX,         /* wq: [ceil(n_out/NR)][16 ceil(n_in/64)][NR][4], wscale, colsum */
} cr_format;

typedef struct cr_linear {
    cr_format fmt;
    int64_t n_out, n_in;
    float *w;         /* float32 formats: layout per fmt, 64-byte aligned, owned */
    uint16_t *wb;     /* CR_FMT_BF16_PANELS / _AMX, 64-byte aligned, owned */
    int8_t *wq;       /* CR_FMT_I8_PANELS / _AMX: w[j, k] ~ wq[j, k] * wscale[j], |wq| <= 127, owned */
    float *wscale;    /* [n_out], owned */
    int32_t *colsum;  /* [n_out]: sum_k wq[j, k], for the +128 offset of the unsigned inputs */
    float *bias;      /* [n_out] or NULL, owned */
} cr_linear;

/* Buffers cr_linear_apply reuses from call to call, each grown when a call needs more (the
 * inputs' conversion, their scales and outliers, the AMX result blocks): a forward makes hundreds
 * of calls, and fresh allocations of that size are fresh pages, mapped and zeroed by the OS every
 * time. Zero-initialize; the owner frees it (cr_linear_scratch_free); one call at a time. */
#define CR_LINEAR_SCRATCH_SLOTS 10
typedef struct cr_linear_scratch {
    cr_buf buf[CR_LINEAR_SCRATCH_SLOTS];
} cr_linear_scratch;
void cr_linear_scratch_free(cr_linear_scratch *s);

/* How a call may use the machine: threads for BLAS and the pool, the abort flag, and the scratch
 * to reuse (NULL: the call allocates and frees its own). */
typedef struct cr_exec {
    int threads;
    const atomic_int *abort;
    cr_linear_scratch *scratch;
} cr_exec;

/* A call's inputs, one of: float32 rows x (row stride ldx); the layer's own bf16 rows xb
 * (cr_linear_takes_bf16_rows, as cr_linear_put_bf16 writes them); its own int8 rows q8
 * (cr_linear_takes_i8_rows, as cr_linear_put_i8 writes them). Own rows give the bits of the same
 * float32 rows converted by the call. */
typedef struct cr_linear_in {
    const float *x;
    int64_t ldx;
    const uint16_t *xb;
    const struct cr_i8_rows *q8;
} cr_linear_in;

/* y[m, n_out] (row stride ldy) = x[m, n_in] @ W^T + bias, with the engine lock held. Panels:
 * tasks of (row block, panel) on the pool, each output a fixed-order FMA chain, so results are
 * bitwise independent of m, of the rows beside, of threads and of the ISA (bf16: up to
 * AVX512_BF16's flushing of denormals; bf16 on AMX tiles sums in TDPBF16PS's order, its own
 * level: see kernels.h; int8 on AMX gives the VNNI bits). OpenBLAS: row blocks on the calling
 * thread (pool idle); its kernels vary the summation order with the shape and thread count, so
 * results can differ by a few ulps. The abort flag is checked per task / block. */
cr_status cr_linear_apply(const cr_linear *W, const cr_linear_in *in, int64_t m, float *y, int64_t ldy,
                          const cr_exec *ex);

/* The first half of a gated MLP on a gate|up layer: h[i, c] = act(g[i, c]) u[i, c] for c < n,
 * with g column c and u column W->n_out / 2 + c of cr_linear_apply's output (the up rows start
 * at a panel boundary: model.c pads each half to whole panels). Where h goes, one of: `to`'s own
 * bf16 input rows `rows` (cr_linear_put_bf16); `to`'s own int8 input rows q8 (cr_linear_put_i8);
 * float32 rows h (row stride ldh). `to` takes n inputs. */
typedef struct cr_glu {
    cr_activation act;
    int64_t n;
    const cr_linear *to;
    uint16_t *rows;
    const struct cr_i8_rows *q8;
    float *h;
    int64_t ldh;
} cr_glu;

/* h of `glu` from the gate|up layer W on m input rows: the bits of cr_linear_apply followed by
 * the activation row by row. On the panel and AMX paths each task turns its gate and up sums into
 * h while they are in its cache, so the 2 n float32 sums per row are never stored. int8 rows are
 * quantized a whole row at a time (its scale and outliers need all of it): there the tasks store
 * float32 h (n per row, half the sums) and a pass quantizes each row. Against storing the sums
 * for a pass that computes h and quantizes it, that measured 8-16% faster end to end at 16
 * threads on an Emerald Rapids (the pass reads rows other cores wrote: half the bytes), 2-4% on
 * 2 Zen 4 cores. */
cr_status cr_linear_apply_glu(const cr_linear *W, const cr_linear_in *in, int64_t m, const cr_glu *glu,
                              const cr_exec *ex);

/* Inputs its producer writes in the layer's own form, which saves a float32 pass over them and the
 * layer's own conversion: for the bf16 formats (cr_linear_takes_bf16_rows), rows rounded to
 * bfloat16, cr_linear_row_elems(W) elements each (n_in padded to whole pairs, on AMX to whole
 * blocks), a buffer of m rows holding 16 ceil(m / 16) of them; on AMX in the tile order of
 * kernels.h (rows past m are read, any value, and give no output), else row after row.
 * cr_linear_put_bf16 rounds elements [k0, k0 + n) of row r from src into dst: on AMX k0 a
 * multiple of CR_AMX_BF16_K, and n too unless the part ends the row; the part that ends the row
 * zero-fills its padding. */
int cr_linear_takes_bf16_rows(const cr_linear *W);
int64_t cr_linear_row_elems(const cr_linear *W);
void cr_linear_put_bf16(const cr_linear *W, uint16_t *dst, int64_t r, int64_t k0, const float *src, int64_t n);
/* The same for int8 layers (cr_linear_takes_i8_rows: CR_FMT_I8_PANELS / _AMX): a row is quantized
 * as a whole (its per-token scale and outlier inputs need all of it), so the producer hands over
 * finished float32 rows. cr_i8_rows holds `rows` rows of the layer's quantized inputs (bytes in
 * its own order: tile order on AMX, 16 ceil(rows / 16) rows zeroed at allocation), their scales
 * and outliers. cr_linear_put_i8 quantizes row r from src (n_in values, which it may overwrite:
 * the outliers are zeroed there) exactly as cr_linear_apply would, with tmp the caller's scratch of
 * cr_linear_row_elems(W) bytes (for the tile order; each thread its own); cr_linear_i8_rows_at views
 * the rows from row0 on (a multiple of 16). */
/* Outlier slots per int8 row: k (the input's index) and x (its value), largest |x| first. */
#define CR_I8_MAX_OUTLIERS 16
typedef struct cr_i8_rows {
    uint8_t *q;
    float *scale;
    int32_t *n_outliers, *outlier_k;
    float *outlier_x;
} cr_i8_rows;
int cr_linear_takes_i8_rows(const cr_linear *W);
cr_status cr_linear_i8_rows_alloc(const cr_linear *W, int64_t rows, cr_i8_rows *out);
void cr_linear_i8_rows_free(cr_i8_rows *rows);
int64_t cr_linear_i8_rows_bytes(const cr_linear *W, int64_t rows); /* what the allocation holds */
cr_i8_rows cr_linear_i8_rows_at(const cr_linear *W, const cr_i8_rows *rows, int64_t row0);
void cr_linear_put_i8(const cr_linear *W, const cr_i8_rows *dst, int64_t r, float *src, uint8_t *tmp);

/* Converts a CR_FMT_F32_BLAS weight (row-major, as loaded) into the format used for compute:
 * for CR_DT_F32, float32 panels for crossrank's kernels unless CROSSRANK_GEMM=openblas asks for
 * OpenBLAS; for CR_DT_BF16, bfloat16 pair panels (weights rounded to nearest even: exact for a
 * bf16 checkpoint), whose inputs are rounded to bf16 per call; for CR_DT_I8, int8 panels with a
 * scale per output channel, whose inputs are quantized per row (per token) to int8 with a scale
 * of max|x| / 127 at every call. bf16 and int8 take the AMX layouts when the kernels are at the
 * AMX level and cr_amx_usable() (which asks the OS once per process) says yes. The float32 copy
 * is freed. */
cr_status cr_linear_pack(cr_linear *W, cr_dtype compute);

/* Bytes held by the packed weight and bias. */
int64_t cr_linear_bytes(const cr_linear *W);

void cr_linear_free(cr_linear *W);  /* frees the owned buffers; accepts a zeroed struct */

#endif
