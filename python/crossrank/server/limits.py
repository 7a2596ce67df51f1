"""What keeps a request cheap to refuse: the body parser's bounds, the per-request item count, the
admission permits taken before a body is parsed, and the character bound that refuses a text
which cannot fit before tokenizing it.

* :func:`parse_json_body`: ``json.loads`` with integers bounded in digits (Python refuses to
  build an int of more than 4,300 digits, and a ``ValueError`` there would be a 500), no
  ``NaN``/``Infinity`` (not JSON; Python's parser takes them, and ``1e999`` reads as infinity, but
  the response encoder refuses them when an object document is echoed), nesting bounded
  (:data:`MAX_DEPTH` levels: the response encoder recurses, so a deeper echoed document would be
  a ``RecursionError``), and every string checked for a lone surrogate escape (``\\ud800`` without
  its pair: such a string can be neither tokenized nor echoed in a UTF-8 response), each refused
  with a 400 (the one for a lone surrogate names the place).
* :func:`check_items`: the list fields of a scoring body are counted and their element types
  checked before any per-item object is built, so a million-item body costs a length check and
  one pass over the list, never a million validation errors.
* :func:`refuse_unfittable`: a text that provably cannot fit where cutting is off is refused by
  its character count, before any tokenizing; where cutting is on, :func:`pre_cut` cuts each text
  by characters to the ends that can survive of it, so a 15 MB document costs no more tokenizing
  than its budget; :func:`slices` cuts the rest into units of tokenization work.
* :class:`Admission`: a counter of scoring requests admitted (from before the body is read to
  the answer); above ``max_concurrent_requests`` a request is refused at once (TEI: 429
  ``Overloaded``; vLLM routes: 503), with ``Retry-After``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Dict, List, NoReturn, Optional, Tuple

from .engine import REDUCE_PROMPT, ScoringEngine
from .errors import TEI_REJECTED, APIError, error_body, tei_error
from .protocol import ScoringTask

__all__ = ["MAX_INT_DIGITS", "MAX_DEPTH", "parse_json_body", "check_items", "ITEM_FIELDS", "Admission",
           "looks_like_tei", "overloaded_response", "refuse_unfittable", "pre_cut", "slices"]

#: Longest integer literal accepted anywhere in a body (far below Python's 4,300-digit limit).
MAX_INT_DIGITS = 100

#: Deepest nesting of arrays and objects accepted in a body (the body object itself is level 1).
#: Real clients stay far below; Python's JSON encoder, which recurses, handles it from any thread.
MAX_DEPTH = 64

#: The list fields of scoring bodies whose length is the request's item count.
ITEM_FIELDS = ("documents", "texts", "queries", "items", "data_1", "data_2", "text_1", "text_2")

# A \ud800-\udfff escape somewhere in the raw body: only then can a decoded string hold a lone
# surrogate (a valid pair decodes into one code point), so the walk below is skipped otherwise.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LONE = re.compile("[\ud800-\udfff]")
_TOO_DEEP = (f"the request body is nested too deeply: at most {MAX_DEPTH} levels of arrays and objects are "
             "accepted")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise APIError(f"the request body holds an integer of {len(text.lstrip('-'))} digits; integers of at most "
                       f"{MAX_INT_DIGITS} digits are accepted", 400)
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999: Python reads infinity, which no JSON response can hold
        shown = text if len(text) <= 24 else text[:20] + "..."
        raise APIError(f"the request body holds the number {shown}, which overflows a 64-bit float to infinity "
                       "(JSON has no NaN or Infinity); send a finite number", 400)
    return value


def _no_constant(name: str) -> NoReturn:
    raise APIError(f"the request body holds {name}, which is not JSON (JSON has no NaN or Infinity); send a "
                   "finite number, a string or null", 400)


def _too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests arrays and objects more than ``limit`` levels deep (``value`` is level
    1). Level by level, without recursion: a recursive walk would hit the limit this bound avoids."""
    level = [value]
    for _ in range(limit):
        level = [child for item in level for child in (item.values() if isinstance(item, dict) else item)
                 if isinstance(child, (dict, list))]
        if not level:
            return False
    return True


def _find_lone_surrogate(value: Any, path: str) -> Optional[str]:
    """The path of the first string (key or value) holding a lone surrogate, else ``None``."""
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if _LONE.search(item):
                return where or "body"
        elif isinstance(item, dict):
            for k, v in item.items():
                sub = f"{where}.{k}" if where else str(k)
                if _LONE.search(k):
                    return where or "body"
                stack.append((v, sub))
        elif isinstance(item, list):
            stack.extend((v, f"{where}.{i}") for i, v in enumerate(item))
    return None


def parse_json_body(raw: bytes) -> Dict[str, Any]:
    """The body as a JSON object, or an :class:`APIError` (400) saying what is wrong with it."""
    if not raw:
        raise APIError("the request body is empty: send a JSON object", 400)
    try:
        body = json.loads(raw, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise APIError(f"the request body is not valid JSON: {exc}", 400) from None
    except RecursionError:
        raise APIError(_TOO_DEEP, 400) from None
    except ValueError as exc:  # a number Python cannot build
        raise APIError(f"the request body holds a number that cannot be read: {exc}", 400) from None
    if not isinstance(body, dict):
        raise APIError(f"the request body must be a JSON object, got {type(body).__name__}", 400)
    # Only a body with more brackets than the limit can nest deeper than it: skip the walk otherwise.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _too_deep(body, MAX_DEPTH):
        raise APIError(_TOO_DEEP, 400)
    if _SURROGATE_ESCAPE.search(raw):
        where = _find_lone_surrogate(body, "")
        if where is not None:
            raise APIError(f"{where} holds a lone surrogate escape (\\ud800-\\udfff without its pair); send valid "
                           "Unicode text", 400, param=where.split(".")[0] if where != "body" else None)
    return body


def check_items(body: Dict[str, Any], max_items: int, *, tei: bool) -> None:
    """Refuses, before any per-item object is built, a list field with more than ``max_items``
    elements (TEI: 413 ``Validation``, as TEI answers above ``--max-client-batch-size``; vLLM
    routes: 400) and a list whose elements are of a type no route accepts (the first one named)."""
    for name in ITEM_FIELDS:
        value = body.get(name)
        if not isinstance(value, list):
            continue
        if len(value) > max_items:
            raise APIError(f"{name} holds {len(value)} items; this server takes at most {max_items} per request "
                           "(crossrank serve --max-client-batch-size): split the request", 413 if tei else 400,
                           param=name, tei_type="Validation")
        # documents may hold objects (Cohere v1, Jina, multimodal parts); every other list holds text.
        allowed = (str, dict) if name in ("documents", "text_2", "data_2", "items") else (str,)
        bad = next((i for i, v in enumerate(value) if not isinstance(v, allowed)), None)
        if bad is not None:
            got = value[bad]
            raise APIError(f"{name}.{bad} must be {'a string or an object' if dict in allowed else 'a string'}, got "
                           f"{'null' if got is None else type(got).__name__}", TEI_REJECTED if tei else 400,
                           param=f"{name}.{bad}")


def looks_like_tei(raw: bytes) -> bool:
    """Whether an unparsed body is in TEI's ``/rerank`` shape (a ``texts`` key, no ``documents``):
    only to pick the shape of an overload answer, which is given before the body is parsed."""
    return b'"texts"' in raw and b'"documents"' not in raw


def overloaded_response(message: str, tei: bool) -> Tuple[int, Dict[str, Any]]:
    """``(status, body)`` of an overload refusal: TEI's 429 ``Overloaded`` or vLLM's 503."""
    if tei:
        return tei_error(message, "Overloaded", 429)
    return 503, error_body(message, "ServiceUnavailableError", 503)


class Admission:
    """Permits for scoring requests, taken before the body is read and given back with the answer.

    Args:
        limit: Scoring requests admitted at once (``--max-concurrent-requests``).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.admitted = 0

    def try_acquire(self) -> bool:
        """Takes a permit when one is free (the event loop is single-threaded: no lock needed)."""
        if self.admitted >= self.limit:
            return False
        self.admitted += 1
        return True

    def release(self) -> None:
        """Gives a permit back."""
        self.admitted -= 1


def _budget(engine: ScoringEngine, task: ScoringTask) -> Tuple[int, bool, bool]:
    """``(budget, templated, no_cut)``: the task's prompt token budget, whether its pairs get the
    prompt template, and whether an over-long pair is refused rather than cut."""
    budget = task.limit if task.limit not in (None, -1) else engine.max_length
    templated = (task.templated and engine.templated) or engine.chat_templated
    # TEI's route cuts pairs as given to the maximum unless truncate is false; vLLM's only with
    # truncate_prompt_tokens.
    no_cut = not task.truncate or (not templated and task.limit is None and task.kind != "tei")
    return budget, templated, no_cut


def refuse_unfittable(engine: ScoringEngine, task: ScoringTask) -> None:
    """Refuses, before tokenizing, a pair that provably cannot fit where the request forbids
    cutting it (TEI's ``truncate: false``; pairs taken as given without
    ``truncate_prompt_tokens``) and a query that alone cannot fit where the vLLM routes refuse
    it: the number of characters gives a lower bound on the tokens
    (:meth:`~crossrank.server.engine.ScoringEngine.min_tokens`)."""
    budget, templated, no_cut = _budget(engine, task)
    longest = max(len(a) + len(b) for a, b in zip(task.firsts, task.seconds)) if no_cut else 0
    if no_cut and engine.min_tokens(longest) > budget:
        i = next(k for k, (a, b) in enumerate(zip(task.firsts, task.seconds)) if len(a) + len(b) == longest)
        raise APIError(f"input {i} does not fit the model's maximum of {budget} tokens: its {longest} characters "
                       f"make at least {engine.min_tokens(longest)} tokens; "
                       + ("send truncate=true (or truncate_prompt_tokens) to cut the document" if task.kind == "tei"
                          else "shorten it or send truncate_prompt_tokens (-1: the model's maximum)"),
                       413 if task.kind == "tei" else 400, param="truncate" if task.kind == "tei"
                       else "truncate_prompt_tokens", tei_type="Validation")
    if templated and task.fit == "refuse":
        query = max(task.firsts, key=len)
        if engine.min_tokens(len(query)) > budget:
            raise APIError(f"This model's maximum context length is {budget} tokens, and a query of "
                           f"{len(query)} characters makes at least {engine.min_tokens(len(query))}, leaving no "
                           f"room for the document. {REDUCE_PROMPT}", 400, param="query")


def pre_cut(engine: ScoringEngine, task: ScoringTask) -> ScoringTask:
    """The task with each text cut by characters to the ends that can survive of it where the
    request lets an over-long prompt be cut
    (:meth:`~crossrank.server.engine.ScoringEngine.pre_cut`): the token ids come out as for the
    whole texts, and tokenizing costs at most the budget's worth of characters per text instead
    of the whole body. Nothing is cut where an over-long prompt is refused (the refusal is
    :func:`refuse_unfittable`'s)."""
    budget, _, no_cut = _budget(engine, task)
    if no_cut:
        return task
    # max_tokens_* keeps a text's first tokens before the prompt is cut: that many must survive.
    firsts = engine.pre_cut(task.firsts, task.max_tokens_per_query or budget)
    seconds = engine.pre_cut(task.seconds, task.max_tokens_per_doc or budget)
    if firsts == task.firsts and seconds == task.seconds:
        return task
    return dataclasses.replace(task, firsts=firsts, seconds=seconds)


def slices(task: ScoringTask, max_pairs: int, max_chars: int) -> List[range]:
    """The task's pairs in slices of at most ``max_pairs`` pairs and about ``max_chars``
    characters (a single longer pair is a slice of its own): the units of tokenization work."""
    out: List[range] = []
    start, chars = 0, 0
    for i, (a, b) in enumerate(zip(task.firsts, task.seconds)):
        size = len(a) + len(b)
        if i > start and (i - start >= max_pairs or chars + size > max_chars):
            out.append(range(start, i))
            start, chars = i, 0
        chars += size
    out.append(range(start, len(task.firsts)))
    return out
