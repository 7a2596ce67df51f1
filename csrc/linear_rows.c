/* linear_rows.c — a layer's own input rows: float32 inputs rounded to bfloat16 or quantized to
 * int8 (per token, with the row's outliers taken out), laid out as the layer's kernels read them
 * (row after row, or AMX's tile order). cr_linear_apply converts its float32 inputs through here,
 * and the forward's producers (norms, attention, the GLU) write finished rows the same way
 * (cr_linear_put_bf16 / cr_linear_put_i8), so both give the same bits. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "kernels/kernels.h"
#include "linear_job.h"

/* Candidates a row's scan collects at once; a row with more (rare) is scanned again in C. */
#define CR_I8_OUTLIER_SCAN 64

/* Inserts input i (value x) into the outlier list kept sorted by |x|, descending, of at most
 * CR_I8_MAX_OUTLIERS; when full, the smallest falls off. Returns the new count. */
static int32_t keep_outlier(int32_t count, int64_t i, float x, int32_t *k, float *v) {
    float a = fabsf(x);
    if (count == CR_I8_MAX_OUTLIERS && !(a > fabsf(v[count - 1]))) return count;
    int32_t t = count < CR_I8_MAX_OUTLIERS ? count++ : count - 1;
    for (; t > 0 && fabsf(v[t - 1]) < a; t--) {
        k[t] = k[t - 1];
        v[t] = v[t - 1];
    }
    k[t] = (int32_t)i;
    v[t] = x;
    return count;
}

/* The row's outliers (|x| > CR_I8_OUTLIER_RATIO mean |x|) into k[] / v[], largest |x| first;
 * returns how many. None for a row with NaN or Inf (quantize_u8 marks it) or of all zeros. */
static int32_t take_outliers(const float *x, int64_t n, int32_t *k, float *v) {
    float amax, sum = cr_kern->abs_sum_max_f32(x, n, &amax);
    float threshold = CR_I8_OUTLIER_RATIO * (sum / (float)n);
    if (!(amax > threshold) || !isfinite(sum)) return 0;
    int32_t found[CR_I8_OUTLIER_SCAN], count = 0;
    int64_t total = cr_kern->find_above_f32(x, n, threshold, found, CR_I8_OUTLIER_SCAN);
    if (total <= CR_I8_OUTLIER_SCAN) {
        for (int64_t t = 0; t < total; t++) count = keep_outlier(count, found[t], x[found[t]], k, v);
    } else {
        for (int64_t i = 0; i < n; i++)
            if (fabsf(x[i]) > threshold) count = keep_outlier(count, i, x[i], k, v);
    }
    return count;
}

/* Row r (len elements of elem bytes) into the AMX tile order of kernels.h: block b of the row at
 * dst + ((r / 16) (len / block) + b) 16 block + (r % 16) block, so every A tile is one KiB. */
static void to_tile_order(const void *row, int64_t r, int64_t len, int64_t block, size_t elem, void *dst) {
    int64_t kb = len / block;
    for (int64_t b = 0; b < kb; b++)
        memcpy((char *)dst + (size_t)((((r / 16) * kb + b) * 16 + r % 16) * block) * elem,
               (const char *)row + (size_t)(b * block) * elem, (size_t)block * elem);
}

void cr_linear_quantize_row(const cr_linear *W, const float *x, float *rest, const cr_i8_rows *d, int64_t r,
                            uint8_t *tmp) {
    int64_t len = row_len(W->fmt, W->n_in);
    int32_t *ok = d->outlier_k + r * CR_I8_MAX_OUTLIERS;
    float *ov = d->outlier_x + r * CR_I8_MAX_OUTLIERS;
    int32_t n_out = take_outliers(x, W->n_in, ok, ov);
    d->n_outliers[r] = n_out;
    if (n_out) {
        if (rest != x) memcpy(rest, x, (size_t)W->n_in * sizeof(float));
        for (int32_t t = 0; t < n_out; t++) rest[ok[t]] = 0.0f;
        x = rest;
    }
    uint8_t *q = is_amx(W->fmt) ? tmp : d->q + r * len;
    d->scale[r] = cr_kern->quantize_u8(x, W->n_in, q);
    memset(q + W->n_in, 128, (size_t)(len - W->n_in));
    if (is_amx(W->fmt)) to_tile_order(q, r, len, CR_AMX_I8_K, 1, d->q);
}


void cr_linear_round_row(const cr_linear *W, const float *x, uint16_t *rows, int64_t r, uint16_t *tmp) {
    int64_t len = row_len(W->fmt, W->n_in);
    uint16_t *row = is_amx(W->fmt) ? tmp : rows + r * len;
    cr_kern->f32_to_bf16(x, row, W->n_in);
    memset(row + W->n_in, 0, (size_t)(len - W->n_in) * sizeof(uint16_t));
    if (is_amx(W->fmt)) to_tile_order(row, r, len, CR_AMX_BF16_K, 2, rows);
}

int cr_linear_takes_bf16_rows(const cr_linear *W) {
    return W->fmt == CR_FMT_BF16_AMX || W->fmt == CR_FMT_BF16_PANELS;
}

int64_t cr_linear_row_elems(const cr_linear *W) { return row_len(W->fmt, W->n_in); }

void cr_linear_put_bf16(const cr_linear *W, uint16_t *dst, int64_t r, int64_t k0, const float *src, int64_t n) {
    int64_t len = row_len(W->fmt, W->n_in);
    if (W->fmt == CR_FMT_BF16_PANELS) { /* plain rows, padded to whole pairs */
        uint16_t *row = dst + r * len;
        cr_kern->f32_to_bf16(src, row + k0, n);
        if (k0 + n == W->n_in && len > W->n_in) memset(row + W->n_in, 0, (size_t)(len - W->n_in) * sizeof(uint16_t));
        return;
    }
    uint16_t *group = dst + (r / 16) * 16 * len + (r % 16) * CR_AMX_BF16_K;
    for (int64_t k = k0; k < k0 + n; k += CR_AMX_BF16_K) {
        uint16_t *block = group + k / CR_AMX_BF16_K * 16 * CR_AMX_BF16_K;
        int64_t part = k0 + n - k < CR_AMX_BF16_K ? k0 + n - k : CR_AMX_BF16_K;
        cr_kern->f32_to_bf16(src + (k - k0), block, part);
        /* the row's last block: its K padding zero-filled */
        if (part < CR_AMX_BF16_K) memset(block + part, 0, (size_t)(CR_AMX_BF16_K - part) * sizeof(uint16_t));
    }
}

int cr_linear_takes_i8_rows(const cr_linear *W) { return W->fmt == CR_FMT_I8_PANELS || W->fmt == CR_FMT_I8_AMX; }

cr_status cr_linear_i8_rows_alloc(const cr_linear *W, int64_t rows, cr_i8_rows *out) {
    memset(out, 0, sizeof *out);
    if (!cr_linear_takes_i8_rows(W) || rows < 0) return cr_fail(CR_E_ARG, "int8 rows of a layer that is not int8");
    size_t count, padded = rows > 0 ? (size_t)((rows + 15) / 16 * 16) : 16;
    if (!cr_mul_size(padded, (size_t)row_len(W->fmt, W->n_in), &count))
        return cr_fail(CR_E_NOMEM, "int8 input rows overflow");
    out->q = cr_aligned_alloc(count, "int8 input rows");
    out->scale = cr_malloc_array(padded, sizeof(float), "int8 input scales");
    out->n_outliers = cr_malloc_array(padded, sizeof(int32_t), "int8 outlier counts");
    out->outlier_k = cr_malloc_array(padded * CR_I8_MAX_OUTLIERS, sizeof(int32_t), "int8 outlier indices");
    out->outlier_x = cr_malloc_array(padded * CR_I8_MAX_OUTLIERS, sizeof(float), "int8 outlier values");
    if (!out->q || !out->scale || !out->n_outliers || !out->outlier_k || !out->outlier_x) {
        cr_linear_i8_rows_free(out);
        return CR_E_NOMEM;
    }
    memset(out->q, 0, count);
    return CR_OK;
}

int64_t cr_linear_i8_rows_bytes(const cr_linear *W, int64_t rows) {
    int64_t padded = rows > 0 ? (rows + 15) / 16 * 16 : 16;
    return padded * (row_len(W->fmt, W->n_in) + (int64_t)(sizeof(float) + sizeof(int32_t)) +
                     CR_I8_MAX_OUTLIERS * (int64_t)(sizeof(int32_t) + sizeof(float)));
}

void cr_linear_i8_rows_free(cr_i8_rows *rows) {
    free(rows->q);
    free(rows->scale);
    free(rows->n_outliers);
    free(rows->outlier_k);
    free(rows->outlier_x);
    memset(rows, 0, sizeof *rows);
}

cr_i8_rows cr_linear_i8_rows_at(const cr_linear *W, const cr_i8_rows *rows, int64_t row0) {
    return (cr_i8_rows){.q = rows->q + row0 * row_len(W->fmt, W->n_in), .scale = rows->scale + row0,
                        .n_outliers = rows->n_outliers + row0,
                        .outlier_k = rows->outlier_k + row0 * CR_I8_MAX_OUTLIERS,
                        .outlier_x = rows->outlier_x + row0 * CR_I8_MAX_OUTLIERS};
}

void cr_linear_put_i8(const cr_linear *W, const cr_i8_rows *dst, int64_t r, float *src, uint8_t *tmp) {
    cr_linear_quantize_row(W, src, src, dst, r, tmp);
}
