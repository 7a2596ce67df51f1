"""Property-based fuzzing of the Python inputs with hypothesis: config.json / hf_overrides
combinations, and the texts of score()/predict(). Whatever comes in, crossrank either works or
raises one of its own errors (or a TypeError/ValueError that names the bad input): never a crash,
never another exception, never a non-finite score. No torch.
"""
import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from crossrank import CrossEncoder, CrossrankError, _core
from crossrank.config import load_config
from _hardening import OVERRIDES, core_head, small_checkpoint

# CROSSRANK_FUZZ_SCALE=20 runs twenty times as many examples (a longer local fuzzing session).
SCALE = int(os.environ.get("CROSSRANK_FUZZ_SCALE", "1"))
CONFIG_KEYS = [
    "architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act", "hidden_activation",
    "rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters", "max_position_embeddings",
    "tie_word_embeddings", "attention_bias", "mlp_bias", "sliding_window", "use_sliding_window",
    "max_window_layers", "layer_types", "quantization_config", "torch_dtype", "dtype", "id2label",
    "num_labels", "classifier_from_token", "method", "is_original_qwen3_reranker", "is_qwen3_reranker",
    "use_sep_token", "use_pad_token", "logit_bias", "logit_mean", "logit_sigma", "partial_rotary_factor",
    "final_logit_softcapping", "attn_logit_softcapping", "bos_token_id", "eos_token_id", "pad_token_id",
    "classifier_from_tokens", "methods",
]
SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.integers(0, 300)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.sampled_from(["silu", "gelu", "gelu_pytorch_tanh", "relu", "llama3", "yarn", "linear", "dynamic",
                              "default", "no", "yes", "from_2_way_softmax", "no_post_processing", "qwen3",
                              "qwen2", "llama", "gemma", "mistral", "Qwen3ForSequenceClassification",
                              "Qwen3ForCausalLM", "LlamaForCausalLM", "full_attention", "sliding_attention"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(["rope_type", "type", "factor", "rope_theta",
                                                         "original_max_position_embeddings", "low_freq_factor",
                                                         "high_freq_factor", "quant_method", "0", "1"]) | st.text(max_size=6),
                                        inner, max_size=4), max_leaves=8)
CHANGES = st.dictionaries(st.sampled_from(CONFIG_KEYS) | st.text(max_size=10), VALUES, max_size=6)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return small_checkpoint(tmp_path_factory.mktemp("fuzz-inputs"), seed=41, vocab_size=151669)


@pytest.fixture(scope="module")
def vocab_head(checkpoint):
    return core_head(checkpoint, load_config(checkpoint, OVERRIDES))


@settings(max_examples=300 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config_changes=CHANGES, overrides=st.none() | CHANGES, base_overrides=st.booleans())
def test_any_config_and_overrides_normalise_or_raise_a_crossrank_error(tmp_path_factory, checkpoint, config_changes,
                                                                       overrides, base_overrides):
    d = tmp_path_factory.mktemp("cfg", numbered=True)
    config = json.loads((checkpoint / "config.json").read_text())
    config.update(config_changes)
    (d / "config.json").write_text(json.dumps(config))  # NaN/Infinity are written as JS literals
    merged = dict(OVERRIDES) if base_overrides else {}
    merged.update(overrides or {})
    try:
        spec = load_config(d, merged if (overrides is not None or base_overrides) else None)
    except CrossrankError as e:
        event(f"refused: {type(e).__name__}")
        return
    event("normalised")
    params = spec.core_params()
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "head_dim"):
        assert isinstance(params[key], int) and params[key] >= 1, (key, params[key])
    assert params["num_attention_heads"] % params["num_key_value_heads"] == 0 and params["head_dim"] % 2 == 0
    assert np.isfinite(params["rope_inv_freq"]).all() and params["rope_inv_freq"].shape == (params["head_dim"] // 2,)
    for key in ("rms_norm_eps", "attn_scale", "embed_scale", "rope_attention_factor"):
        assert math.isfinite(params[key]), (key, params[key])
    assert len(params["layer_windows"]) == params["num_hidden_layers"]


@settings(max_examples=60 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(["hidden_size", "intermediate_size", "num_hidden_layers",
                                                "num_attention_heads", "num_key_value_heads", "head_dim",
                                                "vocab_size", "tie_word_embeddings", "attention_bias",
                                                "rms_norm_eps", "rope_theta", "max_position_embeddings"]),
                               st.integers(1, 2**17) | st.sampled_from([1, 2, 4, 8, 32, 64, 96, 10000, 151669])
                               | st.booleans() | st.floats(1e-9, 1e9),
                               max_size=3))
def test_configs_that_normalise_then_load_or_raise_a_crossrank_error(checkpoint, vocab_head, changes):
    # Dims the normaliser accepts go to the engine, which must find them in the checkpoint or say
    # which tensor does not fit, before allocating anything sized by them.
    try:
        spec = load_config(checkpoint, {**OVERRIDES, **changes})
    except CrossrankError as e:
        event(f"config refused: {type(e).__name__}")
        return
    try:
        engine = _core.Model(str(checkpoint), spec.core_params(), vocab_head, threads=1)
    except CrossrankError as e:
        event(f"engine refused: {type(e).__name__}")
        return
    event("loaded")
    out = engine.forward(np.arange(1, 9, dtype=np.int32), np.arange(8, dtype=np.int32), np.array([0, 8]))
    assert np.isfinite(out).all()


# ---- texts ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(checkpoint):
    return CrossEncoder(checkpoint, hf_overrides=OVERRIDES, threads=2, max_length=512)


ANY_CHAR = st.characters(exclude_categories=())          # includes lone surrogates and controls
TEXT = (st.text(ANY_CHAR, max_size=60) | st.text(st.characters(codec="utf-8"), max_size=3000)
        | st.sampled_from(["", " ", "\0", "<|im_end|>", "<|endoftext|>", "\ufeff", "\u202e", "\U0001F600" * 50]))


def has_surrogate(s):
    return any(0xD800 <= ord(c) <= 0xDFFF for c in s)


@settings(max_examples=150 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=TEXT, docs=st.lists(TEXT, min_size=1, max_size=4))
def test_any_text_gives_a_score_in_0_1_or_a_clear_error(model, query, docs):
    bad = has_surrogate(query) or any(has_surrogate(d) for d in docs)
    try:
        scores = model.score(query, docs)
    except (TypeError, ValueError) as e:
        # lone surrogates are not encodable text; everything else must be scored
        assert bad, f"{type(e).__name__}: {e}"
        return
    assert not bad
    assert scores.shape == (len(docs),) and np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()


@settings(max_examples=100 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=3))
def test_any_pair_predicts_or_raises_a_clear_error(model, pairs):
    bad = any(has_surrogate(a) or has_surrogate(b) for a, b in pairs)
    try:
        scores = model.predict(pairs)
    except CrossrankError as e:   # TooLongError: predict() never cuts a prompt
        assert "max_length" in str(e)
        return
    except (TypeError, ValueError) as e:
        # lone surrogates, or an empty prompt (no token at all: nothing to score)
        assert bad or "empty" in str(e), f"{type(e).__name__}: {e}"
        return
    assert not bad
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()


def test_a_very_long_document_is_truncated_by_score_and_refused_by_predict(model):
    doc = "lorem ipsum \x00\x07 \u00e9\U0001F600 " * 40000   # ~1 MB of text
    scores = model.score("query", [doc, "short"])
    assert np.isfinite(scores).all()
    with pytest.raises(CrossrankError, match="max_length=512"):
        model.predict([("query", doc)])
