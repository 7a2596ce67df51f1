"""The server's JSON response: Starlette's, with an encoding that cannot fail on content JSON can hold."""
from __future__ import annotations

import json
import logging
import math
from typing import Any, List

from fastapi.responses import JSONResponse as _StarletteJSONResponse

__all__ = ["JSONResponse"]

logger = logging.getLogger("crossrank.server")


class _Punct(str):
    """JSON punctuation (and encoded keys) on :func:`_encode_flat`'s stack, told apart from values."""


def _encode_flat(content: Any) -> str:
    """Compact ASCII JSON of ``content`` without recursion: any depth, lone surrogates as escapes,
    NaN and infinities as ``null`` (what JavaScript's ``JSON.stringify`` writes)."""
    out: List[str] = []
    stack: List[Any] = [content]
    while stack:
        item = stack.pop()
        if isinstance(item, _Punct):
            out.append(item)
        elif isinstance(item, dict):
            parts: List[Any] = [_Punct("{")]
            for i, (key, value) in enumerate(item.items()):
                name = key if isinstance(key, str) else json.dumps(key)  # json.dumps's key conversion
                parts += [_Punct(("," if i else "") + json.dumps(name) + ":"), value]
            stack.extend(reversed(parts + [_Punct("}")]))
        elif isinstance(item, (list, tuple)):
            parts = [_Punct("[")]
            for i, value in enumerate(item):
                if i:
                    parts.append(_Punct(","))
                parts.append(value)
            stack.extend(reversed(parts + [_Punct("]")]))
        elif isinstance(item, float) and not math.isfinite(item):
            out.append("null")
        else:
            out.append(json.dumps(item))  # a type JSON has no form for still raises (a bug: a 500)
    return "".join(out)


class JSONResponse(_StarletteJSONResponse):
    """Starlette's JSON response, whose encoding cannot fail on content JSON can hold: a string
    that cannot be UTF-8 (a lone surrogate) is written as a JSON escape, and should a NaN, an
    infinity or nesting too deep for the recursive encoder slip past the body parser (which
    refuses them), it is encoded without recursion, non-finite numbers as ``null``, instead of
    raising (a 500)."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            pass
        except (ValueError, RecursionError) as exc:
            logger.warning("a response could not be encoded as is (%s: %s); encoded without recursion, "
                           "non-finite numbers as null", type(exc).__name__, exc)
        return _encode_flat(content).encode("ascii")
