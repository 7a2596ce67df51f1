"""Tiled attention (csrc/attention.c) and its kernels, through the test hooks
``crossrank._testing.attention`` and ``crossrank._testing.exp_f32``.

* Against a float64 NumPy model of causal grouped-query attention with the engine's window and
  prefix-key semantics: head_dim 64/128/256, GQA groups 1..8, sequence lengths that are not
  multiples of the 64-key tile or of the query block, windows narrower and wider than a tile,
  prefix keys whose end falls inside a tile, and the last-row-only mode of the last layer.
* Every ISA table gives the reference table's bits (all attention reductions are fixed chains).
* A row's bits depend only on its own keys: packing with other sequences, the thread count and
  taking the first keys from a prefix handle change nothing, bit for bit.
* bf16 scores (bf16 and int8 models): the model on bfloat16-rounded queries and keys, the same
  bits on every table, and the same row independence.
* The tile path (bf16 models on AMX, int8 models everywhere: QK^T and P V through gemm_bf16_amx):
  the model on bfloat16 q, k, v within the rounding of the probabilities, AMX and the vector
  tables' models of the tiles (vdpbf16ps, float32 FMAs) bitwise equal to the scalar model, and the same row
  independence.
* exp_f32 of every table: within 2 ulp of the correctly rounded e^x where that is a normal
  float, one rounding in the subnormal range, exact at the special values, and the same bits as
  the reference.

No torch; no timing.
"""
import math

import numpy as np
import pytest

from _hooks import hooks

LEVELS = hooks.isa_levels()
TILE = 64


# ---- the NumPy model ---------------------------------------------------------------------------

def visible_keys(pos_q, i, n_pre, own_pos, window):
    """Indices (prefix keys first) a query at own index i and position pos_q sees."""
    if window:
        pre_first = max(0, pos_q - window + 1)
        own_first = 0
        while own_first < i and pos_q - own_pos[own_first] >= window:
            own_first += 1
    else:
        pre_first, own_first = 0, 0
    pre = np.arange(min(pre_first, n_pre), n_pre)
    own = n_pre + np.arange(own_first, i + 1)
    return np.concatenate([pre, own])


def attention_model(q, k, v, positions, seq_start, window=0, prefix_k=None, prefix_v=None,
                    prefix_lens=None, last_only=False, scale=None):
    T, NH, D = q.shape
    NKV = k.shape[1]
    group = NH // NKV
    scale = D ** -0.5 if scale is None else scale
    out = []
    for s in range(len(seq_start) - 1):
        a, b = seq_start[s], seq_start[s + 1]
        n_pre = 0
        if prefix_k is not None:
            n_pre = prefix_k.shape[0] if prefix_lens is None else int(prefix_lens[s])
        keys = np.concatenate([prefix_k[:n_pre], k[a:b]]) if n_pre else k[a:b]
        vals = np.concatenate([prefix_v[:n_pre], v[a:b]]) if n_pre else v[a:b]
        keys, vals = keys.astype(np.float64), vals.astype(np.float64)
        for i in ([b - a - 1] if last_only else range(b - a)):
            seen = visible_keys(int(positions[a + i]), i, n_pre, positions[a:b], window)
            row = np.empty((NH, D))
            for h in range(NH):
                sc = keys[seen, h // group] @ q[a + i, h].astype(np.float64) * scale
                p = np.exp(sc - sc.max())
                row[h] = p @ vals[seen, h // group] / p.sum()
            out.append(row)
    return np.array(out, dtype=np.float64)


def make_batch(rng, lengths, NH, NKV, D, start_pos=None, magnitude=1.0):
    T = sum(lengths)
    q = (rng.standard_normal((T, NH, D)) * magnitude).astype(np.float32)
    k = rng.standard_normal((T, NKV, D)).astype(np.float32)
    v = rng.standard_normal((T, NKV, D)).astype(np.float32)
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    first = start_pos if start_pos is not None else [0] * len(lengths)
    positions = np.concatenate([np.arange(p, p + n) for p, n in zip(first, lengths)]).astype(np.int32)
    return q, k, v, positions, starts


# ---- against the model -------------------------------------------------------------------------

CASES = [
    # lengths, NH, NKV, D, window
    ([1, 63, 64, 65], 4, 2, 64, 0),
    ([130, 7], 8, 2, 128, 0),
    ([200], 16, 8, 128, 0),
    ([129], 8, 8, 64, 0),           # MHA: 128 rows per block, one row past it
    ([97, 3], 8, 1, 64, 0),         # MQA: group of 8
    ([150], 4, 1, 256, 0),
    ([300], 4, 2, 64, 37),          # window inside a tile
    ([300, 90], 4, 2, 128, 100),    # window across tiles
    ([70], 4, 2, 64, 1),            # each query sees itself only
]


@pytest.mark.parametrize("lengths,NH,NKV,D,window", CASES)
def test_tiled_attention_matches_the_numpy_model(lengths, NH, NKV, D, window):
    rng = np.random.default_rng(sum(lengths) + D + window)
    q, k, v, positions, starts = make_batch(rng, lengths, NH, NKV, D)
    expected = attention_model(q, k, v, positions, starts, window=window)
    got = hooks.attention(q, k, v, positions, starts, window=window, threads=2)
    assert got.shape == (sum(lengths), NH, D)
    np.testing.assert_allclose(got, expected, rtol=0, atol=5e-6)


def test_window_of_one_returns_each_value_exactly():
    rng = np.random.default_rng(1)
    q, k, v, positions, starts = make_batch(rng, [90], 4, 2, 64)
    got = hooks.attention(q, k, v, positions, starts, window=1)
    np.testing.assert_array_equal(got, np.repeat(v, 2, axis=1))


@pytest.mark.parametrize("n_pre", [1, 37, 64, 100, 130])
@pytest.mark.parametrize("window", [0, 50])
def test_prefix_keys_match_the_numpy_model(n_pre, window):
    rng = np.random.default_rng(n_pre + window)
    NH, NKV, D = 8, 2, 64
    lengths = [40, 75, 1]
    q, k, v, _, starts = make_batch(rng, lengths, NH, NKV, D)
    positions = np.concatenate([np.arange(n_pre, n_pre + n) for n in lengths]).astype(np.int32)
    pk = rng.standard_normal((n_pre + 5, NKV, D)).astype(np.float32)  # more than used
    pv = rng.standard_normal((n_pre + 5, NKV, D)).astype(np.float32)
    lens = np.full(len(lengths), n_pre, dtype=np.int64)
    expected = attention_model(q, k, v, positions, starts, window=window, prefix_k=pk, prefix_v=pv,
                               prefix_lens=lens)
    got = hooks.attention(q, k, v, positions, starts, window=window, prefix_k=pk, prefix_v=pv,
                           prefix_lens=lens, threads=2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=5e-6)


@pytest.mark.parametrize("window", [0, 45])
def test_last_only_matches_the_numpy_model(window):
    rng = np.random.default_rng(5)
    q, k, v, positions, starts = make_batch(rng, [1, 64, 65, 300], 16, 8, 128)
    expected = attention_model(q, k, v, positions, starts, window=window, last_only=True)
    got = hooks.attention(q, k, v, positions, starts, window=window, last_only=True)
    assert got.shape == (4, 16, 128)
    np.testing.assert_allclose(got, expected, rtol=0, atol=5e-6)


def test_peaked_softmax_neither_overflows_nor_loses_the_peak():
    """Scores up to ~190: the running max must be subtracted before exp, tile by tile (without
    it e^s overflows; a lost or stale max gives errors of order 1). The bound is float32's: a
    score near 190 is a 64-term float32 sum whose rounding error (~1e-5) moves each
    probability by as much, relatively, hence 2e-4 on outputs of size ~3."""
    rng = np.random.default_rng(11)
    q, k, v, positions, starts = make_batch(rng, [260], 4, 2, 64, magnitude=40.0)
    expected = attention_model(q, k, v, positions, starts)
    got = hooks.attention(q, k, v, positions, starts)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-4)


# ---- ISA tables --------------------------------------------------------------------------------

@pytest.mark.parametrize("isa", LEVELS)
@pytest.mark.parametrize("lengths,NH,NKV,D,window", [CASES[0], CASES[5], CASES[7]])
def test_every_isa_table_gives_the_reference_bits(isa, lengths, NH, NKV, D, window):
    rng = np.random.default_rng(3)
    q, k, v, positions, starts = make_batch(rng, lengths, NH, NKV, D)
    ref = hooks.attention(q, k, v, positions, starts, window=window, isa="ref")
    got = hooks.attention(q, k, v, positions, starts, window=window, isa=isa, threads=2)
    np.testing.assert_array_equal(got, ref)


# ---- bf16 scores (bf16 and int8 models) ----------------------------------------------------------

def bf16_round(x):
    """float32 -> the nearest bfloat16 (ties to even), as float32."""
    b = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return (((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)


@pytest.mark.parametrize("lengths,NH,NKV,D,window", CASES)
def test_bf16_scores_are_the_model_on_bf16_rounded_queries_and_keys(lengths, NH, NKV, D, window):
    rng = np.random.default_rng(sum(lengths) + D + window + 1)
    q, k, v, positions, starts = make_batch(rng, lengths, NH, NKV, D)
    scale = np.float32(D ** -0.5)
    expected = attention_model(bf16_round(q * scale), bf16_round(k), v, positions, starts, window=window,
                               scale=1.0)
    got = hooks.attention(q, k, v, positions, starts, window=window, threads=2, bf16_scores=True)
    np.testing.assert_allclose(got, expected, rtol=0, atol=5e-6)
    # and it is a different computation from the float32 one, not a flag that does nothing
    exact = hooks.attention(q, k, v, positions, starts, window=window, threads=2)
    if window != 1:
        assert np.abs(got - exact).max() > 1e-5


@pytest.mark.parametrize("isa", LEVELS)
@pytest.mark.parametrize("D, bf16", [(23, False), (40, False), (6, True), (18, True), (80, True)])
def test_head_dims_off_the_vector_width_give_the_reference_bits(isa, D, bf16):
    # the queries' packing into panels (attn_q_panel) and the steps after it handle any D
    rng = np.random.default_rng(D)
    q, k, v, positions, starts = make_batch(rng, [45, 70], 4, 2, D)
    ref = hooks.attention(q, k, v, positions, starts, isa="ref", bf16_scores=bf16)
    got = hooks.attention(q, k, v, positions, starts, isa=isa, threads=2, bf16_scores=bf16)
    assert got.tobytes() == ref.tobytes()
    if bf16:
        model = hooks.attention(q, k, v, positions, starts, isa="ref")
        np.testing.assert_allclose(got, model, atol=0.05)


@pytest.mark.parametrize("isa", LEVELS)
def test_bf16_scores_give_the_reference_bits_on_every_isa(isa):
    rng = np.random.default_rng(13)
    q, k, v, positions, starts = make_batch(rng, [130, 7], 8, 2, 128)
    ref = hooks.attention(q, k, v, positions, starts, isa="ref", bf16_scores=True)
    got = hooks.attention(q, k, v, positions, starts, isa=isa, threads=2, bf16_scores=True)
    np.testing.assert_array_equal(got, ref)


def test_bf16_scores_depend_only_on_a_rows_own_keys():
    rng = np.random.default_rng(14)
    q, k, v, positions, starts = make_batch(rng, [33, 150, 64, 9], 8, 2, 64)
    packed = hooks.attention(q, k, v, positions, starts, window=70, bf16_scores=True)
    assert np.array_equal(packed, hooks.attention(q, k, v, positions, starts, window=70, threads=3,
                                                   bf16_scores=True))
    for s in range(4):
        a, b = starts[s], starts[s + 1]
        alone = hooks.attention(q[a:b], k[a:b], v[a:b], positions[a:b], np.array([0, b - a], dtype=np.int64),
                                 window=70, bf16_scores=True)
        np.testing.assert_array_equal(packed[a:b], alone)
    n_pre, n = 50, 150
    whole = hooks.attention(q[33:183], k[33:183], v[33:183], np.arange(n, dtype=np.int32),
                             np.array([0, n], dtype=np.int64), bf16_scores=True)
    tail = slice(33 + n_pre, 183)
    reused = hooks.attention(q[tail], k[tail], v[tail], np.arange(n_pre, n, dtype=np.int32),
                              np.array([0, n - n_pre], dtype=np.int64), prefix_k=k[33:33 + n_pre],
                              prefix_v=v[33:33 + n_pre], bf16_scores=True)
    np.testing.assert_array_equal(reused, whole[n_pre:])


def test_bf16_scores_leave_the_last_row_mode_in_float32():
    rng = np.random.default_rng(15)
    q, k, v, positions, starts = make_batch(rng, [90, 40], 4, 2, 64)
    np.testing.assert_array_equal(
        hooks.attention(q, k, v, positions, starts, last_only=True, bf16_scores=True),
        hooks.attention(q, k, v, positions, starts, last_only=True))


def test_bf16_scores_need_an_even_head_dim():
    rng = np.random.default_rng(16)
    q, k, v, positions, starts = make_batch(rng, [10], 2, 1, 63)
    with pytest.raises(ValueError, match="even head_dim"):
        hooks.attention(q, k, v, positions, starts, bf16_scores=True)


# ---- the tile path (bf16 models on AMX, int8 models everywhere) ----------------------------------

TILE_CASES = [case for case in CASES if case[3] % 32 == 0]


def amx_usable():
    return hooks.cpu_info()["detected"] == "amx" and hooks.amx_usable()


@pytest.mark.parametrize("lengths,NH,NKV,D,window", TILE_CASES)
def test_tiles_are_the_model_on_bf16_queries_keys_values_and_probabilities(lengths, NH, NKV, D, window):
    """QK^T and P V on tiles: the model on bfloat16-rounded q, k and v, within the error of
    rounding each tile's probabilities to bfloat16 (a masking or layout slip is off by O(1))."""
    rng = np.random.default_rng(sum(lengths) + D + window + 2)
    q, k, v, positions, starts = make_batch(rng, lengths, NH, NKV, D)
    scale = np.float32(D ** -0.5)
    expected = attention_model(bf16_round(q * scale), bf16_round(k), bf16_round(v), positions, starts,
                               window=window, scale=1.0)
    got = hooks.attention(q, k, v, positions, starts, window=window, threads=2, bf16_scores=True, tiles=True)
    err = np.abs(got - expected)
    assert err.max() < 2e-2 and err.mean() < 1e-3, (err.max(), err.mean())
    # and P V ran in bfloat16, not the float32 of the vector path
    vector = hooks.attention(q, k, v, positions, starts, window=window, threads=2, bf16_scores=True)
    if window != 1:
        assert not np.array_equal(got, vector)


@pytest.mark.skipif(not amx_usable(), reason="needs AMX tiles that Linux lets this process use")
@pytest.mark.parametrize("lengths,NH,NKV,D,window", TILE_CASES)
def test_tiles_on_amx_give_the_bits_of_the_scalar_model(lengths, NH, NKV, D, window):
    rng = np.random.default_rng(sum(lengths) + D + window + 3)
    q, k, v, positions, starts = make_batch(rng, lengths, NH, NKV, D)
    ref = hooks.attention(q, k, v, positions, starts, window=window, isa="ref", bf16_scores=True, tiles=True)
    got = hooks.attention(q, k, v, positions, starts, window=window, isa="amx", threads=2, bf16_scores=True,
                          tiles=True)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("isa", [isa for isa in LEVELS if isa not in ("ref", "amx")])
def test_tiles_below_amx_give_the_bits_of_the_scalar_model(isa):
    """int8 models run the tile path on every level: the vector tables' models of the tiles
    (vdpbf16ps on avx512bf16, float32 FMAs below) give every case the scalar model's bits (and so
    AMX's)."""
    for lengths, NH, NKV, D, window in TILE_CASES:
        rng = np.random.default_rng(sum(lengths) + D + window + 4)
        q, k, v, positions, starts = make_batch(rng, lengths, NH, NKV, D)
        ref = hooks.attention(q, k, v, positions, starts, window=window, isa="ref", bf16_scores=True, tiles=True)
        got = hooks.attention(q, k, v, positions, starts, window=window, isa=isa, threads=2, bf16_scores=True,
                              tiles=True)
        np.testing.assert_array_equal(got, ref, err_msg=str((lengths, NH, NKV, D, window)))


def tiles(*args, **kw):
    return hooks.attention(*args, bf16_scores=True, tiles=True, **kw)


def test_tiles_depend_only_on_a_rows_own_keys():
    """Other sequences, the thread count and keys from a prefix handle (cut at prefix_len) change
    no bit on the tile path either (on a CPU without AMX: the tiles' scalar model)."""
    rng = np.random.default_rng(17)
    q, k, v, positions, starts = make_batch(rng, [33, 150, 64, 9, 200], 8, 2, 64)
    packed = tiles(q, k, v, positions, starts, window=70)
    assert np.array_equal(packed, tiles(q, k, v, positions, starts, window=70, threads=3))
    for s in range(5):
        a, b = starts[s], starts[s + 1]
        alone = tiles(q[a:b], k[a:b], v[a:b], positions[a:b], np.array([0, b - a], dtype=np.int64), window=70)
        np.testing.assert_array_equal(packed[a:b], alone)
    for n_pre in (1, 50, 64, 127):
        a, n = 247, 200
        whole = tiles(q[a:a + n], k[a:a + n], v[a:a + n], np.arange(n, dtype=np.int32),
                      np.array([0, n], dtype=np.int64))
        junk = rng.standard_normal((9, 2, 64)).astype(np.float32)
        tail = slice(a + n_pre, a + n)
        reused = tiles(q[tail], k[tail], v[tail], np.arange(n_pre, n, dtype=np.int32),
                       np.array([0, n - n_pre], dtype=np.int64),
                       prefix_k=np.concatenate([k[a:a + n_pre], junk]), prefix_v=np.concatenate([v[a:a + n_pre], junk]),
                       prefix_lens=np.array([n_pre], dtype=np.int64))
        np.testing.assert_array_equal(reused, whole[n_pre:])


def test_tiles_leave_the_last_row_mode_in_float32():
    rng = np.random.default_rng(18)
    q, k, v, positions, starts = make_batch(rng, [90, 40], 4, 2, 64)
    np.testing.assert_array_equal(tiles(q, k, v, positions, starts, last_only=True),
                                  hooks.attention(q, k, v, positions, starts, last_only=True))


def test_tiles_need_bf16_scores_and_a_head_dim_of_whole_blocks():
    rng = np.random.default_rng(19)
    q, k, v, positions, starts = make_batch(rng, [10], 2, 1, 80)
    with pytest.raises(ValueError, match="multiple of 32"):
        tiles(q, k, v, positions, starts)
    q, k, v, positions, starts = make_batch(rng, [10], 2, 1, 64)
    with pytest.raises(ValueError, match="bf16 scores"):
        hooks.attention(q, k, v, positions, starts, tiles=True)


# ---- a row depends only on its own keys ---------------------------------------------------------

def test_packing_with_other_sequences_changes_no_bit():
    rng = np.random.default_rng(4)
    NH, NKV, D = 8, 2, 64
    q, k, v, positions, starts = make_batch(rng, [33, 150, 64, 9], NH, NKV, D)
    packed = hooks.attention(q, k, v, positions, starts, window=70)
    for s in range(4):
        a, b = starts[s], starts[s + 1]
        alone = hooks.attention(q[a:b], k[a:b], v[a:b], positions[a:b],
                                 np.array([0, b - a], dtype=np.int64), window=70)
        np.testing.assert_array_equal(packed[a:b], alone)


@pytest.mark.parametrize("bf16_scores,tiles", [(False, False), (True, False), (True, True)])
def test_repeated_calls_over_a_kept_staging_buffer_give_the_first_calls_bits(bf16_scores, tiles):
    """reps reruns the call as the forward does from layer to layer: the tile path's staged keys
    and values stay in a buffer kept between calls, which the next call overwrites."""
    rng = np.random.default_rng(9)
    q, k, v, positions, starts = make_batch(rng, [130, 7, 64], 8, 2, 64)
    once = hooks.attention(q, k, v, positions, starts, threads=2, bf16_scores=bf16_scores, tiles=tiles)
    again, seconds = hooks.attention(q, k, v, positions, starts, threads=2, bf16_scores=bf16_scores, tiles=tiles,
                                     reps=3)
    np.testing.assert_array_equal(again, once)
    assert 0 < seconds < 60
    with pytest.raises(ValueError, match="reps"):
        hooks.attention(q, k, v, positions, starts, reps=-1)


@pytest.mark.parametrize("threads", [2, 3])
def test_thread_count_changes_no_bit(threads):
    rng = np.random.default_rng(6)
    q, k, v, positions, starts = make_batch(rng, [300, 41], 16, 8, 128)
    one = hooks.attention(q, k, v, positions, starts, threads=1)
    np.testing.assert_array_equal(hooks.attention(q, k, v, positions, starts, threads=threads), one)


@pytest.mark.parametrize("n_pre", [1, 50, 64, 127, 200])
@pytest.mark.parametrize("window", [0, 90])
@pytest.mark.parametrize("last_only", [False, True])
def test_keys_from_a_prefix_handle_give_the_bits_of_one_pass(n_pre, window, last_only):
    """The tail of a sequence attending to prefix keys equals the same rows of the whole
    sequence run in one pass: tile boundaries are counted from the first prefix key."""
    rng = np.random.default_rng(n_pre)
    NH, NKV, D = 16, 8, 128
    n = n_pre + 150
    q, k, v, positions, starts = make_batch(rng, [n], NH, NKV, D)
    whole = hooks.attention(q, k, v, positions, starts, window=window, last_only=last_only)
    tail = slice(n_pre, n)
    reused = hooks.attention(q[tail], k[tail], v[tail], positions[tail],
                              np.array([0, n - n_pre], dtype=np.int64), window=window,
                              prefix_k=k[:n_pre], prefix_v=v[:n_pre], last_only=last_only)
    np.testing.assert_array_equal(reused, whole if last_only else whole[tail])


def test_a_longer_prefix_handle_is_cut_at_prefix_len():
    rng = np.random.default_rng(8)
    q, k, v, positions, starts = make_batch(rng, [180], 4, 2, 64)
    whole = hooks.attention(q, k, v, positions, starts)
    junk = rng.standard_normal((40, 2, 64)).astype(np.float32)
    pk, pv = np.concatenate([k[:70], junk]), np.concatenate([v[:70], junk])
    reused = hooks.attention(q[70:], k[70:], v[70:], positions[70:], np.array([0, 110], dtype=np.int64),
                              prefix_k=pk, prefix_v=pv, prefix_lens=np.array([70], dtype=np.int64))
    np.testing.assert_array_equal(reused, whole[70:])


# ---- exp_f32 -----------------------------------------------------------------------------------

FLT_MIN = np.float32(np.finfo(np.float32).tiny)
SUB_ULP = 2.0 ** -149


def exp_inputs():
    rng = np.random.default_rng(0)
    grid = np.linspace(-110.0, 90.0, 400_001, dtype=np.float64).astype(np.float32)
    near_zero = (rng.standard_normal(100_000) * 1e-3).astype(np.float32)
    softmax_like = -rng.exponential(8.0, 200_000).astype(np.float32)
    edges = np.array([0.0, -0.0, 1.0, -1.0, 88.72283, 88.7229, 88.8, 89.0, 1e4, -87.33654, -87.34,
                      -103.97, -103.98, -104.0, -104.5, -1e4, 3.4e38, -3.4e38, 1e-45, -1e-45],
                     dtype=np.float32)
    return np.concatenate([grid, near_zero, softmax_like, edges])


@pytest.fixture(scope="module")
def exp_reference():
    x = exp_inputs()
    with np.errstate(over="ignore"):
        exact = np.exp(x.astype(np.float64))
    return x, exact


@pytest.mark.parametrize("isa", LEVELS)
def test_exp_is_within_2_ulp_where_normal_and_one_rounding_where_subnormal(isa, exp_reference):
    x, exact = exp_reference
    y = hooks.exp_f32(isa, x).astype(np.float64)
    with np.errstate(over="ignore"):
        rounded = exact.astype(np.float32)
    normal = (rounded >= FLT_MIN) & np.isfinite(rounded)
    ulp = np.spacing(rounded[normal]).astype(np.float64)
    err = np.abs(y[normal] - exact[normal]) / ulp
    assert err.max() <= 2.0, (x[normal][err.argmax()], err.max())
    sub = rounded < FLT_MIN
    assert np.all(np.abs(y[sub] - exact[sub]) <= SUB_ULP), x[sub][np.argmax(np.abs(y[sub] - exact[sub]))]
    assert np.all(np.isinf(y[np.isinf(rounded)]))


@pytest.mark.parametrize("isa", LEVELS)
def test_exp_special_values(isa):
    x = np.array([-np.inf, np.inf, np.nan, 0.0, -0.0, -200.0, 200.0], dtype=np.float32)
    y = hooks.exp_f32(isa, x)
    assert y[0] == 0.0 and y[1] == np.inf and np.isnan(y[2])
    assert y[3] == 1.0 and y[4] == 1.0 and y[5] == 0.0 and y[6] == np.inf


@pytest.mark.parametrize("isa", LEVELS)
def test_exp_gives_the_reference_bits_at_every_length(isa, exp_reference):
    x = exp_reference[0]
    ref = hooks.exp_f32("ref", x)
    np.testing.assert_array_equal(hooks.exp_f32(isa, x).view(np.uint32), ref.view(np.uint32))
    for n in range(0, 40):  # every tail of the 8- and 16-lane loops; the hook checks guard zones
        part = np.ascontiguousarray(x[1000:1000 + n])
        np.testing.assert_array_equal(hooks.exp_f32(isa, part).view(np.uint32), ref[1000:1000 + n].view(np.uint32))


def test_exp_in_softmax_range_is_close_to_math_exp():
    """Sanity on a few values against the math library itself."""
    for value in (-0.5, -3.0, -20.0, -80.0):
        got = float(hooks.exp_f32("ref", np.array([value], dtype=np.float32))[0])
        assert math.isclose(got, math.exp(value), rel_tol=3e-7)
