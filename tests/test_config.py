"""Tests of the config normaliser (crossrank.config). No torch, no transformers."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from _assets import MODEL_CONFIGS_DIR

from crossrank.config import (
    HF_DEFAULTS,
    SUPPORTED_ARCHITECTURES,
    HeadSpec,
    ModelSpec,
    load_config,
    resolve_classifier_tokens,
)
from crossrank.errors import (
    Cancelled,
    CheckpointError,
    ConfigError,
    CrossrankError,
    ModelNotFoundError,
    UnsupportedModelError,
)

CONFIGS = MODEL_CONFIGS_DIR

SEEDS = [
    "Qwen3-Reranker-0.6B",
    "Qwen3-Reranker-4B",
    "Qwen3-Reranker-8B",
    "mxbai-rerank-base-v2",
    "mxbai-rerank-large-v2",
    "bge-reranker-v2-gemma",
]

QWEN3_RERANKER = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}
MXBAI = {
    "architectures": ["Qwen2ForSequenceClassification"],
    "classifier_from_token": ["0", "1"],
    "method": "from_2_way_softmax",
}
BGE_GEMMA = {
    "architectures": ["GemmaForSequenceClassification"],
    "classifier_from_token": ["Yes"],
    "method": "no_post_processing",
}


def seed(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


@pytest.fixture
def write(tmp_path):
    """write(cfg) -> a model directory holding cfg as config.json."""
    counter = [0]

    def _write(cfg: dict) -> Path:
        counter[0] += 1
        d = tmp_path / f"m{counter[0]}"
        d.mkdir()
        (d / "config.json").write_text(json.dumps(cfg))
        return d

    return _write


def tiny(model_type: str = "llama", **kw) -> dict:
    family = {"qwen2": "Qwen2", "qwen3": "Qwen3", "llama": "Llama", "mistral": "Mistral", "gemma": "Gemma"}
    cfg = {
        "architectures": [family[model_type] + "ForCausalLM"],
        "model_type": model_type,
        "vocab_size": 1000,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 4096,
    }
    cfg.update(kw)
    return cfg


def ulps(a: np.ndarray, b: np.ndarray) -> int:
    a = np.asarray(a, dtype=np.float32).view(np.int32).astype(np.int64)
    b = np.asarray(b, dtype=np.float32).view(np.int32).astype(np.int64)
    return int(np.max(np.abs(a - b))) if a.size else 0


# ------------------------------------------------------------------------------- errors


def test_error_hierarchy():
    assert issubclass(CheckpointError, CrossrankError) and issubclass(CheckpointError, ValueError)
    assert issubclass(UnsupportedModelError, CrossrankError) and issubclass(UnsupportedModelError, ValueError)
    assert issubclass(ConfigError, CrossrankError) and issubclass(ConfigError, ValueError)
    assert issubclass(ModelNotFoundError, CrossrankError) and issubclass(ModelNotFoundError, FileNotFoundError)
    assert issubclass(Cancelled, CrossrankError) and not issubclass(Cancelled, ValueError)
    for cls in (CrossrankError, CheckpointError, UnsupportedModelError, ConfigError, ModelNotFoundError, Cancelled):
        assert cls.__doc__


# ------------------------------------------------------------------------------- seeds


@pytest.mark.parametrize("name", SEEDS)
def test_seed_configs_load(write, name):
    cfg = seed(name)
    spec = load_config(write(cfg))
    assert spec.hidden_size == cfg["hidden_size"]
    assert spec.num_hidden_layers == cfg["num_hidden_layers"]
    assert spec.layer_windows == (0,) * cfg["num_hidden_layers"]
    assert spec.head == HeadSpec(kind="none")
    assert spec.rope_type == "default" and spec.rope_attention_factor == 1.0
    assert spec.rope_inv_freq.dtype == np.float32 and spec.rope_inv_freq.shape == (spec.head_dim // 2,)
    assert spec.dtype == "bfloat16"
    assert spec.raw["architectures"] == cfg["architectures"]


def test_qwen3_reranker_seed(write):
    spec = load_config(write(seed("Qwen3-Reranker-0.6B")), QWEN3_RERANKER)
    assert (spec.model_type, spec.architecture) == ("qwen3", "Qwen3ForSequenceClassification")
    assert spec.head == HeadSpec(kind="lm_rows", tokens=("no", "yes"), method="from_2_way_softmax", num_labels=1)
    assert spec.use_sep_token is False and spec.is_original_qwen3_reranker
    assert (spec.head_dim, spec.num_attention_heads, spec.num_key_value_heads) == (128, 16, 8)
    assert spec.qk_norm and not spec.qkv_bias and not spec.o_bias and not spec.mlp_bias
    assert spec.activation == "silu" and spec.tie_word_embeddings and not spec.norm_add_one
    assert spec.attn_scale == 128**-0.5 and spec.embed_scale == 1.0
    assert spec.rope_theta == 1e6
    assert (spec.bos_token_id, spec.eos_token_id, spec.pad_token_id) == (151643, 151645, None)
    assert load_config(write(seed("Qwen3-Reranker-8B"))).tie_word_embeddings is False


def test_mxbai_seed(write):
    cfg = seed("mxbai-rerank-base-v2")
    spec = load_config(write(cfg), MXBAI)
    assert spec.head == HeadSpec(kind="lm_rows", tokens=("0", "1"), method="from_2_way_softmax", num_labels=1)
    assert spec.qkv_bias and not spec.o_bias and not spec.qk_norm
    assert spec.head_dim == 896 // 14
    # sliding_window is 32768 in the config, but use_sliding_window is false.
    assert cfg["sliding_window"] == 32768 and spec.layer_windows == (0,) * 24
    assert spec.use_sep_token is False


def test_bge_gemma_seed(write):
    cfg = seed("bge-reranker-v2-gemma")
    assert "tie_word_embeddings" not in cfg and cfg["hidden_act"] == "gelu"
    spec = load_config(write(cfg), BGE_GEMMA)
    assert spec.head == HeadSpec(kind="lm_rows", tokens=("Yes",), method="no_post_processing", num_labels=1)
    assert spec.tie_word_embeddings  # GemmaConfig's default
    assert spec.norm_add_one and spec.activation == "gelu_tanh"
    assert spec.embed_scale == float(np.float32(math.sqrt(2048)))
    assert spec.attn_scale == 256**-0.5
    assert (spec.num_attention_heads, spec.num_key_value_heads, spec.head_dim) == (8, 1, 256)
    assert (spec.bos_token_id, spec.eos_token_id, spec.pad_token_id) == (2, 1, 0)


# ------------------------------------------------------------------------------- key formats


def to_transformers5(cfg: dict) -> dict:
    """The same config as transformers 5 saves it."""
    out = dict(cfg)
    rope = {"rope_type": "default"}
    scaling = out.pop("rope_scaling", None)
    if scaling:
        rope = dict(scaling)
        if "type" in rope:
            rope["rope_type"] = rope.pop("type")
    rope["rope_theta"] = out.pop("rope_theta", 10000.0)
    out["rope_parameters"] = rope
    out["dtype"] = out.pop("torch_dtype")
    return out


def assert_same_spec(a: ModelSpec, b: ModelSpec):
    assert a == b
    assert np.array_equal(a.rope_inv_freq, b.rope_inv_freq)


@pytest.mark.parametrize("name", SEEDS)
def test_legacy_and_transformers5_keys_agree(write, name):
    cfg = seed(name)
    assert_same_spec(load_config(write(cfg)), load_config(write(to_transformers5(cfg))))


def test_rope_scaling_type_or_rope_type(write):
    legacy = tiny(rope_theta=500000.0, rope_scaling={"type": "linear", "factor": 2.0}, torch_dtype="float32")
    modern = tiny(rope_theta=500000.0, rope_scaling={"rope_type": "linear", "factor": 2.0}, torch_dtype="float32")
    assert_same_spec(load_config(write(legacy)), load_config(write(modern)))
    assert_same_spec(load_config(write(legacy)), load_config(write(to_transformers5(legacy))))


def test_dtype_wins_over_torch_dtype(write):
    spec = load_config(write(tiny(torch_dtype="bfloat16", dtype="float32")))
    assert spec.dtype == "float32"


def test_override_rope_scaling_replaces_and_keeps_theta(write):
    cfg = to_transformers5(seed("Qwen3-Reranker-0.6B"))
    spec = load_config(write(cfg), {"rope_scaling": {"rope_type": "linear", "factor": 4.0}})
    base = load_config(write(cfg))
    assert spec.rope_type == "linear" and spec.rope_theta == 1e6
    assert np.array_equal(spec.rope_inv_freq, base.rope_inv_freq / np.float32(4.0))
    # Overriding a nested dict replaces it whole: the old factor does not survive.
    cfg2 = tiny(rope_scaling={"type": "linear", "factor": 2.0, "extra": 1})
    spec2 = load_config(write(cfg2), {"rope_scaling": None})
    assert spec2.rope_type == "default"


def test_rope_override_wins_in_either_spelling(write):
    yarn = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024}
    legacy = tiny(rope_theta=1e6, rope_scaling=yarn)
    modern = to_transformers5({**legacy, "torch_dtype": "float32"})
    plain = load_config(write(tiny(rope_theta=1e6)))
    for cfg in (legacy, modern):
        assert load_config(write(cfg)).rope_type == "yarn"
        for ov in ({"rope_scaling": None}, {"rope_parameters": None},
                   {"rope_parameters": {"rope_type": "default"}}, {"rope_scaling": {"type": "default"}}):
            spec = load_config(write(cfg), ov)
            assert spec.rope_type == "default" and spec.rope_theta == 1e6, ov
            assert np.array_equal(spec.rope_inv_freq, plain.rope_inv_freq)
        spec = load_config(write(cfg), {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5}})
        assert spec.rope_type == "linear" and spec.rope_theta == 5e5


def test_rope_bad_values(write):
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny(rope_scaling="linear")))
    assert "rope_scaling" in str(e.value) and "object" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny(rope_theta="1e6")))
    assert "rope_theta" in str(e.value)
    yarn = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024}
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny(rope_scaling={**yarn, "beta_fast": "32"})))
    assert "beta_fast" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny(rope_scaling={"type": "yarn", "original_max_position_embeddings": 1024})))
    assert "'factor'" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny(rope_scaling={**LLAMA31, "high_freq_factor": 0.5})))
    assert "high_freq_factor" in str(e.value)


def test_rope_per_layer_type(write):
    same = {"rope_type": "default", "rope_theta": 1e6}
    spec = load_config(write(tiny("qwen3", rope_parameters={"full_attention": same, "sliding_attention": same})))
    assert spec.rope_theta == 1e6
    with pytest.raises(UnsupportedModelError) as e:
        load_config(write(tiny("qwen3", rope_parameters={"full_attention": same,
                                                         "sliding_attention": {**same, "rope_theta": 1e4}})))
    assert "per layer type" in str(e.value)


# ------------------------------------------------------------------------------- defaults


@pytest.mark.parametrize("model_type", sorted(HF_DEFAULTS))
def test_missing_keys_take_hf_defaults(write, model_type):
    spec = load_config(write({"model_type": model_type}))
    d = HF_DEFAULTS[model_type]
    assert spec.architecture.endswith("ForCausalLM")
    assert spec.vocab_size == d["vocab_size"] and spec.hidden_size == d["hidden_size"]
    assert spec.num_hidden_layers == d["num_hidden_layers"]
    assert spec.max_position_embeddings == d["max_position_embeddings"]
    assert spec.tie_word_embeddings is (model_type == "gemma")
    expected_kv = d["num_key_value_heads"] or d["num_attention_heads"]
    assert spec.num_key_value_heads == expected_kv
    expected_hd = d["head_dim"] or d["hidden_size"] // d["num_attention_heads"]
    assert spec.head_dim == expected_hd
    assert spec.rope_theta == 10000.0


def test_head_dim_and_kv_heads_null(write):
    spec = load_config(write(tiny("mistral", head_dim=None, num_key_value_heads=None)))
    assert spec.head_dim == 64 // 4 and spec.num_key_value_heads == 4
    cfg = tiny("mistral")
    del cfg["num_key_value_heads"]
    cfg["num_attention_heads"] = 16
    assert load_config(write(cfg)).num_key_value_heads == 8  # MistralConfig's default
    cfg = tiny("qwen3")
    del cfg["head_dim"]
    assert load_config(write(cfg)).head_dim == 128  # Qwen3Config's default, not hidden/heads
    cfg = tiny("qwen2")
    del cfg["head_dim"]
    assert load_config(write(cfg)).head_dim == 16


# ------------------------------------------------------------------------------- architecture


def test_unsupported_architecture(write):
    with pytest.raises(UnsupportedModelError) as e:
        load_config(write({**tiny(), "architectures": ["BertForSequenceClassification"], "model_type": "bert"}))
    msg = str(e.value)
    assert "BertForSequenceClassification" in msg
    for arch in SUPPORTED_ARCHITECTURES:
        assert arch in msg


def test_architecture_model_type_mismatch(write):
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny("qwen3")), {"architectures": ["Qwen2ForSequenceClassification"]})
    assert "qwen2" in str(e.value) and "qwen3" in str(e.value)
    with pytest.raises(UnsupportedModelError) as e:
        load_config(write({**tiny("gemma"), "model_type": "gemma2"}))
    assert "gemma2" in str(e.value)


def test_architecture_inference(write):
    cfg = tiny("qwen3")
    del cfg["model_type"]
    assert load_config(write(cfg)).model_type == "qwen3"
    cfg = tiny("llama")
    del cfg["architectures"]
    assert load_config(write(cfg)).architecture == "LlamaForCausalLM"
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny(architectures="LlamaForCausalLM")))
    assert "list" in str(e.value)


def test_quantized_checkpoint_refused(write):
    with pytest.raises(UnsupportedModelError) as e:
        load_config(write(tiny(quantization_config={"quant_method": "awq", "bits": 4})))
    msg = str(e.value)
    assert "awq" in msg and "AWQ/GPTQ/FP8" in msg and "bf16/f32" in msg


# ------------------------------------------------------------------------------- sanity


@pytest.mark.parametrize(
    "key, value",
    [
        ("hidden_size", "1024"),
        ("hidden_size", -8),
        ("hidden_size", 0),
        ("hidden_size", 131072),
        ("hidden_size", True),
        ("hidden_size", 64.0),
        ("num_hidden_layers", 5000),
        ("vocab_size", 20_000_000),
        ("intermediate_size", 2_000_000),
        ("num_attention_heads", None),
        ("max_position_embeddings", -1),
    ],
)
def test_bad_dimensions(write, key, value):
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny(**{key: value})))
    assert repr(key) in str(e.value) and repr(value) in str(e.value)


def test_bad_dimension_from_overrides_names_source(write):
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny()), {"num_hidden_layers": 0})
    assert "hf_overrides" in str(e.value)


def test_heads_kv_heads_head_dim(write):
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny(num_attention_heads=6, num_key_value_heads=4)))
    assert "multiple" in str(e.value) and "6" in str(e.value) and "4" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny(head_dim=15)))
    assert "even" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny(head_dim=None, hidden_size=66, num_attention_heads=4)))
    assert "head_dim" in str(e.value)


@pytest.mark.parametrize("key", ["tie_word_embeddings", "attention_bias", "mlp_bias"])
@pytest.mark.parametrize("value", ["true", 1, 0])
def test_bools_must_be_bools(write, key, value):
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny(**{key: value})))
    assert key in str(e.value) and "boolean" in str(e.value)


def test_bad_eps_and_token_ids(write):
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny(rms_norm_eps=0)))
    assert "rms_norm_eps" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny(pad_token_id="0")))
    assert "pad_token_id" in str(e.value)
    spec = load_config(write(tiny(eos_token_id=[1, 2])))
    assert spec.eos_token_id == (1, 2)


# ------------------------------------------------------------------------------- flags


def test_flags_per_architecture(write):
    q2 = load_config(write(tiny("qwen2", attention_bias=False)))
    assert q2.qkv_bias and not q2.o_bias and not q2.qk_norm
    q3 = load_config(write(tiny("qwen3", attention_bias=True)))
    assert q3.qkv_bias and q3.o_bias and q3.qk_norm
    ll = load_config(write(tiny("llama", attention_bias=True, mlp_bias=True)))
    assert ll.qkv_bias and ll.o_bias and ll.mlp_bias and not ll.qk_norm
    mi = load_config(write(tiny("mistral", attention_bias=True, mlp_bias=True)))
    assert not (mi.qkv_bias or mi.o_bias or mi.mlp_bias)
    ge = load_config(write(tiny("gemma")))
    assert ge.norm_add_one and ge.embed_scale == float(np.float32(8.0)) and not ge.mlp_bias
    for spec in (q2, q3, ll, mi):
        assert not spec.norm_add_one and spec.embed_scale == 1.0


@pytest.mark.parametrize(
    "act, expected",
    [("silu", "silu"), ("swish", "silu"), ("gelu_pytorch_tanh", "gelu_tanh"), ("gelu_new", "gelu_tanh"),
     ("gelu_fast", "gelu_tanh"), ("gelu", "gelu")],
)
def test_activation_mapping(write, act, expected):
    assert load_config(write(tiny("llama", hidden_act=act))).activation == expected


def test_unsupported_activation(write):
    with pytest.raises(UnsupportedModelError) as e:
        load_config(write(tiny("llama", hidden_act="relu")))
    assert "'relu'" in str(e.value) and "silu" in str(e.value)


def test_gemma_activation_follows_vllm(write):
    # hidden_activation wins; without it, the tanh GELU for every GELU spelling of hidden_act, where
    # vLLM and transformers agree. Elsewhere they part (vLLM: tanh GELU, transformers: hidden_act):
    # refused, naming the key that settles it.
    for act in ("gelu", "gelu_pytorch_tanh", "gelu_new"):
        assert load_config(write(tiny("gemma", hidden_act=act))).activation == "gelu_tanh"
    for act in ("silu", "relu"):
        with pytest.raises(UnsupportedModelError, match=f"hidden_act '{act}' .* Set hidden_activation"):
            load_config(write(tiny("gemma", hidden_act=act)))
    assert load_config(write(tiny("gemma", hidden_act="silu", hidden_activation="gelu"))).activation == "gelu"
    assert load_config(write(tiny("gemma", hidden_activation="gelu"))).activation == "gelu"
    both = tiny("gemma", hidden_act="gelu", hidden_activation="gelu_pytorch_tanh")
    assert load_config(write(both)).activation == "gelu_tanh"
    with pytest.raises(UnsupportedModelError):
        load_config(write(tiny("gemma", hidden_activation="relu")))


# ------------------------------------------------------------------------------- windows


def test_windows_mistral(write):
    assert load_config(write(tiny("mistral", sliding_window=4096))).layer_windows == (4096,) * 4
    assert load_config(write(tiny("mistral", sliding_window=None))).layer_windows == (0,) * 4
    cfg = tiny("mistral")
    assert load_config(write(cfg)).layer_windows == (4096,) * 4  # MistralConfig's default window
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny("mistral", sliding_window=0)))
    assert "sliding_window" in str(e.value)


@pytest.mark.parametrize("model_type", ["qwen2", "qwen3"])
def test_windows_qwen(write, model_type):
    base = tiny(model_type, sliding_window=512, max_window_layers=2)
    assert load_config(write(base)).layer_windows == (0, 0, 0, 0)
    assert load_config(write({**base, "use_sliding_window": True})).layer_windows == (0, 0, 512, 512)
    assert load_config(write({**base, "use_sliding_window": True, "max_window_layers": 0})).layer_windows == (512,) * 4
    assert load_config(write({**base, "use_sliding_window": True, "sliding_window": None})).layer_windows == (0,) * 4
    lt = ["sliding_attention", "full_attention", "sliding_attention", "attention"]
    assert load_config(write({**base, "use_sliding_window": True, "layer_types": lt})).layer_windows == (512, 0, 512, 0)
    # use_sliding_window false: transformers nulls the window, sliding layers attend fully.
    assert load_config(write({**base, "layer_types": lt})).layer_windows == (0,) * 4
    with pytest.raises(ConfigError) as e:
        load_config(write({**base, "layer_types": lt[:3]}))
    assert "layer_types" in str(e.value) and "3" in str(e.value)
    with pytest.raises(UnsupportedModelError) as e:
        load_config(write({**base, "layer_types": ["chunked_attention"] * 4}))
    assert "chunked_attention" in str(e.value)
    with pytest.raises(ConfigError):
        load_config(write({**base, "use_sliding_window": "yes"}))


@pytest.mark.parametrize("model_type", ["llama", "gemma"])
def test_no_windows(write, model_type):
    assert load_config(write(tiny(model_type, sliding_window=16))).layer_windows == (0,) * 4


# ------------------------------------------------------------------------------- RoPE


def reference_default(theta: float, dim: int) -> np.ndarray:
    e = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    return (1.0 / np.float64(np.float32(theta)) ** e.astype(np.float64)).astype(np.float32)


@pytest.mark.parametrize("theta", [10000.0, 1e6, 500000, 123456.7])
@pytest.mark.parametrize("head_dim", [16, 64, 128, 256])
def test_rope_default(write, theta, head_dim):
    spec = load_config(write(tiny(head_dim=head_dim, rope_theta=theta)))
    assert spec.rope_inv_freq.shape == (head_dim // 2,)
    assert spec.rope_inv_freq[0] == 1.0
    assert ulps(spec.rope_inv_freq, reference_default(theta, head_dim)) <= 1
    assert not spec.rope_inv_freq.flags.writeable


def test_rope_linear(write):
    base = load_config(write(tiny(head_dim=128, rope_theta=1e4)))
    spec = load_config(write(tiny(head_dim=128, rope_theta=1e4, rope_scaling={"type": "linear", "factor": 4})))
    assert np.array_equal(spec.rope_inv_freq, base.rope_inv_freq / np.float32(4))
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny(rope_scaling={"type": "linear"})))
    assert "factor" in str(e.value)


LLAMA31 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 8192}


def test_rope_llama3(write):
    cfg = tiny(head_dim=128, rope_theta=500000.0, max_position_embeddings=131072, rope_scaling=LLAMA31)
    spec = load_config(write(cfg))
    base = load_config(write(tiny(head_dim=128, rope_theta=500000.0)))
    wavelen = 2 * math.pi / base.rope_inv_freq.astype(np.float64)
    high = wavelen < 8192 / 4
    low = wavelen > 8192 / 1
    assert np.array_equal(spec.rope_inv_freq[high], base.rope_inv_freq[high])
    assert ulps(spec.rope_inv_freq[low], base.rope_inv_freq[low] / 8) <= 1
    mid = ~high & ~low
    assert mid.any() and np.all(spec.rope_inv_freq[mid] < base.rope_inv_freq[mid])
    assert np.all(spec.rope_inv_freq[mid] > base.rope_inv_freq[mid] / 8)
    assert spec.rope_attention_factor == 1.0
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny(rope_scaling={k: v for k, v in LLAMA31.items() if k != "low_freq_factor"})))
    assert "low_freq_factor" in str(e.value)


def test_rope_yarn_attention_factor(write):
    yarn = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    spec = load_config(write(tiny("qwen3", head_dim=128, rope_theta=1e6, rope_scaling=yarn)))
    assert spec.rope_type == "yarn"
    assert spec.rope_attention_factor == pytest.approx(0.1 * math.log(4.0) + 1.0, rel=1e-15)
    base = load_config(write(tiny("qwen3", head_dim=128, rope_theta=1e6)))
    # High frequencies extrapolate (unchanged), low ones interpolate (divided by factor).
    assert ulps(spec.rope_inv_freq[:4], base.rope_inv_freq[:4]) <= 1
    assert ulps(spec.rope_inv_freq[-4:], base.rope_inv_freq[-4:] / np.float32(4)) <= 1
    explicit = load_config(write(tiny("qwen3", head_dim=128, rope_scaling={**yarn, "attention_factor": 0.75})))
    assert explicit.rope_attention_factor == 0.75
    ms = load_config(write(tiny("qwen3", head_dim=128, rope_scaling={**yarn, "mscale": 1.0, "mscale_all_dim": 0.5})))
    assert ms.rope_attention_factor == pytest.approx((0.1 * math.log(4) + 1) / (0.05 * math.log(4) + 1))
    nofactor = {"type": "yarn", "factor": None, "original_max_position_embeddings": 1024}
    nf = load_config(write(tiny("qwen3", head_dim=128, max_position_embeddings=4096, rope_scaling=nofactor)))
    assert nf.rope_attention_factor == pytest.approx(0.1 * math.log(4.0) + 1.0)


@pytest.mark.parametrize(
    "rope, words",
    [
        ({"type": "dynamic", "factor": 2.0}, ["dynamic", "batch"]),
        ({"rope_type": "longrope", "short_factor": [1.0], "long_factor": [2.0]}, ["longrope", "length"]),
        ({"rope_type": "mrope"}, ["mrope", "default, linear, llama3"]),
    ],
)
def test_rope_refused(write, rope, words):
    with pytest.raises(UnsupportedModelError) as e:
        load_config(write(tiny(rope_scaling=rope)))
    for w in words:
        assert w in str(e.value)
    assert "cannot honour" in str(e.value)


def test_partial_rotary_factor(write):
    with pytest.raises(UnsupportedModelError) as e:
        load_config(write(tiny(partial_rotary_factor=0.5)))
    assert "partial_rotary_factor" in str(e.value) and "1.0" in str(e.value)
    assert load_config(write(tiny(partial_rotary_factor=1.0))).rope_inv_freq.shape == (8,)
    with pytest.raises(UnsupportedModelError):
        rope = {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.25}
        load_config(write(tiny(rope_parameters=rope)))


# ------------------------------------------------------------------------------- cannot honour


@pytest.mark.parametrize("key", ["attn_logit_softcapping", "final_logit_softcapping"])
def test_softcapping_refused(write, key):
    assert load_config(write(tiny("gemma", **{key: None}))).model_type == "gemma"
    with pytest.raises(UnsupportedModelError) as e:
        load_config(write(tiny("gemma")), {key: 30.0})
    assert "cannot honour" in str(e.value) and key in str(e.value)


def test_query_pre_attn_scalar_and_bidirectional(write):
    assert load_config(write(tiny("gemma", query_pre_attn_scalar=16))).attn_scale == 16**-0.5
    with pytest.raises(UnsupportedModelError) as e:
        load_config(write(tiny("gemma", query_pre_attn_scalar=144)))
    assert "query_pre_attn_scalar" in str(e.value) and "Gemma-2" in str(e.value)
    with pytest.raises(UnsupportedModelError) as e:
        load_config(write(tiny("gemma", use_bidirectional_attention=True)))
    assert "causal" in str(e.value)


# ------------------------------------------------------------------------------- reranker keys


def seq_cls(model_type: str = "qwen3", **kw) -> dict:
    family = {"qwen2": "Qwen2", "qwen3": "Qwen3", "llama": "Llama", "mistral": "Mistral", "gemma": "Gemma"}
    return {"architectures": [family[model_type] + "ForSequenceClassification"], **kw}


def test_invalid_method(write):
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny("qwen3")), seq_cls(classifier_from_token=["no", "yes"], method="softmax"))
    msg = str(e.value)
    assert "'softmax'" in msg and "from_2_way_softmax" in msg and "no_post_processing" in msg


def test_token_count_vs_method(write):
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny("qwen3")), seq_cls(classifier_from_token=["a", "b", "c"], method="from_2_way_softmax"))
    assert "exactly 2" in str(e.value) and "got 3" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny("qwen3")), seq_cls(classifier_from_token=["yes"], method="from_2_way_softmax"))
    assert "exactly 2" in str(e.value) and "got 1" in str(e.value) and "no_post_processing" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny("qwen3")), seq_cls(classifier_from_token=[], method="no_post_processing"))
    assert "non-empty" in str(e.value)
    three = seq_cls(classifier_from_token=["a", "b", "c"], method="no_post_processing")
    spec = load_config(write(tiny("qwen3")), three)
    assert spec.head == HeadSpec("lm_rows", ("a", "b", "c"), "no_post_processing", 3)


def test_tokens_without_method(write):
    spec = load_config(write(tiny("gemma")), seq_cls("gemma", classifier_from_token=["Yes"]))
    assert spec.head == HeadSpec("lm_rows", ("Yes",), "no_post_processing", 1)
    assert spec.use_sep_token is False
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny("qwen2")), seq_cls("qwen2", classifier_from_token=["0", "1"]))
    msg = str(e.value)
    assert "no method" in msg and "from_2_way_softmax" in msg and "no_post_processing" in msg and "'0'" in msg


def test_method_without_tokens(write):
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny("qwen3")), seq_cls(method="from_2_way_softmax"))
    assert "classifier_from_token" in str(e.value)


@pytest.mark.parametrize("key", ["is_original_qwen3_reranker", "is_qwen3_reranker"])
def test_is_original_qwen3_reranker(write, key):
    spec = load_config(write(tiny("qwen3")), seq_cls(**{key: True}))
    assert spec.head == HeadSpec("lm_rows", ("no", "yes"), "from_2_way_softmax", 1)
    assert spec.is_original_qwen3_reranker and spec.use_sep_token is False
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny("qwen3")), seq_cls(**{key: True, "classifier_from_token": ["yes"]}))
    assert key in str(e.value) and "exactly 2" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny("qwen3")), seq_cls(**{key: True, "method": "no_post_processing"}))
    assert "from_2_way_softmax" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny("qwen3")), seq_cls(**{key: "true"}))
    assert "boolean" in str(e.value)


def test_use_sep_token(write):
    two_way = seq_cls(classifier_from_token=["no", "yes"], method="from_2_way_softmax")
    assert load_config(write(tiny("qwen3")), two_way).use_sep_token is False
    assert load_config(write(tiny("qwen3")), {**two_way, "use_sep_token": True}).use_sep_token is True
    # The older name wins when present.
    both = {**two_way, "use_sep_token": True, "use_pad_token": False}
    assert load_config(write(tiny("qwen3")), both).use_sep_token is False
    assert load_config(write(tiny("qwen3")), {**two_way, "use_pad_token": True}).use_sep_token is True
    # No method: pair tokenization (vLLM's default for a classifier).
    assert load_config(write(tiny("qwen3")), seq_cls()).use_sep_token is True
    assert load_config(write(tiny("qwen3", use_sep_token=False)), seq_cls()).use_sep_token is False
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny("qwen3")), {**two_way, "use_sep_token": "no"})
    assert "use_sep_token" in str(e.value)


def test_classifier_token_shapes(write):
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny("gemma")), seq_cls("gemma", classifier_from_token="Yes"))
    assert "['Yes']" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny("qwen3")), seq_cls(classifier_from_token=["yes", "yes"], method="from_2_way_softmax"))
    assert "more than once" in str(e.value)
    with pytest.raises(ConfigError):
        load_config(write(tiny("qwen3")), seq_cls(classifier_from_token=["no", 1], method="from_2_way_softmax"))


def test_score_weight_head(write):
    assert load_config(write(tiny("qwen3")), seq_cls()).head == HeadSpec("score_weight", num_labels=2)
    cfg = tiny("qwen3", architectures=["Qwen3ForSequenceClassification"], id2label={"0": "LABEL_0"})
    assert load_config(write(cfg)).head == HeadSpec("score_weight", num_labels=1)
    assert load_config(write(tiny("qwen3")), seq_cls(num_labels=3)).head.num_labels == 3
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny("qwen3")), seq_cls(num_labels=0))
    assert "num_labels" in str(e.value)


def test_causal_lm_heads(write):
    assert load_config(write(tiny("qwen3"))).head == HeadSpec("none")
    # Tokens on a causal LM: vLLM's pooling runner converts it the same way.
    spec = load_config(write(tiny("qwen3")), {"classifier_from_token": ["no", "yes"], "method": "from_2_way_softmax"})
    assert spec.architecture == "Qwen3ForCausalLM" and spec.head.kind == "lm_rows"


def test_logit_calibration(write):
    spec = load_config(write(tiny()), {"logit_bias": 4.5})
    assert (spec.logit_bias, spec.logit_mean, spec.logit_sigma) == (4.5, 4.5, None)
    spec = load_config(write(tiny()), {"logit_mean": 6, "logit_sigma": 2})
    assert (spec.logit_bias, spec.logit_mean, spec.logit_sigma) == (None, 6.0, 2.0)
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny()), {"logit_bias": 1.0, "logit_mean": 2.0})
    assert "logit_bias" in str(e.value) and "logit_mean" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny()), {"logit_sigma": 0})
    assert "logit_sigma" in str(e.value) and "> 0" in str(e.value)
    with pytest.raises(ConfigError):
        load_config(write(tiny()), {"logit_mean": float("nan")})


# ------------------------------------------------------------------------------- overrides


@pytest.mark.parametrize(
    "typo, meant",
    [
        ("classifier_from_tokens", "classifier_from_token"),
        ("is_original_qwen3_rereanker", "is_original_qwen3_reranker"),
        ("use_sep_tokens", "use_sep_token"),
        ("methods", "method"),
        ("architecture", "architectures"),
        ("logits_bias", "logit_bias"),
    ],
)
def test_misspelt_override(write, typo, meant):
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny("qwen3")), {typo: ["x"]})
    msg = str(e.value)
    assert repr(typo) in msg and f"did you mean {meant!r}" in msg


def test_any_other_override_key_is_applied(write):
    spec = load_config(write(tiny("qwen3")), {"max_position_embeddings": 8192, "max_model_len": 512, "foo_bar": 1})
    assert spec.max_position_embeddings == 8192 and spec.raw["foo_bar"] == 1
    # A key the config already has is never a misspelling.
    assert load_config(write(tiny("qwen3", methodz=1)), {"methodz": 2}).raw["methodz"] == 2


def test_overrides_must_be_a_dict(write):
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny()), '{"method": "no_post_processing"}')  # type: ignore[arg-type]
    assert "dict" in str(e.value) and "str" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(write(tiny()), {1: 2})  # type: ignore[dict-item]
    assert "strings" in str(e.value)


def test_overrides_do_not_mutate_inputs(write):
    overrides = {"rope_scaling": {"type": "linear", "factor": 2.0}}
    spec = load_config(write(tiny()), overrides)
    spec.raw["rope_scaling"]["factor"] = 9
    assert overrides["rope_scaling"]["factor"] == 2.0


# ------------------------------------------------------------------------------- config.json


def test_config_json_problems(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path)
    assert str(tmp_path / "config.json") in str(e.value)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path)
    assert "not valid JSON" in str(e.value) and str(tmp_path) in str(e.value)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path)
    assert "JSON object" in str(e.value) and "list" in str(e.value)
    # what json.loads itself cannot build: nesting past the interpreter's limit, a 5000-digit integer
    for text in ("[" * 100_000 + "]" * 100_000, '{"hidden_size": ' + "9" * 5000 + "}"):
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(ConfigError, match="cannot be read as a config.json"):
            load_config(tmp_path)


# ------------------------------------------------------------------------------- ModelSpec


def test_core_params(write):
    spec = load_config(write(seed("Qwen3-Reranker-0.6B")), QWEN3_RERANKER)
    p = spec.core_params()
    ints = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim"}
    floats = {"rms_norm_eps", "attn_scale", "embed_scale", "rope_attention_factor"}
    bools = {"qk_norm", "qkv_bias", "o_bias", "mlp_bias", "norm_add_one", "tie_word_embeddings"}
    assert set(p) == ints | floats | bools | {"activation", "layer_windows", "rope_inv_freq"}
    assert all(type(p[k]) is int for k in ints)
    assert all(type(p[k]) is float for k in floats)
    assert all(type(p[k]) is bool for k in bools)
    assert p["activation"] in ("silu", "gelu_tanh", "gelu")
    assert isinstance(p["layer_windows"], tuple) and len(p["layer_windows"]) == p["num_hidden_layers"]
    arr = p["rope_inv_freq"]
    assert arr.dtype == np.float32 and arr.flags.c_contiguous and arr.shape == (64,)
    assert np.array_equal(arr, spec.rope_inv_freq) and arr is not spec.rope_inv_freq
    assert (p["num_hidden_layers"], p["num_attention_heads"], p["num_key_value_heads"]) == (28, 16, 8)


def test_model_spec_is_frozen(write):
    spec = load_config(write(tiny()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.hidden_size = 1  # type: ignore[misc]
    with pytest.raises(ValueError):
        spec.rope_inv_freq[0] = 2.0
    hash(spec)


# ------------------------------------------------------------------------------- tokens


VOCAB = {"yes": 9693, "Yes": 9454, "Ġyes": 9834, "ĠYes": 7414, "no": 2152, "0": 15, "1": 16, "▁Yes": 6287}


def test_resolve_classifier_tokens():
    assert resolve_classifier_tokens(["no", "yes"], VOCAB) == (2152, 9693)
    assert resolve_classifier_tokens(("0", "1"), VOCAB, vocab_size=151936) == (15, 16)


def test_resolve_classifier_tokens_suggestions():
    vocab = {k: v for k, v in VOCAB.items() if k != "yes"}
    with pytest.raises(ConfigError) as e:
        resolve_classifier_tokens(["no", "yes"], vocab)
    msg = str(e.value)
    assert "'yes'" in msg and "case-sensitive" in msg
    assert "'Yes' (id 9454)" in msg and "'Ġyes' (id 9834)" in msg and "'ĠYes' (id 7414)" in msg
    assert "' yes'" in msg  # explains the space marker
    with pytest.raises(ConfigError) as e:
        resolve_classifier_tokens([" Yes"], {"▁Yes": 6287})
    assert "'▁Yes' (id 6287)" in str(e.value)
    with pytest.raises(ConfigError) as e:
        resolve_classifier_tokens(["maybe"], VOCAB)
    assert "'maybe'" in str(e.value) and "get_vocab" in str(e.value)


def test_resolve_classifier_tokens_misuse():
    with pytest.raises(ConfigError) as e:
        resolve_classifier_tokens(["yes"], VOCAB, vocab_size=1000)
    assert "9693" in str(e.value) and "1000" in str(e.value)
    with pytest.raises(ConfigError) as e:
        resolve_classifier_tokens(["yes", "Yes2"], {"yes": 1, "Yes2": 1})
    assert "repeated" in str(e.value)
    with pytest.raises(ConfigError) as e:
        resolve_classifier_tokens("yes", VOCAB)  # type: ignore[arg-type]
    assert "['yes']" in str(e.value)


# ------------------------------------------------------------------------------- family records


def test_family_records_name_registered_templates_of_their_own_architecture():
    from crossrank.config import FAMILIES
    from crossrank.templates import TEMPLATES, template_for_model

    with_template = {f.model_type for f in FAMILIES.values() if f.template}
    assert with_template == {"qwen3", "qwen2", "gemma"}
    for family in FAMILIES.values():
        if family.template is None:
            assert not family.name_hints
            continue
        template = TEMPLATES[family.template]
        assert template.overrides["architectures"][0].startswith(family.prefix)
        for hint in family.name_hints:
            assert template_for_model(f"org/{hint}-1b", {}) is template


def test_normalize_is_load_config_without_the_file(write):
    from crossrank.config import normalize

    cfg = seed("Qwen3-Reranker-0.6B")
    from_dir = load_config(write(cfg), QWEN3_RERANKER)
    from_dict = normalize(cfg, QWEN3_RERANKER)
    assert from_dict == from_dir
    assert np.array_equal(from_dict.rope_inv_freq, from_dir.rope_inv_freq)
    assert from_dict.core_params().keys() == from_dir.core_params().keys()
    with pytest.raises(ConfigError) as e:
        normalize(cfg, {"num_hidden_layers": 0})
    assert "'num_hidden_layers'" in str(e.value) and "hf_overrides" in str(e.value)


def test_with_overrides_renormalises_without_reading(write, tmp_path):
    d = write(seed("Qwen3-Reranker-0.6B"))
    spec = load_config(d)
    assert spec.head.kind == "none"
    (d / "config.json").unlink()  # nothing is read again
    again = spec.with_overrides(QWEN3_RERANKER)
    assert again == load_config(write(seed("Qwen3-Reranker-0.6B")), QWEN3_RERANKER)
    assert again.head.kind == "lm_rows"
    # Defaults sit under the spec's own overrides: the caller's method wins over the template's.
    own = load_config(write(seed("Qwen3-Reranker-0.6B")), {"classifier_from_token": ["yes"],
                                                                  "method": "no_post_processing"})
    under = own.with_defaults({"architectures": ["Qwen3ForSequenceClassification"],
                               "classifier_from_token": ["no", "yes"], "method": "from_2_way_softmax"})
    assert under.architecture == "Qwen3ForSequenceClassification"
    assert (under.head.tokens, under.head.method, under.head.num_labels) == (("yes",), "no_post_processing", 1)
    assert own.with_overrides(None) == own


@pytest.mark.parametrize("key, value, bounds", [
    ("num_attention_heads", 2048, "[1, 1024]"),
    ("num_key_value_heads", 2048, "[1, 1024]"),
    ("head_dim", 8192, "[2, 4096]"),
    ("num_hidden_layers", 4097, "[1, 4096]"),
])
def test_engine_bounds_are_the_normalisers(write, key, value, bounds):
    # One set of bounds: the engine's. The normaliser used to allow 4,096 heads the engine refused.
    cfg = tiny(**{key: value})
    if key == "num_attention_heads":
        cfg["num_key_value_heads"] = value
    with pytest.raises(ConfigError) as e:
        load_config(write(cfg))
    msg = str(e.value)
    assert f"{key!r} = {value} is outside {bounds}" in msg and "hf_overrides" in msg, msg
