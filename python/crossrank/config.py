"""The config normaliser: ``config.json`` + ``hf_overrides`` -> :class:`ModelSpec`.

One function, :func:`load_config`, turns a Hugging Face ``config.json`` (with the
legacy hub keys or the keys transformers 5 writes) plus vLLM-style
``hf_overrides`` into a typed, validated :class:`ModelSpec`:

* missing keys take the defaults of the transformers config class of the
  ``model_type`` (hard-coded in :data:`HF_DEFAULTS`, from transformers 5);
* the per-architecture switches (biases, q/k norms, Gemma's ``1 + weight`` norm
  and embedding scale, the MLP activation) become explicit flags;
* the attention window of every layer is spelt out (0 = full attention);
* the RoPE inverse frequencies are computed here, in float32, the way
  transformers computes them;
* the reranker keys (``classifier_from_token``, ``method``,
  ``is_original_qwen3_reranker``, ``use_sep_token``, ...) decide the scoring head.

Nothing here imports torch or transformers.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import ConfigError, UnsupportedModelError

__all__ = [
    "HeadSpec",
    "ModelSpec",
    "load_config",
    "resolve_classifier_tokens",
    "SUPPORTED_ARCHITECTURES",
    "SUPPORTED_MODEL_TYPES",
    "METHODS",
    "RERANKER_KEYS",
    "HF_DEFAULTS",
]

# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------

#: Architecture family prefix -> HF ``model_type``.
_FAMILIES: Dict[str, str] = {
    "Qwen3": "qwen3",
    "Qwen2": "qwen2",
    "Llama": "llama",
    "Mistral": "mistral",
    "Gemma": "gemma",
}
_HEAD_SUFFIXES = ("ForCausalLM", "ForSequenceClassification")

#: Every ``architectures[0]`` value crossrank accepts.
SUPPORTED_ARCHITECTURES: Tuple[str, ...] = tuple(f + s for f in _FAMILIES for s in _HEAD_SUFFIXES)
#: Every ``model_type`` crossrank accepts.
SUPPORTED_MODEL_TYPES: Tuple[str, ...] = tuple(_FAMILIES.values())

#: The two ways of turning LM-head rows into a classifier (vLLM's ``method``).
METHODS: Tuple[str, ...] = ("from_2_way_softmax", "no_post_processing")

#: The reranker keys read from ``config.json`` / ``hf_overrides``.
RERANKER_KEYS: Tuple[str, ...] = (
    "classifier_from_token",
    "method",
    "is_original_qwen3_reranker",
    "is_qwen3_reranker",
    "use_sep_token",
    "use_pad_token",
    "num_labels",
    "logit_bias",
    "logit_mean",
    "logit_sigma",
)

# Marker: the key has no field in the HF config class; transformers derives the value.
_DERIVED = object()

#: Defaults of the transformers 5 config classes (``Qwen2Config``, ``Qwen3Config``,
#: ``LlamaConfig``, ``MistralConfig``, ``GemmaConfig``) for every key crossrank reads.
#: ``None`` for ``head_dim`` / ``num_key_value_heads`` means "derived": hidden/heads and
#: num_attention_heads respectively, as the classes' ``__post_init__`` do.
HF_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "qwen2": {
        "vocab_size": 151936,
        "hidden_size": 4096,
        "intermediate_size": 22016,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "head_dim": None,  # no field in Qwen2Config; the model uses hidden // heads
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "attention_bias": _DERIVED,  # not read: q/k/v always have a bias, o never
        "mlp_bias": _DERIVED,
        "use_sliding_window": False,
        "sliding_window": 4096,
        "max_window_layers": 28,
        "pad_token_id": None,
        "bos_token_id": None,
        "eos_token_id": None,
    },
    "qwen3": {
        "vocab_size": 151936,
        "hidden_size": 4096,
        "intermediate_size": 22016,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "head_dim": 128,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": _DERIVED,
        "use_sliding_window": False,
        "sliding_window": 4096,
        "max_window_layers": 28,
        "pad_token_id": None,
        "bos_token_id": None,
        "eos_token_id": None,
    },
    "llama": {
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": None,
        "head_dim": None,
        "hidden_act": "silu",
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "pad_token_id": None,
        "bos_token_id": 1,
        "eos_token_id": 2,
    },
    "mistral": {
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": None,
        "hidden_act": "silu",
        "max_position_embeddings": 4096 * 32,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "attention_bias": _DERIVED,  # MistralAttention has no biases
        "mlp_bias": _DERIVED,
        "sliding_window": 4096,
        "pad_token_id": None,
        "bos_token_id": 1,
        "eos_token_id": 2,
    },
    "gemma": {
        "vocab_size": 256000,
        "hidden_size": 3072,
        "intermediate_size": 24576,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "head_dim": 256,
        "hidden_act": "gelu_pytorch_tanh",
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        "attention_bias": False,
        "mlp_bias": _DERIVED,
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": 1,
    },
}

#: ``rope_theta`` when neither the config nor ``rope_parameters`` gives one
#: (``RotaryEmbeddingConfigMixin.default_theta`` in transformers 5).
_DEFAULT_ROPE_THETA = 10000.0

# hidden_act -> crossrank activation name.
_ACTIVATIONS: Dict[str, str] = {
    "silu": "silu",
    "swish": "silu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu": "gelu",
}

# Sanity bounds for the dimensions (inclusive).
_BOUNDS: Dict[str, Tuple[int, int]] = {
    "vocab_size": (1, 10_000_000),
    "hidden_size": (1, 65536),
    "intermediate_size": (1, 1_000_000),
    "num_hidden_layers": (1, 4096),
    "num_attention_heads": (1, 4096),
    "num_key_value_heads": (1, 4096),
    "head_dim": (2, 4096),
    "max_position_embeddings": (1, 1 << 30),
    "sliding_window": (1, 1 << 30),
    "max_window_layers": (0, 1 << 30),
    "num_labels": (1, 1 << 20),
}

# Keys that are valid config keys in their own right: never reported as misspellings.
_KNOWN_KEYS = frozenset(
    {k for d in HF_DEFAULTS.values() for k in d}
    | set(RERANKER_KEYS)
    | {
        "architectures", "model_type", "torch_dtype", "dtype", "transformers_version",
        "id2label", "label2id", "problem_type", "use_cache", "initializer_range",
        "attention_dropout", "rope_theta", "rope_scaling", "rope_parameters", "layer_types",
        "hidden_activation", "partial_rotary_factor", "max_model_len", "quantization_config",
        "pretraining_tp", "attn_logit_softcapping", "final_logit_softcapping",
        "query_pre_attn_scalar", "use_bidirectional_attention", "original_max_position_embeddings",
        "sliding_window", "use_sliding_window", "max_window_layers", "head_dtype",
        "tokenizer_class", "auto_map", "name_or_path", "_name_or_path", "crossrank_template",
    }
)

# Keys a misspelt override is most likely aimed at (near-misses are reported).
_TYPO_TARGETS: Tuple[str, ...] = RERANKER_KEYS + (
    "architectures",
    "rope_scaling",
    "rope_parameters",
    "rope_theta",
    "max_position_embeddings",
    "sliding_window",
    "use_sliding_window",
    "tie_word_embeddings",
    "crossrank_template",
)


# --------------------------------------------------------------------------------------
# Dataclasses
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadSpec:
    """How the score is read off the final hidden state of the last token.

    Attributes:
        kind: ``"lm_rows"`` — build the classifier from rows of the LM head
            (``lm_head.weight``, or the embeddings when tied) picked by ``tokens``;
            ``"score_weight"`` — the checkpoint stores a ``score.weight``
            ``[num_labels, hidden]`` (a converted ``*ForSequenceClassification``);
            ``"none"`` — a causal LM with no reranker keys: the caller must supply
            the head (a family template's default overrides) or refuse.
        tokens: the classifier token strings (``kind == "lm_rows"`` only), in order;
            for ``from_2_way_softmax`` they are ``[false_token, true_token]``.
        method: ``"from_2_way_softmax"`` (score weight ``W[true] - W[false]``,
            one label) or ``"no_post_processing"`` (the rows ``W[tokens]``, one label
            per token); ``None`` unless ``kind == "lm_rows"``.
        num_labels: outputs per sequence (0 for ``kind == "none"``).
    """

    kind: str
    tokens: Tuple[str, ...] = ()
    method: Optional[str] = None
    num_labels: int = 0


@dataclass(frozen=True)
class ModelSpec:
    """The normalised, validated model config crossrank runs from.

    Built by :func:`load_config`; every field is explicit (no defaults left to
    guess). :meth:`core_params` gives the subset the C engine consumes.

    Attributes:
        model_type: ``"qwen3" | "qwen2" | "llama" | "mistral" | "gemma"``.
        architecture: ``architectures[0]`` after overrides, e.g.
            ``"Qwen3ForSequenceClassification"``.
        vocab_size, hidden_size, intermediate_size, num_hidden_layers,
        num_attention_heads, num_key_value_heads, head_dim: the dimensions.
            ``num_attention_heads * head_dim`` may differ from ``hidden_size``
            (Qwen3, Gemma).
        rms_norm_eps: epsilon of every RMSNorm.
        attn_scale: the factor applied to ``q·k`` (``head_dim ** -0.5``).
        embed_scale: the factor applied to the embeddings: ``sqrt(hidden_size)``
            rounded to float32 for Gemma, ``1.0`` otherwise.
        activation: the gated MLP's activation, ``"silu" | "gelu_tanh" | "gelu"``.
        qk_norm: per-head RMSNorm of q and k before RoPE (Qwen3).
        qkv_bias: q, k and v projections have a bias.
        o_bias: the output projection has a bias.
        mlp_bias: gate/up/down projections have a bias (Llama ``mlp_bias``).
        norm_add_one: RMSNorm multiplies by ``1 + weight`` (Gemma).
        tie_word_embeddings: the LM head is the embedding matrix.
        layer_windows: per layer, the attention window ``W`` (0 = full causal
            attention). ``W > 0`` means the query at position ``p`` attends the
            keys at positions ``p - W + 1 .. p`` (transformers' mask
            ``kv_idx > q_idx - W``).
        rope_inv_freq: float32 ``[head_dim // 2]``, read-only: the RoPE inverse
            frequencies, scaling included. Angle = ``float32(pos) * inv_freq``.
        rope_attention_factor: multiplies cos and sin (YaRN; ``1.0`` otherwise).
        rope_type: ``"default" | "linear" | "llama3" | "yarn"``.
        rope_theta: the RoPE base.
        max_position_embeddings: from the config (not a crossrank length limit).
        head: the scoring head (:class:`HeadSpec`).
        use_sep_token: ``True``: a pair is tokenized as a pair
            (``tokenizer(text_1, text_pair=text_2)``); ``False``: the two strings
            are concatenated and tokenized as one text.
        logit_bias: the legacy name of ``logit_mean``, as given (or ``None``).
        logit_mean: subtracted from the raw score before the activation
            (falls back to ``logit_bias``); ``None`` = 0.
        logit_sigma: the (shifted) raw score is divided by it; ``None`` = 1.
        is_original_qwen3_reranker: ``is_original_qwen3_reranker`` (or its early
            alias ``is_qwen3_reranker``) was set.
        bos_token_id, eos_token_id, pad_token_id: from the config (with the HF
            class defaults); ``eos_token_id`` may be a tuple.
        dtype: the checkpoint dtype the config declares (``dtype`` or legacy
            ``torch_dtype``), informational.
        raw: the merged ``config.json`` + ``hf_overrides`` dict (a private
            copy; treat it as read-only).
    """

    model_type: str
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    attn_scale: float
    embed_scale: float
    activation: str
    qk_norm: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    norm_add_one: bool
    tie_word_embeddings: bool
    layer_windows: Tuple[int, ...]
    rope_inv_freq: np.ndarray = field(compare=False, repr=False)
    rope_attention_factor: float
    rope_type: str
    rope_theta: float
    max_position_embeddings: int
    head: HeadSpec
    use_sep_token: bool
    logit_bias: Optional[float]
    logit_mean: Optional[float]
    logit_sigma: Optional[float]
    is_original_qwen3_reranker: bool
    bos_token_id: Optional[int]
    eos_token_id: Union[int, Tuple[int, ...], None]
    pad_token_id: Optional[int]
    dtype: Optional[str]
    raw: Dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def core_params(self) -> Dict[str, Any]:
        """Return exactly the parameter dict the C engine consumes.

        Keys: ``vocab_size``, ``hidden_size``, ``intermediate_size``,
        ``num_layers``, ``num_heads``, ``num_kv_heads``, ``head_dim`` (int);
        ``rms_norm_eps``, ``attn_scale``, ``embed_scale``, ``rope_attn_factor``
        (float); ``activation`` (``"silu" | "gelu_tanh" | "gelu"``); ``qk_norm``,
        ``qkv_bias``, ``o_bias``, ``mlp_bias``, ``norm_add_one``,
        ``tie_word_embeddings`` (bool); ``layer_window`` (tuple of int, one per
        layer, 0 = full); ``rope_inv_freq`` (C-contiguous float32 array,
        ``[head_dim // 2]``, a fresh copy).
        """
        return {
            "vocab_size": int(self.vocab_size),
            "hidden_size": int(self.hidden_size),
            "intermediate_size": int(self.intermediate_size),
            "num_layers": int(self.num_hidden_layers),
            "num_heads": int(self.num_attention_heads),
            "num_kv_heads": int(self.num_key_value_heads),
            "head_dim": int(self.head_dim),
            "rms_norm_eps": float(self.rms_norm_eps),
            "attn_scale": float(self.attn_scale),
            "embed_scale": float(self.embed_scale),
            "rope_attn_factor": float(self.rope_attention_factor),
            "activation": str(self.activation),
            "qk_norm": bool(self.qk_norm),
            "qkv_bias": bool(self.qkv_bias),
            "o_bias": bool(self.o_bias),
            "mlp_bias": bool(self.mlp_bias),
            "norm_add_one": bool(self.norm_add_one),
            "tie_word_embeddings": bool(self.tie_word_embeddings),
            "layer_window": tuple(int(w) for w in self.layer_windows),
            "rope_inv_freq": np.array(self.rope_inv_freq, dtype=np.float32, order="C", copy=True),
        }


# --------------------------------------------------------------------------------------
# Small validators
# --------------------------------------------------------------------------------------


class _Ctx:
    """Where values come from, for error messages."""

    def __init__(self, config_path: Path, config: Mapping[str, Any], overrides: Mapping[str, Any]):
        self.config_path = config_path
        self.config = config
        self.overrides = overrides

    def where(self, key: str) -> str:
        top = key.split(".", 1)[0]
        if top in self.overrides:
            return "hf_overrides"
        return str(self.config_path)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int_value(key: str, v: Any, ctx: _Ctx) -> int:
    """Check that ``v`` (the value of config key ``key``) is an int within its bounds."""
    lo, hi = _BOUNDS[key]
    if not _is_int(v) or not (lo <= v <= hi):
        raise ConfigError(
            f"config key {key!r} must be an integer in [{lo}, {hi}], got {v!r} "
            f"(from {ctx.where(key)}). Fix the value, or override it with hf_overrides={{{key!r}: ...}}."
        )
    return int(v)


def _get_bool(m: Mapping[str, Any], key: str, default: bool, ctx: _Ctx) -> bool:
    v = m.get(key, None)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ConfigError(
            f"config key {key!r} must be a JSON boolean (true/false), got {v!r} of type "
            f"{type(v).__name__} (from {ctx.where(key)})."
        )
    return v


def _get_float(m: Mapping[str, Any], key: str, ctx: _Ctx, *, positive: bool = False) -> Optional[float]:
    v = m.get(key, None)
    if v is None:
        return None
    if not _is_number(v) or not math.isfinite(float(v)) or (positive and not float(v) > 0):
        need = "a finite number > 0" if positive else "a finite number"
        raise ConfigError(f"config key {key!r} must be {need}, got {v!r} (from {ctx.where(key)}).")
    return float(v)


def _token_id(m: Mapping[str, Any], key: str, default: Any, ctx: _Ctx) -> Union[int, Tuple[int, ...], None]:
    v = m.get(key, default)
    if v is None or _is_int(v):
        return v
    if key == "eos_token_id" and isinstance(v, (list, tuple)) and all(_is_int(x) for x in v):
        return tuple(int(x) for x in v)
    raise ConfigError(f"config key {key!r} must be an integer or null, got {v!r} (from {ctx.where(key)}).")


# --------------------------------------------------------------------------------------
# Reading and merging
# --------------------------------------------------------------------------------------


def _read_config_json(model_dir: Path) -> Tuple[Path, Dict[str, Any]]:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(
            f"no config.json at {path}: a model directory must hold the Hugging Face config.json "
            f"next to its *.safetensors files. Pass the directory of a complete checkpoint."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
            f"the file may be truncated or not a config.json at all."
        ) from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, got a JSON {type(data).__name__}.")
    return path, data


def _check_overrides(overrides: Any) -> Dict[str, Any]:
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise ConfigError(
            f"hf_overrides must be a dict of config keys to values (vLLM semantics), got "
            f"{type(overrides).__name__}: {overrides!r}. Example: "
            f'{{"architectures": ["Qwen3ForSequenceClassification"], '
            f'"classifier_from_token": ["no", "yes"], "is_original_qwen3_reranker": true}}.'
        )
    bad = [k for k in overrides if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"hf_overrides keys must be strings (config key names), got {bad!r}.")
    return dict(overrides)


def _check_typos(overrides: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    for key in overrides:
        if key in _KNOWN_KEYS or key in config:
            continue
        match = difflib.get_close_matches(key, _TYPO_TARGETS, n=1, cutoff=0.8)
        if match:
            raise ConfigError(
                f"hf_overrides key {key!r} is not a config key crossrank knows; did you mean "
                f"{match[0]!r}? (vLLM sets any key on the config, so a misspelt key would be "
                f"silently ignored there.)"
            )


# --------------------------------------------------------------------------------------
# Architecture
# --------------------------------------------------------------------------------------


def _architecture(m: Mapping[str, Any], ctx: _Ctx) -> Tuple[str, str]:
    supported = ", ".join(SUPPORTED_ARCHITECTURES)
    archs = m.get("architectures")
    model_type = m.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise ConfigError(
            f"config key 'model_type' must be a string, got {model_type!r} (from {ctx.where('model_type')})."
        )
    if archs is None or (isinstance(archs, (list, tuple)) and len(archs) == 0):
        arch = None
    elif isinstance(archs, (list, tuple)) and all(isinstance(a, str) for a in archs):
        arch = archs[0]
    elif isinstance(archs, str):
        raise ConfigError(
            f"config key 'architectures' must be a list of strings, got the string {archs!r} "
            f"(from {ctx.where('architectures')}); write [{archs!r}]."
        )
    else:
        raise ConfigError(
            f"config key 'architectures' must be a list of strings, got {archs!r} "
            f"(from {ctx.where('architectures')})."
        )

    if arch is None:
        if model_type in SUPPORTED_MODEL_TYPES:
            family = next(f for f, t in _FAMILIES.items() if t == model_type)
            return family + "ForCausalLM", model_type
        raise UnsupportedModelError(
            f"the config names no architecture and its model_type is {model_type!r}; crossrank supports "
            f"model_type {', '.join(SUPPORTED_MODEL_TYPES)} with the architectures {supported}."
        )

    family = next((f for f in _FAMILIES if arch in (f + s for s in _HEAD_SUFFIXES)), None)
    if family is None:
        raise UnsupportedModelError(
            f"architecture {arch!r} is not supported. crossrank runs decoder-only LLM rerankers with "
            f"one of: {supported}. (A *ForCausalLM reranker is loaded as a classifier with "
            f'hf_overrides={{"architectures": ["<Family>ForSequenceClassification"], ...}}.)'
        )
    expected = _FAMILIES[family]
    if model_type is None:
        model_type = expected
    elif model_type != expected:
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedModelError(
                f"model_type {model_type!r} is not supported (architecture {arch!r} needs model_type "
                f"{expected!r}); crossrank supports model_type {', '.join(SUPPORTED_MODEL_TYPES)}."
            )
        raise ConfigError(
            f"architecture {arch!r} (from {ctx.where('architectures')}) belongs to model_type {expected!r}, "
            f"but the config says model_type {model_type!r}. Use the architecture of the checkpoint's own "
            f"family, e.g. {_family_of(model_type)}ForSequenceClassification."
        )
    return arch, model_type


def _family_of(model_type: str) -> str:
    return next(f for f, t in _FAMILIES.items() if t == model_type)


# --------------------------------------------------------------------------------------
# RoPE (float32, the way transformers computes it)
# --------------------------------------------------------------------------------------


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


def _rope_source(m: Mapping[str, Any], ctx: _Ctx) -> Tuple[Dict[str, Any], str]:
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
                f"config key {key!r} must be an object or null, got {val!r} (from {ctx.where(key)})."
            )
    ov = ctx.overrides
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
            for d in (m.get(key), ctx.config.get(key)):
                if isinstance(d, Mapping):
                    candidates.append(d.get("rope_theta"))
        theta = next((t for t in candidates if t is not None), _DEFAULT_ROPE_THETA)
        params["rope_theta"] = theta
    return params, source


def _compute_rope(
    m: Mapping[str, Any], head_dim: int, max_pos: int, ctx: _Ctx
) -> Tuple[np.ndarray, float, str, float]:
    params, source = _rope_source(m, ctx)
    theta = params["rope_theta"]
    if not _is_number(theta) or not math.isfinite(theta) or not theta > 1:
        raise ConfigError(f"rope_theta must be a finite number > 1, got {theta!r} (from {ctx.where(source)}).")
    theta = float(theta)

    prf = params.get("partial_rotary_factor", m.get("partial_rotary_factor"))
    if prf is not None and prf != 1 and prf != 1.0:
        raise UnsupportedModelError(
            f"crossrank cannot honour partial_rotary_factor={prf!r}: it rotates the whole head "
            f"(partial_rotary_factor must be 1.0 or absent)."
        )

    rope_type = params.get("rope_type") or params.get("type") or "default"
    where = f"{source} (from {ctx.where(source)})"
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
        if not _is_number(v) or not math.isfinite(v) or (positive and not v > 0):
            need = "a finite number > 0" if positive else "a finite number"
            raise ConfigError(f"{source}[{key!r}] must be {need}, got {v!r}.")
        return float(v)

    def original_max() -> float:
        # transformers: a top-level original_max_position_embeddings wins over the dict's,
        # and max_position_embeddings is the fallback.
        v = m.get("original_max_position_embeddings")
        if v is None:
            v = params.get("original_max_position_embeddings", max_pos)
        if not _is_number(v) or not v > 0:
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
        elif not _is_number(af) or not math.isfinite(af) or af < 0:
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


# --------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------


def _layer_windows(m: Mapping[str, Any], model_type: str, n_layers: int, ctx: _Ctx) -> Tuple[int, ...]:
    defaults = HF_DEFAULTS[model_type]
    if model_type in ("llama", "gemma"):
        return (0,) * n_layers
    if model_type == "mistral":
        sw = m.get("sliding_window", defaults["sliding_window"])
        if sw is None:
            return (0,) * n_layers
        return (_int_value("sliding_window", sw, ctx),) * n_layers

    # qwen2 / qwen3: the window is active only with use_sliding_window; which layers
    # slide comes from layer_types when given, else layers >= max_window_layers.
    use_sw = _get_bool(m, "use_sliding_window", defaults["use_sliding_window"], ctx)
    sw = m.get("sliding_window", defaults["sliding_window"])
    window = 0
    if use_sw and sw is not None:
        window = _int_value("sliding_window", sw, ctx)
    layer_types = m.get("layer_types")
    if layer_types is None:
        mwl = m.get("max_window_layers", defaults["max_window_layers"])
        mwl = _int_value("max_window_layers", mwl, ctx)
        return tuple(window if i >= mwl else 0 for i in range(n_layers))
    if not isinstance(layer_types, (list, tuple)) or not all(isinstance(t, str) for t in layer_types):
        raise ConfigError(
            f"config key 'layer_types' must be a list of strings, got {layer_types!r} "
            f"(from {ctx.where('layer_types')})."
        )
    if len(layer_types) != n_layers:
        raise ConfigError(
            f"config key 'layer_types' has {len(layer_types)} entries but num_hidden_layers is {n_layers} "
            f"(from {ctx.where('layer_types')}); give one entry per layer."
        )
    out = []
    for i, t in enumerate(layer_types):
        t = "full_attention" if t == "attention" else t
        if t == "full_attention":
            out.append(0)
        elif t == "sliding_attention":
            # With use_sliding_window false (or sliding_window null) transformers 5 nulls the
            # window, so a "sliding_attention" layer has nothing to slide with: full attention.
            out.append(window)
        else:
            raise UnsupportedModelError(
                f"layer_types[{i}] is {t!r}; crossrank implements 'full_attention' and "
                f"'sliding_attention' layers only."
            )
    return tuple(out)


# --------------------------------------------------------------------------------------
# Reranker keys / head
# --------------------------------------------------------------------------------------


def _head(m: Mapping[str, Any], architecture: str, ctx: _Ctx) -> Tuple[HeadSpec, bool, bool]:
    """Return (head, use_sep_token, is_original_qwen3_reranker)."""
    tokens_raw = m.get("classifier_from_token")
    tokens: Optional[Tuple[str, ...]] = None
    if tokens_raw is not None:
        if isinstance(tokens_raw, str):
            raise ConfigError(
                f"classifier_from_token must be a list of token strings, got the string {tokens_raw!r} "
                f"(from {ctx.where('classifier_from_token')}); write [{tokens_raw!r}]."
            )
        if (
            not isinstance(tokens_raw, (list, tuple))
            or not tokens_raw
            or not all(isinstance(t, str) and t for t in tokens_raw)
        ):
            raise ConfigError(
                f"classifier_from_token must be a non-empty list of non-empty token strings, got "
                f"{tokens_raw!r} (from {ctx.where('classifier_from_token')})."
            )
        tokens = tuple(tokens_raw)
        dups = sorted({t for t in tokens if tokens.count(t) > 1})
        if dups:
            raise ConfigError(f"classifier_from_token lists {dups!r} more than once: {list(tokens)!r}.")

    method = m.get("method")
    if method is not None and method not in METHODS:
        raise ConfigError(
            f"method {method!r} (from {ctx.where('method')}) is not a reranker method; use "
            f"'from_2_way_softmax' (2 tokens [false, true], score = softmax over them) or "
            f"'no_post_processing' (1+ tokens, their raw logits)."
        )

    is_orig = _get_bool(m, "is_original_qwen3_reranker", False, ctx)
    is_orig = _get_bool(m, "is_qwen3_reranker", False, ctx) or is_orig
    if is_orig:
        key = "is_original_qwen3_reranker" if m.get("is_original_qwen3_reranker") else "is_qwen3_reranker"
        if tokens is None:
            tokens = ("no", "yes")  # the Qwen3-Reranker answer tokens
        elif len(tokens) != 2:
            raise ConfigError(
                f"{key}=true needs classifier_from_token with exactly 2 tokens [false, true] "
                f"(Qwen3-Reranker: [\"no\", \"yes\"]), got {len(tokens)}: {list(tokens)!r}."
            )
        if method not in (None, "from_2_way_softmax"):
            raise ConfigError(
                f"{key}=true means method 'from_2_way_softmax', but method {method!r} was also given; "
                f"drop one of them."
            )
        method = "from_2_way_softmax"

    if tokens is not None and method is None:
        if len(tokens) == 1:
            method = "no_post_processing"  # the only method a single token allows
        else:
            raise ConfigError(
                f"classifier_from_token has {len(tokens)} tokens {list(tokens)!r} but no method is set; "
                f"add \"method\": \"from_2_way_softmax\" (exactly 2 tokens [false, true]; one score "
                f"= P(true)) or \"method\": \"no_post_processing\" (one raw logit per token)."
            )
    if method is not None and tokens is None:
        raise ConfigError(
            f"method {method!r} is set but classifier_from_token is not; give the answer tokens, e.g. "
            f"\"classifier_from_token\": [\"no\", \"yes\"] (from_2_way_softmax: [false, true])."
        )
    if method == "from_2_way_softmax" and len(tokens) != 2:  # type: ignore[arg-type]
        raise ConfigError(
            f"method 'from_2_way_softmax' needs exactly 2 classifier tokens [false_token, true_token], "
            f"got {len(tokens)}: {list(tokens)!r}. Use 'no_post_processing' for "  # type: ignore[arg-type]
            f"{'one token' if len(tokens) == 1 else 'several tokens'}."  # type: ignore[arg-type]
        )

    # use_sep_token: the old name use_pad_token wins when present (vLLM); the default is
    # False for an LLM reranker (a method is set) and True otherwise.
    if m.get("use_pad_token") is not None:
        use_sep = _get_bool(m, "use_pad_token", False, ctx)
    elif m.get("use_sep_token") is not None:
        use_sep = _get_bool(m, "use_sep_token", False, ctx)
    else:
        use_sep = method is None

    if tokens is not None:
        n = 1 if method == "from_2_way_softmax" else len(tokens)
        head = HeadSpec(kind="lm_rows", tokens=tokens, method=method, num_labels=n)
    elif architecture.endswith("ForSequenceClassification"):
        id2label = m.get("id2label")
        if isinstance(id2label, Mapping) and id2label:
            n = _int_value("num_labels", len(id2label), ctx)
        elif m.get("num_labels") is not None:
            n = _int_value("num_labels", m.get("num_labels"), ctx)
        else:
            n = 2  # transformers' default when neither id2label nor num_labels is saved
        head = HeadSpec(kind="score_weight", num_labels=n)
    else:
        head = HeadSpec(kind="none")
    return head, use_sep, is_orig


# --------------------------------------------------------------------------------------
# Unsupported behaviour
# --------------------------------------------------------------------------------------


def _refuse_unsupported(m: Mapping[str, Any], model_type: str, head_dim: int, ctx: _Ctx) -> None:
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if m.get(key) is not None:
            raise UnsupportedModelError(
                f"crossrank cannot honour {key}={m[key]!r} (from {ctx.where(key)}): logit soft-capping "
                f"is a Gemma-2 feature that {model_type!r} models do not have. Remove the key."
            )
    qpas = m.get("query_pre_attn_scalar")
    if qpas is not None and qpas != head_dim:
        raise UnsupportedModelError(
            f"crossrank cannot honour query_pre_attn_scalar={qpas!r} "
            f"(from {ctx.where('query_pre_attn_scalar')}): "
            f"it is a Gemma-2 key; {model_type!r} scales attention by head_dim ** -0.5 (head_dim={head_dim})."
        )
    if model_type == "gemma" and m.get("use_bidirectional_attention"):
        raise UnsupportedModelError(
            "crossrank cannot honour use_bidirectional_attention=true: it runs causal attention only."
        )


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def load_config(model_dir: Union[str, Path], hf_overrides: Optional[Mapping[str, Any]] = None) -> ModelSpec:
    """Read ``model_dir/config.json``, apply ``hf_overrides`` and normalise.

    ``hf_overrides`` follows vLLM: every key replaces the config's value (a dict
    value such as ``rope_scaling`` replaces the whole dict), so any config key is
    valid. A RoPE override (``rope_scaling`` or ``rope_parameters``) replaces the
    config's RoPE settings whichever spelling either side uses, and ``null``
    removes the scaling (the model's ``rope_theta`` is kept). An override key that
    is a near-miss of a known key (``"classifier_from_tokens"``, ``"methods"``)
    raises :class:`ConfigError` naming the intended key. The reranker keys are:

    * ``architectures``: e.g. ``["Qwen3ForSequenceClassification"]``.
    * ``classifier_from_token``: list of token strings (exact vocabulary entries).
    * ``method``: ``"from_2_way_softmax"`` (exactly 2 tokens ``[false, true]``, one
      label) or ``"no_post_processing"`` (1+ tokens, one label each). With a
      single token and no method, ``no_post_processing`` is used (the only method
      a single token allows); with 2+ tokens the method must be given.
    * ``is_original_qwen3_reranker`` (alias ``is_qwen3_reranker``): sets the
      method to ``from_2_way_softmax``; needs exactly 2 tokens, and defaults them
      to ``["no", "yes"]`` when none are given.
    * ``use_sep_token`` (older name ``use_pad_token``, which wins when present):
      pair tokenization; default ``False`` when a method is set, else ``True``.
    * ``num_labels``, ``logit_bias`` / ``logit_mean``, ``logit_sigma``.

    Head decision: classifier tokens (on any supported architecture) →
    ``HeadSpec("lm_rows")``; ``*ForSequenceClassification`` without tokens →
    ``HeadSpec("score_weight")`` (num_labels from ``id2label``, else
    ``num_labels``, else 2, as transformers); ``*ForCausalLM`` without tokens →
    ``HeadSpec("none")``.

    Raises:
        ConfigError: config.json missing / not JSON / not an object; a bad
            override dict or a misspelt key; a dimension, flag or reranker key
            with a wrong value.
        UnsupportedModelError: an unsupported architecture or model_type, a
            quantized checkpoint, a RoPE type other than default/linear/llama3/yarn,
            partial rotary embeddings, soft-capping, an unsupported activation.
    """
    config_path, config = _read_config_json(Path(model_dir))
    overrides = _check_overrides(hf_overrides)
    _check_typos(overrides, config)
    merged: Dict[str, Any] = copy.deepcopy(config)
    merged.update(copy.deepcopy(overrides))
    ctx = _Ctx(config_path, config, overrides)

    if merged.get("quantization_config") is not None:
        qc = merged["quantization_config"]
        qm = qc.get("quant_method") if isinstance(qc, Mapping) else None
        raise UnsupportedModelError(
            f"{config_path.parent} is a quantized checkpoint"
            f"{f' ({qm})' if qm else ''}: quantized checkpoints (AWQ/GPTQ/FP8) are not plain "
            f"weights; use the original bf16/f32 checkpoint."
        )

    architecture, model_type = _architecture(merged, ctx)
    d = HF_DEFAULTS[model_type]

    def dim(key: str) -> int:
        v = merged.get(key, d[key])
        return _int_value(key, v, ctx)

    vocab = dim("vocab_size")
    hidden = dim("hidden_size")
    inter = dim("intermediate_size")
    n_layers = dim("num_hidden_layers")
    heads = dim("num_attention_heads")
    kv_raw = merged.get("num_key_value_heads", d["num_key_value_heads"])
    kv_heads = heads if kv_raw is None else _int_value("num_key_value_heads", kv_raw, ctx)
    if kv_heads > heads or heads % kv_heads:
        src = (
            ctx.where("num_key_value_heads") if "num_key_value_heads" in merged else f"the {model_type} default"
        )
        raise ConfigError(
            f"num_attention_heads ({heads}) must be a multiple of num_key_value_heads "
            f"({kv_heads}, from {src}); "
            f"set num_key_value_heads to the checkpoint's number of key/value heads."
        )
    hd_raw = merged.get("head_dim", d["head_dim"])
    if hd_raw is None:
        if hidden % heads:
            raise ConfigError(
                f"head_dim is not given and hidden_size ({hidden}) is not a multiple of "
                f"num_attention_heads ({heads}); set head_dim explicitly."
            )
        hd_raw = hidden // heads
    head_dim = _int_value("head_dim", hd_raw, ctx)
    if head_dim % 2:
        raise ConfigError(f"head_dim must be even (RoPE rotates pairs of dimensions), got {head_dim}.")
    max_pos = dim("max_position_embeddings")
    eps = merged.get("rms_norm_eps", d["rms_norm_eps"])
    if not _is_number(eps) or not math.isfinite(eps) or not 0 < eps < 1:
        raise ConfigError(
            f"rms_norm_eps must be a number in (0, 1), got {eps!r} (from {ctx.where('rms_norm_eps')})."
        )

    tie = _get_bool(merged, "tie_word_embeddings", d["tie_word_embeddings"], ctx)
    attention_bias = False
    if d["attention_bias"] is not _DERIVED:
        attention_bias = _get_bool(merged, "attention_bias", d["attention_bias"], ctx)
    mlp_bias = False
    if d["mlp_bias"] is not _DERIVED:
        mlp_bias = _get_bool(merged, "mlp_bias", d["mlp_bias"], ctx)

    qk_norm = model_type == "qwen3"
    qkv_bias = model_type == "qwen2" or attention_bias
    o_bias = model_type != "qwen2" and attention_bias
    norm_add_one = model_type == "gemma"
    embed_scale = float(np.float32(hidden**0.5)) if model_type == "gemma" else 1.0

    # Activation.
    if model_type == "gemma":
        # vLLM's rule: hidden_activation when present, else tanh-GELU whatever hidden_act says
        # (the original Gemma configs wrote "gelu" but meant the tanh approximation).
        ha = merged.get("hidden_activation")
        if ha is None:
            activation = "gelu_tanh"
        elif ha in ("gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu"):
            activation = _ACTIVATIONS[ha]
        else:
            raise UnsupportedModelError(
                f"hidden_activation {ha!r} is not supported for Gemma; use 'gelu_pytorch_tanh' or 'gelu'."
            )
    else:
        act = merged.get("hidden_act", d["hidden_act"])
        if not isinstance(act, str) or act not in _ACTIVATIONS:
            raise UnsupportedModelError(
                f"hidden_act {act!r} (from {ctx.where('hidden_act')}) is not supported; crossrank implements "
                f"silu (swish), gelu_pytorch_tanh (gelu_new, gelu_fast) and gelu."
            )
        activation = _ACTIVATIONS[act]

    windows = _layer_windows(merged, model_type, n_layers, ctx)
    inv_freq, attn_factor, rope_type, theta = _compute_rope(merged, head_dim, max_pos, ctx)
    _refuse_unsupported(merged, model_type, head_dim, ctx)

    head, use_sep, is_orig = _head(merged, architecture, ctx)

    logit_bias = _get_float(merged, "logit_bias", ctx)
    logit_mean = _get_float(merged, "logit_mean", ctx)
    if logit_bias is not None and logit_mean is not None and logit_bias != logit_mean:
        raise ConfigError(
            f"logit_bias ({logit_bias}) and logit_mean ({logit_mean}) disagree; logit_bias is the older name "
            f"of logit_mean: give only one."
        )
    if logit_mean is None:
        logit_mean = logit_bias
    logit_sigma = _get_float(merged, "logit_sigma", ctx, positive=True)

    dtype = merged.get("dtype") or merged.get("torch_dtype")
    if dtype is not None and not isinstance(dtype, str):
        dtype = str(dtype)

    return ModelSpec(
        model_type=model_type,
        architecture=architecture,
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=float(eps),
        attn_scale=float(head_dim**-0.5),
        embed_scale=embed_scale,
        activation=activation,
        qk_norm=qk_norm,
        qkv_bias=qkv_bias,
        o_bias=o_bias,
        mlp_bias=mlp_bias,
        norm_add_one=norm_add_one,
        tie_word_embeddings=tie,
        layer_windows=windows,
        rope_inv_freq=inv_freq,
        rope_attention_factor=attn_factor,
        rope_type=rope_type,
        rope_theta=theta,
        max_position_embeddings=max_pos,
        head=head,
        use_sep_token=use_sep,
        logit_bias=logit_bias,
        logit_mean=logit_mean,
        logit_sigma=logit_sigma,
        is_original_qwen3_reranker=is_orig,
        bos_token_id=_token_id(merged, "bos_token_id", d["bos_token_id"], ctx),  # type: ignore[arg-type]
        eos_token_id=_token_id(merged, "eos_token_id", d["eos_token_id"], ctx),
        pad_token_id=_token_id(merged, "pad_token_id", d["pad_token_id"], ctx),  # type: ignore[arg-type]
        dtype=dtype,
        raw=merged,
    )


_SPACE_MARKERS = ("Ġ", "▁")  # byte-level BPE (GPT-2/Qwen/Llama-3) and SentencePiece (Gemma/Llama-2)


def _variants(token: str) -> List[str]:
    """Plausible intended spellings of a token that is not in the vocabulary."""
    core = token
    for prefix in _SPACE_MARKERS + (" ",):
        if core.startswith(prefix) and len(core) > len(prefix):
            core = core[len(prefix):]
            break
    cases = [core, core.lower(), core.upper(), core.capitalize()]
    out: List[str] = []
    for c in cases:
        for v in [c] + [p + c for p in _SPACE_MARKERS]:
            if v != token and v not in out:
                out.append(v)
    return out


def resolve_classifier_tokens(
    tokens: Sequence[str], vocab: Mapping[str, int], *, vocab_size: Optional[int] = None
) -> Tuple[int, ...]:
    """Map classifier token strings to ids by exact, case-sensitive vocabulary lookup.

    Args:
        tokens: the ``classifier_from_token`` strings, in order.
        vocab: ``tokenizer.get_vocab()`` (added tokens included).
        vocab_size: when given, every id must be below it (the LM head's rows).

    A string must be one vocabulary entry as it appears in the vocabulary: for a
    byte-level BPE tokenizer ``" yes"`` is the entry ``"Ġyes"``, and ``"Yes"`` and
    ``"yes"`` are different tokens. A string that is not an entry raises
    :class:`ConfigError` naming it and listing the existing case / space-prefixed
    variants with their ids.
    """
    if isinstance(tokens, str):
        raise ConfigError(
            f"classifier tokens must be a list of strings, got the string {tokens!r}; write [{tokens!r}]."
        )
    ids: List[int] = []
    for t in tokens:
        if not isinstance(t, str):
            raise ConfigError(f"classifier tokens must be strings, got {t!r}.")
        tid = vocab.get(t)
        if tid is None:
            found = [(v, vocab[v]) for v in _variants(t) if v in vocab]
            msg = (
                f"classifier_from_token {t!r} is not a single entry of the tokenizer's vocabulary "
                f"(the lookup is exact and case-sensitive)."
            )
            if found:
                listed = ", ".join(f"{v!r} (id {i})" for v, i in found)
                msg += f" Entries that do exist: {listed}."
                if any(v[:1] in _SPACE_MARKERS for v, _ in found):
                    msg += (
                        " 'Ġ' (byte-level BPE) and '▁' (SentencePiece) mark a leading space: 'Ġyes' is "
                        "the token of ' yes'."
                    )
                msg += " Use the exact entry the model answers with."
            else:
                msg += " Pick a string from tokenizer.get_vocab() (the model's answer token)."
            raise ConfigError(msg)
        tid = int(tid)
        if tid < 0 or (vocab_size is not None and tid >= vocab_size):
            raise ConfigError(
                f"classifier token {t!r} has id {tid}, outside the model's {vocab_size} LM-head rows; "
                f"the tokenizer does not match the checkpoint."
            )
        ids.append(tid)
    if len(set(ids)) != len(ids):
        raise ConfigError(
            f"classifier tokens {list(tokens)!r} map to repeated ids {ids}; each must be distinct."
        )
    return tuple(ids)
