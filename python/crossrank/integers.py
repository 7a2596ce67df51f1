"""The one check of integer options (``batch_size``, ``chunk_size``, ``max_length``, ``top_k``, ...).

Any integer type is taken (``operator.index``: Python and NumPy integers, as sentence-transformers
and NumPy code pass them) and returned as a Python ``int`` for the C engine; ``bool`` is refused,
since ``batch_size=True`` is a mistake rather than a size.
"""
from __future__ import annotations

import operator
from typing import Any, Optional

__all__ = ["as_int", "positive_int"]


def as_int(value: Any, name: str, *, minimum: Optional[int] = None, what: str = "an integer") -> int:
    """``value`` as a Python ``int``, or a ``ValueError`` naming ``name``, for a bool, a non-integer
    or a value below ``minimum``; ``what`` says in the message what was expected."""
    if not isinstance(value, bool):
        try:
            number = operator.index(value)
        except TypeError:
            pass
        else:
            if minimum is None or number >= minimum:
                return number
    raise ValueError(f"{name} must be {what}, got {value!r}")


def positive_int(value: Any, name: str, *, what: str = "a positive integer") -> int:
    """:func:`as_int` with a minimum of 1."""
    return as_int(value, name, minimum=1, what=what)
