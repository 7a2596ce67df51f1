/* module.c — CPython + NumPy glue for crossrank._core. Inputs are converted with the GIL held, the
 * C core runs with the GIL released, outputs are built after. No Python object is touched while
 * the GIL is released. */
#include "pyglue.h"

#include <math.h>
#include <numpy/arrayobject.h>
#include <stdatomic.h>
#include <string.h>

/* Arrays the core reads with the GIL released are private copies: another Python thread could
 * otherwise rewrite a token id or a seq_start entry after it was validated (an out-of-bounds read
 * in the core). The copies are small next to the compute. */
#define CR_PRIVATE_ARRAY (NPY_ARRAY_IN_ARRAY | NPY_ARRAY_ENSURECOPY)

PyObject *cr_exc_base, *cr_exc_checkpoint, *cr_exc_unsupported, *cr_exc_cancelled, *cr_exc_numerical;
static PyObject *cr_exc_config;   /* ConfigError: the engine refused the config or head it was given */

PyObject *cr_py_raise(cr_status status) {
    const char *msg = cr_last_error();
    if (!msg || !*msg) msg = "crossrank: unknown error";
    PyObject *type;
    switch (status) {
    case CR_E_IO: type = PyExc_OSError; break;
    case CR_E_NOMEM: type = PyExc_MemoryError; break;
    case CR_E_ARG: type = PyExc_ValueError; break;
    case CR_E_FORMAT:
    case CR_E_SHAPE: type = cr_exc_checkpoint; break;
    case CR_E_UNSUPPORTED: type = cr_exc_unsupported; break;
    case CR_E_ABORTED: type = cr_exc_cancelled; break;
    default: type = cr_exc_base; break;
    }
    PyErr_SetString(type, msg);
    return NULL;
}

/* ---- Control: a per-call abort flag and progress counters ------------------------------------ */

typedef struct {
    PyObject_HEAD
    atomic_int abort;
    atomic_llong done;
    atomic_llong total;
} ControlObject;

static PyObject *control_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, ":Control", kwlist)) return NULL;
    ControlObject *self = (ControlObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    atomic_init(&self->abort, 0);
    atomic_init(&self->done, 0);
    atomic_init(&self->total, 0);
    return (PyObject *)self;
}

static PyObject *control_cancel(ControlObject *self, PyObject *unused) {
    atomic_store(&self->abort, 1);
    Py_RETURN_NONE;
}

static PyObject *control_get_cancelled(ControlObject *self, void *c) {
    return PyBool_FromLong(atomic_load(&self->abort) != 0);
}

static PyObject *control_get_progress(ControlObject *self, void *c) {
    return Py_BuildValue("(LL)", (long long)atomic_load(&self->done), (long long)atomic_load(&self->total));
}

static void control_progress(void *user, int64_t done, int64_t total) {
    ControlObject *self = user;
    atomic_store(&self->done, done);
    atomic_store(&self->total, total);
}

static PyMethodDef control_methods[] = {
    {"cancel", (PyCFunction)control_cancel, METH_NOARGS,
     "Ask the running call to stop; it raises Cancelled within a GEMM block or pool task."},
    {NULL}};

static PyGetSetDef control_getset[] = {
    {"cancelled", (getter)control_get_cancelled, NULL, "True once cancel() was called.", NULL},
    {"progress", (getter)control_get_progress, NULL, "(layers done, layers in total) of the current pass.", NULL},
    {NULL}};

static PyTypeObject ControlType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "crossrank._core.Control",
    .tp_basicsize = sizeof(ControlObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Control() -> a cancellation flag and progress counters for one call.",
    .tp_new = control_new,
    .tp_methods = control_methods,
    .tp_getset = control_getset,
};

/* ---- Model ---------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    cr_model *model;
    int loading;       /* __init__ is loading without the GIL: a second __init__ must not start */
} ModelObject;

typedef struct {
    PyObject_HEAD
    cr_prefix *prefix;
    PyObject *owner;   /* the Model, kept alive while the prefix exists */
} PrefixObject;

static PyTypeObject PrefixType;

static int dict_int(PyObject *d, const char *key, int64_t *out) {
    PyObject *v = PyDict_GetItemString(d, key);
    if (!v) {
        PyErr_Format(PyExc_KeyError, "config is missing '%s'", key);
        return -1;
    }
    long long x = PyLong_AsLongLong(v);
    if (x == -1 && PyErr_Occurred()) return -1;
    *out = x;
    return 0;
}

static int dict_float(PyObject *d, const char *key, float *out) {
    PyObject *v = PyDict_GetItemString(d, key);
    if (!v) {
        PyErr_Format(PyExc_KeyError, "config is missing '%s'", key);
        return -1;
    }
    double x = PyFloat_AsDouble(v);
    if (x == -1.0 && PyErr_Occurred()) return -1;
    *out = (float)x;
    return 0;
}

static int dict_bool(PyObject *d, const char *key, int *out) {
    PyObject *v = PyDict_GetItemString(d, key);
    if (!v) {
        PyErr_Format(PyExc_KeyError, "config is missing '%s'", key);
        return -1;
    }
    int b = PyObject_IsTrue(v);
    if (b < 0) return -1;
    *out = b;
    return 0;
}

/* The config dict crosses the boundary under the names of crossrank.config.ModelSpec, which are
 * the Hugging Face config keys wherever one exists (num_hidden_layers, num_key_value_heads, ...).
 * Fills the scalar fields of `c` and checks them with cr_config_check: the bounds live in C only. */
static int parse_config_scalars(PyObject *config, cr_config *c) {
    if (dict_int(config, "vocab_size", &c->vocab_size) || dict_int(config, "hidden_size", &c->hidden_size) ||
        dict_int(config, "intermediate_size", &c->intermediate_size) ||
        dict_int(config, "num_hidden_layers", &c->num_layers) ||
        dict_int(config, "num_attention_heads", &c->num_heads) ||
        dict_int(config, "num_key_value_heads", &c->num_kv_heads) || dict_int(config, "head_dim", &c->head_dim) ||
        dict_float(config, "rms_norm_eps", &c->rms_norm_eps) ||
        dict_float(config, "attn_scale", &c->attn_scale) ||
        dict_float(config, "embed_scale", &c->embed_scale) ||
        dict_float(config, "rope_attention_factor", &c->rope_attn_factor) ||
        dict_bool(config, "qk_norm", &c->qk_norm) || dict_bool(config, "qkv_bias", &c->qkv_bias) ||
        dict_bool(config, "o_bias", &c->o_bias) || dict_bool(config, "mlp_bias", &c->mlp_bias) ||
        dict_bool(config, "norm_add_one", &c->norm_add_one) ||
        dict_bool(config, "tie_word_embeddings", &c->tie_word_embeddings))
        return -1;
    PyObject *act = PyDict_GetItemString(config, "activation");
    const char *act_name = act ? PyUnicode_AsUTF8(act) : NULL;
    if (!act_name) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "config is missing 'activation'");
        return -1;
    }
    if (strcmp(act_name, "silu") == 0) c->act = CR_ACT_SILU;
    else if (strcmp(act_name, "gelu_tanh") == 0) c->act = CR_ACT_GELU_TANH;
    else if (strcmp(act_name, "gelu") == 0) c->act = CR_ACT_GELU;
    else {
        PyErr_Format(cr_exc_config, "config: unknown activation '%s' (silu, gelu_tanh, gelu)", act_name);
        return -1;
    }
    if (cr_config_check(c)) {
        PyErr_SetString(cr_exc_config, cr_last_error());
        return -1;
    }
    return 0;
}

static PyObject *py_check_config(PyObject *self, PyObject *config) {
    (void)self;
    if (!PyDict_Check(config)) {
        PyErr_Format(PyExc_TypeError, "check_config() takes a dict, got %s", Py_TYPE(config)->tp_name);
        return NULL;
    }
    cr_load_params p = cr_load_params_default();
    if (parse_config_scalars(config, &p.config)) return NULL;
    Py_RETURN_NONE;
}

static int model_init(ModelObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"model_dir", "config", "head", "dtype", "threads", "check_finite", NULL};
    PyObject *dir_obj = NULL, *config, *head, *check_finite = Py_None;
    const char *dtype = "float32";
    int threads = 1;
    PyArrayObject *inv_freq = NULL, *windows = NULL, *rows = NULL;
    PyObject *dir_bytes = NULL;
    int ret = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&O!O!|siO:Model", kwlist, PyUnicode_FSConverter,
                                     &dir_bytes, &PyDict_Type, &config, &PyDict_Type, &head, &dtype,
                                     &threads, &check_finite))
        return -1;
    (void)dir_obj;
    if (self->model || self->loading) {
        PyErr_SetString(PyExc_RuntimeError, "Model is already initialised");
        goto fail;
    }
    cr_load_params p = cr_load_params_default();
    cr_config *c = &p.config;
    if (parse_config_scalars(config, c)) goto fail;
    PyObject *o = PyDict_GetItemString(config, "rope_inv_freq");
    if (!o) { PyErr_SetString(PyExc_KeyError, "config is missing 'rope_inv_freq'"); goto fail; }
    inv_freq = (PyArrayObject *)PyArray_FROMANY(o, NPY_FLOAT32, 1, 1, CR_PRIVATE_ARRAY);
    if (!inv_freq) goto fail;
    if (PyArray_DIM(inv_freq, 0) != c->head_dim / 2) {
        PyErr_Format(cr_exc_config, "config: rope_inv_freq has %lld entries, head_dim/2 = %lld",
                     (long long)PyArray_DIM(inv_freq, 0), (long long)(c->head_dim / 2));
        goto fail;
    }
    c->rope_inv_freq = PyArray_DATA(inv_freq);
    o = PyDict_GetItemString(config, "layer_windows");
    if (o && o != Py_None) {
        windows = (PyArrayObject *)PyArray_FROMANY(o, NPY_INT32, 1, 1, CR_PRIVATE_ARRAY);
        if (!windows) goto fail;
        if (PyArray_DIM(windows, 0) != c->num_layers) {
            PyErr_Format(cr_exc_config, "config: layer_windows has %lld entries for num_hidden_layers = %lld",
                         (long long)PyArray_DIM(windows, 0), (long long)c->num_layers);
            goto fail;
        }
        c->layer_window = PyArray_DATA(windows);
    }

    PyObject *kind = PyDict_GetItemString(head, "kind");
    const char *kind_name = kind ? PyUnicode_AsUTF8(kind) : NULL;
    if (!kind_name) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "head is missing 'kind'");
        goto fail;
    }
    if (strcmp(kind_name, "score_weight") == 0) {
        p.head.kind = CR_HEAD_SCORE_TENSOR;
    } else if (strcmp(kind_name, "lm_rows") == 0) {
        p.head.kind = CR_HEAD_LM_ROWS;
        o = PyDict_GetItemString(head, "rows");
        if (!o) { PyErr_SetString(PyExc_KeyError, "head is missing 'rows'"); goto fail; }
        rows = (PyArrayObject *)PyArray_FROMANY(o, NPY_INT64, 1, 1, CR_PRIVATE_ARRAY);
        if (!rows) goto fail;
        p.head.rows = PyArray_DATA(rows);
        p.head.num_rows = PyArray_DIM(rows, 0);
        o = PyDict_GetItemString(head, "two_way");
        p.head.two_way = o ? PyObject_IsTrue(o) : 0;
        if (p.head.two_way < 0) goto fail;
    } else {
        PyErr_Format(PyExc_ValueError, "head kind '%s' is not 'score_weight' or 'lm_rows'", kind_name);
        goto fail;
    }
    if (strcmp(dtype, "float32") == 0) p.weight_dtype = CR_DT_F32;
    else if (strcmp(dtype, "bfloat16") == 0) p.weight_dtype = CR_DT_BF16;
    else if (strcmp(dtype, "int8") == 0) p.weight_dtype = CR_DT_I8;
    else {
        PyErr_Format(PyExc_ValueError, "dtype '%s' is not 'float32', 'bfloat16' or 'int8'", dtype);
        goto fail;
    }
    if (threads < 1 || threads > 256) {
        PyErr_Format(PyExc_ValueError, "threads = %d is outside [1, 256]", threads);
        goto fail;
    }
    p.threads = threads;
    if (check_finite == Py_None) {
        p.check_finite = CR_CHECK_FINITE_AUTO;
    } else if (PyBool_Check(check_finite)) {
        p.check_finite = check_finite == Py_True ? CR_CHECK_FINITE_ON : CR_CHECK_FINITE_OFF;
    } else {
        PyErr_Format(PyExc_TypeError, "check_finite must be True, False or None (auto), got %R", check_finite);
        goto fail;
    }

    cr_model *model = NULL;
    cr_status st;
    const char *dir = PyBytes_AS_STRING(dir_bytes);
    self->loading = 1;
    Py_BEGIN_ALLOW_THREADS
    st = cr_model_load(dir, &p, &model);
    Py_END_ALLOW_THREADS
    self->loading = 0;
    if (st == CR_E_ARG) {
        /* At load, an invalid argument is always the config or the head: a crossrank error, so
         * callers that catch CrossrankError (the server) report it as one. */
        PyErr_SetString(cr_exc_config, cr_last_error());
        goto fail;
    }
    if (st) {
        cr_py_raise(st);
        goto fail;
    }
    self->model = model;
    ret = 0;
fail:
    Py_XDECREF(dir_bytes);
    Py_XDECREF(inv_freq);
    Py_XDECREF(windows);
    Py_XDECREF(rows);
    return ret;
}

static void model_dealloc(ModelObject *self) {
    cr_model_free(self->model);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_model(ModelObject *self) {
    if (!self->model) {
        PyErr_SetString(PyExc_RuntimeError, "Model is not initialised");
        return -1;
    }
    return 0;
}

static int get_control(PyObject *obj, ControlObject **out) {
    *out = NULL;
    if (!obj || obj == Py_None) return 0;
    if (!PyObject_TypeCheck(obj, &ControlType)) {
        PyErr_SetString(PyExc_TypeError, "control must be a crossrank._core.Control");
        return -1;
    }
    *out = (ControlObject *)obj;
    return 0;
}

static PyObject *model_forward(ModelObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"tokens", "positions", "seq_start", "prefixes", "prefix_lens", "control", NULL};
    PyObject *tok_o, *pos_o, *start_o, *pre_o = Py_None, *prelen_o = Py_None, *ctl_o = Py_None;
    PyArrayObject *tok = NULL, *pos = NULL, *start = NULL, *prelen = NULL, *out = NULL;
    const cr_prefix **prefixes = NULL;
    PyObject *result = NULL, *held = NULL;
    if (check_model(self)) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|OOO:forward", kwlist, &tok_o, &pos_o, &start_o,
                                     &pre_o, &prelen_o, &ctl_o))
        return NULL;
    ControlObject *ctl;
    if (get_control(ctl_o, &ctl)) return NULL;
    tok = (PyArrayObject *)PyArray_FROMANY(tok_o, NPY_INT32, 1, 1, CR_PRIVATE_ARRAY);
    pos = tok ? (PyArrayObject *)PyArray_FROMANY(pos_o, NPY_INT32, 1, 1, CR_PRIVATE_ARRAY) : NULL;
    start = pos ? (PyArrayObject *)PyArray_FROMANY(start_o, NPY_INT64, 1, 1, CR_PRIVATE_ARRAY) : NULL;
    if (!start) goto done;
    npy_intp T = PyArray_DIM(tok, 0), S = PyArray_DIM(start, 0) - 1;
    if (PyArray_DIM(pos, 0) != T) {
        PyErr_SetString(PyExc_ValueError, "positions must have one entry per token");
        goto done;
    }
    if (S < 1) {
        PyErr_SetString(PyExc_ValueError, "seq_start must have at least 2 entries");
        goto done;
    }
    if (pre_o != Py_None) {
        if (!PyList_Check(pre_o) || PyList_GET_SIZE(pre_o) != S) {
            PyErr_SetString(PyExc_ValueError, "prefixes must be a list with one entry (Prefix or None) per sequence");
            goto done;
        }
        /* A tuple copy of the list holds every Prefix alive while the GIL is released, even if
         * another thread empties the caller's list. */
        held = PyList_AsTuple(pre_o);
        if (!held) goto done;
        prefixes = PyMem_Calloc((size_t)S, sizeof *prefixes);
        if (!prefixes) { PyErr_NoMemory(); goto done; }
        for (npy_intp s = 0; s < S; s++) {
            PyObject *it = PyTuple_GET_ITEM(held, s);
            if (it == Py_None) continue;
            if (!PyObject_TypeCheck(it, &PrefixType) || ((PrefixObject *)it)->owner != (PyObject *)self) {
                PyErr_SetString(PyExc_ValueError, "prefixes must be Prefix objects built by this model");
                goto done;
            }
            prefixes[s] = ((PrefixObject *)it)->prefix;
        }
        if (prelen_o != Py_None) {
            prelen = (PyArrayObject *)PyArray_FROMANY(prelen_o, NPY_INT64, 1, 1, CR_PRIVATE_ARRAY);
            if (!prelen) goto done;
            if (PyArray_DIM(prelen, 0) != S) {
                PyErr_SetString(PyExc_ValueError, "prefix_lens must have one entry per sequence");
                goto done;
            }
        }
    }
    npy_intp dims[2] = {S, (npy_intp)cr_model_num_labels(self->model)};
    out = (PyArrayObject *)PyArray_ZEROS(2, dims, NPY_FLOAT32, 0);
    if (!out) goto done;
    cr_batch b = {
        .n_tokens = T, .tokens = PyArray_DATA(tok), .pos = PyArray_DATA(pos), .n_seqs = S,
        .seq_start = PyArray_DATA(start), .prefix = prefixes,
        .prefix_len = prelen ? PyArray_DATA(prelen) : NULL, .out = PyArray_DATA(out),
    };
    cr_run_params run = {0};
    if (ctl) {
        run.abort = &ctl->abort;
        run.progress = control_progress;
        run.progress_user = ctl;
    }
    cr_status st;
    /* keep the control alive even if the caller drops it from another thread */
    Py_XINCREF(ctl);
    Py_BEGIN_ALLOW_THREADS
    st = cr_forward(self->model, &b, &run);
    Py_END_ALLOW_THREADS
    Py_XDECREF(ctl);
    if (st) {
        cr_py_raise(st);
        goto done;
    }
    /* A NaN or an infinity must never reach the caller as a score: sigmoid(inf) = 1.0 looks like a
     * perfect match, and NaN sorts anywhere. Activations that overflow float32 end up here. */
    {
        const float *o = PyArray_DATA(out);
        npy_intp n = PyArray_SIZE(out), labels = PyArray_DIM(out, 1);
        for (npy_intp i = 0; i < n; i++)
            if (!isfinite(o[i])) {
                PyErr_Format(cr_exc_numerical,
                             "the forward produced a non-finite logit (%s) for sequence %zd of the batch: "
                             "the weights or the activations overflow float32 (a corrupt checkpoint, or "
                             "one that needs another dtype); load with check_finite=True to test the weights",
                             isnan(o[i]) ? "nan" : (o[i] > 0 ? "inf" : "-inf"), (Py_ssize_t)(i / labels));
                goto done;
            }
    }
    result = (PyObject *)out;
    out = NULL;
done:
    PyMem_Free(prefixes);
    Py_XDECREF(held);
    Py_XDECREF(tok);
    Py_XDECREF(pos);
    Py_XDECREF(start);
    Py_XDECREF(prelen);
    Py_XDECREF(out);
    return result;
}

static PyObject *model_build_prefix(ModelObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"tokens", "control", NULL};
    PyObject *tok_o, *ctl_o = Py_None;
    if (check_model(self)) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O:build_prefix", kwlist, &tok_o, &ctl_o)) return NULL;
    ControlObject *ctl;
    if (get_control(ctl_o, &ctl)) return NULL;
    PyArrayObject *tok = (PyArrayObject *)PyArray_FROMANY(tok_o, NPY_INT32, 1, 1, CR_PRIVATE_ARRAY);
    if (!tok) return NULL;
    cr_run_params run = {0};
    if (ctl) {
        run.abort = &ctl->abort;
        run.progress = control_progress;
        run.progress_user = ctl;
    }
    cr_prefix *prefix = NULL;
    cr_status st;
    Py_XINCREF(ctl);
    Py_BEGIN_ALLOW_THREADS
    st = cr_prefix_build(self->model, PyArray_DATA(tok), PyArray_DIM(tok, 0), &run, &prefix);
    Py_END_ALLOW_THREADS
    Py_XDECREF(ctl);
    Py_DECREF(tok);
    if (st) return cr_py_raise(st);
    PrefixObject *obj = PyObject_New(PrefixObject, &PrefixType);
    if (!obj) {
        cr_prefix_free(prefix);
        return NULL;
    }
    obj->prefix = prefix;
    Py_INCREF(self);
    obj->owner = (PyObject *)self;
    return (PyObject *)obj;
}

static PyObject *model_get_num_labels(ModelObject *self, void *c) {
    if (check_model(self)) return NULL;
    return PyLong_FromLongLong(cr_model_num_labels(self->model));
}
static PyObject *model_get_hidden_size(ModelObject *self, void *c) {
    if (check_model(self)) return NULL;
    return PyLong_FromLongLong(cr_model_hidden_size(self->model));
}
static PyObject *model_get_vocab_size(ModelObject *self, void *c) {
    if (check_model(self)) return NULL;
    return PyLong_FromLongLong(cr_model_vocab_size(self->model));
}
static PyObject *model_get_weight_bytes(ModelObject *self, void *c) {
    if (check_model(self)) return NULL;
    return PyLong_FromLongLong(cr_model_weight_bytes(self->model));
}

static PyMethodDef model_methods[] = {
    {"forward", (PyCFunction)(void (*)(void))model_forward, METH_VARARGS | METH_KEYWORDS,
     "forward(tokens, positions, seq_start, prefixes=None, prefix_lens=None, control=None)\n"
     "Scores a packed batch; returns float32 raw logits [n_seqs, num_labels]."},
    {"build_prefix", (PyCFunction)(void (*)(void))model_build_prefix, METH_VARARGS | METH_KEYWORDS,
     "build_prefix(tokens, control=None) -> Prefix holding the K/V of tokens at positions 0..n-1."},
    {NULL}};

static PyGetSetDef model_getset[] = {
    {"num_labels", (getter)model_get_num_labels, NULL, "Outputs per sequence.", NULL},
    {"hidden_size", (getter)model_get_hidden_size, NULL, "Hidden size.", NULL},
    {"vocab_size", (getter)model_get_vocab_size, NULL, "Vocabulary size.", NULL},
    {"weight_bytes", (getter)model_get_weight_bytes, NULL, "Bytes of resident packed weights.", NULL},
    {NULL}};

static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "crossrank._core.Model",
    .tp_basicsize = sizeof(ModelObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Model(model_dir, config, head, dtype='float32', threads=1, check_finite=None): a loaded reranker.\n"
              "check_finite: True refuses NaN/Inf weights at load (CheckpointError), False skips the scan,\n"
              "None scans checkpoints of at most 2^31 weights. forward() raises NumericalError rather\n"
              "than return a non-finite logit.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)model_init,
    .tp_dealloc = (destructor)model_dealloc,
    .tp_methods = model_methods,
    .tp_getset = model_getset,
};

static void prefix_dealloc(PrefixObject *self) {
    cr_prefix_free(self->prefix);
    Py_XDECREF(self->owner);
    PyObject_Free(self);
}

static PyObject *prefix_get_len(PrefixObject *self, void *c) {
    return PyLong_FromLongLong(cr_prefix_len(self->prefix));
}

static PyGetSetDef prefix_getset[] = {
    {"length", (getter)prefix_get_len, NULL, "Tokens held.", NULL},
    {NULL}};

static PyTypeObject PrefixType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "crossrank._core.Prefix",
    .tp_basicsize = sizeof(PrefixObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "K/V of a shared token prefix, built by Model.build_prefix.",
    .tp_dealloc = (destructor)prefix_dealloc,
    .tp_getset = prefix_getset,
};

/* ---- the tensor table ------------------------------------------------------------------------ */

static PyObject *py_tensor_table(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"config", "num_labels", NULL};
    static const char *const kind_names[] = {[CR_TENSOR_EMBEDDING] = "embedding", [CR_TENSOR_NORM] = "norm",
                                             [CR_TENSOR_WEIGHT] = "weight", [CR_TENSOR_BIAS] = "bias",
                                             [CR_TENSOR_LM_HEAD] = "lm_head", [CR_TENSOR_SCORE] = "score"};
    PyObject *config;
    long long num_labels = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!|L:tensor_table", kwlist, &PyDict_Type, &config, &num_labels))
        return NULL;
    cr_config c = cr_load_params_default().config;
    if (parse_config_scalars(config, &c)) return NULL;
    int64_t n = cr_tensor_table_size(&c, num_labels);
    if (n < 0) {
        PyErr_SetString(cr_exc_config, cr_last_error());
        return NULL;
    }
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (int64_t i = 0; list && i < n; i++) {
        cr_tensor_entry e;
        cr_status st = cr_tensor_table_entry(&c, num_labels, i, &e);
        PyObject *item = st ? cr_py_raise(st)
                         : e.ndim == 2 ? Py_BuildValue("(s(LL)s)", e.name, (long long)e.shape[0],
                                                       (long long)e.shape[1], kind_names[e.kind])
                                       : Py_BuildValue("(s(L)s)", e.name, (long long)e.shape[0], kind_names[e.kind]);
        if (!item) Py_CLEAR(list);
        else PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    return list;
}

/* ---- module ---------------------------------------------------------------------------------- */

static PyObject *py_build_info(PyObject *self, PyObject *unused) {
    const char *blas = cr_blas_name();
    return Py_BuildValue("{s:s}", "blas", blas ? blas : "none");
}

/* A load parses an 11 MB tokenizer.json and converts weights through temporary buffers; glibc keeps
 * what was freed (100-200 MB at the 0.6B shape) in its heaps until told otherwise. */
static PyObject *py_release_free_memory(PyObject *self, PyObject *unused) {
    int released;
    Py_BEGIN_ALLOW_THREADS
    released = cr_release_free_memory();
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(released);
}

static PyMethodDef module_methods[] = {
    {"check_config", py_check_config, METH_O,
     "check_config(config) -> None: checks the scalar fields of a config dict (the Hugging Face names, "
     "as Model takes them) against the engine's bounds; raises ConfigError naming the key."},
    {"cpu_info", cr_py_cpu_info, METH_NOARGS, CR_PY_CPU_INFO_DOC},
    {"build_info", py_build_info, METH_NOARGS,
     "build_info() -> {'blas': 'openblas' or 'none'}: what this build of the extension links."},
    {"amx_usable", cr_py_amx_usable, METH_NOARGS, CR_PY_AMX_USABLE_DOC},
    {"release_free_memory", py_release_free_memory, METH_NOARGS,
     "release_free_memory() -> bool: return the C heap's free pages to the OS (glibc; False elsewhere "
     "or when nothing was released)."},
    {"tensor_table", (PyCFunction)(void (*)(void))py_tensor_table, METH_VARARGS | METH_KEYWORDS,
     "tensor_table(config, num_labels=0) -> list of (name, shape, kind): every tensor a checkpoint of "
     "this engine config (the dict Model takes) holds, in the engine's order; kind is 'embedding', "
     "'norm', 'weight', 'bias', 'lm_head' or 'score'. num_labels=0: a causal LM (lm_head unless tied); "
     "N: a sequence classifier with score.weight [N, H]. ConfigError for dims out of bounds."},
    {"inspect_checkpoint", cr_py_inspect_checkpoint, METH_VARARGS,
     "inspect_checkpoint(model_dir) -> list of {'name', 'dtype', 'shape', 'file'}: validates the files."},
    {NULL}};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "crossrank._core",
                                       "crossrank's C engine.", -1, module_methods};

/* The exception classes are defined (and documented) in crossrank/errors.py; the engine raises
 * those same classes, so Python-side and C-side errors are caught alike. */
static int bind_exception(PyObject *m, PyObject *errors, PyObject **slot, const char *name) {
    *slot = PyObject_GetAttrString(errors, name);
    if (!*slot) return -1;
    Py_INCREF(*slot);
    if (PyModule_AddObject(m, name, *slot) < 0) {
        Py_DECREF(*slot);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC PyInit__core(void) {
    import_array();
    cr_cpu_info cpu;
    cr_cpu_describe(&cpu);   /* the dispatcher reads CROSSRANK_ISA now, at import */
    if (PyType_Ready(&ControlType) < 0 || PyType_Ready(&ModelType) < 0 || PyType_Ready(&PrefixType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    PyObject *errors = PyImport_ImportModule("crossrank.errors");
    if (!errors) goto fail;
    int bad = bind_exception(m, errors, &cr_exc_base, "CrossrankError") ||
              bind_exception(m, errors, &cr_exc_checkpoint, "CheckpointError") ||
              bind_exception(m, errors, &cr_exc_unsupported, "UnsupportedModelError") ||
              bind_exception(m, errors, &cr_exc_cancelled, "Cancelled") ||
              bind_exception(m, errors, &cr_exc_numerical, "NumericalError") ||
              bind_exception(m, errors, &cr_exc_config, "ConfigError");
    Py_DECREF(errors);
    if (bad) goto fail;
    Py_INCREF(&ControlType);
    Py_INCREF(&ModelType);
    Py_INCREF(&PrefixType);
    if (PyModule_AddObject(m, "Control", (PyObject *)&ControlType) < 0 ||
        PyModule_AddObject(m, "Model", (PyObject *)&ModelType) < 0 ||
        PyModule_AddObject(m, "Prefix", (PyObject *)&PrefixType) < 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
