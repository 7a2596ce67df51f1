"""Turning pairs into token ids, as the official recipes and vLLM do.

Two forms (RECIPES.md, "Two tokenizations of the same prompt"):

* template form (:meth:`PromptEncoder.encode_template`): the family template's pieces, each
  tokenized alone and concatenated (``"pieces"``) or joined first (``"joined"``); truncation cuts
  inside the document's tokens (then the query's), found through the tokenizer's offsets, so the
  template's own text is never cut;
* request form (:meth:`PromptEncoder.encode_requests`): vLLM's ``text_1 + text_2`` tokenized as one
  text with the tokenizer's usual special tokens, or as a pair when ``use_sep_token`` is true.
"""
from __future__ import annotations

import logging
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .config import read_json_file
from .errors import ConfigError, CrossrankError, TokenizationError, TooLongError
from .templates import RenderedPiece, Template

__all__ = ["Encoded", "PromptEncoder", "TokenizationError", "TooLongError", "cut_counts", "encode_user_texts",
           "is_panic", "longest_first", "no_room_error", "read_tokenizer", "tokenizer_failure", "truncated_texts"]

logger = logging.getLogger("crossrank")

# Texts every tokenizer must encode (alone, as a pair with its special tokens) and decode at load:
# tokenizers' Rust code panics, rather than refuse, on some malformed files (a normalizer replacing
# the empty string, a post-processor naming a special token it lacks), and only once it encodes.
_PROBE_TEXTS = ("What is the capital of China?", "Grüße, 你好 🙂\t\n  x", " ", "")


def is_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is pyo3's PanicException: tokenizers' Rust code panicked. It derives from
    BaseException, so that bare ``except Exception`` misses it, and pyo3 creates the class only at
    the first panic, so it is known by its name."""
    return type(exc).__name__ == "PanicException"


def _tokenizers_failure(exc: BaseException) -> bool:
    """Whether tokenizers raised ``exc`` for a bad file: a plain Exception, or a panic."""
    return isinstance(exc, Exception) or is_panic(exc)


def tokenizer_failure(index: Optional[int], reason: str) -> TokenizationError:
    """The error for a pair whose text the tokenizer panicked on (``index``: the pair, in the
    caller's numbering; ``None``: not traced to one pair)."""
    where = f"the text of pair {index}" if index is not None else "a text of the call"
    return TokenizationError(
        f"the tokenizer failed on {where}: the tokenizers library panicked ({reason}); this model's "
        "tokenizer.json cannot tokenize that text, so change it or leave it out",
        [] if index is None else [index], reason)


def encode_user_texts(tokenizer: Any, inputs: Sequence[Any], *, add_special_tokens: bool,
                      items: Optional[Sequence[int]] = None) -> List[Any]:
    """``tokenizer.encode_batch(inputs)`` on texts from the user (or pairs of them). A valid
    ``tokenizer.json`` can still panic on some input: that raises :class:`TokenizationError`
    naming the pair (``items[k]``: the pair ``inputs[k]`` belongs to; default ``k``)."""
    try:
        return tokenizer.encode_batch(list(inputs), add_special_tokens=add_special_tokens)
    except BaseException as exc:
        if not is_panic(exc):
            raise
        reason = str(exc)
    # The batch's panic does not say which input caused it: found again one input at a time.
    for k, one in enumerate(inputs):
        try:
            tokenizer.encode_batch([one], add_special_tokens=add_special_tokens)
        except BaseException as exc:
            if not is_panic(exc):
                raise
            raise tokenizer_failure(items[k] if items is not None else k, reason) from None
    raise tokenizer_failure(None, reason)


def read_tokenizer(path: Path) -> Any:
    """The ``tokenizers.Tokenizer`` of a ``tokenizer.json``, after it encoded and decoded a few
    texts; a file it cannot read or run raises :class:`CrossrankError` naming the file."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except BaseException as exc:
        if not _tokenizers_failure(exc):
            raise
        raise CrossrankError(f"cannot read {path}: {exc}") from None
    try:
        for text in _PROBE_TEXTS:
            tokenizer.decode(tokenizer.encode(text, add_special_tokens=True).ids, skip_special_tokens=False)
            tokenizer.encode(text, add_special_tokens=False)
            tokenizer.encode(_PROBE_TEXTS[0], text, add_special_tokens=True)
    except BaseException as exc:
        if not _tokenizers_failure(exc):
            raise
        raise CrossrankError(f"{path} does not work as a tokenizer: encoding a plain text failed with "
                             f"{type(exc).__name__}: {exc}. Use the tokenizer.json the model was released "
                             "with (transformers' tokenizer.save_pretrained writes one)") from None
    return tokenizer


@dataclass(frozen=True)
class Encoded:
    """Token ids of a batch of prompts.

    Attributes:
        input_ids: One list of ids per prompt, unpadded.
        truncated: Whether each prompt was cut to fit ``max_length``.
        document_tokens: Template form only: per prompt, ``(kept, whole)``, the document's tokens
            left in the prompt and the tokens it had in the prompt before any cut.
        no_room: Indices of the prompts whose template and query leave no room for the document
            (the whole document was cut: its score would ignore it). Filled only when the encoder
            was asked not to raise (``check_room=False``); otherwise such prompts raise
            :class:`~crossrank.TooLongError` with these indices.
        query_truncated: Whether each prompt's query lost tokens: in the template form to its cap,
            ``truncate_query``, or a document with nothing left to cut (such as an empty one); in the
            request form, the first text of a pair cut longest-first. ``None`` from an encoding that
            never cuts.
        document_truncated: Whether each prompt's document (the request form's second text) lost
            tokens; ``None`` as ``query_truncated``. The two are what :func:`cut_counts` counts.
    """

    input_ids: List[List[int]]
    truncated: List[bool]
    document_tokens: Optional[List[Tuple[int, int]]] = None
    no_room: Tuple[int, ...] = ()
    query_truncated: Optional[List[bool]] = None
    document_truncated: Optional[List[bool]] = None

    @property
    def num_tokens(self) -> List[int]:
        """Length of each prompt in tokens."""
        return [len(ids) for ids in self.input_ids]

    def __len__(self) -> int:
        return len(self.input_ids)


def _token_range(offsets: Sequence[Tuple[int, int]], span: Optional[Tuple[int, int]]) -> Tuple[int, int]:
    """Indices [first, last) of the tokens that overlap a character span (empty if none do)."""
    if span is None:
        return 0, 0
    start, end = span
    first = last = -1
    for i, (s, e) in enumerate(offsets):
        if s < end and e > start:
            if first < 0:
                first = i
            last = i + 1
    return (first, last) if first >= 0 else (0, 0)


class PromptEncoder:
    """Tokenizes prompts with the model's ``tokenizer.json`` (HF ``tokenizers``).

    Args:
        model_dir: Directory holding ``tokenizer.json`` (and optionally ``tokenizer_config.json``).
        split_special_tokens: When true, special-token strings inside the user's query and document
            (``"<|im_end|>"``) are tokenized as plain text instead of as special tokens. The official
            recipes parse them as special tokens, so the default is false.
    """

    def __init__(self, model_dir: Path, *, split_special_tokens: bool = False) -> None:
        from tokenizers import Tokenizer

        path = Path(model_dir) / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"no tokenizer.json in {model_dir}: crossrank needs the model's fast tokenizer file "
                "(download it with the weights, or save it with transformers' tokenizer.save_pretrained)")
        self._tokenizer = read_tokenizer(path)
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._tokenizer.encode_special_tokens = False
        self.split_special_tokens = bool(split_special_tokens)
        if self.split_special_tokens:
            self._user_tokenizer = Tokenizer.from_str(self._tokenizer.to_str())
            self._user_tokenizer.encode_special_tokens = True
        else:
            self._user_tokenizer = self._tokenizer
        self._special_strings = [t.content for t in self._tokenizer.get_added_tokens_decoder().values()
                                 if t.special]
        self.bos_token_id = self._read_bos(Path(model_dir))
        self._constant_cache: Dict[str, List[int]] = {}
        self._truncating_cache: Dict[str, Any] = {}

    def _read_bos(self, model_dir: Path) -> Optional[int]:
        config_path = model_dir / "tokenizer_config.json"
        bos = None
        if config_path.is_file():
            try:
                data = read_json_file(config_path)
            except ConfigError:
                data = None
            # an unreadable tokenizer_config.json names no BOS (the chat template's reader reports it)
            bos = data.get("bos_token") if isinstance(data, dict) else None
        if isinstance(bos, dict):
            bos = bos.get("content")
        return self._tokenizer.token_to_id(bos) if isinstance(bos, str) else None

    @property
    def tokenizer(self) -> Any:
        """The ``tokenizers.Tokenizer`` of the template's own text (special tokens parsed)."""
        return self._tokenizer

    def get_vocab(self) -> Dict[str, int]:
        """The vocabulary, added tokens included."""
        return self._tokenizer.get_vocab(with_added_tokens=True)

    # -- template form -------------------------------------------------------------------------

    def _check_template(self, template: Template) -> None:
        if not self.split_special_tokens:
            return
        for piece in template.pieces:
            parsed = list(string.Formatter().parse(piece))
            if not any(name in ("query", "document") for _, name, _, _ in parsed):
                continue
            literal = "".join(lit for lit, _, _, _ in parsed)
            for special in self._special_strings:
                if special in literal:
                    raise ValueError(
                        f"template {template.name!r} writes the special token {special!r} in the piece "
                        "that holds user text, so split_special_tokens=True would break it; put special "
                        "tokens in pieces of their own")

    def _encode_constant(self, text: str) -> List[int]:
        ids = self._constant_cache.get(text)
        if ids is None:
            ids = self._tokenizer.encode(text, add_special_tokens=False).ids
            self._constant_cache[text] = ids
        return ids

    def fixed_tokens(self, template: Template) -> int:
        """Tokens of the template's pieces outside its ``max_length`` budget (with the BOS): what
        every prompt holds on top of ``max_length`` (mxbai-rerank's "predefined length")."""
        bos = 1 if template.add_bos and self.bos_token_id is not None else 0
        return bos + sum(len(self._encode_constant(template.pieces[k])) for k in template.fixed_pieces())

    def encode_template(self, template: Template, queries: Sequence[str], documents: Sequence[str],
                        instruction: Optional[str], max_length: int, *, truncate_query: bool = False,
                        check_room: bool = True) -> Encoded:
        """Token ids of the template's prompt for each (query, document) pair.

        A prompt longer than its budget loses the document's last tokens. When the template and
        the query leave no room for the document (all its tokens would go), the pair has "no room":

        Args:
            truncate_query: Cut the query and the document longest-first instead (the tokenizers
                library's ``LongestFirst`` rule, which TEI applies: the shorter of the two keeps up
                to half the room, the other the rest); the query loses its last tokens.
            check_room: When true (the default), pairs with no room raise :class:`TooLongError`
                naming them; when false they are listed in :attr:`Encoded.no_room` (their ids then
                hold the template and the cut query, as a server needs to report them).

        Raises:
            TooLongError: the template text alone exceeds ``max_length``, or (``check_room``) a pair
                has no room for its document.
        """
        self._check_template(template)
        if template.add_bos and self.bos_token_id is None:
            raise ValueError(f"template {template.name!r} starts with BOS, but the tokenizer defines no bos_token "
                             "in tokenizer_config.json")
        rendered = [template.render(q, d, instruction) for q, d in zip(queries, documents)]
        if template.mode == "joined":
            rendered = [[_join(pieces)] for pieces in rendered]

        # Encode every piece that holds user text in one batch call; constant pieces are cached.
        user_texts = [p.text for pieces in rendered for p in pieces if p.has_user_text]
        owners = [i for i, pieces in enumerate(rendered) for p in pieces if p.has_user_text]
        encodings = iter(encode_user_texts(self._user_tokenizer, user_texts, add_special_tokens=False, items=owners)
                         if user_texts else [])
        all_ids: List[List[int]] = []
        truncated: List[bool] = []
        doc_tokens: List[Tuple[int, int]] = []
        query_truncated: List[bool] = []
        no_room: List[int] = []
        query_cap = int(max_length * template.query_max_fraction) if template.query_max_fraction else None
        doc_cap = int(max_length * template.document_max_fraction) if template.document_max_fraction else None
        bos = [self.bos_token_id] if template.add_bos and self.bos_token_id is not None else []
        for pair_index, pieces in enumerate(rendered):
            piece_ids: List[List[int]] = []
            doc_at = query_at = None  # (piece index, first token, last token)
            doc_whole = 0
            capped = query_capped = False
            for k, piece in enumerate(pieces):
                if not piece.has_user_text:
                    piece_ids.append(list(self._encode_constant(piece.text)))
                    continue
                enc = next(encodings)
                ids = list(enc.ids)
                # A capped piece loses its last tokens, as the recipes' right truncation does.
                if piece.query_span is not None and query_cap is not None and len(ids) > query_cap:
                    ids, capped = ids[:query_cap], True
                    query_capped = True
                if piece.document_span is not None and doc_cap is not None and len(ids) > doc_cap:
                    ids, capped = ids[:doc_cap], True
                if piece.query_span is not None:
                    q0, q1 = _token_range(enc.offsets, piece.query_span)
                    q1 = min(q1, len(ids))
                    query_at = (k, min(q0, q1), q1)
                if piece.document_span is not None:
                    d0, d1 = _token_range(enc.offsets, piece.document_span)
                    doc_whole = d1 - d0
                    d1 = min(d1, len(ids))
                    doc_at = (k, min(d0, d1), d1)
                piece_ids.append(ids)
            counted = range(len(piece_ids)) if template.budget_pieces is None else template.budget_pieces
            budget = max_length + sum(len(piece_ids[k]) for k in template.budget_bonus_pieces)
            total = len(bos) + sum(len(piece_ids[k]) for k in counted)
            excess = total - budget
            truncated.append(excess > 0 or capped)
            # Cut the document's last tokens first, then the query's: the text's end goes first, as
            # right truncation of the official recipes does, and the template is never touched.
            removed: List[List[range]] = [[] for _ in piece_ids]
            doc_len = doc_at[2] - doc_at[1] if doc_at is not None else 0
            query_len = query_at[2] - query_at[1] if query_at is not None else 0
            if excess > doc_len + query_len:
                raise TooLongError(
                    f"pair {pair_index}: the {template.name!r} template takes {total - doc_len - query_len} tokens "
                    f"besides the query and document, so nothing fits in max_length={max_length}; "
                    "raise max_length", [pair_index])
            if excess <= 0:
                doc_cut = query_cut = 0
            elif truncate_query:
                query_keep, doc_keep = longest_first(query_len, doc_len, doc_len + query_len - excess)
                doc_cut, query_cut = doc_len - doc_keep, query_len - query_keep
            else:
                doc_cut = min(excess, doc_len)
                query_cut = excess - doc_cut
            for span, cut in ((doc_at, doc_cut), (query_at, query_cut)):
                if span is not None and cut:
                    k, first, last = span
                    removed[k].append(range(last - cut, last))
            doc_kept = doc_len - doc_cut
            if doc_kept == 0 and doc_whole > 0:
                no_room.append(pair_index)
            ids = list(bos)
            for part, cuts in zip(piece_ids, removed):
                if not cuts:
                    ids.extend(part)
                    continue
                drop = set().union(*cuts)
                ids.extend(t for i, t in enumerate(part) if i not in drop)
            all_ids.append(ids)
            doc_tokens.append((doc_kept, doc_whole))
            query_truncated.append(query_capped or query_cut > 0)
        if no_room and check_room:
            raise no_room_error(no_room, max_length, truncate_query)
        return Encoded(all_ids, truncated, doc_tokens, tuple(no_room), query_truncated,
                       [kept < whole for kept, whole in doc_tokens])

    # -- plain texts ---------------------------------------------------------------------------

    def encode_texts(self, texts: Sequence[str]) -> Encoded:
        """Token ids of finished prompt texts, with no special tokens added (as
        ``apply_chat_template`` tokenizes a rendered chat); nothing is cut."""
        encodings = encode_user_texts(self._tokenizer, texts, add_special_tokens=False) if texts else []
        ids = [list(e.ids) for e in encodings]
        return Encoded(ids, [False] * len(ids))

    def text_offsets(self, texts: Sequence[str], items: Optional[Sequence[int]] = None) -> List[List[Tuple[int, int]]]:
        """Character offsets of the tokens of each user text tokenized alone (no special tokens),
        with the tokenizer user texts get (``split_special_tokens`` honoured); ``items``: the pair
        each text belongs to, for :class:`TokenizationError` (default: its position)."""
        if not texts:
            return []
        encodings = encode_user_texts(self._user_tokenizer, texts, add_special_tokens=False, items=items)
        return [list(e.offsets) for e in encodings]

    # -- request form (vLLM) --------------------------------------------------------------------

    def _truncating(self, max_length: int) -> Any:
        """A copy of the tokenizer that cuts pairs longest-first to ``max_length`` (cached)."""
        key = f"truncating:{max_length}"
        tok = self._truncating_cache.get(key)
        if tok is None:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_str(self._tokenizer.to_str())
            tok.no_padding()
            try:
                tok.enable_truncation(max_length, strategy="longest_first")
            except Exception as exc:  # tokenizers raises a bare Exception for a limit below its special tokens
                raise TooLongError(
                    f"max_length={max_length} cannot hold the tokenizer's special tokens: {exc}") from exc
            self._truncating_cache[key] = tok
        return tok

    def encode_requests(self, texts_1: Sequence[str], texts_2: Sequence[str], *, use_sep_token: bool,
                        max_length: int, truncate: bool = False) -> Encoded:
        """vLLM's tokenization of score requests: ``text_1 + text_2`` as one text with the
        tokenizer's special tokens (``use_sep_token=False``), or the two as a pair.

        Args:
            truncate: Pairs (``use_sep_token``) only: cut the two texts longest-first to
                ``max_length``, as transformers' ``truncation=True`` (and sentence-transformers)
                does, instead of refusing them (``query_truncated`` and ``document_truncated`` say
                which of the two lost tokens). A joined text is never cut.

        Raises:
            TooLongError: if a prompt is longer than ``max_length`` (vLLM refuses such requests too:
                cutting the end would cut the template's suffix and give a wrong score).
        """
        if use_sep_token and truncate:
            pairs = list(zip(texts_1, texts_2))
            encodings = encode_user_texts(self._truncating(max_length), pairs, add_special_tokens=True)
            truncated = [bool(e.overflowing) for e in encodings]
            first_cut, second_cut = self._cut_sides(pairs, encodings, truncated)
            return Encoded([list(e.ids) for e in encodings], truncated, query_truncated=first_cut,
                           document_truncated=second_cut)
        if use_sep_token:
            encodings = encode_user_texts(self._tokenizer, list(zip(texts_1, texts_2)), add_special_tokens=True)
        else:
            encodings = encode_user_texts(self._tokenizer, [a + b for a, b in zip(texts_1, texts_2)],
                                          add_special_tokens=True)
        ids = [list(e.ids) for e in encodings]
        too_long = [i for i, seq in enumerate(ids) if len(seq) > max_length]
        if too_long:
            i = too_long[0]
            raise TooLongError(
                f"{_pairs_text(too_long)} longer than max_length={max_length} (input {i}: {len(ids[i])} tokens); "
                "shorten it, raise max_length, or use score()/rank() with a template, which truncate the "
                "document inside it", too_long)
        return Encoded(ids, [False] * len(ids))

    def _cut_sides(self, pairs: Sequence[Tuple[str, str]], encodings: Sequence[Any],
                   truncated: Sequence[bool]) -> Tuple[List[bool], List[bool]]:
        """Whether each pair's first and second text lost tokens to the longest-first cut, which a
        cut encoding does not say. Its rule (:func:`longest_first`) leaves the shorter text whole
        when it is under half of the room, and else cuts it to that half: a text that kept fewer
        tokens than half was whole, so the other one was cut. Only pairs where both kept half
        (the shorter may have fit it exactly) are encoded again, whole, to count their tokens."""
        first, second = [False] * len(pairs), [False] * len(pairs)
        unsure = []
        for i, cut in enumerate(truncated):
            if not cut:
                continue
            kept = encodings[i].sequence_ids  # None marks special tokens
            kept_first, kept_second = kept.count(0), kept.count(1)
            half = (kept_first + kept_second) // 2  # a cut pair fills the room
            if kept_first < half:
                second[i] = True
            elif kept_second < half:
                first[i] = True
            else:
                unsure.append(i)
        whole = (encode_user_texts(self._tokenizer, [pairs[i] for i in unsure], add_special_tokens=True,
                                   items=unsure) if unsure else [])
        for i, full in zip(unsure, whole):
            kept = encodings[i].sequence_ids
            first[i] = kept.count(0) < full.sequence_ids.count(0)
            second[i] = kept.count(1) < full.sequence_ids.count(1)
        return first, second


def cut_counts(encoded: Any) -> Tuple[int, int]:
    """How many prompts of ``encoded`` (an :class:`Encoded`, or any object with ``truncated``) lost
    document tokens, and how many lost query tokens (its ``document_truncated`` and
    ``query_truncated``). Without that record, every truncated prompt counts as a cut document."""
    documents = getattr(encoded, "document_truncated", None)
    queries = getattr(encoded, "query_truncated", None)
    if documents is None or queries is None:
        return sum(encoded.truncated), 0
    return sum(documents), sum(queries)


def truncated_texts(documents: int, queries: int) -> str:
    """The end of the truncation warning: what lost tokens (:func:`cut_counts`), counted where a
    query was cut too (an over-long query beside an empty document is cut, not the document)."""
    if not queries:
        return "their documents were truncated"
    parts = [f"{n} {word if n == 1 else plural}" for n, word, plural in
             ((documents, "document", "documents"), (queries, "query", "queries")) if n]
    return f"{' and '.join(parts)} {'was' if documents + queries == 1 else 'were'} truncated"


def longest_first(first: int, second: int, room: int) -> Tuple[int, int]:
    """How many tokens two texts keep when ``room`` tokens are left for both: the tokenizers
    library's ``LongestFirst`` truncation (what TEI applies to a pair). The shorter text (the first
    on a tie) keeps up to ``room // 2`` tokens, the other the rest."""
    if first + second <= room:
        return first, second
    room = max(room, 0)
    if first <= second:
        keep_first = min(first, room // 2)
        return keep_first, min(second, room - keep_first)
    keep_second = min(second, room // 2)
    return min(first, room - keep_second), keep_second


def _pairs_text(indices: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in indices[:10]) + (", ..." if len(indices) > 10 else "")
    return f"pair {shown} is" if len(indices) == 1 else f"pairs {shown} ({len(indices)}) are"


def no_room_error(indices: Sequence[int], max_length: int, truncate_query: bool = False) -> TooLongError:
    """The :class:`TooLongError` for pairs whose template and query leave no room for the document."""
    how = ("even cut longest-first, the query leaves" if truncate_query
           else "the template and the query leave")
    return TooLongError(
        f"{_pairs_text(list(indices))} too long: {how} no room for the document within max_length={max_length}, "
        "so the score would ignore it. Shorten the query, raise max_length, or pass truncate_query=True to cut "
        "the query and the document longest-first", list(indices))


def _join(pieces: List[RenderedPiece]) -> RenderedPiece:
    """Joins rendered pieces into one, shifting the spans."""
    text, offset = [], 0
    query_span = document_span = None
    for p in pieces:
        if p.query_span is not None:
            query_span = (p.query_span[0] + offset, p.query_span[1] + offset)
        if p.document_span is not None:
            document_span = (p.document_span[0] + offset, p.document_span[1] + offset)
        text.append(p.text)
        offset += len(p.text)
    return RenderedPiece("".join(text), query_span, document_span)
