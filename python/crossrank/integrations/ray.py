"""Bulk scoring with Ray Data: a callable class for ``Dataset.map_batches``.

    import ray
    from crossrank.integrations.ray import Scorer

    ds = ray.data.read_parquet("pairs/")                  # columns: query, document
    scored = ds.map_batches(
        Scorer,
        fn_constructor_kwargs={"model": "Qwen/Qwen3-Reranker-0.6B"},
        compute=ray.data.ActorPoolStrategy(size=4),        # Ray < 2.51: concurrency=4
        num_cpus=8,                                        # cores per worker = engine threads
        batch_size=256,
        batch_format="numpy",
    )
    scored.write_parquet("scored/")                        # columns: query, document, score

Ray starts each worker (an actor), which builds one :class:`Scorer`: the model is loaded once
per worker from the path in ``fn_constructor_kwargs`` (every node must see that path, or the
name must resolve in the node's Hugging Face cache), then serves every batch sent to it. The
engine uses as many threads as Ray reserved CPUs for the worker (``num_cpus``), so workers on a
node do not oversubscribe its cores. Scores do not depend on how rows are batched or spread over
workers: they equal ``CrossEncoder.score`` run in one process.

Needs ``pip install "crossrank[ray]"``.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

__all__ = ["Scorer"]

logger = logging.getLogger(__name__)

_METHODS = {"score": ("query", "document"), "predict": ("text_1", "text_2")}


def _ray_cpus() -> Optional[int]:
    """CPUs Ray reserved for the current worker, or None outside a Ray worker."""
    try:
        import ray
    except ImportError:
        return None
    if not ray.is_initialized():
        return None
    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # the driver, or an older Ray without this call: no reservation to follow
        return None
    return max(1, int(cpus)) if cpus else None


class Scorer:
    """Scores the rows of a batch: two text columns in, one score column out.

    Args:
        model: A model name or directory, loaded once in each worker; or a loaded
            :class:`~crossrank.CrossEncoder`, which Ray pickles (its path and options) and each
            worker reloads, keeping the thread count it was created with.
        model_kwargs: Keyword arguments for :class:`~crossrank.CrossEncoder` (``template``,
            ``hf_overrides``, ``max_length``, ...). ``threads`` defaults to the CPUs Ray reserved
            for the worker.
        method: ``"score"``: ``(query, document)`` through the model family's template, as
            :meth:`CrossEncoder.score`; ``"predict"``: ``(text_1, text_2)`` joined as vLLM's score
            API takes them, as :meth:`CrossEncoder.predict`.
        query_column, document_column: The two input columns; default ``query``/``document`` for
            ``"score"``, ``text_1``/``text_2`` for ``"predict"``.
        score_column: The output column (float32).
        instruction: Task instruction for ``"score"``; ``None``: the template's default.
        batch_size: Pairs per forward pass inside a batch (Ray's ``batch_size`` is the rows per call).
        activation_fn: Score activation (``None``: the model's default; ``"identity"``: raw logits).
    """

    def __init__(
        self,
        model: Any,
        *,
        model_kwargs: Optional[Mapping[str, Any]] = None,
        method: str = "score",
        query_column: Optional[str] = None,
        document_column: Optional[str] = None,
        score_column: str = "score",
        instruction: Optional[str] = None,
        batch_size: int = 32,
        activation_fn: Any = None,
    ) -> None:
        from ..model import CrossEncoder

        if method not in _METHODS:
            raise ValueError(f"method must be 'score' or 'predict', got {method!r}")
        if instruction is not None and method != "score":
            raise ValueError("instruction applies to method='score' only: predict takes prompts as they are")
        self.method = method
        default_1, default_2 = _METHODS[method]
        self.columns: Tuple[str, str] = (query_column or default_1, document_column or default_2)
        self.score_column = score_column
        self.instruction = instruction
        self.batch_size = batch_size
        self.activation_fn = activation_fn
        if isinstance(model, CrossEncoder):
            if model_kwargs:
                raise ValueError("model_kwargs apply only when model is a name or path, not a loaded model")
            self.model = model
        elif isinstance(model, (str, os.PathLike)):
            kwargs = dict(model_kwargs or {})
            if kwargs.get("threads") is None:
                kwargs["threads"] = _ray_cpus()
            self.model = CrossEncoder(model, **kwargs)
            logger.info("worker %d loaded %s with %d threads", os.getpid(), model, self.model.threads)
        else:
            raise TypeError(f"model must be a model name or path, or a crossrank.CrossEncoder; "
                            f"got {type(model).__name__}")

    def __call__(self, batch: Any) -> Any:
        """Adds the score column to a batch in Ray's ``numpy`` (dict of arrays), ``pandas`` or
        ``pyarrow`` format, returned in the same format."""
        texts_1 = self._texts(batch, self.columns[0])
        texts_2 = self._texts(batch, self.columns[1])
        scores = self._scores(texts_1, texts_2)
        return _with_column(batch, self.score_column, scores)

    def _scores(self, texts_1: List[str], texts_2: List[str]) -> np.ndarray:
        if not texts_1:
            return np.empty(0, dtype=np.float32)
        if self.method == "score":
            out = self.model.score(texts_1, texts_2, self.instruction, batch_size=self.batch_size,
                                   show_progress_bar=False, activation_fn=self.activation_fn)
        else:
            out = self.model.predict(list(zip(texts_1, texts_2)), batch_size=self.batch_size,
                                     show_progress_bar=False, activation_fn=self.activation_fn)
        scores = np.asarray(out, dtype=np.float32)
        return scores.reshape(len(texts_1)) if scores.ndim <= 1 else scores

    @staticmethod
    def _texts(batch: Any, column: str) -> List[str]:
        names = _column_names(batch)
        if column not in names:
            raise KeyError(f"the batch has no column {column!r} (columns: {', '.join(map(repr, names))}); "
                           "name the text columns with query_column=... and document_column=...")
        values = batch[column]
        values = values.to_pylist() if hasattr(values, "to_pylist") else list(values)
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise TypeError(f"column {column!r}, row {i}: expected a string, found {type(v).__name__}")
        return values


def _column_names(batch: Any) -> List[str]:
    if isinstance(batch, Mapping):
        return list(batch.keys())
    if hasattr(batch, "column_names"):  # pyarrow.Table
        return list(batch.column_names)
    if hasattr(batch, "columns"):  # pandas.DataFrame
        return [str(c) for c in batch.columns]
    raise TypeError(f"unsupported batch type {type(batch).__name__}: use batch_format='numpy', 'pandas' or 'pyarrow'")


def _with_column(batch: Any, name: str, scores: np.ndarray) -> Union[Dict[str, Any], Any]:
    """The batch with ``name`` set to ``scores``, without modifying the input (Ray may share it)."""
    if isinstance(batch, Mapping):
        out = dict(batch)
        out[name] = scores
        return out
    if hasattr(batch, "column_names"):
        import pyarrow as pa

        column = pa.array(scores if scores.ndim == 1 else scores.tolist())
        if name in batch.column_names:
            return batch.set_column(batch.column_names.index(name), name, column)
        return batch.append_column(name, column)
    return batch.assign(**{name: scores if scores.ndim == 1 else list(scores)})
