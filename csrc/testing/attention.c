/* attention.c — crossrank._testing: test and benchmark hooks for attention:
 *
 *   attention(q, k, v, positions, seq_start, *, window=0, prefix_k=None, prefix_v=None,
 *                    prefix_lens=None, last_only=False, scale=None, threads=1, isa=None,
 *                    bf16_scores=False, tiles=False, reps=0) -> float32 array
 *       q [T, NH, D], k and v [T, NKV, D] float32; positions [T] int32; seq_start [S+1] int64
 *       (0 .. T, increasing). With prefix_k/prefix_v [P, NKV, D] every sequence s continues the
 *       first prefix_lens[s] (default P) of those keys, as a prefix handle gives them. Returns
 *       [T, NH, D], or [S, NH, D] with last_only. scale defaults to D^-0.5. isa names a kernel
 *       table ("ref", "avx2", ...) this CPU runs; None uses the active one. bf16_scores computes
 *       QK^T from bfloat16-rounded q and k, as bf16 and int8 models do; tiles (with bf16_scores)
 *       takes the tile path, QK^T and P V through the table's gemm_bf16_amx, as those models do
 *       on AMX (on a table below amx: the scalar model of the tiles). reps > 0 times that many
 *       further calls after the first (wall clock; the tile path's staging buffer kept from call
 *       to call, as the forward keeps it) and returns (output, best seconds).
 *
 *   exp_f32(isa, x) -> float32 array: the exp_f32 kernel of one ISA table (guarded
 *       destination: a write outside the n outputs raises RuntimeError). */
#include "testing.h"

#include <numpy/arrayobject.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "error.h"
#include "kernels/kernels.h"
#include "model.h"
#include "threads.h"

static int ensure_numpy(void) {
    if (PyArray_API != NULL) return 0;
    return _import_array();
}

/* The table named `name` when this build has it and this CPU and OS run it; else NULL with an
 * exception set. */
static const cr_kernels *table_named(const char *name) {
    for (int i = 0; i < CR_ISA_COUNT; i++) {
        if (strcmp(name, cr_isa_level_name((cr_isa)i)) != 0) continue;
        const cr_kernels *t = cr_kernels_level((cr_isa)i);
        if (!cr_isa_runnable((cr_isa)i)) {
            PyErr_Format(PyExc_RuntimeError, "ISA %s is not supported here (this CPU and OS run up to %s)", name,
                         cr_isa_level_name(cr_isa_detected()));
            return NULL;
        }
        return t;
    }
    PyErr_Format(PyExc_ValueError, "unknown ISA %s (ref, avx2, avxvnni, avx512, avx512vnni, avx512bf16)", name);
    return NULL;
}

static PyArrayObject *as_array(PyObject *obj, int type, int ndim, const char *what) {
    PyObject *arr = PyArray_FROMANY(obj, type, ndim, ndim, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED);
    if (!arr && (PyErr_ExceptionMatches(PyExc_ValueError) || PyErr_ExceptionMatches(PyExc_TypeError))) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "attention: %s must be a %d-D %s array", what, ndim,
                     type == NPY_FLOAT32 ? "float32" : type == NPY_INT32 ? "int32" : "int64");
    }
    return (PyArrayObject *)arr;
}

/* ---- attention --------------------------------------------------------------------------------- */

PyObject *cr_test_attention(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"q", "k", "v", "positions", "seq_start", "window", "prefix_k", "prefix_v",
                             "prefix_lens", "last_only", "scale", "threads", "isa", "bf16_scores", "tiles", "reps", NULL};
    PyObject *q_obj, *k_obj, *v_obj, *pos_obj, *ss_obj, *pk_obj = Py_None, *pv_obj = Py_None, *pl_obj = Py_None,
             *scale_obj = Py_None;
    int window = 0, last_only = 0, threads = 1, bf16_scores = 0, tiles = 0, reps = 0;
    const char *isa = NULL;
    if (ensure_numpy() < 0) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOO|$iOOOpOizppi", kwlist, &q_obj, &k_obj, &v_obj, &pos_obj,
                                     &ss_obj, &window, &pk_obj, &pv_obj, &pl_obj, &last_only, &scale_obj,
                                     &threads, &isa, &bf16_scores, &tiles, &reps))
        return NULL;
    if (threads < 1 || threads > 256 || window < 0 || reps < 0)
        return PyErr_Format(PyExc_ValueError, "attention: threads in [1, 256], window >= 0 and reps >= 0 required");
    const cr_kernels *K = isa ? table_named(isa) : cr_kern;
    if (!K) return NULL;
    if (tiles && K->isa == CR_ISA_AMX && !cr_amx_usable())
        return PyErr_Format(PyExc_ValueError, "attention: tiles on the amx table, which this process may not use (%s)",
                            cr_amx_state());

    PyArrayObject *q = NULL, *k = NULL, *v = NULL, *pos = NULL, *ss = NULL, *pk = NULL, *pv = NULL, *pl = NULL;
    PyArrayObject *out = NULL;
    float *qkv = NULL, *scratch = NULL;
    int64_t *plen = NULL;
    const cr_prefix **pref = NULL;
    PyObject *result = NULL;
    if (!(q = as_array(q_obj, NPY_FLOAT32, 3, "q")) || !(k = as_array(k_obj, NPY_FLOAT32, 3, "k")) ||
        !(v = as_array(v_obj, NPY_FLOAT32, 3, "v")) || !(pos = as_array(pos_obj, NPY_INT32, 1, "positions")) ||
        !(ss = as_array(ss_obj, NPY_INT64, 1, "seq_start")))
        goto done;
    int64_t T = PyArray_DIM(q, 0), NH = PyArray_DIM(q, 1), D = PyArray_DIM(q, 2), NKV = PyArray_DIM(k, 1);
    int64_t S = PyArray_DIM(ss, 0) - 1;
    if (T < 1 || NH < 1 || D < 1 || NKV < 1 || NH % NKV || PyArray_DIM(k, 0) != T || PyArray_DIM(k, 2) != D ||
        !PyArray_SAMESHAPE(k, v) || PyArray_DIM(pos, 0) != T || S < 1) {
        PyErr_SetString(PyExc_ValueError, "attention: need q [T, NH, D], k and v [T, NKV, D] with NKV dividing NH, "
                                          "positions [T], seq_start [S+1], T >= 1, S >= 1");
        goto done;
    }
    const int64_t *starts = PyArray_DATA(ss);
    const int32_t *positions = PyArray_DATA(pos);
    if (starts[0] != 0 || starts[S] != T) {
        PyErr_SetString(PyExc_ValueError, "attention: seq_start must run from 0 to T");
        goto done;
    }
    for (int64_t s = 0; s < S; s++)
        if (starts[s + 1] <= starts[s]) {
            PyErr_SetString(PyExc_ValueError, "attention: seq_start must increase (no empty sequence)");
            goto done;
        }
    for (int64_t t = 0; t < T; t++)
        if (positions[t] < 0) {
            PyErr_SetString(PyExc_ValueError, "attention: negative position");
            goto done;
        }
    double scale = 1.0 / sqrt((double)D);
    if (scale_obj != Py_None) {
        scale = PyFloat_AsDouble(scale_obj);
        if (scale == -1.0 && PyErr_Occurred()) goto done;
    }

    cr_prefix pf = {0};
    if ((pk_obj == Py_None) != (pv_obj == Py_None)) {
        PyErr_SetString(PyExc_ValueError, "attention: give both prefix_k and prefix_v, or neither");
        goto done;
    }
    if (pk_obj != Py_None) {
        if (!(pk = as_array(pk_obj, NPY_FLOAT32, 3, "prefix_k")) || !(pv = as_array(pv_obj, NPY_FLOAT32, 3, "prefix_v")))
            goto done;
        int64_t P = PyArray_DIM(pk, 0);
        if (P < 1 || PyArray_DIM(pk, 1) != NKV || PyArray_DIM(pk, 2) != D || !PyArray_SAMESHAPE(pk, pv)) {
            PyErr_SetString(PyExc_ValueError, "attention: prefix_k and prefix_v must be [P, NKV, D], P >= 1");
            goto done;
        }
        plen = malloc((size_t)S * sizeof(int64_t));
        pref = malloc((size_t)S * sizeof(*pref));
        if (!plen || !pref) {
            PyErr_NoMemory();
            goto done;
        }
        if (pl_obj != Py_None) {
            if (!(pl = as_array(pl_obj, NPY_INT64, 1, "prefix_lens"))) goto done;
            if (PyArray_DIM(pl, 0) != S) {
                PyErr_SetString(PyExc_ValueError, "attention: prefix_lens needs one entry per sequence");
                goto done;
            }
        }
        for (int64_t s = 0; s < S; s++) {
            plen[s] = pl ? ((const int64_t *)PyArray_DATA(pl))[s] : P;
            if (plen[s] < 0 || plen[s] > P) {
                PyErr_SetString(PyExc_ValueError, "attention: prefix_lens must be within [0, P]");
                goto done;
            }
            pref[s] = &pf;
        }
        pf.len = P;
        pf.kv_dim = NKV * D;
        pf.n_layers = 1;
        pf.k = PyArray_DATA(pk);
        pf.v = PyArray_DATA(pv);
    } else if (pl_obj != Py_None) {
        PyErr_SetString(PyExc_ValueError, "attention: prefix_lens needs prefix_k and prefix_v");
        goto done;
    }

    int64_t QKVD = (NH + 2 * NKV) * D, NHD = NH * D;
    qkv = malloc((size_t)(T * QKVD) * sizeof(float));
    int64_t stride = cr_attention_scratch_floats(NH, NKV, D);
    scratch = aligned_alloc(64, (size_t)(threads * stride) * sizeof(float));
    npy_intp dims[3] = {(npy_intp)(last_only ? S : T), (npy_intp)NH, (npy_intp)D};
    out = (PyArrayObject *)PyArray_SimpleNew(3, dims, NPY_FLOAT32);
    if (!qkv || !scratch || !out) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto done;
    }
    const float *qd = PyArray_DATA(q), *kd = PyArray_DATA(k), *vd = PyArray_DATA(v);
    for (int64_t t = 0; t < T; t++) {
        memcpy(qkv + t * QKVD, qd + t * NHD, (size_t)NHD * sizeof(float));
        memcpy(qkv + t * QKVD + NHD, kd + t * NKV * D, (size_t)(NKV * D) * sizeof(float));
        memcpy(qkv + t * QKVD + NHD + NKV * D, vd + t * NKV * D, (size_t)(NKV * D) * sizeof(float));
    }
    float *o = PyArray_DATA(out);
    for (npy_intp i = 0; i < dims[0] * dims[1] * dims[2]; i++) o[i] = NAN; /* unwritten rows show */
    cr_attn_args aa = {
        .qkv = qkv, .qkv_stride = QKVD, .n_heads = NH, .n_kv_heads = NKV, .head_dim = D,
        .scale = (float)scale, .pos = positions, .n_seqs = S, .seq_start = starts,
        .prefix = pref, .prefix_len = plen, .layer = 0, .window = window, .last_only = last_only,
        .out = o, .out_stride = NHD, .scratch = scratch, .scratch_stride = stride, .threads = threads,
        .kern = K, .bf16_scores = bf16_scores, .tiles = tiles,
    };
    cr_status st;
    cr_buf stage = {0};
    double best = INFINITY;
    if (reps) aa.stage_buf = &stage;
    Py_BEGIN_ALLOW_THREADS
    cr_engine_lock();
    st = cr_attention(&aa);
    for (int r = 0; r < reps && st == CR_OK; r++) {
        double t0 = cr_test_now_seconds();
        st = cr_attention(&aa);
        double t = cr_test_now_seconds() - t0;
        best = t < best ? t : best;
    }
    cr_engine_unlock();
    Py_END_ALLOW_THREADS
    cr_buf_free(&stage);
    if (st) {
        cr_test_raise(st);
        goto done;
    }
    result = reps ? Py_BuildValue("(Od)", (PyObject *)out, best) : (PyObject *)out;
    if (!reps) out = NULL;
done:
    Py_XDECREF(q);
    Py_XDECREF(k);
    Py_XDECREF(v);
    Py_XDECREF(pos);
    Py_XDECREF(ss);
    Py_XDECREF(pk);
    Py_XDECREF(pv);
    Py_XDECREF(pl);
    Py_XDECREF(out);
    free(qkv);
    free(scratch);
    free(plen);
    free(pref);
    return result;
}

/* ---- exp_f32 ----------------------------------------------------------------------------------- */

PyObject *cr_test_exp_f32(PyObject *self, PyObject *args) {
    const char *isa;
    PyObject *x_obj;
    if (ensure_numpy() < 0 || !PyArg_ParseTuple(args, "sO", &isa, &x_obj)) return NULL;
    const cr_kernels *K = table_named(isa);
    if (!K) return NULL;
    PyArrayObject *x = as_array(x_obj, NPY_FLOAT32, 1, "x");
    if (!x) return NULL;
    int64_t n = PyArray_DIM(x, 0);
    enum { G = 64 };
    const uint32_t guard = 0x7fa5a5a5u;
    float *buf = malloc((size_t)(n + 2 * G) * sizeof(float));
    PyObject *result = NULL;
    if (!buf) {
        Py_DECREF(x);
        return PyErr_NoMemory();
    }
    for (int64_t i = 0; i < n + 2 * G; i++) memcpy(buf + i, &guard, 4);
    const float *src = PyArray_DATA(x);
    Py_BEGIN_ALLOW_THREADS
    K->exp_f32(src, buf + G, n);
    Py_END_ALLOW_THREADS
    int intact = 1;
    for (int64_t i = 0; i < G; i++)
        intact &= memcmp(buf + i, &guard, 4) == 0 && memcmp(buf + G + n + i, &guard, 4) == 0;
    if (!intact) {
        PyErr_Format(PyExc_RuntimeError, "exp_f32: %s wrote outside its %lld outputs", isa, (long long)n);
    } else {
        npy_intp dims[1] = {(npy_intp)n};
        PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_FLOAT32);
        if (out) {
            if (n) memcpy(PyArray_DATA(out), buf + G, (size_t)n * sizeof(float));
            result = (PyObject *)out;
        }
    }
    free(buf);
    Py_DECREF(x);
    return result;
}
