"""The gated MLP's activation as the gate|up projection's epilogue (cr_linear_apply_glu).

h = act(gate) * up must be bitwise the layer's own outputs put through the activation kernel,
whatever the weight format, the path (fused into the GEMM's tasks on the panel and AMX formats;
after the GEMM for OpenBLAS and for AMX layers whose K is summed in pieces), the rows, the
threads and h's width (ragged panels and AMX groups). With bf16 destination rows, h is those
values rounded to bfloat16 in the down projection's own row layout; with int8 destination rows,
h quantized a whole row at a time (after the GEMM, on every format), its outliers kept. The gate|up weight has two
halves of whole 32-column panels, the up half from column n_out / 2, as model.c pads them.
"""
import numpy as np
import pytest

import crossrank
from _hooks import hooks

FORMATS = ["float32", "bfloat16", "int8",
           pytest.param("openblas", marks=pytest.mark.skipif(crossrank.build_info()["blas"] == "none",
                                                             reason="this build has no OpenBLAS"))]
KERNEL = {"silu": "silu_mul_f32", "gelu_tanh": "gelu_tanh_mul_f32"}


def gate_up(rng, n, n_in, junk=True):
    """A [2 n', n_in] gate|up weight, n' = n rounded up to 32; the padding rows hold junk, which
    must not reach h."""
    half = (n + 31) // 32 * 32
    w = (rng.standard_normal((2 * half, n_in)) / np.sqrt(n_in)).astype(np.float32)
    if not junk:
        w[n:half] = 0
        w[half + n:] = 0
    return w, half


def activation(act, g, u):
    """act(g) * u through the reference table's kernel (every table has its bits), or the exact
    GELU's definition in float64."""
    if act in KERNEL:
        return hooks.kernel("ref", KERNEL[act], g.ravel(), u.ravel()).reshape(g.shape)
    g64 = g.astype(np.float64)
    from math import erf
    return (0.5 * g64 * (1 + np.vectorize(erf)(g64 / np.sqrt(2))) * u).astype(np.float32)


def bf16_round(values):
    b = np.asarray(values, np.float32).view(np.uint32).astype(np.uint64)
    return (((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("n, n_in, m", [(32, 64, 1), (40, 100, 17), (160, 64, 70), (300, 96, 130), (96, 2048, 33)])
def test_glu_is_the_activation_of_the_layers_own_outputs(fmt, n, n_in, m):
    rng = np.random.default_rng(n + n_in + m)
    w, half = gate_up(rng, n, n_in)
    x = rng.standard_normal((m, n_in)).astype(np.float32)
    y = hooks.linear(w, x, fmt=fmt, threads=2)
    want = activation("silu", y[:, :n], y[:, half:half + n])
    got = hooks.linear(w, x, fmt=fmt, threads=2, glu="silu", glu_n=n)
    assert got.shape == (m, n)
    assert got.tobytes() == want.tobytes()
    if fmt == "openblas":  # its sums vary with the shape and threads (linear.h)
        return
    assert hooks.linear(w, x, fmt=fmt, threads=1, glu="silu", glu_n=n).tobytes() == got.tobytes()
    assert hooks.linear(w, x, fmt=fmt, threads=5, glu="silu", glu_n=n).tobytes() == got.tobytes()
    # a row's h does not depend on the rows beside it
    assert hooks.linear(w, x[m // 2:], fmt=fmt, threads=2, glu="silu", glu_n=n).tobytes() == got[m // 2:].tobytes()


@pytest.mark.parametrize("fmt", ["float32", "bfloat16", "int8"])
@pytest.mark.parametrize("act", ["silu", "gelu_tanh", "gelu"])
def test_every_activation_and_the_bias(fmt, act):
    rng = np.random.default_rng(7)
    n, n_in, m = 72, 64, 23
    w, half = gate_up(rng, n, n_in)
    x = (rng.standard_normal((m, n_in)) * 2).astype(np.float32)
    bias = rng.standard_normal(2 * half).astype(np.float32)
    y = hooks.linear(w, x, fmt=fmt, threads=2, bias=bias)
    got = hooks.linear(w, x, fmt=fmt, threads=2, bias=bias, glu=act, glu_n=n)
    want = activation(act, y[:, :n], y[:, half:half + n])
    if act == "gelu":  # float32 steps and erff against float64: a few ulps of the row's scale
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    else:
        assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("n, n_in, m", [(40, 100, 17), (160, 64, 70), (300, 96, 130)])
def test_bf16_destination_rows_hold_h_rounded_to_bfloat16(n, n_in, m):
    rng = np.random.default_rng(n * m)
    w, half = gate_up(rng, n, n_in)
    x = rng.standard_normal((m, n_in)).astype(np.float32)
    h = hooks.linear(w, x, fmt="bfloat16", threads=2, glu="silu", glu_n=n)
    got = hooks.linear(w, x, fmt="bfloat16", threads=3, glu="silu", glu_n=n, glu_rows=True)
    assert got.tobytes() == bf16_round(h).tobytes()


@pytest.mark.parametrize("n, n_in, m", [(40, 100, 17), (300, 96, 130)])
def test_int8_destination_rows_hold_h_quantized_per_row_with_its_outliers(n, n_in, m):
    rng = np.random.default_rng(n + m)
    w, half = gate_up(rng, n, n_in)
    bias = np.zeros(2 * half, np.float32)
    bias[7], bias[half + 7] = 10.0, 40.0   # h's column 7 ~400, the rest ~0.5: an outlier in every row
    x = rng.standard_normal((m, n_in)).astype(np.float32)
    h = hooks.linear(w, x, fmt="int8", threads=2, bias=bias, glu="silu", glu_n=n)
    got = hooks.linear(w, x, fmt="int8", threads=3, bias=bias, glu="silu", glu_n=n, glu_rows=True)
    # the outliers stay exact float32; the rest is h quantized with the row's scale
    big = np.abs(h) > 12 * np.abs(h).mean(axis=1, keepdims=True)
    assert big[:, 7].all()
    np.testing.assert_array_equal(got[big], h[big])
    rest = np.where(big, 0, h)
    scale = np.abs(rest).max(axis=1, keepdims=True) / 127
    assert (np.abs(got - h)[~big] <= (0.5001 * scale + 1e-12).repeat(n, axis=1)[~big]).all()


def test_long_k_is_summed_in_pieces_on_amx_and_still_gives_the_same_h():
    # K = 8192 bf16: AMX tasks sum K in pieces there, and the GLU runs after the GEMM; the panel
    # formats fuse it as always
    rng = np.random.default_rng(3)
    n, n_in, m = 64, 8192, 40
    w, half = gate_up(rng, n, n_in)
    x = rng.standard_normal((m, n_in)).astype(np.float32)
    for fmt in ("bfloat16", "int8"):
        y = hooks.linear(w, x, fmt=fmt, threads=2)
        got = hooks.linear(w, x, fmt=fmt, threads=2, glu="silu", glu_n=n)
        assert got.tobytes() == activation("silu", y[:, :n], y[:, half:half + n]).tobytes()


def test_bad_glu_calls_are_refused():
    rng = np.random.default_rng(1)
    w, _ = gate_up(rng, 40, 64)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    with pytest.raises(ValueError, match="halves of whole 32-column panels"):
        hooks.linear(w[:96], x, glu="silu", glu_n=40)       # 96 outputs: halves of 48
    with pytest.raises(ValueError, match="halves of whole 32-column panels"):
        hooks.linear(w, x, glu="silu", glu_n=65)            # wider than a half
    with pytest.raises(ValueError, match="halves of whole 32-column panels"):
        hooks.linear(w, x, glu="silu", glu_n=0)
    with pytest.raises(ValueError, match="glu_rows needs a bf16 or int8 format"):
        hooks.linear(w, x, fmt="float32", glu="silu", glu_n=40, glu_rows=True)
    with pytest.raises(ValueError, match="glu is 'silu'"):
        hooks.linear(w, x, glu="relu", glu_n=40)
