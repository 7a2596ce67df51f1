"""Request and response shapes: vLLM's ``/score`` and ``/rerank`` (with Jina's and Cohere v1's
``return_documents``) and TEI's ``/rerank``, and vLLM's error shape.

Requests are validated with pydantic, in lax mode and ignoring unknown fields, as vLLM's models
are. Every failure becomes an :class:`APIError`, answered as vLLM answers it:
``{"error": {"message", "type", "param", "code"}}`` with ``code`` the HTTP status.

Each parsed request becomes a :class:`ScoringTask`: the pairs, whether the family template applies
to them, and the length options, so the handlers treat every shape alike.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Type, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "APIError",
    "error_body",
    "ScoreRequest",
    "RerankRequest",
    "TEIRerankRequest",
    "ScoringTask",
    "parse_score",
    "parse_rerank",
    "score_response",
    "rerank_response",
    "tei_rerank_response",
    "models_response",
]


# -- errors ------------------------------------------------------------------------------------


class APIError(Exception):
    """An error answered in vLLM's shape.

    Args:
        message: What went wrong and how to fix it.
        status: HTTP status.
        type: vLLM's error type (``BadRequestError``, ``NotFoundError``, ...).
        param: The request field concerned, when there is one.
    """

    def __init__(self, message: str, status: int = 400, type: str = "BadRequestError",
                 param: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = int(status)
        self.type = type
        self.param = param

    def body(self) -> Dict[str, Any]:
        """The JSON body."""
        return error_body(self.message, self.type, self.status, self.param)


def error_body(message: str, type: str, code: int, param: Optional[str] = None) -> Dict[str, Any]:
    """vLLM's ``ErrorResponse``: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": int(code)}}


# -- request models ----------------------------------------------------------------------------

_Texts = Union[str, List[str]]


class _Common(BaseModel):
    """Fields shared by vLLM's scoring requests (``ScoringRequestMixin``)."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model: Optional[str] = None
    user: Optional[str] = None
    request_id: Optional[str] = None
    priority: int = 0
    truncate_prompt_tokens: Optional[int] = Field(default=None, ge=-1)
    truncation_side: Optional[Literal["left", "right"]] = None
    use_activation: Optional[bool] = None
    # Older names of use_activation, still accepted by vLLM.
    activation: Optional[bool] = None
    softmax: Optional[bool] = None
    instruction: Optional[str] = None
    chat_template_kwargs: Optional[Dict[str, Any]] = None
    max_tokens_per_query: int = Field(default=0, ge=0)
    max_tokens_per_doc: int = Field(default=0, ge=0)


class ScoreRequest(_Common):
    """vLLM's ``/score``: the two sides under one of four pairs of names, each a string or a list."""

    queries: Optional[_Texts] = None
    documents: Optional[_Texts] = None
    items: Optional[_Texts] = None
    data_1: Optional[_Texts] = None
    data_2: Optional[_Texts] = None
    text_1: Optional[_Texts] = None
    text_2: Optional[_Texts] = None


class _DocumentObject(BaseModel):
    """A document given as an object (Cohere v1, Jina): only its ``text`` is read."""

    model_config = ConfigDict(extra="ignore")
    text: str


class RerankRequest(_Common):
    """vLLM's ``/rerank`` (Jina and Cohere compatible)."""

    query: str
    documents: Union[str, List[Union[str, _DocumentObject]]]
    top_n: int = Field(default=0, ge=0)
    return_documents: bool = True


class TEIRerankRequest(BaseModel):
    """text-embeddings-inference's ``/rerank``."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model: Optional[str] = None
    query: str
    texts: List[str]
    raw_scores: bool = False
    return_text: bool = False
    truncate: Optional[bool] = False
    truncation_direction: str = "Right"


M = TypeVar("M", bound=BaseModel)


# Segments pydantic adds to an error's location for union branches and wrappers: not field names.
_LOC_MARKERS = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "union", "tagged-union",
                          "function-after", "function-before", "function-wrap", "function-plain", "literal"})


def _loc(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc
             if isinstance(p, int) or not (str(p).lower() in _LOC_MARKERS or any(c in str(p) for c in "[]{}()"))]
    return ".".join(parts)


def _validate(model: Type[M], body: Dict[str, Any]) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0] if errors else {}
        param = _loc(first.get("loc", ())) or None
        details = "; ".join(f"{_loc(e.get('loc', ())) or 'body'}: {e.get('msg')}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        # vLLM answers validation errors with the status phrase as the type.
        raise APIError(f"{len(errors)} validation error(s): {details}{more}", 400,
                       HTTPStatus.BAD_REQUEST.phrase, param) from None


# -- the internal task -------------------------------------------------------------------------


@dataclass
class ScoringTask:
    """One request, in the terms the engine works in.

    Attributes:
        kind: ``"score"``, ``"rerank"`` or ``"tei"`` (how to answer).
        firsts, seconds: The pairs (query side, document side), broadcast to the same length.
        templated: The pairs are plain queries and documents (the family template may apply);
            otherwise they are taken as given.
        instruction: Task instruction for the template (``None``: the template's default).
        limit: Prompt token budget from ``truncate_prompt_tokens`` (``-1`` resolved later to the
            model's maximum); ``None``: not given.
        side: Which end a cut removes: ``"right"`` (the recipe's) or ``"left"``.
        truncate: Whether a templated prompt may be cut to fit (TEI's ``truncate=false`` forbids it).
        max_tokens_per_query, max_tokens_per_doc: Text-level caps (0: none).
        use_activation: Activated scores (true) or raw logits.
        model: The ``model`` field, checked against the served names.
        request_id: Response id suffix.
        top_n: Results to return (``/rerank``; 0: all).
        return_documents: Include each document in the results.
        documents: The documents as given (echoed in rerank results).
    """

    kind: str
    firsts: List[str]
    seconds: List[str]
    templated: bool
    instruction: Optional[str] = None
    limit: Optional[int] = None
    side: str = "right"
    truncate: bool = True
    max_tokens_per_query: int = 0
    max_tokens_per_doc: int = 0
    use_activation: bool = True
    model: Optional[str] = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    top_n: int = 0
    return_documents: bool = True
    documents: List[str] = field(default_factory=list)


def _common_options(req: _Common) -> Dict[str, Any]:
    if req.priority != 0:
        raise APIError("priority scheduling is not enabled: send priority 0 or leave it out", 400,
                       param="priority")
    if req.truncate_prompt_tokens == 0:
        raise APIError("truncate_prompt_tokens must be -1 (the model's maximum) or a positive number of tokens",
                       400, param="truncate_prompt_tokens")
    instruction = req.instruction
    if req.chat_template_kwargs and "instruction" in req.chat_template_kwargs:
        # vLLM: an explicit key in chat_template_kwargs wins over the top-level field.
        instruction = req.chat_template_kwargs["instruction"]
        if instruction is not None and not isinstance(instruction, str):
            raise APIError("chat_template_kwargs.instruction must be a string", 400,
                           param="chat_template_kwargs.instruction")
    use_activation = next((v for v in (req.use_activation, req.softmax, req.activation) if v is not None), True)
    return dict(instruction=instruction, limit=req.truncate_prompt_tokens, side=req.truncation_side or "right",
                max_tokens_per_query=req.max_tokens_per_query, max_tokens_per_doc=req.max_tokens_per_doc,
                use_activation=use_activation, model=req.model)


def _as_list(value: _Texts) -> List[str]:
    return [value] if isinstance(value, str) else list(value)


# vLLM's ScoreRequest union, in its order: the first complete pair of names wins.
_SCORE_FORMS: Tuple[Tuple[str, str, bool], ...] = (
    ("queries", "documents", True),
    ("queries", "items", True),
    ("data_1", "data_2", False),
    ("text_1", "text_2", False),
)


def parse_score(body: Dict[str, Any], request_id: Optional[str] = None) -> ScoringTask:
    """A ``/score`` body as a task. ``queries`` with ``documents`` or ``items`` are plain texts
    (the template applies); ``data_1``/``data_2`` and ``text_1``/``text_2`` are taken as given."""
    req = _validate(ScoreRequest, body)
    for name_1, name_2, templated in _SCORE_FORMS:
        side_1, side_2 = getattr(req, name_1), getattr(req, name_2)
        if side_1 is not None and side_2 is not None:
            break
    else:
        raise APIError("give the pairs as queries + documents, queries + items, data_1 + data_2 or text_1 + text_2",
                       400, HTTPStatus.BAD_REQUEST.phrase, "queries")
    firsts, seconds = _as_list(side_1), _as_list(side_2)
    if not firsts:
        raise APIError(f"{name_1} is empty: at least one text element must be given", 400, param=name_1)
    if not seconds:
        raise APIError(f"{name_2} is empty: at least one text_pair element must be given", 400, param=name_2)
    if len(firsts) == 1:
        firsts = firsts * len(seconds)
    elif len(firsts) != len(seconds):
        raise APIError(f"input lengths must be either 1:1, 1:N or N:N; got {len(firsts)} {name_1} and "
                       f"{len(seconds)} {name_2}", 400, param=name_2)
    return ScoringTask(kind="score", firsts=firsts, seconds=seconds, templated=templated,
                       request_id=req.request_id or request_id or uuid.uuid4().hex, **_common_options(req))


def parse_rerank(body: Dict[str, Any], request_id: Optional[str] = None) -> ScoringTask:
    """A ``/rerank`` body as a task: TEI's shape when it carries ``texts`` and no ``documents``,
    vLLM's (Jina, Cohere) otherwise."""
    if "texts" in body and "documents" not in body:
        return _parse_tei(body, request_id)
    req = _validate(RerankRequest, body)
    docs = [d if isinstance(d, str) else d.text for d in _as_list(req.documents)]
    if not docs:
        raise APIError("documents is empty: at least one document must be given", 400, param="documents")
    return ScoringTask(kind="rerank", firsts=[req.query] * len(docs), seconds=docs, templated=True,
                       top_n=req.top_n, return_documents=req.return_documents, documents=docs,
                       request_id=req.request_id or request_id or uuid.uuid4().hex, **_common_options(req))


def _parse_tei(body: Dict[str, Any], request_id: Optional[str]) -> ScoringTask:
    req = _validate(TEIRerankRequest, body)
    if not req.texts:
        raise APIError("texts is empty: at least one text must be given", 400, param="texts")
    direction = req.truncation_direction.lower()
    if direction not in ("left", "right"):
        raise APIError(f"truncation_direction must be Left or Right, got {req.truncation_direction!r}", 400,
                       param="truncation_direction")
    return ScoringTask(kind="tei", firsts=[req.query] * len(req.texts), seconds=list(req.texts), templated=True,
                       side=direction, truncate=bool(req.truncate), use_activation=not req.raw_scores,
                       model=req.model, return_documents=req.return_text, documents=list(req.texts),
                       request_id=request_id or uuid.uuid4().hex)


# -- responses ---------------------------------------------------------------------------------


def score_response(task: ScoringTask, model_name: str, scores: Sequence[float], prompt_tokens: int,
                   created: Optional[int] = None) -> Dict[str, Any]:
    """vLLM's ``ScoreResponse``."""
    return {
        "id": f"score-{task.request_id}",
        "object": "list",
        "created": int(time.time()) if created is None else created,
        "model": model_name,
        "data": [{"index": i, "object": "score", "score": float(s)} for i, s in enumerate(scores)],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens, "completion_tokens": 0,
                  "prompt_tokens_details": None},
    }


def _order(scores: Sequence[float], top_n: int) -> List[int]:
    # A stable sort, best first: ties keep the documents' order, as vLLM's list.sort does.
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    return order[:top_n] if 0 < top_n < len(order) else order


def rerank_response(task: ScoringTask, model_name: str, scores: Sequence[float], prompt_tokens: int) -> Dict[str, Any]:
    """vLLM's ``RerankResponse``, sorted by score; ``document`` left out when not asked for."""
    results = []
    for i in _order(scores, task.top_n):
        item: Dict[str, Any] = {"index": i}
        if task.return_documents:
            item["document"] = {"text": task.documents[i]}
        item["relevance_score"] = float(scores[i])
        results.append(item)
    return {"id": f"rerank-{task.request_id}", "model": model_name,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}, "results": results}


def tei_rerank_response(task: ScoringTask, scores: Sequence[float]) -> List[Dict[str, Any]]:
    """TEI's answer: a bare list of ``{index, score[, text]}``, best first."""
    out = []
    for i in _order(scores, 0):
        item: Dict[str, Any] = {"index": i, "score": float(scores[i])}
        if task.return_documents:
            item["text"] = task.documents[i]
        out.append(item)
    return out


def models_response(names: Sequence[str], root: str, max_model_len: int, created: int) -> Dict[str, Any]:
    """vLLM's ``/v1/models`` list."""
    data = []
    for name in names:
        data.append({
            "id": name, "object": "model", "created": created, "owned_by": "crossrank", "root": root,
            "parent": None, "max_model_len": max_model_len,
            "permission": [{
                "id": f"modelperm-{uuid.uuid4().hex}", "object": "model_permission", "created": created,
                "allow_create_engine": False, "allow_sampling": False, "allow_logprobs": False,
                "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False,
                "organization": "*", "group": None, "is_blocking": False,
            }],
        })
    return {"object": "list", "data": data}
