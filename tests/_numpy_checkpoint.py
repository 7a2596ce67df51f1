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

The tensor names and shapes are the engine's tensor table (crossrank._core.tensor_table, through
crossrank.random_checkpoint.tensor_table); the files are written by crossrank's one safetensors
writer (crossrank.safetensors_writer). The parity tests do not use this helper: they build their
checkpoints through transformers, the independent source of names and shapes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np

from _assets import QWEN3_TOKENIZER_DIR
from crossrank.random_checkpoint import tensor_table
from crossrank.safetensors_writer import array_tensor, f32_to_bf16, write_safetensors

__all__ = [
    "QWEN3_TINY_CONFIG",
    "qwen3_tensors",
    "write_tensors",
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
    """float32 weights of the engine's tensor table for ``config`` (transformers' names and
    shapes), drawn in the table's order."""
    rng = np.random.default_rng(seed)
    t: Dict[str, np.ndarray] = {}
    for name, shape, kind in tensor_table(config):
        if kind == "norm":
            t[name] = (1.0 + NORM_JITTER * rng.standard_normal(shape)).astype(np.float32)
        else:
            std = EMBED_STD if kind in ("embedding", "lm_head") else PROJ_STD
            t[name] = (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)
    return t


def write_tensors(path: Union[str, os.PathLike], tensors: Mapping[str, np.ndarray], dtype: str = "float32") -> None:
    """Write float32 ``tensors`` as ``path``/model.safetensors, in name order, as float32 or
    bfloat16 (rounded to nearest even)."""
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    items = sorted(tensors.items())
    if dtype == "bfloat16":
        out = [array_tensor(k, f32_to_bf16(v), "BF16") for k, v in items]
    else:
        out = [array_tensor(k, np.asarray(v, dtype=np.float32)) for k, v in items]
    write_safetensors(path, out)


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
    write_tensors(path, qwen3_tensors(config, seed=seed), dtype)
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
