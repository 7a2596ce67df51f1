"""Saving a loaded model as a sentence-transformers CrossEncoder package (``save_pretrained``/``save``).

crossrank holds only the LM head's needed rows and packed weights, so the package is built from the
source checkpoint's files (copied as they are: config, weights, tokenizer) plus the module files
sentence-transformers 6 writes:

* ``modules.json``: a ``Transformer`` at the root, followed for a causal LM by ``LogitScore``
  (``1_LogitScore/config.json``: ``logit[true] - logit[false]``, or ``logit[true]``), which is the
  head crossrank scores (``from_2_way_softmax`` / one-token ``no_post_processing``);
* ``sentence_bert_config.json``: ``max_seq_length`` (the model's ``max_length``), the chat
  template variables, the message format;
* ``config_sentence_transformers.json``: ``prompts``, ``default_prompt_name``, ``activation_fn``
  (torch's dotted path);
* ``chat_template.jinja``: the chat template in use, or, for a family template, the family's prompt
  written as one (the instruction from the ``system`` message, else the family default).

A model crossrank cannot describe that way is refused with the reason (several LM-head rows, a
callable activation, ``logit_mean``/``logit_sigma``, config overrides beyond the head).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from .activations import NumpyActivation, activation_path
from .config import RERANKER_KEYS
from .templates import Template

__all__ = ["save_package", "family_chat_template"]

# Files of a sentence-transformers package that the saved package writes itself.
_PACKAGE_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "README.md",
                  "chat_template.jinja")
_PACKAGE_DIRS = ("1_LogitScore",)
# hf_overrides keys that only choose the head (the LogitScore module expresses them).
_HEAD_KEYS = set(RERANKER_KEYS) | {"architectures"}


def _literal(text: str) -> str:
    """A jinja expression printing ``text`` exactly (a JSON string is a valid jinja string literal)."""
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}" if text else ""


def family_chat_template(template: Template) -> str:
    """The family template's prompt as a chat template over the ``query``/``document`` roles, the
    instruction taken from a ``system`` message (sentence-transformers' prompt), else the default.

    sentence-transformers tokenizes the rendered prompt as one text; the family recipes tokenize
    their pieces one by one. The ids agree where the pieces meet at special tokens (Qwen3-Reranker);
    see docs/sentence-transformers.md for the families where they can differ.
    """
    def role(name: str) -> str:
        return ("{{ messages | selectattr('role', 'eq', '" + name + "') | map(attribute='content') | first }}")

    out: List[str] = []
    default = template.default_instruction or ""
    out.append("{% set instruction = messages | selectattr('role', 'eq', 'system') | map(attribute='content') "
               "| first | default(" + json.dumps(default, ensure_ascii=False) + ", true) %}")
    if template.add_bos:
        out.append("{{ bos_token }}")
    prefix, _, suffix = template.instruction_format.partition("{instruction}")
    for piece in template.pieces:
        literal_parts: List[str] = []
        for part in _split_fields(piece):
            if part in ("{query}", "{document}"):
                literal_parts.append(role(part[1:-1]))
            elif part == "{instruction}":
                literal_parts.append("{% if instruction %}" + _literal(prefix) + "{{ instruction }}" + _literal(suffix)
                                     + "{% endif %}")
            else:
                literal_parts.append(_literal(part))
        out.append("".join(literal_parts))
    return "".join(out)


def _split_fields(piece: str) -> List[str]:
    import string

    parts: List[str] = []
    for literal, name, _, _ in string.Formatter().parse(piece):
        if literal:
            parts.append(literal)
        if name is not None:
            parts.append("{" + name + "}")
    return parts


def _copy_source(src: Path, dst: Path) -> None:
    """Copies the checkpoint's files (not a previous package's module files) into ``dst``."""
    for item in src.iterdir():
        if item.name in _PACKAGE_FILES or item.name in _PACKAGE_DIRS or item.name.startswith("."):
            continue
        target = dst / item.name
        if item.is_dir():
            if item.name == "additional_chat_templates":
                shutil.copytree(item, target, dirs_exist_ok=True)
            continue
        if target.exists() and target.resolve() == item.resolve():
            continue
        shutil.copyfile(item, target)  # follows links: the package holds real files


def save_package(model: Any, path: Union[str, Path], *, chat_template: Optional[str], chat_variables: Dict[str, Any],
                 message_format: Optional[str], head_token_ids: Optional[List[int]], family: Optional[Template],
                 activation: Any, overrides: Optional[Dict[str, Any]]) -> Path:
    """Writes the package (see the module docstring) for a loaded ``CrossEncoder``.

    Args:
        model: The model (its ``path``, ``config``, ``prompts``, ``default_prompt_name``, ``max_length``).
        path: The output directory (created; it may not be the model's own directory).
        chat_template: The chat template source in use, or ``None``.
        chat_variables: The chat template's extra variables.
        message_format: ``"flat"``/``"structured"``, the chat template's message format.
        head_token_ids: The LM-head rows crossrank scores (``[false, true]`` or ``[true]``), or ``None``
            for a checkpoint with its own ``score`` head.
        family: The family template in use, or ``None``.
        activation: The model's default activation (normalized), or ``None``.
        overrides: The ``hf_overrides`` the model was loaded with.

    Raises:
        ValueError: the model cannot be written as a package sentence-transformers scores the same.
    """
    dst = Path(path)
    src = Path(model.path)
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"{dst} is the model's own directory; save the package to another one")
    extra = sorted(set(overrides or {}) - _HEAD_KEYS)
    if extra:
        raise ValueError(f"the model was loaded with hf_overrides {extra}, which the copied config.json does not "
                         "hold; sentence-transformers would load another model. Convert the checkpoint first "
                         "(crossrank convert) or save the model without those overrides")
    config = model.config
    if config.logit_mean is not None or config.logit_bias is not None or config.logit_sigma is not None:
        raise ValueError("the model shifts or scales its logits (logit_mean/logit_bias/logit_sigma), which "
                         "sentence-transformers does not do; its scores would differ")
    if activation is None:
        activation_name: Optional[str] = None
    elif isinstance(activation, str):
        activation_name = activation_path(activation)
    elif isinstance(activation, NumpyActivation) and all(v == d for (k, v), d in zip(
            activation.params, _defaults(activation.name))):
        activation_name = activation.torch_path
    else:
        raise ValueError(f"the activation {activation!r} cannot be saved by its dotted path (sentence-transformers "
                         "saves the class and builds it without arguments); pass a named activation")
    if family is not None:
        chat_template = family_chat_template(family)
        message_format = "flat"
    if head_token_ids is not None and chat_template is None:
        raise ValueError("the model scores a causal LM's answer tokens but has no prompt template to save; "
                         "sentence-transformers needs a chat template with query/document roles")

    if head_token_ids is not None and len(head_token_ids) not in (1, 2):
        raise ValueError(f"the model scores {len(head_token_ids)} LM-head rows; sentence-transformers' LogitScore "
                         "reads one (logit[true]) or two (logit[true] - logit[false])")
    if head_token_ids is not None and not _is_causal_lm(src):
        raise ValueError(f"{src / 'config.json'} is not a *ForCausalLM checkpoint, so sentence-transformers would "
                         "not read its LM head; convert it (crossrank convert) and save the converted model")

    dst.mkdir(parents=True, exist_ok=True)
    _copy_source(src, dst)
    modules = [{"idx": 0, "name": "0", "path": "",
                "type": "sentence_transformers.base.modules.transformer.Transformer"}]
    if head_token_ids is not None:
        true_id = head_token_ids[-1]
        false_id = head_token_ids[0] if len(head_token_ids) == 2 else None
        modules.append({"idx": 1, "name": "1", "path": "1_LogitScore",
                        "type": "sentence_transformers.cross_encoder.modules.logit_score.LogitScore"})
        (dst / "1_LogitScore").mkdir(exist_ok=True)
        (dst / "1_LogitScore" / "config.json").write_text(json.dumps(
            {"true_token_id": true_id, "false_token_id": false_id, "module_input_name": "causal_logits"}, indent=2))
    (dst / "modules.json").write_text(json.dumps(modules, indent=2))
    causal = head_token_ids is not None
    sbert: Dict[str, Any] = {
        "transformer_task": "text-generation" if causal else "sequence-classification",
        "max_seq_length": int(model.max_length),
        "module_output_name": "causal_logits" if causal else "scores",
    }
    sbert["modality_config"] = {"text": {"method": "forward", "method_output_name": "logits"}}
    if chat_template is not None:
        sbert["modality_config"]["message"] = {"method": "forward", "method_output_name": "logits",
                                               "format": message_format or "flat"}
        if chat_variables:
            sbert["processing_kwargs"] = {"chat_template": dict(chat_variables)}
        (dst / "chat_template.jinja").write_text(chat_template, encoding="utf-8")
    (dst / "sentence_bert_config.json").write_text(json.dumps(sbert, indent=2))
    (dst / "config_sentence_transformers.json").write_text(json.dumps({
        "model_type": "CrossEncoder", "prompts": dict(model.prompts), "default_prompt_name": model.default_prompt_name,
        "activation_fn": activation_name}, indent=2))
    return dst


def _is_causal_lm(model_dir: Path) -> bool:
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    architectures = config.get("architectures") if isinstance(config, dict) else None
    return bool(architectures) and str(architectures[0]).endswith("ForCausalLM")


def _defaults(name: str) -> List[Any]:
    from .activations import ACTIVATIONS

    return list(ACTIVATIONS[name][2].values())
