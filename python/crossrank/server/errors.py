"""Error bodies: vLLM's shape on the vLLM routes, TEI's shape on TEI's ``/rerank``.

Every handler raises :class:`APIError`; the app answers it in the shape of the route the request
came in on:

* vLLM (and Jina, Cohere): ``{"error": {"message", "type", "param", "code"}, "detail": message}``,
  with ``code`` the HTTP status. ``detail`` is the key Jina's client (and FastAPI's default) reads;
  vLLM's clients ignore it.
* TEI (since v1.9): ``{"error": message, "error_type": ..., "detail": message}`` with TEI's codes:
  validation (a bad field, an over-long input with ``truncate: false``, a tokenizer refusal) 422,
  empty input 400, overloaded 429, unhealthy 503, backend 500.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

__all__ = ["APIError", "error_body", "tei_error", "TEI_STATUS"]

#: TEI's ``error_type`` values and the HTTP status TEI answers each with.
TEI_STATUS: Dict[str, int] = {
    "Validation": 422,
    "Tokenizer": 422,
    "Empty": 400,
    "Overloaded": 429,
    "Unhealthy": 503,
    "Backend": 500,
}


class APIError(Exception):
    """An error for the client, in the shape of its route.

    Args:
        message: What went wrong and how to fix it.
        status: HTTP status on the vLLM routes.
        type: vLLM's error type (``BadRequestError``, ``NotFoundError``, ...).
        param: The request field concerned, when there is one.
        tei_type: TEI's ``error_type`` when the request came in TEI's shape; ``None``: derived from
            ``status`` (4xx: ``Validation``; 503: ``Unhealthy``; else ``Backend``).
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
        return tei_error(self.message, self.tei_type or _tei_type_of(self.status), self.status)


def _tei_type_of(status: int) -> str:
    if status == 503:
        return "Unhealthy"
    if 400 <= status < 500:
        return "Validation"
    return "Backend"


def error_body(message: str, type: str, code: int, param: Optional[str] = None) -> Dict[str, Any]:
    """vLLM's ``ErrorResponse``, ``{"error": {"message", "type", "param", "code"}}``, plus ``detail``."""
    return {"error": {"message": message, "type": type, "param": param, "code": int(code)}, "detail": message}


def tei_error(message: str, error_type: str, status: Optional[int] = None) -> Tuple[int, Dict[str, Any]]:
    """``(status, body)`` of a TEI error: TEI's code for ``error_type`` (the given ``status`` for
    a type TEI does not have, such as a timeout)."""
    code = TEI_STATUS.get(error_type, status if status is not None else 500)
    if status in (401, 404, 413, 504):  # answered before or beyond TEI's own checks: keep the status
        code = status
    return code, {"error": message, "error_type": error_type, "detail": message}
