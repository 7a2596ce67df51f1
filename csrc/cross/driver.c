/* driver.c — scores a fixture through the public API alone (crossrank.h), for builds that have no
 * Python: the engine cross-compiled for another architecture and run under emulation (run.sh).
 *
 *   driver SPEC MODEL_DIR
 *   driver --isa              # the architecture it was built for, the kernel level it runs
 *
 * SPEC is what write_spec.py writes: the cr_config as the Python package fills it, the head and
 * the token ids. All sequences go in one packed batch, as the package runs them. Prints one line
 * per weight dtype and thread count, "DTYPE tTHREADS" then the float32 bits of the raw logits,
 * the format write_spec.py prints the package's own logits in. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crossrank.h"

#if defined(__aarch64__)
#define ARCH "aarch64"
#elif defined(__x86_64__)
#define ARCH "x86_64"
#else
#define ARCH "other"
#endif

static FILE *spec;
static const char *spec_path;

static void die(const char *what) {
    fprintf(stderr, "driver: %s: %s\n", spec_path, what);
    exit(2);
}

static void key(const char *name) {
    char word[64];
    if (fscanf(spec, "%63s", word) != 1 || strcmp(word, name) != 0) die(name);
}

static int64_t int_field(const char *name) {
    int64_t v;
    key(name);
    if (fscanf(spec, "%" SCNd64, &v) != 1) die(name);
    return v;
}

static int64_t next_int(const char *what) {
    int64_t v;
    if (fscanf(spec, "%" SCNd64, &v) != 1) die(what);
    return v;
}

/* floats travel as their bits, so nothing is rounded twice */
static float next_bits(const char *what) {
    uint32_t bits;
    float v;
    if (fscanf(spec, "%" SCNx32, &bits) != 1) die(what);
    memcpy(&v, &bits, sizeof v);
    return v;
}

static float float_field(const char *name) {
    key(name);
    return next_bits(name);
}

static void *alloc(int64_t n, size_t size) {
    void *p = calloc(n > 0 ? (size_t)n : 1, size);
    if (!p) die("out of memory");
    return p;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--isa") == 0) {
        printf("%s %s\n", ARCH, cr_isa_name());
        return 0;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: %s SPEC MODEL_DIR | --isa\n", argv[0]);
        return 2;
    }
    spec_path = argv[1];
    if (!(spec = fopen(spec_path, "r"))) die("cannot open");
    if (int_field("crossrank-spec") != 1) die("unknown version");

    cr_load_params p = cr_load_params_default();
    cr_config *c = &p.config;
    c->vocab_size = int_field("vocab_size");
    c->hidden_size = int_field("hidden_size");
    c->intermediate_size = int_field("intermediate_size");
    c->num_layers = int_field("num_hidden_layers");
    c->num_heads = int_field("num_attention_heads");
    c->num_kv_heads = int_field("num_key_value_heads");
    c->head_dim = int_field("head_dim");
    c->rms_norm_eps = float_field("rms_norm_eps");
    c->attn_scale = float_field("attn_scale");
    c->embed_scale = float_field("embed_scale");
    c->rope_attn_factor = float_field("rope_attention_factor");
    c->qk_norm = (int)int_field("qk_norm");
    c->qkv_bias = (int)int_field("qkv_bias");
    c->o_bias = (int)int_field("o_bias");
    c->mlp_bias = (int)int_field("mlp_bias");
    c->norm_add_one = (int)int_field("norm_add_one");
    c->tie_word_embeddings = (int)int_field("tie_word_embeddings");

    char word[64];
    key("activation");
    if (fscanf(spec, "%63s", word) != 1) die("activation");
    if (strcmp(word, "silu") == 0) c->act = CR_ACT_SILU;
    else if (strcmp(word, "gelu_tanh") == 0) c->act = CR_ACT_GELU_TANH;
    else if (strcmp(word, "gelu") == 0) c->act = CR_ACT_GELU;
    else die("unknown activation");

    int64_t n = int_field("layer_windows");
    int32_t *windows = NULL;
    if (n > 0) {
        if (n != c->num_layers) die("layer_windows");
        windows = alloc(n, sizeof *windows);
        for (int64_t i = 0; i < n; i++) windows[i] = (int32_t)next_int("layer_windows");
    }
    c->layer_window = windows;

    n = int_field("rope_inv_freq");
    if (n != c->head_dim / 2) die("rope_inv_freq");
    float *inv_freq = alloc(n, sizeof *inv_freq);
    for (int64_t i = 0; i < n; i++) inv_freq[i] = next_bits("rope_inv_freq");
    c->rope_inv_freq = inv_freq;

    key("head");
    if (fscanf(spec, "%63s", word) != 1) die("head");
    int64_t *rows = NULL;
    if (strcmp(word, "lm_rows") == 0) {
        p.head.kind = CR_HEAD_LM_ROWS;
        p.head.two_way = (int)next_int("head two_way");
        p.head.num_rows = next_int("head rows");
        rows = alloc(p.head.num_rows, sizeof *rows);
        for (int64_t i = 0; i < p.head.num_rows; i++) rows[i] = next_int("head rows");
        p.head.rows = rows;
    } else if (strcmp(word, "score_weight") == 0) {
        p.head.kind = CR_HEAD_SCORE_TENSOR;
    } else {
        die("unknown head");
    }

    int64_t n_seqs = int_field("sequences");
    if (n_seqs < 1 || n_seqs > 1024) die("sequences");
    int64_t *seq_start = alloc(n_seqs + 1, sizeof *seq_start);
    int64_t cap = 1024, n_tokens = 0;
    int32_t *tokens = alloc(cap, sizeof *tokens), *pos = alloc(cap, sizeof *pos);
    for (int64_t s = 0; s < n_seqs; s++) {
        int64_t len = next_int("sequence length");
        if (len < 1 || len > (1 << 20)) die("sequence length");
        while (n_tokens + len > cap) {
            cap *= 2;
            if (!(tokens = realloc(tokens, (size_t)cap * sizeof *tokens))) die("out of memory");
            if (!(pos = realloc(pos, (size_t)cap * sizeof *pos))) die("out of memory");
        }
        for (int64_t i = 0; i < len; i++) {
            tokens[n_tokens + i] = (int32_t)next_int("token id");
            pos[n_tokens + i] = (int32_t)i;
        }
        n_tokens += len;
        seq_start[s + 1] = n_tokens;
    }
    fclose(spec);

    static const struct { const char *name; cr_dtype dt; } dtypes[] = {
        {"float32", CR_DT_F32}, {"bfloat16", CR_DT_BF16}, {"int8", CR_DT_I8}};
    static const int threads[] = {1, 2};
    for (size_t d = 0; d < sizeof dtypes / sizeof *dtypes; d++) {
        for (size_t t = 0; t < sizeof threads / sizeof *threads; t++) {
            p.weight_dtype = dtypes[d].dt;
            p.threads = threads[t];
            cr_model *model = NULL;
            if (cr_model_load(argv[2], &p, &model) != CR_OK) {
                fprintf(stderr, "driver: load %s (%s): %s\n", argv[2], dtypes[d].name, cr_last_error());
                return 1;
            }
            int64_t labels = cr_model_num_labels(model);
            float *out = alloc(n_seqs * labels, sizeof *out);
            cr_batch batch = {.n_tokens = n_tokens, .tokens = tokens, .pos = pos, .n_seqs = n_seqs,
                              .seq_start = seq_start, .out = out};
            if (cr_forward(model, &batch, NULL) != CR_OK) {
                fprintf(stderr, "driver: forward (%s): %s\n", dtypes[d].name, cr_last_error());
                return 1;
            }
            printf("%s t%d", dtypes[d].name, threads[t]);
            for (int64_t i = 0; i < n_seqs * labels; i++) {
                uint32_t bits;
                memcpy(&bits, &out[i], sizeof bits);
                printf(" %08" PRIx32, bits);
            }
            printf("\n");
            free(out);
            cr_model_free(model);
        }
    }
    free(tokens);
    free(pos);
    free(seq_start);
    free(rows);
    free(inv_freq);
    free(windows);
    return 0;
}
