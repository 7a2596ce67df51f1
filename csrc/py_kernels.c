/* py_kernels.c — test hooks for the vector kernels:
 *
 *   _core.isa_levels() -> list[str]
 *       The kernel tables this CPU and OS can run, lowest first ("ref", then "avx2", "avx512").
 *       Based on detection only: CROSSRANK_ISA (which caps the active table) does not change it.
 *
 *   _core._kernel(isa, name, *arrays, alpha=0.0)
 *       Runs one kernel of one ISA table directly, bypassing the active table, so every table
 *       can be compared with the reference in one process:
 *         dot_f32(a, b) -> float         sumsq_f32(x) -> float
 *         axpy_f32(x, y, alpha=) -> y + alpha * x as a new array (the input y is not modified)
 *         bf16_to_f32(u16) -> float32 array     f16_to_f32(u16) -> float32 array
 *       float inputs must convert safely to contiguous 1-D float32 arrays; 16-bit sources to
 *       contiguous 1-D uint16 arrays, which may be misaligned (the kernels read 16-bit sources
 *       with unaligned loads, as from a memory-mapped checkpoint, and this lets tests check that).
 *       Unknown ISA or kernel names raise ValueError; a table the CPU or OS cannot run raises
 *       RuntimeError instead of executing it (which would die of SIGILL).
 *       Kernels that write (axpy_f32, the conversions) write into a scratch buffer with guard
 *       zones on both sides, at the same offset modulo 64 bytes as the first input's data (so an
 *       unaligned input view also gets an unaligned destination); a write outside the n
 *       destination elements raises RuntimeError. */
#include "pyglue.h"

#include <numpy/arrayobject.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

/* This file has its own (static) NumPy API table: import it on first use. */
static int ensure_numpy(void) {
    if (PyArray_API != NULL) return 0;
    return _import_array();
}

typedef enum { K_DOT, K_AXPY, K_SUMSQ, K_BF16, K_F16 } kernel_id;

static const struct {
    const char *name;
    kernel_id id;
    int n_arrays;
} kernel_list[] = {
    {"dot_f32", K_DOT, 2},        {"axpy_f32", K_AXPY, 2},      {"sumsq_f32", K_SUMSQ, 1},
    {"bf16_to_f32", K_BF16, 1},   {"f16_to_f32", K_F16, 1},
};

static const struct {
    const char *name;
    cr_isa level;
    const cr_kernels *(*table)(void);
} isa_list[] = {
    {"ref", CR_ISA_REF, cr_kernels_ref},
    {"avx2", CR_ISA_AVX2, cr_kernels_avx2},
    {"avx512", CR_ISA_AVX512, cr_kernels_avx512},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* The table for isa_list[i] when this CPU and OS can run it and it was compiled in, else NULL. */
static const cr_kernels *runnable_table(size_t i) {
    if (cr_isa_detected() < isa_list[i].level) return NULL;
    return isa_list[i].table();
}

PyObject *cr_py_isa_levels(PyObject *self, PyObject *unused) {
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
            PyErr_Format(et, "_kernel: %s must be a 1-D %s array: %S", what,
                         type == NPY_FLOAT32 ? "float32" : "uint16", ev ? ev : Py_None);
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

/* 0 when both guard zones are intact. */
static int scratch_check(const scratch *s, int64_t n) {
    for (size_t i = 0; i < s->total; i++) {
        if (i == s->lead) i += (size_t)n;
        if (i >= s->total) break;
        if (memcmp(&s->buf[i], &guard_bits, sizeof guard_bits) != 0) return -1;
    }
    return 0;
}

PyObject *cr_py_kernel(PyObject *self, PyObject *args, PyObject *kw) {
    if (ensure_numpy() < 0) return NULL;
    Py_ssize_t nargs = PyTuple_GET_SIZE(args);
    if (nargs < 2) {
        PyErr_SetString(PyExc_TypeError, "_kernel(isa, name, *arrays, alpha=0.0): isa and name are required");
        return NULL;
    }
    PyObject *isa_obj = PyTuple_GET_ITEM(args, 0), *name_obj = PyTuple_GET_ITEM(args, 1);
    if (!PyUnicode_Check(isa_obj) || !PyUnicode_Check(name_obj)) {
        PyErr_SetString(PyExc_TypeError, "_kernel: isa and name must be str");
        return NULL;
    }
    const char *isa = PyUnicode_AsUTF8(isa_obj), *name = PyUnicode_AsUTF8(name_obj);
    if (!isa || !name) return NULL;

    double alpha = 0.0;
    int have_alpha = 0;
    if (kw && PyDict_GET_SIZE(kw) > 0) {
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        while (PyDict_Next(kw, &pos, &key, &value)) {
            if (!PyUnicode_Check(key) || PyUnicode_CompareWithASCIIString(key, "alpha") != 0) {
                PyErr_Format(PyExc_TypeError, "_kernel: unexpected keyword argument %R", key);
                return NULL;
            }
            alpha = PyFloat_AsDouble(value);
            if (alpha == -1.0 && PyErr_Occurred()) return NULL;
            have_alpha = 1;
        }
    }

    size_t k = COUNT(kernel_list);
    for (size_t i = 0; i < COUNT(kernel_list); i++)
        if (strcmp(name, kernel_list[i].name) == 0) k = i;
    if (k == COUNT(kernel_list)) {
        PyErr_Format(PyExc_ValueError,
                     "_kernel: unknown kernel %R (dot_f32, axpy_f32, sumsq_f32, bf16_to_f32, f16_to_f32)",
                     name_obj);
        return NULL;
    }
    size_t t = COUNT(isa_list);
    for (size_t i = 0; i < COUNT(isa_list); i++)
        if (strcmp(isa, isa_list[i].name) == 0) t = i;
    if (t == COUNT(isa_list)) {
        PyErr_Format(PyExc_ValueError, "_kernel: unknown ISA %R (kernel tables: ref, avx2, avx512)", isa_obj);
        return NULL;
    }
    const cr_kernels *table = runnable_table(t);
    if (!table) {
        PyErr_Format(PyExc_RuntimeError,
                     "_kernel: ISA %s is not supported here (this CPU and OS run up to %s%s)", isa,
                     cr_isa_level_name(cr_isa_detected()),
                     isa_list[t].table() ? "" : "; its kernels are not compiled into this build");
        return NULL;
    }

    kernel_id id = kernel_list[k].id;
    if (nargs - 2 != kernel_list[k].n_arrays) {
        PyErr_Format(PyExc_TypeError, "_kernel: %s takes %d array(s), got %zd", name,
                     kernel_list[k].n_arrays, nargs - 2);
        return NULL;
    }
    if (have_alpha && id != K_AXPY) {
        PyErr_Format(PyExc_TypeError, "_kernel: alpha applies to axpy_f32 only, not %s", name);
        return NULL;
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
            PyErr_Format(PyExc_ValueError, "_kernel: %s needs arrays of equal length, got %lld and %lld",
                         name, (long long)n, (long long)PyArray_DIM(b, 0));
            goto done;
        }
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
    case K_AXPY:
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
        if (id == K_AXPY) {
            /* y + alpha * x into the scratch copy of y: the caller's y stays as it was. */
            if (n) memcpy(sc.dst, PyArray_DATA(b), (size_t)n * sizeof(float));
            table->axpy_f32(fa, src, sc.dst, n);
        } else if (id == K_BF16) {
            table->bf16_to_f32(src, sc.dst, n);
        } else {
            table->f16_to_f32(src, sc.dst, n);
        }
        Py_END_ALLOW_THREADS
        if (scratch_check(&sc, n) < 0) {
            PyErr_Format(PyExc_RuntimeError, "_kernel: %s %s wrote outside its %lld destination elements",
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
