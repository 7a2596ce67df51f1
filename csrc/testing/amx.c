/* amx.c — crossrank._testing: the test hook for the AMX tile kernels (crossrank._core.amx_usable()
 * asks the permission they need):
 *
 *   amx_gemm(isa, kind, x, wp, guard="end", split=0) -> array [m, np CR_GEMM_NR]
 *       One call of gemm_bf16_amx (kind "bf16": x [m, 32 kb] uint16 bfloat16 bits, wp np padded
 *       panels stacked [np 16 kb, 2 CR_GEMM_NR] uint16; float32 result) or gemm_i8_amx (kind
 *       "int8": x [m, 64 kb] uint8, wp [np 16 kb, 4 CR_GEMM_NR] int8; int32 result) of one kernel
 *       table ("ref" is the scalar model, "amx" the tiles), m = 1..CR_AMX_ROWS, np =
 *       1..CR_AMX_PANELS; column p CR_GEMM_NR + j is column j of panel p; split > 0 sums K in calls
 *       of that many blocks, each after the first accumulating onto out. Tiles read whole 64-byte
 *       rows and no sanitizer sees them, so x (copied into the kernels' tile order and padded with
 *       zero rows to a multiple of 16, as the contract says), wp and out (rows of np panels and a
 *       16-element gap) each get their own mapping placed against a PROT_NONE
 *       page: guard="end" puts the last byte of each buffer just before the guard page (a read or
 *       write past it faults), guard="start" the first byte just after it. RuntimeError when the
 *       table cannot run here (the CPU, OS or permission; this asks for the permission). */
#include "testing.h"

#include <numpy/arrayobject.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/kernels.h"

static int ensure_numpy(void) {
    if (PyArray_API != NULL) return 0;
    return _import_array();
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

PyObject *cr_test_amx_gemm(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"isa", "kind", "x", "wp", "guard", "split", NULL};
    int split = 0;
    const char *isa, *kind, *guard = "end";
    PyObject *x_obj, *w_obj;
    if (ensure_numpy() < 0) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ssOO|si", kwlist, &isa, &kind, &x_obj, &w_obj, &guard, &split))
        return NULL;
    int bf16 = strcmp(kind, "bf16") == 0;
    if (!bf16 && strcmp(kind, "int8") != 0) {
        PyErr_Format(PyExc_ValueError, "amx_gemm: kind must be 'bf16' or 'int8', got '%s'", kind);
        return NULL;
    }
    int at_end = strcmp(guard, "end") == 0;
    if (!at_end && strcmp(guard, "start") != 0) {
        PyErr_Format(PyExc_ValueError, "amx_gemm: guard must be 'end' or 'start', got '%s'", guard);
        return NULL;
    }
    int level = -1;
    for (int i = 0; i < CR_ISA_COUNT; i++)
        if (strcmp(isa, cr_isa_level_name((cr_isa)i)) == 0) level = i;
    if (level < 0) {
        PyErr_Format(PyExc_ValueError, "amx_gemm: unknown ISA '%s'", isa);
        return NULL;
    }
    if (!cr_isa_runnable((cr_isa)level) || (level == CR_ISA_AMX && !cr_amx_usable())) {
        PyErr_Format(PyExc_RuntimeError, "amx_gemm: ISA %s cannot run here (detected %s; AMX: %s)", isa,
                     cr_isa_level_name(cr_isa_detected()), cr_amx_state());
        return NULL;
    }
    const cr_kernels *table = cr_kernels_level((cr_isa)level);
    int64_t elem = bf16 ? 2 : 1, block = bf16 ? CR_AMX_BF16_K : CR_AMX_I8_K, per_col = bf16 ? 2 : 4;
    PyArrayObject *x = (PyArrayObject *)PyArray_FROMANY(x_obj, bf16 ? NPY_UINT16 : NPY_UINT8, 2, 2,
                                                        NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED);
    PyArrayObject *w = x ? (PyArrayObject *)PyArray_FROMANY(w_obj, bf16 ? NPY_UINT16 : NPY_INT8, 2, 2,
                                                            NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED)
                         : NULL;
    if (!w) {
        Py_XDECREF(x);
        return NULL;
    }
    int64_t m = PyArray_DIM(x, 0), k = PyArray_DIM(x, 1), kb = k / block, m16 = (m + 15) / 16 * 16;
    int64_t np = kb > 0 ? PyArray_DIM(w, 0) / (16 * kb) : 0;
    /* out rows: np panels, then a gap of 16 elements (a stride that is not the panels' width) */
    int64_t ldo = np * CR_GEMM_NR + 16;
    PyObject *result = NULL;
    guarded gx = {0}, gw = {0}, go = {0};
    if (m < 1 || m > CR_AMX_ROWS || k < block || k % block || np < 1 || np > CR_AMX_PANELS ||
        PyArray_DIM(w, 0) != np * 16 * kb || PyArray_DIM(w, 1) != per_col * CR_GEMM_NR) {
        PyErr_Format(PyExc_ValueError,
                     "amx_gemm: needs x [m <= %d, %lld kb] and wp [np 16 kb, %lld] with 1 <= np <= %d panels; got "
                     "x [%lld, %lld], wp [%lld, %lld]",
                     CR_AMX_ROWS, (long long)block, (long long)(per_col * CR_GEMM_NR), CR_AMX_PANELS, (long long)m,
                     (long long)k, (long long)PyArray_DIM(w, 0), (long long)PyArray_DIM(w, 1));
        goto done;
    }
    /* x padded with zero rows to 16 ceil(m / 16), the rows the contract lets the kernel read */
    size_t xbytes = (size_t)(m16 * k * elem), wbytes = (size_t)(np * 16 * kb * per_col * CR_GEMM_NR * elem),
           obytes = (size_t)m16 * (size_t)ldo * 4;
    if (guarded_open(&gx, xbytes, at_end) < 0 || guarded_open(&gw, wbytes, at_end) < 0 ||
        guarded_open(&go, obytes, at_end) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    /* x into the tile order the kernels read (kernels.h), padded with zero rows */
    memset(gx.data, 0, xbytes);
    for (int64_t i = 0; i < m; i++)
        for (int64_t b = 0; b < kb; b++)
            memcpy(gx.data + (((i / 16) * kb + b) * 16 + i % 16) * block * elem,
                   (const char *)PyArray_DATA(x) + (i * k + b * block) * elem, (size_t)(block * elem));
    memcpy(gw.data, PyArray_DATA(w), wbytes);
    /* out: the rows the contract names, against the guard at its end (or start) */
    char *out = go.data;
    Py_BEGIN_ALLOW_THREADS
    /* K in calls of `split` blocks (all of it when 0), each after the first accumulating */
    int64_t step = split > 0 && split < kb ? split : kb;
    for (int64_t k0 = 0; k0 < kb; k0 += step) {
        int64_t n = kb - k0 < step ? kb - k0 : step;
        const char *xk = gx.data + k0 * 16 * block * elem, *wk = gw.data + k0 * 16 * per_col * CR_GEMM_NR * elem;
        if (bf16)
            table->gemm_bf16_amx((const uint16_t *)xk, m, (const uint16_t *)wk, n, kb, np, (float *)out, ldo, k0 > 0,
                                 NULL, 0);
        else
            table->gemm_i8_amx((const uint8_t *)xk, m, (const int8_t *)wk, n, kb, np, (int32_t *)out, ldo, k0 > 0,
                               NULL, 0);
    }
    Py_END_ALLOW_THREADS
    npy_intp dims[2] = {(npy_intp)m, (npy_intp)(np * CR_GEMM_NR)};
    PyArrayObject *res = (PyArrayObject *)PyArray_SimpleNew(2, dims, bf16 ? NPY_FLOAT32 : NPY_INT32);
    if (res) {
        char *dst = PyArray_DATA(res);
        for (int64_t i = 0; i < m; i++)
            for (int64_t p = 0; p < np; p++)
                memcpy(dst + (i * np + p) * CR_GEMM_NR * 4, out + (i * ldo + p * CR_GEMM_NR) * 4, CR_GEMM_NR * 4);
        result = (PyObject *)res;
    }
done:
    guarded_close(&gx);
    guarded_close(&gw);
    guarded_close(&go);
    Py_DECREF(x);
    Py_DECREF(w);
    return result;
}
