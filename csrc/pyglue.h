/* pyglue.h — what the CPython glue files share: the exception types and status mapping. */
#ifndef CR_PYGLUE_H
#define CR_PYGLUE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "crossrank.h"

/* crossrank._core exception types, bound at module init to the classes of crossrank/errors.py:
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

/* cpu_info() -> dict and amx_usable() -> bool (py_cpu.c): the dispatcher's state and the AMX
 * permission of the engine the module links. Compiled into _core and _testing alike. */
PyObject *cr_py_cpu_info(PyObject *self, PyObject *unused);
PyObject *cr_py_amx_usable(PyObject *self, PyObject *unused);
#define CR_PY_CPU_INFO_DOC                                                                                  \
    "cpu_info() -> {'isa': kernels in use, 'detected': best the CPU+OS allow, 'features': 'avx2,...', "     \
    "'vendor': CPUID vendor, 'amx': 'usable' | 'not asked yet' | why not}"
#define CR_PY_AMX_USABLE_DOC \
    "amx_usable() -> bool: asks for the AMX permission once per process; whether the tile kernels run."

/* _core.inspect_checkpoint(model_dir: str) -> list[dict]: opens and validates the checkpoint
 * (single file or sharded) and returns one dict per tensor, sorted by name:
 * {"name": str, "dtype": "F32"|"BF16"|..., "shape": tuple[int, ...], "file": str}. */
PyObject *cr_py_inspect_checkpoint(PyObject *self, PyObject *args);

#endif
