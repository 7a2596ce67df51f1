"""The pure normaliser: a ``config.json`` dict + ``hf_overrides`` -> :class:`ModelSpec`.

:func:`normalize` reads nothing from disk; :func:`load_config` reads ``config.json`` and calls
it, as do the converter and the random-checkpoint writer. The dimensions' bounds are the C
engine's (:func:`check_bounds` asks it), checked before anything is derived from them.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from .. import _core
from ..errors import ConfigError, UnsupportedModelError
from .families import FAMILIES, HF_DEFAULTS, resolve_architecture
from .head import RERANKER_KEYS, build_head
from .rope import compute_rope
from .spec import ModelSpec
from .values import Source, get_bool, get_float, get_int, get_token_id, is_number

__all__ = [
    "normalize",
    "load_config",
    "read_config_json",
    "check_overrides",
    "check_typos",
    "check_bounds",
    "refuse_unsupported",
    "KNOWN_KEYS",
]

# Keys that are valid config keys in their own right: never reported as misspellings.
KNOWN_KEYS = frozenset(
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
TYPO_TARGETS: Tuple[str, ...] = RERANKER_KEYS + (
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


def read_json_file(path: Union[str, Path]) -> Any:
    """The JSON value of a file of a model directory; :class:`ConfigError` naming the file when it
    cannot be read or parsed, including the inputs that make Python's parser itself give up (an
    integer of thousands of digits: ValueError; nesting past the recursion limit: RecursionError)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ConfigError(f"cannot read {path}: {e}") from None


def read_config_json(model_dir: Union[str, Path]) -> Tuple[Path, Dict[str, Any]]:
    """``(path, dict)`` of ``model_dir/config.json``; :class:`ConfigError` when missing or not a JSON object."""
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
    except (ValueError, RecursionError) as e:  # an integer of thousands of digits, nesting Python cannot follow
        raise ConfigError(f"{path} cannot be read as a config.json: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, got a JSON {type(data).__name__}.")
    return path, data


def check_overrides(overrides: Any) -> Dict[str, Any]:
    """A copy of ``hf_overrides`` as a dict with string keys (``None`` -> ``{}``)."""
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


def check_typos(overrides: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Refuse an override key that is a near-miss of a key crossrank reads."""
    for key in overrides:
        if key in KNOWN_KEYS or key in config:
            continue
        match = difflib.get_close_matches(key, TYPO_TARGETS, n=1, cutoff=0.8)
        if match:
            raise ConfigError(
                f"hf_overrides key {key!r} is not a config key crossrank knows; did you mean "
                f"{match[0]!r}? (vLLM sets any key on the config, so a misspelt key would be "
                f"silently ignored there.)"
            )


def refuse_unsupported(m: Mapping[str, Any], model_type: str, head_dim: int, src: Source) -> None:
    """Refuse the Gemma-2 keys and bidirectional attention, which crossrank cannot honour."""
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if m.get(key) is not None:
            raise UnsupportedModelError(
                f"crossrank cannot honour {key}={m[key]!r} (from {src.where(key)}): logit soft-capping "
                f"is a Gemma-2 feature that {model_type!r} models do not have. Remove the key."
            )
    qpas = m.get("query_pre_attn_scalar")
    if qpas is not None and qpas != head_dim:
        raise UnsupportedModelError(
            f"crossrank cannot honour query_pre_attn_scalar={qpas!r} "
            f"(from {src.where('query_pre_attn_scalar')}): "
            f"it is a Gemma-2 key; {model_type!r} scales attention by head_dim ** -0.5 (head_dim={head_dim})."
        )
    if model_type == "gemma" and m.get("use_bidirectional_attention"):
        raise UnsupportedModelError(
            "crossrank cannot honour use_bidirectional_attention=true: it runs causal attention only."
        )


_DIMENSIONS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "head_dim")


def check_bounds(fields: Mapping[str, Any], src: Source) -> None:
    """Ask the C engine whether the scalar fields are within its bounds.

    ``fields`` holds the scalar :attr:`ModelSpec.CORE_FIELDS`. The engine's message names the
    key and its bounds; this adds where the value came from. A value beyond 64 bits is refused
    here, since it cannot cross the boundary.
    """
    try:
        _core.check_config(dict(fields))
    except OverflowError:
        key = next(k for k in _DIMENSIONS if not -(2**63) <= fields[k] < 2**63)
        raise ConfigError(
            f"config key {key!r} = {fields[key]!r} (from {src.where(key)}) is far outside the engine's bounds; "
            f"fix the value, or override it with hf_overrides={{{key!r}: ...}}."
        ) from None
    except ConfigError as e:
        msg = str(e)
        key = next((k for k in _DIMENSIONS if f"'{k}'" in msg), None)
        if key is None:
            raise
        raise ConfigError(f"{msg} (from {src.where(key)}).") from None


def normalize(
    config: Mapping[str, Any],
    hf_overrides: Optional[Mapping[str, Any]] = None,
    *,
    source: Union[str, Path] = "the config dict",
) -> ModelSpec:
    """Apply ``hf_overrides`` to a ``config.json`` dict and normalise; reads no file.

    Args:
        config: the ``config.json`` object (not modified).
        hf_overrides: vLLM-style overrides (see :func:`load_config`).
        source: how error messages name the config (``load_config`` passes its path).

    Raises:
        ConfigError, UnsupportedModelError: as :func:`load_config`.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"{source} must hold a JSON object, got a {type(config).__name__}.")
    config = copy.deepcopy(dict(config))
    overrides = check_overrides(hf_overrides)
    check_typos(overrides, config)
    merged: Dict[str, Any] = copy.deepcopy(config)
    merged.update(copy.deepcopy(overrides))
    src = Source(str(source), config, overrides)
    where_dir = Path(source).parent if isinstance(source, Path) else source

    if merged.get("quantization_config") is not None:
        qc = merged["quantization_config"]
        qm = qc.get("quant_method") if isinstance(qc, Mapping) else None
        raise UnsupportedModelError(
            f"{where_dir} is a quantized checkpoint"
            f"{f' ({qm})' if qm else ''}: quantized checkpoints (AWQ/GPTQ/FP8) are not plain "
            f"weights; use the original bf16/f32 checkpoint."
        )

    architecture, model_type = resolve_architecture(merged, src)
    family = FAMILIES[model_type]
    d = family.defaults

    # Types here; bounds in the engine (check_bounds), before anything is derived from them.
    dims = {key: get_int(key, merged.get(key, d[key]), src)
            for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                        "num_attention_heads")}
    hidden, heads = dims["hidden_size"], dims["num_attention_heads"]
    kv_raw = merged.get("num_key_value_heads", d["num_key_value_heads"])
    dims["num_key_value_heads"] = heads if kv_raw is None else get_int("num_key_value_heads", kv_raw, src)
    hd_raw = merged.get("head_dim", d["head_dim"])
    if hd_raw is None:
        if heads > 0 and hidden > 0 and hidden % heads:
            raise ConfigError(
                f"head_dim is not given and hidden_size ({hidden}) is not a multiple of "
                f"num_attention_heads ({heads}); set head_dim explicitly."
            )
        hd_raw = hidden // heads if heads > 0 else 0
    head_dim = dims["head_dim"] = get_int("head_dim", hd_raw, src)
    eps = merged.get("rms_norm_eps", d["rms_norm_eps"])
    if not is_number(eps) or not math.isfinite(eps) or not 0 < eps < 1:
        raise ConfigError(
            f"rms_norm_eps must be a number in (0, 1), got {eps!r} (from {src.where('rms_norm_eps')})."
        )
    tie = get_bool(merged, "tie_word_embeddings", d["tie_word_embeddings"], src)
    flags = family.flags(merged, src)
    activation = family.activation(merged, src)
    scalars: Dict[str, Any] = {
        **dims,
        **flags,
        "rms_norm_eps": float(eps),
        "attn_scale": float(head_dim**-0.5) if head_dim > 0 else math.nan,
        "embed_scale": family.embed_scale(hidden) if hidden > 0 else 1.0,
        "rope_attention_factor": 1.0,
        "activation": activation,
        "tie_word_embeddings": tie,
    }
    check_bounds(scalars, src)
    max_pos = get_int("max_position_embeddings", merged.get("max_position_embeddings",
                                                            d["max_position_embeddings"]), src)

    windows = family.layer_windows(merged, dims["num_hidden_layers"], src)
    inv_freq, attn_factor, rope_type, theta = compute_rope(merged, head_dim, max_pos, src)
    refuse_unsupported(merged, model_type, head_dim, src)

    head, use_sep, is_orig = build_head(merged, architecture, src)

    logit_bias = get_float(merged, "logit_bias", src)
    logit_mean = get_float(merged, "logit_mean", src)
    if logit_bias is not None and logit_mean is not None and logit_bias != logit_mean:
        raise ConfigError(
            f"logit_bias ({logit_bias}) and logit_mean ({logit_mean}) disagree; logit_bias is the older name "
            f"of logit_mean: give only one."
        )
    if logit_mean is None:
        logit_mean = logit_bias
    logit_sigma = get_float(merged, "logit_sigma", src, positive=True)

    dtype = merged.get("dtype") or merged.get("torch_dtype")
    if dtype is not None and not isinstance(dtype, str):
        dtype = str(dtype)

    return ModelSpec(
        model_type=model_type,
        architecture=architecture,
        max_position_embeddings=max_pos,
        layer_windows=windows,
        rope_inv_freq=inv_freq,
        rope_attention_factor=attn_factor,
        rope_type=rope_type,
        rope_theta=theta,
        head=head,
        use_sep_token=use_sep,
        logit_bias=logit_bias,
        logit_mean=logit_mean,
        logit_sigma=logit_sigma,
        is_original_qwen3_reranker=is_orig,
        bos_token_id=get_token_id(merged, "bos_token_id", d["bos_token_id"], src),  # type: ignore[arg-type]
        eos_token_id=get_token_id(merged, "eos_token_id", d["eos_token_id"], src),
        pad_token_id=get_token_id(merged, "pad_token_id", d["pad_token_id"], src),  # type: ignore[arg-type]
        dtype=dtype,
        raw=merged,
        config=config,
        hf_overrides=overrides,
        source=str(source),
        **{k: v for k, v in scalars.items() if k != "rope_attention_factor"},
    )


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
    config_path, config = read_config_json(Path(model_dir))
    return normalize(config, hf_overrides, source=config_path)
