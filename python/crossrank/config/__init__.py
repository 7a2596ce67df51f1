"""The config normaliser: ``config.json`` + ``hf_overrides`` -> :class:`ModelSpec`.

:func:`load_config` reads a Hugging Face ``config.json`` (with the legacy hub keys or the keys
transformers 5 writes) and hands it, with vLLM-style ``hf_overrides``, to the pure
:func:`normalize`, which returns a typed, validated :class:`ModelSpec`. The converter and the
random-checkpoint writer call :func:`normalize` on their dicts too. Nothing here imports torch
or transformers.

Modules, one job each:

* :mod:`~crossrank.config.families`: one :class:`Family` record per ``model_type``: the
  transformers config class's defaults (:data:`HF_DEFAULTS`), the per-architecture flags
  (biases, q/k norms, Gemma's ``1 + weight`` norm and embedding scale), the activation and
  attention-window rules, and the family's reranker template;
* :mod:`~crossrank.config.rope`: the RoPE inverse frequencies, in float32 as transformers;
* :mod:`~crossrank.config.head`: the reranker keys (``classifier_from_token``, ``method``,
  ``is_original_qwen3_reranker``, ``use_sep_token``, ...) -> the scoring head;
* :mod:`~crossrank.config.spec`: :class:`ModelSpec`, and the dict handed to the C engine under
  the same field names;
* :mod:`~crossrank.config.normalize`: :func:`normalize` and :func:`load_config`; the
  dimensions' bounds are the C engine's (one place), asked before anything is derived;
* :mod:`~crossrank.config.values`: typed reads with errors naming the value's source.
"""

from __future__ import annotations

from .families import (
    FAMILIES,
    HF_DEFAULTS,
    SUPPORTED_ARCHITECTURES,
    SUPPORTED_MODEL_TYPES,
    Family,
    family_of_config,
)
from .head import METHODS, RERANKER_KEYS, HeadSpec, resolve_classifier_tokens
from .normalize import load_config, normalize, read_config_json, read_json_file
from .spec import ModelSpec

__all__ = [
    "read_json_file",
    "HeadSpec",
    "ModelSpec",
    "Family",
    "FAMILIES",
    "family_of_config",
    "load_config",
    "normalize",
    "read_config_json",
    "resolve_classifier_tokens",
    "SUPPORTED_ARCHITECTURES",
    "SUPPORTED_MODEL_TYPES",
    "METHODS",
    "RERANKER_KEYS",
    "HF_DEFAULTS",
]
