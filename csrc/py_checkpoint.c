/* py_checkpoint.c — _core.inspect_checkpoint(model_dir): opens and fully validates a checkpoint
 * (single file or sharded) and lists its tensors, so Python can check names, shapes and dtypes
 * against a config without loading the model. The files are mapped and validated without the
 * GIL; the result is built after. */
#include "pyglue.h"

/* {"name": str, "dtype": str, "shape": tuple[int, ...], "file": str} for one tensor. */
static PyObject *tensor_dict(const cr_tensor_info *view) {
    PyObject *shape = PyTuple_New(view->ndim), *dict = NULL;
    if (!shape) goto fail;
    for (int d = 0; d < view->ndim; d++) {
        PyObject *dim = PyLong_FromLongLong(view->shape[d]);
        if (!dim) goto fail;
        PyTuple_SET_ITEM(shape, d, dim);
    }
    /* Names and shard names are valid UTF-8: the JSON parser checked them. */
    dict = Py_BuildValue("{s:s,s:s,s:O,s:s}", "name", view->name, "dtype", cr_dtype_name(view->dtype),
                         "shape", shape, "file", view->file);
fail:
    Py_XDECREF(shape);
    return dict;
}

PyObject *cr_py_inspect_checkpoint(PyObject *self, PyObject *args) {
    PyObject *path = NULL, *list = NULL, *result = NULL;
    cr_checkpoint *ck = NULL;
    cr_status status;
    size_t n;

    if (!PyArg_ParseTuple(args, "O&:inspect_checkpoint", PyUnicode_FSConverter, &path)) goto fail;
    const char *model_dir = PyBytes_AS_STRING(path);
    Py_BEGIN_ALLOW_THREADS
    status = cr_checkpoint_open(model_dir, &ck);
    Py_END_ALLOW_THREADS
    if (status != CR_OK) {
        cr_py_raise(status);
        goto fail;
    }

    n = cr_checkpoint_n_tensors(ck);
    if (n > (size_t)PY_SSIZE_T_MAX) {
        PyErr_NoMemory();
        goto fail;
    }
    list = PyList_New((Py_ssize_t)n);
    if (!list) goto fail;
    for (size_t i = 0; i < n; i++) {
        cr_tensor_info view;
        cr_checkpoint_tensor(ck, i, &view);
        PyObject *item = tensor_dict(&view);
        if (!item) goto fail;
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    result = list;
    list = NULL;
    /* Success falls through: the cleanup below releases only what is still owned here. */
fail:
    Py_XDECREF(list);
    cr_checkpoint_close(ck);
    Py_XDECREF(path);
    return result;
}
