/* model.c — loading: validate the config, bind every tensor by its HF name with the shape the
 * config implies, pack the projections into cr_linear (q|k|v and gate|up fused), build the
 * classification head from a stored score.weight or from rows of the LM head.
 *
 * Names and shapes come from the tensor table (tensor_table.c): the shape check walks it and the
 * binder asks it for each role, so neither spells a name or a shape itself. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "kernels/kernels.h"
#include "model.h"
#include "tensor_table.h"

cr_load_params cr_load_params_default(void) {
    cr_load_params p;
    memset(&p, 0, sizeof p);
    p.config.rms_norm_eps = 1e-6f;
    p.config.embed_scale = 1.0f;
    p.config.rope_attn_factor = 1.0f;
    p.config.act = CR_ACT_SILU;
    p.head.kind = CR_HEAD_SCORE_TENSOR;
    p.weight_dtype = CR_DT_F32;
    p.threads = 1;
    p.check_finite = CR_CHECK_FINITE_AUTO;
    return p;
}

static cr_status check_dim(const char *key, int64_t v, int64_t lo, int64_t max) {
    if (v < lo || v > max)
        return cr_fail(CR_E_ARG, "config key '%s' = %lld is outside [%lld, %lld]; fix config.json or set "
                       "hf_overrides={'%s': ...}", key, (long long)v, (long long)lo, (long long)max, key);
    return CR_OK;
}

static int64_t first_non_finite(const float *x, int64_t n);

cr_status cr_config_check(const cr_config *c) {
    cr_status st;
    if (!c) return cr_fail(CR_E_ARG, "config: NULL");
    if ((st = check_dim("vocab_size", c->vocab_size, 1, 16LL << 20)) ||
        (st = check_dim("hidden_size", c->hidden_size, 1, 1 << 16)) ||
        (st = check_dim("intermediate_size", c->intermediate_size, 1, 1 << 20)) ||
        (st = check_dim("num_hidden_layers", c->num_layers, 1, CR_MAX_LAYERS)) ||
        (st = check_dim("num_attention_heads", c->num_heads, 1, 1024)) ||
        (st = check_dim("num_key_value_heads", c->num_kv_heads, 1, 1024)) ||
        (st = check_dim("head_dim", c->head_dim, 2, 4096)))
        return st;
    if (c->num_heads % c->num_kv_heads)
        return cr_fail(CR_E_ARG, "config: num_attention_heads (%lld) must be a multiple of num_key_value_heads "
                       "(%lld); set num_key_value_heads to the checkpoint's number of key/value heads",
                       (long long)c->num_heads, (long long)c->num_kv_heads);
    if (c->head_dim % 2)
        return cr_fail(CR_E_ARG, "config: head_dim must be even (RoPE rotates pairs of dimensions), got %lld",
                       (long long)c->head_dim);
    if (c->num_heads * c->head_dim > (1 << 20))
        return cr_fail(CR_E_ARG, "config: num_attention_heads * head_dim = %lld is too large (at most %d)",
                       (long long)(c->num_heads * c->head_dim), 1 << 20);
    if (!(c->rms_norm_eps >= 0.0f) || !isfinite(c->rms_norm_eps))
        return cr_fail(CR_E_ARG, "config: rms_norm_eps must be a finite non-negative number");
    if (!isfinite(c->attn_scale) || !isfinite(c->embed_scale) || !isfinite(c->rope_attn_factor))
        return cr_fail(CR_E_ARG, "config: attn_scale, embed_scale and rope_attention_factor must be finite");
    if (c->act != CR_ACT_SILU && c->act != CR_ACT_GELU_TANH && c->act != CR_ACT_GELU)
        return cr_fail(CR_E_ARG, "config: unknown activation %d", (int)c->act);
    return CR_OK;
}

static cr_status validate_config(const cr_config *c) {
    cr_status st = cr_config_check(c);
    if (st) return st;
    if (!c->rope_inv_freq) return cr_fail(CR_E_ARG, "config: rope_inv_freq is missing");
    if (first_non_finite(c->rope_inv_freq, c->head_dim / 2) >= 0)
        return cr_fail(CR_E_ARG, "config: rope_inv_freq holds NaN or an infinity");
    return CR_OK;
}

static void shape_text(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t used = 0;
    used += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (used < cap) snprintf(buf + used, cap - used, "]");
}

/* Finds `name` and checks it has exactly the expected shape and a floating dtype we read. */
static cr_status find_tensor(const cr_checkpoint *ck, const char *name, int ndim,
                             const int64_t *shape, int required, cr_tensor_view *out, int *found) {
    *found = 0;
    if (!cr_checkpoint_find(ck, name, out)) {
        if (!required) return CR_OK;
        char want[96];
        shape_text(want, sizeof want, ndim, shape);
        return cr_fail(CR_E_FORMAT, "the checkpoint has no tensor %s (expected shape %s)", name, want);
    }
    int same = out->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = out->shape[i] == shape[i];
    if (!same) {
        char want[96], got[96];
        shape_text(want, sizeof want, ndim, shape);
        shape_text(got, sizeof got, out->ndim, out->shape);
        return cr_fail(CR_E_SHAPE, "tensor %s in %s has shape %s, but the config implies %s",
                       name, out->file, got, want);
    }
    if (out->dtype != CR_DT_F32 && out->dtype != CR_DT_BF16 && out->dtype != CR_DT_F16)
        return cr_fail(CR_E_UNSUPPORTED, "tensor %s in %s has dtype %s; crossrank reads F32, BF16 and F16",
                       name, out->file, cr_dtype_name(out->dtype));
    *found = 1;
    return CR_OK;
}

/* Converts n elements starting at element `first` of a floating tensor to float32. */
static void read_f32(const cr_tensor_view *t, int64_t first, int64_t n, float *dst) {
    size_t es = cr_dtype_size(t->dtype);
    const uint8_t *src = t->data + (size_t)first * es;
    if (t->dtype == CR_DT_F32) memcpy(dst, src, (size_t)n * 4);
    else if (t->dtype == CR_DT_BF16) cr_kern->bf16_to_f32(src, dst, n);
    else cr_kern->f16_to_f32(src, dst, n);
}

typedef struct loader {
    cr_model *m;
    const char *dir;
    int check_finite;      /* resolved: 0 or 1 */
} loader;

/* ---- load-time guards: shapes the config implies, NaN/Inf in weights ------------------------- */

/* Index of the first NaN/Inf in x[0..n), or -1. Branch-free over blocks so it vectorizes: the scan
 * costs a fraction of the conversion that produced x. */
static int64_t first_non_finite(const float *x, int64_t n) {
    for (int64_t i0 = 0; i0 < n; i0 += 1024) {
        int64_t i1 = n - i0 < 1024 ? n : i0 + 1024;
        uint32_t bad = 0;
        for (int64_t i = i0; i < i1; i++) {
            uint32_t bits;
            memcpy(&bits, &x[i], 4);
            bad |= (uint32_t)((bits & 0x7f800000u) == 0x7f800000u);
        }
        if (bad)
            for (int64_t i = i0; i < i1; i++)
                if (!isfinite(x[i])) return i;
    }
    return -1;
}

static cr_status check_finite_f32(const float *x, int64_t n, const char *name, const char *file) {
    int64_t i = first_non_finite(x, n);
    if (i < 0) return CR_OK;
    return cr_fail(CR_E_FORMAT,
                   "tensor %s in %s holds %s at element %lld: the checkpoint is corrupt or was saved "
                   "after a diverged run (load with check_finite off to skip this check)",
                   name, file, isnan(x[i]) ? "NaN" : "an infinity", (long long)i);
}

/* The embedding table stays mapped in its dtype; scan it through a small float32 buffer, then
 * drop the pages the scan faulted in (they are re-read from the page cache on demand). */
static cr_status check_finite_view(const cr_checkpoint *ck, const cr_tensor_view *t, int64_t n) {
    enum { CHUNK = 16384 };
    float *buf = cr_malloc_array(CHUNK, sizeof(float), "finiteness check buffer");
    cr_status st = CR_OK;
    if (!buf) return CR_E_NOMEM;
    size_t es = cr_dtype_size(t->dtype);
    for (int64_t i0 = 0; i0 < n && !st; i0 += CHUNK) {
        int64_t k = n - i0 < CHUNK ? n - i0 : CHUNK;
        const uint8_t *src = t->data + (size_t)i0 * es;
        if (t->dtype == CR_DT_F32) memcpy(buf, src, (size_t)k * 4);
        else if (t->dtype == CR_DT_BF16) cr_kern->bf16_to_f32(src, buf, k);
        else cr_kern->f16_to_f32(src, buf, k);
        int64_t bad = first_non_finite(buf, k);
        if (bad >= 0)
            st = cr_fail(CR_E_FORMAT,
                         "tensor %s in %s holds %s at element %lld (row %lld): the checkpoint is corrupt "
                         "(load with check_finite off to skip this check)", t->name, t->file,
                         isnan(buf[bad]) ? "NaN" : "an infinity", (long long)(i0 + bad),
                         (long long)((i0 + bad) / (t->ndim == 2 && t->shape[1] ? t->shape[1] : 1)));
    }
    free(buf);
    cr_checkpoint_release(ck, t);
    return st;
}

/* Floating-point weights (F32, BF16, F16 elements) held by the checkpoint's files. */
static int64_t checkpoint_weights(const cr_checkpoint *ck) {
    int64_t held = 0;
    for (size_t i = 0; i < cr_checkpoint_n_tensors(ck); i++) {
        cr_tensor_view t;
        cr_checkpoint_get(ck, i, &t);
        if (t.dtype != CR_DT_F32 && t.dtype != CR_DT_BF16 && t.dtype != CR_DT_F16) continue;
        held += (int64_t)(t.nbytes / cr_dtype_size(t.dtype));   /* the sum is <= the files' size */
    }
    return held;
}

/* Every tensor the config implies, found with exactly the implied shape before anything sized by
 * the config is allocated: then every allocation is bounded by what the mapped files hold, and a
 * config with absurd dims fails naming the first tensor it does not fit. Walks the tensor table;
 * the embeddings were found already and the LM head is load_head's (a score head needs none). */
static cr_status check_tensor_shapes(const cr_config *c, const cr_checkpoint *ck) {
    int64_t n = cr_tensor_table_size(c, 0);
    if (n < 0) return CR_E_ARG;
    for (int64_t i = 0; i < n; i++) {
        cr_tensor_entry e;
        cr_tensor_view t;
        int found;
        cr_status st = cr_tensor_table_entry(c, 0, i, &e);
        if (st) return st;
        if (e.kind == CR_TENSOR_EMBEDDING || e.kind == CR_TENSOR_LM_HEAD) continue;
        if ((st = find_tensor(ck, e.name, e.ndim, e.shape, 1, &t, &found))) return st;
    }
    return CR_OK;
}

/* Loads tensor `name` of the given shape into dst (float32). */
static cr_status load_into(loader *ld, const char *name, int ndim, const int64_t *shape, int required,
                           float *dst, int *found) {
    cr_tensor_view t;
    cr_status st = find_tensor(ld->m->ck, name, ndim, shape, required, &t, found);
    if (st || !*found) return st;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    read_f32(&t, 0, n, dst);
    cr_checkpoint_release(ld->m->ck, &t);
    return ld->check_finite ? check_finite_f32(dst, n, name, t.file) : CR_OK;
}

static float *alloc_f32(loader *ld, int64_t n, const char *what) {
    float *p = cr_aligned_alloc((size_t)n * sizeof(float), what);
    if (p) ld->m->weight_bytes += n * (int64_t)sizeof(float);
    return p;
}

/* Loads the norm of `role` (of `layer`) into a new float32 vector, as 1 + w when add_one; leaves
 * *out NULL when the config has no such tensor (q/k norms without qk_norm). */
static cr_status load_vector(loader *ld, cr_tensor_role role, int64_t layer, int add_one, float **out) {
    cr_tensor_entry e;
    int found;
    if (!cr_tensor_role_entry(&ld->m->cfg, 0, role, layer, &e)) return CR_OK;
    int64_t n = e.shape[0];
    *out = alloc_f32(ld, n, e.name);
    if (!*out) return CR_E_NOMEM;
    cr_status st = load_into(ld, e.name, 1, &n, 1, *out, &found);
    if (st) return st;
    if (add_one)
        for (int64_t i = 0; i < n; i++) (*out)[i] = 1.0f + (*out)[i];
    return CR_OK;
}

/* Packs the weights of `roles` (each [rows, n_in], at most 3) of one layer one under another into
 * a single cr_linear, with their biases when the config has them (a bias is its weight's role + 1).
 * Each part starts at a multiple of `align` rows, zero rows (and biases) between: gate|up's halves
 * at whole panels, which cr_linear_apply_glu needs. */
static cr_status load_linear(loader *ld, cr_linear *W, int64_t layer, int n_parts, const cr_tensor_role *roles,
                             int64_t align, cr_dtype compute) {
    const cr_config *c = &ld->m->cfg;
    cr_tensor_entry w[3], b;
    int64_t n_out = 0, part_rows[3];
    for (int k = 0; k < n_parts; k++) {
        cr_tensor_role_entry(c, 0, roles[k], layer, &w[k]);
        part_rows[k] = (w[k].shape[0] + align - 1) / align * align;
        n_out += part_rows[k];
    }
    int64_t n_in = w[0].shape[1];
    int bias = cr_tensor_role_entry(c, 0, (cr_tensor_role)(roles[0] + 1), layer, &b);
    W->fmt = CR_FMT_F32_BLAS;
    W->n_out = n_out;
    W->n_in = n_in;
    size_t count;
    if (!cr_mul_size((size_t)n_out, (size_t)n_in, &count))
        return cr_fail(CR_E_NOMEM, "size of %s overflows", w[0].name);
    W->w = alloc_f32(ld, (int64_t)count, w[0].name);
    if (!W->w) return CR_E_NOMEM;
    if (bias) {
        W->bias = alloc_f32(ld, n_out, "bias");
        if (!W->bias) return CR_E_NOMEM;
    }
    int64_t row0 = 0;
    for (int k = 0; k < n_parts; k++) {
        int64_t pad = part_rows[k] - w[k].shape[0]; /* zero rows after the part */
        memset(W->w + (row0 + w[k].shape[0]) * n_in, 0, (size_t)(pad * n_in) * sizeof(float));
        if (bias) memset(W->bias + row0 + w[k].shape[0], 0, (size_t)pad * sizeof(float));
        int found;
        cr_status st = load_into(ld, w[k].name, 2, w[k].shape, 1, W->w + row0 * n_in, &found);
        if (st) return st;
        if (bias) {
            cr_tensor_role_entry(c, 0, (cr_tensor_role)(roles[k] + 1), layer, &b);
            st = load_into(ld, b.name, 1, b.shape, 1, W->bias + row0, &found);
            if (st) return st;
        }
        row0 += part_rows[k];
    }
    int64_t before = cr_linear_bytes(W);
    cr_status st = cr_linear_pack(W, compute);
    ld->m->weight_bytes += cr_linear_bytes(W) - before;
    return st;
}

static cr_status load_layer(loader *ld, int64_t i, cr_layer *layer) {
    static const cr_tensor_role qkv[] = {CR_ROLE_Q, CR_ROLE_K, CR_ROLE_V}, o[] = {CR_ROLE_O},
                                gate_up[] = {CR_ROLE_GATE, CR_ROLE_UP}, down[] = {CR_ROLE_DOWN};
    int add_one = ld->m->cfg.norm_add_one;
    cr_dtype dt = ld->m->compute_dtype;
    cr_status st;
    if ((st = load_vector(ld, CR_ROLE_ATTN_NORM, i, add_one, &layer->attn_norm)) ||
        (st = load_vector(ld, CR_ROLE_MLP_NORM, i, add_one, &layer->mlp_norm)) ||
        (st = load_vector(ld, CR_ROLE_Q_NORM, i, add_one, &layer->q_norm)) ||
        (st = load_vector(ld, CR_ROLE_K_NORM, i, add_one, &layer->k_norm)) ||
        (st = load_linear(ld, &layer->qkv, i, 3, qkv, 1, dt)) ||
        (st = load_linear(ld, &layer->o, i, 1, o, 1, dt)) ||
        (st = load_linear(ld, &layer->gate_up, i, 2, gate_up, CR_GEMM_NR, dt)) ||
        (st = load_linear(ld, &layer->down, i, 1, down, 1, dt)))
        return st;
    return CR_OK;
}

/* `source` (CR_TENSOR_NAME_CAP bytes): the name of the tensor whose rows became the head. */
static cr_status load_head(loader *ld, const cr_head_spec *spec, char *source) {
    cr_model *m = ld->m;
    int64_t H = m->cfg.hidden_size, V = m->cfg.vocab_size;
    cr_status st;
    int found;
    if (spec->kind == CR_HEAD_SCORE_TENSOR) {
        cr_tensor_view t;
        cr_tensor_entry e;
        cr_tensor_role_entry(&m->cfg, 1, CR_ROLE_HEAD, 0, &e);   /* the name; its rows are the file's */
        if (!cr_checkpoint_find(m->ck, e.name, &t))
            return cr_fail(CR_E_FORMAT,
                           "the checkpoint has no score.weight: it is not a converted sequence classifier. "
                           "For a causal-LM reranker pass hf_overrides with classifier_from_token and method");
        if (t.ndim != 2 || t.shape[1] != H || t.shape[0] < 1 || t.shape[0] > CR_MAX_LABELS)
            return cr_fail(CR_E_SHAPE, "tensor score.weight in %s must be [num_labels, %lld]", t.file,
                           (long long)H);
        m->num_labels = t.shape[0];
        cr_tensor_role_entry(&m->cfg, m->num_labels, CR_ROLE_HEAD, 0, &e);
        m->head_w = alloc_f32(ld, m->num_labels * H, e.name);
        if (!m->head_w) return CR_E_NOMEM;
        if ((st = load_into(ld, e.name, e.ndim, e.shape, 1, m->head_w, &found))) return st;
        m->head_b = alloc_f32(ld, m->num_labels, "score.bias");
        if (!m->head_b) return CR_E_NOMEM;
        if ((st = load_into(ld, "score.bias", 1, &m->num_labels, 0, m->head_b, &found))) return st;
        if (!found) {
            free(m->head_b);
            m->head_b = NULL;
        }
        return CR_OK;
    }
    if (spec->kind != CR_HEAD_LM_ROWS || spec->num_rows < 1 || spec->num_rows > CR_MAX_LABELS || !spec->rows)
        return cr_fail(CR_E_ARG, "head: LM-row heads need 1 or more token ids");
    if (spec->two_way && spec->num_rows != 2)
        return cr_fail(CR_E_ARG, "head: from_2_way_softmax needs exactly 2 token ids, got %lld",
                       (long long)spec->num_rows);
    for (int64_t r = 0; r < spec->num_rows; r++)
        if (spec->rows[r] < 0 || spec->rows[r] >= V)
            return cr_fail(CR_E_ARG, "head: token id %lld is outside the vocabulary [0, %lld)",
                           (long long)spec->rows[r], (long long)V);
    cr_tensor_view src;
    cr_tensor_entry e;   /* the LM head, or the embeddings when the table has none (tied) */
    int tied = !cr_tensor_role_entry(&m->cfg, 0, CR_ROLE_HEAD, 0, &e);
    if (tied) {
        cr_tensor_role_entry(&m->cfg, 0, CR_ROLE_EMBED, 0, &e);
        /* A tied config whose file stores an lm_head.weight of its own: transformers keeps that
         * head (it ties only equal tensors), so its rows are the ones read; equal values give the
         * same rows either way. Same shape as the embeddings. */
        if (cr_checkpoint_find(m->ck, "lm_head.weight", &src)) snprintf(e.name, sizeof e.name, "lm_head.weight");
    }
    snprintf(source, CR_TENSOR_NAME_CAP, "%s", e.name);
    if (!tied && !cr_checkpoint_find(m->ck, e.name, &src))
        return cr_fail(CR_E_FORMAT,
                       "the checkpoint has no %s and tie_word_embeddings is false; "
                       "if the head shares the embeddings set tie_word_embeddings: true", e.name);
    if ((st = find_tensor(m->ck, e.name, e.ndim, e.shape, 1, &src, &found))) return st;
    m->num_labels = spec->two_way ? 1 : spec->num_rows;
    m->head_w = alloc_f32(ld, m->num_labels * H, "head");
    if (!m->head_w) return CR_E_NOMEM;
    if (spec->two_way) {
        /* from_2_way_softmax: sigmoid(h . (W[true] - W[false])) = softmax([false, true])[1] */
        float *w_false = cr_aligned_alloc((size_t)H * sizeof(float), "head row");
        if (!w_false) return CR_E_NOMEM;
        read_f32(&src, spec->rows[0] * H, H, w_false);
        read_f32(&src, spec->rows[1] * H, H, m->head_w);
        for (int64_t j = 0; j < H; j++) m->head_w[j] -= w_false[j];
        free(w_false);
    } else {
        for (int64_t r = 0; r < spec->num_rows; r++) read_f32(&src, spec->rows[r] * H, H, m->head_w + r * H);
    }
    return CR_OK;
}

void cr_embed_row(const cr_model *m, int32_t token, float *dst) {
    int64_t H = m->cfg.hidden_size;
    read_f32(&m->embed, (int64_t)token * H, H, dst);
    if (m->cfg.embed_scale != 1.0f)
        for (int64_t j = 0; j < H; j++) dst[j] *= m->cfg.embed_scale;
}

/* With transparent huge pages one row read maps a whole 2 MiB page, so a long document would
 * otherwise keep hundreds of MB of the table resident. */
void cr_embed_rows_done(const cr_model *m) { cr_checkpoint_release(m->ck, &m->embed); }

cr_status cr_model_load(const char *model_dir, const cr_load_params *params, cr_model **out) {
    *out = NULL;
    cr_error_clear();
    cr_kernels_init();
    if (!model_dir || !params) return cr_fail(CR_E_ARG, "cr_model_load: NULL argument");
    cr_status st = validate_config(&params->config);
    if (st) return st;
    if (params->weight_dtype != CR_DT_F32 && params->weight_dtype != CR_DT_BF16 && params->weight_dtype != CR_DT_I8)
        return cr_fail(CR_E_UNSUPPORTED, "compute dtype %s is not available; use float32, bfloat16 or int8",
                       cr_dtype_name(params->weight_dtype));

    cr_model *m = cr_calloc(1, sizeof *m, "model");
    if (!m) return CR_E_NOMEM;
    loader ld = {.m = m, .dir = model_dir};
    m->cfg = params->config;
    m->cfg.layer_window = NULL;
    m->cfg.rope_inv_freq = NULL;
    m->threads = params->threads < 1 ? 1 : params->threads;
    m->compute_dtype = params->weight_dtype;
    const cr_config *c = &m->cfg;

    int64_t half = c->head_dim / 2;
    m->rope_inv_freq = cr_malloc_array((size_t)half, sizeof(float), "rope table");
    if (!m->rope_inv_freq) { st = CR_E_NOMEM; goto fail; }
    memcpy(m->rope_inv_freq, params->config.rope_inv_freq, (size_t)half * sizeof(float));
    for (int64_t i = 0; i < c->num_layers && params->config.layer_window; i++)
        if (params->config.layer_window[i] < 0) {
            st = cr_fail(CR_E_ARG, "config: layer %lld has a negative attention window", (long long)i);
            goto fail;
        }

    if ((st = cr_checkpoint_open(model_dir, &m->ck))) goto fail;

    cr_tensor_entry embed;
    int found;
    cr_tensor_role_entry(c, 0, CR_ROLE_EMBED, 0, &embed);
    if ((st = find_tensor(m->ck, embed.name, embed.ndim, embed.shape, 1, &m->embed, &found))) goto fail;
    if ((st = check_tensor_shapes(c, m->ck))) goto fail;
    ld.check_finite = params->check_finite == CR_CHECK_FINITE_AUTO
                          ? checkpoint_weights(m->ck) <= CR_CHECK_FINITE_AUTO_MAX
                          : params->check_finite != CR_CHECK_FINITE_OFF;
    if (ld.check_finite && (st = check_finite_view(m->ck, &m->embed, c->vocab_size * c->hidden_size)))
        goto fail;

    m->layers = cr_calloc((size_t)c->num_layers, sizeof *m->layers, "layers");
    if (!m->layers) { st = CR_E_NOMEM; goto fail; }
    for (int64_t i = 0; i < c->num_layers; i++) {
        if ((st = load_layer(&ld, i, &m->layers[i]))) goto fail;
        m->layers[i].window = params->config.layer_window ? params->config.layer_window[i] : 0;
    }
    if ((st = load_vector(&ld, CR_ROLE_FINAL_NORM, 0, c->norm_add_one, &m->final_norm)))
        goto fail;
    char head_source[CR_TENSOR_NAME_CAP] = "score.weight";
    if ((st = load_head(&ld, &params->head, head_source))) goto fail;
    /* Finite rows can still subtract to an infinity (from_2_way_softmax): check the built head. */
    if (ld.check_finite && first_non_finite(m->head_w, m->num_labels * c->hidden_size) >= 0) {
        st = cr_fail(CR_E_FORMAT, "the classification head built from rows of %s holds NaN or an infinity "
                     "(a non-finite row, or two rows whose from_2_way_softmax difference overflows float32)",
                     head_source);
        goto fail;
    }
    *out = m;
    return CR_OK;
fail:
    cr_model_free(m);
    return st;
}

void cr_model_free(cr_model *m) {
    if (!m) return;
    if (m->layers) {
        for (int64_t i = 0; i < m->cfg.num_layers; i++) {
            cr_layer *l = &m->layers[i];
            free(l->attn_norm);
            free(l->mlp_norm);
            free(l->q_norm);
            free(l->k_norm);
            cr_linear_free(&l->qkv);
            cr_linear_free(&l->o);
            cr_linear_free(&l->gate_up);
            cr_linear_free(&l->down);
        }
        free(m->layers);
    }
    free(m->final_norm);
    free(m->head_w);
    free(m->head_b);
    free(m->rope_inv_freq);
    cr_workspace_free(atomic_load(&m->workspace));
    cr_checkpoint_close(m->ck);
    free(m);
}

int64_t cr_model_num_labels(const cr_model *m) { return m->num_labels; }
int64_t cr_model_hidden_size(const cr_model *m) { return m->cfg.hidden_size; }
int64_t cr_model_vocab_size(const cr_model *m) { return m->cfg.vocab_size; }
int64_t cr_model_weight_bytes(const cr_model *m) { return m->weight_bytes; }
