"""Retrieval datasets in BEIR's layout, read and checked for :mod:`crossrank.evaluation`.

    DIR/corpus.jsonl       {"_id": "...", "title": "...", "text": "..."} one object a line
    DIR/queries.jsonl      {"_id": "...", "text": "..."} one object a line
    DIR/qrels/test.tsv     query-id<TAB>corpus-id<TAB>score, after one header line
                           (DIR/qrels.tsv is accepted too; a TREC qrels file,
                           "qid 0 docid rel" without header, as well)

A malformed line raises :class:`DatasetError` naming the file, the line and what to fix.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from .errors import CrossrankError

__all__ = ["DatasetError", "Dataset", "load_dataset"]

# Its one log line is part of an evaluation's report, under the logger users configure for it.
logger = logging.getLogger("crossrank.evaluation")


class DatasetError(CrossrankError, ValueError):
    """A dataset file is malformed or inconsistent; the message names the file and line."""


# -- dataset -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """A retrieval test collection in memory.

    Attributes:
        path: The dataset directory.
        split: The qrels split (``"test"`` for ``qrels/test.tsv``).
        corpus: Document id -> ``(title, text)``, in file order.
        queries: Query id -> text, in file order (every query of ``queries.jsonl``).
        qrels: Query id -> {document id: grade}, in file order.
        qrels_file: The qrels file that was read.
    """

    path: Path
    split: str
    corpus: Dict[str, Tuple[str, str]]
    queries: Dict[str, str]
    qrels: Dict[str, Dict[str, int]]
    qrels_file: Path

    def document_text(self, doc_id: str) -> str:
        """The text BM25 indexes and the reranker reads: ``title + " " + text``, as BEIR joins them."""
        title, text = self.corpus[doc_id]
        return f"{title} {text}".strip()

    @property
    def evaluated_queries(self) -> List[str]:
        """Query ids with at least one relevant (grade >= 1) judgment, in qrels order."""
        return [qid for qid, judged in self.qrels.items() if any(g > 0 for g in judged.values())]


def _jsonl(path: Path) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """(line number, object) for each non-blank line; malformed lines raise DatasetError."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); "
                                   'each line must be one JSON object, e.g. {"_id": "d1", "text": "..."}') from None
            if not isinstance(obj, dict):
                raise DatasetError(f"{path}:{lineno}: expected a JSON object, found {type(obj).__name__}")
            yield lineno, obj


def _record_id(path: Path, lineno: int, obj: Mapping[str, Any]) -> str:
    value = obj.get("_id")
    # BEIR ids are strings; numbers are accepted as their decimal text, which is how qrels spell them.
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise DatasetError(f'{path}:{lineno}: "_id" is missing or not a non-empty string (got {value!r})')
    return str(value)


def _text_field(path: Path, lineno: int, obj: Mapping[str, Any], key: str, required: bool) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        what = "is missing" if value is None else f"must be a string, not {type(value).__name__}"
        raise DatasetError(f'{path}:{lineno}: "{key}" {what}')
    return value


def _read_corpus(path: Path) -> Dict[str, Tuple[str, str]]:
    corpus: Dict[str, Tuple[str, str]] = {}
    first_line: Dict[str, int] = {}
    for lineno, obj in _jsonl(path):
        doc_id = _record_id(path, lineno, obj)
        if doc_id in corpus:
            raise DatasetError(f"{path}:{lineno}: duplicate _id {doc_id!r} (first on line {first_line[doc_id]})")
        corpus[doc_id] = (_text_field(path, lineno, obj, "title", False), _text_field(path, lineno, obj, "text", True))
        first_line[doc_id] = lineno
    if not corpus:
        raise DatasetError(f"{path}: holds no documents")
    return corpus


def _read_queries(path: Path) -> Dict[str, str]:
    queries: Dict[str, str] = {}
    first_line: Dict[str, int] = {}
    for lineno, obj in _jsonl(path):
        qid = _record_id(path, lineno, obj)
        if qid in queries:
            raise DatasetError(f"{path}:{lineno}: duplicate _id {qid!r} (first on line {first_line[qid]})")
        queries[qid] = _text_field(path, lineno, obj, "text", True)
        first_line[qid] = lineno
    if not queries:
        raise DatasetError(f"{path}: holds no queries")
    return queries


def _find_qrels(root: Path, split: str) -> Path:
    candidates = [root / "qrels" / f"{split}.tsv", root / "qrels.tsv"]
    for c in candidates:
        if c.is_file():
            return c
    hint = ""
    if (root / "qrels").is_dir():
        splits = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
        if splits:
            hint = f"; qrels/ holds the splits {', '.join(splits)}: pass split=... (--split)"
    raise FileNotFoundError(f"no qrels for split {split!r} in {root}: looked for "
                            f"{' and '.join(str(c) for c in candidates)}{hint}")


def _read_qrels(path: Path) -> Tuple[Dict[str, Dict[str, int]], Dict[Tuple[str, str], int]]:
    """Query id -> {doc id: grade}, and the line of each judgment (for error messages)."""
    qrels: Dict[str, Dict[str, int]] = {}
    lines: Dict[Tuple[str, str], int] = {}
    fmt: Optional[str] = None
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            if fmt is None:
                # The first line tells the format: BEIR's header (skipped, as BEIR skips it) or a
                # headerless BEIR row, both tab-separated; or a TREC row "qid iteration docid grade".
                tab_fields, fields = line.split("\t"), line.split()
                if len(tab_fields) == 3:
                    fmt = "beir"
                    if not _is_int(tab_fields[2].strip()):
                        continue
                elif len(fields) == 4 and _is_int(fields[3]):
                    fmt = "trec"
                else:
                    raise DatasetError(f"{path}:{lineno}: not a qrels line ({line[:80]!r}); expected BEIR's "
                                       "header 'query-id<TAB>corpus-id<TAB>score' and rows in that form, or "
                                       "TREC rows 'query-id 0 corpus-id grade'")
            if fmt == "trec":
                fields = line.split()
                if len(fields) != 4:
                    raise DatasetError(f"{path}:{lineno}: expected 4 fields (query-id iteration corpus-id "
                                       f"grade) in this TREC qrels file, found {len(fields)}")
                qid, doc_id, grade = fields[0], fields[2], fields[3]
            else:
                fields = line.split("\t")
                if len(fields) != 3:
                    raise DatasetError(f"{path}:{lineno}: expected 3 tab-separated fields (query-id, corpus-id, "
                                       f"score), found {len(fields)}")
                qid, doc_id, grade = (x.strip() for x in fields)
            if not _is_int(grade):
                raise DatasetError(f"{path}:{lineno}: the relevance grade must be an integer, found {grade!r}")
            if (qid, doc_id) in lines:
                raise DatasetError(f"{path}:{lineno}: query {qid!r} judges {doc_id!r} a second time "
                                   f"(first on line {lines[qid, doc_id]})")
            qrels.setdefault(qid, {})[doc_id] = int(grade)
            lines[qid, doc_id] = lineno
    if not qrels:
        raise DatasetError(f"{path}: holds no judgments")
    return qrels, lines


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


def load_dataset(data_dir: Union[str, os.PathLike], split: str = "test") -> Dataset:
    """Reads a dataset in BEIR's layout (see the module docstring).

    Every query and document id in the qrels must exist in ``queries.jsonl`` and ``corpus.jsonl``.

    Raises:
        FileNotFoundError: A file is missing; the message lists what was looked for.
        DatasetError: A line is malformed or an id is unknown; the message gives file and line.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset directory {root} does not exist; it must hold corpus.jsonl, "
                                "queries.jsonl and qrels/<split>.tsv (BEIR's layout)")
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (root / name).is_file():
            raise FileNotFoundError(f"{root / name} is missing; a dataset directory holds corpus.jsonl, "
                                    "queries.jsonl and qrels/<split>.tsv (BEIR's layout)")
    corpus = _read_corpus(root / "corpus.jsonl")
    queries = _read_queries(root / "queries.jsonl")
    qrels_file = _find_qrels(root, split)
    qrels, lines = _read_qrels(qrels_file)
    for kind, known, index in (("query-id", queries, 0), ("corpus-id", corpus, 1)):
        unknown = [key for key in lines if key[index] not in known]
        if unknown:
            first = unknown[0]
            names = sorted({key[index] for key in unknown})
            shown = ", ".join(map(repr, names[:5])) + (", ..." if len(names) > 5 else "")
            source = "queries.jsonl" if index == 0 else "corpus.jsonl"
            raise DatasetError(f"{qrels_file}:{lines[first]}: {kind} {first[index]!r} is not in {source} "
                               f"({len(names)} unknown {kind}s: {shown}); fix the ids or remove those judgments")
    dataset = Dataset(path=root, split=split, corpus=corpus, queries=queries, qrels=qrels, qrels_file=qrels_file)
    logger.info("dataset %s: %d documents, %d queries, %d judged queries (%d with a relevant document) in %s",
                root, len(corpus), len(queries), len(qrels), len(dataset.evaluated_queries), qrels_file.name)
    return dataset


# -- first stage ---------------------------------------------------------------------------------
