/* py_amx.c — test hooks for the AMX tile kernels and the permission (not public API):
 *
 *   _core.amx_usable() -> bool
 *       Asks for the AMX permission (once per process, as the first bf16 / int8 load does) and
 *       says whether the tile kernels may run; cpu_info()["amx"] then says why not.
 *   _core._amx_gemm(isa, kind, x, wp, n=32, guard="end") -> array [m, n]
 *       One call of gemm_bf16_amx (kind "bf16": x [m, 32 kb] uint16 bfloat16 bits, wp one padded
 *       panel [16 kb, 2 CR_GEMM_NR] uint16; float32 result) or gemm_i8_amx (kind "int8": x
 *       [m, 64 kb] uint8, wp [16 kb, 4 CR_GEMM_NR] int8; int32 result) of one kernel table ("ref"
 *       is the scalar model, "amx" the tiles), m = 1..32, n = 1..CR_GEMM_NR. Tiles read whole
 *       64-byte rows and no sanitizer sees them, so x, wp and y each get their own mapping placed
 *       against a PROT_NONE page: guard="end" puts the last byte of each buffer just before the
 *       guard page (a read or write past it faults), guard="start" the first byte just after it.
 *       RuntimeError when the table cannot run here (the CPU, OS or permission). */
#include "pyglue.h"

#include <numpy/arrayobject.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/kernels.h"

static int ensure_numpy(void) {
    if (PyArray_API != NULL) return 0;
    return _import_array();
}

PyObject *cr_py_amx_usable(PyObject *self, PyObject *unused) {
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = cr_amx_usable();
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(ok);
}

/* A buffer of `bytes` inside its own mapping with a PROT_NONE page right after its end (at_end)
 * or right before its start. */
typedef struct guarded {
    char *map;
    size_t map_len;
    char *data;
} guarded;

static int guarded_open(guarded *g, size_t bytes, int at_end) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t body = (bytes + page - 1) / page * page;
    if (body == 0) body = page;
    g->map_len = body + 2 * page;
    g->map = mmap(NULL, g->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g->map == MAP_FAILED) {
        g->map = NULL;
        return -1;
    }
    /* guard pages on both sides; the buffer touches the one its mode names */
    if (mprotect(g->map, page, PROT_NONE) != 0 || mprotect(g->map + page + body, page, PROT_NONE) != 0) {
        munmap(g->map, g->map_len);
        g->map = NULL;
        return -1;
    }
    g->data = at_end ? g->map + page + body - bytes : g->map + page;
    return 0;
}

static void guarded_close(guarded *g) {
    if (g->map) munmap(g->map, g->map_len);
    g->map = NULL;
}

PyObject *cr_py_amx_gemm(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"isa", "kind", "x", "wp", "n", "guard", NULL};
    const char *isa, *kind, *guard = "end";
    PyObject *x_obj, *w_obj;
    int n = CR_GEMM_NR;
    if (ensure_numpy() < 0) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ssOO|is", kwlist, &isa, &kind, &x_obj, &w_obj, &n, &guard))
        return NULL;
    int bf16 = strcmp(kind, "bf16") == 0;
    if (!bf16 && strcmp(kind, "int8") != 0) {
        PyErr_Format(PyExc_ValueError, "_amx_gemm: kind must be 'bf16' or 'int8', got '%s'", kind);
        return NULL;
    }
    int at_end = strcmp(guard, "end") == 0;
    if (!at_end && strcmp(guard, "start") != 0) {
        PyErr_Format(PyExc_ValueError, "_amx_gemm: guard must be 'end' or 'start', got '%s'", guard);
        return NULL;
    }
    if (n < 1 || n > CR_GEMM_NR) {
        PyErr_Format(PyExc_ValueError, "_amx_gemm: n must be 1..%d, got %d", CR_GEMM_NR, n);
        return NULL;
    }
    int level = -1;
    for (int i = 0; i < CR_ISA_COUNT; i++)
        if (strcmp(isa, cr_isa_level_name((cr_isa)i)) == 0) level = i;
    if (level < 0) {
        PyErr_Format(PyExc_ValueError, "_amx_gemm: unknown ISA '%s'", isa);
        return NULL;
    }
    if (!cr_isa_runnable((cr_isa)level) || (level == CR_ISA_AMX && !cr_amx_usable())) {
        PyErr_Format(PyExc_RuntimeError, "_amx_gemm: ISA %s cannot run here (detected %s; AMX: %s)", isa,
                     cr_isa_level_name(cr_isa_detected()), cr_amx_state());
        return NULL;
    }
    const cr_kernels *table = cr_kernels_level((cr_isa)level);
    int elem = bf16 ? 2 : 1, block = bf16 ? CR_AMX_BF16_K : CR_AMX_I8_K, per_col = bf16 ? 2 : 4;
    PyArrayObject *x = (PyArrayObject *)PyArray_FROMANY(x_obj, bf16 ? NPY_UINT16 : NPY_UINT8, 2, 2,
                                                        NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED);
    PyArrayObject *w = x ? (PyArrayObject *)PyArray_FROMANY(w_obj, bf16 ? NPY_UINT16 : NPY_INT8, 2, 2,
                                                            NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED)
                         : NULL;
    if (!w) {
        Py_XDECREF(x);
        return NULL;
    }
    int64_t m = PyArray_DIM(x, 0), k = PyArray_DIM(x, 1), kb = k / block;
    PyObject *result = NULL;
    guarded gx = {0}, gw = {0}, gy = {0};
    if (m < 1 || m > table->gemm_amx_mr || k % block || PyArray_DIM(w, 0) != 16 * kb ||
        PyArray_DIM(w, 1) != per_col * CR_GEMM_NR) {
        PyErr_Format(PyExc_ValueError,
                     "_amx_gemm: needs x [m <= %d, %d kb] and wp [16 kb, %d]; got x [%lld, %lld], wp [%lld, %lld]",
                     table->gemm_amx_mr, block, per_col * CR_GEMM_NR, (long long)m, (long long)k,
                     (long long)PyArray_DIM(w, 0), (long long)PyArray_DIM(w, 1));
        goto done;
    }
    size_t xbytes = (size_t)(m * k * elem), wbytes = (size_t)(16 * kb * per_col * CR_GEMM_NR * elem),
           ybytes = (size_t)m * (size_t)n * 4;
    if (guarded_open(&gx, xbytes, at_end) < 0 || guarded_open(&gw, wbytes, at_end) < 0 ||
        guarded_open(&gy, ybytes, at_end) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    memcpy(gx.data, PyArray_DATA(x), xbytes);
    memcpy(gw.data, PyArray_DATA(w), wbytes);
    Py_BEGIN_ALLOW_THREADS
    if (bf16)
        table->gemm_bf16_amx((const uint16_t *)gx.data, k, m, (const uint16_t *)gw.data, kb, (float *)gy.data, n, n);
    else
        table->gemm_i8_amx((const uint8_t *)gx.data, k, m, (const int8_t *)gw.data, kb, (int32_t *)gy.data, n, n);
    Py_END_ALLOW_THREADS
    npy_intp dims[2] = {(npy_intp)m, (npy_intp)n};
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(2, dims, bf16 ? NPY_FLOAT32 : NPY_INT32);
    if (out) {
        memcpy(PyArray_DATA(out), gy.data, ybytes);
        result = (PyObject *)out;
    }
done:
    guarded_close(&gx);
    guarded_close(&gw);
    guarded_close(&gy);
    Py_DECREF(x);
    Py_DECREF(w);
    return result;
}
