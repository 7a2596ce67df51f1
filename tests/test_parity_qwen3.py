"""Qwen3-Reranker parity: crossrank against the official recipe run in transformers.

The golden ids and scores come from the reference stage (tests/reference/make_fixtures.py, run in
a subprocess); this file imports no torch, so it also runs under sanitizers.
"""
import json

import numpy as np
import pytest

from _fixtures import fixture_path
from crossrank import CrossEncoder

VLLM_OVERRIDES = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}
PARITY_ATOL = 1e-4


def load(name, **kwargs):
    path = fixture_path(name)
    golden = json.loads((path / "golden.json").read_text(encoding="utf-8"))
    kwargs.setdefault("dtype", "float32")  # the reference path: golden scores are float32
    return CrossEncoder(path, hf_overrides=VLLM_OVERRIDES, **kwargs), golden


def groups_by_instruction(pairs):
    """Indices of the golden pairs, grouped by instruction (one score() call per group)."""
    groups = {}
    for i, p in enumerate(pairs):
        groups.setdefault(p.get("instruction"), []).append(i)
    return groups


def score_like_golden(model, golden, section=None, **kwargs):
    data = golden if section is None else golden[section]
    pairs = data["pairs"]
    ids = [None] * len(pairs)
    scores = np.zeros(len(pairs))
    raw = np.zeros(len(pairs))
    for instruction, idx in groups_by_instruction(pairs).items():
        queries = [pairs[i]["query"] for i in idx]
        docs = [pairs[i]["document"] for i in idx]
        enc = model.tokenize(queries, docs, instruction)
        for k, i in enumerate(idx):
            ids[i] = enc.input_ids[k]
        scores[idx] = model.score(queries, docs, instruction, **kwargs)
        raw[idx] = model.score(queries, docs, instruction, activation_fn="identity", **kwargs)
    return ids, scores, raw


def assert_spread(scores):
    scores = np.asarray(scores)
    q25, q75 = np.percentile(scores, [25, 75])
    assert q75 - q25 > 0.2, f"scores are not spread: IQR {q75 - q25:.3f}"
    assert np.mean((scores < 0.01) | (scores > 0.99)) < 0.10, "too many saturated scores"


@pytest.mark.parametrize("name", ["qwen3-tiny", "qwen3-tiny-tied", "qwen3-tiny-bf16"])
def test_official_recipe_ids_and_scores_match_transformers(name):
    model, golden = load(name)
    assert len(golden["pairs"]) >= 32
    ids, scores, raw = score_like_golden(model, golden)
    assert ids == golden["input_ids"]
    np.testing.assert_allclose(scores, golden["scores"], atol=PARITY_ATOL, rtol=0)
    np.testing.assert_allclose(raw, golden["logits"], atol=PARITY_ATOL, rtol=0)
    assert_spread(scores)


def test_all_pairs_scored_in_one_call_match_transformers():
    model, golden = load("qwen3-tiny")
    default = [i for i, p in enumerate(golden["pairs"]) if p.get("instruction") is None]
    queries = [golden["pairs"][i]["query"] for i in default]
    docs = [golden["pairs"][i]["document"] for i in default]
    scores = model.score(queries, docs)
    np.testing.assert_allclose(scores, np.asarray(golden["scores"])[default], atol=PARITY_ATOL, rtol=0)


@pytest.mark.parametrize("name", ["qwen3-tiny-sharded", "qwen3-tiny-legacy"])
def test_sharded_and_legacy_key_checkpoints_score_like_the_f32_file(name):
    model, golden = load(name)
    _, scores, _ = score_like_golden(model, golden)
    base = json.loads((fixture_path("qwen3-tiny") / "golden.json").read_text(encoding="utf-8"))
    np.testing.assert_allclose(scores, base["scores"], atol=PARITY_ATOL, rtol=0)


def test_bf16_checkpoint_scores_within_bf16_tolerance_of_f32():
    model, _ = load("qwen3-tiny-bf16")
    _, golden = load("qwen3-tiny")
    _, scores, _ = score_like_golden(model, golden)
    np.testing.assert_allclose(scores, golden["scores"], atol=0.03, rtol=0)


def test_truncation_cuts_the_document_like_the_official_recipe():
    model, golden = load("qwen3-tiny", max_length=golden_max_length("qwen3-tiny"))
    section = golden["truncation"]
    ids, scores, raw = score_like_golden(model, golden, section="truncation")
    assert ids == section["input_ids"]
    assert all(len(x) <= section["max_length"] for x in ids)
    np.testing.assert_allclose(scores, section["scores"], atol=PARITY_ATOL, rtol=0)
    enc = model.tokenize(section["pairs"][0]["query"], [section["pairs"][0]["document"]],
                         section["pairs"][0].get("instruction"))
    assert enc.truncated == [True]


def golden_max_length(name):
    golden = json.loads((fixture_path(name) / "golden.json").read_text(encoding="utf-8"))
    return golden["truncation"]["max_length"]


def test_predict_on_vllm_request_form_matches_template_ids_and_scores():
    model, golden = load("qwen3-tiny")
    template = model.template
    pairs, expected_ids = [], []
    for i, p in enumerate(golden["pairs"]):
        pairs.append(template.request_texts(p["query"], p["document"], p.get("instruction")))
        expected_ids.append(golden["joined_input_ids"][i])
    assert model.tokenize_pairs(pairs).input_ids == expected_ids
    assert golden["joined_input_ids"] == golden["input_ids"]
    scores = model.predict(pairs)
    np.testing.assert_allclose(scores, golden["scores"], atol=PARITY_ATOL, rtol=0)
    single = model.predict(pairs[0])
    assert np.ndim(single) == 0
    assert abs(float(single) - golden["scores"][0]) <= PARITY_ATOL


@pytest.mark.slow
def test_real_qwen3_reranker_0_6b_shape_matches_transformers():
    model, golden = load("qwen3-0.6b")
    assert len(golden["pairs"]) >= 32
    ids, scores, raw = score_like_golden(model, golden)
    assert ids == golden["input_ids"]
    assert max(len(x) for x in ids) > 500 and min(len(x) for x in ids) < 100
    np.testing.assert_allclose(scores, golden["scores"], atol=PARITY_ATOL, rtol=0)
    np.testing.assert_allclose(raw, golden["logits"], atol=PARITY_ATOL * 10, rtol=0)
    assert_spread(scores)
