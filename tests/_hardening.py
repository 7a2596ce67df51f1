"""Helpers shared by the hardening tests (hostile files, numerics, threads, fork, memory).

    from _hardening import OVERRIDES, small_checkpoint, core_model, run_python
    path = small_checkpoint(tmp_path, seed=3)          # random-weight Qwen3, vocabulary cut to 10000
    engine = core_model(path, check_finite=True)       # crossrank._core.Model as CrossEncoder builds it
    out = run_python(SCRIPT, path)                     # a fresh interpreter: limits, fork, RSS

No torch: everything here runs in the sanitizer build too.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from _numpy_checkpoint import copy_qwen3_tokenizer, write_qwen3_checkpoint

OVERRIDES: Dict[str, Any] = {"architectures": ["Qwen3ForSequenceClassification"],
                             "classifier_from_token": ["no", "yes"], "is_original_qwen3_reranker": True}
VOCAB = 10000   # holds the "yes"/"no" ids the head reads; keeps the checkpoints small
TESTS_DIR = Path(__file__).resolve().parent


def small_checkpoint(path: Path, *, seed: int = 0, dtype: str = "float32", **config: Any) -> Path:
    """A random-weight Qwen3 checkpoint with the real tokenizer and a 10000-id vocabulary."""
    settings: Dict[str, Any] = dict(vocab_size=VOCAB)
    settings.update(config)
    write_qwen3_checkpoint(path, seed=seed, dtype=dtype, **settings)
    copy_qwen3_tokenizer(path)
    return path


def core_head(path: Path, spec: Any) -> Dict[str, Any]:
    """The head dict CrossEncoder passes to the engine for the config ``spec``."""
    from tokenizers import Tokenizer

    from crossrank.config import resolve_classifier_tokens

    vocab = Tokenizer.from_file(str(path / "tokenizer.json")).get_vocab()
    rows = resolve_classifier_tokens(spec.head.tokens, vocab, vocab_size=spec.vocab_size)
    return {"kind": "lm_rows", "rows": list(rows), "two_way": spec.head.method == "from_2_way_softmax"}


def core_args(path: Path, config: Optional[Dict[str, Any]] = None) -> Tuple[str, Dict[str, Any], Dict[str, Any]]:
    """(model_dir, params, head) for ``crossrank._core.Model``, as CrossEncoder builds them;
    ``config`` replaces entries of the parameter dict (to feed the engine dims the Python
    normaliser would refuse). Reads the tokenizer: do it before limiting memory, since the Rust
    tokenizer aborts the process when an allocation fails."""
    from crossrank.config import load_config

    path = Path(path)
    spec = load_config(path, OVERRIDES)
    params = spec.core_params()
    params.update(config or {})
    return str(path), params, core_head(path, spec)


def core_model(path: Path, *, threads: int = 1, check_finite: Optional[bool] = None,
               config: Optional[Dict[str, Any]] = None, dtype: str = "float32") -> Any:
    """``crossrank._core.Model`` built as CrossEncoder builds it (see :func:`core_args`)."""
    from crossrank import _core

    return _core.Model(*core_args(path, config), dtype=dtype, threads=threads, check_finite=check_finite)


def token_ids(n: int, seed: int) -> list:
    return np.random.default_rng(seed).integers(0, VOCAB, n).tolist()


def run_python(code: str, *args: Any, timeout: float = 300, env: Optional[Dict[str, str]] = None
               ) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter that imports this checkout's crossrank and the test
    helpers; returns the completed process (stdout and stderr as text)."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS_DIR), str(Path(__import__("crossrank").__file__).resolve().parents[1])]
        + [p for p in full_env.get("PYTHONPATH", "").split(os.pathsep) if p])
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=full_env)
