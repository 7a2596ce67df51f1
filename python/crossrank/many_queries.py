"""Many queries, each with its own documents, scored in one batched run: ``score_many`` and
``rank_many`` of :class:`~crossrank.CrossEncoder`, for evaluation loops."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple

import numpy as np

from .activations import ActivationLike
from .chunking import ChunkingLike
from .engine import CancelToken
from .pairs import flatten_queries, query_lists, ranked

if TYPE_CHECKING:
    from .model import CrossEncoder

__all__ = ["ManyQueries"]


class ManyQueries:
    """:class:`~crossrank.CrossEncoder`'s batched multi-query methods, over its scoring internals
    (hence ``self: CrossEncoder``)."""

    def score_many(
        self: "CrossEncoder",
        queries: Iterable[str],
        documents_per_query: Iterable[Iterable[str]],
        instruction: Optional[str] = None,
        *,
        prompt_name: Optional[str] = None,
        prompt: Optional[str] = None,
        chunking: ChunkingLike = None,
        batch_size: int = 32,
        show_progress_bar: Optional[bool] = None,
        activation_fn: ActivationLike = None,
        truncate_query: Optional[bool] = None,
        cancel: Optional[CancelToken] = None,
    ) -> List[np.ndarray]:
        """:meth:`score` for several queries, each with its own documents, in one batched run.

        Every pair of every query goes through one pass pipeline: each query's prompt prefix runs
        once, and the passes (``batch_size`` pairs, capped by a token budget) span queries, so an
        evaluation loop over many queries with few documents each keeps the passes full. The
        scores are those :meth:`score` gives each query alone.

        Args:
            queries: The queries: a list of str, or any iterable of str (read once).
            documents_per_query: One list of documents per query (any iterable of them, each any
                iterable of str); a list may be empty.
            instruction, prompt_name, prompt, chunking, truncate_query: As in :meth:`score`, for every
                query (a :class:`~crossrank.TooLongError`'s ``indices`` count the pairs of all
                queries in order).
            batch_size, show_progress_bar, activation_fn, cancel: As in :meth:`predict`; the
                progress bar counts the pairs of all queries, and a callable ``activation_fn``
                gets the scores of all pairs at once (it must work row by row).

        Returns:
            One ``float32`` array per query, as :meth:`score` returns it (empty for a query
            without documents).
        """
        return self._scored_lists(queries, documents_per_query, instruction, prompt_name, prompt, chunking,
                                  batch_size, show_progress_bar, activation_fn, truncate_query, cancel)[0]

    def rank_many(
        self: "CrossEncoder",
        queries: Iterable[str],
        documents_per_query: Iterable[Iterable[str]],
        top_k: Optional[int] = None,
        return_documents: bool = False,
        prompt_name: Optional[str] = None,
        prompt: Optional[str] = None,
        batch_size: int = 32,
        show_progress_bar: Optional[bool] = None,
        activation_fn: ActivationLike = None,
        device: Optional[str] = None,
        *,
        instruction: Optional[str] = None,
        chunking: ChunkingLike = None,
        truncate_query: Optional[bool] = None,
        cancel: Optional[CancelToken] = None,
    ) -> List[List[Dict[str, Any]]]:
        """:meth:`rank` for several queries, each with its own documents, scored in one batched run
        (see :meth:`score_many`): for evaluation loops.

        Example::

            results = model.rank_many(["what is TCP?", "volcanoes"],
                                      [["TCP is ...", "A recipe ..."], ["Lava ...", "Ash ...", "Tea ..."]],
                                      top_k=2)
            results[1][0]  # {"corpus_id": 0, "score": 0.97}: the best document of the second query

        Args:
            queries: The queries: a list of str, or any iterable of str (read once).
            documents_per_query: One list of documents per query (any iterable of them, each any
                iterable of str); a list may be empty.
            top_k: Keep ``results[:top_k]`` of each query, as :meth:`rank` does.
            return_documents, prompt_name, prompt, instruction, chunking, batch_size, truncate_query,
                show_progress_bar, activation_fn, device, cancel: As in :meth:`rank` and
                :meth:`score_many`, for every query.

        Returns:
            One list per query, as :meth:`rank` returns it: ``[{"corpus_id": index in that query's
            documents, "score": float[, "text": document]}, ...]``, best first, ties in document
            order; ``[]`` for a query without documents.
        """
        top_k = self._check_rank_options("rank_many", top_k, device)
        per_query, doc_lists = self._scored_lists(queries, documents_per_query, instruction, prompt_name, prompt,
                                                  chunking, batch_size, show_progress_bar, activation_fn,
                                                  truncate_query, cancel)
        return [ranked("rank_many", scores, documents, top_k, return_documents)
                for scores, documents in zip(per_query, doc_lists)]

    def _scored_lists(self: "CrossEncoder", queries: Iterable[str], documents_per_query: Iterable[Iterable[str]],
                      instruction: Optional[str], prompt_name: Optional[str], prompt: Optional[str],
                      chunking: ChunkingLike, batch_size: int, show_progress_bar: Optional[bool],
                      activation_fn: ActivationLike, truncate_query: Optional[bool], cancel: Optional[CancelToken]
                      ) -> Tuple[List[np.ndarray], List[List[str]]]:
        """:meth:`score_many`'s arrays, and the document lists as read (once) from the arguments."""
        query_values, doc_lists = query_lists(queries, documents_per_query)
        flat_queries, flat_docs, owners, counts = flatten_queries(query_values, doc_lists)
        instruction = self._instruction(instruction, prompt_name, prompt)
        # Shared by query position, not text: each query's documents form exactly the prefix group
        # that score(query, documents) forms, even when a query text repeats with other documents.
        scores = self._score_documents(flat_queries, flat_docs, owners, instruction, self._chunking_for(chunking),
                                       batch_size, show_progress_bar, activation_fn, cancel, truncate_query)
        if not counts:
            return [], doc_lists
        return np.split(scores, np.cumsum(counts)[:-1]), doc_lists
