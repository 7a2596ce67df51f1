"""AMX tiles: the bf16 (TDPBF16PS) and int8 (TDPBUSD) GEMMs, the lazy permission and its fallback.

* Kernel vs reference: every ragged m (1..32 rows, so both row tiles and their tails), n (column
  tails of each 16-column tile) and K block count, with x, the packed panel and y each placed
  against a PROT_NONE page (both ends), since tile loads read whole 64-byte rows and no sanitizer
  or valgrind can see them. bf16 must equal the scalar model of the TDPBF16PS order
  (kernels_ref.c) bit for bit; int8 the exact integer sums.
* Through cr_linear_apply: bf16 against a NumPy model of the same order for ragged layer shapes,
  and the same bits from inputs written as bf16 rows by their producer (cr_linear_put_bf16);
  int8 on AMX bitwise equal to the VNNI level (the same exact sums and epilogue, outliers
  included); results independent of the rows beside and of the thread count.
* The permission: asked at the first AMX use, not at import; CROSSRANK_AMX_DENY=1 simulates the
  kernel's refusal, after which everything runs the AVX512BF16 level and cpu_info() says why.

Skipped (with the reason) where the CPU or OS has no AMX.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import crossrank
from _hooks import hooks

HAS_AMX = crossrank.cpu_info()["detected"] == "amx"
pytestmark = pytest.mark.skipif(not HAS_AMX, reason="this CPU or OS has no AMX-BF16/AMX-INT8 tile state "
                                f"(kernels up to {crossrank.cpu_info()['detected']})")


@pytest.fixture(scope="module", autouse=True)
def amx_permission():
    if os.environ.get("CROSSRANK_ISA") or os.environ.get("CROSSRANK_AMX_DENY"):
        pytest.skip("CROSSRANK_ISA / CROSSRANK_AMX_DENY are set for this run")
    if not hooks.amx_usable():
        pytest.skip(f"AMX present but not usable here: {hooks.cpu_info()['amx']}")


def to_bf16(a):
    """float32 -> bfloat16 bits, round to nearest even (finite inputs)."""
    u = np.asarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_value(h):
    return (h.astype(np.uint32) << 16).view(np.float32)


def random_bf16(rng, shape, spread=8):
    """bf16 values over a wide exponent range, so rounding order matters."""
    return to_bf16(rng.standard_normal(shape) * 2.0 ** rng.integers(-spread, spread + 1, shape))


# ---- one kernel call vs the scalar model ----------------------------------------------------------

M_VALUES = list(range(1, 65))  # one call: up to 64 rows (four 16-row groups, two row pairs)


@pytest.mark.parametrize("guard", ["end", "start"])
@pytest.mark.parametrize("kb,np_", [(1, 1), (2, 4), (4, 3), (5, 2), (9, 4)])  # K chunks of 4 blocks
def test_bf16_tiles_match_the_scalar_model_bitwise_for_every_ragged_shape(kb, np_, guard):
    rng = np.random.default_rng(kb * 10 + np_)
    w = random_bf16(rng, (np_ * 16 * kb, 64))
    for m in M_VALUES:
        x = random_bf16(rng, (m, 32 * kb))
        got = hooks.amx_gemm("amx", "bf16", x, w, guard=guard)
        want = hooks.amx_gemm("ref", "bf16", x, w, guard=guard)
        assert got.shape == (m, 32 * np_)
        assert got.tobytes() == want.tobytes(), (m, kb, np_, np.abs(got - want).max())


def test_bf16_tiles_give_a_row_the_same_bits_whatever_rows_are_beside_it():
    rng = np.random.default_rng(1)
    w = random_bf16(rng, (4 * 16 * 3, 64))
    x = random_bf16(rng, (64, 96))
    full = hooks.amx_gemm("amx", "bf16", x, w)
    for lo, hi in [(0, 1), (17, 18), (5, 37), (40, 64), (63, 64)]:
        assert hooks.amx_gemm("amx", "bf16", x[lo:hi], w).tobytes() == full[lo:hi].tobytes()


@pytest.mark.parametrize("seed", range(4))
def test_bf16_tiles_flush_denormals_like_the_model(seed):
    rng = np.random.default_rng(seed)
    # x down to 2^-134, w to 2^-12: bf16 denormal inputs, products and partial sums below 2^-126
    # (and no overflow: the model is only claimed for finite sums)
    x = to_bf16(rng.standard_normal((32, 64)) * 2.0 ** rng.integers(-134, -100, (32, 64)))
    w = to_bf16(rng.standard_normal((32, 64)) * 2.0 ** rng.integers(-12, 1, (32, 64)))
    got = hooks.amx_gemm("amx", "bf16", x, w)
    want = hooks.amx_gemm("ref", "bf16", x, w)
    assert got.tobytes() == want.tobytes()
    assert np.any(np.abs(bf16_value(x)) < 2.0 ** -126)  # the cases are really there
    assert np.any((got != 0) & (np.abs(got) < 2.0 ** -100))


def test_bf16_tiles_do_not_round_a_denormal_product_before_adding_it():
    # E = 2^-125 + 2^-148 (odd last bit), then a product of 0.996 2^-149: added exactly it stays
    # below half an ulp (E is kept); rounded first to 2^-149 it would tie and round E up.
    x = np.zeros((1, 32), np.uint16)
    w = np.zeros((16, 64), np.uint16)
    x[0, 0], w[0, 0] = to_bf16([2.0 ** -125, 1.0])
    x[0, 2], w[1, 0] = to_bf16([2.0 ** -126, 2.0 ** -22])
    x[0, 4], w[2, 0] = to_bf16([1.9921875 * 2.0 ** -126, 2.0 ** -24])
    got = hooks.amx_gemm("amx", "bf16", x, w)
    assert got[0, 0] == np.float32(2.0 ** -125 + 2.0 ** -148)
    assert got.tobytes() == hooks.amx_gemm("ref", "bf16", x, w).tobytes()


def packed_i8_to_matrix(w, kb, np_):
    """[np 16 kb, 128] int8 panels -> the [64 kb, 32 np] weight matrix."""
    panels = w.reshape(np_, 16 * kb, 32, 4).transpose(0, 1, 3, 2).reshape(np_, 64 * kb, 32)
    return np.concatenate(list(panels), axis=1).astype(np.int64)


@pytest.mark.parametrize("guard", ["end", "start"])
@pytest.mark.parametrize("kb,np_", [(1, 1), (3, 4), (5, 2)])
def test_int8_tiles_give_the_exact_sums_for_every_ragged_shape(kb, np_, guard):
    rng = np.random.default_rng(10 + kb)
    w = rng.integers(-127, 128, (np_ * 16 * kb, 128), dtype=np.int8)
    dense = packed_i8_to_matrix(w, kb, np_)
    for m in M_VALUES:
        x = rng.integers(0, 256, (m, 64 * kb), dtype=np.uint8)
        got = hooks.amx_gemm("amx", "int8", x, w, guard=guard)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, x.astype(np.int64) @ dense)
        np.testing.assert_array_equal(got, hooks.amx_gemm("ref", "int8", x, w, guard=guard))


@pytest.mark.parametrize("kind", ["bf16", "int8"])
@pytest.mark.parametrize("guard", ["end", "start"])
def test_k_summed_over_several_calls_gives_the_bits_of_one(kind, guard):
    # linear.c sums a long K in pieces, each call starting from the sums the last one stored: the
    # same chain per element, so the same bits as one call, in the kernel and in the scalar model,
    # and no piece reads past its blocks (the guard pages)
    rng = np.random.default_rng(21 if kind == "bf16" else 22)
    kb, np_ = 7, 3
    if kind == "bf16":
        w = random_bf16(rng, (np_ * 16 * kb, 64))
    else:
        w = rng.integers(-127, 128, (np_ * 16 * kb, 128), dtype=np.int8)
    for m in (1, 16, 17, 40, 64):
        if kind == "bf16":
            x = random_bf16(rng, (m, 32 * kb))
        else:
            x = rng.integers(0, 256, (m, 64 * kb), dtype=np.uint8)
        whole = hooks.amx_gemm("amx", kind, x, w, guard=guard)
        for split in (1, 2, 3, 6):
            for isa in ("amx", "ref"):
                part = hooks.amx_gemm(isa, kind, x, w, guard=guard, split=split)
                assert part.tobytes() == whole.tobytes(), (m, split, isa)


def test_the_hook_refuses_bad_shapes():
    x = np.zeros((65, 32), np.uint16)
    with pytest.raises(ValueError, match="needs x"):
        hooks.amx_gemm("amx", "bf16", x, np.zeros((16, 64), np.uint16))
    with pytest.raises(ValueError, match="needs x"):
        hooks.amx_gemm("amx", "bf16", np.zeros((2, 30), np.uint16), np.zeros((16, 64), np.uint16))
    with pytest.raises(ValueError, match="needs x"):  # 5 panels
        hooks.amx_gemm("amx", "bf16", np.zeros((2, 32), np.uint16), np.zeros((80, 64), np.uint16))
    with pytest.raises(ValueError, match="kind"):
        hooks.amx_gemm("amx", "fp16", x, x)


# ---- whole layers through cr_linear_apply ---------------------------------------------------------

def amx_bf16_model(x, w):
    """NumPy model of a bf16 layer on tiles: x and w rounded to bf16, K zero-padded to blocks of 32,
    per block an even and an odd float32 chain from +0, then acc += (even + odd)."""
    m, k = x.shape
    kpad = -(-k // 32) * 32
    xb = np.zeros((m, kpad), np.float32)
    wb = np.zeros((w.shape[0], kpad), np.float32)
    xb[:, :k] = bf16_value(to_bf16(x))
    wb[:, :k] = bf16_value(to_bf16(w))
    acc = np.zeros((m, w.shape[0]), np.float32)
    for b in range(kpad // 32):
        even = np.zeros_like(acc)
        odd = np.zeros_like(acc)
        for t in range(16):
            e, o = 32 * b + 2 * t, 32 * b + 2 * t + 1
            even = even + np.outer(xb[:, e], wb[:, e]).astype(np.float32)
            odd = odd + np.outer(xb[:, o], wb[:, o]).astype(np.float32)
        acc = acc + (even + odd)
    return acc


# (40, 3100): a K that leaves room for ranges of 2 row blocks beside groups of 1 panel; (40, 4200):
# one that tasks sum in pieces of 32 blocks (the 64-row block in y; the rows after it, not a whole
# 16-row group, all of K at once)
LAYER_SHAPES = [(1, 1), (33, 31), (72, 100), (100, 72), (64, 96), (40, 130), (40, 3100), (40, 4200)]


@pytest.mark.parametrize("n_out,n_in", LAYER_SHAPES)
def test_bf16_layers_on_tiles_match_the_numpy_model_bitwise(n_out, n_in):
    rng = np.random.default_rng(n_out * 1000 + n_in)
    w = (rng.standard_normal((n_out, n_in)) * 0.1).astype(np.float32)
    x = rng.standard_normal((77, n_in)).astype(np.float32)
    got = hooks.linear(w, x, fmt="bfloat16", threads=2)
    want = amx_bf16_model(x, w)
    assert got.tobytes() == want.tobytes(), np.abs(got - want).max()


@pytest.mark.parametrize("n_in", [150, 8300])  # 8300: K summed in pieces
@pytest.mark.parametrize("fmt", ["bfloat16", "int8"])
def test_tile_layers_do_not_depend_on_the_rows_beside_or_threads(fmt, n_in):
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((200, n_in)) * 0.1).astype(np.float32)
    x = rng.standard_normal((150, n_in)).astype(np.float32)
    x[7, 3] = 80.0  # an outlier input (int8 takes it out of the quantized row)
    full = hooks.linear(w, x, fmt=fmt, threads=2)
    # each thread count splits the work differently (1 thread: 2 ranges of 2 row blocks, each
    # against 1 of 2 groups of 4 panels; 2 threads: single row blocks, groups of 2 panels; 16:
    # groups of one panel): the same bits
    assert full.tobytes() == hooks.linear(w, x, fmt=fmt, threads=1).tobytes()
    assert full.tobytes() == hooks.linear(w, x, fmt=fmt, threads=16).tobytes()
    tall = rng.standard_normal((700, n_in)).astype(np.float32)  # 11 row blocks
    one = hooks.linear(w, tall, fmt=fmt, threads=1)
    assert one.tobytes() == hooks.linear(w, tall, fmt=fmt, threads=3).tobytes()
    assert one[300:431].tobytes() == hooks.linear(w, tall[300:431], fmt=fmt, threads=2).tobytes()
    for lo, hi in [(0, 1), (5, 6), (7, 8), (3, 40), (33, 150), (64, 129)]:
        part = hooks.linear(w, x[lo:hi], fmt=fmt, threads=2)
        assert part.tobytes() == full[lo:hi].tobytes(), (lo, hi)
    perm = rng.permutation(150)
    assert hooks.linear(w, x[perm], fmt=fmt, threads=2).tobytes() == full[perm].tobytes()


@pytest.mark.parametrize("n_in", [150, 8300])  # 8300: K summed in pieces
@pytest.mark.parametrize("fmt", ["bfloat16", "int8"])
def test_tile_layers_add_the_bias_after_the_sums(fmt, n_in):
    # the bias is added after the last of K (in the worker's block, or in y when K comes in
    # pieces): the float32 sum + bias of the same layer without one, for full and ragged row
    # blocks and a ragged last panel, at 1 and 3 threads
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((97, n_in)) * 0.1).astype(np.float32)
    bias = rng.standard_normal(97).astype(np.float32)
    for rows in (1, 64, 150):
        x = rng.standard_normal((rows, n_in)).astype(np.float32)
        for threads in (1, 3):
            plain = hooks.linear(w, x, fmt=fmt, threads=threads)
            got = hooks.linear(w, x, fmt=fmt, threads=threads, bias=bias)
            assert got.tobytes() == (plain + bias).tobytes(), (rows, threads)
    with pytest.raises(ValueError, match="bias has 3 values"):
        hooks.linear(w, x, fmt=fmt, bias=np.zeros(3, np.float32))


LINEAR_SCRIPT = r"""
import sys, numpy as np
from crossrank import _testing
rng = np.random.default_rng(int(sys.argv[1]))
n_out, n_in = int(sys.argv[2]), int(sys.argv[3])
w = (rng.standard_normal((n_out, n_in)) * 0.1).astype(np.float32)
x = rng.standard_normal((70, n_in)).astype(np.float32)
x[3, ::17] *= 60.0  # outlier inputs
x[9] = 0.0
y = _testing.linear(w, x, fmt=sys.argv[4], threads=2)
info = _testing.cpu_info()  # the engine copy that ran the layer
print(info["isa"], info["amx"], y.tobytes().hex())
"""


def linear_under(env_extra, seed, n_out, n_in, fmt):
    env = dict(os.environ)
    env.pop("CROSSRANK_ISA", None)
    env.pop("CROSSRANK_AMX_DENY", None)
    env.update(env_extra)
    proc = subprocess.run([sys.executable, "-c", LINEAR_SCRIPT, str(seed), str(n_out), str(n_in), fmt], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    isa, rest = proc.stdout.strip().splitlines()[-1].split(" ", 1)
    amx, hexbytes = rest.rsplit(" ", 1)  # the AMX state is several words
    return isa, amx, np.frombuffer(bytes.fromhex(hexbytes), np.float32)


# (64, 8300): a K the AMX tasks sum in pieces
@pytest.mark.parametrize("n_out,n_in", [(33, 31), (72, 100), (96, 200), (40, 130), (64, 8300)])
def test_int8_on_tiles_is_bitwise_the_vnni_level(n_out, n_in):
    isa, amx, tiles = linear_under({}, 1, n_out, n_in, "int8")
    assert (isa, amx) == ("amx", "usable")
    isa, _, vnni = linear_under({"CROSSRANK_ISA": "avx512bf16"}, 1, n_out, n_in, "int8")
    assert isa == "avx512bf16"
    assert tiles.tobytes() == vnni.tobytes()
    isa, _, vnni512 = linear_under({"CROSSRANK_ISA": "avx512vnni"}, 1, n_out, n_in, "int8")
    assert vnni512.tobytes() == tiles.tobytes()


def test_bf16_on_tiles_is_its_own_level_within_the_bf16_bar():
    _, _, tiles = linear_under({}, 2, 96, 200, "bfloat16")
    _, _, dp = linear_under({"CROSSRANK_ISA": "avx512bf16"}, 2, 96, 200, "bfloat16")
    assert tiles.tobytes() != dp.tobytes()  # a different summation order ...
    np.testing.assert_allclose(tiles, dp, rtol=1e-3, atol=1e-3)  # ... of the same bf16 products


# ---- the permission -------------------------------------------------------------------------------

PERMISSION_SCRIPT = r"""
import json, numpy as np
from crossrank import _testing
before = _testing.cpu_info()  # the engine copy the hooks run on (_testing links its own)
rng = np.random.default_rng(0)
w = rng.standard_normal((40, 70)).astype(np.float32)
x = rng.standard_normal((3, 70)).astype(np.float32)
y = _testing.linear(w, x, fmt="bfloat16", threads=2)
after = _testing.cpu_info()
try:
    _testing.amx_gemm("amx", "bf16", np.zeros((1, 32), np.uint16), np.zeros((16, 64), np.uint16))
    hook = "ran"
except RuntimeError as e:
    hook = str(e)
print(json.dumps({"before": before, "after": after, "usable": _testing.amx_usable(), "hook": hook,
                  "y": y.tobytes().hex()}))
"""


def permission_run(env_extra):
    env = dict(os.environ)
    env.pop("CROSSRANK_ISA", None)
    env.pop("CROSSRANK_AMX_DENY", None)
    env.update(env_extra)
    proc = subprocess.run([sys.executable, "-c", PERMISSION_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_permission_is_asked_at_the_first_amx_use_not_at_import():
    run = permission_run({})
    assert run["before"]["amx"] == "not asked yet" and run["before"]["isa"] == "amx"
    assert run["after"]["amx"] == "usable" and run["after"]["isa"] == "amx"
    assert run["usable"] is True and run["hook"] == "ran"


def test_a_refused_permission_falls_back_to_avx512bf16_for_every_call():
    denied = permission_run({"CROSSRANK_AMX_DENY": "1"})
    assert denied["before"]["amx"] == "not asked yet"
    assert denied["after"]["isa"] == "avx512bf16"
    assert denied["after"]["detected"] == "amx"
    assert "refused" in denied["after"]["amx"] and "CROSSRANK_AMX_DENY" in denied["after"]["amx"]
    assert denied["usable"] is False
    assert "cannot run here" in denied["hook"]
    capped = permission_run({"CROSSRANK_ISA": "avx512bf16"})
    assert capped["after"]["isa"] == "avx512bf16" and "CROSSRANK_ISA" in capped["after"]["amx"]
    # the refused process computes exactly what the AVX512BF16 level computes
    assert denied["y"] == capped["y"]
    assert permission_run({})["y"] != denied["y"]
