"""rank_many / score_many: several queries, each with its own documents, scored in one batched
run. The results must be those of rank / score per query, while every pair goes through a single
forward_ids call whose passes span queries and each query's prompt prefix runs once."""
import json
import math

import numpy as np
import pytest

import crossrank.model
from _fixtures import fixture_path
from crossrank import CrossEncoder
from crossrank.chunking import Chunking
from crossrank.model import shared_prefix_groups

OVERRIDES = {"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["no", "yes"],
             "is_original_qwen3_reranker": True}
EXACT = 1e-6


@pytest.fixture(scope="module")
def golden_docs():
    golden = json.loads((fixture_path("qwen3-tiny") / "golden.json").read_text(encoding="utf-8"))
    return [p["document"] for p in golden["pairs"]]


@pytest.fixture(scope="module")
def workload(golden_docs):
    """Queries with 7, 12, 0, 5, 1 and 10 documents (empty and multi-thousand-character ones
    among them); "volcano" twice, with different documents."""
    d = golden_docs
    queries = ["How does TCP slow start work?", "volcano", "What makes bread rise?", "volcano",
               "Why is the sky blue?", "capital of France"]
    documents = [d[0:7], d[7:19], [], d[19:24], d[24:25], d[25:35]]
    return queries, documents


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def any_dtype_model(request):
    return CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=OVERRIDES, dtype=request.param, threads=2)


@pytest.fixture(scope="module")
def model():
    return CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=OVERRIDES, dtype="float32", threads=2)


class RecordingEngine:
    """Stands in for the C engine and records what it is asked to run."""

    def __init__(self, engine):
        self._engine = engine
        self.prefix_lengths = []  # tokens of each prefix built
        self.passes = []  # per forward pass: (sequences, tokens run, prefix handles used)

    def build_prefix(self, ids, **kwargs):
        self.prefix_lengths.append(len(ids))
        return self._engine.build_prefix(ids, **kwargs)

    def forward(self, flat, positions, seq_start, **kwargs):
        handles = {id(h) for h in kwargs.get("prefixes") or [] if h is not None}
        self.passes.append((len(seq_start) - 1, len(flat), len(handles)))
        return self._engine.forward(flat, positions, seq_start, **kwargs)

    def __getattr__(self, name):
        return getattr(self._engine, name)


@pytest.fixture
def recorded(model, monkeypatch):
    """The model with its engine recorded and its forward_ids calls counted."""
    engine = RecordingEngine(model.engine.core)
    monkeypatch.setattr(model.engine, "core", engine)
    calls = []
    forward_ids = model.forward_ids

    def counting_forward_ids(*args, **kwargs):
        calls.append(len(args[0]))
        return forward_ids(*args, **kwargs)

    monkeypatch.setattr(model, "forward_ids", counting_forward_ids)
    return engine, calls


def assert_same_ranking(got, expected):
    assert [r["corpus_id"] for r in got] == [r["corpus_id"] for r in expected]
    np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in expected], atol=EXACT, rtol=0)


# -- same results as one query at a time ---------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 3, 8, 64])
def test_rank_many_equals_rank_per_query(any_dtype_model, workload, batch_size):
    queries, documents = workload
    many = any_dtype_model.rank_many(queries, documents, batch_size=batch_size)
    assert len(many) == len(queries)
    for query, docs, got in zip(queries, documents, many):
        assert_same_ranking(got, any_dtype_model.rank(query, docs, batch_size=batch_size))


@pytest.mark.parametrize("activation_fn", [None, "identity"])
def test_score_many_equals_score_per_query(any_dtype_model, workload, activation_fn):
    queries, documents = workload
    many = any_dtype_model.score_many(queries, documents, batch_size=5, activation_fn=activation_fn)
    assert len(many) == len(queries)
    for query, docs, got in zip(queries, documents, many):
        alone = any_dtype_model.score(query, docs, activation_fn=activation_fn)
        assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (len(docs),)
        np.testing.assert_allclose(got, alone, atol=EXACT, rtol=0)


def test_ties_keep_the_document_order(model):
    docs = ["Lava is molten rock.", "Bread rises because yeast makes gas.", "Lava is molten rock.",
            "Lava is molten rock."]
    many = model.rank_many(["volcano", "bread"], [docs, docs[::-1]])
    for query, ds, got in zip(["volcano", "bread"], [docs, docs[::-1]], many):
        assert_same_ranking(got, model.rank(query, ds))
        lava = [r["corpus_id"] for r in got if ds[r["corpus_id"]] == "Lava is molten rock."]
        assert lava == sorted(lava) and len(lava) == 3
        assert len({r["score"] for r in got if r["corpus_id"] in lava}) == 1


def test_long_documents_are_chunked_as_rank_chunks_them(model, workload):
    queries, documents = workload
    plan = Chunking(size=40, aggregate="max")  # default overlap: short documents stay whole
    many = model.rank_many(queries, documents, chunking=plan, batch_size=16)
    for query, docs, got in zip(queries, documents, many):
        assert_same_ranking(got, model.rank(query, docs, chunking=plan))
    first = model.score_many(queries, documents, chunking="first")
    for query, docs, got in zip(queries, documents, first):
        np.testing.assert_allclose(got, model.score(query, docs, chunking="first"), atol=EXACT, rtol=0)


# -- options -------------------------------------------------------------------------------------


def test_top_k_applies_per_query(model, workload):
    queries, documents = workload
    full = model.rank_many(queries, documents)
    top = model.rank_many(queries, documents, top_k=3)
    for docs, got, all_ranked in zip(documents, top, full):
        assert len(got) == min(3, len(docs))
        assert got == all_ranked[:3]
    # sentence-transformers' slicing (results[:top_k]) for any integer
    assert model.rank_many(queries, documents, top_k=0) == [[] for _ in queries]
    assert model.rank_many(queries, documents, top_k=np.int64(-1)) == [ranked[:-1] for ranked in full]
    for bad in (True, 2.0, "3"):
        with pytest.raises(ValueError, match="top_k must be an integer or None"):
            model.rank_many(queries, documents, top_k=bad)


def test_return_documents_adds_each_query_s_texts(model, workload):
    queries, documents = workload
    with_text = model.rank_many(queries, documents, return_documents=True)
    without = model.rank_many(queries, documents)
    for docs, got, bare in zip(documents, with_text, without):
        assert all(set(r) == {"corpus_id", "score", "text"} for r in got)
        assert all(r["text"] == docs[r["corpus_id"]] for r in got)
        assert all(set(r) == {"corpus_id", "score"} for r in bare)
        assert [{k: r[k] for k in ("corpus_id", "score")} for r in got] == bare


def test_a_query_without_documents_gets_an_empty_result(model):
    got = model.rank_many(["volcano", "bread", "sky"], [[], ["Yeast makes gas."], []])
    assert got[0] == [] and got[2] == [] and [r["corpus_id"] for r in got[1]] == [0]
    assert model.rank_many(["volcano", "bread"], [[], ()]) == [[], []]
    assert model.rank_many([], []) == []
    assert model.score_many([], []) == []
    scores = model.score_many(["volcano"], [[]])
    assert len(scores) == 1 and scores[0].shape == (0,) and scores[0].dtype == np.float32


@pytest.mark.parametrize("how", [dict(instruction="Judge whether the document mentions lava"),
                                 dict(prompt="Judge whether the document mentions lava")])
def test_an_instruction_applies_to_every_query(model, workload, how):
    queries, documents = workload
    many = model.rank_many(queries, documents, **how)
    plain = model.rank_many(queries, documents)
    for query, docs, got in zip(queries, documents, many):
        assert_same_ranking(got, model.rank(query, docs, **how))
    assert [r["score"] for r in many[1]] != [r["score"] for r in plain[1]]
    scores = model.score_many(queries, documents, how.get("instruction"), prompt=how.get("prompt"))
    for query, docs, got in zip(queries, documents, scores):
        np.testing.assert_allclose(got, model.score(query, docs, **how), atol=EXACT, rtol=0)


def test_any_iterables_are_taken_and_read_once(model, workload):
    """Generators, tuples and NumPy arrays at both levels, as rank/score take them for documents."""
    queries, documents = workload
    want = model.rank_many(queries, documents, return_documents=True)
    got = model.rank_many((q for q in queries), (iter(d) for d in documents), return_documents=True)
    assert got == want
    arrays = model.score_many(np.array(queries), tuple(np.array(d, dtype=object) for d in documents))
    for a, b in zip(arrays, model.score_many(queries, documents)):
        np.testing.assert_array_equal(a, b)


def test_instruction_and_prompt_together_are_refused(model):
    with pytest.raises(ValueError, match="not both"):
        model.rank_many(["q"], [["d"]], instruction="a", prompt="b")


# -- bad input -----------------------------------------------------------------------------------


def test_a_length_mismatch_is_refused_with_both_counts(model):
    with pytest.raises(ValueError, match="got 2 queries and 3 document lists"):
        model.rank_many(["a", "b"], [["x"], ["y"], ["z"]])
    with pytest.raises(ValueError, match="got 2 queries and 1 document lists"):
        model.score_many(["a", "b"], [["x"]])


@pytest.mark.parametrize("queries, documents, message", [
    ("volcano", [["lava"]], "queries must be a list of str"),
    (["a", 3], [["x"], ["y"]], "query 1 must be a str, got int"),
    (["a", None], [["x"], ["y"]], "query 1 must be a str, got NoneType"),
    (["a", "b"], "xy", "documents_per_query must be a list"),
    (["a", "b"], [["x"], "y"], "the documents of query 1 must be a list of str, got str"),
    (["a", "b"], [["x"], None], "the documents of query 1 must be a list of str, got NoneType"),
    (["a", "b"], [["x"], ["y", b"z"]], "document 1 of query 1 must be a str, got bytes"),
])
def test_non_str_entries_are_refused_naming_the_index(model, queries, documents, message):
    with pytest.raises(TypeError, match=message):
        model.rank_many(queries, documents)
    with pytest.raises(TypeError, match=message):
        model.score_many(queries, documents)


def test_invalid_unicode_names_query_and_document(model):
    with pytest.raises(ValueError, match="document 0 of query 1 is not valid Unicode"):
        model.rank_many(["a", "b"], [["x"], ["bad \ud800"]])
    with pytest.raises(ValueError, match="query 0 is not valid Unicode"):
        model.rank_many(["bad \udfff"], [["x"]])


def test_an_activation_with_several_columns_is_refused(model):
    with pytest.raises(ValueError, match=r"rank_many\(\) needs one score per document"):
        model.rank_many(["a"], [["x", "y"]], activation_fn=lambda x: np.hstack([x, x]))


# -- one batched run -----------------------------------------------------------------------------


def test_all_pairs_go_through_one_forward_ids_call(model, workload, recorded):
    engine, calls = recorded
    queries, documents = workload
    model.rank_many(queries, documents, batch_size=8)
    assert calls == [sum(len(d) for d in documents)]
    calls.clear()
    model.score_many(queries, documents, batch_size=8)
    assert calls == [sum(len(d) for d in documents)]


def test_each_query_s_prefix_runs_once_and_passes_span_queries(model, workload, recorded):
    engine, _ = recorded
    queries, documents = workload
    for query, docs in zip(queries, documents):
        model.rank(query, docs, batch_size=8)
    alone_prefixes, alone_passes = sorted(engine.prefix_lengths), list(engine.passes)
    engine.prefix_lengths.clear()
    engine.passes.clear()

    model.rank_many(queries, documents, batch_size=8)
    # One prefix per query with two or more documents (the repeated "volcano" builds its own),
    # the same prefixes rank builds: the same tokens run, in fewer passes.
    assert len(engine.prefix_lengths) == sum(len(d) >= 2 for d in documents) == 4
    assert sorted(engine.prefix_lengths) == alone_prefixes
    assert sum(t for _, t, _ in engine.passes) == sum(t for _, t, _ in alone_passes)
    n_pairs = sum(len(d) for d in documents)
    assert [n for n, _, _ in engine.passes] == [8, 8, 8, 8, 3] and sum(n for n, _, _ in engine.passes) == n_pairs
    assert len(engine.passes) < len(alone_passes)
    assert any(groups >= 2 for _, _, groups in engine.passes)  # a pass holds documents of two queries

    # Each query's shared prefix ran once, in build_prefix, and no pass ran it again.
    prompt_tokens, saved, built = 0, 0, 0
    for query, docs in zip(queries, documents):
        seqs = [np.asarray(ids) for ids in model.tokenize(query, docs).input_ids]
        prompt_tokens += sum(len(s) for s in seqs)
        for members, shared in shared_prefix_groups(seqs, [query] * len(seqs)):
            saved += shared * len(members)
            built += shared
    assert saved > 0 and sum(engine.prefix_lengths) == built
    assert sum(t for _, t, _ in engine.passes) == prompt_tokens - saved


@pytest.mark.parametrize("batch_size", [1, 2, 4, 5, 9, 10, 11, 100])
def test_batch_size_boundaries(model, recorded, batch_size):
    """Passes of exactly batch_size pairs (the last one holds the rest), whichever query their
    pairs belong to, and the same scores at every size."""
    engine, _ = recorded
    queries = ["volcano", "bread", "sky"]
    documents = [["Lava is molten rock.", "Ash clouds ground planes.", "Tea is a drink."],
                 ["Yeast makes gas.", "Sourdough uses wild yeast.", "Granite is hard.", "Flour and water."],
                 ["Rayleigh scattering.", "Oceans look blue too.", "Sunsets are red."]]
    n_pairs = 10
    got = model.score_many(queries, documents, batch_size=batch_size)
    sizes = [n for n, _, _ in engine.passes]
    assert len(sizes) == math.ceil(n_pairs / batch_size)
    assert sizes == [batch_size] * (n_pairs // batch_size) + ([n_pairs % batch_size] if n_pairs % batch_size else [])
    for query, docs, scores in zip(queries, documents, got):
        np.testing.assert_allclose(scores, model.score(query, docs, batch_size=1), atol=EXACT, rtol=0)


def test_the_token_budget_splits_passes_across_queries(model, workload, recorded, monkeypatch):
    engine, _ = recorded
    queries, documents = workload
    expected = [model.score(q, d) for q, d in zip(queries, documents)]
    engine.passes.clear()
    budget = 600
    monkeypatch.setattr(model.engine, "token_budget", budget)
    got = model.score_many(queries, documents, batch_size=64)
    assert len(engine.passes) > 2
    # A pass exceeds the budget only when it holds a single (long) sequence.
    assert all(tokens <= budget or n == 1 for n, tokens, _ in engine.passes)
    assert any(groups >= 2 for _, _, groups in engine.passes)
    for scores, alone in zip(got, expected):
        np.testing.assert_allclose(scores, alone, atol=EXACT, rtol=0)
