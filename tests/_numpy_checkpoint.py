"""Tiny random-weight Qwen3 checkpoints written with NumPy alone (no torch, no transformers).

    from _numpy_checkpoint import write_qwen3_checkpoint, copy_qwen3_tokenizer
    write_qwen3_checkpoint(tmp_path, seed=1, dtype="bfloat16", num_hidden_layers=3)
    copy_qwen3_tokenizer(tmp_path)

The weights are random but scaled so the model says something: projections are normal with
std 0.08 (activations keep an RMS of order one through the layers), norm weights are 1 plus a
small jitter (an engine ignoring one of them gives different numbers) and the tied embedding has
std 0.1, so the logits of different tokens and prompts differ by order one. Nothing here claims
the scores match a reference implementation; use these checkpoints to compare crossrank with
itself (ISA levels, dtypes, batch shapes, thread counts), and tests/reference for golden scores.

float32 checkpoints are written with ``safetensors.numpy.save_file`` when the safetensors package
is installed. bfloat16 ones (which NumPy has no dtype for) are written by hand in the safetensors
format: an 8-byte little-endian header length, a JSON header (padded with spaces to a multiple of
8 bytes) mapping names to {"dtype", "shape", "data_offsets"}, then the raw little-endian data.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np

from _assets import QWEN3_TOKENIZER_DIR

__all__ = [
    "QWEN3_TINY_CONFIG",
    "qwen3_tensors",
    "f32_to_bf16_bits",
    "save_safetensors",
    "write_qwen3_checkpoint",
    "copy_qwen3_tokenizer",
    "qwen3_tokenizer_dir",
]

ROOT = Path(__file__).resolve().parents[1]

#: The default config: Qwen3's real vocabulary (so the real tokenizer works) with tiny layers.
QWEN3_TINY_CONFIG: Dict[str, Any] = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "vocab_size": 151669,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "hidden_act": "silu",
    "attention_bias": False,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 40960,
    "tie_word_embeddings": True,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}

PROJ_STD = 0.08
EMBED_STD = 0.1
NORM_JITTER = 0.1


def qwen3_tensors(config: Mapping[str, Any], seed: int = 0) -> Dict[str, np.ndarray]:
    """float32 weights named and shaped as transformers' Qwen3ForCausalLM, for ``config``."""
    rng = np.random.default_rng(seed)
    V, H, I = config["vocab_size"], config["hidden_size"], config["intermediate_size"]
    NH, NKV = config["num_attention_heads"], config["num_key_value_heads"]
    D = config.get("head_dim") or H // NH

    def normal(*shape: int, std: float = PROJ_STD) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return (1.0 + NORM_JITTER * rng.standard_normal(n)).astype(np.float32)

    t: Dict[str, np.ndarray] = {"model.embed_tokens.weight": normal(V, H, std=EMBED_STD)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = norm(H)
        t[p + "self_attn.q_proj.weight"] = normal(NH * D, H)
        t[p + "self_attn.k_proj.weight"] = normal(NKV * D, H)
        t[p + "self_attn.v_proj.weight"] = normal(NKV * D, H)
        t[p + "self_attn.o_proj.weight"] = normal(H, NH * D)
        t[p + "self_attn.q_norm.weight"] = norm(D)
        t[p + "self_attn.k_norm.weight"] = norm(D)
        t[p + "post_attention_layernorm.weight"] = norm(H)
        t[p + "mlp.gate_proj.weight"] = normal(I, H)
        t[p + "mlp.up_proj.weight"] = normal(I, H)
        t[p + "mlp.down_proj.weight"] = normal(H, I)
    t["model.norm.weight"] = norm(H)
    if not config.get("tie_word_embeddings", True):
        t["lm_head.weight"] = normal(V, H, std=EMBED_STD)
    return t


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) of float32 values, rounded to nearest, ties to even.

    NaNs stay NaNs (quiet, sign kept): rounding could otherwise carry a NaN payload into the
    exponent and make an infinity."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    rounded = np.where(nan, (bits >> 16) | 0x40, rounded)
    return rounded.astype(np.uint16)


_ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int32): "I32",
              np.dtype(np.int64): "I64", np.dtype(np.uint8): "U8"}


def save_safetensors(tensors: Mapping[str, np.ndarray], filename: Union[str, os.PathLike], *,
                     dtypes: Optional[Mapping[str, str]] = None,
                     metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write a safetensors file by hand.

    ``dtypes`` names the safetensors dtype of a tensor whose NumPy dtype does not say it, e.g.
    ``{"w": "BF16"}`` for a uint16 array holding bfloat16 bit patterns. Tensors are stored in
    name order, contiguous, little-endian."""
    dtypes = dict(dtypes or {})
    header: Dict[str, Any] = {"__metadata__": dict(metadata or {"format": "pt"})}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        st = dtypes.get(name) or _ST_DTYPES.get(arr.dtype)
        if st is None:
            raise TypeError(f"{name}: no safetensors dtype for {arr.dtype}; pass dtypes={{...}}")
        data = arr.tobytes()
        header[name] = {"dtype": st, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(filename, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)


def write_qwen3_checkpoint(path: Union[str, os.PathLike], *, seed: int = 0, dtype: str = "float32",
                           **config_overrides: Any) -> Path:
    """Write config.json and model.safetensors of a random-weight Qwen3 causal LM into ``path``.

    Args:
        path: Directory (created if missing).
        seed: Seed of the weights.
        dtype: ``"float32"`` or ``"bfloat16"`` (float32 weights rounded to nearest even).
        **config_overrides: Replace or add config.json keys, e.g. ``num_hidden_layers=3``;
            shapes follow the overridden config.

    Returns the directory. The tokenizer is not copied: see :func:`copy_qwen3_tokenizer`.
    """
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = dict(QWEN3_TINY_CONFIG)
    config.update(config_overrides)
    config["torch_dtype"] = dtype
    tensors = qwen3_tensors(config, seed=seed)
    target = path / "model.safetensors"
    if dtype == "bfloat16":
        save_safetensors({k: f32_to_bf16_bits(v) for k, v in tensors.items()}, target,
                         dtypes={k: "BF16" for k in tensors})
    else:
        try:
            from safetensors.numpy import save_file
        except ImportError:
            save_safetensors(tensors, target)
        else:
            save_file(tensors, str(target), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return path


def qwen3_tokenizer_dir() -> Path:
    """The Qwen3 tokenizer files the repository carries (assets/tokenizers/qwen3)."""
    return QWEN3_TOKENIZER_DIR


def copy_qwen3_tokenizer(path: Union[str, os.PathLike], source: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Copy tokenizer.json and tokenizer_config.json into ``path``; FileNotFoundError if the
    source files are missing."""
    src = Path(source) if source is not None else qwen3_tokenizer_dir()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not (src / name).is_file():
            raise FileNotFoundError(f"{src / name} is missing (the repository's assets/, or CROSSRANK_ASSETS)")
        shutil.copyfile(src / name, path / name)
    return path
