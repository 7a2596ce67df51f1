"""Exception types raised by crossrank.

Every error crossrank raises on purpose derives from :class:`CrossrankError`, so
``except crossrank.CrossrankError`` catches them all. The concrete classes also
derive from the matching built-in exception (``ValueError``, ``FileNotFoundError``)
so that code written against generic Python errors keeps working.

The C extension raises these same classes (it looks them up from this module), so
an error from the engine and an error from the Python layer are caught the same way.
"""

from __future__ import annotations

from typing import Iterable, List, Optional

__all__ = [
    "CrossrankError",
    "CheckpointError",
    "UnsupportedModelError",
    "ConfigError",
    "ModelNotFoundError",
    "Cancelled",
    "NumericalError",
    "TooLongError",
    "TokenizationError",
]


class CrossrankError(Exception):
    """Base class of every error crossrank raises on purpose."""


class CheckpointError(CrossrankError, ValueError):
    """A checkpoint file is malformed or does not match its config.

    Raised for a truncated or hostile ``*.safetensors`` file, a shard index that
    points outside the model directory, a missing tensor, or a tensor whose shape
    or dtype differs from what the config implies. The message names the file,
    the tensor and the expected/found values.
    """


class UnsupportedModelError(CrossrankError, ValueError):
    """The model is valid, but uses something crossrank does not implement.

    Examples: an architecture other than Qwen3/Qwen2/Llama/Mistral/Gemma, a
    quantized checkpoint, a RoPE scaling type that depends on the batch or the
    sequence length (``dynamic``, ``longrope``), partial rotary embeddings, or
    logit soft-capping. The message says what is not supported and what to use
    instead.
    """


class ConfigError(CrossrankError, ValueError):
    """``config.json`` or ``hf_overrides`` is missing, malformed or inconsistent.

    Examples: a dimension that is not a positive integer, an unknown reranker
    ``method``, a ``classifier_from_token`` list of the wrong length, a misspelt
    reranker key, or a classifier token that is not in the tokenizer's
    vocabulary. The message names the key, the value given and what is expected.
    """


class ModelNotFoundError(CrossrankError, FileNotFoundError):
    """The model could not be located or downloaded.

    The message lists every place that was searched (local directory, Hugging
    Face cache, hub download) and how to fix it.
    """


class Cancelled(CrossrankError):
    """A computation was aborted before it finished.

    Raised when the abort flag of a running computation is set (Ctrl-C, a server
    timeout, an explicit cancel). No partial result is returned.
    """


class NumericalError(CrossrankError, FloatingPointError):
    """The engine produced a NaN or an infinity where a score should be.

    Raised instead of returning the value: ``sigmoid(inf)`` would read as a perfect score. The
    weights are finite (checked at load unless ``check_finite`` was turned off) but the
    activations overflow float32, or the weights were not checked and are corrupt.
    """


class TooLongError(CrossrankError, ValueError):
    """A prompt does not fit ``max_length`` and cannot be cut without breaking it.

    Raised when the template's own text does not fit, when a prompt crossrank cannot cut inside
    the document (vLLM's request form, a chat template that rewrites its inputs) is too long, and
    when the template and the query leave no room for the document: scoring it would score the
    query alone, the same number for every document. Pass ``truncate_query=True`` to cut the
    query and the document longest-first instead.

    Attributes:
        indices: The indices (in the call's order) of the pairs that do not fit; empty when the
            error is not about particular pairs.
    """

    def __init__(self, message: str, indices: Optional[Iterable[int]] = None) -> None:
        super().__init__(message)
        self.indices: List[int] = [int(i) for i in indices] if indices is not None else []

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (str(self), self.indices))


class TokenizationError(CrossrankError, ValueError):
    """The tokenizer failed on a text of the call: the ``tokenizers`` library's Rust code panicked on it.

    A ``tokenizer.json`` that works on ordinary texts (it is checked at load) may still hit a bug of
    tokenizers on some input; the panic (pyo3's ``PanicException``, a ``BaseException``) is raised
    as this error instead, naming the pair. The server answers it with 400.

    Attributes:
        indices: The index (in the call's order) of the pair whose text the tokenizer failed on;
            empty when the failure could not be traced to one pair.
        reason: What the tokenizer said.
    """

    def __init__(self, message: str, indices: Optional[Iterable[int]] = None, reason: str = "") -> None:
        super().__init__(message)
        self.indices: List[int] = [int(i) for i in indices] if indices is not None else []
        self.reason = reason

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (str(self), self.indices, self.reason))
