"""crossrank.evaluation and `crossrank eval`: BEIR loading, BM25 first stage, metrics, records, errors."""
import json
import logging
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("bm25s")
pytest.importorskip("ir_measures")

from _fixtures import fixture_path
from crossrank import CrossEncoder, cli
from crossrank.evaluation import METRICS, Dataset, DatasetError, evaluate, load_dataset

DATA = Path(__file__).resolve().parent / "data" / "beir-mini"


@pytest.fixture(scope="module")
def model():
    return CrossEncoder(fixture_path("qwen3-tiny"), template="qwen3-reranker", threads=1)


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(DATA)


@pytest.fixture(scope="module")
def result(model, dataset):
    return evaluate(model, dataset, show_progress_bar=False)


def copy_data(tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(DATA, dst)
    return dst


class OracleModel:
    """Scores each document by its qrels grade: a perfect reranker, to check the metric plumbing."""

    model_name_or_path = "oracle"

    def __init__(self, dataset: Dataset) -> None:
        self.grades = {(dataset.queries[q], dataset.document_text(d)): g
                       for q, judged in dataset.qrels.items() for d, g in judged.items()}

    def tokenize(self, query, documents, instruction=None):
        return SimpleNamespace(num_tokens=[len(d.split()) for d in documents], truncated=[False] * len(documents))

    def score(self, query, documents, instruction=None, **options):
        return np.array([self.grades.get((query, d), 0) for d in documents], dtype=np.float32)


class ConstantModel(OracleModel):
    def score(self, query, documents, instruction=None, **options):
        return np.full(len(documents), 0.5, dtype=np.float32)


def hand_metrics(ranking, judged):
    """trec_eval's ndcg_cut_10 (linear gains), recip_rank cut at 10, recall_100."""
    grades = [judged.get(d, 0) for d in ranking]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(grades[:10]))
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:10]))
    rr = next((1.0 / (i + 1) for i, g in enumerate(grades[:10]) if g >= 1), 0.0)
    n_rel = sum(1 for g in judged.values() if g >= 1)
    recall = sum(1 for g in grades[:100] if g >= 1) / n_rel
    return {"nDCG@10": dcg / idcg, "MRR@10": rr, "Recall@100": recall}


# -- dataset -------------------------------------------------------------------------------------


def test_the_shipped_fixture_loads_in_beir_layout(dataset):
    assert len(dataset.corpus) == 34 and len(dataset.queries) == 9
    assert dataset.qrels_file == DATA / "qrels" / "test.tsv"
    assert dataset.evaluated_queries == [f"q{i}" for i in range(1, 9)]  # q9 has no judgments
    assert dataset.qrels["q1"] == {"vacc-01": 2, "vacc-02": 1, "vacc-05": 1, "vacc-03": 0, "vacc-04": 0}
    title, text = dataset.corpus["sky-01"]
    assert dataset.document_text("sky-01") == f"{title} {text}"
    assert dataset.document_text("sol-04") == dataset.corpus["sol-04"][1]  # empty title: no leading space


def test_top_level_qrels_and_trec_qrels_read_the_same(tmp_path, dataset):
    root = copy_data(tmp_path)
    beir = (root / "qrels" / "test.tsv").read_text()
    shutil.rmtree(root / "qrels")
    (root / "qrels.tsv").write_text(beir)
    assert load_dataset(root).qrels == dataset.qrels
    rows = [line.split("\t") for line in beir.splitlines()[1:]]
    (root / "qrels.tsv").write_text("".join(f"{q} 0 {d} {g}\n" for q, d, g in rows))
    assert load_dataset(root).qrels == dataset.qrels


def test_a_headerless_beir_qrels_file_keeps_its_first_judgment(tmp_path):
    root = copy_data(tmp_path)
    path = root / "qrels" / "test.tsv"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[1:]))
    assert load_dataset(root).qrels["q1"]["vacc-01"] == 2


@pytest.mark.parametrize("name", ["corpus.jsonl", "queries.jsonl"])
def test_a_missing_file_is_named(tmp_path, name):
    root = copy_data(tmp_path)
    (root / name).unlink()
    with pytest.raises(FileNotFoundError, match=name):
        load_dataset(root)


def test_a_missing_split_lists_the_splits_there_are(tmp_path):
    root = copy_data(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"qrels/ holds the splits test: pass split="):
        load_dataset(root, split="dev")


@pytest.mark.parametrize("file,line_no,bad,message", [
    ("corpus.jsonl", 5, '{"_id": "x", "text": "unterminated}', r"corpus.jsonl:5: not valid JSON"),
    ("corpus.jsonl", 3, '["a", "list"]', r"corpus.jsonl:3: expected a JSON object, found list"),
    ("corpus.jsonl", 2, '{"title": "no id", "text": "t"}', r'corpus.jsonl:2: "_id" is missing'),
    ("corpus.jsonl", 4, '{"_id": "nt", "title": "no text"}', r'corpus.jsonl:4: "text" is missing'),
    ("corpus.jsonl", 6, '{"_id": "vacc-01", "text": "again"}',
     r"corpus.jsonl:6: duplicate _id 'vacc-01' \(first on line 1\)"),
    ("queries.jsonl", 2, '{"_id": "q2", "text": 7}', r'queries.jsonl:2: "text" must be a string, not int'),
])
def test_malformed_jsonl_names_file_and_line(tmp_path, file, line_no, bad, message):
    root = copy_data(tmp_path)
    lines = (root / file).read_text().splitlines()
    lines[line_no - 1] = bad
    (root / file).write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=message):
        load_dataset(root)


@pytest.mark.parametrize("row,message", [
    ("q1\tno-such-doc\t1", r"test.tsv:32: corpus-id 'no-such-doc' is not in corpus.jsonl .*fix the ids"),
    ("q77\tvacc-01\t1", r"test.tsv:32: query-id 'q77' is not in queries.jsonl"),
    ("q1\tsky-01\thigh", r"test.tsv:32: the relevance grade must be an integer, found 'high'"),
    ("q1\tsky-01", r"test.tsv:32: expected 3 tab-separated fields"),
    ("q1\tvacc-01\t1", r"test.tsv:32: query 'q1' judges 'vacc-01' a second time \(first on line 2\)"),
])
def test_bad_qrels_rows_name_file_and_line(tmp_path, row, message):
    root = copy_data(tmp_path)
    path = root / "qrels" / "test.tsv"
    path.write_text(path.read_text() + row + "\n")
    with pytest.raises(DatasetError, match=message):
        load_dataset(root)


def test_a_qrels_file_in_no_known_format_is_refused(tmp_path):
    root = copy_data(tmp_path)
    (root / "qrels" / "test.tsv").write_text("query-id corpus-id score\nq1 vacc-01 2\n")
    with pytest.raises(DatasetError, match=r"test.tsv:1: not a qrels line"):
        load_dataset(root)


# -- first stage ---------------------------------------------------------------------------------


def test_bm25_scores_are_lucene_bm25_over_title_and_text(result, dataset):
    import bm25s
    import Stemmer

    tokenizer = bm25s.tokenization.Tokenizer(stopwords="en", stemmer=Stemmer.Stemmer("english"))
    ids = list(dataset.corpus)
    docs = [[t for t in d if t] for d in tokenizer.tokenize([dataset.document_text(i) for i in ids],
                                                            return_as="string", show_progress=False)]
    n, avgdl = len(docs), sum(map(len, docs)) / len(docs)
    k1, b = 1.2, 0.75
    for qid in dataset.evaluated_queries:
        query = [t for t in tokenizer.tokenize([dataset.queries[qid]], update_vocab=False, return_as="string",
                                               show_progress=False)[0] if t]
        expected = {}
        for doc_id, doc in zip(ids, docs):
            score = 0.0
            for term in query:
                df = sum(term in d for d in docs)
                tf = doc.count(term)
                if df and tf:
                    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                    score += idf * tf / (tf + k1 * (1 - b + b * len(doc) / avgdl))
            if score > 0:
                expected[doc_id] = score
        got = dict(result.runs["bm25"][qid])
        assert set(got) == set(expected), qid  # every document sharing a term, and no other
        for doc_id, score in expected.items():
            assert got[doc_id] == pytest.approx(score, rel=1e-5)
        scores = [s for _, s in result.runs["bm25"][qid]]
        assert scores == sorted(scores, reverse=True)


def test_top_k_caps_the_candidates_and_max_queries_the_queries(dataset):
    small = evaluate(OracleModel(dataset), dataset, top_k=3, max_queries=2, show_progress_bar=False)
    assert list(small.runs["bm25"]) == ["q1", "q2"] and small.num_queries == 2
    assert all(len(r) == 3 for r in small.runs["bm25"].values())
    full = evaluate(OracleModel(dataset), dataset, show_progress_bar=False)
    assert small.runs["bm25"]["q1"] == full.runs["bm25"]["q1"][:3]


def test_a_query_bm25_cannot_match_counts_as_zero(tmp_path):
    root = copy_data(tmp_path)
    with open(root / "queries.jsonl", "a") as f:
        f.write(json.dumps({"_id": "q10", "text": "the of and xylophonic"}) + "\n")  # stopwords, unknown word
    with open(root / "qrels" / "test.tsv", "a") as f:
        f.write("q10\tsky-01\t1\n")
    data = load_dataset(root)
    res = evaluate(OracleModel(data), data, show_progress_bar=False)
    assert res.runs["bm25"]["q10"] == [] and res.runs["reranked"]["q10"] == []
    assert res.per_query["reranked"]["q10"] == {name: 0.0 for name in METRICS}
    assert res.num_queries == 9
    assert res.metrics["reranked"]["MRR@10"] == pytest.approx(
        sum(v["MRR@10"] for v in res.per_query["reranked"].values()) / 9)


# -- metrics -------------------------------------------------------------------------------------


def test_metrics_follow_trec_eval_definitions_computed_by_hand(dataset):
    res = evaluate(OracleModel(dataset), dataset, show_progress_bar=False)
    for stage in ("bm25", "reranked"):
        for qid, ranking in res.runs[stage].items():
            expected = hand_metrics([d for d, _ in ranking], dataset.qrels[qid])
            for name, value in expected.items():
                assert res.per_query[stage][qid][name] == pytest.approx(value, abs=1e-12), (stage, qid, name)
        for name in METRICS:
            mean = sum(v[name] for v in res.per_query[stage].values()) / len(res.per_query[stage])
            assert res.metrics[stage][name] == pytest.approx(mean, abs=1e-12)
    # A perfect reranker: every query whose relevant documents BM25 found is ranked ideally.
    assert res.metrics["reranked"]["MRR@10"] == 1.0
    assert res.metrics["reranked"]["nDCG@10"] > res.metrics["bm25"]["nDCG@10"]
    assert res.metrics["reranked"]["Recall@100"] == res.metrics["bm25"]["Recall@100"] < 1.0  # q3 misses seas-02


def test_reranker_ties_keep_the_bm25_order(dataset):
    res = evaluate(ConstantModel(dataset), dataset, show_progress_bar=False)
    for qid in res.runs["bm25"]:
        assert [d for d, _ in res.runs["reranked"][qid]] == [d for d, _ in res.runs["bm25"][qid]]
    assert res.metrics["reranked"] == res.metrics["bm25"]


# -- with a model --------------------------------------------------------------------------------


def test_every_candidate_is_recorded_with_its_score_length_and_latency(result, model, dataset):
    assert result.num_queries == 8 and result.num_documents == 34 and result.top_k == 100
    assert len(result.pairs) == sum(len(r) for r in result.runs["bm25"].values())
    by_query = {}
    for p in result.pairs:
        by_query.setdefault(p.query_id, []).append(p)
    for qid, pairs in by_query.items():
        docs = [dataset.document_text(p.doc_id) for p in pairs]
        # Scored one document per call; the same as one batched call.
        np.testing.assert_array_equal([p.score for p in pairs], model.score(dataset.queries[qid], docs))
        assert [p.prompt_tokens for p in pairs] == model.tokenize(dataset.queries[qid], docs).num_tokens
        assert [p.bm25_rank for p in pairs] == list(range(1, len(pairs) + 1))
        assert sorted(p.rank for p in pairs) == list(range(1, len(pairs) + 1))
        assert [d for d, _ in result.runs["reranked"][qid]] == [p.doc_id for p in sorted(pairs, key=lambda p: p.rank)]
        for p in pairs:
            assert p.relevance == dataset.qrels[qid].get(p.doc_id, 0) and p.judged == (p.doc_id in dataset.qrels[qid])
            assert p.latency_s > 0 and p.doc_chars == len(dataset.document_text(p.doc_id)) and not p.truncated
    cols = result.columns()
    assert set(cols) >= {"score", "bm25_score", "relevance", "prompt_tokens", "latency_s"}
    assert cols["score"].shape == (len(result.pairs),)


def test_batched_timing_gives_the_same_rankings_without_per_document_latency(result, model, dataset):
    batched = evaluate(model, dataset, timing="query", batch_size=7, show_progress_bar=False)
    assert batched.runs == result.runs and batched.metrics == result.metrics
    assert all(math.isnan(p.latency_s) for p in batched.pairs)
    assert all(p["latency_s"] is None for p in batched.to_dict()["pairs"])


def test_to_dict_is_json_and_holds_metrics_runs_and_settings(result):
    data = json.loads(json.dumps(result.to_dict()))
    assert data["metrics"] == result.metrics
    assert data["runs"]["reranked"]["q1"][0] == list(result.runs["reranked"]["q1"][0])
    assert data["settings"]["bm25"]["variant"] == "Lucene BM25, k1=1.2, b=0.75"
    assert data["settings"]["metrics"]["measures"] == {"nDCG@10": "nDCG@10", "MRR@10": "RR@10", "Recall@100": "R@100"}
    assert len(data["pairs"]) == len(result.pairs)


def test_trec_run_file_lists_each_ranking_in_order(result, tmp_path):
    path = tmp_path / "run.txt"
    result.write_trec_run(path)
    lines = [line.split() for line in path.read_text().splitlines()]
    assert len(lines) == len(result.pairs)
    q1 = [row for row in lines if row[0] == "q1"]
    assert [row[2] for row in q1] == [d for d, _ in result.runs["reranked"]["q1"]]
    assert [int(row[3]) for row in q1] == list(range(1, len(q1) + 1)) and all(row[1] == "Q0" for row in q1)


def test_progress_bar_is_off_unless_asked_outside_a_terminal(model, dataset, capsys):
    evaluate(model, dataset, max_queries=1, timing="query")
    assert "Reranking" not in capsys.readouterr().err
    evaluate(model, dataset, max_queries=1, timing="query", show_progress_bar=True)
    assert "Reranking" in capsys.readouterr().err


def test_steps_are_logged_under_the_crossrank_logger(model, dataset, caplog):
    caplog.set_level(logging.INFO, logger="crossrank")
    evaluate(model, dataset, max_queries=1, timing="query", show_progress_bar=False)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("crossrank")]
    assert any(m.startswith("BM25: indexed 34 documents") for m in messages)
    assert any(m.startswith("reranked ") for m in messages)


def test_long_prompts_are_reported_once_not_at_every_call(dataset, caplog):
    short = CrossEncoder(fixture_path("qwen3-tiny"), template="qwen3-reranker", threads=1, max_length=150)
    caplog.set_level(logging.WARNING, logger="crossrank")
    res = evaluate(short, dataset, show_progress_bar=False)
    n_cut = sum(p.truncated for p in res.pairs)
    assert 0 < n_cut < len(res.pairs) and all(p.prompt_tokens <= 150 for p in res.pairs)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(f"{n_cut} of {len(res.pairs)} prompts were longer than "
                                                         "max_length=150")
    short.score("a query", ["word " * 400])  # outside an evaluation the model warns as before
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 2


class QueryCutModel(OracleModel):
    """Every prompt too long, and its query cut: the document had nothing to cut (empty)."""

    def tokenize(self, query, documents, instruction=None):
        n = len(documents)
        return SimpleNamespace(num_tokens=[10] * n, truncated=[True] * n, document_truncated=[False] * n,
                               query_truncated=[True] * n)


def test_the_report_of_long_prompts_names_cut_queries(dataset, caplog):
    caplog.set_level(logging.WARNING, logger="crossrank")
    res = evaluate(QueryCutModel(dataset), dataset, show_progress_bar=False)
    n = len(res.pairs)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [f"{n} of {n} prompts were longer than max_length=?: {n} queries were truncated"]


def test_bad_arguments_are_refused(model, dataset):
    with pytest.raises(ValueError, match="top_k"):
        evaluate(model, dataset, top_k=0)
    with pytest.raises(ValueError, match="timing"):
        evaluate(model, dataset, timing="batch")
    with pytest.raises(ValueError, match="model_kwargs"):
        evaluate(model, dataset, model_kwargs={"threads": 1})


# -- command line --------------------------------------------------------------------------------


def test_cli_eval_reports_the_function_s_metrics(result, tmp_path, capsys):
    out = tmp_path / "result.json"
    code = cli.main(["eval", str(fixture_path("qwen3-tiny")), "--data", str(DATA), "--template", "qwen3-reranker",
                     "--threads", "1", "--json", str(out), "--run", str(tmp_path / "run.txt")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "nDCG@10" in printed and "MRR@10" in printed and "Recall@100" in printed
    data = json.loads(out.read_text())
    assert data["metrics"] == result.metrics
    assert data["per_query"] == result.per_query
    assert (tmp_path / "run.txt").is_file()


def test_cli_eval_names_the_bad_line_and_fails(tmp_path, capsys):
    root = copy_data(tmp_path)
    path = root / "qrels" / "test.tsv"
    path.write_text(path.read_text() + "q1\tghost\t1\n")
    code = cli.main(["eval", str(fixture_path("qwen3-tiny")), "--data", str(root), "--template", "qwen3-reranker"])
    assert code == 2
    assert "test.tsv:32: corpus-id 'ghost' is not in corpus.jsonl" in capsys.readouterr().err


def test_the_report_names_both_texts_of_pairs_cut_longest_first(dataset, caplog):
    # No template: the instruction goes before the query, so every query (~50 tokens) and every
    # document (52 tokens or more) is over half of the 64 tokens, and both are cut.
    head = {"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["no", "yes"],
            "method": "from_2_way_softmax", "use_sep_token": True}
    pairs = CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=head, max_length=64, truncate_query=True, threads=1)
    caplog.set_level(logging.WARNING, logger="crossrank")
    res = evaluate(pairs, dataset, instruction="Judge whether the passage answers the question. " * 5,
                   max_queries=2, show_progress_bar=False)
    n = len(res.pairs)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [f"{n} of {n} prompts were longer than max_length=64: {n} documents and {n} queries were "
                        "truncated (or chunked, when the model chunks long documents)"]
