/* kernels.c — crossrank._testing: test hooks for the vector kernels:
 *
 *   isa_levels() -> list[str]
 *       The kernel tables this CPU and OS can run, lowest first ("ref", "avx2", "avx512",
 *       "avx512vnni", "avx512bf16", "amx").
 *       Based on detection only: CROSSRANK_ISA (which caps the active table) does not change it.
 *
 *   kernel(isa, name, *arrays, alpha=0.0, n=32)
 *       Runs one kernel of one ISA table directly, bypassing the active table, so every table
 *       can be compared with the reference in one process:
 *         dot_f32(a, b) -> float         sumsq_f32(x) -> float
 *         scale_f32(x, alpha=) -> alpha * x as a new array (the input x is not modified)
 *         bf16_to_f32(u16) -> float32 array     f16_to_f32(u16) -> float32 array
 *         gemm_f32_tile(x, wp, n=) -> y = (x @ wp)[:, :n] as a new float32 [m, n] array, where x
 *             is [m, k] and wp one packed panel [k, CR_GEMM_NR] (2-D, C-contiguous float32; m and
 *             k may be 0, n is 1..CR_GEMM_NR, default CR_GEMM_NR). Rows go to the ISA's tile
 *             kernel in chunks of at most gemm_mr rows, as cr_linear_apply does (so m = 1..gemm_mr
 *             exercises every tile height). x is copied into rows of stride k + 3 whose 3 extra
 *             floats are NaN (a kernel that used the stride wrongly would return NaN), at the
 *             same offset modulo 64 bytes as the input's data; y rows have stride n + 35 with
 *             guard floats in between (see below), so a store past column n of a row is caught.
 *         gemm_mr() -> int   the ISA's tile height (rows per gemm_f32_tile call); no arrays
 *         gemm_bf16_tile(x, wp, n=) -> float32 [m, n]: x is [m, 2 kp] uint16 (bfloat16 bits), wp one
 *             packed bf16 panel [kp, 2 CR_GEMM_NR]; strides and guards as for gemm_f32_tile
 *         gemm_bf16_mr() -> int   rows per gemm_bf16_tile call
 *         f32_to_bf16(x) -> uint16 array, round to nearest even
 *         gemm_i8_tile(x, wp, n=) -> int32 [m, n]: x [m, 4 kq] uint8, wp one packed int8 panel
 *             [kq, 4 CR_GEMM_NR]; exact integer sums
 *         gemm_i8_mr() -> int   rows per gemm_i8_tile call
 *         quantize_u8(x) -> (uint8 array, scale): per-row int8 quantization, +128
 *         norm_scale_f32(x, w, alpha=r) -> w * (x * r) as a new array
 *         rope_f32(v, cs) -> v after RoPE as a new array: v is one head vector of even length 2 half,
 *             cs its cosines then its sines (half each)
 *         silu_mul_f32(gate, up) / gelu_tanh_mul_f32(gate, up) -> act(gate) * up as a new array
 *             (sigmoid_glu_f32 with gelu_tanh 0 / 1)
 *         i8_outliers_f32(wp, k, v, wscale, y) -> y after the kernel, as a new float32 array: wp one
 *             packed int8 panel [kq, 4 CR_GEMM_NR], k int32 [t] input indices (0 <= k < 4 kq), v
 *             float32 [t], wscale and y float32 [n], n <= CR_GEMM_NR
 *         abs_sum_max_f32(x) -> (sum |x|, max |x|)
 *         find_above_f32(x, alpha=threshold, n=cap) -> (int32 array of the first cap indices with
 *             |x| > threshold, how many there are)
 *       1-D float inputs must convert safely to contiguous 1-D float32 arrays; 16-bit sources to
 *       contiguous 1-D uint16 arrays, which may be misaligned (the kernels read 16-bit sources
 *       with unaligned loads, as from a memory-mapped checkpoint, and this lets tests check that).
 *       Unknown ISA or kernel names raise ValueError; a table the CPU or OS cannot run raises
 *       RuntimeError instead of executing it (which would die of SIGILL).
 *       Kernels that write (scale_f32, the conversions, gemm_f32_tile) write into a scratch
 *       buffer with guard zones on both sides (and, for gemm_f32_tile, between rows), at the same
 *       offset modulo 64 bytes as the first input's data (so an unaligned input view also gets an
 *       unaligned destination); a write outside the destination elements raises RuntimeError.
 *
 *   The tile height is exposed as a pseudo-kernel, kernel(isa, "gemm_mr"), rather than as a
 *   separate function, so that it shares the ISA checks above. */
#include "testing.h"

#include <numpy/arrayobject.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

/* This file has its own (static) NumPy API table: import it on first use. */
static int ensure_numpy(void) {
    if (PyArray_API != NULL) return 0;
    return _import_array();
}

typedef enum { K_DOT, K_SCALE, K_SUMSQ, K_BF16, K_F16, K_GEMM, K_GEMM_MR, K_GEMM_BF16, K_GEMM_BF16_MR,
               K_TO_BF16, K_GEMM_I8, K_GEMM_I8_MR, K_QUANT, K_SILU, K_GELU_TANH, K_I8_OUTLIERS,
               K_ABS_STATS, K_FIND_ABOVE, K_NORM_SCALE, K_ROPE } kernel_id;

static const struct {
    const char *name;
    kernel_id id;
    int n_arrays;
} kernel_list[] = {
    {"dot_f32", K_DOT, 2},        {"scale_f32", K_SCALE, 1},     {"sumsq_f32", K_SUMSQ, 1},
    {"bf16_to_f32", K_BF16, 1},   {"f16_to_f32", K_F16, 1},     {"gemm_f32_tile", K_GEMM, 2},
    {"gemm_mr", K_GEMM_MR, 0},    {"gemm_bf16_tile", K_GEMM_BF16, 2}, {"gemm_bf16_mr", K_GEMM_BF16_MR, 0},
    {"f32_to_bf16", K_TO_BF16, 1},  {"gemm_i8_tile", K_GEMM_I8, 2}, {"gemm_i8_mr", K_GEMM_I8_MR, 0},
    {"quantize_u8", K_QUANT, 1},  {"silu_mul_f32", K_SILU, 2},  {"gelu_tanh_mul_f32", K_GELU_TANH, 2},
    {"i8_outliers_f32", K_I8_OUTLIERS, 5}, {"abs_sum_max_f32", K_ABS_STATS, 1}, {"find_above_f32", K_FIND_ABOVE, 1},
    {"norm_scale_f32", K_NORM_SCALE, 2}, {"rope_f32", K_ROPE, 2},
};

static const struct {
    const char *name;
    cr_isa level;
} isa_list[] = {
    {"ref", CR_ISA_REF},
    {"avx2", CR_ISA_AVX2},
    {"avxvnni", CR_ISA_AVXVNNI},
    {"avx512", CR_ISA_AVX512},
    {"avx512vnni", CR_ISA_AVX512VNNI},
    {"avx512bf16", CR_ISA_AVX512BF16},
    {"amx", CR_ISA_AMX}, /* its vector entries (AVX512BF16's); the tile GEMMs have amx_gemm */
};

/* The level's table when it was compiled into this build, else NULL. */
static const cr_kernels *compiled_table(size_t i) {
    const cr_kernels *t = cr_kernels_level(isa_list[i].level);
    return t->isa == isa_list[i].level ? t : NULL;
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* The table for isa_list[i] when this CPU and OS can run it and it was compiled in, else NULL. */
static const cr_kernels *runnable_table(size_t i) {
    return cr_isa_runnable(isa_list[i].level) ? compiled_table(i) : NULL;
}

PyObject *cr_test_isa_levels(PyObject *self, PyObject *unused) {
    PyObject *list = PyList_New(0);
    if (!list) return NULL;
    for (size_t i = 0; i < COUNT(isa_list); i++) {
        if (!runnable_table(i)) continue;
        PyObject *name = PyUnicode_FromString(isa_list[i].name);
        if (!name || PyList_Append(list, name) < 0) {
            Py_XDECREF(name);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(name);
    }
    return list;
}

/* A contiguous 1-D array of `type` from `obj` (new reference), or NULL with an exception set.
 * `aligned`: also require the element alignment (float sources are dereferenced as float). */
static PyArrayObject *as_vector(PyObject *obj, int type, int aligned, const char *what) {
    int flags = NPY_ARRAY_C_CONTIGUOUS | (aligned ? NPY_ARRAY_ALIGNED : 0);
    PyObject *arr = PyArray_FROMANY(obj, type, 1, 1, flags);
    if (!arr) {
        if (PyErr_ExceptionMatches(PyExc_ValueError) || PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyObject *et, *ev, *tb;
            PyErr_Fetch(&et, &ev, &tb);
            PyErr_NormalizeException(&et, &ev, &tb);
            PyErr_Format(et, "kernel: %s must be a 1-D %s array: %S", what,
                         type == NPY_FLOAT32 ? "float32" : type == NPY_INT32 ? "int32" : "uint16",
                         ev ? ev : Py_None);
            Py_XDECREF(et);
            Py_XDECREF(ev);
            Py_XDECREF(tb);
        }
        return NULL;
    }
    return (PyArrayObject *)arr;
}

/* Destination scratch: GUARD floats, a pad, the n outputs, then GUARD + spare floats, filled
 * with a NaN pattern no kernel produces from the test inputs' bits at those positions. */
#define GUARD 64
static const uint32_t guard_bits = 0x7fa5a5a5u;

typedef struct {
    float *buf;
    float *dst;
    size_t total;
    size_t lead;  /* floats before dst */
} scratch;

static int scratch_open(scratch *s, int64_t n, const void *like) {
    size_t pad = (size_t)(((uintptr_t)like % 64) / sizeof(float));
    s->lead = GUARD + pad;
    s->total = s->lead + (size_t)n + GUARD + 16;
    s->buf = aligned_alloc(64, (s->total * sizeof(float) + 63) / 64 * 64);
    if (!s->buf) return -1;
    for (size_t i = 0; i < s->total; i++) memcpy(&s->buf[i], &guard_bits, sizeof guard_bits);
    s->dst = s->buf + s->lead;
    return 0;
}

/* 0 when every float of the scratch outside the destination elements (rows of `cols` floats
 * at stride `ld` from dst) still holds the guard pattern. */
static int scratch_check_rows(const scratch *s, int64_t rows, int64_t cols, int64_t ld) {
    for (size_t i = 0; i < s->total; i++) {
        if (i >= s->lead) {
            int64_t off = (int64_t)(i - s->lead);
            if (off / ld < rows && off % ld < cols) continue;
        }
        if (memcmp(&s->buf[i], &guard_bits, sizeof guard_bits) != 0) return -1;
    }
    return 0;
}

/* 0 when both guard zones are intact. */
static int scratch_check(const scratch *s, int64_t n) { return scratch_check_rows(s, 1, n, n > 0 ? n : 1); }

/* As PyArray_FROMANY for a C-contiguous aligned float32 matrix, with the hook's error message. */
static PyArrayObject *as_matrix(PyObject *obj, const char *what) {
    PyObject *arr = PyArray_FROMANY(obj, NPY_FLOAT32, 2, 2, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED);
    if (!arr) {
        if (PyErr_ExceptionMatches(PyExc_ValueError) || PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyObject *et, *ev, *tb;
            PyErr_Fetch(&et, &ev, &tb);
            PyErr_NormalizeException(&et, &ev, &tb);
            PyErr_Format(et, "kernel: %s must be a 2-D float32 array: %S", what, ev ? ev : Py_None);
            Py_XDECREF(et);
            Py_XDECREF(ev);
            Py_XDECREF(tb);
        }
        return NULL;
    }
    return (PyArrayObject *)arr;
}

/* x stride padding (NaN-filled) and y row gap (guard-filled) of gemm_f32_tile, in floats. */
#define GEMM_X_PAD 3
#define GEMM_Y_GAP 35

/* gemm_f32_tile through the hook: see the header comment. a: x [m, k], b: wp [k, NR]. */
static PyObject *run_gemm(const cr_kernels *table, const char *isa, PyArrayObject *a, PyArrayObject *b,
                          int64_t n) {
    int64_t m = (int64_t)PyArray_DIM(a, 0), k = (int64_t)PyArray_DIM(a, 1);
    if ((int64_t)PyArray_DIM(b, 0) != k || PyArray_DIM(b, 1) != CR_GEMM_NR) {
        PyErr_Format(PyExc_ValueError,
                     "kernel: gemm_f32_tile needs wp of shape [k, %d] = [%lld, %d] for x of shape [%lld, %lld], "
                     "got [%lld, %lld]", CR_GEMM_NR, (long long)k, CR_GEMM_NR, (long long)m, (long long)k,
                     (long long)PyArray_DIM(b, 0), (long long)PyArray_DIM(b, 1));
        return NULL;
    }
    int64_t ldx = k + GEMM_X_PAD, ldy = n + GEMM_Y_GAP;
    size_t x_lead = (size_t)(((uintptr_t)PyArray_DATA(a) % 64) / sizeof(float));
    size_t x_count = x_lead + (size_t)(m * ldx);
    float *xbuf = aligned_alloc(64, (x_count * sizeof(float) + 63) / 64 * 64);
    scratch sc;
    sc.buf = NULL;
    if (!xbuf || scratch_open(&sc, m * ldy, PyArray_DATA(a)) < 0) {
        free(xbuf);
        return PyErr_NoMemory();
    }
    float *x = xbuf + x_lead;
    const float nan = NAN, *src = PyArray_DATA(a);
    for (size_t i = 0; i < x_count; i++) xbuf[i] = nan;
    for (int64_t i = 0; i < m; i++)
        if (k) memcpy(x + i * ldx, src + i * k, (size_t)k * sizeof(float));
    const float *wp = PyArray_DATA(b);
    int64_t mr = table->gemm_mr;
    Py_BEGIN_ALLOW_THREADS
    for (int64_t r = 0; r < m; r += mr) {
        int64_t rows = m - r < mr ? m - r : mr;
        table->gemm_f32_tile(x + r * ldx, ldx, rows, wp, k, sc.dst + r * ldy, ldy, n);
    }
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (scratch_check_rows(&sc, m, n, ldy) < 0) {
        PyErr_Format(PyExc_RuntimeError,
                     "kernel: %s gemm_f32_tile wrote outside its %lld x %lld destination elements", isa,
                     (long long)m, (long long)n);
    } else {
        npy_intp dims[2] = {(npy_intp)m, (npy_intp)n};
        PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
        if (out) {
            float *o = PyArray_DATA(out);
            for (int64_t i = 0; i < m; i++) memcpy(o + i * n, sc.dst + i * ldy, (size_t)n * sizeof(float));
            result = (PyObject *)out;
        }
    }
    free(xbuf);
    free(sc.buf);
    return result;
}

static PyArrayObject *as_u16_matrix(PyObject *obj, const char *what) {
    PyObject *arr = PyArray_FROMANY(obj, NPY_UINT16, 2, 2, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED);
    if (!arr && (PyErr_ExceptionMatches(PyExc_ValueError) || PyErr_ExceptionMatches(PyExc_TypeError))) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "kernel: %s must be a 2-D uint16 (bfloat16 bits) array", what);
    }
    return (PyArrayObject *)arr;
}

/* gemm_bf16_tile through the hook. a: x [m, 2 kp] bf16 bits; b: wp [kp, 2 CR_GEMM_NR], one
 * packed panel. x rows get a stride of 2 kp + 6 whose padding is bf16 NaN, y rows the guarded
 * gap of gemm_f32_tile; rows go to the tile kernel in chunks of gemm_bf16_mr. */
static PyObject *run_gemm_bf16(const cr_kernels *table, const char *isa, PyArrayObject *a, PyArrayObject *b,
                               int64_t n) {
    int64_t m = (int64_t)PyArray_DIM(a, 0), k2 = (int64_t)PyArray_DIM(a, 1), kp = k2 / 2;
    if (k2 % 2 || (int64_t)PyArray_DIM(b, 0) != kp || PyArray_DIM(b, 1) != 2 * CR_GEMM_NR) {
        PyErr_Format(PyExc_ValueError,
                     "kernel: gemm_bf16_tile needs x [m, 2 kp] and wp [kp, %d]; got x [%lld, %lld], wp [%lld, %lld]",
                     2 * CR_GEMM_NR, (long long)m, (long long)k2, (long long)PyArray_DIM(b, 0),
                     (long long)PyArray_DIM(b, 1));
        return NULL;
    }
    int64_t ldx = k2 + 6, ldy = n + GEMM_Y_GAP;
    uint16_t *xbuf = malloc(((size_t)(m * ldx) + 1) * sizeof(uint16_t));
    scratch sc;
    sc.buf = NULL;
    if (!xbuf || scratch_open(&sc, m * ldy, PyArray_DATA(a)) < 0) {
        free(xbuf);
        return PyErr_NoMemory();
    }
    const uint16_t *src = PyArray_DATA(a);
    for (int64_t i = 0; i < m * ldx; i++) xbuf[i] = 0x7fc0; /* bf16 NaN */
    for (int64_t i = 0; i < m; i++)
        if (k2) memcpy(xbuf + i * ldx, src + i * k2, (size_t)k2 * sizeof(uint16_t));
    const uint16_t *wp = PyArray_DATA(b);
    int64_t mr = table->gemm_bf16_mr;
    Py_BEGIN_ALLOW_THREADS
    for (int64_t r = 0; r < m; r += mr) {
        int64_t rows = m - r < mr ? m - r : mr;
        table->gemm_bf16_tile(xbuf + r * ldx, ldx, rows, wp, kp, sc.dst + r * ldy, ldy, n);
    }
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (scratch_check_rows(&sc, m, n, ldy) < 0) {
        PyErr_Format(PyExc_RuntimeError,
                     "kernel: %s gemm_bf16_tile wrote outside its %lld x %lld destination elements", isa,
                     (long long)m, (long long)n);
    } else {
        npy_intp dims[2] = {(npy_intp)m, (npy_intp)n};
        PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
        if (out) {
            float *o = PyArray_DATA(out);
            for (int64_t i = 0; i < m; i++) memcpy(o + i * n, sc.dst + i * ldy, (size_t)n * sizeof(float));
            result = (PyObject *)out;
        }
    }
    free(xbuf);
    free(sc.buf);
    return result;
}

static PyArrayObject *as_typed_matrix(PyObject *obj, int type, const char *what, const char *type_name) {
    PyObject *arr = PyArray_FROMANY(obj, type, 2, 2, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED);
    if (!arr && (PyErr_ExceptionMatches(PyExc_ValueError) || PyErr_ExceptionMatches(PyExc_TypeError))) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "kernel: %s must be a 2-D %s array", what, type_name);
    }
    return (PyArrayObject *)arr;
}

/* gemm_i8_tile through the hook. a: x [m, 4 kq] uint8; b: wp [kq, 4 CR_GEMM_NR] int8. x rows get
 * a stride of 4 kq + 12 (padding 0xff), y rows the guarded gap; chunks of gemm_i8_mr rows. */
static PyObject *run_gemm_i8(const cr_kernels *table, const char *isa, PyArrayObject *a, PyArrayObject *b,
                             int64_t n) {
    int64_t m = (int64_t)PyArray_DIM(a, 0), k4 = (int64_t)PyArray_DIM(a, 1), kq = k4 / 4;
    if (k4 % 4 || (int64_t)PyArray_DIM(b, 0) != kq || PyArray_DIM(b, 1) != 4 * CR_GEMM_NR) {
        PyErr_Format(PyExc_ValueError,
                     "kernel: gemm_i8_tile needs x [m, 4 kq] and wp [kq, %d]; got x [%lld, %lld], wp [%lld, %lld]",
                     4 * CR_GEMM_NR, (long long)m, (long long)k4, (long long)PyArray_DIM(b, 0),
                     (long long)PyArray_DIM(b, 1));
        return NULL;
    }
    int64_t ldx = k4 + 12, ldy = n + GEMM_Y_GAP;
    uint8_t *xbuf = malloc((size_t)(m * ldx) + 1);
    scratch sc;
    sc.buf = NULL;
    if (!xbuf || scratch_open(&sc, m * ldy, PyArray_DATA(a)) < 0) {
        free(xbuf);
        return PyErr_NoMemory();
    }
    memset(xbuf, 0xff, (size_t)(m * ldx) + 1);
    const uint8_t *src = PyArray_DATA(a);
    for (int64_t i = 0; i < m; i++)
        if (k4) memcpy(xbuf + i * ldx, src + i * k4, (size_t)k4);
    const int8_t *wp = PyArray_DATA(b);
    int32_t *y = (int32_t *)sc.dst;
    int64_t mr = table->gemm_i8_mr;
    Py_BEGIN_ALLOW_THREADS
    for (int64_t r = 0; r < m; r += mr) {
        int64_t rows = m - r < mr ? m - r : mr;
        table->gemm_i8_tile(xbuf + r * ldx, ldx, rows, wp, kq, y + r * ldy, ldy, n);
    }
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (scratch_check_rows(&sc, m, n, ldy) < 0) {
        PyErr_Format(PyExc_RuntimeError,
                     "kernel: %s gemm_i8_tile wrote outside its %lld x %lld destination elements", isa,
                     (long long)m, (long long)n);
    } else {
        npy_intp dims[2] = {(npy_intp)m, (npy_intp)n};
        PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_INT32);
        if (out) {
            int32_t *o = PyArray_DATA(out);
            for (int64_t i = 0; i < m; i++) memcpy(o + i * n, y + i * ldy, (size_t)n * sizeof(int32_t));
            result = (PyObject *)out;
        }
    }
    free(xbuf);
    free(sc.buf);
    return result;
}

/* quantize_u8 through the hook: (uint8 array, scale), output between guard zones. */
static PyObject *run_quantize(const cr_kernels *table, const char *isa, PyObject *obj) {
    PyArrayObject *a = as_vector(obj, NPY_FLOAT32, 1, "the array");
    if (!a) return NULL;
    int64_t n = (int64_t)PyArray_DIM(a, 0);
    enum { G = 64 };
    uint8_t *buf = malloc((size_t)n + 2 * G);
    PyObject *result = NULL;
    if (!buf) {
        Py_DECREF(a);
        return PyErr_NoMemory();
    }
    memset(buf, 0xa5, (size_t)n + 2 * G);
    const float *src = PyArray_DATA(a);
    float scale;
    Py_BEGIN_ALLOW_THREADS
    scale = table->quantize_u8(src, n, buf + G);
    Py_END_ALLOW_THREADS
    int intact = 1;
    for (int64_t i = 0; i < G; i++) intact &= buf[i] == 0xa5 && buf[G + n + i] == 0xa5;
    if (!intact) {
        PyErr_Format(PyExc_RuntimeError, "kernel: %s quantize_u8 wrote outside its %lld destination bytes",
                     isa, (long long)n);
    } else {
        npy_intp dims[1] = {(npy_intp)n};
        PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_UINT8);
        if (out) {
            if (n) memcpy(PyArray_DATA(out), buf + G, (size_t)n);
            result = Py_BuildValue("(Nd)", out, (double)scale);
        }
    }
    free(buf);
    Py_DECREF(a);
    return result;
}

/* f32_to_bf16 through the hook: uint16 output between guard zones. */
static PyObject *run_to_bf16(const cr_kernels *table, const char *isa, PyObject *obj) {
    PyArrayObject *a = as_vector(obj, NPY_FLOAT32, 1, "the array");
    if (!a) return NULL;
    int64_t n = (int64_t)PyArray_DIM(a, 0);
    enum { G = 64 };
    uint16_t *buf = malloc(((size_t)n + 2 * G) * sizeof(uint16_t));
    PyObject *result = NULL;
    if (!buf) {
        Py_DECREF(a);
        return PyErr_NoMemory();
    }
    for (int64_t i = 0; i < n + 2 * G; i++) buf[i] = 0xa5a5;
    const float *src = PyArray_DATA(a);
    Py_BEGIN_ALLOW_THREADS
    table->f32_to_bf16(src, buf + G, n);
    Py_END_ALLOW_THREADS
    int intact = 1;
    for (int64_t i = 0; i < G; i++) intact &= buf[i] == 0xa5a5 && buf[G + n + i] == 0xa5a5;
    if (!intact) {
        PyErr_Format(PyExc_RuntimeError, "kernel: %s f32_to_bf16 wrote outside its %lld destination elements",
                     isa, (long long)n);
    } else {
        npy_intp dims[1] = {(npy_intp)n};
        PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_UINT16);
        if (out) {
            if (n) memcpy(PyArray_DATA(out), buf + G, (size_t)n * sizeof(uint16_t));
            result = (PyObject *)out;
        }
    }
    free(buf);
    Py_DECREF(a);
    return result;
}

/* i8_outliers_f32 through the hook: see the header comment; y's copy lies between guard zones. */
static PyObject *run_i8_outliers(const cr_kernels *table, const char *isa, PyObject *args) {
    PyArrayObject *wp = as_typed_matrix(PyTuple_GET_ITEM(args, 2), NPY_INT8, "wp", "int8");
    PyArrayObject *k = wp ? as_vector(PyTuple_GET_ITEM(args, 3), NPY_INT32, 1, "k") : NULL;
    PyArrayObject *v = k ? as_vector(PyTuple_GET_ITEM(args, 4), NPY_FLOAT32, 1, "v") : NULL;
    PyArrayObject *ws = v ? as_vector(PyTuple_GET_ITEM(args, 5), NPY_FLOAT32, 1, "wscale") : NULL;
    PyArrayObject *y = ws ? as_vector(PyTuple_GET_ITEM(args, 6), NPY_FLOAT32, 1, "y") : NULL;
    PyObject *result = NULL;
    if (!y) goto done;
    int64_t kq = (int64_t)PyArray_DIM(wp, 0), t = (int64_t)PyArray_DIM(k, 0), n = (int64_t)PyArray_DIM(y, 0);
    if (PyArray_DIM(wp, 1) != 4 * CR_GEMM_NR || PyArray_DIM(v, 0) != t || PyArray_DIM(ws, 0) != n ||
        n > CR_GEMM_NR || t > INT32_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "kernel: i8_outliers_f32 needs wp [kq, %d], k and v of one length, wscale and y of one "
                     "length n <= %d", 4 * CR_GEMM_NR, CR_GEMM_NR);
        goto done;
    }
    const int32_t *kk = PyArray_DATA(k);
    for (int64_t i = 0; i < t; i++)
        if (kk[i] < 0 || kk[i] >= 4 * kq) {
            PyErr_Format(PyExc_ValueError, "kernel: i8_outliers_f32 input index %d is outside [0, %lld)", kk[i],
                         (long long)(4 * kq));
            goto done;
        }
    scratch sc;
    if (scratch_open(&sc, n, PyArray_DATA(y)) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    if (n) memcpy(sc.dst, PyArray_DATA(y), (size_t)n * sizeof(float));
    const int8_t *pw = PyArray_DATA(wp);
    const float *pv = PyArray_DATA(v), *pws = PyArray_DATA(ws);
    Py_BEGIN_ALLOW_THREADS
    table->i8_outliers_f32(pw, kk, pv, (int)t, pws, sc.dst, n);
    Py_END_ALLOW_THREADS
    if (scratch_check(&sc, n) < 0) {
        PyErr_Format(PyExc_RuntimeError, "kernel: %s i8_outliers_f32 wrote outside its %lld destination elements",
                     isa, (long long)n);
    } else {
        npy_intp dims[1] = {(npy_intp)n};
        PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_FLOAT32);
        if (out && n) memcpy(PyArray_DATA(out), sc.dst, (size_t)n * sizeof(float));
        result = (PyObject *)out;
    }
    free(sc.buf);
done:
    Py_XDECREF(wp);
    Py_XDECREF(k);
    Py_XDECREF(v);
    Py_XDECREF(ws);
    Py_XDECREF(y);
    return result;
}

/* abs_sum_max_f32 / find_above_f32 through the hook. */
static PyObject *run_outlier_scan(const cr_kernels *table, kernel_id id, PyObject *obj, float threshold,
                                  long long cap) {
    PyArrayObject *a = as_vector(obj, NPY_FLOAT32, 1, "the array");
    if (!a) return NULL;
    const float *x = PyArray_DATA(a);
    int64_t n = (int64_t)PyArray_DIM(a, 0);
    PyObject *result = NULL;
    if (id == K_ABS_STATS) {
        float sum, amax;
        Py_BEGIN_ALLOW_THREADS
        sum = table->abs_sum_max_f32(x, n, &amax);
        Py_END_ALLOW_THREADS
        result = Py_BuildValue("(dd)", (double)sum, (double)amax);
    } else if (cap < 0 || cap > (1 << 20)) {
        PyErr_Format(PyExc_ValueError, "kernel: find_above_f32 needs 0 <= n (the cap) <= 2**20, got %lld", cap);
    } else {
        /* one guard slot past the cap: a write there is caught */
        int32_t *idx = malloc(((size_t)cap + 1) * sizeof(int32_t));
        if (!idx) {
            Py_DECREF(a);
            return PyErr_NoMemory();
        }
        idx[cap] = -7;
        int64_t total;
        Py_BEGIN_ALLOW_THREADS
        total = table->find_above_f32(x, n, threshold, idx, (int64_t)cap);
        Py_END_ALLOW_THREADS
        if (idx[cap] != -7) {
            PyErr_SetString(PyExc_RuntimeError, "kernel: find_above_f32 wrote past its cap");
        } else {
            npy_intp dims[1] = {(npy_intp)(total < cap ? total : cap)};
            PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_INT32);
            if (out) {
                if (dims[0]) memcpy(PyArray_DATA(out), idx, (size_t)dims[0] * sizeof(int32_t));
                result = Py_BuildValue("(NL)", out, (long long)total);
            }
        }
        free(idx);
    }
    Py_DECREF(a);
    return result;
}

PyObject *cr_test_kernel(PyObject *self, PyObject *args, PyObject *kw) {
    if (ensure_numpy() < 0) return NULL;
    Py_ssize_t nargs = PyTuple_GET_SIZE(args);
    if (nargs < 2) {
        PyErr_SetString(PyExc_TypeError, "kernel(isa, name, *arrays, alpha=0.0): isa and name are required");
        return NULL;
    }
    PyObject *isa_obj = PyTuple_GET_ITEM(args, 0), *name_obj = PyTuple_GET_ITEM(args, 1);
    if (!PyUnicode_Check(isa_obj) || !PyUnicode_Check(name_obj)) {
        PyErr_SetString(PyExc_TypeError, "kernel: isa and name must be str");
        return NULL;
    }
    const char *isa = PyUnicode_AsUTF8(isa_obj), *name = PyUnicode_AsUTF8(name_obj);
    if (!isa || !name) return NULL;

    double alpha = 0.0;
    int have_alpha = 0, have_n = 0;
    long long n_cols = CR_GEMM_NR;
    if (kw && PyDict_GET_SIZE(kw) > 0) {
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        while (PyDict_Next(kw, &pos, &key, &value)) {
            if (PyUnicode_Check(key) && PyUnicode_CompareWithASCIIString(key, "alpha") == 0) {
                alpha = PyFloat_AsDouble(value);
                if (alpha == -1.0 && PyErr_Occurred()) return NULL;
                have_alpha = 1;
            } else if (PyUnicode_Check(key) && PyUnicode_CompareWithASCIIString(key, "n") == 0) {
                if (!PyLong_Check(value)) {
                    PyErr_Format(PyExc_TypeError, "kernel: n must be an int, got %R", value);
                    return NULL;
                }
                n_cols = PyLong_AsLongLong(value);
                if (n_cols == -1 && PyErr_Occurred()) return NULL;
                have_n = 1;
            } else {
                PyErr_Format(PyExc_TypeError, "kernel: unexpected keyword argument %R", key);
                return NULL;
            }
        }
    }

    size_t k = COUNT(kernel_list);
    for (size_t i = 0; i < COUNT(kernel_list); i++)
        if (strcmp(name, kernel_list[i].name) == 0) k = i;
    if (k == COUNT(kernel_list)) {
        PyErr_Format(PyExc_ValueError,
                     "kernel: unknown kernel %R (dot_f32, scale_f32, sumsq_f32, bf16_to_f32, f16_to_f32, "
                     "gemm_f32_tile, gemm_mr, gemm_bf16_tile, gemm_bf16_mr, f32_to_bf16, gemm_i8_tile, gemm_i8_mr, "
                     "quantize_u8, silu_mul_f32, gelu_tanh_mul_f32, i8_outliers_f32, abs_sum_max_f32, find_above_f32, "
                     "norm_scale_f32, rope_f32)",
                     name_obj);
        return NULL;
    }
    size_t t = COUNT(isa_list);
    for (size_t i = 0; i < COUNT(isa_list); i++)
        if (strcmp(isa, isa_list[i].name) == 0) t = i;
    if (t == COUNT(isa_list)) {
        PyErr_Format(PyExc_ValueError, "kernel: unknown ISA %R (kernel tables: ref, avx2, avxvnni, avx512, avx512vnni, avx512bf16, amx)", isa_obj);
        return NULL;
    }
    const cr_kernels *table = runnable_table(t);
    if (!table) {
        PyErr_Format(PyExc_RuntimeError,
                     "kernel: ISA %s is not supported here (this CPU and OS run up to %s%s)", isa,
                     cr_isa_level_name(cr_isa_detected()),
                     compiled_table(t) ? "" : "; its kernels are not compiled into this build");
        return NULL;
    }

    kernel_id id = kernel_list[k].id;
    if (nargs - 2 != kernel_list[k].n_arrays) {
        PyErr_Format(PyExc_TypeError, "kernel: %s takes %d array(s), got %zd", name,
                     kernel_list[k].n_arrays, nargs - 2);
        return NULL;
    }
    if (have_alpha && id != K_SCALE && id != K_FIND_ABOVE && id != K_NORM_SCALE) {
        PyErr_Format(PyExc_TypeError, "kernel: alpha applies to scale_f32, find_above_f32 and norm_scale_f32 only, not %s",
                     name);
        return NULL;
    }
    if (have_n && id != K_GEMM && id != K_GEMM_BF16 && id != K_GEMM_I8 && id != K_FIND_ABOVE) {
        PyErr_Format(PyExc_TypeError, "kernel: n applies to the gemm tiles and find_above_f32 only, not %s", name);
        return NULL;
    }
    if (id == K_GEMM_MR) return PyLong_FromLong(table->gemm_mr);
    if (id == K_GEMM_BF16_MR) return PyLong_FromLong(table->gemm_bf16_mr);
    if (id == K_GEMM_BF16) {
        if (n_cols < 1 || n_cols > CR_GEMM_NR) {
            PyErr_Format(PyExc_ValueError, "kernel: gemm_bf16_tile stores n = 1..%d columns, got n=%lld",
                         CR_GEMM_NR, n_cols);
            return NULL;
        }
        PyArrayObject *x = as_u16_matrix(PyTuple_GET_ITEM(args, 2), "x");
        PyArrayObject *wp = x ? as_u16_matrix(PyTuple_GET_ITEM(args, 3), "wp") : NULL;
        PyObject *y = wp ? run_gemm_bf16(table, isa, x, wp, (int64_t)n_cols) : NULL;
        Py_XDECREF(x);
        Py_XDECREF(wp);
        return y;
    }
    if (id == K_TO_BF16) return run_to_bf16(table, isa, PyTuple_GET_ITEM(args, 2));
    if (id == K_GEMM_I8_MR) return PyLong_FromLong(table->gemm_i8_mr);
    if (id == K_QUANT) return run_quantize(table, isa, PyTuple_GET_ITEM(args, 2));
    if (id == K_I8_OUTLIERS) return run_i8_outliers(table, isa, args);
    if (id == K_ABS_STATS || id == K_FIND_ABOVE)
        return run_outlier_scan(table, id, PyTuple_GET_ITEM(args, 2), (float)alpha, n_cols);
    if (id == K_GEMM_I8) {
        if (n_cols < 1 || n_cols > CR_GEMM_NR) {
            PyErr_Format(PyExc_ValueError, "kernel: gemm_i8_tile stores n = 1..%d columns, got n=%lld",
                         CR_GEMM_NR, n_cols);
            return NULL;
        }
        PyArrayObject *x = as_typed_matrix(PyTuple_GET_ITEM(args, 2), NPY_UINT8, "x", "uint8");
        PyArrayObject *wp = x ? as_typed_matrix(PyTuple_GET_ITEM(args, 3), NPY_INT8, "wp", "int8") : NULL;
        PyObject *y = wp ? run_gemm_i8(table, isa, x, wp, (int64_t)n_cols) : NULL;
        Py_XDECREF(x);
        Py_XDECREF(wp);
        return y;
    }
    if (id == K_GEMM) {
        if (n_cols < 1 || n_cols > CR_GEMM_NR) {
            PyErr_Format(PyExc_ValueError, "kernel: gemm_f32_tile stores n = 1..%d columns, got n=%lld",
                         CR_GEMM_NR, n_cols);
            return NULL;
        }
        PyArrayObject *x = as_matrix(PyTuple_GET_ITEM(args, 2), "x");
        PyArrayObject *wp = x ? as_matrix(PyTuple_GET_ITEM(args, 3), "wp") : NULL;
        PyObject *y = wp ? run_gemm(table, isa, x, wp, (int64_t)n_cols) : NULL;
        Py_XDECREF(x);
        Py_XDECREF(wp);
        return y;
    }

    PyArrayObject *a = NULL, *b = NULL, *out = NULL;
    PyObject *result = NULL;
    int is_conv = id == K_BF16 || id == K_F16;
    a = as_vector(PyTuple_GET_ITEM(args, 2), is_conv ? NPY_UINT16 : NPY_FLOAT32, !is_conv,
                  kernel_list[k].n_arrays == 2 ? "the first array" : "the array");
    if (!a) goto done;
    int64_t n = (int64_t)PyArray_DIM(a, 0);
    if (kernel_list[k].n_arrays == 2) {
        b = as_vector(PyTuple_GET_ITEM(args, 3), NPY_FLOAT32, 1, "the second array");
        if (!b) goto done;
        if ((int64_t)PyArray_DIM(b, 0) != n) {
            PyErr_Format(PyExc_ValueError, "kernel: %s needs arrays of equal length, got %lld and %lld",
                         name, (long long)n, (long long)PyArray_DIM(b, 0));
            goto done;
        }
    }
    if (id == K_ROPE && n % 2) {
        PyErr_Format(PyExc_ValueError, "kernel: rope_f32 needs a head vector of even length, got %lld", (long long)n);
        goto done;
    }

    switch (id) {
    case K_DOT:
    case K_SUMSQ: {
        const float *pa = PyArray_DATA(a), *pb = b ? PyArray_DATA(b) : NULL;
        float s;
        Py_BEGIN_ALLOW_THREADS
        s = id == K_DOT ? table->dot_f32(pa, pb, n) : table->sumsq_f32(pa, n);
        Py_END_ALLOW_THREADS
        result = PyFloat_FromDouble((double)s);
        break;
    }
    case K_GEMM:
    case K_GEMM_MR:
    case K_GEMM_BF16:
    case K_GEMM_BF16_MR:
    case K_TO_BF16:
    case K_GEMM_I8:
    case K_GEMM_I8_MR:
    case K_QUANT:
    case K_I8_OUTLIERS:
    case K_ABS_STATS:
    case K_FIND_ABOVE:
        break; /* handled above */
    case K_SCALE:
    case K_NORM_SCALE:
    case K_ROPE:
    case K_SILU:
    case K_GELU_TANH:
    case K_BF16:
    case K_F16: {
        scratch sc;
        if (scratch_open(&sc, n, PyArray_DATA(a)) < 0) {
            PyErr_NoMemory();
            goto done;
        }
        const void *src = PyArray_DATA(a);
        float fa = (float)alpha;
        Py_BEGIN_ALLOW_THREADS
        if (id == K_SCALE) {
            /* in place on the scratch copy of x: the caller's x stays as it was */
            if (n) memcpy(sc.dst, src, (size_t)n * sizeof(float));
            table->scale_f32(fa, sc.dst, n);
        } else if (id == K_NORM_SCALE) {
            table->norm_scale_f32(src, PyArray_DATA(b), fa, sc.dst, n);
        } else if (id == K_ROPE) {
            /* in place on the scratch copy of v */
            const float *cs = PyArray_DATA(b);
            if (n) memcpy(sc.dst, src, (size_t)n * sizeof(float));
            table->rope_f32(sc.dst, cs, cs + n / 2, n / 2);
        } else if (id == K_SILU || id == K_GELU_TANH) {
            table->sigmoid_glu_f32(src, PyArray_DATA(b), sc.dst, n, id == K_GELU_TANH);
        } else if (id == K_BF16) {
            table->bf16_to_f32(src, sc.dst, n);
        } else {
            table->f16_to_f32(src, sc.dst, n);
        }
        Py_END_ALLOW_THREADS
        if (scratch_check(&sc, n) < 0) {
            PyErr_Format(PyExc_RuntimeError, "kernel: %s %s wrote outside its %lld destination elements",
                         isa, name, (long long)n);
        } else {
            npy_intp dims[1] = {(npy_intp)n};
            out = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_FLOAT32);
            if (out) {
                if (n) memcpy(PyArray_DATA(out), sc.dst, (size_t)n * sizeof(float));
                result = (PyObject *)out;
                out = NULL;
            }
        }
        free(sc.buf);
        break;
    }
    }

done:
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(out);
    return result;
}
