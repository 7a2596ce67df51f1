"""RoPE: the inverse frequencies of every supported ``rope_type``, in float32 as transformers.

The ``rope_scaling`` / ``rope_parameters`` dict of a config (and of ``hf_overrides``, which wins
in either spelling) is read by :func:`compute_rope`.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from ..errors import ConfigError, UnsupportedModelError
from .values import Source, is_number

__all__ = ["compute_rope", "DEFAULT_ROPE_THETA"]

#: ``rope_theta`` when neither the config nor ``rope_parameters`` gives one
#: (``RotaryEmbeddingConfigMixin.default_theta`` in transformers 5).
DEFAULT_ROPE_THETA = 10000.0


def _pow_f32(base: float, exponents: np.ndarray) -> np.ndarray:
    """float32(base) ** exponents (float32), correctly rounded to float32.

    torch evaluates ``python_float ** float32_tensor`` in float32 with its vector
    ``powf`` (SLEEF, <= 1 ulp, and which one depends on the CPU's vector unit). The
    correctly rounded value is the portable choice: it equals torch's in nearly
    every entry and is never more than 1 ulp away.
    """
    b = float(np.float32(base))
    return np.array([math.pow(b, float(e)) for e in exponents], dtype=np.float64).astype(np.float32)


def _recip(x: np.ndarray) -> np.ndarray:
    # torch computes ``scalar / tensor`` as ``tensor.reciprocal() * scalar``.
    return np.float32(1.0) / x


def _default_inv_freq(theta: float, dim: int) -> np.ndarray:
    exps = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    return _recip(_pow_f32(theta, exps))


def _rope_llama3(inv_freq: np.ndarray, factor: float, low: float, high: float, old_ctx: float) -> np.ndarray:
    f32 = np.float32
    low_freq_wavelen = old_ctx / low
    high_freq_wavelen = old_ctx / high
    wavelen = _recip(inv_freq) * f32(2 * math.pi)
    inv_llama = np.where(wavelen > f32(low_freq_wavelen), inv_freq / f32(factor), inv_freq).astype(np.float32)
    smooth = (_recip(wavelen) * f32(old_ctx) - f32(low)) / f32(high - low)
    smoothed = (f32(1) - smooth) * inv_llama / f32(factor) + smooth * inv_llama
    is_medium = ~(wavelen < f32(high_freq_wavelen)) & ~(wavelen > f32(low_freq_wavelen))
    return np.where(is_medium, smoothed, inv_llama).astype(np.float32)


def _rope_yarn(
    theta: float,
    dim: int,
    factor: float,
    original_max: float,
    beta_fast: float,
    beta_slow: float,
    truncate: bool,
) -> np.ndarray:
    f32 = np.float32
    exps = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / f32(dim)
    pos_freqs = _pow_f32(theta, exps)
    inv_extrapolation = _recip(pos_freqs)
    inv_interpolation = _recip(f32(factor) * pos_freqs)

    def correction_dim(num_rotations: float) -> float:
        return (dim * math.log(original_max / (num_rotations * 2 * math.pi))) / (2 * math.log(theta))

    low = correction_dim(beta_fast)
    high = correction_dim(beta_slow)
    if truncate:
        low = math.floor(low)
        high = math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = (np.arange(dim // 2, dtype=np.float32) - f32(low)) / f32(high - low)
    ramp = np.clip(ramp, f32(0), f32(1)).astype(np.float32)
    extrapolation_factor = f32(1) - ramp
    out = inv_interpolation * (f32(1) - extrapolation_factor) + inv_extrapolation * extrapolation_factor
    return out.astype(np.float32)


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def _rope_source(m: Mapping[str, Any], src: Source) -> Tuple[Dict[str, Any], str]:
    """Pick the RoPE dict and its theta.

    Without a RoPE key in ``hf_overrides``, as transformers 5 reads a config:
    ``rope_scaling or rope_parameters``. A RoPE key in ``hf_overrides`` wins over
    whatever ``config.json`` says, in either spelling (vLLM applies overrides to the
    already-loaded config); an override set to null means "no scaling". A dict
    without ``rope_theta`` takes the top-level ``rope_theta``, else the theta the
    config's ``rope_parameters`` / ``rope_scaling`` holds, else 10000.
    """
    for key in ("rope_scaling", "rope_parameters"):
        val = m.get(key)
        if val is not None and not isinstance(val, Mapping):
            raise ConfigError(
                f"config key {key!r} must be an object or null, got {val!r} (from {src.where(key)})."
            )
    ov = src.overrides
    if "rope_scaling" in ov or "rope_parameters" in ov:
        if ov.get("rope_scaling"):
            params, source = dict(ov["rope_scaling"]), "rope_scaling"
        elif ov.get("rope_parameters"):
            params, source = dict(ov["rope_parameters"]), "rope_parameters"
        else:
            params = {"rope_type": "default"}
            source = "rope_scaling" if "rope_scaling" in ov else "rope_parameters"
    elif m.get("rope_scaling"):
        params, source = dict(m["rope_scaling"]), "rope_scaling"
    elif m.get("rope_parameters"):
        params, source = dict(m["rope_parameters"]), "rope_parameters"
    else:
        params, source = {}, "rope_theta"
    # Per-layer-type nesting ({"full_attention": {...}, "sliding_attention": {...}}).
    nested = [k for k in params if k in ("full_attention", "sliding_attention")]
    if nested:
        dicts = [params[k] for k in nested if params[k] is not None]
        if any(not isinstance(d, Mapping) for d in dicts) or any(dict(d) != dict(dicts[0]) for d in dicts[1:]):
            raise UnsupportedModelError(
                f"{source} gives a different RoPE per layer type ({', '.join(nested)}); crossrank cannot "
                f"honour per-layer RoPE for model_type {m.get('model_type')!r}."
            )
        params = dict(dicts[0]) if dicts else {}
    if params.get("rope_theta") is None:
        candidates = [m.get("rope_theta")]
        for key in ("rope_parameters", "rope_scaling"):
            for d in (m.get(key), src.config.get(key)):
                if isinstance(d, Mapping):
                    candidates.append(d.get("rope_theta"))
        theta = next((t for t in candidates if t is not None), DEFAULT_ROPE_THETA)
        params["rope_theta"] = theta
    return params, source


def compute_rope(
    m: Mapping[str, Any], head_dim: int, max_pos: int, src: Source
) -> Tuple[np.ndarray, float, str, float]:
    """RoPE of a merged config: ``(inv_freq, attention_factor, rope_type, rope_theta)``.

    ``inv_freq`` is float32 ``[head_dim // 2]`` and read-only, computed in float32 the way
    transformers 5 computes it (default, linear, llama3 and yarn); the types whose frequencies
    depend on the batch or the length (dynamic, longrope) are refused.
    """
    params, source = _rope_source(m, src)
    theta = params["rope_theta"]
    if not is_number(theta) or not math.isfinite(theta) or not theta > 1:
        raise ConfigError(f"rope_theta must be a finite number > 1, got {theta!r} (from {src.where(source)}).")
    theta = float(theta)

    prf = params.get("partial_rotary_factor", m.get("partial_rotary_factor"))
    if prf is not None and prf != 1 and prf != 1.0:
        raise UnsupportedModelError(
            f"crossrank cannot honour partial_rotary_factor={prf!r}: it rotates the whole head "
            f"(partial_rotary_factor must be 1.0 or absent)."
        )

    rope_type = params.get("rope_type") or params.get("type") or "default"
    where = f"{source} (from {src.where(source)})"
    if rope_type == "dynamic":
        raise UnsupportedModelError(
            f"crossrank cannot honour RoPE type 'dynamic' in {where}: dynamic NTK scaling recomputes "
            f"the frequencies from the longest sequence in the batch, so a document's score would "
            f"depend on its batch mates. Use the model without it (hf_overrides={{{source!r}: null}}) "
            f"or a static type (linear, llama3, yarn)."
        )
    if rope_type == "longrope":
        raise UnsupportedModelError(
            f"crossrank cannot honour RoPE type 'longrope' in {where}: it switches between its short "
            f"and long factors with the sequence length, so scores would depend on length and "
            f"batching. Supported: default, linear, llama3, yarn."
        )
    if rope_type not in ("default", "linear", "llama3", "yarn"):
        raise UnsupportedModelError(
            f"crossrank cannot honour RoPE type {rope_type!r} in {where}; supported types are "
            f"default, linear, llama3 and yarn."
        )

    def num(key: str, *, required: bool = True, positive: bool = True) -> Optional[float]:
        v = params.get(key)
        if v is None:
            if required:
                raise ConfigError(f"RoPE type {rope_type!r} needs {key!r} in {where}; it is missing.")
            return None
        if not is_number(v) or not math.isfinite(v) or (positive and not v > 0):
            need = "a finite number > 0" if positive else "a finite number"
            raise ConfigError(f"{source}[{key!r}] must be {need}, got {v!r}.")
        return float(v)

    def original_max() -> float:
        # transformers: a top-level original_max_position_embeddings wins over the dict's,
        # and max_position_embeddings is the fallback.
        v = m.get("original_max_position_embeddings")
        if v is None:
            v = params.get("original_max_position_embeddings", max_pos)
        if not is_number(v) or not v > 0:
            raise ConfigError(
                f"original_max_position_embeddings must be a positive number, got {v!r} ({where})."
            )
        return v

    attention_factor = 1.0
    dim = head_dim
    if rope_type == "default":
        inv = _default_inv_freq(theta, dim)
    elif rope_type == "linear":
        factor = num("factor")
        inv = _default_inv_freq(theta, dim) / np.float32(factor)
    elif rope_type == "llama3":
        factor = num("factor")
        low = num("low_freq_factor")
        high = num("high_freq_factor")
        if not high > low:
            raise ConfigError(
                f"llama3 RoPE needs high_freq_factor > low_freq_factor, got {high!r} <= {low!r} ({where})."
            )
        inv = _rope_llama3(_default_inv_freq(theta, dim), factor, low, high, original_max())
    else:  # yarn
        if "factor" not in params:
            raise ConfigError(f"RoPE type 'yarn' needs 'factor' in {where}; it is missing.")
        omax = original_max()
        factor = num("factor", required=False)
        if factor is None:
            factor = max_pos / omax
        af = params.get("attention_factor")
        mscale = num("mscale", required=False, positive=False)
        mscale_all_dim = num("mscale_all_dim", required=False, positive=False)
        if af is None:
            if mscale and mscale_all_dim:
                af = float(_yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim))
            else:
                af = _yarn_mscale(factor)
        elif not is_number(af) or not math.isfinite(af) or af < 0:
            raise ConfigError(f"{source}['attention_factor'] must be a number >= 0, got {af!r}.")
        beta_fast = num("beta_fast", required=False) or 32
        beta_slow = num("beta_slow", required=False) or 1
        truncate = params.get("truncate", True)
        if not isinstance(truncate, bool):
            raise ConfigError(f"{source}['truncate'] must be a boolean, got {truncate!r}.")
        inv = _rope_yarn(theta, dim, factor, omax, beta_fast, beta_slow, truncate)
        attention_factor = float(af)
    inv = np.ascontiguousarray(inv, dtype=np.float32)
    if not np.all(np.isfinite(inv)):
        raise ConfigError(f"the RoPE parameters in {where} give non-finite frequencies; check them.")
    inv.setflags(write=False)
    return inv, attention_factor, rope_type, theta
