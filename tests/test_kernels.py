"""Vector kernels: every ISA table this CPU runs agrees with the scalar reference and with NumPy.

Each kernel of each ISA table is called directly through the test hook ``crossrank._testing.kernel(isa, name,
*arrays)`` (bypassing the active table and CROSSRANK_ISA), on lengths that exercise every tail of
the 8-, 16- and 32-wide loops, on arrays starting on a 64-byte boundary and one element past it,
and (16-bit sources, which may sit anywhere in a memory-mapped checkpoint) at an odd byte address.
Kernels that write do so into a buffer with guard zones: a write past the n destination elements
makes the hook raise RuntimeError, so these tests also catch out-of-bounds tail stores.

Tolerances:
* dot_f32 / sumsq_f32: every ISA table returns the reference's bits (one fixed summation order,
  kernels.h), and each is within |result - float64 result| <= 4 sqrt(n) u sum|a_i b_i| with
  u = 2^-24 (a dropped or doubled element moves the result by ~ sum|a_i b_i| / n, far above the
  bound at every length tested). Integer-valued inputs, where every order of summation is exact,
  must agree exactly.
* norm_scale_f32, rope_f32: plain float32 products and sums, no fused step, so every table
  returns NumPy's float32 bits.
* scale_f32: one float32 product per element, so every table returns NumPy's float32 bits
  (signed zeros, subnormals, infinities and NaN included).
* bf16_to_f32 / f16_to_f32: bitwise, for all 65536 bit patterns, against the reference, NumPy and
  an integer-arithmetic widening. One documented exception: F16C's VCVTPH2PS (AVX2 and AVX-512
  forms) quiets signalling half NaNs, i.e. sets the float's quiet bit (bit 22) and keeps sign and
  payload, where the reference widens the bits exactly. A NaN is a NaN to the engine, so an ISA
  kernel may return either the exact widening or its quieted form for a signalling NaN, nothing
  else. bfloat16 widening is a shift, so no exception there.

No torch.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from _hooks import hooks

LEVELS = hooks.isa_levels()
SIMD_LEVELS = [isa for isa in LEVELS if isa != "ref"]
KNOWN_TABLES = ["ref", "avx2", "avxvnni", "avx512", "avx512vnni", "avx512bf16", "amx"]

LENGTHS = [0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000, 4097]
U = 2.0 ** -24
QUIET_BIT = np.uint32(0x0040_0000)


# ---- placement helpers ---------------------------------------------------------------------------

def placed(values, misalign_bytes):
    """A copy of `values` whose data starts `misalign_bytes` past a 64-byte boundary."""
    values = np.ascontiguousarray(values)
    raw = np.zeros(values.nbytes + 128, dtype=np.uint8)
    start = (-raw.ctypes.data) % 64 + misalign_bytes
    out = np.ndarray(values.shape, values.dtype, buffer=raw, offset=start)
    out[...] = values
    assert out.ctypes.data % 64 == misalign_bytes
    return out


def offset_view(values):
    """`values` as a view at element offset 1 of a 64-byte aligned array (the data pointer is
    one element past the boundary, so never 64-, 32- or 16-byte aligned)."""
    values = np.ascontiguousarray(values)
    base = placed(np.concatenate([values[:1] if len(values) else np.zeros(1, values.dtype), values]), 0)
    view = base[1:] if len(values) else np.ndarray((0,), values.dtype, buffer=base, offset=values.itemsize)
    assert view.ctypes.data % 64 == values.itemsize
    return view


FLOAT_PLACEMENTS = ["aligned64", "offset1"]
U16_PLACEMENTS = ["aligned64", "offset1", "odd_byte"]


def place(values, placement):
    if placement == "aligned64":
        return placed(values, 0)
    if placement == "offset1":
        return offset_view(values)
    if placement == "odd_byte":
        out = placed(values, 1)
        assert out.ctypes.data % 2 == 1
        return out
    raise AssertionError(placement)


def kernel(isa, name, *arrays, **kw):
    return hooks.kernel(isa, name, *arrays, **kw)


def float32_bits(value):
    return int(np.float32(value).view(np.uint32))


def reduction_tolerance(products):
    n = max(len(products), 1)
    return 4.0 * math.sqrt(n) * U * float(np.abs(products).sum()) + 1e-30


# ---- ISA levels ----------------------------------------------------------------------------------

def test_isa_levels_list_ref_first_then_every_table_the_detected_level_allows():
    detected = hooks.cpu_info()["detected"]
    runnable = KNOWN_TABLES[:KNOWN_TABLES.index(detected) + 1]
    has_avx_vnni = "avx_vnni" in hooks.cpu_info()["features"].split(",")
    if "avxvnni" in runnable and not has_avx_vnni:  # a side level: AVX-512 CPUs may lack it
        runnable.remove("avxvnni")
    assert LEVELS == runnable


def test_isa_levels_ignore_the_crossrank_isa_cap():
    # The cap chooses the active table; the hook can still run everything the CPU supports.
    code = "from crossrank import _core, _testing; print(_core.cpu_info()['isa'], *_testing.isa_levels())"
    env = dict(os.environ, CROSSRANK_ISA="ref")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["ref", *LEVELS]


# ---- dot_f32 / sumsq_f32 -------------------------------------------------------------------------

@pytest.mark.parametrize("placement", FLOAT_PLACEMENTS)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("isa", LEVELS)
def test_dot_matches_float64_within_rounding_bound(isa, n, placement):
    rng = np.random.default_rng(1000 + n)
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    products = a.astype(np.float64) * b.astype(np.float64)
    exact = float(products.sum())
    got = kernel(isa, "dot_f32", place(a, placement), place(b, placement))
    assert abs(got - exact) <= reduction_tolerance(products), (got, exact)


@pytest.mark.parametrize("placement", FLOAT_PLACEMENTS)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("isa", SIMD_LEVELS)
def test_dot_has_the_reference_kernels_bits(isa, n, placement):
    rng = np.random.default_rng(2000 + n)
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    ref = kernel("ref", "dot_f32", a, b)
    got = kernel(isa, "dot_f32", place(a, placement), place(b, placement))
    assert float32_bits(got) == float32_bits(ref), (got, ref)


@pytest.mark.parametrize("placement", FLOAT_PLACEMENTS)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("isa", LEVELS)
def test_dot_of_integer_valued_inputs_is_exact_so_no_element_is_dropped_or_doubled(isa, n, placement):
    # All terms are positive and positions weigh differently, so a lost, repeated or misplaced
    # tail element changes the sum; every partial sum stays below 2^24, so any summation order
    # is exact.
    rng = np.random.default_rng(3000 + n)
    a = rng.integers(1, 4, n).astype(np.float32)
    weights = np.arange(n) % 1024 + 1
    b = weights.astype(np.float32)
    exact = float(np.dot(a.astype(np.int64), weights))
    assert exact < 2 ** 24
    assert kernel(isa, "dot_f32", place(a, placement), place(b, placement)) == exact


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 65, 129])
@pytest.mark.parametrize("isa", LEVELS)
def test_dot_and_sumsq_propagate_nan_and_inf_from_every_position(isa, n):
    for k in sorted({0, n // 2, n - 1}):
        a = np.ones(n, dtype=np.float32)
        b = np.ones(n, dtype=np.float32)
        a[k] = np.nan
        assert math.isnan(kernel(isa, "dot_f32", a, b)), k
        assert math.isnan(kernel(isa, "sumsq_f32", a)), k
        a[k] = np.inf
        assert kernel(isa, "dot_f32", a, b) == math.inf, k
        assert kernel(isa, "sumsq_f32", a) == math.inf, k
        b[k] = -1.0
        assert kernel(isa, "dot_f32", a, b) == -math.inf, k


@pytest.mark.parametrize("isa", LEVELS)
def test_dot_and_sumsq_of_empty_arrays_are_zero(isa):
    empty = np.zeros(0, dtype=np.float32)
    assert kernel(isa, "dot_f32", empty, empty) == 0.0
    assert kernel(isa, "sumsq_f32", empty) == 0.0


@pytest.mark.parametrize("placement", FLOAT_PLACEMENTS)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("isa", LEVELS)
def test_sumsq_matches_float64_within_rounding_bound(isa, n, placement):
    rng = np.random.default_rng(4000 + n)
    x = rng.standard_normal(n).astype(np.float32)
    squares = x.astype(np.float64) ** 2
    exact = float(squares.sum())
    got = kernel(isa, "sumsq_f32", place(x, placement))
    assert abs(got - exact) <= reduction_tolerance(squares), (got, exact)


@pytest.mark.parametrize("placement", FLOAT_PLACEMENTS)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("isa", SIMD_LEVELS)
def test_sumsq_has_the_reference_kernels_bits(isa, n, placement):
    rng = np.random.default_rng(5000 + n)
    x = rng.standard_normal(n).astype(np.float32)
    ref = kernel("ref", "sumsq_f32", x)
    got = kernel(isa, "sumsq_f32", place(x, placement))
    assert float32_bits(got) == float32_bits(ref), (got, ref)
    assert float32_bits(kernel(isa, "dot_f32", place(x, placement), place(x, placement))) == float32_bits(ref)


@pytest.mark.parametrize("placement", FLOAT_PLACEMENTS)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("isa", LEVELS)
def test_sumsq_of_integer_valued_inputs_is_exact(isa, n, placement):
    rng = np.random.default_rng(6000 + n)
    x = rng.integers(-40, 41, n).astype(np.float32)
    exact = float((x.astype(np.int64) ** 2).sum())
    assert exact < 2 ** 24
    assert kernel(isa, "sumsq_f32", place(x, placement)) == exact


# ---- norm_scale_f32, rope_f32 ---------------------------------------------------------------------

@pytest.mark.parametrize("placement", FLOAT_PLACEMENTS)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("isa", LEVELS)
def test_norm_scale_is_both_float32_products_in_order_bitwise(isa, n, placement):
    # w * (x * r), each product rounded, no fused step: NumPy's float32 arithmetic gives the bits
    rng = np.random.default_rng(11000 + n)
    x = (rng.standard_normal(n) * 30).astype(np.float32)
    w = rng.standard_normal(n).astype(np.float32)
    r = np.float32(0.0731)
    xp, wp = place(x, placement), place(w, placement)
    got = kernel(isa, "norm_scale_f32", xp, wp, alpha=float(r))
    np.testing.assert_array_equal(got.view(np.uint32), (w * (x * r)).view(np.uint32))
    np.testing.assert_array_equal(xp, x)
    np.testing.assert_array_equal(wp, w)


@pytest.mark.parametrize("placement", FLOAT_PLACEMENTS)
@pytest.mark.parametrize("half", [h for h in LENGTHS if h <= 1000])
@pytest.mark.parametrize("isa", LEVELS)
def test_rope_rotates_halves_with_rounded_products_bitwise(isa, half, placement):
    rng = np.random.default_rng(12000 + half)
    v = (rng.standard_normal(2 * half) * 4).astype(np.float32)
    angle = rng.uniform(-50, 50, half)
    c, s = np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)
    vp = place(v, placement)
    got = kernel(isa, "rope_f32", vp, place(np.concatenate([c, s]), placement))
    x1, x2 = v[:half], v[half:]
    expected = np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s])
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
    np.testing.assert_array_equal(vp, v)


def test_rope_refuses_an_odd_head_vector():
    with pytest.raises(ValueError, match="even length"):
        kernel("ref", "rope_f32", np.zeros(3, np.float32), np.zeros(3, np.float32))


# ---- scale_f32 -----------------------------------------------------------------------------------

@pytest.mark.parametrize("placement", FLOAT_PLACEMENTS)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("isa", LEVELS)
def test_scale_is_one_rounded_product_and_leaves_its_input_alone(isa, n, placement):
    rng = np.random.default_rng(7000 + n)
    x = rng.standard_normal(n).astype(np.float32)
    alpha = np.float32(0.7310586)
    xp = place(x, placement)
    got = kernel(isa, "scale_f32", xp, alpha=float(alpha))
    assert got.dtype == np.float32 and got.shape == (n,)
    # a float32 product rounded once is what NumPy's float32 multiply gives
    np.testing.assert_array_equal(got.view(np.uint32), (alpha * x).view(np.uint32))
    np.testing.assert_array_equal(xp, x)


@pytest.mark.parametrize("isa", LEVELS)
def test_scale_keeps_signed_zeros_subnormals_and_specials(isa):
    x = np.array([-0.0, 0.0, 1e-40, -1e-40, np.inf, -np.inf, np.nan, 3.0e38] * 5, dtype=np.float32)
    for alpha in (1.0, 0.5, 0.0, 2.0**-100):
        got = kernel(isa, "scale_f32", x, alpha=alpha)
        ref = kernel("ref", "scale_f32", x, alpha=alpha)
        np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32))
        with np.errstate(invalid="ignore", over="ignore"):
            expected = np.float32(alpha) * x
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        finite = ~np.isnan(expected)
        np.testing.assert_array_equal(got[finite].view(np.uint32), expected[finite].view(np.uint32))
    # by 1: every element is x itself, bit for bit (attention skips the product then)
    np.testing.assert_array_equal(kernel(isa, "scale_f32", x, alpha=1.0)[:6].view(np.uint32), x[:6].view(np.uint32))


# ---- bf16_to_f32 ---------------------------------------------------------------------------------

ALL_U16 = np.arange(65536, dtype=np.uint32).astype(np.uint16)


def bf16_expected(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f16_expected_bits(bits):
    """Exact binary16 -> binary32 widening by integer arithmetic (no float16 hardware)."""
    h = bits.astype(np.uint32)
    sign = (h & 0x8000) << 16
    exp = (h >> 10) & 0x1F
    mant = h & 0x3FF
    normal = sign | ((exp + 112) << 23) | (mant << 13)
    special = sign | np.uint32(0x7F80_0000) | (mant << 13)  # inf and NaN, payload kept
    sub = (mant.astype(np.float64) * 2.0 ** -24).astype(np.float32).view(np.uint32) | sign
    return np.where(exp == 0x1F, special, np.where(exp == 0, sub, normal)).astype(np.uint32)


def is_f16_signalling_nan(bits):
    bits = bits.astype(np.uint32)
    return ((bits & 0x7C00) == 0x7C00) & ((bits & 0x3FF) != 0) & ((bits & 0x200) == 0)


@pytest.mark.parametrize("placement", U16_PLACEMENTS)
@pytest.mark.parametrize("isa", LEVELS)
def test_bf16_widening_is_bitwise_exact_for_all_65536_patterns(isa, placement):
    got = kernel(isa, "bf16_to_f32", place(ALL_U16, placement))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), bf16_expected(ALL_U16).view(np.uint32))
    np.testing.assert_array_equal(got.view(np.uint32), kernel("ref", "bf16_to_f32", ALL_U16).view(np.uint32))


@pytest.mark.parametrize("placement", U16_PLACEMENTS)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("isa", LEVELS)
def test_bf16_widening_handles_every_tail_length(isa, n, placement):
    rng = np.random.default_rng(11000 + n)
    bits = rng.integers(0, 65536, n).astype(np.uint16)
    got = kernel(isa, "bf16_to_f32", place(bits, placement))
    np.testing.assert_array_equal(got.view(np.uint32), bf16_expected(bits).view(np.uint32))


@pytest.mark.parametrize("isa", LEVELS)
def test_bf16_special_values_keep_their_exact_bits(isa):
    cases = {
        0x0000: 0x0000_0000,  # +0
        0x8000: 0x8000_0000,  # -0
        0x0001: 0x0001_0000,  # smallest subnormal
        0x807F: 0x807F_0000,  # largest negative subnormal
        0x0080: 0x0080_0000,  # smallest normal
        0x7F7F: 0x7F7F_0000,  # largest finite
        0x7F80: 0x7F80_0000,  # +inf
        0xFF80: 0xFF80_0000,  # -inf
        0x7FC0: 0x7FC0_0000,  # quiet NaN
        0x7F81: 0x7F81_0000,  # signalling NaN: a shift, never quieted
        0xFFA5: 0xFFA5_0000,  # negative NaN with payload
    }
    src = np.array(list(cases), dtype=np.uint16)
    got = kernel(isa, "bf16_to_f32", src).view(np.uint32)
    assert [hex(v) for v in got] == [hex(v) for v in cases.values()]


# ---- f16_to_f32 ----------------------------------------------------------------------------------

def test_f16_reference_kernel_is_the_exact_widening_and_matches_numpy():
    ref = kernel("ref", "f16_to_f32", ALL_U16).view(np.uint32)
    np.testing.assert_array_equal(ref, f16_expected_bits(ALL_U16))
    # NumPy's own float16 cast may go through F16C too: allow it the same quieting.
    numpy_bits = ALL_U16.view(np.float16).astype(np.float32).view(np.uint32)
    snan = is_f16_signalling_nan(ALL_U16)
    np.testing.assert_array_equal(numpy_bits[~snan], ref[~snan])
    assert np.all((numpy_bits[snan] == ref[snan]) | (numpy_bits[snan] == ref[snan] | QUIET_BIT))


def check_f16_against_exact(got_bits, src_bits):
    want = f16_expected_bits(src_bits)
    snan = is_f16_signalling_nan(src_bits)
    np.testing.assert_array_equal(got_bits[~snan], want[~snan])
    # Signalling NaNs: the exact widening, or (F16C) the same NaN with the quiet bit set.
    ok = (got_bits[snan] == want[snan]) | (got_bits[snan] == (want[snan] | QUIET_BIT))
    assert np.all(ok), [hex(b) for b in src_bits[snan][~ok][:8]]


@pytest.mark.parametrize("placement", U16_PLACEMENTS)
@pytest.mark.parametrize("isa", LEVELS)
def test_f16_widening_is_bitwise_exact_for_all_65536_patterns_except_snan_quieting(isa, placement):
    got = kernel(isa, "f16_to_f32", place(ALL_U16, placement))
    assert got.dtype == np.float32
    got_bits = got.view(np.uint32)
    check_f16_against_exact(got_bits, ALL_U16)
    numpy_values = ALL_U16.view(np.float16).astype(np.float32)
    nan = np.isnan(numpy_values)
    np.testing.assert_array_equal(got_bits[~nan], numpy_values[~nan].view(np.uint32))
    assert np.all(np.isnan(got[nan]))


@pytest.mark.parametrize("placement", U16_PLACEMENTS)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("isa", LEVELS)
def test_f16_widening_handles_every_tail_length(isa, n, placement):
    rng = np.random.default_rng(12000 + n)
    bits = rng.integers(0, 65536, n).astype(np.uint16)
    got = kernel(isa, "f16_to_f32", place(bits, placement))
    check_f16_against_exact(got.view(np.uint32), bits)
    if isa != "ref":
        ref = kernel("ref", "f16_to_f32", bits).view(np.uint32)
        snan = is_f16_signalling_nan(bits)
        np.testing.assert_array_equal(got.view(np.uint32)[~snan], ref[~snan])


F16_SPECIALS = {
    0x0000: 0x0000_0000,  # +0
    0x8000: 0x8000_0000,  # -0
    0x0001: 0x3380_0000,  # smallest subnormal, 2^-24
    0x03FF: 0x387F_C000,  # largest subnormal
    0x8001: 0xB380_0000,  # smallest negative subnormal
    0x0400: 0x3880_0000,  # smallest normal, 2^-14
    0x3C00: 0x3F80_0000,  # 1
    0x7BFF: 0x477F_E000,  # 65504, largest finite
    0x7C00: 0x7F80_0000,  # +inf
    0xFC00: 0xFF80_0000,  # -inf
    0x7E00: 0x7FC0_0000,  # quiet NaN
    0x7E55: 0x7FCA_A000,  # quiet NaN with payload
    0xFE01: 0xFFC0_2000,  # negative quiet NaN with payload
}
F16_SNANS = {
    0x7C01: 0x7F80_2000,  # signalling NaN, smallest payload
    0x7D55: 0x7FAA_A000,  # signalling NaN with payload
    0xFDFF: 0xFFBF_E000,  # negative signalling NaN, largest payload
}


@pytest.mark.parametrize("isa", LEVELS)
def test_f16_special_values_keep_their_exact_bits(isa):
    src = np.array(list(F16_SPECIALS), dtype=np.uint16)
    got = kernel(isa, "f16_to_f32", src).view(np.uint32)
    assert [hex(v) for v in got] == [hex(v) for v in F16_SPECIALS.values()]


def test_f16_reference_widens_signalling_nans_without_quieting_them():
    src = np.array(list(F16_SNANS), dtype=np.uint16)
    got = kernel("ref", "f16_to_f32", src).view(np.uint32)
    assert [hex(v) for v in got] == [hex(v) for v in F16_SNANS.values()]


@pytest.mark.parametrize("n", [3, 8, 19])  # the tail path, a full vector, both
@pytest.mark.parametrize("isa", SIMD_LEVELS)
def test_f16_simd_kernels_quiet_signalling_nans_keeping_sign_and_payload(isa, n):
    # What F16C does (VCVTPH2PS, also in its AVX-512 form): the result is the exact widening
    # with the float's quiet bit set. Observed on every x86 CPU we run; pinned here so a kernel
    # that starts mangling NaN payloads (or an emulator that differs) gets noticed.
    src = np.resize(np.array(list(F16_SNANS), dtype=np.uint16), n)
    got = kernel(isa, "f16_to_f32", src).view(np.uint32)
    want = np.array([F16_SNANS[int(b)] for b in src], dtype=np.uint32) | QUIET_BIT
    assert [hex(v) for v in got] == [hex(v) for v in want]


# ---- argument checking ---------------------------------------------------------------------------

@pytest.mark.parametrize("isa", ["sse2", "neon", "AVX2", "", "avx512_bf16"])
def test_unknown_isa_names_raise_value_error(isa):
    x = np.ones(4, dtype=np.float32)
    with pytest.raises(ValueError, match="unknown ISA"):
        kernel(isa, "dot_f32", x, x)


@pytest.mark.parametrize("isa", [level for level in KNOWN_TABLES if level not in LEVELS] or
                         [pytest.param("none", marks=pytest.mark.skip(reason="this CPU runs every ISA table"))])
def test_isa_this_cpu_lacks_raises_runtime_error_instead_of_running(isa):
    x = np.ones(4, dtype=np.float32)
    with pytest.raises(RuntimeError, match="not supported here"):
        kernel(isa, "dot_f32", x, x)
    with pytest.raises(RuntimeError, match="not supported here"):
        kernel(isa, "f16_to_f32", np.ones(4, dtype=np.uint16))


@pytest.mark.parametrize("isa", LEVELS)
def test_unknown_kernel_names_raise_value_error(isa):
    with pytest.raises(ValueError, match="unknown kernel"):
        kernel(isa, "gemm_f32", np.ones(4, dtype=np.float32))


def test_mismatched_lengths_raise_value_error():
    with pytest.raises(ValueError, match="equal length"):
        kernel("ref", "dot_f32", np.ones(4, np.float32), np.ones(5, np.float32))
    with pytest.raises(ValueError, match="equal length"):
        kernel("ref", "norm_scale_f32", np.ones(4, np.float32), np.ones(3, np.float32), alpha=1.0)


def test_arrays_must_be_one_dimensional():
    with pytest.raises(ValueError):
        kernel("ref", "sumsq_f32", np.ones((2, 2), np.float32))
    with pytest.raises(ValueError):
        kernel("ref", "bf16_to_f32", np.uint16(3))


def test_arrays_are_not_silently_narrowed():
    with pytest.raises(TypeError):
        kernel("ref", "sumsq_f32", np.ones(4, np.float64))
    with pytest.raises(TypeError):
        kernel("ref", "f16_to_f32", np.ones(4, np.float16))


def test_strided_views_are_copied_to_contiguous_input():
    x = np.arange(10, dtype=np.float32)
    assert kernel("ref", "sumsq_f32", x[::2]) == float((x[::2].astype(np.float64) ** 2).sum())


def test_wrong_array_count_or_keyword_raises_type_error():
    x = np.ones(4, dtype=np.float32)
    with pytest.raises(TypeError):
        kernel("ref", "dot_f32", x)
    with pytest.raises(TypeError):
        kernel("ref", "sumsq_f32", x, x)
    with pytest.raises(TypeError):
        kernel("ref", "dot_f32", x, x, alpha=1.0)
    with pytest.raises(TypeError):
        kernel("ref", "scale_f32", x, beta=1.0)
    with pytest.raises(TypeError):
        hooks.kernel("ref")


# ---- gemm_f32_tile -------------------------------------------------------------------------------
#
# The tile kernel's contract is stronger than a rounding bound: every output is ONE fused
# multiply-add chain in increasing k from 0, acc = fma(x[i, k], wp[k, j], acc), whatever the ISA
# and the tile height. So ISA tables must agree with the reference bitwise, and a row must not
# depend on m or on the rows beside it.
#
# The NumPy model of that chain must round each step once. Computing x*w + acc in float64 and then
# rounding to float32 is NOT a correct fma: the float64 sum can round onto a float32 midpoint
# (double rounding). fma_chain() avoids that by rounding the float64 sum to odd (the float64
# neighbour with an odd last bit when the sum is inexact, found with the exact TwoSum error):
# with 53 >= 2 * 24 + 2 bits, float32(round_to_odd(s)) is the correctly rounded float32 of s
# (Boldo & Melquiond), so fma_chain is exact and bitwise comparisons with it are guaranteed.
# test_gemm_tile_rounds_once_where_double_rounding_would_not checks a case that tells them apart.

GEMM_K = [0, 1, 2, 3, 17, 64, 1000]
GEMM_M = [1, 2, 3, 4, 5, 6, 7, 13, 48]
GEMM_N = [1, 5, 16, 17, 31, 32]
NR = 32


def gemm(isa, x, wp, n=NR):
    return kernel(isa, "gemm_f32_tile", x, wp, n=n)


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def fma_step(x64, w64, acc):
    """float32 fma(x, w, acc) elementwise, exactly (x64, w64: float64 copies of float32 values)."""
    p = x64 * w64                      # exact: 24 + 24 bits
    a = acc.astype(np.float64)
    s = p + a
    b = s - p
    err = (p - (s - b)) + (a - b)      # TwoSum: p + a == s + err exactly
    even = (s.view(np.uint64) & np.uint64(1)) == 0
    s = np.where((err != 0) & even, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
    return s.astype(np.float32)


def fma_chain(x, wp):
    """[m, NR] float32: the fma chain of every output, in increasing k from +0.0."""
    x64, w64 = x.astype(np.float64), wp.astype(np.float64)
    acc = np.zeros((x.shape[0], NR), dtype=np.float32)
    for kk in range(x.shape[1]):
        acc = fma_step(x64[:, kk:kk + 1], w64[kk], acc)
    return acc


_gemm_cache = {}


def gemm_case(k):
    """48 random rows of x [48, k], a random panel [k, 32] and the exact fma chain of every row."""
    if k not in _gemm_cache:
        rng = np.random.default_rng(5000 + k)
        x = rng.standard_normal((max(GEMM_M), k)).astype(np.float32)
        wp = rng.standard_normal((k, NR)).astype(np.float32)
        _gemm_cache[k] = (x, wp, fma_chain(x, wp))
    return _gemm_cache[k]


@pytest.mark.parametrize("isa", LEVELS)
def test_gemm_mr_is_a_tile_height_the_tested_row_counts_cover(isa):
    mr = kernel(isa, "gemm_mr")
    assert isinstance(mr, int)
    # m = 1..7 then runs every tile height (full tiles and every shorter tail tile).
    assert 1 <= mr < max(m for m in GEMM_M if m <= 7)


@pytest.mark.parametrize("m", GEMM_M)
@pytest.mark.parametrize("k", GEMM_K)
@pytest.mark.parametrize("isa", LEVELS)
def test_gemm_tile_is_the_fma_chain_bitwise(isa, k, m):
    x, wp, want = gemm_case(k)
    for n in GEMM_N:
        got = gemm(isa, x[:m], wp, n=n)
        assert got.shape == (m, n) and got.dtype == np.float32
        mismatch = np.argwhere(bits(got) != bits(want[:m, :n]))
        assert mismatch.size == 0, f"n={n}: first differing (row, col) {mismatch[:5].tolist()}"


@pytest.mark.parametrize("m", GEMM_M)
@pytest.mark.parametrize("k", GEMM_K)
@pytest.mark.parametrize("isa", SIMD_LEVELS)
def test_gemm_tile_agrees_bitwise_with_reference_kernel(isa, k, m):
    x, wp, _ = gemm_case(k)
    for n in GEMM_N:
        np.testing.assert_array_equal(bits(gemm(isa, x[:m], wp, n=n)), bits(gemm("ref", x[:m], wp, n=n)),
                                      err_msg=f"n={n}")


@pytest.mark.parametrize("k", GEMM_K)
@pytest.mark.parametrize("isa", LEVELS)
def test_gemm_tile_matches_float64_within_rounding_bound(isa, k):
    x, wp, _ = gemm_case(k)
    got = gemm(isa, x, wp).astype(np.float64)
    want = x.astype(np.float64) @ wp.astype(np.float64)
    abs_sum = np.abs(x.astype(np.float64)) @ np.abs(wp.astype(np.float64))
    tol = 4.0 * math.sqrt(max(k, 1)) * U * abs_sum + 1e-30
    assert (np.abs(got - want) <= tol).all()


@pytest.mark.parametrize("k", [0, 3, 64])
@pytest.mark.parametrize("isa", LEVELS)
def test_gemm_tile_of_integer_valued_inputs_is_exact(isa, k):
    rng = np.random.default_rng(7000 + k)
    x = rng.integers(-8, 9, (13, k)).astype(np.float32)
    wp = rng.integers(-8, 9, (k, NR)).astype(np.float32)
    np.testing.assert_array_equal(gemm(isa, x, wp), (x.astype(np.int64) @ wp.astype(np.int64)).astype(np.float32))


@pytest.mark.parametrize("k", [1, 17, 1000])
@pytest.mark.parametrize("isa", LEVELS)
def test_gemm_tile_row_depends_on_neither_m_nor_the_rows_beside_it(isa, k):
    x, wp, _ = gemm_case(k)
    all_at_once = bits(gemm(isa, x, wp))
    one_at_a_time = np.concatenate([bits(gemm(isa, x[i:i + 1], wp)) for i in range(len(x))])
    np.testing.assert_array_equal(one_at_a_time, all_at_once)
    mr = kernel(isa, "gemm_mr")
    for m in range(1, 2 * mr + 2):
        np.testing.assert_array_equal(bits(gemm(isa, x[:m], wp)), all_at_once[:m], err_msg=f"m={m}")
    # other data in the rows beside (and in the other rows of each tile) changes nothing
    other = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    for i in (0, mr - 1, mr, len(x) - 1):
        mixed = other.copy()
        mixed[i] = x[i]
        np.testing.assert_array_equal(bits(gemm(isa, mixed, wp))[i], all_at_once[i], err_msg=f"row {i}")


@pytest.mark.parametrize("isa", LEVELS)
def test_gemm_tile_rounds_once_where_double_rounding_would_not(isa):
    # acc = 2^30, then + 2^6 * a * b with a * b = 1 + r 2^-47, 0 < r < 2^18: the exact sum lies just
    # above the float32 midpoint 2^30 + 2^6, so fma rounds up to 2^30 + 2^7; the float64 sum rounds
    # onto the midpoint itself and then ties to even, down to 2^30.
    A = next(A for A in range(3 << 22, 1 << 24) if 0 < -(1 << 47) % A < (1 << 18))
    B = -(-(1 << 47) // A)
    a, b = np.float32(A / 2.0 ** 23), np.float32(B / 2.0 ** 24)
    assert float(a) * float(b) > 1.0 and int(a * 2 ** 23) == A and int(b * 2 ** 24) == B
    x = np.array([[1.0, 64.0 * a]] * 7, dtype=np.float32)
    wp = np.zeros((2, NR), dtype=np.float32)
    wp[0], wp[1] = 2.0 ** 30, b
    naive = np.float32(np.float64(np.float32(2.0 ** 30)) + np.float64(x[0, 1]) * np.float64(b))
    assert naive == np.float32(2.0 ** 30)
    want = np.float32(2.0 ** 30 + 2.0 ** 7)
    assert fma_chain(x[:1], wp)[0, 0] == want
    assert (gemm(isa, x, wp) == want).all()


@pytest.mark.parametrize("isa", LEVELS)
def test_gemm_tile_accumulates_in_increasing_k(isa):
    # 2^24 + 1 - 2^24 in that order is 0 (the 1 is lost); any other order or grouping keeps the 1
    # somewhere in the 32 columns below.
    x = np.ones((5, 3), dtype=np.float32)
    wp = np.zeros((3, NR), dtype=np.float32)
    wp[:, 0] = [2.0 ** 24, 1.0, -(2.0 ** 24)]
    wp[:, 1] = [1.0, 2.0 ** 24, -(2.0 ** 24)]
    wp[:, 2] = [-(2.0 ** 24), 1.0, 2.0 ** 24]
    got = gemm(isa, x, wp, n=3)
    np.testing.assert_array_equal(got, np.tile(np.float32([0.0, 0.0, 1.0]), (5, 1)))
    assert (bits(got[:, :2]) == 0).all()  # +0.0: the chain starts from +0.0


@pytest.mark.parametrize("isa", LEVELS)
def test_gemm_tile_nan_stays_in_its_row(isa):
    x, wp, want = gemm_case(17)
    x = x[:13].copy()
    x[4, 9] = np.nan
    got = gemm(isa, x, wp)
    assert np.isnan(got[4]).all()
    rest = [i for i in range(13) if i != 4]
    np.testing.assert_array_equal(bits(got[rest]), bits(want[rest]))


@pytest.mark.parametrize("isa", LEVELS)
def test_gemm_tile_ignores_panel_columns_past_n(isa):
    x, wp, want = gemm_case(64)
    padded = wp.copy()
    padded[:, 20:] = np.nan  # linear.c zero-pads them; a kernel must not let them leak into columns < n
    np.testing.assert_array_equal(bits(gemm(isa, x, padded, n=20)), bits(want[:, :20]))


@pytest.mark.parametrize("isa", LEVELS)
def test_gemm_tile_accepts_unaligned_inputs(isa):
    x, wp, want = gemm_case(17)
    xv = offset_view(x[:7].ravel()).reshape(7, 17)
    wv = offset_view(wp.ravel()).reshape(17, NR)
    np.testing.assert_array_equal(bits(gemm(isa, xv, wv, n=31)), bits(want[:7, :31]))


def test_gemm_tile_of_no_rows_is_empty():
    assert gemm("ref", np.zeros((0, 5), np.float32), np.zeros((5, NR), np.float32), n=7).shape == (0, 7)


def test_gemm_tile_argument_checking():
    x, wp = np.ones((2, 3), np.float32), np.ones((3, NR), np.float32)
    with pytest.raises(ValueError, match="shape"):
        gemm("ref", x, np.ones((4, NR), np.float32))
    with pytest.raises(ValueError, match="shape"):
        gemm("ref", x, np.ones((3, 16), np.float32))
    for n in (0, 33, -1):
        with pytest.raises(ValueError, match="columns"):
            gemm("ref", x, wp, n=n)
    with pytest.raises(TypeError):
        gemm("ref", x, wp, n=2.0)
    with pytest.raises(ValueError):
        gemm("ref", np.ones(3, np.float32), wp)
    with pytest.raises(TypeError):
        gemm("ref", x.astype(np.float64), wp)
    with pytest.raises(TypeError):
        kernel("ref", "dot_f32", np.ones(3, np.float32), np.ones(3, np.float32), n=3)
    with pytest.raises(TypeError):
        kernel("ref", "gemm_f32_tile", x)
    with pytest.raises(TypeError):
        kernel("ref", "gemm_mr", x)
    # the default n is the full panel
    assert gemm("ref", x, wp).shape == (2, NR)


@pytest.mark.parametrize("isa", [level for level in KNOWN_TABLES if level not in LEVELS] or
                         [pytest.param("none", marks=pytest.mark.skip(reason="this CPU runs every ISA table"))])
def test_gemm_tile_on_an_isa_this_cpu_lacks_raises_instead_of_running(isa):
    with pytest.raises(RuntimeError, match="not supported here"):
        gemm(isa, np.ones((2, 3), np.float32), np.ones((3, NR), np.float32))
    with pytest.raises(RuntimeError, match="not supported here"):
        kernel(isa, "gemm_mr")
