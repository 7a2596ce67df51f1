"""Request and response shapes of vLLM's ``/score`` and ``/rerank`` (with Jina's and Cohere's
fields: ``return_documents``, ``rank_fields``, ``max_tokens_per_doc``, ``priority``).

Requests are validated with pydantic, in lax mode and ignoring unknown fields, as vLLM's models
are; a JSON ``null`` in a top-level field means the field is absent (the official Cohere SDK sends
``null`` for every argument left as ``None``). Every failure becomes an
:class:`~crossrank.server.errors.APIError`. TEI's ``/rerank`` shape is in
:mod:`~crossrank.server.tei`.

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

from .errors import APIError, error_body

__all__ = [
    "APIError",
    "error_body",
    "ScoreRequest",
    "RerankRequest",
    "ScoringTask",
    "parse_score",
    "parse_rerank",
    "score_response",
    "rerank_response",
    "drop_nulls",
    "document_texts",
    "query_text",
    "validate_request",
    "rank_order",
    "models_response",
]


# -- request models ----------------------------------------------------------------------------

_Texts = Union[str, List[str]]


def drop_nulls(body: Dict[str, Any]) -> Dict[str, Any]:
    """The body without its top-level ``null`` fields: ``null`` means "absent" on every route."""
    return {k: v for k, v in body.items() if v is not None}


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
    # Cohere's and vLLM's caps: a positive number of tokens, or absent (no cap).
    max_tokens_per_query: Optional[int] = None
    max_tokens_per_doc: Optional[int] = None


class ScoreRequest(_Common):
    """vLLM's ``/score``: the two sides under one of four pairs of names, each a string or a list."""

    queries: Optional[_Texts] = None
    documents: Optional[_Texts] = None
    items: Optional[_Texts] = None
    data_1: Optional[_Texts] = None
    data_2: Optional[_Texts] = None
    text_1: Optional[_Texts] = None
    text_2: Optional[_Texts] = None


class RerankRequest(_Common):
    """vLLM's ``/rerank`` (Jina and Cohere v1/v2 compatible). ``documents`` holds strings or objects
    (Cohere v1, Jina); objects are read by :func:`document_texts`."""

    # A string, or vLLM's {"text": ...} object.
    query: Union[str, Dict[str, Any]]
    documents: Union[str, List[Any]]
    # 0 or negative: every document, as vLLM reads it (``top_n if top_n > 0 else len(results)``).
    top_n: int = 0
    return_documents: bool = True
    rank_fields: Optional[List[str]] = None
    # Cohere v1's chunking of long documents: accepted; crossrank truncates instead (docs/server.md).
    max_chunks_per_doc: Optional[int] = Field(default=None, ge=1)


# Keys of vLLM's multimodal score inputs.
_MEDIA_KEYS = ("image_url", "image", "image_embeds", "video_url", "audio_url", "input_audio")


def _refuse_media(obj: Dict[str, Any], where: str) -> None:
    content = obj.get("content")
    parts = content if isinstance(content, list) else []
    kinds = [k for k in _MEDIA_KEYS if k in obj] + [p.get("type") for p in parts
                                                    if isinstance(p, dict) and p.get("type") not in (None, "text")]
    if kinds:
        raise APIError(f"{where} is {kinds[0]} input: this server runs a text reranker, not a multimodal "
                       "(vision or audio) model; send text", 400, param=where)


def _refuse_media_forms(body: Dict[str, Any], names: Sequence[str]) -> None:
    """vLLM's multimodal form of a side (``{"content": [{"type": "image_url", ...}]}``) refused in
    words before validation, which would only say the object is not a string or a list."""
    for name in names:
        value = body.get(name)
        if isinstance(value, dict):
            _refuse_media(value, name)


def query_text(query: Union[str, Dict[str, Any]]) -> str:
    """The query's text: a string, or vLLM's ``{"text": ...}`` object."""
    if isinstance(query, str):
        return query
    _refuse_media(query, "query")
    text = query.get("text")
    if not isinstance(text, str):
        raise APIError("query must be a string or an object with a text field", 400, param="query")
    return text


def document_texts(documents: Union[str, List[Any]], rank_fields: Optional[List[str]]) -> List[str]:
    """The text of each document: a string as given; an object's ``text`` field, or with Cohere v1's
    ``rank_fields`` the named fields in order (one field: its value; several: ``"key: value"`` lines,
    the form Cohere's documentation gives for structured documents)."""
    if isinstance(documents, str):
        return [documents]
    fields = list(rank_fields) if rank_fields is not None else ["text"]
    if not fields or not all(isinstance(f, str) and f for f in fields):
        raise APIError("rank_fields must be a non-empty list of field names", 400, param="rank_fields")
    out = []
    for i, doc in enumerate(documents):
        if isinstance(doc, str):
            out.append(doc)
            continue
        if not isinstance(doc, dict):
            raise APIError(f"documents.{i} must be a string or an object with a text field, got "
                           f"{type(doc).__name__ if doc is not None else 'null'}", 400, param=f"documents.{i}")
        _refuse_media(doc, f"documents.{i}")
        values = []
        for name in fields:
            value = doc.get(name)
            if value is None:
                where = "rank_fields names it" if rank_fields else "an object document is read from its text field"
                raise APIError(f"documents.{i} has no field {name!r} ({where})", 400, param=f"documents.{i}")
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise APIError(f"documents.{i}.{name} must be a string, got {type(value).__name__}", 400,
                               param=f"documents.{i}.{name}")
            values.append(str(value))
        out.append(values[0] if len(fields) == 1 else "\n".join(f"{k}: {v}" for k, v in zip(fields, values)))
    return out


M = TypeVar("M", bound=BaseModel)


# Segments pydantic adds to an error's location for union branches and wrappers: not field names.
_LOC_MARKERS = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "union", "tagged-union",
                          "function-after", "function-before", "function-wrap", "function-plain", "literal"})


def _loc(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc
             if isinstance(p, int) or not (str(p).lower() in _LOC_MARKERS or any(c in str(p) for c in "[]{}()"))]
    return ".".join(parts)


def validate_request(model: Type[M], body: Dict[str, Any]) -> M:
    """``body`` validated into ``model``; a failure is a 400 naming the fields (never a class name)."""
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
        template_vars: The other ``chat_template_kwargs``: variables for a chat template in force.
        limit: Prompt token budget from ``truncate_prompt_tokens`` (``-1`` resolved later to the
            model's maximum); ``None``: not given.
        side: Which end a cut removes: ``"right"`` (the recipe's) or ``"left"``.
        truncate: Whether a templated prompt may be cut to fit (TEI's ``truncate=false`` forbids it).
        fit: What happens when the query with the template leaves no room for the document:
            ``"refuse"`` (vLLM: 400) or ``"longest_first"`` (TEI: the query is cut too).
        max_tokens_per_query, max_tokens_per_doc: Text-level caps (0: none).
        use_activation: Activated scores (true) or raw logits.
        model: The ``model`` field, checked against the served names.
        request_id: Response id suffix.
        top_n: Results to return (``/rerank``; 0: all).
        return_documents: Include each document in the results.
        documents: The documents' texts.
        echoed: Per document, what rerank results echo as ``document``: ``{"text": ...}`` for a
            string, the object itself for an object document (as Cohere v1 echoes it).
    """

    kind: str
    firsts: List[str]
    seconds: List[str]
    templated: bool
    instruction: Optional[str] = None
    template_vars: Dict[str, Any] = field(default_factory=dict)
    limit: Optional[int] = None
    side: str = "right"
    truncate: bool = True
    fit: str = "refuse"
    max_tokens_per_query: int = 0
    max_tokens_per_doc: int = 0
    use_activation: bool = True
    model: Optional[str] = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    top_n: int = 0
    return_documents: bool = True
    documents: List[str] = field(default_factory=list)
    echoed: List[Any] = field(default_factory=list)


def _common_options(req: _Common) -> Dict[str, Any]:
    # Cohere documents priority as a hint (0 highest); vLLM's scheduler uses it. crossrank serves in
    # arrival order and ignores it (docs/server.md), refusing only what neither peer accepts.
    if req.priority < 0:
        raise APIError(f"priority must be an integer >= 0, got {req.priority}", 400, param="priority")
    for name in ("max_tokens_per_query", "max_tokens_per_doc"):
        value = getattr(req, name)
        if value is not None and value < 1:
            raise APIError(f"{name} must be a positive integer (or absent for no limit), got {value}", 400,
                           param=name)
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
    variables = {k: v for k, v in (req.chat_template_kwargs or {}).items() if k != "instruction"}
    return dict(instruction=instruction, template_vars=variables, limit=req.truncate_prompt_tokens,
                side=req.truncation_side or "right",
                max_tokens_per_query=req.max_tokens_per_query or 0, max_tokens_per_doc=req.max_tokens_per_doc or 0,
                use_activation=use_activation, model=req.model)


def _as_list(value: _Texts) -> List[str]:
    return [value] if isinstance(value, str) else list(value)


# Every side of /score's forms.
_SCORE_SIDES = ("queries", "documents", "items", "data_1", "data_2", "text_1", "text_2")

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
    _refuse_media_forms(body, _SCORE_SIDES)
    req = validate_request(ScoreRequest, drop_nulls(body))
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
    """A vLLM (Jina, Cohere) ``/rerank`` body as a task. TEI's shape is read by
    :func:`crossrank.server.tei.parse_tei_rerank`."""
    _refuse_media_forms(body, ("query", "documents"))
    req = validate_request(RerankRequest, drop_nulls(body))
    docs = document_texts(req.documents, req.rank_fields)
    if not docs:
        raise APIError("documents is empty: at least one document must be given", 400, param="documents")
    given = [req.documents] if isinstance(req.documents, str) else req.documents
    echoed = [d if isinstance(d, dict) else {"text": t} for d, t in zip(given, docs)]
    return ScoringTask(kind="rerank", firsts=[query_text(req.query)] * len(docs), seconds=docs, templated=True,
                       top_n=req.top_n, return_documents=req.return_documents, documents=docs, echoed=echoed,
                       request_id=req.request_id or request_id or uuid.uuid4().hex, **_common_options(req))


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


def rank_order(scores: Sequence[float], top_n: int) -> List[int]:
    """Indices best first (stable: ties keep the input order), the first ``top_n`` (0: all)."""
    # A stable sort, best first: ties keep the documents' order, as vLLM's list.sort does.
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    return order[:top_n] if 0 < top_n < len(order) else order


def rerank_response(task: ScoringTask, model_name: str, scores: Sequence[float], prompt_tokens: int) -> Dict[str, Any]:
    """vLLM's ``RerankResponse``, sorted by score; ``document`` left out when not asked for."""
    results = []
    for i in rank_order(scores, task.top_n):
        item: Dict[str, Any] = {"index": i}
        if task.return_documents:
            item["document"] = task.echoed[i] if task.echoed else {"text": task.documents[i]}
        item["relevance_score"] = float(scores[i])
        results.append(item)
    return {"id": f"rerank-{task.request_id}", "model": model_name,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}, "results": results}


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
