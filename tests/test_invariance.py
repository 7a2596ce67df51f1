"""Scores do not depend on batch size, order of pairs, thread count or prefix reuse.

crossrank's kernels give every output a fixed reduction order, so raw logits are held to 1e-6
(in practice they are bitwise equal).
"""
import json
import threading

import numpy as np
import pytest

from _fixtures import fixture_path
from crossrank import CrossEncoder
from crossrank import _core

OVERRIDES = {"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["no", "yes"],
             "is_original_qwen3_reranker": True}
EXACT = 1e-6


def assert_same_logits(got, expected):
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(expected, np.float64), atol=EXACT, rtol=0)


@pytest.fixture(scope="module")
def golden():
    return json.loads((fixture_path("qwen3-tiny") / "golden.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def model():
    return CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=OVERRIDES, threads=2)


def pairs_of(golden):
    return [p["query"] for p in golden["pairs"]], [p["document"] for p in golden["pairs"]]


def test_batch_size_does_not_change_scores(model, golden):
    queries, docs = pairs_of(golden)
    reference = model.score(queries, docs, batch_size=1)
    raw = model.score(queries, docs, activation_fn="identity", batch_size=1)
    for batch_size in (2, 7, 32, 1000):
        np.testing.assert_allclose(model.score(queries, docs, batch_size=batch_size), reference, atol=EXACT, rtol=0)
        assert_same_logits(model.score(queries, docs, activation_fn="identity", batch_size=batch_size), raw)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_a_short_batch_after_a_long_one_scores_as_on_a_fresh_model(golden, dtype):
    # A model keeps its last pass's buffers for the next call: nothing a long batch left in them
    # may reach the scores of a shorter one.
    queries, docs = pairs_of(golden)
    fresh = CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=OVERRIDES, threads=2, dtype=dtype)
    expected = np.asarray(fresh.score(queries[:1], docs[:1], activation_fn="identity"), np.float32)
    used = CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=OVERRIDES, threads=2, dtype=dtype)
    used.score(queries, docs, batch_size=1000)
    got = np.asarray(used.score(queries[:1], docs[:1], activation_fn="identity"), np.float32)
    assert got.tobytes() == expected.tobytes()


def test_order_of_pairs_does_not_change_scores(model, golden):
    queries, docs = pairs_of(golden)
    reference = model.score(queries, docs)
    perm = np.random.default_rng(0).permutation(len(docs))
    got = model.score([queries[i] for i in perm], [docs[i] for i in perm])
    np.testing.assert_allclose(got, reference[perm], atol=EXACT, rtol=0)


def test_thread_count_does_not_change_scores(golden):
    queries, docs = pairs_of(golden)
    one = CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=OVERRIDES, threads=1)
    two = CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=OVERRIDES, threads=2)
    three = CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=OVERRIDES, threads=3)
    a = one.score(queries, docs)
    np.testing.assert_allclose(two.score(queries, docs), a, atol=EXACT, rtol=0)
    np.testing.assert_allclose(three.score(queries, docs), a, atol=EXACT, rtol=0)
    assert_same_logits(two.score(queries, docs, activation_fn="identity"),
                       one.score(queries, docs, activation_fn="identity"))


def test_prefix_handle_gives_the_scores_of_full_sequences(model, golden):
    """Sequences that continue a prefix's K/V score like the whole sequences run alone."""
    queries, docs = pairs_of(golden)
    enc = model.tokenize(queries[0], docs[:6])
    seqs = [np.asarray(ids, dtype=np.int32) for ids in enc.input_ids]
    # the longest common prefix of these prompts: system prompt, instruction and query
    n = min(len(s) for s in seqs) - 1
    while n > 0 and any((s[:n] != seqs[0][:n]).any() for s in seqs):
        n -= 1
    assert n > 10
    engine = model.engine.core
    prefix = engine.build_prefix(seqs[0][:n])
    assert prefix.length == n
    tails = [s[n:] for s in seqs]
    tokens = np.concatenate(tails)
    positions = np.concatenate([np.arange(n, n + len(t), dtype=np.int32) for t in tails])
    starts = np.concatenate([[0], np.cumsum([len(t) for t in tails])]).astype(np.int64)
    with_prefix = engine.forward(tokens, positions, starts, prefixes=[prefix] * len(tails),
                                 prefix_lens=np.full(len(tails), n, dtype=np.int64))
    without = model.forward_ids(enc.input_ids)
    assert_same_logits(with_prefix, without)


def test_concurrent_calls_from_threads_give_serial_scores(model, golden):
    queries, docs = pairs_of(golden)
    expected = model.score(queries, docs, activation_fn="identity")
    results, errors = {}, []

    def work(k):
        try:
            results[k] = model.score(queries, docs, activation_fn="identity")
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got in results.values():
        np.testing.assert_allclose(got, expected, atol=EXACT, rtol=0)


def test_prefix_from_another_model_is_refused(model):
    other = CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=OVERRIDES, threads=1)
    prefix = other.engine.core.build_prefix(np.arange(5, dtype=np.int32))
    with pytest.raises(ValueError, match="built by this model"):
        model.engine.core.forward(np.array([1, 2], dtype=np.int32), np.array([5, 6], dtype=np.int32),
                              np.array([0, 2], dtype=np.int64), prefixes=[prefix])
    assert isinstance(_core.cpu_info()["isa"], str)
