"""The offline converter: a causal-LM reranker -> a ``*ForSequenceClassification`` checkpoint.

:func:`convert` does what vLLM's ``convert_model_to_seq_cls.py`` does, without torch: it reads the
classifier rows of the LM head, builds ``score.weight`` (``[num_labels, hidden]``, float32) and
writes a checkpoint that holds every decoder tensor of the source in its original dtype, no LM
head, a ``config.json`` that ``transformers``' ``AutoModelForSequenceClassification``, vLLM and
crossrank load with no overrides, and the tokenizer files.

=====================  ====================================  ==========
method                 score.weight                          num_labels
=====================  ====================================  ==========
``from_2_way_softmax`` ``W[true] - W[false]`` (in float32)   1
``no_post_processing`` ``W[tokens]`` (the rows, in order)    len(tokens)
=====================  ====================================  ==========

``W`` is ``lm_head.weight``, or ``model.embed_tokens.weight`` when the embeddings are tied and the
file holds no ``lm_head.weight`` (transformers ties only equal tensors; vLLM reads the embeddings
whenever the config says tied).

The source files are validated by the C reader (:func:`crossrank._core.inspect_checkpoint`)
before anything is read: every header, dtype, shape and byte range is checked there, so the
Python side can parse the headers and copy byte ranges from a memory map without re-checking
them. Tensors are streamed from the source files to the output, never held whole in memory, by
the package's one safetensors writer (:mod:`crossrank.safetensors_writer`).
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import struct
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from .config import family_of_config, normalize, read_config_json, read_json_file, resolve_classifier_tokens
from .errors import CheckpointError, ConfigError, CrossrankError, UnsupportedModelError
from .hub import resolve_model_path
from .safetensors_writer import ITEMSIZE, MAX_SHARD_SIZE, MappedFiles, array_tensor, write_safetensors
from .templates import TEMPLATES, Template, template_for_model
from .tokenization import read_tokenizer

__all__ = ["convert", "MAX_SHARD_SIZE", "TOKENIZER_FILES"]

#: Tokenizer files copied next to the converted weights when the source has them.
TOKENIZER_FILES: Tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
)

#: Config keys that would make a loader rebuild the head from an LM head the output no longer
#: has (or that the converter writes itself); never copied from the source config.
_DROPPED_KEYS = (
    "classifier_from_token",
    "method",
    "is_original_qwen3_reranker",
    "is_qwen3_reranker",
    "use_pad_token",
    "use_sep_token",
    "crossrank_conversion",
    "crossrank_template",
)

class _Tensor:
    """One tensor of the source: its dtype, shape and where its bytes lie."""

    __slots__ = ("name", "dtype", "shape", "nbytes", "src_file", "src_offset")

    def __init__(self, name: str, dtype: str, shape: Sequence[int], nbytes: int, src_file: Path, src_offset: int):
        self.name = name
        self.dtype = dtype
        self.shape = [int(d) for d in shape]
        self.nbytes = int(nbytes)
        self.src_file = src_file
        self.src_offset = int(src_offset)


# --------------------------------------------------------------------------------------
# Reading the source
# --------------------------------------------------------------------------------------


def _read_header(path: Path) -> Tuple[int, Dict[str, Any]]:
    """(data start, header dict) of a safetensors file already validated by the C reader."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n).decode("utf-8"))
    return 8 + n, header


def _source_tensors(src: Path) -> Dict[str, _Tensor]:
    """Every tensor of the checkpoint in ``src``, with its file and absolute byte offset.

    ``inspect_checkpoint`` validates every file (header, dtypes, shapes, ranges, shard index)
    first and raises :class:`CheckpointError` on anything malformed or hostile."""
    listing = _core.inspect_checkpoint(str(src))
    headers: Dict[str, Tuple[int, Dict[str, Any]]] = {}
    out: Dict[str, _Tensor] = {}
    for item in listing:
        fname = item["file"]
        if fname not in headers:
            headers[fname] = _read_header(src / fname)
        start, header = headers[fname]
        entry = header[item["name"]]
        begin, end = entry["data_offsets"]
        if entry["dtype"] != item["dtype"] or tuple(entry["shape"]) != tuple(item["shape"]):
            raise CheckpointError(
                f"{src / fname}: tensor {item['name']} changed while it was being read "
                f"(the file was modified during the conversion)")
        out[item["name"]] = _Tensor(item["name"], entry["dtype"], entry["shape"], end - begin,
                                    src / fname, start + begin)
    return out


def _rows_f32(t: _Tensor, rows: Sequence[int]) -> np.ndarray:
    """Rows of a 2-D float tensor, widened to float32 (exactly: bf16/f16 -> f32 is lossless)."""
    width = t.shape[1]
    itemsize = ITEMSIZE[t.dtype]
    out = np.empty((len(rows), width), dtype=np.float32)
    with open(t.src_file, "rb") as f:  # type: ignore[arg-type]
        for k, r in enumerate(rows):
            f.seek(t.src_offset + int(r) * width * itemsize)
            raw = f.read(width * itemsize)
            if t.dtype == "F32":
                out[k] = np.frombuffer(raw, dtype="<f4")
            elif t.dtype == "BF16":
                out[k] = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << np.uint32(16)).view(np.float32)
            elif t.dtype == "F16":
                out[k] = np.frombuffer(raw, dtype="<f2").astype(np.float32)
            else:  # F64; checked by the caller
                out[k] = np.frombuffer(raw, dtype="<f8").astype(np.float32)
    return out


def _pad_token_id(src: Path, config: Mapping[str, Any], vocab: Mapping[str, int],
                  eos: Union[int, Tuple[int, ...], None]) -> Optional[int]:
    """The pad id for the output config: the config's, else the tokenizer's pad token, else EOS."""
    if config.get("pad_token_id") is not None:
        return config["pad_token_id"]
    for fname in ("tokenizer_config.json", "special_tokens_map.json"):
        path = src / fname
        if not path.is_file():
            continue
        try:
            data = read_json_file(path)
        except ConfigError:
            continue
        pad = data.get("pad_token") if isinstance(data, dict) else None
        if isinstance(pad, dict):  # {"content": "<pad>", "lstrip": ..., ...}
            pad = pad.get("content")
        if isinstance(pad, str) and pad in vocab:
            return int(vocab[pad])
    if isinstance(eos, tuple):
        return eos[0] if eos else None
    return eos


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and next(path.iterdir(), None) is None


def _check_destination(out: Path, force: bool) -> None:
    if not (out.exists() or out.is_symlink()) or _is_empty_dir(out):
        return
    if not force:
        what = "is not empty" if out.is_dir() else "exists and is not a directory"
        raise FileExistsError(
            f"{out} {what}; the converter writes a new checkpoint directory. Pass force=True "
            f"(--force on the command line) to replace it, or choose another path.")


def _install(tmp: Path, out: Path) -> None:
    """Moves the finished ``tmp`` to ``out``; an old ``out`` is removed only after the move."""
    if _is_empty_dir(out):
        out.rmdir()
    if not (out.exists() or out.is_symlink()):
        os.rename(tmp, out)
        return
    old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:12]}")
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def convert(
    model_name_or_path: Union[str, os.PathLike],
    classifier_from_tokens: Sequence[str],
    method: Optional[str],
    path: Union[str, os.PathLike],
    *,
    use_sep_token: bool = False,
    force: bool = False,
    revision: Optional[str] = None,
    cache_folder: Optional[str] = None,
    token: Union[str, bool, None] = None,
    local_files_only: bool = False,
    show_progress_bar: Optional[bool] = None,
    template: Union[None, str, Template] = None,
    max_shard_size: int = MAX_SHARD_SIZE,
) -> Path:
    """Writes a ``*ForSequenceClassification`` checkpoint built from a causal-LM reranker.

    The equivalent of vLLM's ``convert_model_to_seq_cls.py``, without torch. The output loads
    in crossrank and vLLM with no ``hf_overrides`` and in ``transformers``'
    ``AutoModelForSequenceClassification``.

    Args:
        model_name_or_path: The causal LM: a local directory or a hub id (resolved as
            :class:`~crossrank.CrossEncoder` does).
        classifier_from_tokens: The answer token strings, exact vocabulary entries
            (``["no", "yes"]`` for Qwen3-Reranker: ``[false, true]``).
        method: ``"from_2_way_softmax"`` (2 tokens; ``score.weight = W[true] - W[false]``,
            one label) or ``"no_post_processing"`` (rows ``W[tokens]``, one label each).
            ``None`` is allowed for a single token (``no_post_processing``).
        path: The output directory. It must not exist or be empty, unless ``force``.
        use_sep_token: Recorded in the config: ``predict`` tokenizes a pair as a pair
            (``True``) or joins the two strings (``False``, the LLM-reranker case).
        force: Replace a non-empty ``path`` (only once the new checkpoint is complete).
        revision, cache_folder, token, local_files_only: As for :class:`~crossrank.CrossEncoder`.
        show_progress_bar: A progress bar over the bytes written; default: when stderr is a TTY.
        template: Name of the crossrank template to record (``"qwen3-reranker"``); default: the
            one :func:`~crossrank.templates.template_for_model` finds from the source's name and
            config, if any.
        max_shard_size: Bytes of tensor data per file; above it the output is sharded
            (``model-00001-of-0000N.safetensors`` + ``model.safetensors.index.json``).

    Returns:
        The output directory.

    Raises:
        ConfigError: an unknown method, a wrong number of tokens, a token that is not in the
            vocabulary, a missing ``tokenizer.json``, ... (the messages say how to fix it).
        UnsupportedModelError: an architecture crossrank does not run, a quantized checkpoint,
            a source that is already a sequence classifier.
        CheckpointError: a malformed or hostile source file, a missing LM head.
        FileExistsError: ``path`` is not empty and ``force`` is false.
        ModelNotFoundError: the source cannot be found.
    """
    if not isinstance(use_sep_token, bool):
        raise TypeError(f"use_sep_token must be a bool, got {use_sep_token!r}")
    if isinstance(max_shard_size, bool) or not isinstance(max_shard_size, int) or max_shard_size < 1:
        raise ValueError(f"max_shard_size must be a positive number of bytes, got {max_shard_size!r}")
    out = Path(os.path.expanduser(os.fspath(path))).absolute()
    _check_destination(out, force)

    source_name = os.fspath(model_name_or_path)
    if isinstance(source_name, bytes):
        source_name = os.fsdecode(source_name)
    src = resolve_model_path(model_name_or_path, revision=revision, cache_folder=cache_folder, token=token,
                             local_files_only=local_files_only)
    out_real, src_real = Path(os.path.realpath(out)), Path(os.path.realpath(src))
    if out_real == src_real or out_real in src_real.parents:
        raise ValueError(f"the output {out} would overwrite the source checkpoint {src}; choose another path.")

    # The config, validated with the same overrides an online load would use, so every teaching
    # error of the normaliser applies (unknown method, wrong token count, ...).
    config_path, source_config = read_config_json(src)
    family = family_of_config(source_config)
    if family is None:
        normalize(source_config, source=config_path)  # raises the unsupported-architecture message
        raise UnsupportedModelError(f"cannot tell the architecture family of {config_path}.")
    arch = family.prefix + "ForSequenceClassification"
    tokens = list(classifier_from_tokens) if isinstance(classifier_from_tokens, tuple) else classifier_from_tokens
    spec = normalize(source_config, {"architectures": [arch], "classifier_from_token": tokens, "method": method},
                     source=config_path)
    if spec.head.kind != "lm_rows" or spec.head.tokens is None:  # normalize guarantees it
        raise ConfigError(f"classifier_from_tokens {classifier_from_tokens!r} do not define a head.")
    method = spec.head.method
    tokens = list(spec.head.tokens)

    tok_file = src / "tokenizer.json"
    if not tok_file.is_file():
        raise ConfigError(
            f"{src} has no tokenizer.json: the converter resolves classifier_from_token with the model's "
            f"tokenizer (tokenizers' fast format) and copies it next to the converted weights.")
    try:
        vocab = read_tokenizer(tok_file).get_vocab(with_added_tokens=True)
    except CrossrankError as e:
        raise ConfigError(str(e)) from None
    ids = resolve_classifier_tokens(tokens, vocab, vocab_size=spec.vocab_size)

    if template is None:
        found = template_for_model(source_name, source_config)
        template_name = found.name if found is not None else None
    elif isinstance(template, Template):
        if TEMPLATES.get(template.name) is not template:
            raise ValueError(f"template {template.name!r} is not registered in crossrank.templates.TEMPLATES; "
                             f"only a registered template can be recorded by name.")
        template_name = template.name
    elif isinstance(template, str) and template in TEMPLATES:
        template_name = template
    else:
        raise ValueError(f"unknown template {template!r}; known: {', '.join(sorted(TEMPLATES))}")

    # The tensors: validated by the C reader first.
    tensors = _source_tensors(src)
    if "score.weight" in tensors:
        raise UnsupportedModelError(
            f"{src} already holds a score.weight: it is a converted sequence classifier. Load it with "
            f"CrossEncoder directly, or convert the original causal LM.")
    H, V = spec.hidden_size, spec.vocab_size
    # A tied config over a file that stores an lm_head.weight of its own: transformers keeps that
    # head (it ties only equal tensors), and so does the engine; equal values give the same rows.
    head_name = ("model.embed_tokens.weight" if spec.tie_word_embeddings and "lm_head.weight" not in tensors
                 else "lm_head.weight")
    w = tensors.get(head_name)
    if w is None:
        hint = ("" if spec.tie_word_embeddings else
                "; if the LM head shares the embeddings, the config must say tie_word_embeddings: true")
        raise CheckpointError(f"{src} has no {head_name}, the LM head the classifier rows come from{hint}.")
    if w.shape != [V, H]:
        raise CheckpointError(f"{w.src_file}: tensor {head_name} has shape {w.shape}, expected [{V}, {H}] "
                              f"(vocab_size, hidden_size from the config).")
    if w.dtype not in ("F32", "BF16", "F16", "F64"):
        raise CheckpointError(f"{w.src_file}: tensor {head_name} has dtype {w.dtype}; the converter reads "
                              f"F32, BF16, F16 or F64 LM heads.")
    rows = _rows_f32(w, ids)
    if method == "from_2_way_softmax":
        score = (rows[1] - rows[0])[None, :]  # float32, as vLLM: W[true].float() - W[false].float()
    else:
        score = rows
    score = np.ascontiguousarray(score, dtype="<f4")
    num_labels = int(score.shape[0])

    sources = [t for name, t in tensors.items() if name != "lm_head.weight"]

    cfg: Dict[str, Any] = copy.deepcopy(source_config)
    for key in _DROPPED_KEYS:
        cfg.pop(key, None)
    cfg["architectures"] = [arch]
    cfg.setdefault("model_type", spec.model_type)
    cfg["num_labels"] = num_labels
    cfg["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_labels)}
    cfg["label2id"] = {f"LABEL_{i}": i for i in range(num_labels)}
    cfg["use_sep_token"] = use_sep_token
    pad = _pad_token_id(src, source_config, vocab, spec.eos_token_id)
    if pad is not None:
        cfg["pad_token_id"] = pad
    cfg["crossrank_conversion"] = {
        "method": method,
        "classifier_from_token": tokens,
        "token_ids": [int(i) for i in ids],
        "source": source_name,
    }
    if template_name is not None:
        cfg["crossrank_template"] = template_name

    if show_progress_bar is None:
        try:
            show_progress_bar = sys.stderr is not None and sys.stderr.isatty()
        except (AttributeError, ValueError):
            show_progress_bar = False
    bar = None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".converting", dir=out.parent))
    try:
        if show_progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=sum(t.nbytes for t in sources) + score.nbytes, unit="B", unit_scale=True,
                       unit_divisor=1024, desc="Converting")
        with MappedFiles() as files:
            body = [files.tensor(t.name, t.dtype, t.shape, t.src_file, t.src_offset) for t in sources]
            body.append(array_tensor("score.weight", score))
            # Widest dtypes first, then by name (as the safetensors writer): every tensor stays
            # aligned to its item size, with no gaps between tensors.
            body.sort(key=lambda t: (-ITEMSIZE[t.dtype], t.name))
            write_safetensors(tmp, body, max_shard_size=max_shard_size,
                              progress=bar.update if bar is not None else None)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        for fname in TOKENIZER_FILES:
            if (src / fname).is_file():
                shutil.copyfile(src / fname, tmp / fname)  # follows the hub cache's symlinks
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        _check_destination(out, force)  # the path may have been filled meanwhile
        _install(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    return out
