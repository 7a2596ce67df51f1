/* crossrank.h — the C core's API: load a decoder-only checkpoint as a sequence classifier and
 * score packed batches of token sequences.
 *
 * Thread safety
 *   - A cr_model is immutable once cr_model_load() returns: any number of threads may call
 *     cr_forward() on it at once. Compute is serialized by the process-wide engine lock, so
 *     concurrent calls queue instead of oversubscribing the cores; each call allocates its own
 *     workspace.
 *   - cr_last_error() is thread-local: it describes the last failure of the calling thread.
 *   - After fork(), the child re-creates the worker pool on first use; a model loaded before the
 *     fork keeps working in both processes.
 *
 * Nothing in this library exits or aborts on bad input: every entry point returns a cr_status
 * and, on failure, leaves a message naming the file, tensor and expected/found values. */
#ifndef CROSSRANK_H
#define CROSSRANK_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cr_status {
    CR_OK = 0,
    CR_E_IO,          /* a file is missing or unreadable */
    CR_E_FORMAT,      /* a checkpoint file is malformed */
    CR_E_SHAPE,       /* a tensor's shape or dtype does not fit the config */
    CR_E_UNSUPPORTED, /* well-formed, but not something crossrank runs */
    CR_E_NOMEM,       /* an allocation failed or a size would overflow */
    CR_E_ARG,         /* the caller passed an invalid argument */
    CR_E_ABORTED,     /* the run was cancelled through cr_run_params.abort */
} cr_status;

/* The message of the calling thread's last failure ("" if none). */
const char *cr_last_error(void);

/* Element types of safetensors files (names as the format spells them). */
typedef enum cr_dtype {
    CR_DT_F32 = 0, CR_DT_BF16, CR_DT_F16, CR_DT_F64,
    CR_DT_I64, CR_DT_I32, CR_DT_I16, CR_DT_I8, CR_DT_U8, CR_DT_BOOL,
    CR_DT_F8_E4M3, CR_DT_F8_E5M2, CR_DT_U16, CR_DT_U32, CR_DT_U64,
    CR_DT_COUNT
} cr_dtype;

size_t cr_dtype_size(cr_dtype dt);
const char *cr_dtype_name(cr_dtype dt);

typedef enum cr_activation {
    CR_ACT_SILU = 0,    /* SwiGLU: silu(gate) * up */
    CR_ACT_GELU_TANH,   /* GeGLU with the tanh approximation (Gemma per vLLM) */
    CR_ACT_GELU,        /* GeGLU with exact erf GELU */
} cr_activation;

#define CR_MAX_LAYERS 4096
#define CR_MAX_LABELS 65536   /* outputs of a classification head */

/* The typed model config. Python's normaliser fills it from config.json + hf_overrides; every
 * architecture difference is a field here, not a separate forward. */
typedef struct cr_config {
    int64_t vocab_size;
    int64_t hidden_size;        /* H */
    int64_t intermediate_size;  /* I */
    int64_t num_layers;         /* L */
    int64_t num_heads;          /* NH */
    int64_t num_kv_heads;       /* NKV, divides NH */
    int64_t head_dim;           /* D, even */
    float rms_norm_eps;
    float attn_scale;           /* softmax scale, usually D^-0.5 */
    float embed_scale;          /* embeddings are multiplied by it (Gemma: sqrt(H)), else 1 */
    cr_activation act;
    int qk_norm;                /* per-head RMSNorm of q and k before RoPE (Qwen3) */
    int qkv_bias;               /* q/k/v projections have biases */
    int o_bias;                 /* o_proj has a bias */
    int mlp_bias;               /* gate/up/down have biases */
    int norm_add_one;           /* RMSNorm scales by (1 + w) (Gemma) */
    int tie_word_embeddings;    /* the LM head is model.embed_tokens.weight */
    const int32_t *layer_window; /* [L] attention window per layer, 0 = full; may be NULL */
    const float *rope_inv_freq;  /* [D/2] inverse frequencies, float32, as HF computes them */
    float rope_attn_factor;     /* cos/sin are multiplied by it (yarn), else 1 */
} cr_config;

/* How the classification head is built. */
typedef enum cr_head_kind {
    CR_HEAD_SCORE_TENSOR = 0, /* the checkpoint holds score.weight [num_labels, H] */
    CR_HEAD_LM_ROWS,          /* rows of the LM head (or the tied embeddings) */
} cr_head_kind;

typedef struct cr_head_spec {
    cr_head_kind kind;
    int64_t num_rows;         /* LM_ROWS: how many token rows */
    const int64_t *rows;      /* LM_ROWS: [num_rows] token ids, in label order */
    int two_way;              /* LM_ROWS: from_2_way_softmax, w = W[rows[1]] - W[rows[0]] */
} cr_head_spec;

/* cr_load_params.check_finite: refuse a checkpoint whose weights hold NaN or Inf. */
#define CR_CHECK_FINITE_AUTO (-1)  /* on when the checkpoint holds at most CR_CHECK_FINITE_AUTO_MAX weights */
#define CR_CHECK_FINITE_OFF 0
#define CR_CHECK_FINITE_ON 1
#define CR_CHECK_FINITE_AUTO_MAX (INT64_C(2) << 30)   /* 2^31 weights: models up to ~2B parameters */

typedef struct cr_load_params {
    cr_config config;
    cr_head_spec head;
    cr_dtype weight_dtype;    /* compute format of the linear weights: CR_DT_F32, CR_DT_BF16 or CR_DT_I8 */
    int threads;              /* worker threads for compute, >= 1 */
    int check_finite;         /* CR_CHECK_FINITE_*: scan every weight read (and the whole embedding
                                 table) for NaN/Inf, a CR_E_FORMAT error naming the tensor */
} cr_load_params;

cr_load_params cr_load_params_default(void);

/* Checks the scalar fields of a config: every dimension within the engine's bounds (named by its
 * Hugging Face config key), heads a multiple of key/value heads, head_dim even, the scales finite,
 * the activation known. The one place these bounds live: Python's normaliser calls it (through
 * _core.check_config) before it derives anything from the dimensions, and cr_model_load calls it
 * again. Does not read rope_inv_freq or layer_window. CR_E_ARG with cr_last_error() on failure. */
cr_status cr_config_check(const cr_config *config);

/* ---- The tensor table: every tensor a checkpoint of this config holds, in one order --------
 * The loader's shape check and binder read it, and Python's checkpoint writers write it: one
 * definition of the HF names and shapes per architecture (Qwen2/Qwen3/Gemma differ only by the
 * config's flags: q/k norms, biases, tied embeddings). Order: embeddings, then per layer
 * input_layernorm, post_attention_layernorm, q/k/v/o projections (each weight then its bias),
 * q_norm, k_norm, gate/up/down projections, then model.norm, then the head: lm_head.weight
 * [V, H] for a causal LM with untied embeddings (num_labels = 0), or score.weight [N, H] for a
 * sequence classifier of N = num_labels labels. An optional score.bias is not listed. */
typedef enum cr_tensor_kind {
    CR_TENSOR_EMBEDDING = 0, /* model.embed_tokens.weight [V, H] */
    CR_TENSOR_NORM,          /* an RMSNorm weight [H] or [D] */
    CR_TENSOR_WEIGHT,        /* a projection weight [out, in] */
    CR_TENSOR_BIAS,          /* a projection bias [out] */
    CR_TENSOR_LM_HEAD,       /* lm_head.weight [V, H] */
    CR_TENSOR_SCORE,         /* score.weight [num_labels, H] */
} cr_tensor_kind;

#define CR_TENSOR_NAME_CAP 64

typedef struct cr_tensor_entry {
    char name[CR_TENSOR_NAME_CAP];
    int ndim;                 /* 1 or 2 */
    int64_t shape[2];         /* shape[1] = 0 when ndim == 1 */
    cr_tensor_kind kind;
} cr_tensor_entry;

/* The number of tensors in the table of `config` (pointer fields unused); num_labels is 0 for a
 * causal LM, else in [1, CR_MAX_LABELS]. Returns -1 (and sets cr_last_error) when the config's
 * dims are out of bounds. */
int64_t cr_tensor_table_size(const cr_config *config, int64_t num_labels);
/* Entry `index` of that table, in [0, cr_tensor_table_size()). */
cr_status cr_tensor_table_entry(const cr_config *config, int64_t num_labels, int64_t index,
                                cr_tensor_entry *out);

typedef struct cr_model cr_model;

/* Loads model.safetensors or the shards of model.safetensors.index.json under model_dir. */
cr_status cr_model_load(const char *model_dir, const cr_load_params *params, cr_model **out);
void cr_model_free(cr_model *model);   /* accepts NULL */

int64_t cr_model_num_labels(const cr_model *model);
int64_t cr_model_hidden_size(const cr_model *model);
int64_t cr_model_vocab_size(const cr_model *model);
/* Bytes of resident weights owned by the model (packed copies; mapped pages not counted). */
int64_t cr_model_weight_bytes(const cr_model *model);

/* A prefix handle: the K/V of every layer for the first `len` tokens of some sequences, computed
 * once and attended to by every sequence that extends it. Immutable once built. */
typedef struct cr_prefix cr_prefix;

/* A packed batch: S sequences laid back to back in T tokens, no padding. Sequence s owns tokens
 * [seq_start[s], seq_start[s+1]); when prefix[s] is set, its tokens continue the first
 * prefix_len[s] tokens held by that handle and their positions start at prefix_len[s]. */
typedef struct cr_batch {
    int64_t n_tokens;              /* T */
    const int32_t *tokens;         /* [T] token ids */
    const int32_t *pos;            /* [T] RoPE positions */
    int64_t n_seqs;                /* S */
    const int64_t *seq_start;      /* [S+1], seq_start[0] = 0, seq_start[S] = T, each span >= 1 */
    const cr_prefix *const *prefix;/* [S] or NULL: optional prefix per sequence */
    const int64_t *prefix_len;     /* [S] or NULL: tokens of the prefix used (<= its length) */
    float *out;                    /* [S, num_labels] raw logits, written on success */
} cr_batch;

/* Per-call controls. `abort` is polled per pool task and between GEMM blocks; when it becomes
 * non-zero the call returns CR_E_ABORTED promptly and the model stays usable. `progress` is
 * called on the calling thread with (done, total) work units. Both may be NULL. */
typedef struct cr_run_params {
    const atomic_int *abort;
    void (*progress)(void *user, int64_t done, int64_t total);
    void *progress_user;
} cr_run_params;

/* Scores a batch: out[s] = head(final_norm(hidden of the last token of sequence s)). */
cr_status cr_forward(const cr_model *model, const cr_batch *batch, const cr_run_params *run);

/* Builds a prefix handle over tokens[0..n) at positions 0..n-1. */
cr_status cr_prefix_build(const cr_model *model, const int32_t *tokens, int64_t n,
                          const cr_run_params *run, cr_prefix **out);
int64_t cr_prefix_len(const cr_prefix *prefix);
void cr_prefix_free(cr_prefix *prefix);  /* accepts NULL */

/* CPU dispatch: the instruction set the kernels use ("ref", "avx2", "avx512", "avx512bf16"). */
const char *cr_isa_name(void);

/* What the dispatcher found. Every string is static (valid for the life of the process). */
typedef struct cr_cpu_info {
    const char *isa;        /* the kernels in use: cr_isa_name() */
    const char *detected;   /* the best level the CPU and OS allow, before CROSSRANK_ISA caps it */
    const char *features;   /* comma-separated CPU features ("avx2,fma,f16c,avx512f,...") */
    const char *vendor;     /* the CPUID vendor string ("GenuineIntel", ...; "" when unknown) */
    const char *amx;        /* "usable", "not asked yet", or why not ("refused by the kernel: ...") */
} cr_cpu_info;

/* Fills *out; never fails, asks for nothing (the AMX permission stays as it was). Thread-safe. */
void cr_cpu_describe(cr_cpu_info *out);

/* Whether the AMX kernels may run in this process: the CPU and XCR0 have the tile state, the
 * active level is AMX (not capped) and Linux granted the permission to use XTILEDATA. The
 * permission is asked once per process, lazily, at the first call (thread-safe), never at load of
 * the library. CROSSRANK_AMX_DENY=1 (a testing aid) makes it a refusal. After a refusal the
 * process runs the AVX512BF16 level: cr_isa_name() says so and cr_cpu_info.amx says why. */
int cr_amx_usable(void);

/* The BLAS this build links for the opt-in CROSSRANK_GEMM=openblas path ("openblas"), or NULL. */
const char *cr_blas_name(void);

/* Returns the C heap's free pages to the OS (glibc's malloc_trim): 1 when some were released,
 * 0 when none were or the C library cannot (not glibc). A load frees large temporary buffers that
 * glibc would otherwise keep. Thread-safe; may take a while on a large heap, so call it without
 * holding locks others wait on. */
int cr_release_free_memory(void);

/* ---- Checkpoint inspection, without loading a model ---------------------------------------- */

typedef struct cr_checkpoint cr_checkpoint;

/* One tensor of an open checkpoint. The pointers stay valid until cr_checkpoint_close(). */
typedef struct cr_tensor_info {
    const char *name;              /* valid UTF-8 (the header parser checked it) */
    cr_dtype dtype;
    int ndim;                      /* 0..8 */
    const int64_t *shape;          /* [ndim], each >= 0 */
    const char *file;              /* the file holding it, relative to the model directory */
} cr_tensor_info;

/* Opens model_dir/model.safetensors.index.json if present (every shard it names must exist, every
 * tensor it lists must be in its shard, and no tensor may appear in two shards), else
 * model_dir/model.safetensors. Each file is mapped read-only and fully validated before this
 * returns: CR_E_IO (missing, unreadable), CR_E_FORMAT (malformed) or CR_E_NOMEM, with the message
 * naming the file. On failure *out is NULL. */
cr_status cr_checkpoint_open(const char *model_dir, cr_checkpoint **out);
void cr_checkpoint_close(cr_checkpoint *ck);   /* accepts NULL */

/* Tensors of the checkpoint, sorted by name: i in [0, cr_checkpoint_n_tensors()). An i out of
 * range gives a zeroed *out (name NULL). */
size_t cr_checkpoint_n_tensors(const cr_checkpoint *ck);
void cr_checkpoint_tensor(const cr_checkpoint *ck, size_t i, cr_tensor_info *out);

#ifdef __cplusplus
}
#endif
#endif /* CROSSRANK_H */
