"""A LangChain document compressor that reranks ``Document`` objects with crossrank.

    from crossrank.integrations.langchain import CrossrankRerank

    reranker = CrossrankRerank(model="Qwen/Qwen3-Reranker-0.6B", top_n=3)
    docs = reranker.compress_documents(retriever.invoke(query), query)
    docs[0].metadata["relevance_score"]

It depends on ``langchain-core`` alone (``pip install "crossrank[langchain]"``). Like LangChain's
``FlashrankRerank`` and ``CohereRerank``, it returns copies of the best ``top_n`` documents, best
first, with the score in ``metadata["relevance_score"]``; the input documents are not modified.
It plugs into ``ContextualCompressionRetriever`` (package ``langchain``) as ``base_compressor``,
or into an LCEL chain without it.
"""
from __future__ import annotations

import asyncio
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from langchain_core.runnables.config import run_in_executor
    from pydantic import ConfigDict, Field, model_validator
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f'crossrank.integrations.langchain needs langchain-core ({exc}): '
                      'pip install "crossrank[langchain]"') from exc

from ..model import CancelToken, CrossEncoder

__all__ = ["CrossrankRerank"]


class CrossrankRerank(BaseDocumentCompressor):
    """Reranks documents by relevance to the query with a crossrank :class:`~crossrank.CrossEncoder`.

    Attributes:
        model: A loaded :class:`~crossrank.CrossEncoder`; a model name or directory is loaded
            at construction with ``model_kwargs``.
        model_kwargs: Keyword arguments for :class:`~crossrank.CrossEncoder` when ``model`` is a name.
        top_n: How many documents to return (``None``: all of them, reordered).
        score_threshold: Drop documents scoring below this value (after ``top_n``).
        instruction: Task instruction for the model; ``None``: the template's default.
        batch_size: Documents per forward pass.
        activation_fn: Score activation for the model (``None``: the model's default, e.g.
            P("yes") for Qwen3-Reranker; ``"identity"``: raw logits).
        metadata_key: Metadata key that receives the score.
    """

    model: Any
    model_kwargs: Dict[str, Any] = Field(default_factory=dict)
    top_n: Optional[int] = Field(default=3, ge=1)
    score_threshold: Optional[float] = None
    instruction: Optional[str] = None
    batch_size: int = Field(default=32, ge=1)
    activation_fn: Any = None
    metadata_key: str = "relevance_score"

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _load_model(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        model = values.get("model")
        if isinstance(model, (str, os.PathLike)):
            values = dict(values)
            values["model"] = CrossEncoder(model, **dict(values.get("model_kwargs") or {}))
        elif model is not None and not isinstance(model, CrossEncoder):
            raise TypeError(f"model must be a crossrank.CrossEncoder or a model name or path, "
                            f"got {type(model).__name__}")
        return values

    def _rerank(self, documents: Sequence[Document], query: str,
                cancel: Optional[CancelToken] = None) -> List[Document]:
        docs = list(documents)
        if not docs:
            return []
        scores = np.asarray(self.model.score(query, [d.page_content for d in docs], self.instruction,
                                             batch_size=self.batch_size, show_progress_bar=False,
                                             activation_fn=self.activation_fn, cancel=cancel))
        if scores.ndim != 1:
            raise ValueError(f"reranking needs one score per document; the model gives {scores.shape[-1]}")
        order = np.argsort(-scores.astype(np.float64), kind="stable")  # ties keep the retriever's order
        if self.top_n is not None:
            order = order[:self.top_n]
        out = []
        for i in order:
            score = float(scores[i])
            if self.score_threshold is not None and score < self.score_threshold:
                break
            doc = docs[i]
            out.append(doc.model_copy(update={"metadata": {**doc.metadata, self.metadata_key: score}}))
        return out

    def compress_documents(self, documents: Sequence[Document], query: str,
                           callbacks: Optional[Callbacks] = None) -> Sequence[Document]:
        """The ``top_n`` most relevant documents, best first, each with its score in metadata."""
        return self._rerank(documents, query)

    async def acompress_documents(self, documents: Sequence[Document], query: str,
                                  callbacks: Optional[Callbacks] = None) -> Sequence[Document]:
        """As :meth:`compress_documents`, in a worker thread (the engine releases the GIL).

        Cancelling the awaiting task also stops the computation in the thread, within one GEMM
        block, instead of letting it run to the end unobserved.
        """
        token = CancelToken()
        future = run_in_executor(None, self._rerank, documents, query, token)
        try:
            return await future
        except asyncio.CancelledError:
            token.cancel()
            raise
