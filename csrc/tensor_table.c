/* tensor_table.c — the one table of tensor names and shapes per architecture (HF
 * *ForCausalLM / *ForSequenceClassification names; see crossrank.h for the order):
 *   model.embed_tokens.weight                        [V, H]
 *   model.layers.{i}.input_layernorm.weight          [H]
 *   model.layers.{i}.post_attention_layernorm.weight [H]
 *   model.layers.{i}.self_attn.{q,k,v}_proj.weight   [NH*D | NKV*D, H]  (+ .bias when qkv_bias)
 *   model.layers.{i}.self_attn.o_proj.weight         [H, NH*D]          (+ .bias when o_bias)
 *   model.layers.{i}.self_attn.{q,k}_norm.weight     [D]                (qk_norm)
 *   model.layers.{i}.mlp.{gate,up}_proj.weight       [I, H], down_proj [H, I] (+ biases, mlp_bias)
 *   model.norm.weight                                [H]
 *   lm_head.weight                                   [V, H]  (causal LM, untied embeddings)
 *   score.weight                                     [N, H]  (sequence classifier of N labels) */
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "tensor_table.h"

static const char *const LAYER_SUFFIX[] = {
    [CR_ROLE_ATTN_NORM] = "input_layernorm.weight",
    [CR_ROLE_MLP_NORM] = "post_attention_layernorm.weight",
    [CR_ROLE_Q] = "self_attn.q_proj.weight",     [CR_ROLE_Q_BIAS] = "self_attn.q_proj.bias",
    [CR_ROLE_K] = "self_attn.k_proj.weight",     [CR_ROLE_K_BIAS] = "self_attn.k_proj.bias",
    [CR_ROLE_V] = "self_attn.v_proj.weight",     [CR_ROLE_V_BIAS] = "self_attn.v_proj.bias",
    [CR_ROLE_O] = "self_attn.o_proj.weight",     [CR_ROLE_O_BIAS] = "self_attn.o_proj.bias",
    [CR_ROLE_Q_NORM] = "self_attn.q_norm.weight", [CR_ROLE_K_NORM] = "self_attn.k_norm.weight",
    [CR_ROLE_GATE] = "mlp.gate_proj.weight",     [CR_ROLE_GATE_BIAS] = "mlp.gate_proj.bias",
    [CR_ROLE_UP] = "mlp.up_proj.weight",         [CR_ROLE_UP_BIAS] = "mlp.up_proj.bias",
    [CR_ROLE_DOWN] = "mlp.down_proj.weight",     [CR_ROLE_DOWN_BIAS] = "mlp.down_proj.bias",
};

static void set(cr_tensor_entry *e, cr_tensor_kind kind, int64_t rows, int64_t cols) {
    e->kind = kind;
    e->ndim = cols ? 2 : 1;
    e->shape[0] = rows;
    e->shape[1] = cols;
}

int cr_tensor_role_entry(const cr_config *c, int64_t num_labels, cr_tensor_role role, int64_t layer,
                         cr_tensor_entry *out) {
    int64_t H = c->hidden_size, D = c->head_dim, I = c->intermediate_size, V = c->vocab_size;
    int64_t QD = c->num_heads * D, KD = c->num_kv_heads * D;
    memset(out, 0, sizeof *out);
    switch (role) {
    case CR_ROLE_EMBED:
        snprintf(out->name, sizeof out->name, "model.embed_tokens.weight");
        set(out, CR_TENSOR_EMBEDDING, V, H);
        return 1;
    case CR_ROLE_FINAL_NORM:
        snprintf(out->name, sizeof out->name, "model.norm.weight");
        set(out, CR_TENSOR_NORM, H, 0);
        return 1;
    case CR_ROLE_HEAD:
        if (num_labels > 0) {
            snprintf(out->name, sizeof out->name, "score.weight");
            set(out, CR_TENSOR_SCORE, num_labels, H);
            return 1;
        }
        if (c->tie_word_embeddings) return 0;
        snprintf(out->name, sizeof out->name, "lm_head.weight");
        set(out, CR_TENSOR_LM_HEAD, V, H);
        return 1;
    default:
        break;
    }
    switch (role) {
    case CR_ROLE_ATTN_NORM: case CR_ROLE_MLP_NORM: set(out, CR_TENSOR_NORM, H, 0); break;
    case CR_ROLE_Q_NORM: case CR_ROLE_K_NORM:
        if (!c->qk_norm) return 0;
        set(out, CR_TENSOR_NORM, D, 0);
        break;
    case CR_ROLE_Q: set(out, CR_TENSOR_WEIGHT, QD, H); break;
    case CR_ROLE_K: case CR_ROLE_V: set(out, CR_TENSOR_WEIGHT, KD, H); break;
    case CR_ROLE_O: set(out, CR_TENSOR_WEIGHT, H, QD); break;
    case CR_ROLE_GATE: case CR_ROLE_UP: set(out, CR_TENSOR_WEIGHT, I, H); break;
    case CR_ROLE_DOWN: set(out, CR_TENSOR_WEIGHT, H, I); break;
    case CR_ROLE_Q_BIAS: case CR_ROLE_K_BIAS: case CR_ROLE_V_BIAS:
    case CR_ROLE_O_BIAS: case CR_ROLE_GATE_BIAS: case CR_ROLE_UP_BIAS: case CR_ROLE_DOWN_BIAS: {
        int present = role == CR_ROLE_O_BIAS ? c->o_bias
                      : role <= CR_ROLE_V_BIAS ? c->qkv_bias : c->mlp_bias;
        if (!present) return 0;
        cr_tensor_entry w;
        cr_tensor_role_entry(c, num_labels, (cr_tensor_role)(role - 1), layer, &w);
        set(out, CR_TENSOR_BIAS, w.shape[0], 0);
        break;
    }
    default:
        return 0;
    }
    snprintf(out->name, sizeof out->name, "model.layers.%lld.%s", (long long)layer, LAYER_SUFFIX[role]);
    return 1;
}

/* Tensors per layer: the same for every layer of one config. */
static int64_t per_layer(const cr_config *c) {
    cr_tensor_entry e;
    int64_t n = 0;
    for (int r = CR_ROLE_FIRST_LAYER; r <= CR_ROLE_LAST_LAYER; r++)
        n += cr_tensor_role_entry(c, 0, (cr_tensor_role)r, 0, &e);
    return n;
}

static cr_status check_table_args(const cr_config *c, int64_t num_labels) {
    if (!c) return cr_fail(CR_E_ARG, "tensor table: NULL config");
    if (num_labels < 0 || num_labels > CR_MAX_LABELS)
        return cr_fail(CR_E_ARG, "tensor table: num_labels = %lld is outside [0, %d]", (long long)num_labels,
                       CR_MAX_LABELS);
    return cr_config_check(c);
}

int64_t cr_tensor_table_size(const cr_config *c, int64_t num_labels) {
    cr_tensor_entry e;
    if (check_table_args(c, num_labels)) return -1;
    return 2 + c->num_layers * per_layer(c) + cr_tensor_role_entry(c, num_labels, CR_ROLE_HEAD, 0, &e);
}

cr_status cr_tensor_table_entry(const cr_config *c, int64_t num_labels, int64_t index, cr_tensor_entry *out) {
    cr_status st = check_table_args(c, num_labels);
    if (st) return st;
    if (!out) return cr_fail(CR_E_ARG, "tensor table: NULL output");
    int64_t n = per_layer(c), body = c->num_layers * n;
    int64_t size = cr_tensor_table_size(c, num_labels);
    if (index < 0 || index >= size)
        return cr_fail(CR_E_ARG, "tensor table: index %lld is outside [0, %lld)", (long long)index,
                       (long long)size);
    if (index == 0) return cr_tensor_role_entry(c, num_labels, CR_ROLE_EMBED, 0, out), CR_OK;
    if (index == body + 1) return cr_tensor_role_entry(c, num_labels, CR_ROLE_FINAL_NORM, 0, out), CR_OK;
    if (index == body + 2) return cr_tensor_role_entry(c, num_labels, CR_ROLE_HEAD, 0, out), CR_OK;
    int64_t layer = (index - 1) / n, k = (index - 1) % n;
    for (int r = CR_ROLE_FIRST_LAYER; r <= CR_ROLE_LAST_LAYER; r++)
        if (cr_tensor_role_entry(c, num_labels, (cr_tensor_role)r, layer, out) && k-- == 0) return CR_OK;
    return cr_fail(CR_E_ARG, "tensor table: no entry %lld", (long long)index);  /* unreachable */
}
