"""Retrieval evaluation of a reranker: a BM25 first stage, crossrank reranking, IR metrics.

    from crossrank.evaluation import evaluate
    result = evaluate("Qwen/Qwen3-Reranker-0.6B", "datasets/scifact")
    print(result.format_table())          # nDCG@10, MRR@10, Recall@100 before and after reranking

The dataset is read in BEIR's layout (``beir.datasets.data_loader.GenericDataLoader``):

    DIR/corpus.jsonl       {"_id": "...", "title": "...", "text": "..."} one object a line
    DIR/queries.jsonl      {"_id": "...", "text": "..."} one object a line
    DIR/qrels/test.tsv     query-id<TAB>corpus-id<TAB>score, after one header line
                           (DIR/qrels.tsv is accepted too; a TREC qrels file,
                           "qid 0 docid rel" without header, as well)

Method, in the order it runs:

1. BM25 (``bm25s``, Lucene variant, k1=1.2, b=0.75: Elasticsearch's defaults, which BEIR's BM25
   baseline used) over ``title + " " + text``, the text BEIR's reranking also feeds the
   cross-encoder. Tokens: lowercased ``\\b\\w\\w+\\b`` words, bm25s's English stopwords removed,
   Snowball English stemmer (PyStemmer). The ``top_k`` best documents that share at least one
   term with the query are the candidates; ties keep corpus order.
2. Each query's candidates are scored with :meth:`CrossEncoder.score` (the family's recipe) and
   sorted by score; ties keep the BM25 order.
3. nDCG@10, MRR@10 (``RR@10``) and Recall@100 of both rankings, per query and averaged, with
   ``ir-measures`` through its ``pytrec_eval`` provider (trec_eval's definitions: linear gains
   for nDCG; a document is relevant for RR and R when its grade is at least 1). The ranking is
   handed to trec_eval as rank-derived scores, so trec_eval's own tie-breaking (by document id)
   never reorders it. A query is evaluated when its qrels hold a relevant document; a query
   for which BM25 finds nothing counts as 0 (trec_eval ``-c``).

Needs the ``eval`` extra: ``pip install "crossrank[eval]"`` (bm25s, PyStemmer, ir-measures).
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .datasets import Dataset, DatasetError, load_dataset
from .tokenization import cut_counts, truncated_texts

__all__ = ["DatasetError", "Dataset", "load_dataset", "PairRecord", "EvalResult", "evaluate", "METRICS"]

logger = logging.getLogger(__name__)

#: Reported metric -> the ir-measures measure that computes it.
METRICS: Dict[str, str] = {"nDCG@10": "nDCG@10", "MRR@10": "RR@10", "Recall@100": "R@100"}
#: Ranking stages, in the order they run.
STAGES = ("bm25", "reranked")

_BM25_K1 = 1.2
_BM25_B = 0.75
_TIMINGS = ("document", "query")
_INSTALL_HINT = 'pip install "crossrank[eval]"'




class _BM25:
    """BM25 over the corpus with bm25s (settings in the module docstring)."""

    def __init__(self, dataset: Dataset, show_progress: bool) -> None:
        import bm25s
        import Stemmer
        self.doc_ids = list(dataset.corpus)
        self._tokenizer = bm25s.tokenization.Tokenizer(lower=True, stopwords="en",
                                                       stemmer=Stemmer.Stemmer("english"))
        texts = [dataset.document_text(d) for d in self.doc_ids]
        tokens = self._tokenizer.tokenize(texts, return_as="string", show_progress=show_progress)
        # bm25s stands in "" for a text with no token; an empty query would then match empty documents.
        tokens = [[t for t in doc if t] for doc in tokens]
        self._index = bm25s.BM25(k1=_BM25_K1, b=_BM25_B, method="lucene")
        self._index.index(tokens, show_progress=show_progress)
        self._vocab = self._index.vocab_dict

    def search(self, query: str, top_k: int) -> List[Tuple[str, float]]:
        """The ``top_k`` documents sharing a term with ``query``: ``[(doc id, score)]``, best first."""
        tokens = self._tokenizer.tokenize([query], update_vocab=False, return_as="string", show_progress=False)[0]
        tokens = [t for t in tokens if t and t in self._vocab]
        if not tokens:
            return []
        scores = np.asarray(self._index.get_scores(tokens), dtype=np.float64)
        hits = np.flatnonzero(scores > 0)
        order = hits[np.lexsort((hits, -scores[hits]))][:top_k]  # score descending, then corpus order
        return [(self.doc_ids[i], float(scores[i])) for i in order]


# -- metrics -------------------------------------------------------------------------------------


def _per_query_metrics(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Sequence[Tuple[str, float]]],
                       query_ids: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """Query id -> {metric: value} for the ranking in ``run`` (best first), every query present."""
    import ir_measures

    measures = {name: ir_measures.parse_measure(m) for name, m in METRICS.items()}
    names = {m: name for name, m in measures.items()}
    qrel_list = [ir_measures.Qrel(q, d, g) for q in query_ids for d, g in qrels[q].items()]
    # The rank as the score: trec_eval sorts by score, then by document id, and must not reorder ties.
    scored = [ir_measures.ScoredDoc(q, d, float(len(docs) - r))
              for q, docs in run.items() for r, (d, _) in enumerate(docs)]
    out = {q: {name: 0.0 for name in METRICS} for q in query_ids}
    for metric in ir_measures.pytrec_eval.iter_calc(list(measures.values()), qrel_list, scored):
        out[metric.query_id][names[metric.measure]] = float(metric.value)
    return out


def _mean(per_query: Mapping[str, Mapping[str, float]]) -> Dict[str, float]:
    n = len(per_query)
    return {name: (math.fsum(v[name] for v in per_query.values()) / n if n else 0.0) for name in METRICS}


# -- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairRecord:
    """One (query, candidate document) pair, for analysis and plots.

    Attributes:
        query_id, doc_id: The ids from the dataset.
        bm25_rank, rank: 1-based position before and after reranking.
        bm25_score, score: The BM25 score and the reranker's score.
        relevance: The qrels grade (0 when the pair is not judged); ``judged`` tells them apart.
        prompt_tokens: Prompt length as :meth:`CrossEncoder.tokenize` builds it (template + query +
            document, after truncation).
        doc_chars: Characters of the document text.
        truncated: Whether the prompt was cut to ``max_length``.
        latency_s: Wall time of scoring this document alone (NaN with ``timing="query"``).
    """

    query_id: str
    doc_id: str
    bm25_rank: int
    bm25_score: float
    rank: int
    score: float
    relevance: int
    judged: bool
    prompt_tokens: int
    doc_chars: int
    truncated: bool
    latency_s: float


@dataclass
class EvalResult:
    """What :func:`evaluate` measured.

    Attributes:
        dataset, split: Where the data came from.
        model: The model's name or path.
        num_queries: Queries evaluated (those with a relevant judgment).
        num_documents: Documents in the corpus.
        top_k: Candidates per query from BM25.
        metrics: ``{"bm25": {"nDCG@10": ..., "MRR@10": ..., "Recall@100": ...}, "reranked": {...}}``.
        per_query: Stage -> query id -> metric -> value.
        runs: Stage -> query id -> ``[(doc id, score)]`` best first (BM25 scores, reranker scores).
        pairs: One :class:`PairRecord` per scored pair.
        query_latency_s: Query id -> wall time of reranking its candidates.
        timings: Seconds spent: ``bm25_index``, ``bm25_search``, ``rerank``.
        settings: How the numbers were obtained (method, parameters, library versions).
    """

    dataset: str
    split: str
    model: str
    num_queries: int
    num_documents: int
    top_k: int
    metrics: Dict[str, Dict[str, float]]
    per_query: Dict[str, Dict[str, Dict[str, float]]]
    runs: Dict[str, Dict[str, List[Tuple[str, float]]]]
    pairs: List[PairRecord] = field(repr=False)
    query_latency_s: Dict[str, float] = field(repr=False)
    timings: Dict[str, float]
    settings: Dict[str, Any]

    def to_dict(self) -> Dict[str, Any]:
        """Everything as JSON-serialisable builtins (NaN latencies become ``None``)."""
        out = asdict(self)
        out["runs"] = {stage: {q: [[d, s] for d, s in docs] for q, docs in run.items()}
                       for stage, run in self.runs.items()}
        for rec in out["pairs"]:
            if isinstance(rec["latency_s"], float) and math.isnan(rec["latency_s"]):
                rec["latency_s"] = None
        return out

    def columns(self) -> Dict[str, np.ndarray]:
        """The pairs as columns (one NumPy array per :class:`PairRecord` field), for plots."""
        names = list(PairRecord.__dataclass_fields__)
        return {n: np.array([getattr(p, n) for p in self.pairs]) for n in names}

    def format_table(self, markdown: bool = False) -> str:
        """The metrics before and after reranking as a text (or Markdown) table."""
        rows = [(name, self.metrics["bm25"][name], self.metrics["reranked"][name]) for name in METRICS]
        if markdown:
            lines = ["| metric | BM25 | reranked | change |", "| --- | ---: | ---: | ---: |"]
            lines += [f"| {n} | {a:.4f} | {b:.4f} | {b - a:+.4f} |" for n, a, b in rows]
        else:
            lines = [f"{'metric':<12}{'BM25':>10}{'reranked':>10}{'change':>10}"]
            lines += [f"{n:<12}{a:>10.4f}{b:>10.4f}{b - a:>+10.4f}" for n, a, b in rows]
        return "\n".join(lines)

    def summary(self) -> str:
        """A few lines: data, model, metrics table, speed."""
        n_pairs = len(self.pairs)
        rerank_s = self.timings.get("rerank", 0.0)
        lat = [p.latency_s for p in self.pairs if not math.isnan(p.latency_s)]
        speed = f"{n_pairs} pairs reranked in {rerank_s:.2f} s"
        if rerank_s > 0:
            speed += f" ({n_pairs / rerank_s:.1f} pairs/s"
            speed += f", median {1000 * float(np.median(lat)):.1f} ms per document)" if lat else ")"
        return "\n".join([
            f"dataset  {self.dataset} (split {self.split}): {self.num_queries} queries, {self.num_documents} documents",
            f"model    {self.model}",
            f"stage 1  BM25 top {self.top_k} ({self.settings['bm25']['variant']})",
            self.format_table(),
            speed,
        ])

    def write_trec_run(self, path: Union[str, os.PathLike], stage: str = "reranked", tag: str = "crossrank") -> None:
        """Writes one stage's ranking as a TREC run file (``qid Q0 docid rank score tag``)."""
        if stage not in self.runs:
            raise ValueError(f"stage must be one of {', '.join(self.runs)}, got {stage!r}")
        with open(path, "w", encoding="utf-8") as f:
            for qid, docs in self.runs[stage].items():
                for r, (doc_id, score) in enumerate(docs, 1):
                    f.write(f"{qid} Q0 {doc_id} {r} {score:.9g} {tag}\n")


# -- evaluation ----------------------------------------------------------------------------------


class _HoldTruncationWarnings(logging.Filter):
    """Drops the model's per-call "prompts were longer than max_length" warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.WARNING and "longer than max_length" in str(record.msg))


def _interactive() -> bool:
    """True on a terminal or in a Jupyter kernel: where a progress bar is wanted by default."""
    try:
        if sys.stderr is not None and sys.stderr.isatty():
            return True
    except (AttributeError, ValueError):
        pass
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _check_dependencies() -> None:
    """Fails before any work when the eval extra is missing, not after the reranking."""
    missing = []
    for module, dist in (("bm25s", "bm25s"), ("Stemmer", "PyStemmer"), ("ir_measures", "ir-measures")):
        try:
            __import__(module)
        except ImportError:
            missing.append(dist)
    if not missing:
        import ir_measures

        if not ir_measures.pytrec_eval.is_available():
            missing.append("pytrec-eval-terrier")
    if missing:
        raise ImportError(f"evaluation needs {', '.join(missing)}: {_INSTALL_HINT}")


def _versions() -> Dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("crossrank", "bm25s", "PyStemmer", "ir-measures", "pytrec-eval-terrier"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def evaluate(
    model: Any,
    data_dir: Union[str, os.PathLike, Dataset],
    *,
    split: str = "test",
    top_k: int = 100,
    batch_size: int = 32,
    instruction: Optional[str] = None,
    max_queries: Optional[int] = None,
    timing: str = "document",
    show_progress_bar: Optional[bool] = None,
    model_kwargs: Optional[Mapping[str, Any]] = None,
) -> EvalResult:
    """BM25 top ``top_k``, reranked by ``model``, scored with nDCG@10, MRR@10 and Recall@100.

    Args:
        model: A :class:`crossrank.CrossEncoder` (or an object with its ``tokenize`` and
            ``score`` methods), or a model name or directory to load one from.
        data_dir: A dataset directory in BEIR's layout, or a :class:`Dataset` (already split).
        split: Qrels split: ``qrels/<split>.tsv`` (``qrels.tsv`` when there is none).
        top_k: BM25 candidates per query (BEIR's reranking setting: 100).
        batch_size: Documents per forward pass with ``timing="query"``.
        instruction: Task instruction for the model; ``None``: the template's default.
        max_queries: Evaluate only the first N queries (qrels order), for a quick look.
        timing: ``"document"``: each document is scored in a call of its own and timed, which
            gives its latency (scores do not depend on batching); ``"query"``: a query's
            candidates are scored together in batches (faster for tiny models; no per-document
            latency).
        show_progress_bar: A progress bar over the pairs; ``None``: on a terminal or in Jupyter.
        model_kwargs: Keyword arguments for :class:`~crossrank.CrossEncoder` when ``model`` is a name.

    Returns:
        An :class:`EvalResult`.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    if max_queries is not None and (isinstance(max_queries, bool) or not isinstance(max_queries, int)
                                    or max_queries < 1):
        raise ValueError(f"max_queries must be a positive integer or None, got {max_queries!r}")
    if timing not in _TIMINGS:
        raise ValueError(f"timing must be one of {', '.join(map(repr, _TIMINGS))}, got {timing!r}")
    _check_dependencies()
    if show_progress_bar is None:
        show_progress_bar = _interactive()
    dataset = data_dir if isinstance(data_dir, Dataset) else load_dataset(data_dir, split)
    if isinstance(model, (str, os.PathLike)):
        from .model import CrossEncoder

        model = CrossEncoder(model, **dict(model_kwargs or {}))
    elif model_kwargs:
        raise ValueError("model_kwargs apply only when model is a name or path, not a loaded model")
    model_name = str(getattr(model, "model_name_or_path", type(model).__name__))

    query_ids = dataset.evaluated_queries
    skipped = len(dataset.qrels) - len(query_ids)
    if skipped:
        logger.info("%d judged queries have no relevant document and are not evaluated", skipped)
    if max_queries is not None:
        query_ids = query_ids[:max_queries]
    if not query_ids:
        raise DatasetError(f"{dataset.qrels_file}: no query has a relevant document (grade >= 1) to evaluate")

    t0 = time.perf_counter()
    bm25 = _BM25(dataset, show_progress=show_progress_bar)
    t_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    candidates = {q: bm25.search(dataset.queries[q], top_k) for q in query_ids}
    t_search = time.perf_counter() - t0
    n_pairs = sum(len(c) for c in candidates.values())
    logger.info("BM25: indexed %d documents in %.2f s; %d queries, %d candidate pairs (top %d) in %.2f s",
                len(dataset.corpus), t_index, len(query_ids), n_pairs, top_k, t_search)
    empty = [q for q in query_ids if not candidates[q]]
    if empty:
        logger.warning("BM25 found no candidate for %d queries (e.g. %r); they count as 0", len(empty), empty[0])

    bar = None
    if show_progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_pairs, desc="Reranking", unit="pair")
    runs: Dict[str, Dict[str, List[Tuple[str, float]]]] = {"bm25": {}, "reranked": {}}
    pairs: List[PairRecord] = []
    query_latency: Dict[str, float] = {}
    n_truncated = n_documents_cut = n_queries_cut = 0
    t_rerank = time.perf_counter()
    # The model warns about long prompts at every call; one total at the end says it once.
    quiet = _HoldTruncationWarnings()
    model_logger = logging.getLogger("crossrank")
    model_logger.addFilter(quiet)
    try:
        for qid in query_ids:
            hits = candidates[qid]
            runs["bm25"][qid] = hits
            if not hits:
                runs["reranked"][qid] = []
                continue
            query = dataset.queries[qid]
            docs = [dataset.document_text(d) for d, _ in hits]
            encoded = model.tokenize(query, docs, instruction)
            latency = np.full(len(docs), np.nan)
            t_query = time.perf_counter()
            if timing == "document":
                scores = np.empty(len(docs), dtype=np.float32)
                for i, doc in enumerate(docs):
                    t_doc = time.perf_counter()
                    one = np.asarray(model.score(query, [doc], instruction, show_progress_bar=False))
                    latency[i] = time.perf_counter() - t_doc
                    if one.ndim != 1:
                        raise ValueError(f"evaluation needs one score per document; {model_name} gives {one.shape[-1]}")
                    scores[i] = one[0]
                    if bar is not None:
                        bar.update(1)
            else:
                scores = np.asarray(model.score(query, docs, instruction, batch_size=batch_size,
                                                show_progress_bar=False))
                if scores.ndim != 1:
                    raise ValueError(f"evaluation needs one score per document; {model_name} gives {scores.shape[-1]}")
                if bar is not None:
                    bar.update(len(docs))
            query_latency[qid] = time.perf_counter() - t_query
            order = np.argsort(-scores.astype(np.float64), kind="stable")  # ties keep the BM25 order
            runs["reranked"][qid] = [(hits[i][0], float(scores[i])) for i in order]
            new_rank = np.empty(len(docs), dtype=np.int64)
            new_rank[order] = np.arange(1, len(docs) + 1)
            judged = dataset.qrels[qid]
            for i, (doc_id, bm25_score) in enumerate(hits):
                pairs.append(PairRecord(
                    query_id=qid, doc_id=doc_id, bm25_rank=i + 1, bm25_score=bm25_score, rank=int(new_rank[i]),
                    score=float(scores[i]), relevance=judged.get(doc_id, 0), judged=doc_id in judged,
                    prompt_tokens=encoded.num_tokens[i], doc_chars=len(docs[i]), truncated=bool(encoded.truncated[i]),
                    latency_s=float(latency[i])))
            n_truncated += sum(encoded.truncated)
            documents_cut, queries_cut = cut_counts(encoded)
            n_documents_cut, n_queries_cut = n_documents_cut + documents_cut, n_queries_cut + queries_cut
            logger.debug("query %s: %d candidates reranked in %.3f s", qid, len(docs), query_latency[qid])
    finally:
        model_logger.removeFilter(quiet)
        if bar is not None:
            bar.close()
    t_rerank = time.perf_counter() - t_rerank
    if n_truncated:
        logger.warning("%d of %d prompts were longer than max_length=%s: %s%s", n_truncated, n_pairs,
                       getattr(model, "max_length", "?"), truncated_texts(n_documents_cut, n_queries_cut),
                       " (or chunked, when the model chunks long documents)" if n_documents_cut else "")

    per_query = {stage: _per_query_metrics(dataset.qrels, runs[stage], query_ids) for stage in STAGES}
    metrics = {stage: _mean(per_query[stage]) for stage in STAGES}
    logger.info("reranked %d pairs in %.2f s; nDCG@10 %.4f -> %.4f", n_pairs, t_rerank,
                metrics["bm25"]["nDCG@10"], metrics["reranked"]["nDCG@10"])
    settings = {
        "bm25": {"library": "bm25s", "variant": f"Lucene BM25, k1={_BM25_K1}, b={_BM25_B}",
                 "tokens": r"lowercase \b\w\w+\b words, bm25s English stopwords, Snowball English stemmer (PyStemmer)",
                 "text": 'title + " " + text', "ties": "corpus order"},
        "reranker": {"method": "CrossEncoder.score (the family's template)", "instruction": instruction,
                     "timing": timing, "batch_size": batch_size if timing == "query" else 1,
                     "ties": "BM25 order", "max_length": getattr(model, "max_length", None),
                     "threads": getattr(model, "threads", None)},
        "metrics": {"library": "ir-measures (pytrec_eval provider)", "measures": dict(METRICS),
                    "queries": "qrels queries with a relevant document; no candidates counts as 0"},
        "max_queries": max_queries,
        "versions": _versions(),
    }
    return EvalResult(
        dataset=str(dataset.path), split=dataset.split, model=model_name, num_queries=len(query_ids),
        num_documents=len(dataset.corpus), top_k=top_k, metrics=metrics, per_query=per_query, runs=runs,
        pairs=pairs, query_latency_s=query_latency,
        timings={"bm25_index": t_index, "bm25_search": t_search, "rerank": t_rerank}, settings=settings)
