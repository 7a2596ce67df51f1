"""Prompting: how a model turns (query, document) pairs into token ids, chosen once at load.

One protocol, :class:`Prompting`, three kinds:

* :class:`FamilyPrompting`: a family template (``qwen3-reranker``, ``mxbai-rerank-v2``, ...): the
  family's official recipe for queries and documents, vLLM's request form for raw pairs;
* :class:`ChatPrompting`: the model's chat (score) template for every form, as
  sentence-transformers and vLLM's score templates render it;
* :class:`PairPrompting`: no template: every pair is tokenized as vLLM's request form (joined, or
  as a pair where the config says ``use_sep_token``), the instruction before the first text.

:func:`choose_prompt` makes the choice from the model's files and the ``template`` option;
:func:`make_prompting` binds it to the tokenizer once the config is final.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Protocol, Sequence, Union

from .chat_template import ChatPrompt, ChatTemplate, find_chat_template, load_chat_templates, read_special_tokens
from .errors import ConfigError
from .st_package import STPackage
from .templates import Template, get_template, template_for_model
from .tokenization import Encoded, PromptEncoder

__all__ = ["Prompting", "FamilyPrompting", "ChatPrompting", "PairPrompting", "TemplateLike", "PromptChoice",
           "choose_prompt", "make_prompting", "resolve_prompt", "resolve_instruction"]

logger = logging.getLogger("crossrank")

TemplateLike = Union[None, str, Template, ChatTemplate]
#: What :func:`choose_prompt` picks: a family template, a chat prompt, or ``None`` (raw pairs).
PromptChoice = Union[None, Template, "ChatPrompting"]


class Prompting(Protocol):
    """How a loaded model's pairs become token ids.

    Attributes:
        name: The prompt format: the family template's name, ``"chat"``/``"chat:NAME"``, or ``"pairs"``.
        encoder: The model's prompt encoder (its tokenizer).
        family: The family template, or ``None``.
        chat: The chat template, or ``None``.
    """

    name: str
    encoder: PromptEncoder
    family: Optional[Template]
    chat: Optional[ChatTemplate]

    def encode(self, queries: Sequence[str], documents: Sequence[str], instruction: Optional[str],
               max_length: int, *, truncate_query: bool = False) -> Encoded:
        """Token ids of (query, document) prompts: what ``CrossEncoder.score`` runs."""
        ...

    def encode_pairs(self, texts_1: Sequence[str], texts_2: Sequence[str], prompt: Optional[str],
                     max_length: int, *, truncate: bool = False) -> Encoded:
        """Token ids of ``(text_1, text_2)`` pairs taken as given: what ``CrossEncoder.predict`` runs."""
        ...

    def template_for(self, instruction: Optional[str]) -> Optional[Template]:
        """The template whose pieces the prompt for ``instruction`` is made of (for cuts inside the
        document), or ``None`` when crossrank cannot cut it."""
        ...


class _RequestForm:
    """vLLM's request form of raw pairs, shared by the family and the bare kinds."""

    encoder: PromptEncoder
    use_sep_token: bool

    def encode_pairs(self, texts_1: Sequence[str], texts_2: Sequence[str], prompt: Optional[str],
                     max_length: int, *, truncate: bool = False) -> Encoded:
        """vLLM's request form of the pairs (:meth:`PromptEncoder.encode_requests`); a prompt goes
        before the first text, as sentence-transformers puts it."""
        if prompt:
            texts_1 = [prompt + t for t in texts_1]
        return self.encoder.encode_requests(texts_1, texts_2, use_sep_token=self.use_sep_token,
                                            max_length=max_length, truncate=truncate)


class FamilyPrompting(_RequestForm):
    """A family template's recipe for queries and documents; raw pairs in vLLM's request form.

    Args:
        template: The family template.
        encoder: The prompt encoder.
        use_sep_token: Tokenize raw pairs as a pair (the config's ``use_sep_token``).
        max_positions: The model's ``max_position_embeddings``, for templates with ``fit_positions``.
    """

    chat = None

    def __init__(self, template: Template, encoder: PromptEncoder, *, use_sep_token: bool,
                 max_positions: Optional[int] = None) -> None:
        self.family: Optional[Template] = template
        self.encoder = encoder
        self.use_sep_token = bool(use_sep_token)
        self.name: str = template.name
        self.max_positions = max_positions

    def recipe_max_length(self, max_length: int) -> int:
        """The ``max_length`` the recipe works with: ``max_length``, lowered for a template with
        ``fit_positions`` until its fixed pieces fit beside it in ``max_positions``, as
        mxbai-rerank's library lowers it at load."""
        if not self.family.fit_positions or self.max_positions is None:
            return max_length
        room = self.max_positions - self.encoder.fixed_tokens(self.family)
        if room < 1:
            raise ConfigError(f"the {self.family.name!r} template's fixed text alone takes all of the model's "
                              f"max_position_embeddings={self.max_positions}")
        return min(max_length, room)

    def encode(self, queries: Sequence[str], documents: Sequence[str], instruction: Optional[str],
               max_length: int, *, truncate_query: bool = False) -> Encoded:
        """The family's recipe (:meth:`PromptEncoder.encode_template`) at :meth:`recipe_max_length`."""
        return self.encoder.encode_template(self.family, queries, documents, instruction,
                                            self.recipe_max_length(max_length), truncate_query=truncate_query)

    def template_for(self, instruction: Optional[str]) -> Optional[Template]:
        """The family template."""
        return self.family


class PairPrompting(_RequestForm):
    """No template: queries and documents are raw pairs too (the instruction before the query).

    Args:
        encoder: The prompt encoder.
        use_sep_token: Tokenize the pairs as pairs (the config's ``use_sep_token``, or a
            sentence-transformers package without a chat template, which tokenizes them so).
    """

    name = "pairs"
    family = None
    chat = None

    def __init__(self, encoder: PromptEncoder, *, use_sep_token: bool) -> None:
        self.encoder = encoder
        self.use_sep_token = bool(use_sep_token)

    def encode(self, queries: Sequence[str], documents: Sequence[str], instruction: Optional[str],
               max_length: int, *, truncate_query: bool = False) -> Encoded:
        """The pairs in vLLM's request form."""
        return self.encode_pairs(queries, documents, instruction, max_length, truncate=truncate_query)

    def template_for(self, instruction: Optional[str]) -> Optional[Template]:
        """``None``: a request-form prompt cannot be cut inside the document."""
        return None


class ChatPrompting(ChatPrompt):
    """The chat (score) template for every form (see :class:`~crossrank.chat_template.ChatPrompt`)."""

    family = None

    def encode_pairs(self, texts_1: Sequence[str], texts_2: Sequence[str], prompt: Optional[str],
                     max_length: int, *, truncate: bool = False) -> Encoded:
        """The pairs as the template's query and document messages (the prompt as the system one)."""
        return self.encode(texts_1, texts_2, prompt, max_length, truncate_query=truncate)

    def with_variables(self, variables: Mapping[str, Any]) -> "ChatPrompting":
        """The same prompting with more template variables (vLLM's ``chat_template_kwargs``)."""
        return ChatPrompting(self.chat.with_variables(variables), self.encoder, self.special_tokens)


def _chat_prompting(chat: ChatTemplate, encoder: PromptEncoder, path: Path, package: Optional[STPackage],
                    variables: Optional[Mapping[str, Any]]) -> ChatPrompting:
    """A chat prompt with the package's message format and variables, then the caller's."""
    if package is not None:
        if chat.message_format is None and package.message_format is not None:
            chat = dataclasses.replace(chat, message_format=package.message_format)
        chat = chat.with_variables(package.chat_template_variables)
    if variables:
        chat = chat.with_variables(variables)
    return ChatPrompting(chat, encoder, read_special_tokens(path))


def choose_prompt(template: TemplateLike, variables: Optional[Mapping[str, Any]], *, path: Path, name: str,
                  package: Optional[STPackage], config: Mapping[str, Any], encoder: PromptEncoder) -> PromptChoice:
    """The prompt of a model: a family :class:`~crossrank.templates.Template`, a :class:`ChatPrompting`,
    or ``None`` (raw pairs).

    Args:
        template: The ``template`` option (see :class:`~crossrank.CrossEncoder`).
        variables: The ``chat_template_kwargs`` option.
        path: The model directory.
        name: The name the model was loaded by (a family is also found from it).
        package: The sentence-transformers package description, if the model is one.
        config: The model's config dict (``config.json`` with the overrides).
        encoder: The prompt encoder.

    Raises:
        ConfigError: a chat template was asked for and the model has none, or it cannot carry a pair.
    """
    if isinstance(template, ChatTemplate):
        prompt = _chat_prompting(template, encoder, path, package, variables)
        prompt.check()
        return prompt
    if isinstance(template, str) and (template == "chat" or template.startswith("chat:")):
        chat = find_chat_template(path, None if template == "chat" else template[len("chat:"):])
        if chat is None:
            raise ConfigError(
                f"template={template!r}, but {path} has no chat template (looked for chat_template.jinja, "
                "additional_chat_templates/*.jinja and tokenizer_config.json's chat_template); pass "
                "template=ChatTemplate.from_file('reranker.jinja') or a family template")
        prompt = _chat_prompting(chat, encoder, path, package, variables)
        prompt.check()
        return prompt
    if template is not None:
        return get_template(template)
    try:
        chat = load_chat_templates(path).get("default")
    except ConfigError as exc:
        if package is not None:
            raise
        logger.warning("%s: the chat template is not used: %s", path, exc)
        chat = None
    if package is not None and chat is not None:
        # A sentence-transformers package renders pairs through its chat template; so does vLLM
        # with a package's score template. The package's own declaration wins over the family.
        prompt = _chat_prompting(chat, encoder, path, package, variables)
        prompt.check()
        return prompt
    family = template_for_model(name, config)
    if family is not None or chat is None:
        return family
    prompt = _chat_prompting(chat, encoder, path, package, variables)
    failure = prompt.chat.pair_roles_failure(prompt.special_tokens)
    if failure is None:
        return prompt
    # Most often a base LLM's conversation template, which drops (or refuses) the query and
    # document roles: it says nothing about reranking prompts and must not block loading.
    # template="chat" reports the problem as an error.
    level = logging.WARNING if "does not compile" in failure else logging.DEBUG
    logger.log(level, "%s: the chat template is not used for query/document pairs: %s", path, failure)
    return None


def make_prompting(choice: PromptChoice, encoder: PromptEncoder, *, use_sep_token: bool,
                   package: Optional[STPackage], max_positions: Optional[int] = None) -> Prompting:
    """The :class:`Prompting` of a choice, once the config (its ``use_sep_token`` and
    ``max_position_embeddings``) is final."""
    if isinstance(choice, ChatPrompting):
        return choice
    if isinstance(choice, Template):
        return FamilyPrompting(choice, encoder, use_sep_token=use_sep_token, max_positions=max_positions)
    # A sentence-transformers package without a chat template tokenizes the texts as a pair.
    return PairPrompting(encoder, use_sep_token=use_sep_token or package is not None)


def resolve_prompt(prompts: Mapping[str, str], default_prompt_name: Optional[str], prompt: Optional[str],
                   prompt_name: Optional[str]) -> Optional[str]:
    """sentence-transformers' rule for a call's instruction: ``prompt``, else ``prompts[prompt_name]``,
    else the default prompt; an empty prompt is no prompt."""
    if prompt_name is not None and not isinstance(prompt_name, str):
        raise TypeError(
            f"prompt_name must be a str or None, got {type(prompt_name).__name__}; predict() and rank() "
            "take sentence-transformers 6's parameter order (inputs, prompt_name, prompt, batch_size, ...): "
            "pass batch_size and the others by keyword")
    if prompt is not None and not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str or None, got {type(prompt).__name__}")
    if prompt is None:
        if prompt_name is not None:
            if prompt_name not in prompts:
                raise ValueError(f"prompt name {prompt_name!r} is not one of the prompts {sorted(prompts)}")
            prompt = prompts[prompt_name]
        elif default_prompt_name is not None:
            prompt = prompts.get(default_prompt_name)
    elif prompt_name is not None:
        logger.warning("both prompt and prompt_name were given; using prompt")
    return prompt or None


def resolve_instruction(prompts: Mapping[str, str], default_prompt_name: Optional[str], instruction: Optional[str],
                        prompt_name: Optional[str], prompt: Optional[str]) -> Optional[str]:
    """crossrank's ``instruction=``, or else :func:`resolve_prompt` (not both)."""
    if instruction is not None:
        if not isinstance(instruction, str):
            raise TypeError(f"instruction must be a str or None, got {type(instruction).__name__}")
        if prompt is not None or prompt_name is not None:
            raise ValueError("give the instruction as instruction= or as prompt=/prompt_name=, not both")
        return instruction
    return resolve_prompt(prompts, default_prompt_name, prompt, prompt_name)
