"""The normalised model config, :class:`ModelSpec`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from .head import HeadSpec

__all__ = ["ModelSpec"]


@dataclass(frozen=True)
class ModelSpec:
    """The normalised, validated model config crossrank runs from.

    Built by :func:`~crossrank.config.normalize`; every field is explicit (no defaults left
    to guess). :meth:`core_params` gives the subset the C engine consumes.

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
        config: the config before overrides (a private copy; read-only).
        hf_overrides: the overrides applied (a private copy; read-only).
        source: where the config was read from, as error messages name it.
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

    config: Dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    hf_overrides: Dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    source: str = field(default="the config dict", compare=False, repr=False)

    #: The fields handed to the C engine, under the same names on both sides of the boundary.
    CORE_FIELDS: ClassVar[Tuple[str, ...]] = (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "rms_norm_eps", "attn_scale", "embed_scale",
        "rope_attention_factor", "activation", "qk_norm", "qkv_bias", "o_bias", "mlp_bias",
        "norm_add_one", "tie_word_embeddings", "layer_windows", "rope_inv_freq",
    )

    def core_params(self) -> Dict[str, Any]:
        """Return exactly the parameter dict the C engine (``_core.Model``) consumes.

        Its keys are :attr:`CORE_FIELDS`, the names of this class's fields (the Hugging Face
        config keys where one exists): ``vocab_size``, ``hidden_size``,
        ``intermediate_size``, ``num_hidden_layers``, ``num_attention_heads``,
        ``num_key_value_heads``, ``head_dim`` (int); ``rms_norm_eps``, ``attn_scale``,
        ``embed_scale``, ``rope_attention_factor`` (float); ``activation``
        (``"silu" | "gelu_tanh" | "gelu"``); ``qk_norm``, ``qkv_bias``, ``o_bias``,
        ``mlp_bias``, ``norm_add_one``, ``tie_word_embeddings`` (bool); ``layer_windows``
        (tuple of int, one per layer, 0 = full); ``rope_inv_freq`` (C-contiguous float32
        array, ``[head_dim // 2]``, a fresh copy).
        """
        out: Dict[str, Any] = {}
        for key in self.CORE_FIELDS:
            v = getattr(self, key)
            if key == "layer_windows":
                v = tuple(int(w) for w in v)
            elif key == "rope_inv_freq":
                v = np.array(v, dtype=np.float32, order="C", copy=True)
            elif isinstance(v, bool) or isinstance(v, str):
                pass
            elif isinstance(v, int):
                v = int(v)
            else:
                v = float(v)
            out[key] = v
        return out

    def with_overrides(self, hf_overrides: Optional[Mapping[str, Any]]) -> "ModelSpec":
        """The spec of the same ``config.json`` with more ``hf_overrides`` (merged over this
        spec's), normalised again without reading any file."""
        from .normalize import normalize

        merged = {**self.hf_overrides, **dict(hf_overrides or {})}
        return normalize(self.config, merged, source=self.source)

    def with_defaults(self, defaults: Optional[Mapping[str, Any]]) -> "ModelSpec":
        """The spec of the same ``config.json`` with ``defaults`` under this spec's overrides
        (a family template's head keys, which the caller's own ``hf_overrides`` win over),
        normalised again without reading any file."""
        from .normalize import normalize

        merged = {**dict(defaults or {}), **self.hf_overrides}
        return normalize(self.config, merged, source=self.source)
