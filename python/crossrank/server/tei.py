"""text-embeddings-inference's side of the server: ``/rerank`` in TEI's shape and ``GET /info``.

TEI's router serves a reranker with ``POST /rerank`` (also ``POST /`` and
``/invocations``), ``GET /info``, ``GET /health`` and ``GET /ping``. A ``/rerank`` body is TEI's when
it carries ``texts`` and no ``documents``. Its options follow current TEI:

* ``truncate`` omitted or ``null``: the server's auto-truncation setting, as TEI's router takes it
  (``--auto-truncate``, reported by ``/info``), which crossrank keeps on; an over-long pair is cut
  longest-first inside the query and the document (never the template), so the document always
  keeps tokens;
* ``truncate: false``: an over-long pair is refused with 413 (``Validation``), as TEI refuses it;
* ``truncation_direction``: ``Right`` (default) or ``Left``, which end of the document is cut;
* ``raw_scores``: the raw logit instead of the activated score; ``return_text``: echo each text.

The request's ``model`` field is ignored, as TEI ignores it (TEI serves exactly one model).
"""
from __future__ import annotations

import uuid
from typing import Any, Dict, List, Optional, Sequence

from pydantic import BaseModel, ConfigDict

from .errors import APIError
from .protocol import ScoringTask, drop_nulls, rank_order, validate_request

__all__ = ["TEIRerankRequest", "is_tei_rerank", "parse_tei_rerank", "tei_rerank_response", "info_response",
           "MAX_CLIENT_BATCH_SIZE"]

#: Default of ``--max-client-batch-size`` (items per request), reported by ``/info``.
MAX_CLIENT_BATCH_SIZE = 100_000


class TEIRerankRequest(BaseModel):
    """text-embeddings-inference's ``RerankRequest``."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    query: str
    texts: List[str]
    raw_scores: bool = False
    return_text: bool = False
    truncate: Optional[bool] = None
    truncation_direction: str = "Right"


def is_tei_rerank(body: Dict[str, Any]) -> bool:
    """Whether a ``/rerank`` body is in TEI's shape (``texts`` and no ``documents``; ``null`` is absent)."""
    return body.get("texts") is not None and body.get("documents") is None


def parse_tei_rerank(body: Dict[str, Any], request_id: Optional[str] = None) -> ScoringTask:
    """A TEI ``/rerank`` body as a task (errors carry TEI's ``error_type``)."""
    # a missing or mistyped field is refused as TEI's JSON extractor refuses it (422, APIError.tei)
    req = validate_request(TEIRerankRequest, drop_nulls(body))
    if not req.texts:
        raise APIError("`texts` cannot be empty: at least one text must be given", 400, param="texts",
                       tei_type="Empty")
    direction = req.truncation_direction.lower()
    if direction not in ("left", "right"):
        raise APIError(f"truncation_direction must be Left or Right, got {req.truncation_direction!r}", 400,
                       param="truncation_direction")  # an unknown enum value: the extractor's 422
    truncate = True if req.truncate is None else bool(req.truncate)
    return ScoringTask(kind="tei", firsts=[req.query] * len(req.texts), seconds=list(req.texts), templated=True,
                       side=direction, truncate=truncate, fit="longest_first", use_activation=not req.raw_scores,
                       return_documents=req.return_text, documents=list(req.texts),
                       request_id=request_id or uuid.uuid4().hex)


def tei_rerank_response(task: ScoringTask, scores: Sequence[float]) -> List[Dict[str, Any]]:
    """TEI's answer: a bare list of ``{index, score[, text]}``, best first."""
    out = []
    for i in rank_order(scores, 0):
        item: Dict[str, Any] = {"index": i}
        if task.return_documents:
            item["text"] = task.documents[i]
        item["score"] = float(scores[i])  # TEI's key order: index, text, score
        out.append(item)
    return out


def info_response(*, model_id: str, revision: Optional[str], dtype: str, max_input_length: int,
                  max_concurrent_requests: int, max_batch_tokens: int, tokenization_workers: int,
                  version: str, max_client_batch_size: int = MAX_CLIENT_BATCH_SIZE) -> Dict[str, Any]:
    """TEI's ``GET /info`` for a one-label reranker (what ``huggingface_hub``'s
    ``InferenceClient.get_endpoint_info`` returns)."""
    return {
        "model_id": model_id,
        "model_sha": revision,
        "model_dtype": dtype,
        "model_type": {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}},
        "max_concurrent_requests": max_concurrent_requests,
        "max_input_length": max_input_length,
        "max_batch_tokens": max_batch_tokens,
        "tokenization_workers": tokenization_workers,
        "max_batch_requests": None,
        "max_client_batch_size": max_client_batch_size,
        "auto_truncate": True,
        "version": version,
        "sha": None,
        "docker_label": None,
    }
