/* model.h — the loaded model (immutable after load) and the prefix handle, shared by model.c,
 * forward.c and attention.c. */
#ifndef CR_MODEL_H
#define CR_MODEL_H

#include <stdatomic.h>

#include "crossrank.h"
#include "linear.h"
#include "safetensors.h"

typedef struct cr_layer {
    float *attn_norm;      /* [H] input_layernorm (already 1 + w for Gemma) */
    float *q_norm;         /* [D] per-head q RMSNorm, or NULL */
    float *k_norm;         /* [D] per-head k RMSNorm, or NULL */
    cr_linear qkv;         /* [(NH + 2 NKV) D, H] q|k|v fused, optional biases */
    cr_linear o;           /* [H, NH D] */
    float *mlp_norm;       /* [H] post_attention_layernorm */
    cr_linear gate_up;     /* [2 I', H] gate|up fused, each half I' = I rounded up to whole panels (zero rows) */
    cr_linear down;        /* [H, I] */
    int32_t window;        /* attention window in positions, 0 = full */
} cr_layer;

/* A forward pass's buffers (forward.c), which a model keeps from one call to the next. */
typedef struct cr_workspace cr_workspace;
void cr_workspace_free(cr_workspace *ws); /* accepts NULL */

struct cr_model {
    cr_config cfg;         /* copied; the pointer fields are NULL here (see below) */
    int threads;
    cr_dtype compute_dtype; /* CR_DT_F32, CR_DT_BF16 or CR_DT_I8: the linear layers' format */
    cr_checkpoint *ck;     /* kept open: the embedding table is gathered from its mapping */
    cr_tensor_view embed;  /* [V, H] in the checkpoint dtype */
    cr_layer *layers;      /* [L] */
    float *final_norm;     /* [H] */
    float *head_w;         /* [num_labels, H] float32 */
    float *head_b;         /* [num_labels] or NULL */
    int64_t num_labels;
    float *rope_inv_freq;  /* [D/2] */
    int64_t weight_bytes;
    /* The last pass's buffers, for the next (forward.c): the one field a pass changes, by an
     * atomic exchange, so concurrent passes never share them. NULL until a pass kept some. */
    cr_workspace *_Atomic workspace;
};

struct cr_prefix {
    int64_t len;           /* tokens */
    int64_t kv_dim;        /* NKV * D */
    int64_t n_layers;
    float *k;              /* [L, len, kv_dim] after norm and RoPE */
    float *v;              /* [L, len, kv_dim] */
    const cr_model *model; /* the model it was built with (checked on use) */
};

/* Reads one row of the embedding table into dst[H] as float32, times the embedding scale. */
void cr_embed_row(const cr_model *m, int32_t token, float *dst);

/* Called once the rows a pass needs are copied: drops the embedding table's file pages again, so
 * the table's resident share does not grow with every document read. Needs no lock. */
void cr_embed_rows_done(const cr_model *m);

#endif
