"""Loading the model a server runs: the prompt format from ``--template``, ``--chat-template``, the
model itself or, failing those, the served model name; and the checks that it can answer requests.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from ..errors import CrossrankError, UnsupportedModelError
from ..model import CrossEncoder
from ..templates import template_for_model
from .settings import ServerSettings

__all__ = ["load_model"]

logger = logging.getLogger("crossrank.server")


def load_model(settings: ServerSettings) -> CrossEncoder:
    """Loads the model the settings describe.

    The prompt format comes from ``--template``, else the model's own choice (name, config, chat
    template); when that finds none, the served model name is tried as a family hint
    (``--served-model-name Qwen/Qwen3-Reranker-0.6B`` for a directory named otherwise): for a model
    that loads with no prompt format of its own, and for a bare causal LM (the real
    Qwen3-Reranker's config) that cannot load without a family or ``--hf_overrides`` to name its
    answer tokens.
    """
    dtype = "float32" if settings.dtype == "float" else settings.dtype  # vLLM's spelling of float32

    if settings.chat_template is not None:
        from ..chat_template import ChatTemplate

        # vLLM's --chat-template: a file, or the template itself in one line.
        source = settings.chat_template
        chat = (ChatTemplate.from_file(source) if os.path.isfile(source)
                else ChatTemplate(source, origin="--chat-template") if "{{" in source or "{%" in source
                else None)
        if chat is None:
            raise CrossrankError(f"--chat-template {source!r} is neither a file nor a Jinja template")

    def load(template: Any) -> CrossEncoder:
        return CrossEncoder(settings.model, hf_overrides=settings.hf_overrides, max_length=settings.max_length,
                            dtype=dtype, threads=settings.worker_threads(), template=template,
                            revision=settings.revision, local_files_only=settings.local_files_only)

    hinted = (template_for_model(settings.model_name, {})
              if settings.template is None and settings.chat_template is None else None)
    try:
        # The model's own choice first: the hint must not override a family the model names itself.
        model = load(chat if settings.chat_template is not None else settings.template)
    except UnsupportedModelError as exc:
        if hinted is None:
            raise
        # A causal LM whose answer tokens nothing names (raised before the weights load): the family
        # the served name suggests names them, as --template would. Any other refusal recurs.
        logger.info("%s does not load on its own (%s); trying the %s template its served name suggests",
                    settings.model, type(exc).__name__, hinted.name)
        return _servable(settings, load(hinted.name))
    if model.prompt_format == "pairs" and hinted is not None:
        logger.info("%s has no prompt format of its own; using the %s template its served name suggests",
                    settings.model, hinted.name)
        del model
        model = load(hinted.name)
    return _servable(settings, model)


def _servable(settings: ServerSettings, model: CrossEncoder) -> CrossEncoder:
    """``model``, unless it cannot answer requests: several labels, or a tokenizer whose ids go past
    the embedding table (every request would fail, each answered as the client's error)."""
    if model.tokenizer_mismatch is not None:
        raise CrossrankError(model.tokenizer_mismatch)
    if model.num_labels != 1:
        raise CrossrankError(f"{settings.model} has {model.num_labels} labels; /score and /rerank return one "
                             "score per pair, so the server needs a one-label reranker")
    return model
