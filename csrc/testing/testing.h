/* testing.h — crossrank._testing: the test and benchmark hooks, a separate extension module built
 * beside crossrank._core (as NumPy keeps _multiarray_tests beside _multiarray_umath). Unlike
 * _core, which binds only the public API of crossrank.h, these hooks reach into the engine's
 * internals (kernel tables, attention, packed linear layers) to test them one by one. Not public
 * API: the names and arguments change with the engine.
 *
 * It links its own copy of the engine library, so the dispatcher's state (the kernel table chosen
 * at import, the AMX permission it asked for, the worker pool, the engine lock) is this module's
 * own: _testing.cpu_info() and _testing.amx_usable() report and ask for this copy, as
 * _core.cpu_info() does for the engine that scores. */
#ifndef CR_TESTING_H
#define CR_TESTING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "crossrank.h"

/* Raises the Python exception that fits `status`, with cr_last_error() as message; returns NULL:
 * CR_E_ARG -> ValueError, CR_E_NOMEM -> MemoryError, anything else -> RuntimeError. */
PyObject *cr_test_raise(cr_status status);

/* bench.c: CLOCK_MONOTONIC in seconds, for the hooks that time their calls. */
double cr_test_now_seconds(void);

/* kernels.c: isa_levels() and kernel(isa, name, *arrays, alpha=, n=). */
PyObject *cr_test_isa_levels(PyObject *self, PyObject *unused);
PyObject *cr_test_kernel(PyObject *self, PyObject *args, PyObject *kw);
/* attention.c: attention(q, k, v, positions, seq_start, ...) and exp_f32(isa, x). */
PyObject *cr_test_attention(PyObject *self, PyObject *args, PyObject *kw);
PyObject *cr_test_exp_f32(PyObject *self, PyObject *args);
/* bench.c: linear(w, x, ...), bench_linear(w, m, ...), bench_peak(kind, ...). */
PyObject *cr_test_linear(PyObject *self, PyObject *args, PyObject *kw);
PyObject *cr_test_bench_linear(PyObject *self, PyObject *args, PyObject *kw);
PyObject *cr_test_bench_peak(PyObject *self, PyObject *args, PyObject *kw);
/* pool.c: pool_stress(threads, ...). */
PyObject *cr_test_pool_stress(PyObject *self, PyObject *args, PyObject *kw);
/* amx.c: amx_gemm(isa, kind, x, wp, guard=). */
PyObject *cr_test_amx_gemm(PyObject *self, PyObject *args, PyObject *kw);

#endif
