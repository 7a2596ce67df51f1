"""Chat templates shipped with a model, rendered for (query, document) pairs.

sentence-transformers (5.4+) and vLLM's score templates give a reranker its prompt as a Jinja chat
template over messages with the roles ``"query"`` and ``"document"``; sentence-transformers puts its
``prompt`` (the instruction) in a ``"system"`` message before them. A model carries the template the
way transformers 5 finds it: ``chat_template.jinja`` (the default) and ``additional_chat_templates/
NAME.jinja`` (named ones), which take priority over ``tokenizer_config.json``'s ``chat_template`` (a
string, or a list of ``{"name", "template"}``).

Templates are untrusted code. They are compiled by jinja2's ``ImmutableSandboxedEnvironment`` with
the environment transformers gives them (``trim_blocks``, ``lstrip_blocks``, ``loopcontrols``, the
``tojson`` filter, ``raise_exception``, ``strftime_now``, ``namespace``, the ``{% generation %}``
tag) and see only plain strings, lists and dicts. A render raises
:class:`~crossrank.errors.ConfigError` past 10,000,000 Python steps, and before it builds a value (a
string, a list, its output) longer than 4 Mi characters plus 4 times the size of the texts it is
given: a template that doubles a string in a loop stops there instead of exhausting memory (with a
jinja2 whose internals differ from 3.1's, only the step limit applies, and a RuntimeWarning says so).

Truncation: the template is rendered once per instruction with private-use marker characters for
the query and the document, and the text around them becomes a crossrank
:class:`~crossrank.templates.Template` (mode ``"joined"``: one text tokenized once, as
``apply_chat_template`` does). Truncation then cuts inside the document's tokens (then the query's)
and never the template's own text. Probe renders check that substituting real texts for the markers
gives exactly what rendering them gives; a template that rewrites its inputs (``| trim``, a default
for an empty document) is rendered pair by pair instead, and a prompt that does not fit
``max_length`` is then refused.
"""
from __future__ import annotations

import dataclasses
import json
import string
import sys
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .config import read_json_file
from .errors import ConfigError
from .template_limits import INPUT_FACTOR as _INPUT_FACTOR, LIMIT as _LIMIT, RENDER_CHARS as _RENDER_CHARS
from .template_limits import TooLarge, sandbox, text_size
from .templates import Template
from .tokenization import Encoded, PromptEncoder, TooLongError

__all__ = ["ChatTemplate", "ChatPrompt", "find_chat_template", "load_chat_templates", "read_special_tokens",
           "read_tokenizer_config"]

#: The roles sentence-transformers and vLLM give the two texts of a pair.
PAIR_ROLES = ("query", "document")
# sentence-transformers' probe: a baseline pair, then one pair per role that varies only that role.
_ROLE_PROBES = (("alpha", "bravo"), ("charlie", "bravo"), ("alpha", "foxtrot"))
# Private-use characters: no tokenizer normalises them away and no template writes them.
_QUERY_MARK = "\ue000crossrank:query\ue001"
_DOCUMENT_MARK = "\ue000crossrank:document\ue001"
# Texts that expose templates which rewrite their inputs: surrounding spaces (trim), braces (our
# format fields), quotes, newlines, an empty document (``default(..., true)``).
_SUBSTITUTION_PROBES = (
    ("  Alpha {x} <b>\n", " Bravo. 'single' \"double\" \\ end \n\n"),
    ("q", ""),
)
# Parts of a template's source that mean it reads ``content`` as a list of typed parts
# (sentence-transformers' rule for its "structured" message format).
_STRUCTURED_PATTERNS = ("content[0]", ".type", "'type'", '"type"', "item.type", "message.content[")


def _jinja() -> Any:
    try:
        import jinja2  # noqa: F401
        import jinja2.ext
        import jinja2.sandbox
    except ImportError as exc:  # a dependency of crossrank; only a broken environment lacks it
        raise ImportError(
            "rendering a model's chat template needs jinja2>=3.1.6: pip install 'jinja2>=3.1.6'") from exc
    return jinja2


@lru_cache(maxsize=32)
def _compile(source: str) -> Any:
    """Compiles a template in the sandbox (cached by source; errors are raised, not cached)."""
    jinja2 = _jinja()
    from jinja2 import nodes
    from jinja2.ext import Extension

    class GenerationTag(Extension):
        # transformers marks assistant turns with {% generation %}; rendering keeps the body as is.
        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return caller()

    class SafeNamespace(jinja2.utils.Namespace):
        # As transformers: namespaces refuse underscore attributes (no route to Python internals).
        def __init__(*args: Any, **kwargs: Any) -> None:
            self, rest = args[0], args[1:]
            attrs = dict(*rest, **kwargs)
            for key in attrs:
                SafeNamespace._check(key)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, key: str, value: Any) -> None:
            SafeNamespace._check(key)
            jinja2.utils.Namespace.__setitem__(self, key, value)

        @staticmethod
        def _check(key: Any) -> None:
            if isinstance(key, str) and key.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat templates cannot set the attribute {key!r}")

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Optional[int] = None,
               separators: Optional[Tuple[str, str]] = None, sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    env = sandbox(
        filters={"tojson": tojson},
        globals={"raise_exception": raise_exception, "strftime_now": strftime_now, "namespace": SafeNamespace},
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols])
    return env.from_string(source)


def infer_message_format(source: str) -> str:
    """``"structured"`` when the template reads ``content`` as typed parts, else ``"flat"``."""
    return "structured" if any(p in source for p in _STRUCTURED_PATTERNS) else "flat"


@dataclass(frozen=True)
class ChatTemplate:
    """A Jinja chat template that renders a (query, document) pair.

    Attributes:
        source: The Jinja source.
        origin: Where it came from (a file path), for error messages.
        name: The template's name (``"default"`` or a named template of the model).
        message_format: ``"flat"`` (``content`` is the text) or ``"structured"`` (``content`` is
            ``[{"type": "text", "text": ...}]``); ``None`` infers it from the source as
            sentence-transformers does.
        variables: Extra template variables, e.g. ``{"add_generation_prompt": True}`` (what
            sentence-transformers' ``processing_kwargs["chat_template"]`` and vLLM's
            ``chat_template_kwargs`` pass).
    """

    source: str
    origin: str = "<string>"
    name: str = "default"
    message_format: Optional[str] = None
    variables: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise ConfigError(f"{self.origin}: the chat template is empty or not a string")
        if self.message_format not in (None, "flat", "structured"):
            raise ValueError(f"message_format must be 'flat', 'structured' or None, got {self.message_format!r}")

    @classmethod
    def from_file(cls, path: Union[str, Path], **options: Any) -> "ChatTemplate":
        """Reads a ``.jinja`` file (e.g. one of vLLM's score templates)."""
        path = Path(path)
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the chat template {path}: {exc}") from exc
        options.setdefault("origin", str(path))
        return cls(source, **options)

    def with_variables(self, variables: Mapping[str, Any]) -> "ChatTemplate":
        """A copy with ``variables`` added (they win over the existing ones)."""
        return dataclasses.replace(self, variables={**self.variables, **dict(variables)})

    @property
    def format(self) -> str:
        """The message format in use (given or inferred)."""
        return self.message_format or infer_message_format(self.source)

    def messages(self, query: str, document: str, instruction: Optional[str] = None) -> List[Dict[str, Any]]:
        """The messages sentence-transformers builds for a pair (``instruction`` as a system message;
        an empty instruction adds none, as sentence-transformers' empty prompt)."""
        roles: List[Tuple[str, str]] = [("system", instruction)] if instruction else []
        roles += [("query", query), ("document", document)]
        if self.format == "flat":
            return [{"role": role, "content": text} for role, text in roles]
        return [{"role": role, "content": [{"type": "text", "text": text}]} for role, text in roles]

    def render(self, query: str, document: str, instruction: Optional[str] = None,
               special_tokens: Optional[Mapping[str, str]] = None) -> str:
        """The prompt text for one pair (what ``apply_chat_template(..., tokenize=False)`` gives).

        Raises:
            ConfigError: the template does not compile, or raises while rendering.
        """
        jinja2 = _jinja()
        try:
            compiled = _compile(self.source)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"{self.origin}: the chat template does not compile: {exc.message} "
                              f"(template line {exc.lineno})") from exc
        values: Dict[str, Any] = dict(special_tokens or {})
        values.update({"tools": None, "documents": None, "add_generation_prompt": False})
        values.update(self.variables)
        messages = self.messages(query, document, instruction)
        limit = _RENDER_CHARS + _INPUT_FACTOR * int(text_size((messages, values), float("inf")))
        try:
            return _within_limits(lambda: compiled.render(messages=messages, **values), limit)
        except _StepsExceeded:
            raise ConfigError(f"{self.origin}: the chat template ran {_RENDER_STEPS:,} Python steps rendering one "
                              "query/document pair and was stopped (a loop that does not end, or loops nested "
                              "past reason); a reranker's template takes about a thousand") from None
        except TooLarge as exc:
            raise ConfigError(
                f"{self.origin}: the chat template would build {exc} longer than {limit:,} characters rendering one "
                f"query/document pair and was stopped (a text doubled in a loop, or repeated past reason); a render "
                f"may build {_RENDER_CHARS:,} characters plus {_INPUT_FACTOR} times the size of the texts it is given. "
                "Fix the model's chat template, or pass another (a family template such as "
                "template='qwen3-reranker', or a ChatTemplate)") from None
        except jinja2.TemplateError as exc:
            raise ConfigError(f"{self.origin}: the chat template failed while rendering a query/document "
                              f"pair: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # a template can raise anything Python can (TypeError on a bad filter)
            raise ConfigError(f"{self.origin}: the chat template failed while rendering a query/document "
                              f"pair: {type(exc).__name__}: {exc}") from exc

    def pair_roles_failure(self, special_tokens: Optional[Mapping[str, str]] = None) -> Optional[str]:
        """Why the template cannot carry a query/document pair, or ``None`` when it can.

        As sentence-transformers decides it: probe pairs are rendered and a role whose content does
        not move the output is not carried (a generic chat template drops unknown roles).
        """
        try:
            base, *varied = [self.render(q, d, None, special_tokens) for q, d in _ROLE_PROBES]
        except ConfigError as exc:
            return str(exc)
        dropped = [role for role, text in zip(PAIR_ROLES, varied) if text == base]
        if dropped:
            return f"the {' and '.join(repr(r) for r in dropped)} content does not reach the rendered prompt"
        return None


# Templates are untrusted code, and the sandbox bounds what they reach, not how long they run:
# {% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %} would hang the
# load. A render is traced and stopped past this many steps (about a second; a real reranker's
# template takes ~1,000 per pair, and tracing makes a render ~4x slower, still under 0.2 ms).
_RENDER_STEPS = 10_000_000


class _StepsExceeded(BaseException):
    """Raised inside a render that ran past _RENDER_STEPS (a BaseException: nothing on its way out
    may take it for the template's own error)."""


def _within_limits(render: Any, chars: int) -> Any:
    """render() with every Python call and line it runs counted, stopped past _RENDER_STEPS, and
    every value it builds bounded by ``chars`` (see template_limits). The thread's own tracer (a
    debugger, coverage) and limit are put back after."""
    steps = 0

    def trace(frame: Any, event: str, arg: Any) -> Any:
        nonlocal steps
        steps += 1
        if steps > _RENDER_STEPS:
            raise _StepsExceeded()
        return trace

    previous = sys.gettrace()
    token = _LIMIT.set(chars)
    sys.settrace(trace)
    try:
        return render()
    finally:
        sys.settrace(previous)
        _LIMIT.reset(token)


def read_tokenizer_config(model_dir: Union[str, Path]) -> Dict[str, Any]:
    """``tokenizer_config.json`` as a dict (empty when the file is missing).

    Raises:
        ConfigError: the file is not a JSON object.
    """
    path = Path(model_dir) / "tokenizer_config.json"
    if not path.is_file():
        return {}
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data


def load_chat_templates(model_dir: Union[str, Path]) -> Dict[str, ChatTemplate]:
    """Every chat template the model carries, by name (``"default"`` for the unnamed one).

    transformers 5's precedence: template files (``chat_template.jinja``,
    ``additional_chat_templates/*.jinja``) replace ``tokenizer_config.json``'s entries.

    Raises:
        ConfigError: a template file cannot be read, or ``chat_template`` has the wrong shape.
    """
    model_dir = Path(model_dir)
    found: Dict[str, ChatTemplate] = {}
    default_file = model_dir / "chat_template.jinja"
    if default_file.is_file():
        found["default"] = ChatTemplate.from_file(default_file, name="default")
    extra_dir = model_dir / "additional_chat_templates"
    if extra_dir.is_dir():
        for path in sorted(extra_dir.glob("*.jinja")):
            name = path.name[: -len(".jinja")]
            found[name] = ChatTemplate.from_file(path, name=name)
    if found:
        return found
    config_path = model_dir / "tokenizer_config.json"
    entry = read_tokenizer_config(model_dir).get("chat_template")
    if entry is None:
        return {}
    where = f"{config_path} (chat_template)"
    if isinstance(entry, str):
        return {"default": ChatTemplate(entry, origin=where, name="default")}
    if isinstance(entry, list):
        for i, item in enumerate(entry):
            if not (isinstance(item, dict) and isinstance(item.get("name"), str)
                    and isinstance(item.get("template"), str)):
                raise ConfigError(f"{where}: entry {i} must be {{\"name\": str, \"template\": str}}, got {item!r:.80}")
            found[item["name"]] = ChatTemplate(item["template"], origin=f"{where}[{item['name']!r}]",
                                               name=item["name"])
        return found
    raise ConfigError(f"{where} must be a string or a list of {{\"name\", \"template\"}} objects, "
                      f"got {type(entry).__name__}")


def find_chat_template(model_dir: Union[str, Path], name: Optional[str] = None) -> Optional[ChatTemplate]:
    """The model's chat template: the default one, or the one called ``name``.

    Returns:
        ``None`` when the model has no chat template (and ``name`` is ``None``).

    Raises:
        ConfigError: ``name`` is not one of the model's templates, or the model has several named
            templates and none is the default.
    """
    templates = load_chat_templates(model_dir)
    if name is None:
        if not templates:
            return None
        if "default" in templates:
            return templates["default"]
        raise ConfigError(f"{model_dir} has several chat templates ({', '.join(sorted(templates))}) and no default; "
                          f"choose one with template='chat:NAME'")
    if name not in templates:
        known = ", ".join(sorted(templates)) or "none"
        raise ConfigError(f"{model_dir} has no chat template named {name!r} (it has: {known})")
    return templates[name]


def read_special_tokens(model_dir: Union[str, Path]) -> Dict[str, str]:
    """The named special tokens a template sees (``bos_token``, ``eos_token``, ...), as transformers
    passes them: every ``*_token`` key of ``tokenizer_config.json`` (``special_tokens_map.json``
    fills the gaps) that holds a string or an added-token object."""
    model_dir = Path(model_dir)
    merged: Dict[str, Any] = {}
    map_path = model_dir / "special_tokens_map.json"
    if map_path.is_file():
        data = read_json_file(map_path)
        if isinstance(data, dict):
            merged.update(data)
    merged.update(read_tokenizer_config(model_dir))
    out: Dict[str, str] = {}
    for key, value in merged.items():
        if not key.endswith("_token"):
            continue
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            out[key] = value
    return out


class ChatPrompt:
    """Turns pairs into token ids through a chat template (the crossrank side of ``ChatTemplate``).

    Args:
        chat: The template.
        encoder: The model's prompt encoder (its tokenizer and ``split_special_tokens`` choice).
        special_tokens: The named special tokens the template sees.
    """

    def __init__(self, chat: ChatTemplate, encoder: PromptEncoder, special_tokens: Mapping[str, str]) -> None:
        self.chat = chat
        self.encoder = encoder
        self.special_tokens = dict(special_tokens)
        self._templates: Dict[Optional[str], Optional[Template]] = {}

    @property
    def name(self) -> str:
        """``"chat"`` or ``"chat:NAME"`` for a named template."""
        return "chat" if self.chat.name == "default" else f"chat:{self.chat.name}"

    def check(self) -> None:
        """Raises ConfigError when the template cannot carry a query/document pair."""
        failure = self.chat.pair_roles_failure(self.special_tokens)
        if failure is not None:
            raise ConfigError(
                f"the chat template from {self.chat.origin} cannot carry a query/document pair ({failure}). "
                "A reranker's chat template renders the messages with the roles 'query' and 'document', e.g.\n"
                '  <Query>: {{ messages | selectattr("role", "eq", "query") | map(attribute="content") | first }}\n'
                '  <Document>: {{ messages | selectattr("role", "eq", "document") | map(attribute="content") '
                "| first }}\nPass a family template (template='qwen3-reranker'), a ChatTemplate, or fix the "
                "model's chat_template.jinja")

    def render(self, query: str, document: str, instruction: Optional[str] = None) -> str:
        """The prompt text of one pair."""
        return self.chat.render(query, document, instruction, self.special_tokens)

    def template_for(self, instruction: Optional[str]) -> Optional[Template]:
        """The crossrank template equal to this chat template for ``instruction``, or ``None`` when
        the chat template rewrites its inputs (then pairs are rendered one by one). Cached per
        instruction; two threads racing on a new instruction compute the same value."""
        if instruction in self._templates:
            return self._templates[instruction]
        text = self.render(_QUERY_MARK, _DOCUMENT_MARK, instruction)
        template: Optional[Template] = None
        if text.count(_QUERY_MARK) == 1 and text.count(_DOCUMENT_MARK) == 1 and all(
                self.render(q, d, instruction) == text.replace(_QUERY_MARK, q).replace(_DOCUMENT_MARK, d)
                for q, d in _SUBSTITUTION_PROBES):
            template = self._as_template(text)
        self._templates[instruction] = template
        return template

    def _as_template(self, text: str) -> Template:
        escaped = text.replace("{", "{{").replace("}", "}}")
        fields = escaped.replace(_QUERY_MARK, "{query}").replace(_DOCUMENT_MARK, "{document}")
        if not self.encoder.split_special_tokens:
            pieces: Tuple[str, ...] = (fields,)
            mode = "joined"
        else:
            # User texts tokenized apart from the template's text, so that special-token strings in
            # them stay text while the template's own special tokens stay special.
            parts: List[str] = []
            for literal, name, _, _ in string.Formatter().parse(fields):
                if literal:
                    parts.append(literal.replace("{", "{{").replace("}", "}}"))
                if name is not None:
                    parts.append("{" + name + "}")
            pieces, mode = tuple(parts), "pieces"
        return Template(name=self.name, pieces=pieces, mode=mode,
                        description=f"chat template from {self.chat.origin}")

    def encode(self, queries: Sequence[str], documents: Sequence[str], instruction: Optional[str],
               max_length: int, *, truncate_query: bool = False, check_room: bool = True) -> Encoded:
        """Token ids of each pair's prompt, truncated inside the document when too long
        (``truncate_query`` and ``check_room`` as in :meth:`PromptEncoder.encode_template`).

        Raises:
            TooLongError: a prompt does not fit and the template cannot be cut inside the document,
                or the template and the query leave no room for the document.
        """
        template = self.template_for(instruction)
        if template is not None:
            return self.encoder.encode_template(template, queries, documents, instruction, max_length,
                                                truncate_query=truncate_query, check_room=check_room)
        if self.encoder.split_special_tokens:
            raise ValueError(
                f"the chat template from {self.chat.origin} rewrites the query/document text, so crossrank "
                "cannot tokenize the texts apart from the template: use split_special_tokens=False")
        texts = [self.render(q, d, instruction) for q, d in zip(queries, documents)]
        encoded = self.encoder.encode_texts(texts)
        too_long = [i for i, ids in enumerate(encoded.input_ids) if len(ids) > max_length]
        if too_long:
            i = too_long[0]
            raise TooLongError(
                f"pair {i} is {len(encoded.input_ids[i])} tokens, more than max_length={max_length} (too long: "
                f"pairs {too_long[:10]}), and the chat template from {self.chat.origin} rewrites the query/document "
                "text, so crossrank cannot find where to cut it; shorten the document or raise max_length", too_long)
        return encoded
