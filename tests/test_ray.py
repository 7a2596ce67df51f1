"""crossrank.integrations.ray: Scorer in Ray Data's map_batches on a local two-CPU Ray cluster.

Ray starts once for the module (no dashboard, no usage stats, a small object store), under a
deadline so that a cluster that cannot start fails the test instead of hanging it. Scores from
the workers must equal the scores of the same model run in this process, bit for bit.
"""
import json
import os
import pickle
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")

from _fixtures import fixture_path
from crossrank import CrossEncoder
from crossrank.integrations.ray import Scorer

DATA = Path(__file__).resolve().parent / "data" / "beir-mini"
START_DEADLINE_S = 180
N_PAIRS = 3000


def beir_mini():
    queries = [json.loads(line)["text"] for line in open(DATA / "queries.jsonl", encoding="utf-8")]
    docs = []
    for line in open(DATA / "corpus.jsonl", encoding="utf-8"):
        row = json.loads(line)
        docs.append(f"{row['title']} {row['text']}".strip())
    return queries, docs


def pairs(n):
    """n distinct (query, document) pairs built from the fixture's texts."""
    queries, docs = beir_mini()
    out = []
    for i in range(n):
        doc = docs[(7 * i) % len(docs)]
        out.append((queries[i % len(queries)], f"{doc[: 80 + (i % 200)]} [passage {i}]"))
    return out


@contextmanager
def deadline(seconds, what):
    def expired(signum, frame):
        raise TimeoutError(f"{what} took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def cluster():
    saved = os.environ.get("RAY_USAGE_STATS_ENABLED")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        with deadline(START_DEADLINE_S, "starting the local Ray cluster"):
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                     object_store_memory=256 * 1024 * 1024)
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("RAY_USAGE_STATS_ENABLED", None)
        else:
            os.environ["RAY_USAGE_STATS_ENABLED"] = saved


@pytest.fixture(scope="module")
def model():
    return CrossEncoder(fixture_path("qwen3-tiny"), template="qwen3-reranker", threads=1)


MODEL_KWARGS = {"template": "qwen3-reranker"}


def test_ray_workers_score_like_the_model_in_this_process(cluster, model):
    rows = pairs(N_PAIRS)
    ds = ray.data.from_items([{"id": i, "query": q, "document": d} for i, (q, d) in enumerate(rows)])
    scored = ds.map_batches(
        Scorer,
        fn_constructor_kwargs={"model": str(fixture_path("qwen3-tiny")), "model_kwargs": MODEL_KWARGS},
        compute=ray.data.ActorPoolStrategy(size=2),
        num_cpus=1,
        batch_size=256,
        batch_format="numpy",
    ).take_all()
    assert len(scored) == N_PAIRS
    scored.sort(key=lambda r: r["id"])
    assert [(r["query"], r["document"]) for r in scored] == rows
    got = np.array([r["score"] for r in scored], dtype=np.float32)
    want = model.score([q for q, _ in rows], [d for _, d in rows])
    np.testing.assert_array_equal(got, want)


def test_predict_on_text_columns_with_pandas_batches_and_concurrency(cluster, model):
    rows = pairs(600)
    frame = pd.DataFrame({"a": [q for q, _ in rows], "b": [d for _, d in rows], "id": range(len(rows))})
    parts = [frame.iloc[i:i + 100] for i in range(0, len(frame), 100)]  # six blocks for two workers
    scored = ray.data.from_pandas(parts).map_batches(
        Scorer,
        fn_constructor_kwargs={"model": str(fixture_path("qwen3-tiny")), "model_kwargs": MODEL_KWARGS,
                               "method": "predict", "query_column": "a", "document_column": "b",
                               "score_column": "logit", "activation_fn": "identity"},
        concurrency=2,  # the older spelling of compute=ActorPoolStrategy(size=2)
        batch_size=100,
        batch_format="pandas",
    ).to_pandas().sort_values("id")
    want = model.predict(rows, activation_fn="identity")
    np.testing.assert_array_equal(scored["logit"].to_numpy(dtype=np.float32), want)


def test_a_loaded_model_travels_to_the_workers_when_it_can_be_pickled(cluster, model):
    try:
        pickle.dumps(model)
    except Exception as exc:  # whatever pickle raises for an object it cannot handle
        pytest.skip(f"this CrossEncoder cannot be pickled ({type(exc).__name__}); workers load it from its path")
    rows = pairs(300)
    scored = ray.data.from_items([{"id": i, "query": q, "document": d} for i, (q, d) in enumerate(rows)]).map_batches(
        Scorer, fn_constructor_kwargs={"model": model}, compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1,
        batch_size=50, batch_format="numpy").take_all()
    scored.sort(key=lambda r: r["id"])
    np.testing.assert_array_equal([r["score"] for r in scored], model.score([q for q, _ in rows], [d for _, d in rows]))


# -- the class itself, without a cluster ---------------------------------------------------------


@pytest.fixture(scope="module")
def scorer():
    return Scorer(fixture_path("qwen3-tiny"), model_kwargs={"template": "qwen3-reranker", "threads": 1})


def test_scorer_keeps_the_batch_format_and_leaves_the_input_alone(scorer, model):
    rows = pairs(5)
    queries, docs = [q for q, _ in rows], [d for _, d in rows]
    want = model.score(queries, docs)
    batch = {"query": np.array(queries, dtype=object), "document": np.array(docs, dtype=object)}
    out = scorer(batch)
    assert set(batch) == {"query", "document"} and out["score"].dtype == np.float32
    np.testing.assert_array_equal(out["score"], want)
    frame = pd.DataFrame({"query": queries, "document": docs})
    np.testing.assert_array_equal(scorer(frame)["score"].to_numpy(), want)
    assert list(frame.columns) == ["query", "document"]
    table = scorer(pa.table({"query": queries, "document": docs}))
    np.testing.assert_array_equal(table.column("score").to_numpy(), want)
    empty = scorer({"query": np.array([], dtype=object), "document": np.array([], dtype=object)})
    assert empty["score"].shape == (0,)


def test_scorer_names_a_missing_column_or_a_bad_value(scorer):
    with pytest.raises(KeyError, match=r"no column 'document' \(columns: 'query', 'passage'\); name the text columns"):
        scorer({"query": np.array(["q"], dtype=object), "passage": np.array(["p"], dtype=object)})
    with pytest.raises(TypeError, match=r"column 'document', row 1: expected a string, found NoneType"):
        scorer({"query": np.array(["q", "q"], dtype=object), "document": np.array(["p", None], dtype=object)})


def test_scorer_refuses_bad_options():
    with pytest.raises(ValueError, match="method"):
        Scorer("unused", method="rank")
    with pytest.raises(ValueError, match="instruction"):
        Scorer("unused", method="predict", instruction="Find answers")
    with pytest.raises(TypeError, match="model must be"):
        Scorer(42)
