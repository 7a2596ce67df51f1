"""Random-weight checkpoints of a real model shape, written with NumPy (no torch).

Speed does not depend on weight values, so a random checkpoint of a published shape gives real
timings (demos, benchmarks) where real weights cannot be downloaded. Scores from random weights
mean nothing about relevance: say so wherever they are shown.

The tensors are the engine's own table (:func:`crossrank._core.tensor_table`: the names and
shapes the loader checks and binds), written by :mod:`crossrank.safetensors_writer`.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np

from . import _core
from .config import normalize
from .safetensors_writer import TensorData, f32_to_bf16, write_safetensors

__all__ = ["write_random_checkpoint", "tensor_table", "tensor_shapes", "cache_dir"]

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                    "merges.txt", "tokenizer.model")


def tensor_table(config: Mapping[str, Any]) -> List[Tuple[str, Tuple[int, ...], str]]:
    """The engine's tensor table (:func:`crossrank._core.tensor_table`) of a causal-LM checkpoint
    for ``config`` (a config.json dict): ``(name, shape, kind)`` in the engine's order, kind one of
    ``"embedding"``, ``"norm"``, ``"weight"``, ``"bias"``, ``"lm_head"``."""
    return _core.tensor_table(normalize(config).core_params())


def tensor_shapes(config: Mapping[str, Any]) -> List[Tuple[str, Tuple[int, ...]]]:
    """HF tensor names and shapes of a causal-LM checkpoint for ``config`` (a config.json dict)."""
    return [(name, shape) for name, shape, _ in tensor_table(config)]


# Values per block written at once: bounds the writer's memory (a few blocks of temporaries,
# ~20 MiB) whatever the checkpoint's size; an 8B-shape checkpoint streams like a tiny one.
_BLOCK_VALUES = 1 << 20


def _values(rng: np.random.Generator, kind: str, shape: Tuple[int, ...], gemma_norm: bool,
            embed_std: float) -> Iterator[np.ndarray]:
    """The tensor's values in row blocks (float32), so a large table never sits whole in memory."""
    if kind == "norm":
        base = 0.0 if gemma_norm else 1.0
        yield (base + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
        return
    if kind == "bias":
        yield 0.02 * rng.standard_normal(shape, dtype=np.float32)
        return
    fan_in = shape[-1] if len(shape) > 1 else 1
    # Embeddings (and a tied head) at the config's initializer_range, as HF initialises them, keep
    # the answer logits in a range where scores are not all saturated.
    std = embed_std if kind in ("embedding", "lm_head") else 1.0 / np.sqrt(fan_in)
    rows = shape[0]
    block = max(1, _BLOCK_VALUES // max(1, int(np.prod(shape[1:]))))
    for r0 in range(0, rows, block):
        r1 = min(rows, r0 + block)
        v = rng.standard_normal((r1 - r0,) + tuple(shape[1:]), dtype=np.float32)
        # in place, with the product's own precision (float64 for a NumPy scalar std, float32 for
        # a Python float), rounded to float32: the values of `std * v`, without a second block
        np.multiply(v, std, out=v, casting="same_kind")
        yield v


def write_random_checkpoint(
    out_dir: Union[str, os.PathLike],
    config: Mapping[str, Any],
    tokenizer_dir: Optional[Union[str, os.PathLike]] = None,
    *,
    seed: int = 0,
    dtype: str = "bfloat16",
) -> Path:
    """Writes ``config.json``, ``model.safetensors`` (random weights) and the tokenizer files.

    The weights are generated and written in blocks of about a million values, straight in the
    dtype on disk: memory stays flat (~20 MiB of blocks) whatever the shape, so the 4B and 8B
    Qwen3-Reranker shapes are written like the small ones, at disk and RNG speed.

    Args:
        out_dir: Destination directory (created; files in it are replaced).
        config: A ``config.json`` dict, e.g. a published model's.
        tokenizer_dir: Where to copy the tokenizer files from (optional).
        seed: Seed of the random weights.
        dtype: ``"bfloat16"`` or ``"float32"`` on disk.

    Returns:
        The directory.
    """
    if dtype not in ("bfloat16", "float32"):
        raise ValueError(f"dtype must be 'bfloat16' or 'float32', got {dtype!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gemma_norm = str(config.get("model_type", "")) == "gemma"
    embed_std = float(config.get("initializer_range") or 0.02)
    rng = np.random.default_rng(seed)  # one stream, drawn tensor by tensor in the table's order

    def tensor(name: str, shape: Tuple[int, ...], kind: str) -> TensorData:
        def produce(sink: Any) -> None:
            for block in _values(rng, kind, shape, gemma_norm, embed_std):
                sink(f32_to_bf16(block) if dtype == "bfloat16" else block.astype("<f4", copy=False))
        return TensorData(name, "BF16" if dtype == "bfloat16" else "F32", shape, produce)

    write_safetensors(out, [tensor(*entry) for entry in tensor_table(config)], max_shard_size=None,
                      metadata={"format": "pt", "note": "random weights"})
    cfg = dict(config)
    cfg["torch_dtype"] = dtype
    (out / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    if tokenizer_dir is not None:
        for fname in _TOKENIZER_FILES:
            src = Path(tokenizer_dir) / fname
            if src.is_file():
                shutil.copy(src, out / fname)
    return out


def cache_dir() -> Path:
    """crossrank's own cache folder (random-weight demo checkpoints): ``$XDG_CACHE_HOME/crossrank``,
    else ``~/.cache/crossrank``. Created on first use by whoever writes there."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "crossrank"
