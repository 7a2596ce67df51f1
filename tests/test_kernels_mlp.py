"""The MLP's gated activation kernel of every ISA table against its scalar reference.

sigmoid_glu_f32 (kernels.h): act(gate) * up with act(g) = g sigmoid(c), c = g for SiLU and
c = 2 sqrt(2/pi) (g + 0.044715 g^3) for tanh GELU, the exponential being exp_f32's; every table
must give the reference's bits.
"""
import math

import numpy as np
import pytest

from _hooks import hooks

LEVELS = hooks.isa_levels()
ACTS = ["silu_mul_f32", "gelu_tanh_mul_f32"]


def act_definition(name, g, u):
    """The activations as transformers writes them, in float64."""
    g = g.astype(np.float64)
    if name == "silu_mul_f32":
        with np.errstate(over="ignore"):
            a = g / (1.0 + np.exp(-g))
    else:
        a = 0.5 * g * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (g + 0.044715 * g ** 3)))
    return a * u.astype(np.float64)


def mlp_inputs(n=20_000, seed=0):
    rng = np.random.default_rng(seed)
    g = np.concatenate([rng.standard_normal(n // 2) * 3.0, np.linspace(-30.0, 30.0, n // 2)]).astype(np.float32)
    u = rng.standard_normal(g.size).astype(np.float32)
    return g, u


@pytest.mark.parametrize("name", ACTS)
@pytest.mark.parametrize("isa", LEVELS)
def test_gated_activation_matches_the_float64_definition(isa, name):
    g, u = mlp_inputs()
    got = hooks.kernel(isa, name, g, u).astype(np.float64)
    want = act_definition(name, g, u)
    # a few float32 roundings (exp within 2 ulp, the division, the product) on |g u|'s scale
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(g * u).max(), err_msg=isa)
    big = np.abs(want) > 1e-3
    assert np.max(np.abs(got[big] - want[big]) / np.abs(want[big])) < 2e-6, isa


@pytest.mark.parametrize("name", ACTS)
@pytest.mark.parametrize("isa", LEVELS)
def test_gated_activation_gives_the_reference_bits_at_every_length(isa, name):
    g, u = mlp_inputs(seed=1)
    ref = hooks.kernel("ref", name, g, u)
    np.testing.assert_array_equal(hooks.kernel(isa, name, g, u).view(np.uint32), ref.view(np.uint32))
    for n in range(0, 40):  # every tail of the 8- and 16-lane loops; the hook checks guard zones
        gp, up = np.ascontiguousarray(g[300:300 + n]), np.ascontiguousarray(u[300:300 + n])
        np.testing.assert_array_equal(hooks.kernel(isa, name, gp, up).view(np.uint32),
                                      ref[300:300 + n].view(np.uint32), err_msg=f"{isa} n={n}")


@pytest.mark.parametrize("name", ACTS)
@pytest.mark.parametrize("isa", LEVELS)
def test_gated_activation_special_values(isa, name):
    g = np.array([0.0, -0.0, 200.0, -200.0, 1e30, -1e30, np.inf, np.nan, 5.0, 5.0], np.float32)
    u = np.array([3.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, np.nan, np.inf], np.float32)
    h = hooks.kernel(isa, name, g, u)
    assert h[0] == 0.0 and h[1] == 0.0
    assert h[2] == 200.0 and h[3] == 0.0          # saturated: g and 0, no overflow to NaN
    assert h[4] == np.float32(1e30) and h[5] == 0.0
    assert h[6] == np.inf
    assert np.isnan(h[7]) and np.isnan(h[8]) and h[9] == np.inf


def test_gated_activation_hook_checks_its_arrays():
    with pytest.raises(ValueError, match="equal length"):
        hooks.kernel("ref", "silu_mul_f32", np.ones(3, np.float32), np.ones(4, np.float32))
    with pytest.raises(TypeError, match="takes 2"):
        hooks.kernel("ref", "gelu_tanh_mul_f32", np.ones(3, np.float32))
