"""Typed reads of config values, with errors that say where a bad value came from.

Types are checked here; the engine's bounds on the dimensions are not (they live in C,
:func:`crossrank.config.normalize.check_bounds`). The few bounds checked here are of keys the
engine never sees (``max_position_embeddings``, ``sliding_window``, ``num_labels``, ...).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from ..errors import ConfigError

__all__ = ["Source", "is_int", "is_number", "get_int", "get_bool", "get_float", "get_token_id", "PYTHON_BOUNDS"]

#: Bounds (inclusive) of the integer keys the C engine does not receive.
PYTHON_BOUNDS: Dict[str, Tuple[int, int]] = {
    "max_position_embeddings": (1, 1 << 30),
    "sliding_window": (1, 1 << 30),
    "max_window_layers": (0, 1 << 30),
    "num_labels": (1, 1 << 20),
}


class Source:
    """Where values come from (``config.json`` or ``hf_overrides``), for error messages.

    Attributes:
        label: the config's name in messages (its path, or "the config dict").
        config: the config as read, before overrides.
        overrides: the ``hf_overrides`` dict.
    """

    def __init__(self, label: str, config: Mapping[str, Any], overrides: Mapping[str, Any]) -> None:
        self.label = label
        self.config = config
        self.overrides = overrides

    def where(self, key: str) -> str:
        """``"hf_overrides"`` when ``key`` (or its top-level part) is overridden, else the label."""
        top = key.split(".", 1)[0]
        if top in self.overrides:
            return "hf_overrides"
        return self.label


def is_int(v: Any) -> bool:
    """A JSON integer (``bool`` excluded)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A JSON number (``bool`` excluded)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def get_int(key: str, v: Any, src: Source) -> int:
    """Check that ``v`` (the value of ``key``) is an integer, within :data:`PYTHON_BOUNDS` if listed.

    The dimensions the engine receives are only type-checked here: their bounds are the engine's.
    """
    bounds = PYTHON_BOUNDS.get(key)
    if not is_int(v) or (bounds is not None and not bounds[0] <= v <= bounds[1]):
        need = f"an integer in [{bounds[0]}, {bounds[1]}]" if bounds else "an integer"
        raise ConfigError(
            f"config key {key!r} must be {need}, got {v!r} "
            f"(from {src.where(key)}). Fix the value, or override it with hf_overrides={{{key!r}: ...}}."
        )
    return int(v)


def get_bool(m: Mapping[str, Any], key: str, default: bool, src: Source) -> bool:
    """``m[key]`` as a JSON boolean; ``default`` when absent or null."""
    v = m.get(key, None)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ConfigError(
            f"config key {key!r} must be a JSON boolean (true/false), got {v!r} of type "
            f"{type(v).__name__} (from {src.where(key)})."
        )
    return v


def get_float(m: Mapping[str, Any], key: str, src: Source, *, positive: bool = False) -> Optional[float]:
    """``m[key]`` as a finite float (``> 0`` when ``positive``); ``None`` when absent or null."""
    v = m.get(key, None)
    if v is None:
        return None
    if not is_number(v) or not math.isfinite(float(v)) or (positive and not float(v) > 0):
        need = "a finite number > 0" if positive else "a finite number"
        raise ConfigError(f"config key {key!r} must be {need}, got {v!r} (from {src.where(key)}).")
    return float(v)


def get_token_id(m: Mapping[str, Any], key: str, default: Any, src: Source) -> Union[int, Tuple[int, ...], None]:
    """A special token id (``eos_token_id`` may be a list), or ``None``."""
    v = m.get(key, default)
    if v is None or is_int(v):
        return v
    if key == "eos_token_id" and isinstance(v, (list, tuple)) and all(is_int(x) for x in v):
        return tuple(int(x) for x in v)
    raise ConfigError(f"config key {key!r} must be an integer or null, got {v!r} (from {src.where(key)}).")
