/* pyglue.h — what the CPython glue files share: the exception types and status mapping. */
#ifndef CR_PYGLUE_H
#define CR_PYGLUE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "crossrank.h"

/* crossrank._core exception types, created at module init:
 *   CrossrankError(Exception)
 *   CheckpointError(CrossrankError, ValueError)       malformed or mismatched checkpoint files
 *   UnsupportedModelError(CrossrankError, ValueError) well-formed, but not something we run
 *   Cancelled(CrossrankError)                         a run stopped through its abort flag */
extern PyObject *cr_exc_base;
extern PyObject *cr_exc_checkpoint;
extern PyObject *cr_exc_unsupported;
extern PyObject *cr_exc_cancelled;
extern PyObject *cr_exc_numerical;   /* NumericalError(CrossrankError, FloatingPointError): non-finite output */

/* Raises the Python exception that fits `status`, with cr_last_error() as message; returns NULL.
 * CR_E_IO -> OSError, CR_E_NOMEM -> MemoryError, CR_E_ARG -> ValueError,
 * CR_E_FORMAT/CR_E_SHAPE -> CheckpointError, CR_E_UNSUPPORTED -> UnsupportedModelError,
 * CR_E_ABORTED -> Cancelled. */
PyObject *cr_py_raise(cr_status status);

/* _core.inspect_checkpoint(model_dir: str) -> list[dict]: opens and validates the checkpoint
 * (single file or sharded) and returns one dict per tensor, sorted by name:
 * {"name": str, "dtype": "F32"|"BF16"|..., "shape": tuple[int, ...], "file": str}. */
PyObject *cr_py_inspect_checkpoint(PyObject *self, PyObject *args);

/* Test hooks for the vector kernels (py_kernels.c):
 * _core.isa_levels() -> list[str]: the kernel tables this CPU and OS can run ("ref", "avx2", ...).
 * _core._kernel(isa, name, *arrays, alpha=0.0, n=32): runs one kernel (or "gemm_f32_tile") of one ISA
 * table directly; _kernel(isa, "gemm_mr") gives the tile height. */
PyObject *cr_py_isa_levels(PyObject *self, PyObject *unused);
PyObject *cr_py_kernel(PyObject *self, PyObject *args, PyObject *kw);
/* Attention hooks (py_attention.c): _core._attention(q, k, v, positions, seq_start, ...) runs one layer's
 * attention; _core._exp_f32(isa, x) the exp kernel of one table. */
PyObject *cr_py_attention(PyObject *self, PyObject *args, PyObject *kw);
PyObject *cr_py_exp_f32(PyObject *self, PyObject *args);
PyObject *cr_py_bench_linear(PyObject *self, PyObject *args, PyObject *kw);
PyObject *cr_py_linear(PyObject *self, PyObject *args, PyObject *kw);
PyObject *cr_py_bench_peak(PyObject *self, PyObject *args, PyObject *kw);
/* AMX hooks (py_amx.c): _core.amx_usable() asks the permission; _core._amx_gemm(isa, kind, x, wp, n=,
 * guard=) runs one AMX GEMM call of one table on operands placed against PROT_NONE pages. */
PyObject *cr_py_amx_usable(PyObject *self, PyObject *unused);
PyObject *cr_py_amx_gemm(PyObject *self, PyObject *args, PyObject *kw);

#endif
