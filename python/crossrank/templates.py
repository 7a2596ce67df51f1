"""Prompt templates of the reranker families, as data.

A template says how a (query, document) pair becomes the prompt the official recipe builds: the
pieces (format strings with ``{query}``, ``{document}`` and ``{instruction}`` fields), whether the
pieces are tokenized one by one and concatenated (``"pieces"``, what the official libraries do) or
joined into one string first (``"joined"``), the default instruction and maximum length, and the
``hf_overrides`` that turn the family's causal LM into a classifier. It also carries vLLM's request
form (``text_1``/``text_2``) for the same prompt, which :meth:`CrossEncoder.predict` reproduces.
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .config import FAMILIES

__all__ = [
    "Template",
    "QWEN3_RERANKER",
    "MXBAI_RERANK_V2",
    "BGE_RERANKER_V2_GEMMA",
    "TEMPLATES",
    "get_template",
    "template_for_model",
    "RenderedPiece",
]

_FIELDS = ("query", "document", "instruction")


@dataclass(frozen=True)
class RenderedPiece:
    """One piece of a prompt with the character spans of the user's texts inside it."""

    text: str
    query_span: Optional[Tuple[int, int]] = None
    document_span: Optional[Tuple[int, int]] = None

    @property
    def has_user_text(self) -> bool:
        """True when the piece holds the query or the document."""
        return self.query_span is not None or self.document_span is not None


@dataclass(frozen=True)
class Template:
    """A reranker family's prompt recipe.

    Attributes:
        name: Registry name, e.g. ``"qwen3-reranker"``.
        pieces: Format strings; fields ``{query}``, ``{document}``, ``{instruction}``.
        mode: ``"pieces"`` (tokenize each piece alone, concatenate the ids) or ``"joined"``.
        default_instruction: Used when the caller gives none (``None``: no instruction).
        instruction_format: How a given instruction is rendered into ``{instruction}``.
        default_max_length: Token budget when the caller gives none.
        add_bos: Prepend the tokenizer's BOS id once, before the first piece.
        query_max_fraction: When set, the piece holding the query is capped at
            ``int(max_length * fraction)`` tokens before the document is fitted (mxbai, bge-gemma).
        document_max_fraction: When set, the piece holding the document is first capped the same
            way (bge-gemma tokenizes the passage with ``max_length`` before fitting it).
        budget_pieces: Indices of the pieces whose tokens (with the BOS) count against
            ``max_length``; ``None``: all of them. mxbai counts only query, separator and document.
        budget_bonus_pieces: Pieces whose token counts are added to ``max_length`` (FlagEmbedding
            allows the separator and prompt on top of it).
        fit_positions: Lower ``max_length`` so that the pieces outside the budget fit beside it in
            the model's ``max_position_embeddings`` (mxbai-rerank's library does so).
        request_text_1: vLLM request form of the same prompt, first text.
        request_text_2: vLLM request form, second text.
        overrides: ``hf_overrides`` that load the family's causal LM as a classifier.
        description: One line for listings.
    """

    name: str
    pieces: Tuple[str, ...]
    mode: str = "pieces"
    default_instruction: Optional[str] = None
    instruction_format: str = "{instruction}"
    default_max_length: int = 8192
    add_bos: bool = False
    query_max_fraction: Optional[float] = None
    document_max_fraction: Optional[float] = None
    budget_pieces: Optional[Tuple[int, ...]] = None
    budget_bonus_pieces: Tuple[int, ...] = ()
    fit_positions: bool = False
    request_text_1: str = ""
    request_text_2: str = ""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if self.mode not in ("pieces", "joined"):
            raise ValueError(f"template {self.name!r}: mode must be 'pieces' or 'joined', not {self.mode!r}")
        if not self.pieces:
            raise ValueError(f"template {self.name!r}: needs at least one piece")
        seen = []
        for piece in self.pieces:
            for _, name, spec, conv in string.Formatter().parse(piece):
                if name is None:
                    continue
                if name not in _FIELDS or spec or conv:
                    raise ValueError(
                        f"template {self.name!r}: unknown field {{{name}}} in a piece; "
                        f"fields are {', '.join('{' + f + '}' for f in _FIELDS)}")
                seen.append(name)
        for required in ("query", "document"):
            if seen.count(required) != 1:
                raise ValueError(f"template {self.name!r}: {{{required}}} must appear exactly once")
        if self.mode == "joined" and (self.budget_pieces is not None or self.budget_bonus_pieces):
            raise ValueError(f"template {self.name!r}: budget pieces need mode='pieces'")
        for index in tuple(self.budget_pieces or ()) + tuple(self.budget_bonus_pieces):
            if not 0 <= index < len(self.pieces):
                raise ValueError(f"template {self.name!r}: piece index {index} is out of range")
        if self.default_max_length < 1:
            raise ValueError(f"template {self.name!r}: default_max_length must be positive")
        if self.fit_positions and any(self.piece_fields(k) for k in self.fixed_pieces()):
            raise ValueError(f"template {self.name!r}: fit_positions needs the pieces outside the budget to be "
                             "constant text")

    def piece_fields(self, index: int) -> List[str]:
        """The fields piece ``index`` holds."""
        return [name for _, name, _, _ in string.Formatter().parse(self.pieces[index]) if name is not None]

    def fixed_pieces(self) -> List[int]:
        """Indices of the pieces that do not count against ``max_length`` (none without ``budget_pieces``)."""
        if self.budget_pieces is None:
            return []
        return [k for k in range(len(self.pieces)) if k not in self.budget_pieces and k not in self.budget_bonus_pieces]

    def instruction_text(self, instruction: Optional[str]) -> str:
        """What ``{instruction}`` becomes: the given or default instruction, formatted, or ``""``."""
        if instruction is None:
            instruction = self.default_instruction
        if instruction is None or instruction == "":
            return ""
        return self.instruction_format.format(instruction=instruction)

    def render(self, query: str, document: str, instruction: Optional[str] = None) -> List[RenderedPiece]:
        """Renders the pieces for one pair, recording where the query and document landed."""
        values = {"query": query, "document": document, "instruction": self.instruction_text(instruction)}
        out = []
        for piece in self.pieces:
            parts: List[str] = []
            pos = 0
            spans: Dict[str, Tuple[int, int]] = {}
            for literal, name, _, _ in string.Formatter().parse(piece):
                parts.append(literal)
                pos += len(literal)
                if name is None:
                    continue
                value = values[name]
                if name in ("query", "document"):
                    spans[name] = (pos, pos + len(value))
                parts.append(value)
                pos += len(value)
            out.append(RenderedPiece("".join(parts), spans.get("query"), spans.get("document")))
        return out

    def request_texts(self, query: str, document: str, instruction: Optional[str] = None) -> Tuple[str, str]:
        """vLLM's ``(text_1, text_2)`` request form of the same prompt."""
        values = {"query": query, "document": document, "instruction": self.instruction_text(instruction)}
        return self.request_text_1.format(**values), self.request_text_2.format(**values)


_QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and "
    'the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
_QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"

QWEN3_RERANKER = Template(
    name="qwen3-reranker",
    pieces=(
        _QWEN3_PREFIX,
        "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}",
        _QWEN3_SUFFIX,
    ),
    mode="pieces",
    default_instruction="Given a web search query, retrieve relevant passages that answer the query",
    default_max_length=8192,
    request_text_1=_QWEN3_PREFIX + "<Instruct>: {instruction}\n<Query>: {query}\n",
    request_text_2="<Document>: {document}" + _QWEN3_SUFFIX,
    overrides={
        "architectures": ["Qwen3ForSequenceClassification"],
        "classifier_from_token": ["no", "yes"],
        "is_original_qwen3_reranker": True,
    },
    description="Qwen3-Reranker 0.6B/4B/8B (model card recipe); score = P(yes)",
)

_MXBAI_PREFIX = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n"
)
_MXBAI_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
_MXBAI_TASK = (
    "You are a search relevance expert who evaluates how well documents match search queries. "
    "For each query-document pair, carefully analyze the semantic relationship between them, then "
    "provide your binary relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:"
)

MXBAI_RERANK_V2 = Template(
    name="mxbai-rerank-v2",
    # mxbai-rerank's v2 library: every piece tokenized alone; the optional instruction sits in the
    # query piece, the task prompt is fixed text.
    pieces=(_MXBAI_PREFIX, "{instruction}query: {query}", "\n", "document: {document}", "\n", _MXBAI_TASK,
            _MXBAI_SUFFIX),
    mode="pieces",
    default_instruction=None,
    instruction_format="instruction: {instruction}\n",
    default_max_length=8192,
    query_max_fraction=0.75,
    budget_pieces=(1, 2, 3),
    fit_positions=True,
    request_text_1=_MXBAI_PREFIX + "{instruction}query: {query}\n",
    request_text_2="document: {document}\n" + _MXBAI_TASK + _MXBAI_SUFFIX,
    overrides={
        "architectures": ["Qwen2ForSequenceClassification"],
        "classifier_from_token": ["0", "1"],
        "method": "from_2_way_softmax",
    },
    description="mxbai-rerank-base-v2 / -large-v2; raw score = logit('1') - logit('0')",
)

_BGE_GEMMA_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query "
    "by providing a prediction of either 'Yes' or 'No'."
)

BGE_RERANKER_V2_GEMMA = Template(
    name="bge-reranker-v2-gemma",
    # FlagEmbedding: [BOS] + each piece tokenized alone; its `prompt` argument is the instruction.
    # The passage piece is first capped at max_length; then BOS, query, separator and passage
    # must fit max_length + len(separator) + len(prompt) (prepare_for_model's encode_max_length).
    pieces=("A: {query}", "\n", "B: {document}", "\n", "{instruction}"),
    mode="pieces",
    default_instruction=_BGE_GEMMA_PROMPT,
    default_max_length=1024,
    add_bos=True,
    query_max_fraction=0.75,
    document_max_fraction=1.0,
    budget_pieces=(0, 1, 2),
    budget_bonus_pieces=(3, 4),
    request_text_1="A: {query}\n",
    request_text_2="B: {document}\n{instruction}",
    overrides={
        "architectures": ["GemmaForSequenceClassification"],
        "classifier_from_token": ["Yes"],
        "method": "no_post_processing",
    },
    description="bge-reranker-v2-gemma; raw score = logit('Yes')",
)

TEMPLATES: Dict[str, Template] = {t.name: t for t in (QWEN3_RERANKER, MXBAI_RERANK_V2, BGE_RERANKER_V2_GEMMA)}

# Substrings of hub names (lower case) that identify a family's reranker: from the family records.
_NAME_HINTS: Tuple[Tuple[str, str], ...] = tuple(
    (hint, family.template) for family in FAMILIES.values() if family.template for hint in family.name_hints
)


def get_template(template: Union[str, Template]) -> Template:
    """Returns a :class:`Template` given one or its registry name."""
    if isinstance(template, Template):
        return template
    if isinstance(template, str) and template in TEMPLATES:
        return TEMPLATES[template]
    raise ValueError(
        f"unknown template {template!r}; known: {', '.join(sorted(TEMPLATES))}, 'chat' or 'chat:NAME' "
        "(the model's chat template), or pass a crossrank.templates.Template")


def template_for_model(name: str, config: Mapping[str, Any]) -> Optional[Template]:
    """Picks the family template from a model's name or config, or ``None`` if unknown."""
    lowered = str(name).replace("\\", "/").lower()
    for hint, key in _NAME_HINTS:
        if hint in lowered:
            return TEMPLATES[key]
    if config.get("is_original_qwen3_reranker") or config.get("is_qwen3_reranker"):
        return QWEN3_RERANKER
    template_name = config.get("crossrank_template")
    if isinstance(template_name, str) and template_name in TEMPLATES:
        return TEMPLATES[template_name]
    return None


def check_text(text: str, what: str) -> None:
    """Raises ValueError when ``text`` cannot be encoded as UTF-8 (a lone surrogate, e.g. from a
    badly decoded file), naming ``what`` and the position, instead of the tokenizer's TypeError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not valid Unicode text: lone surrogate {text[exc.start]!r} at index "
                         f"{exc.start}; decode the source with errors='replace' or remove it") from None


def split_pairs(pairs: Sequence[Any]) -> Tuple[List[str], List[str]]:
    """Validates ``[(text_1, text_2), ...]`` and returns the two lists."""
    firsts, seconds = [], []
    for i, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, (tuple, list)) or len(pair) != 2:
            size = f" of {len(pair)} items" if isinstance(pair, (tuple, list)) else ""
            raise TypeError(f"pair {i} must be a (text_1, text_2) pair, got a {type(pair).__name__}{size}")
        a, b = pair
        if not isinstance(a, str) or not isinstance(b, str):
            raise TypeError(
                f"pair {i}: both texts must be str, got ({type(a).__name__}, {type(b).__name__})")
        check_text(a, f"pair {i}, text_1")
        check_text(b, f"pair {i}, text_2")
        firsts.append(a)
        seconds.append(b)
    return firsts, seconds
