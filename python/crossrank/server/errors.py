"""Error bodies: vLLM's shape on the vLLM routes, TEI's shape on TEI's ``/rerank``.

Every handler raises :class:`APIError`; the app answers it in the shape of the route the request
came in on:

* vLLM (and Jina, Cohere): ``{"error": {"message", "type", "param", "code"}, "detail": message}``,
  with ``code`` the HTTP status. ``detail`` is the key Jina's client (and FastAPI's default) reads;
  vLLM's clients ignore it.
* TEI: ``{"error": message, "error_type": ..., "detail": message}`` with the codes of TEI's
  ``impl From<&ErrorType> for StatusCode`` (router/src/http/server.rs): its own validation (more
  texts than ``--max-client-batch-size``, an over-long input with ``truncate: false``) 413, a
  tokenizer refusal 422, empty input 400, overloaded 429, unhealthy 503, backend 424. A body that
  TEI's JSON extractor refuses (a missing or mistyped field, an unknown enum value, JSON that does
  not parse) never reaches those checks: axum answers it 422 (``TEI_REJECTED``), in plain text
  where crossrank keeps the JSON shape with ``error_type`` ``Validation``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

__all__ = ["APIError", "error_body", "tei_error", "TEI_REJECTED", "TEI_STATUS"]

#: TEI's ``error_type`` values and the HTTP status TEI answers each with.
TEI_STATUS: Dict[str, int] = {
    "Validation": 413,
    "Tokenizer": 422,
    "Empty": 400,
    "Overloaded": 429,
    "Unhealthy": 503,
    "Backend": 424,
}
#: The status of a TEI-shaped body that TEI's JSON extractor itself refuses.
TEI_REJECTED = 422


class APIError(Exception):
    """An error for the client, in the shape of its route.

    Args:
        message: What went wrong and how to fix it.
        status: HTTP status on the vLLM routes.
        type: vLLM's error type (``BadRequestError``, ``NotFoundError``, ...).
        param: The request field concerned, when there is one.
        tei_type: TEI's ``error_type`` when the request came in TEI's shape and one of TEI's own
            checks refuses it (``Validation``: 413); ``None``: derived from ``status`` (4xx: a body
            TEI's extractor refuses, ``Validation`` at 422; 503: ``Unhealthy``; else ``Backend``).
    """

    def __init__(self, message: str, status: int = 400, type: str = "BadRequestError",
                 param: Optional[str] = None, tei_type: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = int(status)
        self.type = type
        self.param = param
        self.tei_type = tei_type

    def body(self) -> Dict[str, Any]:
        """The JSON body in vLLM's shape."""
        return error_body(self.message, self.type, self.status, self.param)

    def tei(self) -> Tuple[int, Dict[str, Any]]:
        """``(status, body)`` in TEI's shape."""
        if self.tei_type is not None:
            return tei_error(self.message, self.tei_type, self.status)
        if 400 <= self.status < 500:  # refused before TEI's own checks would run
            return tei_error(self.message, "Validation", self.status if self.status in _KEPT else TEI_REJECTED)
        return tei_error(self.message, "Unhealthy" if self.status == 503 else "Backend", self.status)


# answered before or beyond TEI's own checks (the API key, the model name, the body's size and
# parse, the request timeout): these keep their status on TEI's route
_KEPT = (401, 404, 413, TEI_REJECTED, 504)


def error_body(message: str, type: str, code: int, param: Optional[str] = None) -> Dict[str, Any]:
    """vLLM's ``ErrorResponse``, ``{"error": {"message", "type", "param", "code"}}``, plus ``detail``."""
    return {"error": {"message": message, "type": type, "param": param, "code": int(code)}, "detail": message}


def tei_error(message: str, error_type: str, status: Optional[int] = None) -> Tuple[int, Dict[str, Any]]:
    """``(status, body)`` of a TEI error: TEI's code for ``error_type`` (the given ``status`` for
    a type TEI does not have, such as a timeout)."""
    code = TEI_STATUS.get(error_type, status if status is not None else 500)
    if status in _KEPT:
        code = status
    return code, {"error": message, "error_type": error_type, "detail": message}
