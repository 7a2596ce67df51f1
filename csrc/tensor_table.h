/* tensor_table.h — the tensor table by role, for the loader: the binder asks for the entry of one
 * role (of one layer) and gets the name and shape the table lists, so the shape check, the
 * binder and the public table (cr_tensor_table_entry) cannot disagree. */
#ifndef CR_TENSOR_TABLE_H
#define CR_TENSOR_TABLE_H

#include "crossrank.h"

/* Every tensor's role. Per-layer roles are in table order, each projection's bias right after
 * its weight (the binder finds a bias as its weight's role + 1). */
typedef enum cr_tensor_role {
    CR_ROLE_EMBED = 0,
    CR_ROLE_ATTN_NORM,
    CR_ROLE_MLP_NORM,
    CR_ROLE_Q, CR_ROLE_Q_BIAS,
    CR_ROLE_K, CR_ROLE_K_BIAS,
    CR_ROLE_V, CR_ROLE_V_BIAS,
    CR_ROLE_O, CR_ROLE_O_BIAS,
    CR_ROLE_Q_NORM,
    CR_ROLE_K_NORM,
    CR_ROLE_GATE, CR_ROLE_GATE_BIAS,
    CR_ROLE_UP, CR_ROLE_UP_BIAS,
    CR_ROLE_DOWN, CR_ROLE_DOWN_BIAS,
    CR_ROLE_FINAL_NORM,
    CR_ROLE_HEAD,       /* lm_head.weight (num_labels = 0, untied) or score.weight (num_labels > 0) */
} cr_tensor_role;

#define CR_ROLE_FIRST_LAYER CR_ROLE_ATTN_NORM
#define CR_ROLE_LAST_LAYER CR_ROLE_DOWN_BIAS

/* Fills *out with the entry of `role` (of layer `layer` for a per-layer role) and returns 1, or
 * returns 0 when a checkpoint of this config has no such tensor. The config's dims must have
 * passed cr_config_check, 0 <= layer < num_layers, num_labels in [0, CR_MAX_LABELS]. */
int cr_tensor_role_entry(const cr_config *c, int64_t num_labels, cr_tensor_role role, int64_t layer,
                         cr_tensor_entry *out);

#endif
