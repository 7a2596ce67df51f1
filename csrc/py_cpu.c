/* py_cpu.c — cpu_info() and amx_usable(): what the engine's dispatcher found and the AMX
 * permission, through crossrank.h. Compiled into crossrank._core and crossrank._testing: each
 * links its own copy of the engine library, and each reports (and asks for) its own copy's state. */
#include "pyglue.h"

PyObject *cr_py_cpu_info(PyObject *self, PyObject *unused) {
    cr_cpu_info info;
    cr_cpu_describe(&info);
    return Py_BuildValue("{s:s,s:s,s:s,s:s,s:s}", "isa", info.isa, "detected", info.detected, "features",
                         info.features, "vendor", info.vendor, "amx", info.amx);
}

PyObject *cr_py_amx_usable(PyObject *self, PyObject *unused) {
    int ok;
    Py_BEGIN_ALLOW_THREADS   /* the first call asks the kernel for the tile state */
    ok = cr_amx_usable();
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(ok);
}
