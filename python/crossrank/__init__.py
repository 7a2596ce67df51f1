"""crossrank: LLM rerankers on the CPU, with the reference implementations' scores.

>>> from crossrank import CrossEncoder
>>> model = CrossEncoder("Qwen/Qwen3-Reranker-0.6B")
>>> model.score("What is the capital of China?", ["Beijing is the capital of China.", "Gravity."])
"""
from typing import Dict

from . import _core
from .convert import convert
from .errors import (Cancelled, CheckpointError, ConfigError, CrossrankError, ModelNotFoundError,
                     NumericalError, TokenizationError, TooLongError, UnsupportedModelError)
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
    "build_info",
    "CrossrankError",
    "CheckpointError",
    "ConfigError",
    "ModelNotFoundError",
    "UnsupportedModelError",
    "Cancelled",
    "NumericalError",
    "TooLongError",
    "TokenizationError",
    "__version__",
]


def cpu_info() -> Dict[str, str]:
    """The kernels crossrank uses on this CPU.

    Returns:
        ``{"isa": kernels in use, "detected": best level the CPU and OS allow, "features": ...,
        "vendor": the CPUID vendor ("GenuineIntel", "AuthenticAMD"), "amx": "usable" | "not asked
        yet" | why not}``. ``CROSSRANK_ISA=ref|avx2|avxvnni|avx512|avx512vnni|avx512bf16|amx``
        (read at import) caps the level. The AMX permission is asked from the OS at the first
        bfloat16 or int8 load (or ``dtype="auto"``), not at import; if the OS refuses, ``isa``
        becomes ``"avx512bf16"`` and ``amx`` says why. ``CROSSRANK_AMX_DENY=1`` simulates that
        refusal (a testing aid).
    """
    return dict(_core.cpu_info())


def build_info() -> Dict[str, str]:
    """How this copy of the C extension was built.

    Returns:
        ``{"blas": "openblas" or "none"}``: whether the opt-in ``CROSSRANK_GEMM=openblas`` path is
        available (binary wheels ship without OpenBLAS; see the README's install section).
    """
    return dict(_core.build_info())
