"""The bfloat16 and int8 kernels of every ISA table against their scalar reference.

gemm_bf16_tile's contract (kernels.h): per output, the float32 chain over pairs p of
acc += x[2p+1] w[2p+1]; acc += x[2p] w[2p], each a fused multiply-add — the order of
AVX512_BF16's vdpbf16ps. The widening kernels (AVX2, AVX-512F) implement that chain exactly and
vdpbf16ps agrees with it up to denormal flushing, so with normal inputs every table must give the
reference's bits. f32_to_bf16 rounds to nearest even and keeps NaNs NaN. gemm_i8_tile is exact
integer arithmetic (u8 x s8 into int32): every table must equal NumPy's int64 product.
gemm_bf16_amx below AMX (TDPBF16PS's order in vdpbf16ps on AVX512_BF16, in float32 FMAs below it)
gives the scalar model's bits, denormals included. The
int8 layers' outlier kernels (abs_sum_max_f32, find_above_f32, i8_outliers_f32) give the
reference's bits and match their NumPy definitions.
"""
import numpy as np
import pytest

from _hooks import hooks

LEVELS = hooks.isa_levels()
NR = 32
TAILS = [1, 5, 16, 17, 31, 32]


def kernel(isa, name, *arrays, **kw):
    return hooks.kernel(isa, name, *arrays, **kw)


def bf16_bits(values):
    """Round-to-nearest-even float32 -> bfloat16 bits, in NumPy (the definition)."""
    b = np.asarray(values, np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(values, np.float32))
    return np.where(nan, ((b >> 16) | 0x40).astype(np.uint16), rounded)


def bf16_float(bits):
    return (np.asarray(bits, np.uint16).astype(np.uint32) << 16).view(np.float32)


def random_bf16(rng, shape, scale=1.0):
    return bf16_bits(rng.standard_normal(shape).astype(np.float32) * scale)


def chain(x_bits, wp_bits):
    """The contract's fused chain, one float32 rounding per step (float64 products are exact)."""
    x = bf16_float(x_bits).astype(np.float64)
    kp = wp_bits.shape[0]
    w = bf16_float(wp_bits).reshape(kp, NR, 2).astype(np.float64)
    acc = np.zeros((x.shape[0], NR), np.float32)
    for p in range(kp):
        acc = (acc.astype(np.float64) + x[:, 2 * p + 1, None] * w[p, :, 1]).astype(np.float32)
        acc = (acc.astype(np.float64) + x[:, 2 * p, None] * w[p, :, 0]).astype(np.float32)
    return acc


@pytest.mark.parametrize("isa", LEVELS)
def test_f32_to_bf16_rounds_to_nearest_even_for_many_bit_patterns(isa):
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    # denormal inputs are flushed by vcvtneps2bf16; the contract covers normal numbers and NaN/Inf
    values = values[(np.abs(values) >= np.finfo(np.float32).tiny) | ~np.isfinite(values)]
    got = kernel(isa, "f32_to_bf16", values)
    want = bf16_bits(values)
    nan = np.isnan(values)
    np.testing.assert_array_equal(got[~nan], want[~nan])
    assert np.isnan(bf16_float(got[nan])).all()


@pytest.mark.parametrize("isa", LEVELS)
@pytest.mark.parametrize("n", [0, 1, 7, 8, 15, 16, 17, 33, 1000])
def test_f32_to_bf16_handles_every_tail_length(isa, n):
    values = np.linspace(-3, 3, n, dtype=np.float32)
    np.testing.assert_array_equal(kernel(isa, "f32_to_bf16", values), bf16_bits(values))


@pytest.mark.parametrize("isa", LEVELS)
def test_f32_to_bf16_ties_go_to_even_and_overflow_to_infinity(isa):
    # 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties to even (1.0); 1 + 3*2^-8 rounds up
    values = np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 3.4e38, -3.4e38, np.inf, -np.inf], np.float32)
    got = bf16_float(kernel(isa, "f32_to_bf16", values))
    np.testing.assert_array_equal(got, np.array([1.0, 1.015625, -1.0, np.inf, -np.inf, np.inf, -np.inf], np.float32))


def test_reference_tile_is_the_documented_chain():
    rng = np.random.default_rng(2)
    for m, kp in [(1, 1), (3, 5), (4, 64)]:
        x, wp = random_bf16(rng, (m, 2 * kp)), random_bf16(rng, (kp, 2 * NR))
        np.testing.assert_array_equal(kernel("ref", "gemm_bf16_tile", x, wp), chain(x, wp))


@pytest.mark.parametrize("isa", LEVELS)
def test_bf16_tile_heights_are_covered_by_the_row_counts_tested(isa):
    mr = kernel(isa, "gemm_bf16_mr")
    assert 1 <= mr <= 16


@pytest.mark.parametrize("isa", LEVELS)
@pytest.mark.parametrize("kp", [0, 1, 2, 3, 17, 64, 385])
def test_bf16_tile_agrees_bitwise_with_reference_for_every_height_and_tail(isa, kp):
    rng = np.random.default_rng(kp)
    mr = kernel(isa, "gemm_bf16_mr")
    x, wp = random_bf16(rng, (2 * mr + 3, 2 * kp)), random_bf16(rng, (kp, 2 * NR), 0.05)
    for m in [*range(1, mr + 2), 2 * mr + 3]:  # every row count a kernel specializes
        for n in TAILS:
            want = kernel("ref", "gemm_bf16_tile", x[:m], wp, n=n)
            got = kernel(isa, "gemm_bf16_tile", x[:m], wp, n=n)
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32), err_msg=f"m={m} n={n}")


@pytest.mark.parametrize("isa", LEVELS)
def test_bf16_tile_of_small_integers_is_exact(isa):
    rng = np.random.default_rng(3)
    kp = 200
    x = rng.integers(-8, 9, (13, 2 * kp)).astype(np.float32)
    w = rng.integers(-8, 9, (kp, 2 * NR)).astype(np.float32)
    got = kernel(isa, "gemm_bf16_tile", bf16_bits(x), bf16_bits(w))
    dense = np.zeros((2 * kp, NR))
    dense[0::2] = w.reshape(kp, NR, 2)[:, :, 0]
    dense[1::2] = w.reshape(kp, NR, 2)[:, :, 1]
    np.testing.assert_array_equal(got, (x.astype(np.float64) @ dense).astype(np.float32))


@pytest.mark.parametrize("isa", LEVELS)
def test_bf16_tile_rows_do_not_depend_on_the_rows_beside_them(isa):
    rng = np.random.default_rng(4)
    x, wp = random_bf16(rng, (29, 96)), random_bf16(rng, (48, 2 * NR))
    together = kernel(isa, "gemm_bf16_tile", x, wp)
    for i in range(len(x)):
        np.testing.assert_array_equal(kernel(isa, "gemm_bf16_tile", x[i:i + 1], wp)[0], together[i])


@pytest.mark.parametrize("isa", LEVELS)
def test_bf16_tile_propagates_nan_from_the_inputs(isa):
    x = bf16_bits(np.ones((2, 8), np.float32))
    wp = bf16_bits(np.ones((4, 2 * NR), np.float32))
    x[1, 5] = bf16_bits(np.float32(np.nan))
    got = kernel(isa, "gemm_bf16_tile", x, wp)
    assert np.isfinite(got[0]).all() and np.isnan(got[1]).all()


def test_bf16_hook_checks_shapes_and_types():
    x, wp = np.zeros((2, 4), np.uint16), np.zeros((2, 2 * NR), np.uint16)
    with pytest.raises(ValueError, match="needs x"):
        kernel("ref", "gemm_bf16_tile", x, np.zeros((3, 2 * NR), np.uint16))
    with pytest.raises(ValueError, match="needs x"):
        kernel("ref", "gemm_bf16_tile", np.zeros((2, 3), np.uint16), wp)
    with pytest.raises(ValueError, match="n = 1..32"):
        kernel("ref", "gemm_bf16_tile", x, wp, n=33)
    with pytest.raises(TypeError):
        kernel("ref", "gemm_bf16_mr", x)


# ---- the tiles' order below AMX -------------------------------------------------------------------
# gemm_bf16_amx of the vector tables: TDPBF16PS's order in vdpbf16ps (avx512bf16) or float32 FMAs
# (int8 models' attention runs it on every level), bitwise the scalar model of kernels_ref.c (which AMX itself matches,
# tests/test_amx.py), its operands against a PROT_NONE page at either end.

BELOW_AMX = [isa for isa in LEVELS if isa not in ("ref", "amx")]


def wide_bf16(rng, shape, low=-8, high=8):
    """bf16 values over a wide exponent range, so a wrong order of the sums shows."""
    return bf16_bits(rng.standard_normal(shape) * 2.0 ** rng.integers(low, high + 1, shape))


def tile_model(isa, x, wp, **kw):
    return hooks.amx_gemm(isa, "bf16", x, wp, **kw)


@pytest.mark.parametrize("isa", BELOW_AMX)
@pytest.mark.parametrize("kb,np_", [(1, 1), (2, 4), (4, 3), (5, 2)])
def test_tile_model_below_amx_gives_the_scalar_models_bits(isa, kb, np_):
    rng = np.random.default_rng(kb * 10 + np_)
    wp = wide_bf16(rng, (np_ * 16 * kb, 2 * NR))
    for m in range(1, 65):
        x = wide_bf16(rng, (m, 32 * kb))
        for guard in ("end", "start"):
            got = tile_model(isa, x, wp, guard=guard)
            assert got.shape == (m, NR * np_)
            assert got.tobytes() == tile_model("ref", x, wp, guard=guard).tobytes(), (m, guard)


@pytest.mark.parametrize("isa", BELOW_AMX)
def test_tile_model_below_amx_is_not_the_vdpbf16ps_chain(isa):
    # the same products in gemm_bf16_tile's one chain give other bits: the order is really the tiles'
    rng = np.random.default_rng(3)
    x, wp = wide_bf16(rng, (16, 64)), wide_bf16(rng, (32, 2 * NR))
    assert not np.array_equal(tile_model(isa, x, wp), kernel("ref", "gemm_bf16_tile", x, wp))


@pytest.mark.parametrize("isa", BELOW_AMX)
def test_tile_model_below_amx_flushes_like_the_tiles_and_sums_k_in_pieces(isa):
    rng = np.random.default_rng(8)
    # denormal inputs, products and partial sums (the tiles' DAZ and FTZ)
    x = wide_bf16(rng, (32, 64), -134, -100)
    wp = wide_bf16(rng, (32, 2 * NR), -12, 0)
    got = tile_model(isa, x, wp)
    assert got.tobytes() == tile_model("ref", x, wp).tobytes()
    assert np.any(np.abs(bf16_float(x)) < 2.0 ** -126) and np.any((got != 0) & (np.abs(got) < 2.0 ** -100))
    # K over several calls, each accumulating onto the last: the bits of one call
    kb = 7
    wp = wide_bf16(rng, (3 * 16 * kb, 2 * NR))
    x = wide_bf16(rng, (20, 32 * kb))
    whole = tile_model("ref", x, wp)
    for split in (1, 3):
        assert tile_model(isa, x, wp, split=split).tobytes() == whole.tobytes()


# ---- int8 ----------------------------------------------------------------------------------------

def i8_dense(wp):
    """The [4 kq, NR] matrix a packed int8 panel [kq, 4 NR] holds."""
    kq = wp.shape[0]
    return wp.reshape(kq, NR, 4).transpose(0, 2, 1).reshape(4 * kq, NR).astype(np.int64)


@pytest.mark.parametrize("isa", LEVELS)
@pytest.mark.parametrize("kq", [0, 1, 2, 5, 64, 257])
def test_i8_tile_is_the_exact_integer_product_for_every_height_and_tail(isa, kq):
    rng = np.random.default_rng(kq)
    mr = kernel(isa, "gemm_i8_mr")
    x = rng.integers(0, 256, (2 * mr + 3, 4 * kq), dtype=np.uint8)
    wp = rng.integers(-127, 128, (kq, 4 * NR), dtype=np.int8)
    want = x.astype(np.int64) @ i8_dense(wp)
    for m in [*range(1, mr + 2), 2 * mr + 3]:  # every row count a kernel specializes
        for n in TAILS:
            got = kernel(isa, "gemm_i8_tile", x[:m], wp, n=n)
            assert got.dtype == np.int32
            np.testing.assert_array_equal(got, want[:m, :n], err_msg=f"m={m} n={n}")


@pytest.mark.parametrize("isa", LEVELS)
def test_i8_tile_extremes_do_not_saturate(isa):
    # 255 x -128 products summed over many groups: a saturating 16-bit path would clip these
    kq = 300
    x = np.full((3, 4 * kq), 255, np.uint8)
    wp = np.full((kq, 4 * NR), -128, np.int8)
    wp[:, ::2] = 127
    want = x.astype(np.int64) @ i8_dense(wp)
    np.testing.assert_array_equal(kernel(isa, "gemm_i8_tile", x, wp), want)


def test_i8_hook_checks_shapes_and_types():
    x, wp = np.zeros((2, 8), np.uint8), np.zeros((2, 4 * NR), np.int8)
    with pytest.raises(ValueError, match="needs x"):
        kernel("ref", "gemm_i8_tile", np.zeros((2, 6), np.uint8), wp)
    with pytest.raises(TypeError, match="uint8"):
        kernel("ref", "gemm_i8_tile", x.astype(np.float32), wp)
    with pytest.raises(ValueError, match="n = 1..32"):
        kernel("ref", "gemm_i8_tile", x, wp, n=0)


def quantize_expected(x):
    x = np.asarray(x, np.float32)
    if not np.isfinite(x).all():
        return np.full(x.shape, 128, np.uint8), np.nan
    amax = np.float32(np.abs(x).max()) if x.size else np.float32(0)
    s = np.float32(amax / np.float32(127)) if amax > 0 else np.float32(1)
    inv = np.float32(1) / s
    q = np.clip(np.rint(x * inv), -127, 127)  # np.rint rounds half to even
    return (q.astype(np.int32) + 128).astype(np.uint8), float(s)


@pytest.mark.parametrize("isa", LEVELS)
@pytest.mark.parametrize("n", [0, 1, 7, 8, 15, 16, 17, 100, 1027])
def test_quantize_u8_matches_the_definition(isa, n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(np.float32) * 3
    if n > 5:
        x[3] = 40.0  # an outlier sets the scale
        x[4] = 40.0 / 127 * 2.5  # exactly halfway after scaling: ties go to even (2)
    got, scale = kernel(isa, "quantize_u8", x)
    want, want_scale = quantize_expected(x)
    np.testing.assert_array_equal(got, want)
    assert scale == pytest.approx(want_scale, rel=0, abs=0)


@pytest.mark.parametrize("isa", LEVELS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_quantize_u8_marks_non_finite_rows_with_a_nan_scale(isa, bad):
    x = np.ones(37, np.float32)
    x[20] = bad
    got, scale = kernel(isa, "quantize_u8", x)
    assert np.isnan(scale) and (got == 128).all()


@pytest.mark.parametrize("isa", LEVELS)
def test_quantize_u8_of_zeros_uses_scale_one(isa):
    got, scale = kernel(isa, "quantize_u8", np.zeros(19, np.float32))
    assert scale == 1.0 and (got == 128).all()


# ---- the outlier kernels of int8 layers ---------------------------------------------------------


def outliers_definition(wp, k, v, wscale, y):
    """acc = the float32 fma chain of v[t] w(k[t], j) over t, then fma(acc, wscale, y)."""
    n = len(y)
    w = wp.reshape(-1, NR, 4)[:, :n, :]             # [kq, NR, 4] -> w(k, j) = w[k // 4, j, k % 4]
    acc = np.zeros(n, np.float32)
    for kt, vt in zip(k, v):
        acc = (np.float64(vt) * w[kt // 4, :, kt % 4] + acc.astype(np.float64)).astype(np.float32)
    return (acc.astype(np.float64) * wscale + y.astype(np.float64)).astype(np.float32)


@pytest.mark.parametrize("isa", LEVELS)
def test_outlier_kernel_matches_its_definition_for_every_tail(isa):
    rng = np.random.default_rng(5)
    kq = 9
    for n in range(0, NR + 1):
        for count in (0, 1, 3, 16):
            wp = rng.integers(-128, 128, (kq, 4 * NR)).astype(np.int8)
            k = rng.integers(0, 4 * kq, count).astype(np.int32)
            v = (rng.standard_normal(count) * 50.0).astype(np.float32)
            wscale = (rng.random(n) * 0.02 + 1e-3).astype(np.float32)
            y = rng.standard_normal(n).astype(np.float32)
            got = kernel(isa, "i8_outliers_f32", wp, k, v, wscale, y)
            want = outliers_definition(wp, k, v, wscale, y)
            np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6, err_msg=f"{isa} n={n} count={count}")
            ref = kernel("ref", "i8_outliers_f32", wp, k, v, wscale, y)
            np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32), err_msg=f"{isa} n={n}")


@pytest.mark.parametrize("isa", LEVELS)
def test_outlier_kernel_reads_every_byte_of_a_group_signed(isa):
    wp = np.zeros((2, 4 * NR), np.int8)
    wp[1].reshape(NR, 4)[:] = [-128, 127, -1, 0]     # inputs 4..7 of every column
    for b, w in enumerate([-128, 127, -1, 0]):
        got = kernel(isa, "i8_outliers_f32", wp, np.array([4 + b], np.int32), np.array([2.0], np.float32),
                     np.ones(NR, np.float32), np.zeros(NR, np.float32))
        np.testing.assert_array_equal(got, np.full(NR, 2.0 * w, np.float32), err_msg=f"{isa} byte {b}")


def test_outlier_kernel_hook_checks_its_inputs():
    wp, one = np.zeros((2, 4 * NR), np.int8), np.ones(1, np.float32)
    with pytest.raises(ValueError, match="outside"):
        kernel("ref", "i8_outliers_f32", wp, np.array([8], np.int32), one, one, one)
    with pytest.raises(ValueError, match="n <= 32"):
        kernel("ref", "i8_outliers_f32", wp, np.array([0], np.int32), one, np.ones(33, np.float32),
               np.ones(33, np.float32))


@pytest.mark.parametrize("isa", LEVELS)
def test_abs_sum_and_max_are_the_64_lane_definition(isa):
    rng = np.random.default_rng(8)
    for n in list(range(0, 140)) + [1000, 3072]:
        x = (rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3, n)).astype(np.float32)
        lanes = np.zeros(64, np.float32)
        for i, a in enumerate(np.abs(x)):
            lanes[i % 64] = np.float32(lanes[i % 64] + a)
        want_sum = np.float32(0.0)
        for a in lanes:
            want_sum = np.float32(want_sum + a)
        got_sum, got_max = kernel(isa, "abs_sum_max_f32", x)
        assert np.float32(got_sum) == want_sum, (isa, n)
        assert np.float32(got_max) == (np.abs(x).max() if n else 0.0), (isa, n)


@pytest.mark.parametrize("isa", LEVELS)
def test_abs_max_skips_nan_and_the_sum_carries_it(isa):
    x = np.array([1.0, np.nan, -3.0] + [0.5] * 20, np.float32)
    s, m = kernel(isa, "abs_sum_max_f32", x)
    assert np.isnan(s) and m == 3.0


@pytest.mark.parametrize("isa", LEVELS)
def test_find_above_returns_increasing_indices_up_to_the_cap(isa):
    rng = np.random.default_rng(9)
    for n in list(range(0, 40)) + [300, 3072]:
        x = rng.standard_normal(n).astype(np.float32)
        x[rng.random(n) < 0.05] = np.nan
        want = np.flatnonzero(np.abs(x) > 1.5)
        for cap in sorted({0, 1, 5, len(want), n + 1}):
            idx, total = kernel(isa, "find_above_f32", x, alpha=1.5, n=cap)
            assert total == len(want), (isa, n, cap)
            np.testing.assert_array_equal(idx, want[:cap], err_msg=f"{isa} n={n} cap={cap}")


# ---- int8 layers: per-token inputs with their outliers taken out --------------------------------

def per_token_int8(w, x):
    """What an int8 layer gives with no outlier handling: per-channel weights, one scale per row of x."""
    w, x = w.astype(np.float32), x.astype(np.float32)
    ws = np.abs(w).max(axis=1) / np.float32(127)
    wq = np.clip(np.rint(w / ws[:, None]), -127, 127)
    xs = np.abs(x).max(axis=1) / np.float32(127)
    xq = np.clip(np.rint(x * (np.float32(1) / xs)[:, None]), -127, 127)
    return (xq.astype(np.float64) @ wq.T.astype(np.float64)) * (xs[:, None].astype(np.float64) * ws[None, :])


def gated_mlp_rows(rng, m, k):
    """Rows shaped like down_proj inputs (products of two Gaussians: heavier tails than either)."""
    return (rng.standard_normal((m, k)) * rng.standard_normal((m, k))).astype(np.float32)


def test_int8_layer_on_rows_without_outliers_is_plain_per_token_quantization():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((70, 1024)).astype(np.float32)
    x = rng.standard_normal((29, 1024)).astype(np.float32)
    got = hooks.linear(w, x, "int8", 2)
    want = per_token_int8(w, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).std())


def int8_with_outliers(w, x, ratio=12.0, most=16):
    """The int8 layer's definition: per row, entries above ratio x mean |x| (the largest `most`)
    are taken out, the rest is quantized per token, the outliers meet the dequantized weights."""
    w, x = w.astype(np.float32), x.astype(np.float32)
    ws = np.abs(w).max(axis=1) / np.float32(127)
    wdq = np.clip(np.rint(w / ws[:, None]), -127, 127).astype(np.float64) * ws[:, None]
    rest = x.copy()
    outliers = np.zeros_like(x)
    for r, row in enumerate(x):
        a = np.abs(row)
        big = np.flatnonzero(a > ratio * a.mean())
        big = big[np.argsort(-a[big], kind="stable")][:most]
        outliers[r, big], rest[r, big] = row[big], 0.0
    return per_token_int8(w, rest) + outliers.astype(np.float64) @ wdq.T


@pytest.mark.parametrize("magnitude", [30.0, 300.0, 3000.0])
def test_int8_layer_applies_outlier_inputs_in_float32(magnitude):
    # A few channels far above the rest, as down_proj's inputs carry in real LLMs: one scale per
    # row would leave the other channels a handful of int8 levels.
    rng = np.random.default_rng(int(magnitude))
    w = rng.standard_normal((70, 3072)).astype(np.float32)
    x = gated_mlp_rows(rng, 37, 3072)
    x[:, [5, 130, 2000]] *= magnitude
    x[3, 7] = 5 * magnitude
    got = hooks.linear(w, x, "int8", 2)
    want = int8_with_outliers(w, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).std())
    # and every thread count gives the same bits
    np.testing.assert_array_equal(got, hooks.linear(w, x, "int8", 1))
    # Against the exact product: the inputs' own rounding no longer grows with the outliers.
    # (What remains is the weights' int8 rounding, which the outliers scale too; at 3000x it
    # dominates both ways.)
    exact = x.astype(np.float64) @ w.T.astype(np.float64)
    rms = lambda e: np.sqrt((e ** 2).mean())  # noqa: E731
    if magnitude <= 300:
        assert rms(got - exact) < 0.5 * rms(per_token_int8(w, x) - exact)
    else:
        assert rms(got - exact) < rms(per_token_int8(w, x) - exact)


def test_int8_layer_keeps_the_largest_outliers_when_a_row_has_too_many():
    rng = np.random.default_rng(9)
    w = rng.standard_normal((40, 512)).astype(np.float32)
    x = rng.standard_normal((4, 512)).astype(np.float32)
    x[0, ::8] *= 100.0   # 64 outliers, more than are taken out: the row still scores sensibly
    exact = x.astype(np.float64) @ w.T.astype(np.float64)
    got = hooks.linear(w, x, "int8", 1)
    assert np.isfinite(got).all()
    assert np.abs(got - exact).max() < 0.05 * np.abs(exact).max()


def test_int8_layer_row_with_nan_gives_nan_only_in_that_row():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((33, 256)).astype(np.float32)
    x = rng.standard_normal((5, 256)).astype(np.float32)
    x[1, 3] = 1e4      # an outlier row
    x[2, 7] = np.nan
    got = hooks.linear(w, x, "int8", 2)
    assert np.isnan(got[2]).all()
    assert np.isfinite(np.delete(got, 2, axis=0)).all()


@pytest.mark.parametrize("n_in", [100, 1024, 3000])
def test_int8_rows_quantized_by_their_producer_give_the_bits_of_float32_inputs(n_in):
    # The forward's norms and GLU quantize an int8 layer's inputs themselves, a whole row at a time
    # (cr_linear_put_i8; into the tile order on AMX): the bits of the layer quantizing float32 inputs,
    # outlier and NaN rows included, whatever junk the unwritten bytes and the rows past the last hold.
    rng = np.random.default_rng(n_in)
    w = rng.standard_normal((70, n_in)).astype(np.float32)
    for m in (1, 15, 17, 70):
        x = gated_mlp_rows(rng, m, n_in)
        x[0, 3] = 500.0
        if m > 2:
            x[2, 5] = np.nan
        want = hooks.linear(w, x, fmt="int8", threads=2)
        got = hooks.linear(w, x, fmt="int8", threads=2, rows=32)
        assert got.tobytes() == want.tobytes(), m
        assert np.isnan(got[2]).all() if m > 2 else np.isfinite(got).all()


@pytest.mark.parametrize("n_out,n_in", [(33, 31), (72, 100), (40, 130), (40, 4200)])
def test_bf16_rows_written_by_their_producer_give_the_bits_of_float32_inputs(n_out, n_in):
    # the forward's norms, attention and GLU write a bf16 layer's inputs straight into its own
    # rows (cr_linear_put_bf16; on AMX in the tile order), in parts of a row: the bits of the layer
    # rounding float32 inputs itself, for ragged K (the part that ends a row zero-fills the
    # padding, which the hook's NaN fill would otherwise turn into NaN outputs) and ragged row
    # counts (the rows past the last are NaN too: on AMX read, never used)
    rng = np.random.default_rng(n_out + n_in)
    w = (rng.standard_normal((n_out, n_in)) * 0.1).astype(np.float32)
    for m in (1, 15, 17, 70):
        x = rng.standard_normal((m, n_in)).astype(np.float32)
        want = hooks.linear(w, x, fmt="bfloat16", threads=2)
        for part in (32, 96, 256):
            got = hooks.linear(w, x, fmt="bfloat16", threads=2, rows=part)
            assert got.tobytes() == want.tobytes(), (m, part)


def test_only_int8_and_bf16_layers_take_their_own_input_rows():
    w, x = np.ones((4, 64), np.float32), np.ones((2, 64), np.float32)
    with pytest.raises(ValueError, match="does not take its own input rows"):
        hooks.linear(w, x, fmt="float32", rows=32)
    with pytest.raises(ValueError, match="multiple of 32"):
        hooks.linear(w, x, fmt="bfloat16", rows=48)


def test_linear_hook_checks_its_inputs():
    w = np.ones((4, 8), np.float32)
    with pytest.raises(ValueError, match="columns"):
        hooks.linear(w, np.ones((2, 7), np.float32), "int8")
    with pytest.raises(ValueError, match="fmt"):
        hooks.linear(w, np.ones((2, 8), np.float32), "int4")


def test_int8_layer_gives_the_same_bits_under_every_isa_cap(tmp_path):
    # The AVX-512 VNNI table dequantizes inside the GEMM tile; the others leave it to linear.c.
    # Integer sums are exact and both apply the same float operations, so the bits must agree.
    import subprocess
    import sys
    rng = np.random.default_rng(17)
    w = rng.standard_normal((75, 300)).astype(np.float32)
    x = gated_mlp_rows(rng, 53, 300)
    x[7, 11] = 400.0  # an outlier row too
    np.save(tmp_path / "w.npy", w)
    np.save(tmp_path / "x.npy", x)
    # every row count of a tile (up to 16) and a block with a tail; rows never depend on m
    code = ("import sys, numpy as np; from crossrank import _testing as hooks; "
            "d = sys.argv[1]; w, x = np.load(d + '/w.npy'), np.load(d + '/x.npy'); "
            "y = hooks.linear(w, x, 'int8', 2); "
            "assert all((hooks.linear(w, x[:m], 'int8', 1) == y[:m]).all() for m in range(1, 17)); "
            "np.save(d + '/y_' + sys.argv[2] + '.npy', y)")
    for level in LEVELS:
        env = dict(__import__("os").environ, CROSSRANK_ISA=level)
        subprocess.run([sys.executable, "-c", code, str(tmp_path), level], env=env, check=True)
    want = np.load(tmp_path / f"y_{LEVELS[0]}.npy")
    np.testing.assert_allclose(want, int8_with_outliers(w, x), rtol=1e-4, atol=1e-4 * np.abs(want).std())
    for level in LEVELS[1:]:
        np.testing.assert_array_equal(np.load(tmp_path / f"y_{level}.npy"), want, err_msg=level)
