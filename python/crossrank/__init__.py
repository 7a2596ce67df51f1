"""crossrank: LLM rerankers on the CPU, with the reference implementations' scores.

>>> from crossrank import CrossEncoder
>>> model = CrossEncoder("Qwen/Qwen3-Reranker-0.6B")
>>> model.score("What is the capital of China?", ["Beijing is the capital of China.", "Gravity."])
"""
from typing import Dict

from . import _core
from .convert import convert
from .errors import (Cancelled, CheckpointError, ConfigError, CrossrankError, ModelNotFoundError,
                     NumericalError, TooLongError, UnsupportedModelError)
from .model import CancelToken, CrossEncoder
from .templates import TEMPLATES, Template, get_template
from .tokenization import Encoded

__version__ = "0.1.0"

__all__ = [
    "CrossEncoder",
    "CancelToken",
    "convert",
    "Template",
    "TEMPLATES",
    "get_template",
    "Encoded",
    "cpu_info",
    "CrossrankError",
    "CheckpointError",
    "ConfigError",
    "ModelNotFoundError",
    "UnsupportedModelError",
    "Cancelled",
    "NumericalError",
    "TooLongError",
    "__version__",
]


def cpu_info() -> Dict[str, str]:
    """The kernels crossrank uses on this CPU.

    Returns:
        ``{"isa": kernels in use, "detected": best level the CPU and OS allow, "features": ...}``.
        ``CROSSRANK_ISA=ref|avx2|avx512|avx512bf16`` (read at import) caps the level.
    """
    return dict(_core.cpu_info())
