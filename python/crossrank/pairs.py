"""Validation of the query/document inputs of :class:`~crossrank.CrossEncoder`'s scoring methods,
and :meth:`~crossrank.CrossEncoder.rank`'s results."""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .templates import check_text

__all__ = ["broadcast", "flatten_queries", "query_lists", "ranked", "text_list"]


def ranked(method: str, scores: np.ndarray, documents: Sequence[str], top_k: Optional[int],
            return_documents: bool) -> List[Dict[str, Any]]:
    """:meth:`CrossEncoder.rank`'s result for one query: best first, ties in document order; ``top_k``
    slices it as sentence-transformers does (``results[:top_k]``: 0 keeps none, -1 all but the last)."""
    if scores.ndim != 1:
        raise ValueError(f"{method}() needs one score per document; the activation returned shape {scores.shape}")
    order = np.argsort(-scores, kind="stable")
    if top_k is not None:
        order = order[:top_k]
    results = []
    for i in order:
        item: Dict[str, Any] = {"corpus_id": int(i), "score": float(scores[i])}
        if return_documents:
            item["text"] = documents[i]
        results.append(item)
    return results


def text_list(texts: Iterable[str], name: str, item: str, owner: str = "") -> List[str]:
    """``texts`` (a list, tuple, NumPy array, pandas Series, generator: any iterable of str but a str
    itself) as a list, read once and checked; errors name the argument ``name`` or the ``item`` at
    fault, followed by ``owner`` (``"document 3 of query 1 must be a str, got int"``)."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
        raise TypeError(f"{name} must be a list of str, got {type(texts).__name__} "
                        f"(wrap a single {item} in a list)")
    values = list(texts)
    for i, text in enumerate(values):
        if not isinstance(text, str):
            raise TypeError(f"{item} {i}{owner} must be a str, got {type(text).__name__}")
        check_text(text, f"{item} {i}{owner}")
    return values


def broadcast(query: Union[str, Iterable[str]], documents: Iterable[str]) -> Tuple[List[str], List[str]]:
    """Validates query/documents and returns parallel lists (see :func:`text_list` for what is taken)."""
    docs = text_list(documents, "documents", "document")
    if isinstance(query, str):
        check_text(query, "the query")
        return [query] * len(docs), docs
    if isinstance(query, bytes) or not isinstance(query, Iterable):
        raise TypeError(f"query must be a str or a list of str, got {type(query).__name__}")
    queries = text_list(query, "query", "query")
    if len(queries) != len(docs):
        raise ValueError(f"got {len(queries)} queries for {len(docs)} documents: give one query, or one per document")
    return queries, docs


def query_lists(queries: Iterable[str], documents_per_query: Iterable[Iterable[str]]
                ) -> Tuple[List[str], List[List[str]]]:
    """The queries and one list of documents per query, each read once and checked: any iterable
    (list, tuple, NumPy array, pandas Series, generator) but a str itself, at every level."""
    if isinstance(queries, (str, bytes)) or not isinstance(queries, Iterable):
        raise TypeError(f"queries must be a list of str, got {type(queries).__name__} "
                        "(for a single query use rank() or score())")
    if isinstance(documents_per_query, (str, bytes)) or not isinstance(documents_per_query, Iterable):
        raise TypeError(f"documents_per_query must be a list with one list of documents per query, "
                        f"got {type(documents_per_query).__name__}")
    query_values, doc_lists = list(queries), list(documents_per_query)
    if len(query_values) != len(doc_lists):
        raise ValueError(f"got {len(query_values)} queries and {len(doc_lists)} document lists: "
                         "give one list of documents (possibly empty) per query")
    checked: List[List[str]] = []
    for i, (query, docs) in enumerate(zip(query_values, doc_lists)):
        if not isinstance(query, str):
            raise TypeError(f"query {i} must be a str, got {type(query).__name__}")
        check_text(query, f"query {i}")
        checked.append(text_list(docs, f"the documents of query {i}", "document", f" of query {i}"))
    return query_values, checked


def flatten_queries(queries: List[str], documents_per_query: List[List[str]]
                    ) -> Tuple[List[str], List[str], List[int], List[int]]:
    """The pairs of checked queries and document lists (:func:`query_lists`) as parallel lists
    (query, document, index of the query), and the number of documents of each query."""
    flat_queries: List[str] = []
    flat_docs: List[str] = []
    owners: List[int] = []
    counts: List[int] = []
    for i, (query, docs) in enumerate(zip(queries, documents_per_query)):
        flat_queries += [query] * len(docs)
        flat_docs += docs
        owners += [i] * len(docs)
        counts.append(len(docs))
    return flat_queries, flat_docs, owners, counts
