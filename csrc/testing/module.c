/* module.c — crossrank._testing: the method table of the test and benchmark hooks (testing.h).
 * Each hook's contract is at the top of the file that implements it. */
#include "testing.h"

#include <numpy/arrayobject.h>

#include "pyglue.h"

PyObject *cr_test_raise(cr_status status) {
    const char *msg = cr_last_error();
    if (!msg || !*msg) msg = "crossrank: unknown error";
    PyErr_SetString(status == CR_E_ARG     ? PyExc_ValueError
                    : status == CR_E_NOMEM ? PyExc_MemoryError
                                           : PyExc_RuntimeError,
                    msg);
    return NULL;
}

#define KW(f) (PyCFunction)(void (*)(void))(f), METH_VARARGS | METH_KEYWORDS

static PyMethodDef methods[] = {
    {"cpu_info", cr_py_cpu_info, METH_NOARGS, CR_PY_CPU_INFO_DOC " (this module's copy of the engine)"},
    {"amx_usable", cr_py_amx_usable, METH_NOARGS, CR_PY_AMX_USABLE_DOC " (this module's copy of the engine)"},
    {"isa_levels", cr_test_isa_levels, METH_NOARGS,
     "isa_levels() -> names of the kernel tables this CPU and OS can run, e.g. ['ref', 'avx2', 'avx512']."},
    {"kernel", KW(cr_test_kernel), "kernel(isa, name, *arrays, alpha=0.0, n=32): run one kernel of one ISA table."},
    {"exp_f32", cr_test_exp_f32, METH_VARARGS, "exp_f32(isa, x): the exp_f32 kernel of one ISA table."},
    {"attention", KW(cr_test_attention), "attention(q, k, v, positions, seq_start, ...): causal GQA attention "
                                         "of one layer through cr_attention."},
    {"linear", KW(cr_test_linear), "linear(w, x, fmt='float32', threads=1, bias=None, rows=0, glu=None, glu_n=0, glu_rows=False): x @ w^T (+ bias) through one packed linear layer (rows: as bf16 rows written in parts of that many elements); with glu ('silu', 'gelu', 'gelu_tanh') the activations act(gate) * up of its glu_n columns (up from column n_out / 2), as float32 or, glu_rows, through a bf16 or int8 layer's own rows (int8 read back dequantized)."},
    {"bench_linear", KW(cr_test_bench_linear), "bench_linear(w, m, ...): best seconds of one packed linear layer."},
    {"bench_peak", KW(cr_test_bench_peak), "bench_peak(kind, threads=1, iters=...): GFLOP/s of a register-only loop."},
    {"amx_gemm", KW(cr_test_amx_gemm), "amx_gemm(isa, kind, x, wp, guard='end', split=0): one AMX GEMM (split: in calls of that many K blocks) of one table, "
                                       "operands against PROT_NONE guard pages."},
    {"pool_stress", KW(cr_test_pool_stress), "pool_stress(threads, jobs=2000, ...): post many jobs to the worker "
                                             "pool and check that every task ran exactly once."},
    {NULL}};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "crossrank._testing",
                                       "Test and benchmark hooks into crossrank's C engine (not public API).", -1,
                                       methods};

PyMODINIT_FUNC PyInit__testing(void) {
    import_array();
    cr_cpu_info cpu;
    cr_cpu_describe(&cpu);   /* this copy's dispatcher reads CROSSRANK_ISA now, at import, as _core's does */
    return PyModule_Create(&moduledef);
}
