"""sentence-transformers CrossEncoder packages: the module files a hub repo ships beside the weights.

A CrossEncoder saved by sentence-transformers 5.4+/6.x holds, next to ``config.json`` and the
weights: ``modules.json`` (the module list: a ``Transformer`` at the repo root, and for a causal-LM
reranker a ``LogitScore`` module in ``1_LogitScore/``), ``sentence_bert_config.json`` (the
Transformer's options: ``max_seq_length``, ``processing_kwargs``, ``modality_config``) and
``config_sentence_transformers.json`` (``prompts``, ``default_prompt_name``, ``activation_fn``).
``LogitScore`` reads the last position's logits: ``logit[true] - logit[false]`` (or ``logit[true]``
alone), which is vLLM's ``from_2_way_softmax`` (or ``no_post_processing``) head.

Nothing here is executed: the files are read as data. The saved activation's dotted path is
resolved by :mod:`crossrank.activations` (torch's activations, computed in NumPy; any other path is
refused by name).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Union

from .config import read_json_file
from .errors import ConfigError, UnsupportedModelError

__all__ = ["STPackage", "read_st_package", "head_overrides"]

logger = logging.getLogger("crossrank")

@dataclass(frozen=True)
class STPackage:
    """What a sentence-transformers CrossEncoder package tells crossrank.

    Attributes:
        true_token_id, false_token_id: The ``LogitScore`` module's token ids (``None`` without one;
            ``false_token_id`` may be ``None``: the raw ``true`` logit).
        has_logit_score: The package scores a causal LM through ``LogitScore``.
        prompts: Named instructions (``config_sentence_transformers.json``).
        default_prompt_name: The prompt used when none is given.
        activation_fn: The saved activation's dotted path, or ``None``.
        max_seq_length: ``sentence_bert_config.json``'s ``max_seq_length``, or ``None``.
        chat_template_variables: ``processing_kwargs["chat_template"]`` (passed to the template).
        message_format: The Transformer's ``modality_config["message"]["format"]``, or ``None``.
    """

    true_token_id: Optional[int] = None
    false_token_id: Optional[int] = None
    has_logit_score: bool = False
    prompts: Dict[str, str] = field(default_factory=dict)
    default_prompt_name: Optional[str] = None
    activation_fn: Optional[str] = None
    max_seq_length: Optional[int] = None
    chat_template_variables: Dict[str, Any] = field(default_factory=dict)
    message_format: Optional[str] = None




def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_st_package(model_dir: Union[str, Path]) -> Optional[STPackage]:
    """Reads a sentence-transformers CrossEncoder package, or returns ``None`` for a plain checkpoint.

    Raises:
        ConfigError: a package file is malformed.
        UnsupportedModelError: the package is not a CrossEncoder, or holds modules crossrank does not
            run (a Transformer in a subfolder, a Dense head, ...).
    """
    model_dir = Path(model_dir)
    modules_path = model_dir / "modules.json"
    st_config_path = model_dir / "config_sentence_transformers.json"
    if not modules_path.is_file() and not st_config_path.is_file():
        return None
    st_config: Dict[str, Any] = {}
    if st_config_path.is_file():
        data = read_json_file(st_config_path)
        if not isinstance(data, dict):
            raise ConfigError(f"{st_config_path} must hold a JSON object")
        st_config = data
        model_type = st_config.get("model_type")
        if model_type is not None and model_type != "CrossEncoder":
            raise UnsupportedModelError(
                f"{st_config_path} says this is a sentence-transformers {model_type}, not a CrossEncoder "
                "(a reranker); crossrank runs rerankers only")

    true_id = false_id = None
    has_logit_score = False
    if modules_path.is_file():
        modules = read_json_file(modules_path)
        if not isinstance(modules, list):
            raise ConfigError(f"{modules_path} must hold a list of modules")
        for i, module in enumerate(modules):
            if not isinstance(module, dict) or not isinstance(module.get("type"), str):
                raise ConfigError(f"{modules_path}: module {i} must be an object with a 'type'")
            kind = module["type"].rsplit(".", 1)[-1]
            path = module.get("path", "")
            if kind == "Transformer":
                if path not in ("", "."):
                    raise UnsupportedModelError(
                        f"{modules_path}: the Transformer module lives in {path!r}; crossrank reads the model "
                        "from the package root (as sentence-transformers 5.4+ saves it)")
            elif kind == "LogitScore":
                config_path = model_dir / str(path) / "config.json"
                if not config_path.is_file():
                    raise ConfigError(f"{modules_path} lists a LogitScore module, but {config_path} is missing")
                conf = read_json_file(config_path)
                if not isinstance(conf, dict):
                    raise ConfigError(f"{config_path} must hold a JSON object")
                true_id, false_id = conf.get("true_token_id"), conf.get("false_token_id")
                if not _is_token_id(true_id) or not (false_id is None or _is_token_id(false_id)):
                    raise ConfigError(f"{config_path}: true_token_id must be a token id and false_token_id a "
                                      f"token id or null, got {true_id!r} and {false_id!r}")
                source = conf.get("module_input_name", "causal_logits")
                if source != "causal_logits":
                    raise UnsupportedModelError(
                        f"{config_path}: LogitScore reads {source!r}; crossrank supports 'causal_logits'")
                has_logit_score = True
            else:
                raise UnsupportedModelError(
                    f"{modules_path}: module {i} is a {module['type']}; crossrank runs a Transformer, "
                    "optionally followed by LogitScore")

    sbert: Dict[str, Any] = {}
    sbert_path = model_dir / "sentence_bert_config.json"
    if sbert_path.is_file():
        data = read_json_file(sbert_path)
        if not isinstance(data, dict):
            raise ConfigError(f"{sbert_path} must hold a JSON object")
        sbert = data
    max_seq_length = sbert.get("max_seq_length")
    if max_seq_length is not None and (isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int)
                                       or max_seq_length < 1):
        raise ConfigError(f"{sbert_path}: max_seq_length must be a positive integer, got {max_seq_length!r}")
    processing = sbert.get("processing_kwargs") or {}
    variables = processing.get("chat_template") if isinstance(processing, dict) else None
    if variables is not None and not isinstance(variables, dict):
        raise ConfigError(f"{sbert_path}: processing_kwargs['chat_template'] must be an object")
    variables = {k: v for k, v in (variables or {}).items()
                 # size options are the tokenizer's, restore_suffix is sentence-transformers' own switch
                 if k not in ("padding", "truncation", "max_length", "return_tensors", "restore_suffix")}
    modality = sbert.get("modality_config")
    message = modality.get("message") if isinstance(modality, dict) else None
    message_format = message.get("format") if isinstance(message, dict) else None
    if message_format not in ("flat", "structured"):
        message_format = None

    prompts = st_config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, (str, type(None)))
                                                for k, v in prompts.items()):
        raise ConfigError(f"{st_config_path}: prompts must map names to strings")
    default_name = st_config.get("default_prompt_name")
    activation = st_config.get("activation_fn")
    return STPackage(
        true_token_id=true_id, false_token_id=false_id, has_logit_score=has_logit_score,
        prompts={k: (v or "") for k, v in prompts.items()},
        default_prompt_name=default_name if isinstance(default_name, str) else None,
        activation_fn=activation if isinstance(activation, str) else None,
        max_seq_length=max_seq_length, chat_template_variables=variables, message_format=message_format)


def head_overrides(package: STPackage, architecture: str, id_to_token: Any) -> Dict[str, Any]:
    """``hf_overrides`` that build LogitScore's head: ``[false, true]`` with ``from_2_way_softmax``,
    or ``[true]`` with ``no_post_processing``.

    Args:
        package: The package (with a LogitScore module).
        architecture: The checkpoint's ``*ForCausalLM`` architecture.
        id_to_token: The tokenizer's id -> token string lookup.
    """
    def token(token_id: int, what: str) -> str:
        text = id_to_token(token_id)
        if text is None:
            raise ConfigError(f"LogitScore's {what}={token_id} is not a token of the tokenizer")
        return text

    family = architecture[: -len("ForCausalLM")] if architecture.endswith("ForCausalLM") else architecture
    tokens = [token(package.true_token_id, "true_token_id")]  # type: ignore[arg-type]
    if package.false_token_id is not None:
        tokens.insert(0, token(package.false_token_id, "false_token_id"))
    return {
        "architectures": [f"{family}ForSequenceClassification"],
        "classifier_from_token": tokens,
        "method": "from_2_way_softmax" if len(tokens) == 2 else "no_post_processing",
    }
