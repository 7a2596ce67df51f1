"""Long documents: overlapping token windows, each scored as a document, then one score per document.

A document whose tokens do not fit the prompt's document budget (what ``max_length`` leaves once
the template, the instruction and the query are in) would lose its end to truncation. With
chunking it is split into windows of its own tokens (tokenized alone, with the tokenizer user
texts get), ``size`` tokens long and ``overlap`` tokens shared with the next window; each window's
text (the document's characters from its first token to its last) is scored exactly as a document
of that text would be, and the scores are aggregated: ``"max"`` (the best passage decides, MaxP) or
``"first"`` (only the first window is scored: the document's opening, cut at a token boundary).

Documents that fit are scored whole, unchanged, unless an explicit ``size`` is smaller than them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .integers import as_int

__all__ = ["Chunking", "as_chunking", "token_windows", "window_texts", "split_documents", "chunk_prompts",
           "aggregate_chunks", "AGGREGATES"]

#: How chunk scores become the document's score.
AGGREGATES = ("max", "first")


@dataclass(frozen=True)
class Chunking:
    """How to split documents that are too long for one prompt.

    Attributes:
        size: Tokens per chunk (of the document tokenized alone). ``None``: the prompt's document
            budget, so every chunk fills the prompt; a larger value is lowered to the budget.
        overlap: Tokens each chunk shares with the next; ``None``: an eighth of the chunk size.
            Must be smaller than the chunk size.
        aggregate: ``"max"``: the best chunk's score; ``"first"``: the first chunk's score (only it
            is scored).
        max_chunks: Score at most this many chunks per document (the first ones); ``None``: all.
    """

    size: Optional[int] = None
    overlap: Optional[int] = None
    aggregate: str = "max"
    max_chunks: Optional[int] = None

    def __post_init__(self) -> None:
        # stored as Python ints (NumPy integers are taken): equal Chunkings compare and pickle alike
        for name, minimum in (("size", 1), ("max_chunks", 1), ("overlap", 0)):
            value = getattr(self, name)
            if value is not None:
                what = "a positive integer or None" if minimum else "a non-negative integer or None"
                object.__setattr__(self, name, as_int(value, f"Chunking.{name}", minimum=minimum, what=what))
        if self.size is not None and self.overlap is not None and self.overlap >= self.size:
            raise ValueError(f"Chunking.overlap={self.overlap} must be smaller than Chunking.size={self.size}")
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"Chunking.aggregate must be one of {', '.join(map(repr, AGGREGATES))}, "
                             f"got {self.aggregate!r}")

    def window(self, budget: int) -> Tuple[int, int]:
        """The chunk size and overlap used when ``budget`` document tokens fit in the prompt.

        Raises:
            ValueError: the overlap does not leave room to advance within the budget.
        """
        size = budget if self.size is None else min(self.size, budget)
        overlap = size // 8 if self.overlap is None else self.overlap
        if overlap >= size:
            raise ValueError(f"Chunking.overlap={overlap} leaves no room to advance: the prompt holds only "
                             f"{size} document tokens per chunk; lower the overlap or raise max_length")
        return size, overlap


ChunkingLike = Union[None, bool, str, Mapping[str, Any], Chunking]


def as_chunking(value: ChunkingLike) -> Optional[Chunking]:
    """A :class:`Chunking` from the forms the API accepts: ``None``/``False`` (off), ``True``
    (defaults), ``"max"``/``"first"`` (defaults with that aggregate), a dict of fields, or a
    :class:`Chunking`."""
    if value is None or value is False:
        return None
    if value is True:
        return Chunking()
    if isinstance(value, Chunking):
        return value
    if isinstance(value, str):
        return Chunking(aggregate=value)
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"size", "overlap", "aggregate", "max_chunks"})
        if unknown:
            raise ValueError(f"unknown chunking option(s) {unknown}; options: size, overlap, aggregate, max_chunks")
        return Chunking(**dict(value))
    raise TypeError(f"chunking must be None, a bool, 'max', 'first', a dict or a crossrank.chunking.Chunking, "
                    f"got {type(value).__name__}")


def token_windows(n_tokens: int, size: int, overlap: int, max_chunks: Optional[int] = None) -> List[Tuple[int, int]]:
    """Token index ranges ``[start, stop)`` of the chunks of an ``n_tokens``-token document: starts
    ``size - overlap`` apart, the last one ending at the document's end."""
    if n_tokens <= size:
        return [(0, n_tokens)]
    stride = size - overlap
    windows = []
    start = 0
    while True:
        stop = min(start + size, n_tokens)
        windows.append((start, stop))
        if stop == n_tokens or (max_chunks is not None and len(windows) == max_chunks):
            break
        start += stride
    return windows


def window_texts(document: str, offsets: Sequence[Tuple[int, int]], windows: Sequence[Tuple[int, int]]) -> List[str]:
    """The document's text under each token window: from the first token's first character to the
    last token's last one. A window after the first starts at its first non-space character: the
    space before a word belongs to the word's token, and a chunk placed after the template's
    ``": "`` would otherwise carry two spaces (one token more than its window)."""
    texts = []
    for start, stop in windows:
        if stop <= start:
            texts.append("")
            continue
        first = min(s for s, _ in offsets[start:stop])
        last = max(e for _, e in offsets[start:stop])
        if start > 0:
            while first < last and document[first].isspace():
                first += 1
        texts.append(document[first:last])
    return texts


def split_documents(docs: Sequence[str], plan: Chunking, document_tokens: Optional[Sequence[Tuple[int, int]]],
                    text_offsets: Callable[[List[str], List[int]], List[List[Tuple[int, int]]]], *, prompt_format: str,
                    max_length: int) -> List[Optional[List[str]]]:
    """Per document, ``None`` (scored whole) or the texts of its chunks.

    Args:
        docs: The documents.
        plan: The chunking.
        document_tokens: Per prompt, ``(kept, whole)`` document tokens (``Encoded.document_tokens``),
            or ``None`` when the prompt cannot be cut inside the document.
        text_offsets: The character offsets of each text's tokens, tokenized alone (given the texts
            and the index of each one's document, which its errors name).
        prompt_format, max_length: The model's, for the error messages.
    """
    if document_tokens is None and plan.size is None:
        # Prompts crossrank cannot cut are refused when too long, so every document fitted whole.
        return [None] * len(docs)
    if document_tokens is None:
        raise ValueError(
            f"chunking with a chunk size needs a prompt that crossrank can cut inside the document; the "
            f"{prompt_format!r} prompt of this model cannot be (a chat template that rewrites its inputs, "
            "or pair tokenization)")
    to_split = []
    for i, (kept, whole) in enumerate(document_tokens):
        cut = kept < whole
        if cut and kept == 0:
            raise ValueError(
                f"document {i}: the template, instruction and query take all of max_length={max_length}, "
                "so no part of the document fits; shorten the query or raise max_length")
        if cut or plan.size is not None:
            to_split.append((i, kept if cut else None))
    out: List[Optional[List[str]]] = [None] * len(docs)
    offsets = text_offsets([docs[i] for i, _ in to_split], [i for i, _ in to_split])
    for (i, budget), doc_offsets in zip(to_split, offsets):
        n = len(doc_offsets)
        if budget is None and n <= plan.size:  # type: ignore[operator]
            continue  # it fits and is no longer than the chunk size: scored whole
        size, overlap = plan.window(budget if budget is not None else n)
        windows = token_windows(n, size, overlap, plan.max_chunks)
        if plan.aggregate == "first":
            windows = windows[:1]
        out[i] = window_texts(docs[i], doc_offsets, windows)
    return out


def chunk_prompts(chunks: Sequence[Optional[List[str]]], input_ids: Sequence[Sequence[int]], queries: Sequence[str],
                  encode: Callable[[List[str], List[str]], Sequence[Sequence[int]]],
                  ) -> Tuple[List[Sequence[int]], List[int]]:
    """The prompts to score and, per prompt, its document: a document scored whole keeps its ids
    (``input_ids[i]``), the chunks of the others are encoded as documents of their query, all at once
    by ``encode(queries, documents)``, after them."""
    ids: List[Sequence[int]] = []
    owner: List[int] = []
    chunk_queries: List[str] = []
    chunk_docs: List[str] = []
    chunk_owner: List[int] = []
    for i, texts in enumerate(chunks):
        if texts is None:
            ids.append(input_ids[i])
            owner.append(i)
        else:
            chunk_queries += [queries[i]] * len(texts)
            chunk_docs += texts
            chunk_owner += [i] * len(texts)
    if chunk_docs:
        ids += list(encode(chunk_queries, chunk_docs))
        owner += chunk_owner
    return ids, owner


def aggregate_chunks(scores: np.ndarray, owner: Sequence[int], n_docs: int, aggregate: str) -> np.ndarray:
    """One score per document from the scores of its prompts (``owner[k]``: the document of score
    ``k``; a document's chunks in order)."""
    # Chunks of a document are in order, so the first one seen is the document's first chunk.
    out = np.full(n_docs, -np.inf, dtype=np.float32)
    seen = np.zeros(n_docs, dtype=bool)
    for value, i in zip(scores, owner):
        if aggregate == "first":
            if not seen[i]:
                out[i] = value
        else:
            out[i] = max(out[i], value)
        seen[i] = True
    return out
