/* forward.c — the packed forward, one code path for every architecture (differences are config
 * flags): embed -> L x (norm, attention, norm, MLP) -> final norm of each sequence's last token
 * -> head. The last layer runs attention, o_proj and the MLP for the last token of each sequence
 * only: nothing else reaches the head. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "error.h"
#include "kernels/kernels.h"
#include "model.h"
#include "profile.h"
#include "threads.h"

/* Rows of the token-wise stages processed at once, which bounds the per-pass workspace beside the
 * [T, ...] residual stream, q|k|v and attention output whatever T is: norms and the q|k|v and o
 * projections in blocks of CR_ROW_BLOCK rows, the MLP in sub-blocks of CR_MLP_ROW_BLOCK (its
 * activations are I wide). At the 8B shape an 8,192-token pass holds 448 MiB of full-length
 * buffers and ~50 MiB of blocks (int8: ~80, 48 of them the GLU's float32 h). The blocks are large
 * enough that the pool's dispatches per block (a few tens of microseconds each) stay small beside
 * the GEMMs, and that on many cores each MLP GEMM's tasks have rows enough to share: a task reads
 * its panel group's weights once for all its rows, so at 16 threads 256-row sub-blocks (64-row
 * tasks) read every weight four times as often as 1024-row ones, and measured 12% slower end to
 * end on a 16-core Emerald Rapids (both bf16 and int8; neutral on 2 Zen 4 cores).
 * Every stage is row-independent (each output row is one fixed chain over its own input row), so
 * the block sizes never change a score. CROSSRANK_ROW_BLOCK overrides CR_ROW_BLOCK (1..65536; the
 * MLP sub-block is then at most that), for the tests that check exactly that. */
#define CR_ROW_BLOCK 1024
#define CR_MLP_ROW_BLOCK 1024
#define CR_ROW_BLOCK_MAX 65536
#define CR_ROWS_PER_TASK 8

typedef struct pass {
    const cr_model *m;
    const cr_batch *b;
    cr_exec ex;
    cr_workspace *ws; /* where every buffer below lives (ex.scratch: its projections' buffers) */
    int64_t T, S;
    int64_t H, D, NH, NKV, IM, QKVD; /* IM: intermediate size */
    float *x;         /* [T, H] residual stream */
    int64_t B;        /* rows per block: min(T, row block) */
    int64_t BM;       /* rows per MLP sub-block: min(B, CR_MLP_ROW_BLOCK) */
    float *xn;        /* [B, H] normed input / projection output of one row block */
    float *qkv;       /* [T, QKVD] */
    float *attn;      /* [T, NH*D] attention output (last layer: [S, NH*D]) */
    float *cosb;      /* [T, D/2] */
    float *sinb;      /* [T, D/2] */
    float *hid;       /* [BM, I] the MLP's activations (NULL with bf16 rows: down's rows take them) */
    float *xs;        /* [S, H] last-token residual rows */
    /* bf16 layers take their inputs as bfloat16 rows in their own order (AMX: the tile order),
     * which the norms, attention and the GLU write directly (cr_linear_put_bf16): no float32 copy
     * of those inputs is stored, read back and converted. NULL for every other format. */
    uint16_t *xh;     /* [16 ceil(B / 16), row elems of H] q|k|v and gate|up inputs */
    uint16_t *xi;     /* [16 ceil(BM / 16), row elems of I] down inputs */
    uint16_t *xo;     /* [16 ceil(T / 16), row elems of NH*D] o inputs, which attention writes (then
                       * attn is NULL); where heads or row blocks do not fall on whole blocks and
                       * 16-row groups, NULL and attention writes attn */
    /* int8 layers likewise take their inputs quantized by their producers (cr_linear_put_i8): the
     * norms, each row whole from the worker's row buffer, which never leaves its core's caches,
     * and gate|up's GLU pass (cr_linear_apply_glu). Zeroed (q NULL) for every other format. */
    cr_i8_rows qh;    /* [B] q|k|v and gate|up inputs */
    cr_i8_rows qi;    /* [BM] down inputs */
    float *rowbuf;    /* [threads, rowbuf_stride]: row_floats of a row, then a quantized row's bytes */
    int64_t rowbuf_stride, row_floats;
    int own_rows;     /* the q|k|v, gate|up and down layers take bf16 (xh, xi) or int8 (qh, qi) rows */
    float *scratch;   /* [threads, scratch_stride] attention tiles (O(tile), not O(keys)) */
    int64_t scratch_stride;
    cr_prefix *capture; /* when building a prefix: receives K/V of every layer */
    double *phase_s;  /* CROSSRANK_PROFILE: seconds per phase of this pass, else NULL */
} pass;

/* CROSSRANK_PROFILE's phases, each timed on the calling thread around its pool jobs (so at any
 * thread count they add up to the pass): the projections, attention, and the row-wise steps
 * between them (the norms include the residual add before the MLP's, and writing the next
 * projection's own input rows); the rest is the embedding, the RoPE table and the head. */
enum { PH_QKV, PH_ATTENTION, PH_O, PH_GATE_UP, PH_DOWN, PH_NORM, PH_QK_ROPE, PH_ADD, PH_COUNT, PH_NONE = -1 };
static const char *const phase_names[PH_COUNT] = {"q|k|v", "attention", "o", "gate|up+GLU", "down",
                                                  "norms", "q/k-norms+RoPE", "adds"};

static double phase_start(const pass *p) { return p->phase_s ? cr_seconds_now() : 0.0; }

static void phase_end(pass *p, int phase, double t0) {
    if (p->phase_s && phase != PH_NONE) p->phase_s[phase] += cr_seconds_now() - t0;
}

/* ---- the pass's buffers ------------------------------------------------------------------- */

/* A model keeps its last pass's buffers for the next call (~150 MiB at 16 documents of the 0.6B
 * shape: allocated per call, they were ~40,000 fresh pages to fault in and zero every call, half a
 * second of system time per call at 16 threads), each grown when a pass needs more. A pass whose
 * buffers come to more than CR_WORKSPACE_KEEP_BYTES frees them at its end, so one long batch does
 * not hold its memory after the call. None of a buffer's old contents is read: a pass writes every
 * value it reads (the bf16 rows past a call's last, which the tiles read and whose results are
 * dropped, hold zeros when fresh and earlier rows after). */
#define CR_WORKSPACE_KEEP_BYTES ((size_t)512 << 20)

enum { WS_X, WS_XN, WS_QKV, WS_ATTN, WS_COS, WS_SIN, WS_HID, WS_XS, WS_SCRATCH, WS_XH, WS_XI, WS_XO,
       WS_ROWBUF, WS_STAGE, WS_COUNT };

struct cr_workspace {
    cr_buf buf[WS_COUNT];
    cr_i8_rows qh, qi;         /* int8 own input rows */
    int64_t qh_rows, qi_rows;  /* how many rows they hold */
    cr_linear_scratch lin;     /* the projections' buffers */
};

void cr_workspace_free(cr_workspace *ws) {
    if (!ws) return;
    for (int i = 0; i < WS_COUNT; i++) cr_buf_free(&ws->buf[i]);
    cr_linear_i8_rows_free(&ws->qh);
    cr_linear_i8_rows_free(&ws->qi);
    cr_linear_scratch_free(&ws->lin);
    free(ws);
}

static size_t workspace_bytes(const cr_workspace *ws, const cr_model *m) {
    size_t n = 0;
    if (ws->qh.q) n += (size_t)cr_linear_i8_rows_bytes(&m->layers[0].qkv, ws->qh_rows);
    if (ws->qi.q) n += (size_t)cr_linear_i8_rows_bytes(&m->layers[0].down, ws->qi_rows);
    for (int i = 0; i < WS_COUNT; i++) n += ws->buf[i].bytes;
    for (int i = 0; i < CR_LINEAR_SCRATCH_SLOTS; i++) n += ws->lin.buf[i].bytes;
    return n;
}

/* The model's kept workspace (the pass then owns it), or a new empty one. */
static cr_workspace *take_workspace(const cr_model *m) {
    /* the model is immutable but for this field (model.h), which is never const-defined */
    cr_workspace *ws = atomic_exchange(&((cr_model *)m)->workspace, NULL);
    return ws ? ws : cr_calloc(1, sizeof *ws, "pass workspace");
}

/* Back to the model for the next pass, unless it is over the bound or another pass's came back
 * first. */
static void keep_workspace(const cr_model *m, cr_workspace *ws) {
    cr_workspace *none = NULL;
    if (workspace_bytes(ws, m) > CR_WORKSPACE_KEEP_BYTES ||
        !atomic_compare_exchange_strong(&((cr_model *)m)->workspace, &none, ws))
        cr_workspace_free(ws);
}

static float *alloc_rows(int64_t rows, int64_t cols, const char *what) {
    size_t n;
    if (!cr_mul_size((size_t)rows, (size_t)cols, &n) || !cr_mul_size(n, sizeof(float), &n)) {
        cr_fail(CR_E_NOMEM, "workspace %s overflows", what);
        return NULL;
    }
    return cr_aligned_alloc(n, what);
}

static float *ws_rows(cr_workspace *ws, int slot, int64_t rows, int64_t cols, const char *what) {
    return cr_buf_get(&ws->buf[slot], (size_t)rows, (size_t)cols * sizeof(float), 0, what);
}

/* bf16 input rows of W for up to `rows` rows (whole 16-row groups: the rows past a call's last
 * one are read by the tiles; zeros when fresh). */
static uint16_t *ws_bf16_rows(cr_workspace *ws, int slot, const cr_linear *W, int64_t rows, const char *what) {
    return cr_buf_get(&ws->buf[slot], (size_t)((rows + 15) / 16 * 16),
                      (size_t)cr_linear_row_elems(W) * sizeof(uint16_t), 1, what);
}

/* int8 input rows of W for up to `rows` rows in *r, which holds *held of them. */
static int ws_i8_rows(const cr_linear *W, int64_t rows, cr_i8_rows *r, int64_t *held) {
    if (r->q && *held >= rows) return 1;
    cr_linear_i8_rows_free(r);
    *held = 0;
    if (cr_linear_i8_rows_alloc(W, rows, r) != CR_OK) return 0;
    *held = rows;
    return 1;
}

/* The row block: CR_ROW_BLOCK, or CROSSRANK_ROW_BLOCK when it is a whole number in
 * [1, CR_ROW_BLOCK_MAX] (anything else is ignored). */
static int64_t row_block(void) {
    const char *v = getenv("CROSSRANK_ROW_BLOCK");
    if (!v || !*v) return CR_ROW_BLOCK;
    char *end = NULL;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end != '\0' || n < 1 || n > CR_ROW_BLOCK_MAX) return CR_ROW_BLOCK;
    return (int64_t)n;
}

/* ---- row-parallel helpers ------------------------------------------------------------------ */

typedef void (*row_fn)(pass *p, const void *arg, int64_t row, int worker);
typedef struct rows_job { pass *p; row_fn fn; const void *arg; int64_t n; } rows_job;

static void rows_task(void *ctx, int64_t task, int worker) {
    const rows_job *j = ctx;
    int64_t r1 = (task + 1) * CR_ROWS_PER_TASK < j->n ? (task + 1) * CR_ROWS_PER_TASK : j->n;
    for (int64_t r = task * CR_ROWS_PER_TASK; r < r1; r++) j->fn(j->p, j->arg, r, worker);
}

/* fn on rows [0, n) on the pool, timed as `phase` (PH_NONE: the rest) */
static cr_status parallel_rows(pass *p, int phase, int64_t n, row_fn fn, const void *arg) {
    rows_job j = {p, fn, arg, n};
    double t0 = phase_start(p);
    cr_status st = cr_pool_run(p->ex.threads, (n + CR_ROWS_PER_TASK - 1) / CR_ROWS_PER_TASK, rows_task, &j,
                               p->ex.abort);
    phase_end(p, phase, t0);
    return st;
}

/* 1 / sqrt(mean(x^2) + eps) */
static float rms_scale(const float *x, int64_t n, float eps) {
    float ms = cr_kern->sumsq_f32(x, n) / (float)n;
    return 1.0f / sqrtf(ms + eps);
}

/* y = w * (x / sqrt(mean(x^2) + eps)), in float32 as HF computes it. */
static void rms_norm(const float *x, const float *w, int64_t n, float eps, float *y) {
    cr_kern->norm_scale_f32(x, w, rms_scale(x, n, eps), y, n);
}

/* Elements per part of a row a producer writes as a layer's own input: a multiple of
 * CR_AMX_BF16_K, on the stack of the worker, so the float32 values never leave L1. */
#define CR_PUT_PART 256

/* The next projection's own input rows, which a producer writes: bf16 rows in its order (xb), or
 * else int8 rows (xq). */
typedef struct sink { const cr_linear *W; uint16_t *xb; const cr_i8_rows *xq; } sink;

/* Elements [k0, k0 + n) of row r of the sink's layer, handed over in increasing k0: bf16 rounds
 * them into the tile order at once; int8 gathers them in the worker's row buffer and quantizes the
 * row when its last part arrives. Either way the bits of the layer converting float32 inputs. */
static void sink_part(pass *p, const sink *s, int worker, int64_t r, int64_t k0, const float *part, int64_t n) {
    if (s->xb) {
        cr_linear_put_bf16(s->W, s->xb, r, k0, part, n);
        return;
    }
    float *row = p->rowbuf + (int64_t)worker * p->rowbuf_stride;
    memcpy(row + k0, part, (size_t)n * sizeof(float));
    if (k0 + n == s->W->n_in) cr_linear_put_i8(s->W, s->xq, r, row, (uint8_t *)(row + p->row_floats));
}

/* rms_norm of row x (n = H elements) written as row r of the sink: the same values. */
static void rms_norm_put(pass *p, int worker, const float *x, const float *w, int64_t n, const sink *s, int64_t r) {
    float r_scale = rms_scale(x, n, p->m->cfg.rms_norm_eps), part[CR_PUT_PART];
    for (int64_t k0 = 0; k0 < n; k0 += CR_PUT_PART) {
        int64_t len = n - k0 < CR_PUT_PART ? n - k0 : CR_PUT_PART;
        cr_kern->norm_scale_f32(x + k0, w + k0, r_scale, part, len);
        sink_part(p, s, worker, r, k0, part, len);
    }
}

/* The q|k|v and gate|up layers' sink (their inputs are both H wide) and the down layer's. */
static sink h_sink(const pass *p, const cr_linear *W) { return (sink){W, p->xh, &p->qh}; }
static sink i_sink(const pass *p, const cr_linear *W) { return (sink){W, p->xi, &p->qi}; }

/* The sink's layer on rows [row0, row0 + n) of its own input rows where its producers write them
 * (row0 a multiple of 16), else on float32 rows x (row stride ldx), into y (row stride ldy) or,
 * with a GLU, into h; timed as `phase`. */
static cr_status project(pass *p, int phase, const sink *s, int64_t row0, const float *x, int64_t ldx, int64_t n,
                         float *y, int64_t ldy, const cr_glu *glu) {
    double t0 = phase_start(p);
    cr_linear_in in = {0};
    cr_i8_rows at;
    if (s->xb) {
        in.xb = s->xb + row0 * cr_linear_row_elems(s->W);
    } else if (s->xq && s->xq->q) {
        at = cr_linear_i8_rows_at(s->W, s->xq, row0);
        in.q8 = &at;
    } else {
        in.x = x;
        in.ldx = ldx;
    }
    cr_status st = glu ? cr_linear_apply_glu(s->W, &in, n, glu, &p->ex) : cr_linear_apply(s->W, &in, n, y, ldy, &p->ex);
    phase_end(p, phase, t0);
    return st;
}

typedef struct norm_arg { const float *src; float *dst; const float *w; } norm_arg;

static void norm_row(pass *p, const void *arg, int64_t r, int worker) {
    const norm_arg *a = arg;
    rms_norm(a->src + r * p->H, a->w, p->H, p->m->cfg.rms_norm_eps, a->dst + r * p->H);
}

typedef struct norm_put_arg { const float *src; const float *w; sink s; } norm_put_arg;

/* norm_row written as row r of the q|k|v projection's own input rows. */
static void norm_put_row(pass *p, const void *arg, int64_t r, int worker) {
    const norm_put_arg *a = arg;
    rms_norm_put(p, worker, a->src + r * p->H, a->w, p->H, &a->s, r);
}

static void embed_row(pass *p, const void *arg, int64_t r, int worker) {
    cr_embed_row(p->m, p->b->tokens[r], p->x + r * p->H);
}

static void rope_table_row(pass *p, const void *arg, int64_t r, int worker) {
    int64_t half = p->D / 2;
    float pos = (float)p->b->pos[r], f = p->m->cfg.rope_attn_factor;
    for (int64_t i = 0; i < half; i++) {
        float angle = pos * p->m->rope_inv_freq[i];
        p->cosb[r * half + i] = cosf(angle) * f;
        p->sinb[r * half + i] = sinf(angle) * f;
    }
}

typedef struct qk_arg { const cr_layer *layer; int64_t r0; } qk_arg;

/* Per-head q/k norms (Qwen3), then RoPE on the q and k heads of token r0 + r. */
static void qk_row(pass *p, const void *arg, int64_t r, int worker) {
    const qk_arg *a = arg;
    const cr_layer *layer = a->layer;
    int64_t D = p->D, half = D / 2;
    r += a->r0;
    float *row = p->qkv + r * p->QKVD;
    const float *c = p->cosb + r * half, *s = p->sinb + r * half;
    float eps = p->m->cfg.rms_norm_eps;
    for (int64_t h = 0; h < p->NH + p->NKV; h++) {
        float *v = row + h * D;
        if (layer->q_norm) rms_norm(v, h < p->NH ? layer->q_norm : layer->k_norm, D, eps, v);
        cr_kern->rope_f32(v, c, s, half);
    }
}

typedef struct add_arg { float *dst; const float *src; } add_arg;

static void add_row(pass *p, const void *arg, int64_t r, int worker) {
    const add_arg *a = arg;
    float *d = a->dst + r * p->H;
    const float *s = a->src + r * p->H;
    for (int64_t j = 0; j < p->H; j++) d[j] += s[j];
}

/* ---- the layer ---------------------------------------------------------------------------- */

typedef struct add_norm_arg { float *x; float *y; const float *w; } add_norm_arg;

/* x += y, then y = norm(x), on one row: the residual add after o_proj fused with the MLP's norm
 * (the same operations in the same order as two passes, one dispatch fewer). */
static void add_norm_row(pass *p, const void *arg, int64_t r, int worker) {
    const add_norm_arg *a = arg;
    float *x = a->x + r * p->H, *y = a->y + r * p->H;
    for (int64_t j = 0; j < p->H; j++) x[j] += y[j];
    rms_norm(x, a->w, p->H, p->m->cfg.rms_norm_eps, y);
}

typedef struct add_norm_put_arg { float *x; const float *y; const float *w; sink s; } add_norm_put_arg;

/* add_norm_row with the normed row written as the gate|up projection's own input. */
static void add_norm_put_row(pass *p, const void *arg, int64_t r, int worker) {
    const add_norm_put_arg *a = arg;
    float *x = a->x + r * p->H;
    const float *y = a->y + r * p->H;
    for (int64_t j = 0; j < p->H; j++) x[j] += y[j];
    rms_norm_put(p, worker, x, a->w, p->H, &a->s, r);
}

typedef struct o_rows { const cr_linear *o; uint16_t *dst; } o_rows;

/* Attention's put: a head of an output row into the o projection's bf16 input rows. */
static void put_o_input(void *ctx, int64_t row, int64_t col, const float *v, int64_t n) {
    const o_rows *r = ctx;
    cr_linear_put_bf16(r->o, r->dst, row, col, v, n);
}

/* Rows [0, rows) of x (a row block of the residual stream, or of the last-token rows) after
 * attention: x += o(attn), then x += down(act(gate(norm x)) * up(norm x)) in MLP sub-blocks.
 * The block's attention output is rows [a0, a0 + rows) of p->attn (or p->xo); its projection
 * outputs land in p->xn. */
static cr_status o_and_mlp(pass *p, const cr_layer *layer, int64_t a0, float *x, int64_t rows) {
    cr_status st;
    int64_t H = p->H, NHD = p->NH * p->D;
    /* bf16 rows where attention writes them (AMX: in tile order, a0 a multiple of 16 by the pass
     * setup), else attention's float32 output */
    sink o_in = {&layer->o, p->xo, NULL};
    if ((st = project(p, PH_O, &o_in, a0, p->attn ? p->attn + a0 * NHD : NULL, NHD, rows, p->xn, H, NULL)))
        return st;
    sink gate_up = h_sink(p, &layer->gate_up), down = i_sink(p, &layer->down);
    if (p->own_rows) {
        add_norm_put_arg an = {x, p->xn, layer->mlp_norm, gate_up};
        st = parallel_rows(p, PH_NORM, rows, add_norm_put_row, &an);
    } else {
        add_norm_arg an = {x, p->xn, layer->mlp_norm};
        st = parallel_rows(p, PH_NORM, rows, add_norm_row, &an);
    }
    if (st) return st;
    for (int64_t s0 = 0; s0 < rows; s0 += p->BM) {
        int64_t n = rows - s0 < p->BM ? rows - s0 : p->BM;
        /* the sub-block's normed input is no longer needed after gate|up: its rows of p->xn take
         * the down projection's output */
        float *xn = p->xn + s0 * H;
        /* s0 is a multiple of 16: on AMX its own rows start a 16-row group of the tile order. The
         * activations go straight to down's own bf16 or int8 rows, else to hid */
        cr_glu glu = {.act = p->m->cfg.act, .n = p->IM, .to = &layer->down, .rows = p->xi,
                      .q8 = p->qi.q ? &p->qi : NULL, .h = p->own_rows ? NULL : p->hid, .ldh = p->IM};
        if ((st = project(p, PH_GATE_UP, &gate_up, s0, xn, H, n, NULL, 0, &glu))) return st;
        if ((st = project(p, PH_DOWN, &down, 0, p->hid, p->IM, n, xn, H, NULL))) return st;
    }
    add_arg ad = {x, p->xn};
    return parallel_rows(p, PH_ADD, rows, add_row, &ad);
}

static cr_status layer_forward(pass *p, int64_t li, int last) {
    const cr_layer *layer = &p->m->layers[li];
    const cr_batch *b = p->b;
    int64_t T = p->T, S = p->S, H = p->H, NHD = p->NH * p->D;
    cr_status st;

    /* attention input, one row block at a time: norm, fused q|k|v projection, q/k norms, RoPE */
    for (int64_t r0 = 0; r0 < T; r0 += p->B) {
        int64_t rows = T - r0 < p->B ? T - r0 : p->B;
        sink qkv_in = h_sink(p, &layer->qkv);
        if (p->own_rows) {
            norm_put_arg na = {p->x + r0 * H, layer->attn_norm, qkv_in};
            st = parallel_rows(p, PH_NORM, rows, norm_put_row, &na);
        } else {
            norm_arg na = {p->x + r0 * H, p->xn, layer->attn_norm};
            st = parallel_rows(p, PH_NORM, rows, norm_row, &na);
        }
        if (st || (st = project(p, PH_QKV, &qkv_in, 0, p->xn, H, rows, p->qkv + r0 * p->QKVD, p->QKVD, NULL)))
            return st;
        qk_arg qa = {layer, r0};
        if ((st = parallel_rows(p, PH_QK_ROPE, rows, qk_row, &qa))) return st;
    }

    if (p->capture) {
        int64_t kv_dim = p->NKV * p->D;
        float *k = p->capture->k + li * p->capture->len * kv_dim;
        float *v = p->capture->v + li * p->capture->len * kv_dim;
        for (int64_t t = 0; t < T; t++) {
            memcpy(k + t * kv_dim, p->qkv + t * p->QKVD + NHD, (size_t)kv_dim * sizeof(float));
            memcpy(v + t * kv_dim, p->qkv + t * p->QKVD + NHD + kv_dim, (size_t)kv_dim * sizeof(float));
        }
        if (last) return CR_OK; /* a prefix needs K/V only; nothing reaches a head */
    }

    o_rows o_in = {&layer->o, p->xo};
    cr_attn_args aa = {
        .qkv = p->qkv, .qkv_stride = p->QKVD, .n_heads = p->NH, .n_kv_heads = p->NKV,
        .head_dim = p->D, .scale = p->m->cfg.attn_scale, .pos = b->pos, .n_seqs = S,
        .seq_start = b->seq_start, .prefix = b->prefix, .prefix_len = b->prefix_len,
        .layer = li, .window = layer->window, .last_only = last, .out = p->attn,
        .put = p->xo ? put_o_input : NULL, .put_ctx = &o_in,
        .bf16_scores = p->m->compute_dtype != CR_DT_F32 && p->D % 2 == 0,
        /* bf16 layers on tiles (linear.c packs for them on the same condition): attention too.
         * int8 models run it in the tiles' order on every level (AMX tiles, or a model of them
         * elsewhere), so that their scores stay the same bits on AMX as on VNNI. */
        .tiles = p->D % CR_AMX_BF16_K == 0 &&
                 (p->m->compute_dtype == CR_DT_I8 || (p->m->compute_dtype == CR_DT_BF16 && cr_amx_usable())),
        .kern = cr_kernels_runnable(),
        .out_stride = NHD, .scratch = p->scratch, .scratch_stride = p->scratch_stride,
        .stage_buf = &p->ws->buf[WS_STAGE],
        .threads = p->ex.threads, .abort = p->ex.abort,
    };
    double t0 = phase_start(p);
    st = cr_attention(&aa);
    phase_end(p, PH_ATTENTION, t0);
    if (st) return st;

    /* o_proj and the MLP: every row of the residual stream, or in the last layer only each
     * sequence's last token (nothing else reaches the head) */
    float *res = p->x;
    int64_t n = T;
    if (last) {
        for (int64_t s = 0; s < S; s++)
            memcpy(p->xs + s * H, p->x + (b->seq_start[s + 1] - 1) * H, (size_t)H * sizeof(float));
        res = p->xs;
        n = S;
    }
    for (int64_t r0 = 0; r0 < n; r0 += p->B) {
        int64_t rows = n - r0 < p->B ? n - r0 : p->B;
        if ((st = o_and_mlp(p, layer, r0, res + r0 * H, rows))) return st;
    }
    return CR_OK;
}

/* ---- the pass ----------------------------------------------------------------------------- */

static cr_status run_pass(const cr_model *m, const cr_batch *b, const cr_run_params *run,
                          cr_prefix *capture) {
    const cr_config *c = &m->cfg;
    double phase_s[PH_COUNT] = {0};
    pass p = {.m = m, .b = b, .capture = capture, .phase_s = cr_profile_wanted() ? phase_s : NULL};
    p.ex.threads = m->threads;
    p.ex.abort = run ? run->abort : NULL;
    p.T = b->n_tokens;
    p.S = b->n_seqs;
    p.H = c->hidden_size;
    p.D = c->head_dim;
    p.NH = c->num_heads;
    p.NKV = c->num_kv_heads;
    p.IM = c->intermediate_size;
    p.QKVD = (p.NH + 2 * p.NKV) * p.D;
    p.scratch_stride = cr_attention_scratch_floats(p.NH, p.NKV, p.D);
    p.B = row_block();
    if (p.B > p.T) p.B = p.T;
    p.BM = p.B < CR_MLP_ROW_BLOCK ? p.B : CR_MLP_ROW_BLOCK;

    cr_workspace *ws = take_workspace(m);
    if (!ws) return CR_E_NOMEM;
    p.ws = ws;
    p.ex.scratch = &ws->lin;
    cr_status st = CR_OK;
    p.x = ws_rows(ws, WS_X, p.T, p.H, "hidden states");
    p.xn = ws_rows(ws, WS_XN, p.B, p.H, "normed hidden states");
    p.qkv = ws_rows(ws, WS_QKV, p.T, p.QKVD, "q|k|v");
    /* every layer has the same format; with bf16 rows the GLU output is never stored as float32,
     * nor attention's where every head and row block starts a whole block and 16-row group */
    int bf16_rows = cr_linear_takes_bf16_rows(&m->layers[0].qkv), i8_rows = cr_linear_takes_i8_rows(&m->layers[0].qkv);
    p.own_rows = bf16_rows || i8_rows;
    int o_rows = bf16_rows && p.D % CR_AMX_BF16_K == 0 && (p.B % 16 == 0 || p.B == p.T);
    p.attn = o_rows ? NULL : ws_rows(ws, WS_ATTN, p.T, p.NH * p.D, "attention output");
    p.cosb = ws_rows(ws, WS_COS, p.T, p.D / 2, "rope cos");
    p.sinb = ws_rows(ws, WS_SIN, p.T, p.D / 2, "rope sin");
    p.hid = p.own_rows ? NULL : ws_rows(ws, WS_HID, p.BM, p.IM, "mlp hidden");
    p.xs = ws_rows(ws, WS_XS, p.S, p.H, "last-token states");
    p.scratch = ws_rows(ws, WS_SCRATCH, p.ex.threads, p.scratch_stride, "attention tiles");
    if (bf16_rows) {
        p.xh = ws_bf16_rows(ws, WS_XH, &m->layers[0].qkv, p.B, "bf16 q|k|v and gate|up inputs");
        p.xi = ws_bf16_rows(ws, WS_XI, &m->layers[0].down, p.BM, "bf16 down inputs");
    }
    if (o_rows) p.xo = ws_bf16_rows(ws, WS_XO, &m->layers[0].o, p.T, "bf16 o inputs");
    int i8_ok = 1;
    if (i8_rows) {
        /* a normed row of floats (H) and its quantized bytes, per worker (the down projection's
         * rows are quantized by the gate|up layer's GLU pass, in its own buffers) */
        const cr_linear *down = &m->layers[0].down;
        p.row_floats = (p.H + 15) / 16 * 16;
        p.rowbuf_stride = p.row_floats + (cr_linear_row_elems(&m->layers[0].qkv) + 63) / 64 * 16;
        p.rowbuf = ws_rows(ws, WS_ROWBUF, p.ex.threads, p.rowbuf_stride, "int8 row buffers");
        i8_ok = p.rowbuf && ws_i8_rows(&m->layers[0].qkv, p.B, &ws->qh, &ws->qh_rows) &&
                ws_i8_rows(down, p.BM, &ws->qi, &ws->qi_rows);
        p.qh = ws->qh;
        p.qi = ws->qi;
    }
    if (!p.x || !p.xn || !p.qkv || !p.cosb || !p.sinb || !p.xs || !p.scratch || !i8_ok ||
        (bf16_rows ? !p.xh || !p.xi : i8_rows ? 0 : !p.hid) || (o_rows ? !p.xo : !p.attn)) {
        cr_workspace_free(ws);
        return CR_E_NOMEM;
    }

    cr_engine_lock();
    double started = phase_start(&p);
    if ((st = parallel_rows(&p, PH_NONE, p.T, embed_row, NULL))) goto done;
    cr_embed_rows_done(m);   /* the rows are copied: the loader drops the table's file pages */
    if ((st = parallel_rows(&p, PH_NONE, p.T, rope_table_row, NULL))) goto done;
    for (int64_t li = 0; li < c->num_layers; li++) {
        if ((st = layer_forward(&p, li, li == c->num_layers - 1))) goto done;
        if (run && run->progress) run->progress(run->progress_user, li + 1, c->num_layers);
    }
    if (!capture) {
        /* final norm of each last token, then the head: out[s, j] = h_s . w_j + b_j */
        for (int64_t s0 = 0; s0 < p.S; s0 += p.B) {
            int64_t rows = p.S - s0 < p.B ? p.S - s0 : p.B;
            norm_arg na = {p.xs + s0 * p.H, p.xn, m->final_norm};
            if ((st = parallel_rows(&p, PH_NONE, rows, norm_row, &na))) goto done;
            for (int64_t r = 0; r < rows; r++)
                for (int64_t j = 0; j < m->num_labels; j++)
                    b->out[(s0 + r) * m->num_labels + j] =
                        cr_kern->dot_f32(p.xn + r * p.H, m->head_w + j * p.H, p.H) + (m->head_b ? m->head_b[j] : 0.0f);
        }
    }
done:
    if (p.phase_s && st == CR_OK) {
        char head[128];
        snprintf(head, sizeof head, "%lld tokens, %lld sequences, %d threads", (long long)p.T, (long long)p.S,
                 p.ex.threads);
        cr_profile_report(head, cr_seconds_now() - started, p.phase_s, phase_names, PH_COUNT);
    }
    cr_engine_unlock();
    keep_workspace(m, ws);
    return st;
}

/* ---- entry points ------------------------------------------------------------------------- */

static cr_status validate_batch(const cr_model *m, const cr_batch *b) {
    if (!b || !b->tokens || !b->pos || !b->seq_start)
        return cr_fail(CR_E_ARG, "batch: tokens, pos and seq_start are required");
    if (b->n_seqs < 1 || b->n_tokens < 1)
        return cr_fail(CR_E_ARG, "batch: needs at least one sequence of at least one token");
    if (b->seq_start[0] != 0 || b->seq_start[b->n_seqs] != b->n_tokens)
        return cr_fail(CR_E_ARG, "batch: seq_start must run from 0 to n_tokens (%lld)", (long long)b->n_tokens);
    for (int64_t s = 0; s < b->n_seqs; s++) {
        if (b->seq_start[s + 1] <= b->seq_start[s])
            return cr_fail(CR_E_ARG, "batch: sequence %lld is empty or seq_start is not increasing", (long long)s);
        if (b->prefix && b->prefix[s]) {
            const cr_prefix *pf = b->prefix[s];
            if (pf->model != m) return cr_fail(CR_E_ARG, "batch: sequence %lld uses a prefix built by another model", (long long)s);
            int64_t pl = b->prefix_len ? b->prefix_len[s] : pf->len;
            if (pl < 0 || pl > pf->len)
                return cr_fail(CR_E_ARG, "batch: prefix_len %lld of sequence %lld exceeds the prefix (%lld tokens)",
                               (long long)pl, (long long)s, (long long)pf->len);
        }
    }
    int64_t V = m->cfg.vocab_size;
    for (int64_t t = 0; t < b->n_tokens; t++) {
        if (b->tokens[t] < 0 || b->tokens[t] >= V)
            return cr_fail(CR_E_ARG, "batch: token id %d at index %lld is outside the vocabulary [0, %lld)",
                           b->tokens[t], (long long)t, (long long)V);
        if (b->pos[t] < 0) return cr_fail(CR_E_ARG, "batch: negative position at index %lld", (long long)t);
    }
    return CR_OK;
}

cr_status cr_forward(const cr_model *m, const cr_batch *b, const cr_run_params *run) {
    cr_error_clear();
    if (!m) return cr_fail(CR_E_ARG, "cr_forward: no model");
    cr_status st = validate_batch(m, b);
    if (st) return st;
    if (!b->out) return cr_fail(CR_E_ARG, "batch: out is required");
    return run_pass(m, b, run, NULL);
}

cr_status cr_prefix_build(const cr_model *m, const int32_t *tokens, int64_t n,
                          const cr_run_params *run, cr_prefix **out) {
    *out = NULL;
    cr_error_clear();
    if (!m || !tokens || n < 1) return cr_fail(CR_E_ARG, "cr_prefix_build: needs a model and at least one token");
    int32_t *pos = cr_malloc_array((size_t)n, sizeof(int32_t), "prefix positions");
    cr_prefix *p = cr_calloc(1, sizeof *p, "prefix");
    if (!pos || !p) { free(pos); free(p); return CR_E_NOMEM; }
    for (int64_t i = 0; i < n; i++) pos[i] = (int32_t)i;
    int64_t seq_start[2] = {0, n};
    cr_batch b = {.n_tokens = n, .tokens = tokens, .pos = pos, .n_seqs = 1, .seq_start = seq_start};
    cr_status st = validate_batch(m, &b);
    if (st) goto fail;
    p->len = n;
    p->kv_dim = m->cfg.num_kv_heads * m->cfg.head_dim;
    p->n_layers = m->cfg.num_layers;
    p->model = m;
    p->k = alloc_rows(p->n_layers * n, p->kv_dim, "prefix keys");
    p->v = alloc_rows(p->n_layers * n, p->kv_dim, "prefix values");
    if (!p->k || !p->v) { st = CR_E_NOMEM; goto fail; }
    if ((st = run_pass(m, &b, run, p))) goto fail;
    free(pos);
    *out = p;
    return CR_OK;
fail:
    free(pos);
    cr_prefix_free(p);
    return st;
}

int64_t cr_prefix_len(const cr_prefix *p) { return p ? p->len : 0; }

void cr_prefix_free(cr_prefix *p) {
    if (!p) return;
    free(p->k);
    free(p->v);
    free(p);
}
