"""What the server asks of a loaded :class:`~crossrank.CrossEncoder`: token ids for each request form,
the truncation options of vLLM and TEI, and the activation of raw logits.

Two prompt forms, as in the library (RECIPES.md, "Two tokenizations of the same prompt"):

* pairs taken as given (``text_1``/``text_2``, ``data_1``/``data_2``, or any pair when the model
  has no prompt format or ``--no-template`` is set) get :meth:`CrossEncoder.tokenize_pairs`, the
  ids :meth:`CrossEncoder.predict` scores; a prompt longer than ``max_length`` is refused unless
  the request asks for ``truncate_prompt_tokens``, as vLLM does;
* plain queries and documents get :meth:`CrossEncoder.tokenize`, the ids
  :meth:`CrossEncoder.score` scores: the family's official recipe (or the model's chat template),
  which truncates inside the document so the template survives.

When a chat (score) template is in force, every request form is rendered with it, as vLLM does.

The default paths call those public methods, so a server score is bitwise the in-process score.
The per-request extras (a ``truncate_prompt_tokens`` below the model's maximum, cutting the
document's start, TEI's longest-first cut of the query, cutting ids past the maximum) use the
model's :attr:`~crossrank.CrossEncoder.prompting` (:mod:`crossrank.prompting`) and its encoder.

A prompt never loses its whole document: when the query with the template leaves no room for it,
the vLLM routes answer 400 ("... Please reduce the length of the input prompt", as vLLM does) and
TEI's route cuts the query too, longest first (:meth:`ScoringEngine.encode_queries`, ``fit``).
"""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import Any, Dict, Hashable, Iterator, List, Optional, Sequence

import numpy as np

from ..model import CrossEncoder
from ..prompting import ChatPrompting
from ..templates import Template
from ..tokenization import Encoded, TokenizationError, TooLongError, encode_user_texts, tokenizer_failure

__all__ = ["PromptError", "Prepared", "ScoringEngine", "document_dropped", "REDUCE_PROMPT", "NORMALIZATION_MARGIN",
           "PRE_CUT_MARGIN"]

#: vLLM's closing words for an input that cannot fit; clients match on them.
REDUCE_PROMPT = "Please reduce the length of the input prompt."


def document_dropped(encoded: Encoded) -> List[int]:
    """Indices of the prompts whose document lost every token to truncation (the query with the
    template took the whole budget): such a prompt must never be scored."""
    if encoded.document_tokens is None:
        return []
    return [i for i, (kept, whole) in enumerate(encoded.document_tokens) if whole > 0 and kept == 0]

_UNLIMITED = sys.maxsize

#: How many times normalization may shrink a text, in :meth:`ScoringEngine.min_tokens`' bound.
NORMALIZATION_MARGIN = 4

#: Tokens a text cut by characters (:meth:`ScoringEngine.pre_cut`) keeps beyond those that can
#: survive, at each end: tokens next to the cut may differ from the whole text's, not this far away.
PRE_CUT_MARGIN = 64

#: Characters per needed token of the first end :meth:`ScoringEngine.pre_cut` measures (prose runs
#: at ~4 per token); each further try takes 4 times as many, up to the bound that needs no count.
PRE_CUT_FIRST_CHARS = 8


@contextlib.contextmanager
def _pair(index: int) -> Iterator[None]:
    """Names pair ``index`` in a tokenizer failure of a one-pair call (which numbers its pair 0)."""
    try:
        yield
    except TokenizationError as exc:
        raise tokenizer_failure(index, exc.reason) from None


class PromptError(ValueError):
    """A request's texts cannot become prompts (too long, empty); a 400 for the client.

    Attributes:
        param: The request field the error is about, when there is one.
        tei_type: TEI's ``error_type`` for it (its own checks of the inputs: ``Validation``, 413;
            no tokens at all: ``Empty``, 400).
    """

    def __init__(self, message: str, param: Optional[str] = None, tei_type: str = "Validation") -> None:
        super().__init__(message)
        self.param = param
        self.tei_type = tei_type


@dataclass
class Prepared:
    """Token ids of one request, ready for the batcher.

    Attributes:
        ids: One ``int32`` array per pair.
        keys: Per pair, the key of the query its prompt starts with (the ``share_keys`` of
            :meth:`CrossEncoder.forward_ids`: pairs with the same key share their token prefix's
            K/V); ``None``: no sharing.
    """

    ids: List[np.ndarray]
    keys: List[Optional[Hashable]]

    @property
    def num_tokens(self) -> int:
        """Prompt tokens of the request (what ``usage.prompt_tokens`` reports)."""
        return int(sum(len(a) for a in self.ids))


class ScoringEngine:
    """A loaded model seen from the server.

    Args:
        model: The loaded model.
        use_template: Give plain queries and documents the model's prompt format (family template
            or chat template); false: every pair is taken as given (``--no-template``).
    """

    def __init__(self, model: CrossEncoder, *, use_template: bool = True) -> None:
        self.model = model
        fmt = model.prompt_format
        #: The prompt format queries and documents get (``None``: pairs are taken as given).
        self.prompt_format: Optional[str] = fmt if use_template and fmt != "pairs" else None
        prompting = model.prompting
        # The family template, when that is the format: per-request length limits need it.
        self._family: Optional[Template] = prompting.family if self.prompt_format is not None else None
        # The chat (score) template, when that is the format: every request form is rendered with it.
        self._chat: Optional[ChatPrompting] = (prompting if isinstance(prompting, ChatPrompting)
                                               and self.prompt_format is not None else None)
        self._pairs = prompting
        self.max_length: int = model.max_length
        self.num_labels: int = model.num_labels
        self._encoder = prompting.encoder
        self._max_token_chars: Optional[int] = None

    @property
    def templated(self) -> bool:
        """Whether plain queries and documents get a prompt format on the server."""
        return self.prompt_format is not None

    @property
    def chat_templated(self) -> bool:
        """Whether a chat (score) template is in force: then every request form gets it."""
        return self._chat is not None

    def _template(self, instruction: Optional[str], chat: Optional[ChatPrompting] = None) -> Optional[Template]:
        """The template the prompt's pieces come from (the chat template's equivalent, when it has
        one), for the per-request cuts; ``None`` when the prompt cannot be cut."""
        if self._family is not None:
            return self._family
        chat = chat if chat is not None else self._chat
        return chat.template_for(instruction) if chat is not None else None

    # -- request forms -------------------------------------------------------------------------

    def cut_texts(self, texts: Sequence[str], max_tokens: int) -> List[str]:
        """Each text cut to its first ``max_tokens`` tokens (tokenized alone), at the character
        where that token ends, so no lossy decode is involved; ``max_tokens <= 0``: unchanged."""
        if max_tokens <= 0:
            return list(texts)
        first: Dict[str, int] = {}  # each text's first pair, which a tokenizer failure names
        for i, text in enumerate(texts):
            first.setdefault(text, i)
        unique = list(first)
        encodings = encode_user_texts(self.model.tokenizer, unique, add_special_tokens=False,
                                      items=list(first.values()))
        cut: Dict[str, str] = {}
        for text, enc in zip(unique, encodings):
            cut[text] = text if len(enc.ids) <= max_tokens else text[:enc.offsets[max_tokens - 1][1]]
        return [cut[t] for t in texts]

    def encode_pairs(self, texts_1: Sequence[str], texts_2: Sequence[str], *, limit: Optional[int] = None,
                     side: str = "right", fit: str = "refuse", first_index: int = 0) -> Prepared:
        """Pairs taken as given: the ids :meth:`CrossEncoder.predict` scores.

        Args:
            limit: ``None``: a prompt longer than ``max_length`` is an error; else prompts are cut
                to ``limit`` tokens, keeping the first (``side="right"``) or the last ones.
            fit: ``"longest_first"`` (TEI): before the cut, a ``text_1`` longer than its share is cut
                (at a token boundary) so that the two texts share the budget longest first.
            first_index: Index of the first pair in the request (a slice of a request names its
                pairs as the request numbers them).
        """
        texts_1, texts_2 = list(texts_1), list(texts_2)
        ids = self._pair_ids(texts_1, texts_2, limit)
        if fit == "longest_first" and limit is not None:
            for i, seq in enumerate(ids):
                if len(seq) <= limit:
                    continue
                n1 = len(self._encode_text(texts_1[i], i).ids)
                n2 = len(self._encode_text(texts_2[i], i).ids)
                room = limit - (len(seq) - n1 - n2)
                if room >= 2 and n1 > room // 2:
                    with _pair(i):
                        texts_1[i] = self.cut_texts([texts_1[i]], max(room - n2, room // 2))[0]
                        ids[i] = self._pair_ids([texts_1[i]], [texts_2[i]], limit)[0]
        out = []
        for i, seq in enumerate(ids):
            if limit is not None and len(seq) > limit:
                if side == "right":
                    # The cut takes the prompt's end, text_2 first: refuse a cut that would take all of
                    # it, which would score text_1 alone.
                    second = len(self._encode_text(texts_2[i], i).ids)
                    if len(seq) - limit >= second > 0:
                        raise PromptError(
                            f"This model's maximum context length is {limit} tokens (truncate_prompt_tokens), and "
                            f"text_1 of pair {i + first_index} takes all of them, leaving no room for text_2. "
                            f"{REDUCE_PROMPT}",
                            "text_1")
                seq = seq[:limit] if side == "right" else seq[len(seq) - limit:]
            out.append(self._checked(seq, i + first_index))
        return Prepared(out, texts_1)

    def _pair_ids(self, texts_1: Sequence[str], texts_2: Sequence[str], limit: Optional[int]) -> List[List[int]]:
        pairs = list(zip(texts_1, texts_2))
        try:
            return list(self.model.tokenize_pairs(pairs).input_ids)
        except TooLongError:
            if limit is None or self.model.chat_template is not None:
                raise PromptError(
                    f"This model's maximum context length is {self.max_length} tokens, and an input is longer; "
                    f"shorten it or send truncate_prompt_tokens (-1: the model's maximum). {REDUCE_PROMPT}",
                    "truncate_prompt_tokens") from None
            # vLLM's request form without the length check; the ids are cut to the limit by the caller.
            return list(self._pairs.encode_pairs(texts_1, texts_2, None, _UNLIMITED).input_ids)

    def encode_queries(self, queries: Sequence[str], documents: Sequence[str], instruction: Optional[str], *,
                       limit: Optional[int] = None, side: str = "right", truncate: bool = True,
                       fit: str = "refuse", variables: Optional[Dict[str, Any]] = None,
                       first_index: int = 0) -> Prepared:
        """Plain queries and documents: the ids :meth:`CrossEncoder.score` scores.

        Args:
            limit: Token budget of a prompt; ``None``: the model's ``max_length``.
            side: ``"right"`` cuts the document's end (the recipe), ``"left"`` its beginning.
            truncate: When false, a prompt that does not fit is an error instead of being cut.
            fit: When the query with the template leaves no room for the document: ``"refuse"``
                (an error, vLLM's answer) or ``"longest_first"`` (the query is cut too, longest
                first, TEI's answer).
            variables: Per-request chat template variables (vLLM's ``chat_template_kwargs``); only
                a chat template has variables.
            first_index: Index of the first pair in the request (for the error messages).
        """
        budget = self.max_length if limit is None else limit
        queries, documents = list(queries), list(documents)
        chat = self._chat
        if variables and chat is not None:
            chat = chat.with_variables(variables)
        library = side == "right" and budget == self.max_length and chat is self._chat
        template = None if library else self._template(instruction, chat)
        if not library and template is None and not (chat is not None and side == "right"):
            raise PromptError(
                f"a truncate_prompt_tokens below the model's maximum, or truncation from the left, needs a "
                f"template crossrank can cut inside the document; this model's prompt format is "
                f"{self.prompt_format!r}", "truncate_prompt_tokens")

        def encode(qs: List[str]) -> Encoded:
            if library:
                return self.model.tokenize(qs, documents, instruction)
            if template is not None:
                return self._encoder.encode_template(template, qs, documents, instruction, budget)
            return chat.encode(qs, documents, instruction, budget)  # a chat template that rewrites its inputs

        encoded: Optional[Encoded] = None
        pieces = template if template is not None else self._template(instruction, chat)
        if fit == "longest_first" and truncate and pieces is not None:
            # Only the prompts the recipe had to cut can need the query cut too.
            try:
                encoded = encode(queries)
                over = [i for i, t in enumerate(encoded.truncated) if t]
            except TooLongError:
                over = list(range(len(queries)))
            fitted = self._fit_longest_first(queries, documents, instruction, budget, pieces, over)
            if fitted != queries:
                queries, encoded = fitted, None
        try:
            if encoded is None:
                encoded = encode(queries)
        except TooLongError as exc:
            # The library's message names Python options (max_length, truncate_query) an HTTP client
            # cannot send: the vLLM routes answer in vLLM's words instead.
            raise self._too_long(exc.indices[0] if exc.indices else 0, queries, documents, instruction, budget,
                                 chat, first_index) from None
        cut = [i for i, t in enumerate(encoded.truncated) if t]
        if cut and not truncate:
            raise PromptError(
                f"input {cut[0] + first_index} does not fit the model's maximum of {budget} tokens; send truncate=true "
                "(or truncate_prompt_tokens) to cut the document", "truncate")
        dropped = document_dropped(encoded)
        if dropped:
            raise self._too_long(dropped[0], queries, documents, instruction, budget, chat, first_index)
        ids = list(encoded.input_ids)
        if side == "left":
            for i in cut:
                with _pair(i):
                    ids[i] = self._cut_document_start(template, queries[i], documents[i], instruction, budget, ids[i])
        keys = [(q, instruction) for q in queries]
        return Prepared([self._checked(x, i + first_index) for i, x in enumerate(ids)], keys)

    def _too_long(self, i: int, queries: Sequence[str], documents: Sequence[str], instruction: Optional[str],
                  budget: int, chat: Optional[ChatPrompting], first_index: int) -> PromptError:
        """The refusal of pair ``i``, whose prompt cannot fit ``budget`` tokens, in vLLM's words ("This
        model's maximum context length is N tokens. However, ..."), with the tokens it takes."""
        limit = f"{budget} tokens" + (" (truncate_prompt_tokens)" if budget != self.max_length else "")
        template = self._template(instruction, chat)
        if template is None and chat is not None:  # a chat template that rewrites its inputs: never cut
            tokens = len(chat.encode([queries[i]], [documents[i]], instruction, _UNLIMITED).input_ids[0])
            return PromptError(
                f"This model's maximum context length is {limit}. However, pair {i + first_index} makes a prompt of "
                f"{tokens} tokens, and its chat template rewrites the texts, so crossrank cannot cut the document. "
                f"{REDUCE_PROMPT}")
        taken = "all of them"
        if template is not None:
            full = self._encoder.encode_template(template, [queries[i]], [documents[i]], instruction, _UNLIMITED)
            whole = full.document_tokens[0][1] if full.document_tokens else 0
            taken = f"{len(full.input_ids[0]) - whole} tokens"
        return PromptError(
            f"This model's maximum context length is {limit}. However, the query of pair {i + first_index} with the "
            f"prompt template takes {taken}, leaving no room for the document. {REDUCE_PROMPT}", "query")

    def _fit_longest_first(self, queries: List[str], documents: List[str], instruction: Optional[str],
                           budget: int, template: Template, which: Sequence[int]) -> List[str]:
        """The queries, each of the pairs ``which`` cut (at a token boundary) where its pair does not
        fit ``budget`` so that the query and the document share the room the template leaves
        longest first, as TEI's truncation of a pair does: the longer side loses tokens until both
        fit (an even split when both are long). The document's own cut is left to the recipe."""
        out = list(queries)
        if not which:
            return out
        full = self._encoder.encode_template(template, [queries[i] for i in which], [documents[i] for i in which],
                                             instruction, _UNLIMITED)
        for i, ids, (_, d) in zip(which, full.input_ids, full.document_tokens or [(0, 0)] * len(which)):
            if len(ids) <= budget or full.document_tokens is None:
                continue
            q = len(self._encode_text(queries[i], i).ids)
            room = budget - (len(ids) - q - d)
            if room < 2 or q <= room // 2:
                continue  # the template alone does not fit (refused below), or the query fits as it is
            keep = max(room - d, room // 2)
            for _ in range(4):  # the cut query may tokenize a token longer inside the prompt
                try:
                    with _pair(i):
                        out[i] = self.cut_texts([queries[i]], keep)[0]
                        again = self._encoder.encode_template(template, [out[i]], [documents[i]], instruction, budget)
                    fits = not document_dropped(again)
                except TooLongError:  # a tokenization layer that refuses a dropped document itself
                    fits = False
                if fits or keep <= 1:
                    break
                keep -= 1
        return out

    def max_token_chars(self) -> int:
        """Characters of the longest token string in the vocabulary (added tokens included): no
        token covers more characters of the text it came from (see :meth:`min_tokens`)."""
        if self._max_token_chars is None:
            vocab = self.model.tokenizer.get_vocab(with_added_tokens=True)
            self._max_token_chars = max((len(t) for t in vocab), default=1) or 1
        return self._max_token_chars

    def min_tokens(self, chars: int) -> int:
        """A lower bound on the tokens of a text of ``chars`` characters, known without tokenizing it:
        every token covers at most :meth:`max_token_chars` characters of the normalized text, and
        normalization is allowed to shrink the text by up to :data:`NORMALIZATION_MARGIN` times
        (composition of combining marks shrinks it by far less)."""
        return chars // self._chars_per_token_bound()

    def pre_cut_chars(self, tokens: int) -> int:
        """Characters that hold at least ``tokens + PRE_CUT_MARGIN`` tokens (:meth:`min_tokens`)."""
        return (tokens + PRE_CUT_MARGIN) * self._chars_per_token_bound()

    def _chars_per_token_bound(self) -> int:
        """The most characters of a raw text one token can cover: the bound of :meth:`min_tokens`."""
        return self.max_token_chars() * NORMALIZATION_MARGIN

    def pre_cut(self, texts: Sequence[str], tokens: int) -> List[str]:
        """Each text too long to matter whole cut by characters, before tokenizing, to a first and a
        last piece that each hold ``tokens + PRE_CUT_MARGIN`` tokens: at most ``tokens`` tokens of
        either end can survive truncation, and each end holds ``PRE_CUT_MARGIN`` tokens more, so the
        tokens that survive come out as in the whole text. The text's own ends are kept, so what a
        prompt's template adds at each end tokenizes as for the whole text too; the cut text is
        still too long for ``tokens``, so every decision on whether a prompt fits comes out the same.

        A piece's size is measured: ``PRE_CUT_FIRST_CHARS`` characters per needed token, tokenized
        alone, then 4 times as many until it holds enough; at :meth:`pre_cut_chars` (the bound that
        holds enough tokens whatever the text, ~4 M characters at 8,192 tokens) the count is not
        needed. Tokenizing a 15 MB document costs tens of seconds; the cut costs what its budget
        does, a few pieces of ~70,000 characters at 8,192 tokens for prose."""
        bound, need = self.pre_cut_chars(tokens), tokens + PRE_CUT_MARGIN
        cut: Dict[str, str] = {}  # a text repeated across pairs (a rerank's query) is measured once
        for text in texts:
            if text not in cut:
                head = self._piece_chars(text, need, bound, at_start=True)
                tail = self._piece_chars(text, need, bound, at_start=False)
                cut[text] = text if head + tail >= len(text) else text[:head] + text[len(text) - tail:]
        return [cut[text] for text in texts]

    def _piece_chars(self, text: str, need: int, bound: int, at_start: bool) -> int:
        """Characters at one end of ``text`` that hold ``need`` tokens (``pre_cut``); at least the
        whole text where it is shorter than twice the first try."""
        chars = min(need * PRE_CUT_FIRST_CHARS, bound)
        if 2 * chars >= len(text):
            return len(text)
        while chars < bound and 2 * chars < len(text):
            piece = text[:chars] if at_start else text[len(text) - chars:]
            try:
                count = len(encode_user_texts(self.model.tokenizer, [piece], add_special_tokens=False)[0].ids)
            except TokenizationError:  # the tokenizing that follows reports it, naming the pair
                return bound
            if count >= need:
                return chars
            chars *= 4
        return min(chars, bound)

    def activate(self, raw: np.ndarray, use_activation: bool) -> np.ndarray:
        """Scores from raw logits, as :meth:`CrossEncoder.predict` returns them (``use_activation``
        false: the raw value, ``activation_fn="identity"``)."""
        return self.model.activate(raw, None if use_activation else "identity", defaults="vllm")

    # -- helpers -------------------------------------------------------------------------------

    def _encode_text(self, text: str, index: int) -> Any:
        """``text`` (of pair ``index``) tokenized alone, without special tokens."""
        return encode_user_texts(self.model.tokenizer, [text], add_special_tokens=False, items=[index])[0]

    def _cut_document_start(self, template: Template, query: str, document: str, instruction: Optional[str],
                            budget: int, right_cut: List[int]) -> List[int]:
        """The prompt with the document's first tokens dropped instead of its last ones.

        The recipe cut ``k`` tokens off the end; as many are dropped from the start of the document
        (tokenized alone), and the result goes through the recipe again, which trims a token or two
        more should the new boundary tokenize differently.
        """
        full = self._encoder.encode_template(template, [query], [document], instruction, _UNLIMITED).input_ids[0]
        k = len(full) - len(right_cut)
        enc = self._encode_text(document, 0)  # the caller names the pair
        start = enc.offsets[k][0] if k < len(enc.ids) else len(document)
        return self._encoder.encode_template(template, [query], [document[start:]], instruction, budget).input_ids[0]

    @staticmethod
    def _checked(ids: Sequence[int], i: int) -> np.ndarray:
        if len(ids) == 0:
            raise PromptError(f"input {i} is empty: it gives no tokens to score", tei_type="Empty")
        return np.asarray(ids, dtype=np.int32)
