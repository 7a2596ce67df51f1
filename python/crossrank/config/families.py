"""One record per model family: the defaults, flags, activation and window rules, and template.

Everything crossrank knows about a ``model_type`` is in its :class:`Family` record; the
normaliser (:mod:`crossrank.config.normalize`) reads the record and never tests a
``model_type`` itself. Adding a family is adding a record (and its tensors in the C table).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from ..errors import ConfigError, UnsupportedModelError
from .values import Source, get_bool, get_int

__all__ = [
    "Family",
    "FAMILIES",
    "FAMILIES_BY_PREFIX",
    "HEAD_SUFFIXES",
    "HF_DEFAULTS",
    "DERIVED",
    "SUPPORTED_ARCHITECTURES",
    "SUPPORTED_MODEL_TYPES",
    "family_prefix_of_architecture",
    "family_of_config",
    "resolve_architecture",
]

#: The head suffixes of a supported architecture name (``Qwen3`` + suffix).
HEAD_SUFFIXES: Tuple[str, ...] = ("ForCausalLM", "ForSequenceClassification")

#: Marker: the key has no field in the HF config class; transformers derives the value.
DERIVED: Any = object()

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
        "attention_bias": DERIVED,  # not read: q/k/v always have a bias, o never
        "mlp_bias": DERIVED,
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
        "mlp_bias": DERIVED,
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
        "attention_bias": DERIVED,  # MistralAttention has no biases
        "mlp_bias": DERIVED,
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
        "mlp_bias": DERIVED,
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": 1,
    },
}


# hidden_act -> crossrank activation name.
ACTIVATIONS: Dict[str, str] = {
    "silu": "silu",
    "swish": "silu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu": "gelu",
}

#: The GELU spellings of ACTIVATIONS: Gemma's hidden_activation takes them, and vLLM and
#: transformers agree on a Gemma hidden_act only among them.
_GELU_SPELLINGS = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu")


@dataclass(frozen=True)
class Family:
    """What crossrank knows about one ``model_type``.

    Attributes:
        model_type: the HF ``model_type`` (``"qwen3"``).
        prefix: the architecture prefix (``"Qwen3"`` of ``Qwen3ForSequenceClassification``).
        defaults: the transformers config class's defaults (:data:`HF_DEFAULTS`).
        qk_norm: per-head RMSNorm of q and k before RoPE (Qwen3).
        qkv_bias_always: q/k/v always have a bias, whatever ``attention_bias`` says (Qwen2).
        norm_add_one: RMSNorm multiplies by ``1 + weight`` and the embeddings are scaled by
            ``sqrt(hidden_size)`` rounded to float32 (Gemma).
        activation_rule: ``"hidden_act"`` (the config's ``hidden_act``) or ``"gemma"``
            (vLLM's rule: ``hidden_activation`` when present, else tanh-GELU whatever
            ``hidden_act`` says: the original Gemma configs wrote "gelu" but meant tanh).
        windows: ``"none"`` (full attention), ``"all"`` (``sliding_window`` on every layer,
            Mistral) or ``"qwen"`` (``use_sliding_window`` with ``max_window_layers`` or
            ``layer_types``).
        template: the crossrank template of the family's reranker, or ``None``.
        name_hints: lower-case substrings of hub names that identify that reranker.
    """

    model_type: str
    prefix: str
    defaults: Mapping[str, Any] = field(repr=False)
    qk_norm: bool = False
    qkv_bias_always: bool = False
    norm_add_one: bool = False
    activation_rule: str = "hidden_act"
    windows: str = "none"
    template: Optional[str] = None
    name_hints: Tuple[str, ...] = ()

    def flags(self, m: Mapping[str, Any], src: Source) -> Dict[str, Any]:
        """The per-architecture switches of a merged config: biases, norms, embedding scale."""
        d = self.defaults
        attention_bias = False
        if d["attention_bias"] is not DERIVED:
            attention_bias = get_bool(m, "attention_bias", d["attention_bias"], src)
        mlp_bias = False
        if d["mlp_bias"] is not DERIVED:
            mlp_bias = get_bool(m, "mlp_bias", d["mlp_bias"], src)
        return {
            "qk_norm": self.qk_norm,
            "qkv_bias": self.qkv_bias_always or attention_bias,
            "o_bias": not self.qkv_bias_always and attention_bias,
            "mlp_bias": mlp_bias,
            "norm_add_one": self.norm_add_one,
        }

    def embed_scale(self, hidden_size: int) -> float:
        """The factor applied to the embeddings."""
        return float(np.float32(hidden_size**0.5)) if self.norm_add_one else 1.0

    def activation(self, m: Mapping[str, Any], src: Source) -> str:
        """The gated MLP's activation: ``"silu" | "gelu_tanh" | "gelu"``."""
        if self.activation_rule == "gemma":
            ha = m.get("hidden_activation")
            if ha is None:
                # vLLM runs the tanh GELU whatever hidden_act says; transformers runs hidden_act,
                # reading the legacy "gelu" as the tanh GELU. They agree on the GELU spellings only.
                act = m.get("hidden_act", "gelu_pytorch_tanh")
                if act in _GELU_SPELLINGS:
                    return "gelu_tanh"
                raise UnsupportedModelError(
                    f"hidden_act {act!r} (from {src.where('hidden_act')}) with no hidden_activation: for Gemma, "
                    "transformers runs hidden_act and vLLM the tanh GELU, so the score depends on which one the "
                    "checkpoint was trained for. Set hidden_activation (e.g. in hf_overrides) to "
                    "'gelu_pytorch_tanh' or 'gelu'."
                )
            if ha in _GELU_SPELLINGS:
                return ACTIVATIONS[ha]
            raise UnsupportedModelError(
                f"hidden_activation {ha!r} is not supported for Gemma; use 'gelu_pytorch_tanh' or 'gelu'."
            )
        act = m.get("hidden_act", self.defaults["hidden_act"])
        if not isinstance(act, str) or act not in ACTIVATIONS:
            raise UnsupportedModelError(
                f"hidden_act {act!r} (from {src.where('hidden_act')}) is not supported; crossrank implements "
                f"silu (swish), gelu_pytorch_tanh (gelu_new, gelu_fast) and gelu."
            )
        return ACTIVATIONS[act]

    def layer_windows(self, m: Mapping[str, Any], n_layers: int, src: Source) -> Tuple[int, ...]:
        """Per layer, the attention window (0 = full attention)."""
        return _layer_windows(self, m, n_layers, src)


FAMILIES: Dict[str, Family] = {
    f.model_type: f
    for f in (
        Family("qwen3", "Qwen3", HF_DEFAULTS["qwen3"], qk_norm=True, windows="qwen",
               template="qwen3-reranker", name_hints=("qwen3-reranker",)),
        Family("qwen2", "Qwen2", HF_DEFAULTS["qwen2"], qkv_bias_always=True, windows="qwen",
               template="mxbai-rerank-v2",
               name_hints=("mxbai-rerank-base-v2", "mxbai-rerank-large-v2", "mxbai-rerank-xsmall-v2")),
        Family("llama", "Llama", HF_DEFAULTS["llama"]),
        Family("mistral", "Mistral", HF_DEFAULTS["mistral"], windows="all"),
        Family("gemma", "Gemma", HF_DEFAULTS["gemma"], norm_add_one=True, activation_rule="gemma",
               template="bge-reranker-v2-gemma", name_hints=("bge-reranker-v2-gemma",)),
    )
}
#: The same records by architecture prefix.
FAMILIES_BY_PREFIX: Dict[str, Family] = {f.prefix: f for f in FAMILIES.values()}

#: Every ``architectures[0]`` value crossrank accepts.
SUPPORTED_ARCHITECTURES: Tuple[str, ...] = tuple(f.prefix + s for f in FAMILIES.values() for s in HEAD_SUFFIXES)
#: Every ``model_type`` crossrank accepts.
SUPPORTED_MODEL_TYPES: Tuple[str, ...] = tuple(FAMILIES)


def family_prefix_of_architecture(arch: str) -> Optional[str]:
    """``"Qwen3"`` for ``"Qwen3ForCausalLM"``; ``None`` for an unsupported architecture."""
    return next((p for p in FAMILIES_BY_PREFIX if arch in (p + s for s in HEAD_SUFFIXES)), None)


def family_of_config(config: Mapping[str, Any]) -> Optional[Family]:
    """The family of a raw config dict (from ``architectures[0]``, else ``model_type``), or ``None``."""
    archs = config.get("architectures")
    if isinstance(archs, (list, tuple)) and archs and isinstance(archs[0], str):
        prefix = family_prefix_of_architecture(archs[0])
        return FAMILIES_BY_PREFIX[prefix] if prefix else None
    model_type = config.get("model_type")
    return FAMILIES.get(model_type) if isinstance(model_type, str) else None


def resolve_architecture(m: Mapping[str, Any], src: Source) -> Tuple[str, str]:
    """``(architecture, model_type)`` of a merged config; raises on an unsupported or inconsistent pair."""
    supported = ", ".join(SUPPORTED_ARCHITECTURES)
    archs = m.get("architectures")
    model_type = m.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise ConfigError(
            f"config key 'model_type' must be a string, got {model_type!r} (from {src.where('model_type')})."
        )
    if archs is None or (isinstance(archs, (list, tuple)) and len(archs) == 0):
        arch = None
    elif isinstance(archs, (list, tuple)) and all(isinstance(a, str) for a in archs):
        arch = archs[0]
    elif isinstance(archs, str):
        raise ConfigError(
            f"config key 'architectures' must be a list of strings, got the string {archs!r} "
            f"(from {src.where('architectures')}); write [{archs!r}]."
        )
    else:
        raise ConfigError(
            f"config key 'architectures' must be a list of strings, got {archs!r} "
            f"(from {src.where('architectures')})."
        )

    if arch is None:
        if model_type in SUPPORTED_MODEL_TYPES:
            return FAMILIES[model_type].prefix + "ForCausalLM", model_type
        raise UnsupportedModelError(
            f"the config names no architecture and its model_type is {model_type!r}; crossrank supports "
            f"model_type {', '.join(SUPPORTED_MODEL_TYPES)} with the architectures {supported}."
        )

    family = family_prefix_of_architecture(arch)
    if family is None:
        raise UnsupportedModelError(
            f"architecture {arch!r} is not supported. crossrank runs decoder-only LLM rerankers with "
            f"one of: {supported}. (A *ForCausalLM reranker is loaded as a classifier with "
            f'hf_overrides={{"architectures": ["<Family>ForSequenceClassification"], ...}}.)'
        )
    expected = FAMILIES_BY_PREFIX[family].model_type
    if model_type is None:
        model_type = expected
    elif model_type != expected:
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedModelError(
                f"model_type {model_type!r} is not supported (architecture {arch!r} needs model_type "
                f"{expected!r}); crossrank supports model_type {', '.join(SUPPORTED_MODEL_TYPES)}."
            )
        raise ConfigError(
            f"architecture {arch!r} (from {src.where('architectures')}) belongs to model_type {expected!r}, "
            f"but the config says model_type {model_type!r}. Use the architecture of the checkpoint's own "
            f"family, e.g. {FAMILIES[model_type].prefix}ForSequenceClassification."
        )
    return arch, model_type


def _layer_windows(family: "Family", m: Mapping[str, Any], n_layers: int, src: Source) -> Tuple[int, ...]:
    defaults = family.defaults
    if family.windows == "none":
        return (0,) * n_layers
    if family.windows == "all":
        sw = m.get("sliding_window", defaults["sliding_window"])
        if sw is None:
            return (0,) * n_layers
        return (get_int("sliding_window", sw, src),) * n_layers

    # qwen2 / qwen3: the window is active only with use_sliding_window; which layers
    # slide comes from layer_types when given, else layers >= max_window_layers.
    use_sw = get_bool(m, "use_sliding_window", defaults["use_sliding_window"], src)
    sw = m.get("sliding_window", defaults["sliding_window"])
    window = 0
    if use_sw and sw is not None:
        window = get_int("sliding_window", sw, src)
    layer_types = m.get("layer_types")
    if layer_types is None:
        mwl = m.get("max_window_layers", defaults["max_window_layers"])
        mwl = get_int("max_window_layers", mwl, src)
        return tuple(window if i >= mwl else 0 for i in range(n_layers))
    if not isinstance(layer_types, (list, tuple)) or not all(isinstance(t, str) for t in layer_types):
        raise ConfigError(
            f"config key 'layer_types' must be a list of strings, got {layer_types!r} "
            f"(from {src.where('layer_types')})."
        )
    if len(layer_types) != n_layers:
        raise ConfigError(
            f"config key 'layer_types' has {len(layer_types)} entries but num_hidden_layers is {n_layers} "
            f"(from {src.where('layer_types')}); give one entry per layer."
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
