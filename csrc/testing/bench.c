/* bench.c — crossrank._testing: benchmark and test hooks (not public API):
 *
 *   linear(w, x, fmt="float32", threads=1, bias=None, rows=0) -> y
 *       y = x @ w^T through cr_linear_apply, w packed as the engine packs it for fmt (below).
 *       rows > 0 (a layer that takes its own input rows): for bf16, x written as the layer's
 *       bf16 rows (on AMX in tile order) in parts of `rows` elements (cr_linear_put_bf16, over a
 *       buffer of NaN patterns), then cr_linear_apply_bf16_rows; for int8, x quantized
 *       row by row (cr_linear_put_i8, over bytes and scales filled with junk first), then
 *       cr_linear_apply_i8_rows.
 *   bench_linear(w, m, fmt="float32", threads=1, reps=3, clock="wall", rows=False) -> float
 *       Packs w ([n_out, n_in] float32) as the engine does for `fmt` ("float32": crossrank's
 *       panels, "openblas": OpenBLAS sgemm, "bfloat16": bf16 pair panels, "int8": int8 panels
 *       with per-token input quantization; bfloat16 and int8 take the AMX layouts where the
 *       engine would) and returns the best
 *       wall time in seconds of cr_linear_apply on m rows of fixed pseudo-random inputs
 *       (clock="thread": the calling thread's CPU time, for threads=1 on a busy machine;
 *       rows=True: the inputs written once as the layer's own bf16 or int8 rows, untimed, and
 *       cr_linear_apply_bf16_rows / _i8_rows timed, as the forward runs such a layer).
 *   bench_peak(kind, threads=1, iters=50000000) -> float
 *       GFLOP/s of a register-only loop on `threads` pool workers: "fma_f32" (AVX-512 FMA) or
 *       "dpbf16" (AVX512_BF16 vdpbf16ps) or "vnni" (AVX512_VNNI vpdpbusd, integer OP/s), or the
 *       AMX tile multiplier: "amx_bf16" (TDPBF16PS) or "amx_int8" (TDPBUSD, integer OP/s).
 *       RuntimeError when the CPU lacks the instructions. */
#include "testing.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "kernels/kernels.h"
#include "linear.h"
#include "threads.h"

#include <numpy/arrayobject.h>

static int ensure_numpy(void) {
    if (PyArray_API != NULL) return 0;
    return _import_array();
}

double cr_test_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double thread_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static PyObject *raise_core(void) {
    PyErr_SetString(PyExc_RuntimeError, cr_last_error());
    return NULL;
}

/* W packed from a [n_out, n_in] float32 array as the engine packs it for fmt; 0 or -1 with a
 * Python exception set. */
static int pack_weight(PyObject *w_obj, const char *fmt, cr_linear *W) {
    cr_dtype compute;
    int blas = 0;
    if (strcmp(fmt, "float32") == 0) compute = CR_DT_F32;
    else if (strcmp(fmt, "bfloat16") == 0) compute = CR_DT_BF16;
    else if (strcmp(fmt, "int8") == 0) compute = CR_DT_I8;
    else if (strcmp(fmt, "openblas") == 0) compute = CR_DT_F32, blas = 1;
    else {
        PyErr_Format(PyExc_ValueError, "fmt '%s' is not float32, bfloat16, int8 or openblas", fmt);
        return -1;
    }
    PyArrayObject *w = (PyArrayObject *)PyArray_FROMANY(w_obj, NPY_FLOAT32, 2, 2,
                                                        NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED);
    if (!w) return -1;
    cr_kernels_init();
    *W = (cr_linear){.fmt = CR_FMT_F32_BLAS, .n_out = PyArray_DIM(w, 0), .n_in = PyArray_DIM(w, 1)};
    size_t wn = (size_t)(W->n_out * W->n_in);
    if (wn == 0) {
        Py_DECREF(w);
        PyErr_SetString(PyExc_ValueError, "the weight is empty");
        return -1;
    }
    W->w = cr_aligned_alloc(wn * sizeof(float), "weight");
    if (!W->w) {
        Py_DECREF(w);
        PyErr_NoMemory();
        return -1;
    }
    memcpy(W->w, PyArray_DATA(w), wn * sizeof(float));
    Py_DECREF(w);
    if (!blas && cr_linear_pack(W, compute) != CR_OK) {
        cr_linear_free(W);
        raise_core();
        return -1;
    }
    return 0;
}

/* x's m rows quantized into freshly allocated int8 rows of W (over junk: every byte and scale the
 * layer reads for rows < m is written); 0 or -1 with a Python exception set. */
static int put_i8_rows(const cr_linear *W, const float *x, int64_t m, cr_i8_rows *rows) {
    if (cr_linear_i8_rows_alloc(W, m, rows) != CR_OK) {
        raise_core();
        return -1;
    }
    int64_t len = cr_linear_row_elems(W);
    float *row = cr_malloc_array((size_t)W->n_in, sizeof(float), "int8 row");
    uint8_t *tmp = cr_malloc_array((size_t)len, 1, "int8 row bytes");
    if (!row || !tmp) {
        free(row);
        free(tmp);
        cr_linear_i8_rows_free(rows);
        PyErr_NoMemory();
        return -1;
    }
    memset(rows->q, 0xa5, (size_t)((m + 15) / 16 * 16) * (size_t)len);
    for (int64_t r = 0; r < m; r++) rows->scale[r] = NAN;
    for (int64_t r = 0; r < m; r++) {
        memcpy(row, x + r * W->n_in, (size_t)W->n_in * sizeof(float));
        cr_linear_put_i8(W, rows, r, row, tmp);
    }
    free(row);
    free(tmp);
    return 0;
}

PyObject *cr_test_bench_linear(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"w", "m", "fmt", "threads", "reps", "clock", "rows", NULL};
    PyObject *w_obj;
    long long m;
    const char *fmt = "float32", *clock_name = "wall";
    int threads = 1, reps = 3, rows = 0;
    if (ensure_numpy() < 0) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OL|siisp", kwlist, &w_obj, &m, &fmt, &threads, &reps, &clock_name,
                                     &rows))
        return NULL;
    /* "thread": CPU time of the calling thread (worker 0), which with threads=1 is the layer's
     * compute time without the time other processes took the core */
    int thread_clock = strcmp(clock_name, "thread") == 0;
    if (!thread_clock && strcmp(clock_name, "wall") != 0) {
        PyErr_SetString(PyExc_ValueError, "bench_linear: clock is 'wall' or 'thread'");
        return NULL;
    }
    if (m < 1 || m > (1 << 20) || threads < 1 || threads > 256 || reps < 1) {
        PyErr_SetString(PyExc_ValueError, "bench_linear: m in [1, 2^20], threads in [1, 256], reps >= 1");
        return NULL;
    }
    cr_linear W;
    if (pack_weight(w_obj, fmt, &W) < 0) return NULL;
    PyObject *result = NULL;
    uint16_t *xb = NULL;
    cr_i8_rows xq = {0};
    float *x = cr_aligned_alloc((size_t)m * (size_t)W.n_in * sizeof(float), "bench input");
    float *y = cr_aligned_alloc((size_t)m * (size_t)W.n_out * sizeof(float), "bench output");
    if (!x || !y) {
        PyErr_NoMemory();
        goto done;
    }
    if (rows && !cr_linear_takes_bf16_rows(&W) && !cr_linear_takes_i8_rows(&W)) {
        PyErr_Format(PyExc_ValueError, "bench_linear: fmt '%s' does not take its own input rows here", fmt);
        goto done;
    }
    uint32_t state = 12345;
    for (size_t i = 0; i < (size_t)m * (size_t)W.n_in; i++) {
        state = state * 1664525u + 1013904223u;
        x[i] = (float)(state >> 8) * (1.0f / 16777216.0f) - 0.5f;
    }
    if (rows && cr_linear_takes_i8_rows(&W)) {
        if (put_i8_rows(&W, x, m, &xq) < 0) goto done;
    } else if (rows) {
        size_t n = (size_t)((m + 15) / 16 * 16) * (size_t)cr_linear_row_elems(&W);
        if (!(xb = cr_aligned_alloc(n * sizeof(uint16_t), "bench bf16 rows"))) {
            PyErr_NoMemory();
            goto done;
        }
        memset(xb, 0, n * sizeof(uint16_t));
        for (int64_t r = 0; r < m; r++) cr_linear_put_bf16(&W, xb, r, 0, x + r * W.n_in, W.n_in);
    }
    /* the forward's calls reuse their buffers (cr_linear_scratch): so do the repetitions */
    cr_linear_scratch ws = {0};
    cr_exec ex = {.threads = threads, .abort = NULL, .scratch = &ws};
    double best = 1e30;
    cr_status st = CR_OK;
    Py_BEGIN_ALLOW_THREADS
    cr_engine_lock();
    for (int r = 0; r < reps && st == CR_OK; r++) {
        double t0 = thread_clock ? thread_seconds() : cr_test_now_seconds();
        cr_linear_in in = {.x = xq.q || xb ? NULL : x, .ldx = W.n_in, .xb = xb, .q8 = xq.q ? &xq : NULL};
        st = cr_linear_apply(&W, &in, m, y, W.n_out, &ex);
        double t = (thread_clock ? thread_seconds() : cr_test_now_seconds()) - t0;
        if (t < best) best = t;
    }
    cr_engine_unlock();
    Py_END_ALLOW_THREADS
    cr_linear_scratch_free(&ws);
    result = st == CR_OK ? PyFloat_FromDouble(best) : raise_core();
done:
    cr_linear_free(&W);
    free(x);
    free(y);
    free(xb);
    cr_linear_i8_rows_free(&xq);
    return result;
}

/* Where element (r, k) of W's own input rows lies: the tile order of kernels.h on AMX (blocks of
 * CR_AMX_BF16_K or CR_AMX_I8_K elements), else row after row. */
static size_t own_row_index(const cr_linear *W, int64_t r, int64_t k) {
    int64_t len = cr_linear_row_elems(W);
    if (W->fmt != CR_FMT_BF16_AMX && W->fmt != CR_FMT_I8_AMX) return (size_t)(r * len + k);
    int64_t block = W->fmt == CR_FMT_BF16_AMX ? CR_AMX_BF16_K : CR_AMX_I8_K;
    return (size_t)((r / 16) * 16 * len + (k / block) * 16 * block + (r % 16) * block + k % block);
}

/* Element (r, k) of bf16 own input rows of W as float32. */
static float own_row_value(const cr_linear *W, const uint16_t *rows, int64_t r, int64_t k) {
    uint32_t bits = (uint32_t)rows[own_row_index(W, r, k)] << 16;
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* linear(..., glu=act, glu_n=n, glu_rows=0/1): cr_linear_apply_glu into y [m, n]: float32 h, or
 * with glu_rows the own rows of a layer of n inputs in w's format, read back (bf16 rows as their
 * values; int8 rows dequantized, (q - 128) scale, with the row's outlier inputs at their places). */
static cr_status apply_glu(const cr_linear *W, const cr_linear_in *in, int64_t m, const char *act, int64_t n,
                           int to_rows, float *y, const cr_exec *ex) {
    cr_glu glu = {.act = strcmp(act, "gelu") == 0 ? CR_ACT_GELU : strcmp(act, "gelu_tanh") == 0 ? CR_ACT_GELU_TANH
                                                                                              : CR_ACT_SILU,
                  .n = n, .h = y, .ldh = n};
    cr_linear to = {.fmt = W->fmt, .n_in = n, .n_out = 1};
    int64_t len = cr_linear_row_elems(&to);
    size_t count = (size_t)((m + 15) / 16 * 16) * (size_t)len;
    uint16_t *rows = NULL;
    cr_i8_rows q8 = {0};
    if (to_rows && cr_linear_takes_i8_rows(&to)) {
        cr_status st = cr_linear_i8_rows_alloc(&to, m, &q8);
        if (st) return st;
        memset(q8.n_outliers, 0, (size_t)m * sizeof(int32_t)); /* a row never written reads as none */
        glu.q8 = &q8;
    } else if (to_rows) {
        if (!(rows = cr_aligned_alloc(count * sizeof(uint16_t), "GLU rows"))) return CR_E_NOMEM;
        for (size_t i = 0; i < count; i++) rows[i] = 0x7fc1; /* NaN where nothing was written */
        glu.rows = rows;
    }
    if (to_rows) {
        glu.to = &to;
        glu.h = NULL;
    }
    cr_status st = cr_linear_apply_glu(W, in, m, &glu, ex);
    for (int64_t r = 0; st == CR_OK && to_rows && r < m; r++) {
        for (int64_t k = 0; k < n && rows; k++) y[r * n + k] = own_row_value(&to, rows, r, k);
        if (!q8.q) continue;
        for (int64_t k = 0; k < n; k++) y[r * n + k] = (float)((int)q8.q[own_row_index(&to, r, k)] - 128) * q8.scale[r];
        for (int32_t t = 0; t < q8.n_outliers[r] && t < CR_I8_MAX_OUTLIERS; t++) {
            int32_t k = q8.outlier_k[r * CR_I8_MAX_OUTLIERS + t];
            if (k >= 0 && k < n) y[r * n + k] = q8.outlier_x[r * CR_I8_MAX_OUTLIERS + t];
        }
    }
    free(rows);
    cr_linear_i8_rows_free(&q8);
    return st;
}

PyObject *cr_test_linear(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"w", "x", "fmt", "threads", "bias", "rows", "glu", "glu_n", "glu_rows", NULL};
    PyObject *w_obj, *x_obj, *bias_obj = Py_None;
    const char *fmt = "float32", *act = NULL;
    int threads = 1, part = 0, glu_rows = 0;
    long long glu_n = 0;
    if (ensure_numpy() < 0) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|siOizLp", kwlist, &w_obj, &x_obj, &fmt, &threads, &bias_obj, &part,
                                     &act, &glu_n, &glu_rows))
        return NULL;
    if (act && strcmp(act, "silu") && strcmp(act, "gelu") && strcmp(act, "gelu_tanh")) {
        PyErr_Format(PyExc_ValueError, "linear: glu is 'silu', 'gelu' or 'gelu_tanh', not '%s'", act);
        return NULL;
    }
    if (threads < 1 || threads > 256) {
        PyErr_SetString(PyExc_ValueError, "linear: threads in [1, 256]");
        return NULL;
    }
    if (part < 0 || part % CR_AMX_BF16_K) {
        PyErr_Format(PyExc_ValueError, "linear: rows is 0 or a positive multiple of %d", CR_AMX_BF16_K);
        return NULL;
    }
    PyArrayObject *x = (PyArrayObject *)PyArray_FROMANY(x_obj, NPY_FLOAT32, 2, 2,
                                                        NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_ENSURECOPY);
    if (!x) return NULL;
    cr_linear W;
    if (pack_weight(w_obj, fmt, &W) < 0) {
        Py_DECREF(x);
        return NULL;
    }
    if (PyArray_DIM(x, 1) != W.n_in) {
        PyErr_Format(PyExc_ValueError, "linear: x has %lld columns, the weight %lld", (long long)PyArray_DIM(x, 1),
                     (long long)W.n_in);
        cr_linear_free(&W);
        Py_DECREF(x);
        return NULL;
    }
    if (bias_obj != Py_None) {
        PyArrayObject *b = (PyArrayObject *)PyArray_FROMANY(bias_obj, NPY_FLOAT32, 1, 1,
                                                            NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED);
        if (b && PyArray_DIM(b, 0) != W.n_out)
            PyErr_Format(PyExc_ValueError, "linear: bias has %lld values, the layer %lld outputs",
                         (long long)PyArray_DIM(b, 0), (long long)W.n_out);
        else if (b && !(W.bias = cr_malloc_array((size_t)W.n_out, sizeof(float), "bias")))
            PyErr_NoMemory();
        else if (b)
            memcpy(W.bias, PyArray_DATA(b), (size_t)W.n_out * sizeof(float));
        Py_XDECREF(b);
        if (!W.bias) {
            cr_linear_free(&W);
            Py_DECREF(x);
            return NULL;
        }
    }
    if (act && glu_rows && !cr_linear_takes_bf16_rows(&W) && !cr_linear_takes_i8_rows(&W)) {
        PyErr_Format(PyExc_ValueError, "linear: glu_rows needs a bf16 or int8 format, not '%s'", fmt);
        cr_linear_free(&W);
        Py_DECREF(x);
        return NULL;
    }
    npy_intp dims[2] = {PyArray_DIM(x, 0), act ? (npy_intp)glu_n : (npy_intp)W.n_out};
    uint16_t *xb = NULL;
    cr_i8_rows xq = {0};
    if (part && cr_linear_takes_i8_rows(&W)) {
        if (put_i8_rows(&W, PyArray_DATA(x), dims[0], &xq) < 0) {
            cr_linear_free(&W);
            Py_DECREF(x);
            return NULL;
        }
    } else if (part) {
        if (!cr_linear_takes_bf16_rows(&W)) {
            PyErr_Format(PyExc_ValueError, "linear: fmt '%s' does not take its own input rows here", fmt);
            cr_linear_free(&W);
            Py_DECREF(x);
            return NULL;
        }
        size_t n = (size_t)((dims[0] + 15) / 16 * 16) * (size_t)cr_linear_row_elems(&W);
        if (!(xb = cr_aligned_alloc(n * sizeof(uint16_t), "bf16 rows"))) {
            cr_linear_free(&W);
            Py_DECREF(x);
            return PyErr_NoMemory();
        }
        for (size_t i = 0; i < n; i++) xb[i] = 0x7fc1; /* NaN: every element is written or never read */
        const float *xs = PyArray_DATA(x);
        for (int64_t r = 0; r < dims[0]; r++)
            for (int64_t k0 = 0; k0 < W.n_in; k0 += part)
                cr_linear_put_bf16(&W, xb, r, k0, xs + r * W.n_in + k0, W.n_in - k0 < part ? W.n_in - k0 : part);
    }
    PyArrayObject *y = (PyArrayObject *)PyArray_ZEROS(2, dims, NPY_FLOAT32, 0);
    cr_status st = CR_OK;
    if (y) {
        cr_exec ex = {.threads = threads, .abort = NULL};
        Py_BEGIN_ALLOW_THREADS
        cr_engine_lock();
        cr_linear_in in = {.x = xq.q || xb ? NULL : PyArray_DATA(x), .ldx = W.n_in, .xb = xb, .q8 = xq.q ? &xq : NULL};
        st = act ? apply_glu(&W, &in, dims[0], act, glu_n, glu_rows, PyArray_DATA(y), &ex)
                 : cr_linear_apply(&W, &in, dims[0], PyArray_DATA(y), W.n_out, &ex);
        cr_engine_unlock();
        Py_END_ALLOW_THREADS
    }
    free(xb);
    cr_linear_i8_rows_free(&xq);
    cr_linear_free(&W);
    Py_DECREF(x);
    if (!y) return NULL;
    if (st != CR_OK) {
        Py_DECREF(y);
        return cr_test_raise(st);
    }
    return (PyObject *)y;
}

#ifdef CR_X86
static float vnni_loop(int64_t iters) { return (float)cr_peak_vnni(iters); }
#endif

typedef struct peak_job {
    float (*loop)(int64_t);
    int64_t iters;
    float sink[256];
} peak_job;

/* Tasks are claimed dynamically, so a few large ones could all land on the first worker to wake:
 * split the loop into many slices so every worker stays busy for the whole measurement. */
#define PEAK_SLICES_PER_THREAD 64

static void peak_task(void *ctx, int64_t task, int worker) {
    peak_job *j = ctx;
    j->sink[worker] += j->loop(j->iters);
}

PyObject *cr_test_bench_peak(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"kind", "threads", "iters", NULL};
    const char *kind;
    int threads = 1;
    long long iters = 50000000; /* ~40 ms at 2 threads: long enough for every worker to join */
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|iL", kwlist, &kind, &threads, &iters)) return NULL;
    if (threads < 1 || threads > 256 || iters < 1) {
        PyErr_SetString(PyExc_ValueError, "bench_peak: threads in [1, 256], iters >= 1");
        return NULL;
    }
    peak_job j = {.loop = NULL, .iters = iters / PEAK_SLICES_PER_THREAD > 0 ? iters / PEAK_SLICES_PER_THREAD : 1};
    double flop_per_iter = 0;
    cr_isa have = cr_isa_detected();
#ifdef CR_X86
    if (strcmp(kind, "fma_f32") == 0 && have >= CR_ISA_AVX512) j.loop = cr_peak_fma_avx512, flop_per_iter = 384;
    else if (strcmp(kind, "dpbf16") == 0 && have >= CR_ISA_AVX512BF16) j.loop = cr_peak_dpbf16, flop_per_iter = 768;
    else if (strcmp(kind, "vnni") == 0 && have >= CR_ISA_AVX512VNNI) j.loop = vnni_loop, flop_per_iter = 1536;
    else if (strcmp(kind, "amx_bf16") == 0 && cr_amx_usable()) j.loop = cr_peak_amx_bf16, flop_per_iter = 65536;
    else if (strcmp(kind, "amx_int8") == 0 && cr_amx_usable()) j.loop = cr_peak_amx_i8, flop_per_iter = 131072;
#endif
    if (!j.loop) {
        PyErr_Format(PyExc_RuntimeError, "bench_peak: no %s probe for this CPU (kernels up to %s; AMX: %s)",
                     kind, cr_isa_level_name(have), cr_amx_state());
        return NULL;
    }
    double t;
    cr_status st;
    Py_BEGIN_ALLOW_THREADS
    cr_engine_lock();
    double t0 = cr_test_now_seconds();
    st = cr_pool_run(threads, (int64_t)threads * PEAK_SLICES_PER_THREAD, peak_task, &j, NULL);
    t = cr_test_now_seconds() - t0;
    cr_engine_unlock();
    Py_END_ALLOW_THREADS
    if (st) return raise_core();
    return PyFloat_FromDouble(flop_per_iter * (double)j.iters * PEAK_SLICES_PER_THREAD * threads / t * 1e-9);
}
