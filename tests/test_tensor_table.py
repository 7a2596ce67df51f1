"""The engine's tensor table (_core.tensor_table) against the checkpoints transformers itself writes,
and the one safetensors writer (crossrank.safetensors_writer).

The table drives the loader's shape check and binder and the NumPy checkpoint writers; here
transformers' save_pretrained is the independent source of names and shapes, for each family and
flag the table knows (biases, q/k norms, tied embeddings, a causal LM vs a sequence classifier).
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from crossrank import _core
from crossrank.config import load_config
from crossrank.errors import ConfigError
from crossrank.safetensors_writer import TensorData, array_tensor, f32_to_bf16, write_safetensors

FAMILY = {"qwen2": "Qwen2", "qwen3": "Qwen3", "llama": "Llama", "mistral": "Mistral", "gemma": "Gemma"}

CASES = [
    ("qwen3", {}),
    ("qwen3", {"tie_word_embeddings": False}),
    ("qwen3", {"attention_bias": True}),
    ("qwen2", {}),
    ("qwen2", {"tie_word_embeddings": False}),
    ("gemma", {}),
    ("gemma", {"attention_bias": True}),
    ("llama", {"attention_bias": True, "mlp_bias": True, "tie_word_embeddings": False}),
    ("mistral", {}),
]


def tiny(model_type, extra):
    cfg = {"model_type": model_type, "architectures": [FAMILY[model_type] + "ForCausalLM"],
           "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
           "head_dim": 16, "intermediate_size": 96, "vocab_size": 128, "max_position_embeddings": 256,
           "rope_theta": 10000.0, "pad_token_id": 0}
    cfg.update(extra)
    return cfg


def table(tmp_path, cfg, num_labels=0):
    d = tmp_path / "cfg"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(cfg))
    return _core.tensor_table(load_config(d).core_params(), num_labels)


@pytest.mark.parametrize("num_labels", [0, 1, 3])
@pytest.mark.parametrize("model_type, extra", CASES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(CASES)])
def test_the_table_is_what_transformers_saves(tmp_path, model_type, extra, num_labels):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = tiny(model_type, extra)
    kw = {k: v for k, v in cfg.items() if k not in ("model_type", "architectures")}
    auto = transformers.AutoModelForSequenceClassification if num_labels else transformers.AutoModelForCausalLM
    if num_labels:
        kw["num_labels"] = num_labels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = auto.from_config(transformers.AutoConfig.for_model(model_type, **kw), dtype=torch.float32)
        hf.save_pretrained(tmp_path / "hf")
    saved = {t["name"]: tuple(t["shape"]) for t in _core.inspect_checkpoint(str(tmp_path / "hf"))}
    ours = table(tmp_path, cfg, num_labels)
    assert {name: shape for name, shape, _ in ours} == saved
    assert len(ours) == len(saved)
    kinds = {name: kind for name, _, kind in ours}
    assert kinds["model.embed_tokens.weight"] == "embedding" and kinds["model.norm.weight"] == "norm"
    assert all(kinds[n] == "bias" for n in kinds if n.endswith(".bias"))
    assert all(kinds[n] == "weight" for n in kinds if n.endswith("_proj.weight"))


def test_the_table_order_is_the_engines(tmp_path):
    names = [n for n, _, _ in table(tmp_path, tiny("qwen3", {"tie_word_embeddings": False}))]
    assert names[0] == "model.embed_tokens.weight" and names[-2:] == ["model.norm.weight", "lm_head.weight"]
    layer0 = [n[len("model.layers.0."):] for n in names if n.startswith("model.layers.0.")]
    assert layer0 == ["input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
                      "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                      "self_attn.q_norm.weight", "self_attn.k_norm.weight", "mlp.gate_proj.weight",
                      "mlp.up_proj.weight", "mlp.down_proj.weight"]


def test_bad_dims_and_labels_are_config_errors(tmp_path):
    params = load_config_params(tmp_path)
    with pytest.raises(ConfigError, match="num_hidden_layers"):
        _core.tensor_table(dict(params, num_hidden_layers=0))
    with pytest.raises(ConfigError, match="num_key_value_heads"):
        _core.tensor_table(dict(params, num_key_value_heads=3))
    with pytest.raises(ConfigError, match="num_labels"):
        _core.tensor_table(params, 70000)
    with pytest.raises(KeyError, match="hidden_size"):
        _core.tensor_table({k: v for k, v in params.items() if k != "hidden_size"})


def load_config_params(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(tiny("qwen3", {})))
    return load_config(d).core_params()


# ---- the writer -----------------------------------------------------------------------------------

def listing(path):
    return {t["name"]: (t["dtype"], tuple(t["shape"]), t["file"]) for t in _core.inspect_checkpoint(str(path))}


def test_sharded_output_has_an_index_and_reads_back(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"t{i}": rng.standard_normal((i + 1, 100)).astype(np.float32) for i in range(6)}
    files = write_safetensors(tmp_path, [array_tensor(k, v) for k, v in arrays.items()], max_shard_size=2000)
    assert files[-1] == "model.safetensors.index.json" and len(files) > 2
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in arrays.values())
    found = listing(tmp_path)
    assert {k: v[2] for k, v in found.items()} == index["weight_map"]
    assert {k: v[1] for k, v in found.items()} == {k: v.shape for k, v in arrays.items()}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)  # no temporary left


def test_one_file_when_unsharded_in_the_given_order(tmp_path):
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(4, dtype=np.int64)
    assert write_safetensors(tmp_path, [array_tensor("z", a), array_tensor("a", b)], max_shard_size=None,
                             metadata={"format": "pt", "note": "x"}) == ["model.safetensors"]
    raw = (tmp_path / "model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    assert (8 + n) % 8 == 0 and list(header) == ["__metadata__", "z", "a"]
    assert header["__metadata__"] == {"format": "pt", "note": "x"}
    assert raw[8 + n:] == a.tobytes() + b.tobytes()


def test_a_producer_of_the_wrong_size_leaves_no_file(tmp_path):
    short = TensorData("w", "F32", [4], lambda sink: sink(b"\0" * 12))
    with pytest.raises(ValueError, match="12 bytes"):
        write_safetensors(tmp_path, [short])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="unique"):
        write_safetensors(tmp_path, [array_tensor("w", np.zeros(2, np.float32))] * 2)


def test_bf16_rounds_to_nearest_even_and_keeps_nan_and_inf():
    x = np.array([1.0, 1.00390625, 1.01171875, -2.5e-3, np.inf, -np.inf, np.nan, 3.4e38], np.float32)
    got = f32_to_bf16(x)
    bits = x.view(np.uint32).astype(np.uint64)
    ref = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    finite = np.isfinite(x)
    np.testing.assert_array_equal(got[finite], ref[finite])
    back = (got.astype(np.uint32) << 16).view(np.float32)
    assert back[4] == np.inf and back[5] == -np.inf and np.isnan(back[6])
