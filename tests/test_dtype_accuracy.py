"""Reduced-precision compute against crossrank's own float32 path, on a model with outliers.

Real LLMs carry a few huge activation channels (in the residual stream and at the inputs of
down_proj) that random weights lack, and those are what break low-precision inference. The
checkpoint here injects them as trained models carry them: a few embedding columns scaled by 100
(massive residual-stream activations) with the norm weights of those channels scaled down, as
trained models learn them, and a few gate/up rows scaled by 4 (down_proj inputs 16x the rest). Scores of 256
query-document pairs in bfloat16 must rank like float32's (Spearman >= 0.999) and stay within
0.02; in int8 (per-channel weights, per-token inputs, outlier inputs taken out in float32) Spearman >= 0.995
and within 0.05. No reference library is involved: both sides are crossrank, only the dtype
differs.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

from _numpy_checkpoint import QWEN3_TINY_CONFIG, copy_qwen3_tokenizer, qwen3_tensors, qwen3_tokenizer_dir, write_tensors
from crossrank import CrossEncoder

sys.path.insert(0, str(Path(__file__).parent / "reference"))
from texts import PAIRS  # noqa: E402

QWEN3_RERANKER = {"architectures": ["Qwen3ForSequenceClassification"],
                  "classifier_from_token": ["no", "yes"], "is_original_qwen3_reranker": True}
CONFIG = dict(QWEN3_TINY_CONFIG, tie_word_embeddings=False, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, head_dim=32)
RESIDUAL_OUTLIERS = [3, 77]     # embedding columns scaled by RESIDUAL_SCALE
RESIDUAL_SCALE = 100.0
NORM_DAMPING = 30.0             # norm weights of the residual outlier channels divided by this
MLP_OUTLIERS = [5, 130, 200]    # intermediate channels whose gate/up rows are scaled by MLP_SCALE
MLP_SCALE = 4.0
HEAD_GAIN = 8.0                 # spreads the scores over (0, 1): the damped outliers shrink logits


def pairs_256():
    """256 (query, document) pairs: every query against documents of other pairs too."""
    queries = [p["query"] for p in PAIRS]
    docs = [p["document"] for p in PAIRS if p["document"]]
    out = []
    for i in range(256):
        out.append((queries[i % len(queries)], docs[(i * 7 + i // len(queries)) % len(docs)]))
    return out


def spearman(a, b):
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])


@pytest.fixture(scope="module")
def outlier_model(tmp_path_factory):
    if not (qwen3_tokenizer_dir() / "tokenizer.json").is_file():
        pytest.skip(f"Qwen3 tokenizer files not found in {qwen3_tokenizer_dir()}")
    path = tmp_path_factory.mktemp("qwen3-outliers")
    tensors = qwen3_tensors(CONFIG, seed=11)
    tensors["model.embed_tokens.weight"][:, RESIDUAL_OUTLIERS] *= RESIDUAL_SCALE
    for i in range(CONFIG["num_hidden_layers"]):
        for name in ("gate_proj", "up_proj"):
            tensors[f"model.layers.{i}.mlp.{name}.weight"][MLP_OUTLIERS] *= MLP_SCALE
        for name in ("input_layernorm", "post_attention_layernorm"):
            tensors[f"model.layers.{i}.{name}.weight"][RESIDUAL_OUTLIERS] /= NORM_DAMPING
    tensors["model.norm.weight"][RESIDUAL_OUTLIERS] /= NORM_DAMPING
    tensors["lm_head.weight"] *= HEAD_GAIN
    write_tensors(path, tensors)
    (path / "config.json").write_text(__import__("json").dumps(dict(CONFIG, torch_dtype="float32")))
    copy_qwen3_tokenizer(path)
    return path


@pytest.fixture(scope="module")
def float32_scores(outlier_model):
    model = CrossEncoder(outlier_model, hf_overrides=QWEN3_RERANKER, dtype="float32")
    return _score(model)


def _score(model):
    pairs = pairs_256()
    return model.score([q for q, _ in pairs], [d for _, d in pairs])


def test_the_outlier_fixture_has_outliers_and_spread_scores(outlier_model, float32_scores):
    q25, q75 = np.percentile(float32_scores, [25, 75])
    assert q75 - q25 > 0.1, "scores are not spread: the accuracy bounds would mean nothing"
    assert np.mean((float32_scores < 0.01) | (float32_scores > 0.99)) < 0.2


def test_bfloat16_ranks_like_float32_on_256_pairs_with_outlier_channels(outlier_model, float32_scores):
    model = CrossEncoder(outlier_model, hf_overrides=QWEN3_RERANKER, dtype="bfloat16")
    scores = _score(model)
    assert spearman(scores, float32_scores) >= 0.999
    assert np.abs(scores - float32_scores).max() <= 0.02
    # and reduced precision is visible, so the test would see a path that silently ran float32
    assert np.abs(scores - float32_scores).max() > 1e-6


def test_the_fixture_really_has_huge_residual_and_down_proj_input_channels(outlier_model):
    from safetensors.numpy import load_file
    t = load_file(str(outlier_model / "model.safetensors"))
    emb = np.abs(t["model.embed_tokens.weight"])
    assert emb[:, RESIDUAL_OUTLIERS].mean() > 50 * np.delete(emb, RESIDUAL_OUTLIERS, axis=1).mean()
    gate = np.abs(t["model.layers.0.mlp.gate_proj.weight"])
    assert gate[MLP_OUTLIERS].mean() > 3 * np.delete(gate, MLP_OUTLIERS, axis=0).mean()


def test_int8_ranks_like_float32_on_256_pairs_with_outlier_channels(outlier_model, float32_scores):
    model = CrossEncoder(outlier_model, hf_overrides=QWEN3_RERANKER, dtype="int8")
    scores = _score(model)
    assert spearman(scores, float32_scores) >= 0.995
    assert np.abs(scores - float32_scores).max() <= 0.05
    assert np.abs(scores - float32_scores).max() > 1e-6
