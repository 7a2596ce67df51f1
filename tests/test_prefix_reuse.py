"""Shared-prefix reuse: the documents of one query (and pairs with the same text_1) run their
common leading tokens once. The scores must be those of the full sequences, whatever the pass
boundaries, thread counts and dtypes."""
import json

import numpy as np
import pytest

from _fixtures import fixture_path
from crossrank import CrossEncoder
from crossrank.passes import _MIN_SHARED_PREFIX, shared_prefix_groups

QWEN3_RERANKER = {"architectures": ["Qwen3ForSequenceClassification"],
                  "classifier_from_token": ["no", "yes"], "is_original_qwen3_reranker": True}


@pytest.fixture(scope="module")
def golden():
    return json.loads((fixture_path("qwen3-tiny") / "golden.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def model(request):
    return CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=QWEN3_RERANKER, dtype=request.param, threads=2)


def documents(golden):
    return [p["document"] for p in golden["pairs"]]


@pytest.mark.parametrize("batch_size", [1, 3, 7, 64])
def test_score_with_reuse_equals_the_full_sequences(model, golden, batch_size):
    docs = documents(golden)
    query = "How does TCP slow start work?"
    ids = model.tokenize(query, docs).input_ids
    full = model.activate(model.forward_ids(ids, batch_size=batch_size), defaults="vllm")
    reused = model.score(query, docs, batch_size=batch_size)
    np.testing.assert_allclose(reused, full, rtol=0, atol=1e-6)


def test_score_with_several_queries_groups_each_query(model, golden):
    pairs = golden["pairs"]
    queries = [p["query"] for p in pairs] * 2
    docs = documents(golden) + documents(golden)[::-1]
    ids = model.tokenize(queries, docs).input_ids
    full = model.activate(model.forward_ids(ids), defaults="vllm")
    np.testing.assert_allclose(model.score(queries, docs, batch_size=5), full, rtol=0, atol=1e-6)


def test_predict_with_a_shared_text_1_equals_the_full_sequences(model, golden):
    docs = [d for d in documents(golden) if d]
    pairs = [("what is the capital of France?", d) for d in docs]
    ids = model.tokenize_pairs(pairs).input_ids
    full = model.activate(model.forward_ids(ids), defaults="vllm")
    np.testing.assert_allclose(model.predict(pairs, batch_size=4), full, rtol=0, atol=1e-6)


def test_reuse_does_not_depend_on_threads(golden):
    docs = documents(golden)
    scores = [CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=QWEN3_RERANKER, dtype="float32",
                           threads=t).score("volcano", docs, batch_size=6) for t in (1, 2)]
    np.testing.assert_array_equal(scores[0], scores[1])


def test_groups_share_the_common_prefix_minus_one_token_of_the_shortest():
    a = np.array([1, 2, 3, 4, 5, 6, 7, 8])
    b = np.array([1, 2, 3, 4, 5, 6, 9])
    c = np.array([1, 2, 3, 4, 5, 6])
    groups = shared_prefix_groups([a, b, c], ["q", "q", "q"])
    assert groups == [([0, 1, 2], 5)]  # c needs its last token: 6 - 1
    assert shared_prefix_groups([a, b], ["q", "r"]) == []
    assert shared_prefix_groups([a, b], None) == []
    assert shared_prefix_groups([a, b, c], [None, None, None]) == []


def test_groups_need_a_worthwhile_common_prefix():
    short = np.arange(_MIN_SHARED_PREFIX - 1)
    a = np.concatenate([short, [100, 101]])
    b = np.concatenate([short, [200, 201]])
    assert shared_prefix_groups([a, b], ["q", "q"]) == []
    one = np.array([5])
    assert shared_prefix_groups([one, one], ["q", "q"]) == []


def test_share_keys_of_the_wrong_length_are_refused(model):
    with pytest.raises(ValueError, match="share_keys has 1 entries for 2 sequences"):
        model.forward_ids([[1, 2, 3], [1, 2, 4]], share_keys=["q"])


def test_identical_documents_reuse_all_but_the_last_token(model):
    ids = model.tokenize("volcano", ["lava and ash"] * 3).input_ids
    full = model.forward_ids(ids)
    reused = model.forward_ids(ids, share_keys=["v"] * 3)
    np.testing.assert_allclose(reused, full, rtol=0, atol=1e-6)
