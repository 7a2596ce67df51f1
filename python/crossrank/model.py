"""CrossEncoder: the user-facing reranker, shaped like sentence-transformers' ``CrossEncoder``."""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from .config import ModelSpec, load_config, resolve_classifier_tokens
from .errors import Cancelled, UnsupportedModelError
from .hub import resolve_model_path
from .templates import Template, get_template, split_pairs, template_for_model
from .tokenization import Encoded, PromptEncoder

__all__ = ["CrossEncoder", "CancelToken"]

logger = logging.getLogger("crossrank")

#: A per-call cancellation flag: pass it as ``cancel=`` and call ``.cancel()`` from any thread;
#: the call raises :class:`crossrank.Cancelled` within one GEMM block and the model stays usable.
CancelToken = _core.Control

ActivationFn = Union[None, str, Callable[[np.ndarray], np.ndarray]]
Pair = Tuple[str, str]

# Tokens per forward pass: bounds the activations a pass allocates, whatever batch_size says.
_TOKEN_BUDGET = 16384
_DTYPES = ("auto", "float32", "bfloat16", "int8")


def resolve_dtype(dtype: str) -> str:
    """The compute dtype ``dtype`` means on this CPU: ``"auto"`` is ``"bfloat16"`` where the CPU
    has AVX512_BF16 (twice the float32 speed, scores within about 0.01), else ``"float32"``."""
    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r} is not available; choose one of {', '.join(_DTYPES)}")
    if dtype == "auto":
        return "bfloat16" if _core.cpu_info()["isa"] == "avx512bf16" else "float32"
    return dtype


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _is_pair(obj: Any) -> bool:
    return isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(t, str) for t in obj)


class CrossEncoder:
    """An LLM reranker run by crossrank's C engine.

    Args:
        model_name_or_path: A local directory, or a Hugging Face id found in the local cache (or
            downloaded when ``huggingface_hub`` is installed and not offline).
        hf_overrides: Config overrides with vLLM's semantics, e.g. for Qwen3-Reranker
            ``{"architectures": ["Qwen3ForSequenceClassification"],
            "classifier_from_token": ["no", "yes"], "is_original_qwen3_reranker": True}``.
            A known reranker family needs none: its template supplies them. Given
            ``is_original_qwen3_reranker`` without tokens, ``["no", "yes"]`` is used.
        max_length: Token budget of one prompt; default: the family's (Qwen3-Reranker 8192).
        dtype: Compute dtype of the linear layers: ``"auto"`` (bfloat16 on CPUs with
            AVX512_BF16, else float32), ``"float32"`` (the reference path: scores within 1e-4 of
            transformers in float32) or ``"bfloat16"`` (weights and layer inputs rounded to
            bfloat16, float32 accumulation and residual stream; on CPUs without AVX512_BF16 it
            saves memory, not time) or ``"int8"`` (opt-in: int8 weights per output channel and
            inputs per token, exact int32 sums with AVX512_VNNI; down_proj stays bfloat16 because
            its inputs carry the outlier channels of real LLMs). The resolved value is
            ``self.dtype``.
        threads: Compute threads; default: the CPUs this process may use.
        template: A :class:`~crossrank.templates.Template`, a template name, or ``None`` to pick
            the family's template from the model name or config.
        activation_fn: Default activation of the scores: ``None`` (one label: sigmoid; several:
            softmax), ``"sigmoid"``, ``"softmax"``, ``"identity"`` (raw logits) or a callable on
            a float NumPy array.
        revision: Hub revision (branch, tag or commit) to look up in the cache.
        cache_folder: Hugging Face cache directory to search.
        token: Hub token, for a download.
        local_files_only: Never download.
        split_special_tokens: Tokenize special-token strings inside queries and documents as
            plain text (the official recipes parse them as special tokens: default ``False``).
    """

    def __init__(
        self,
        model_name_or_path: Union[str, os.PathLike],
        *,
        hf_overrides: Optional[Mapping[str, Any]] = None,
        max_length: Optional[int] = None,
        dtype: str = "auto",
        threads: Optional[int] = None,
        template: Union[None, str, Template] = None,
        activation_fn: ActivationFn = None,
        revision: Optional[str] = None,
        cache_folder: Optional[str] = None,
        token: Union[str, bool, None] = None,
        local_files_only: bool = False,
        split_special_tokens: bool = False,
    ) -> None:
        dtype = resolve_dtype(dtype)
        if threads is None:
            threads = _default_threads()
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 256:
            raise ValueError(f"threads must be an integer in [1, 256], got {threads!r}")
        _check_activation(activation_fn)
        self.model_name_or_path = str(model_name_or_path)
        self.path: Path = resolve_model_path(model_name_or_path, revision=revision, cache_folder=cache_folder,
                                             token=token, local_files_only=local_files_only)
        spec = load_config(self.path, hf_overrides)
        if template is None:
            self.template: Optional[Template] = template_for_model(self.model_name_or_path, spec.raw)
        else:
            self.template = get_template(template)
        if spec.head.kind == "none":
            # A causal LM: the family's own overrides turn it into a classifier, as vLLM's do.
            if self.template is None or not self.template.overrides:
                raise UnsupportedModelError(
                    f"{self.model_name_or_path} is a causal LM ({spec.architecture}) and crossrank does not "
                    "know which answer tokens score it. Pass hf_overrides as for vLLM, e.g. "
                    '{"architectures": ["Qwen3ForSequenceClassification"], '
                    '"classifier_from_token": ["no", "yes"], "is_original_qwen3_reranker": true}, '
                    "or template='qwen3-reranker' for a Qwen3-Reranker checkpoint")
            merged = dict(self.template.overrides)
            merged.update(hf_overrides or {})
            spec = load_config(self.path, merged)
        self.config: ModelSpec = spec
        self.activation_fn: ActivationFn = activation_fn
        self._encoder = PromptEncoder(self.path, split_special_tokens=split_special_tokens)
        self.max_length: int = self._pick_max_length(max_length)
        self.threads = threads
        self.dtype = dtype

        head: Dict[str, Any]
        if spec.head.kind == "lm_rows":
            rows = resolve_classifier_tokens(spec.head.tokens, self._encoder.get_vocab(),
                                             vocab_size=spec.vocab_size)
            head = {"kind": "lm_rows", "rows": list(rows),
                    "two_way": spec.head.method == "from_2_way_softmax"}
        else:
            head = {"kind": "score_weight"}
        self._engine = _core.Model(str(self.path), spec.core_params(), head, dtype=dtype, threads=threads)
        self.num_labels: int = self._engine.num_labels
        logger.info("loaded %s (%s, %d layers, %s head, %d label(s), template %s, %d threads, kernels %s)",
                    self.model_name_or_path, spec.architecture, spec.num_hidden_layers, spec.head.kind,
                    self.num_labels, self.template.name if self.template else "none", threads,
                    _core.cpu_info()["isa"])

    def _pick_max_length(self, max_length: Optional[int]) -> int:
        if max_length is None:
            if self.template is not None:
                return self.template.default_max_length
            return min(self.config.max_position_embeddings, 8192)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
        if max_length > self.config.max_position_embeddings:
            logger.warning("max_length=%d is beyond the model's max_position_embeddings=%d",
                           max_length, self.config.max_position_embeddings)
        return max_length

    def __repr__(self) -> str:
        return (f"CrossEncoder({self.model_name_or_path!r}, architecture={self.config.architecture!r}, "
                f"template={self.template.name if self.template else None!r}, max_length={self.max_length}, "
                f"dtype={self.dtype!r}, threads={self.threads})")

    @property
    def tokenizer(self) -> Any:
        """The model's ``tokenizers.Tokenizer``."""
        return self._encoder._tokenizer

    # -- tokenization --------------------------------------------------------------------------

    def _template_or_raise(self) -> Template:
        if self.template is None:
            raise ValueError(
                f"no prompt template is known for {self.model_name_or_path}: pass template=... to "
                "CrossEncoder, or build the prompts yourself and call predict([(text_1, text_2), ...])")
        return self.template

    def tokenize(self, query: Union[str, Sequence[str]], documents: Sequence[str],
                 instruction: Optional[str] = None) -> Encoded:
        """Token ids that :meth:`score` feeds the model (the family's official recipe).

        Args:
            query: One query for every document, or one query per document.
            documents: The documents.
            instruction: Task instruction; ``None`` uses the template's default.
        """
        queries, docs = _broadcast(query, documents)
        if instruction is not None and not isinstance(instruction, str):
            raise TypeError(f"instruction must be a str or None, got {type(instruction).__name__}")
        encoded = self._encoder.encode_template(self._template_or_raise(), queries, docs, instruction,
                                                self.max_length)
        n_cut = sum(encoded.truncated)
        if n_cut:
            logger.warning("%d of %d prompts were longer than max_length=%d; their documents were truncated",
                           n_cut, len(encoded), self.max_length)
        return encoded

    def tokenize_pairs(self, pairs: Sequence[Pair]) -> Encoded:
        """Token ids that :meth:`predict` feeds the model (vLLM's request form)."""
        texts_1, texts_2 = split_pairs(pairs)
        return self._encoder.encode_requests(texts_1, texts_2, use_sep_token=self.config.use_sep_token,
                                             max_length=self.max_length)

    # -- scoring -------------------------------------------------------------------------------

    def predict(
        self,
        inputs: Union[Pair, Sequence[Pair], None] = None,
        batch_size: int = 32,
        show_progress_bar: Optional[bool] = None,
        activation_fn: ActivationFn = None,
        convert_to_numpy: bool = True,
        *,
        sentences: Union[Pair, Sequence[Pair], None] = None,
        cancel: Optional[CancelToken] = None,
    ) -> Union[np.ndarray, np.floating, List[Any]]:
        """Scores ``(text_1, text_2)`` pairs exactly as vLLM's ``score`` API takes them.

        The two texts are joined and tokenized as one (or as a pair when the config says
        ``use_sep_token``); no template is applied, so pass prompts already formatted for the model
        (see :meth:`score` for the family's recipe).

        Args:
            inputs: One pair, or a list of pairs.
            batch_size: Pairs per forward pass (passes are also capped by a token budget).
            show_progress_bar: Show a progress bar; ``None``: when the ``crossrank`` logger is at
                INFO or DEBUG level.
            activation_fn: Overrides the model's default activation for this call.
            convert_to_numpy: Return a NumPy array (else a list).
            sentences: Older name of ``inputs``.
            cancel: A :data:`CancelToken` to stop the call from another thread.

        Returns:
            ``float32`` scores: shape ``[n]`` for one label, ``[n, num_labels]`` otherwise; a
            scalar (or one row) when a single pair was given.
        """
        if inputs is None:
            inputs = sentences
        elif sentences is not None:
            raise TypeError("pass the pairs as inputs or as sentences, not both")
        if inputs is None:
            raise TypeError("predict() needs the pairs to score")
        single = _is_pair(inputs)
        pairs = [inputs] if single else list(inputs)
        encoded = self.tokenize_pairs(pairs)
        # Pairs with the same text_1 share their leading tokens: computed once.
        share = [p[0] if isinstance(p[0], str) else None for p in pairs]
        scores = self._scores(encoded, batch_size, show_progress_bar, activation_fn, cancel, share)
        if single:
            return scores[0]
        return scores if convert_to_numpy else scores.tolist()

    def score(
        self,
        query: Union[str, Sequence[str]],
        documents: Sequence[str],
        instruction: Optional[str] = None,
        *,
        batch_size: int = 32,
        show_progress_bar: Optional[bool] = None,
        activation_fn: ActivationFn = None,
        cancel: Optional[CancelToken] = None,
    ) -> np.ndarray:
        """Relevance of each document to the query, by the model family's official recipe.

        Args:
            query: One query for every document, or a list with one query per document.
            documents: The documents (a list of str).
            instruction: Task instruction; ``None`` uses the template's default.
            batch_size, show_progress_bar, activation_fn, cancel: As in :meth:`predict`.

        Returns:
            ``float32`` array, one score per document (``[n, num_labels]`` for several labels);
            with the default activation, Qwen3-Reranker scores are P("yes") in [0, 1].
        """
        encoded = self.tokenize(query, documents, instruction)
        # Documents of the same query share the prompt up to the document: computed once.
        share = [query] * len(encoded.input_ids) if isinstance(query, str) else list(query)
        return self._scores(encoded, batch_size, show_progress_bar, activation_fn, cancel, share)

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_k: Optional[int] = None,
        return_documents: bool = False,
        batch_size: int = 32,
        show_progress_bar: Optional[bool] = None,
        activation_fn: ActivationFn = None,
        *,
        instruction: Optional[str] = None,
        cancel: Optional[CancelToken] = None,
    ) -> List[Dict[str, Any]]:
        """Documents sorted by relevance to the query, best first.

        Returns:
            ``[{"corpus_id": index in documents, "score": float, "text": document}, ...]``, with
            ``"text"`` only when ``return_documents`` is true, at most ``top_k`` entries.
        """
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
        scores = self.score(query, documents, instruction, batch_size=batch_size,
                            show_progress_bar=show_progress_bar, activation_fn=activation_fn, cancel=cancel)
        if scores.ndim != 1:
            raise ValueError(f"rank() needs one score per document; this model has {self.num_labels} labels")
        order = np.argsort(-scores, kind="stable")
        if top_k is not None:
            order = order[:top_k]
        results = []
        for i in order:
            item: Dict[str, Any] = {"corpus_id": int(i), "score": float(scores[i])}
            if return_documents:
                item["text"] = documents[i]
            results.append(item)
        return results

    # -- engine --------------------------------------------------------------------------------

    def _scores(self, encoded: Encoded, batch_size: int, show_progress_bar: Optional[bool],
                activation_fn: ActivationFn, cancel: Optional[CancelToken],
                share_keys: Optional[Sequence[Hashable]] = None) -> np.ndarray:
        _check_activation(activation_fn)
        raw = self.forward_ids(encoded.input_ids, batch_size=batch_size,
                               show_progress_bar=show_progress_bar, cancel=cancel, share_keys=share_keys)
        return self._activate(raw, activation_fn)

    def forward_ids(self, input_ids: Sequence[Sequence[int]], *, batch_size: int = 32,
                    show_progress_bar: Optional[bool] = None,
                    cancel: Optional[CancelToken] = None,
                    share_keys: Optional[Sequence[Hashable]] = None) -> np.ndarray:
        """Raw logits ``[n, num_labels]`` (float32) for already tokenized prompts.

        Sequences are packed into passes of at most ``batch_size`` sequences and a fixed token
        budget, and returned in the caller's order. Scores do not depend on how the sequences
        are grouped.

        ``share_keys`` (one hashable per sequence, ``None`` for none) marks sequences that start
        alike, e.g. the documents of one query: the common leading tokens of each group with the
        same key are run once and their keys and values reused by every member, which gives the
        same scores (within float rounding) for less work.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        n = len(input_ids)
        out = np.empty((n, self.num_labels), dtype=np.float32)
        if n == 0:
            return out
        seqs = [np.asarray(ids, dtype=np.int64) for ids in input_ids]
        for i, ids in enumerate(seqs):
            if ids.ndim != 1 or ids.size == 0:
                raise ValueError(f"sequence {i} is empty: every prompt needs at least one token")
        if share_keys is not None and len(share_keys) != n:
            raise ValueError(f"share_keys has {len(share_keys)} entries for {n} sequences")
        groups = _shared_prefix_groups(seqs, share_keys)
        group_of = np.full(n, -1, dtype=np.int64)
        shared = np.zeros(n, dtype=np.int64)
        order: List[int] = []
        for g, (members, length) in enumerate(groups):
            group_of[members] = g
            shared[members] = length
            order.extend(sorted(members, key=lambda i: -len(seqs[i])))
        order.extend(sorted((i for i in range(n) if group_of[i] < 0), key=lambda i: -len(seqs[i])))
        left_in_group = [len(members) for members, _ in groups]
        handles: Dict[int, Any] = {}

        control = cancel if cancel is not None else _core.Control()
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() <= logging.INFO
        bar = None
        if show_progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="Scoring", unit="pair")
        try:
            start = 0
            while start < n:
                stop, tokens = start, 0
                while stop < n and stop - start < batch_size and (
                        stop == start or tokens + len(seqs[order[stop]]) - shared[order[stop]] <= _TOKEN_BUDGET):
                    tokens += len(seqs[order[stop]]) - shared[order[stop]]
                    stop += 1
                chunk = order[start:stop]
                for i in chunk:
                    g = int(group_of[i])
                    if g >= 0 and g not in handles:
                        head = seqs[i][:shared[i]].astype(np.int32)
                        handles[g] = _interruptible(lambda: self._engine.build_prefix(head, control=control),
                                                    control)
                lengths = np.array([len(seqs[i]) - shared[i] for i in chunk], dtype=np.int64)
                flat = np.concatenate([seqs[i][shared[i]:] for i in chunk]).astype(np.int32)
                positions = np.concatenate([np.arange(shared[i], len(seqs[i]), dtype=np.int32) for i in chunk])
                seq_start = np.zeros(len(chunk) + 1, dtype=np.int64)
                np.cumsum(lengths, out=seq_start[1:])
                if any(group_of[i] >= 0 for i in chunk):
                    prefixes = [handles[int(group_of[i])] if group_of[i] >= 0 else None for i in chunk]
                    prefix_lens = np.array([shared[i] for i in chunk], dtype=np.int64)
                    call = lambda: self._engine.forward(flat, positions, seq_start, prefixes=prefixes,  # noqa: E731
                                                        prefix_lens=prefix_lens, control=control)
                else:
                    call = lambda: self._engine.forward(flat, positions, seq_start, control=control)  # noqa: E731
                out[chunk] = _interruptible(call, control)
                for i in chunk:  # a group's keys and values are freed once its last member ran
                    g = int(group_of[i])
                    if g >= 0:
                        left_in_group[g] -= 1
                        if left_in_group[g] == 0:
                            del handles[g]
                if bar is not None:
                    bar.update(len(chunk))
                start = stop
        finally:
            handles.clear()
            if bar is not None:
                bar.close()
        return out

    def _activate(self, raw: np.ndarray, activation_fn: ActivationFn) -> np.ndarray:
        """Applies logit_mean/logit_sigma and the activation in float64, returns float32."""
        fn = activation_fn if activation_fn is not None else self.activation_fn
        x = raw.astype(np.float64)
        mean = self.config.logit_mean if self.config.logit_mean is not None else self.config.logit_bias
        if mean is not None:
            x = x - mean
        if self.config.logit_sigma is not None:
            x = x / self.config.logit_sigma
        if fn is None:
            fn = "sigmoid" if self.num_labels == 1 else "softmax"
        if fn == "sigmoid":
            x = 0.5 * (1.0 + np.tanh(0.5 * x))  # = 1 / (1 + exp(-x)), without overflow
        elif fn == "softmax":
            x = np.exp(x - x.max(axis=1, keepdims=True))
            x = x / x.sum(axis=1, keepdims=True)
        elif fn == "identity":
            pass
        else:
            x = np.asarray(fn(x), dtype=np.float64)
            if x.shape[0] != raw.shape[0]:
                raise ValueError(f"activation_fn returned {x.shape[0]} rows for {raw.shape[0]} inputs")
        x = x.astype(np.float32)
        return x[:, 0] if x.ndim == 2 and x.shape[1] == 1 else x


def _check_activation(fn: ActivationFn) -> None:
    if fn is None or callable(fn) or fn in ("sigmoid", "softmax", "identity"):
        return
    raise ValueError(f"activation_fn must be None, 'sigmoid', 'softmax', 'identity' or a callable, got {fn!r}")


def _broadcast(query: Union[str, Sequence[str]], documents: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Validates query/documents and returns parallel lists."""
    if isinstance(documents, str) or not isinstance(documents, Sequence):
        raise TypeError("documents must be a list of str (wrap a single document in a list)")
    docs = list(documents)
    for i, d in enumerate(docs):
        if not isinstance(d, str):
            raise TypeError(f"document {i} must be a str, got {type(d).__name__}")
    if isinstance(query, str):
        return [query] * len(docs), docs
    if not isinstance(query, Sequence):
        raise TypeError(f"query must be a str or a list of str, got {type(query).__name__}")
    queries = list(query)
    if len(queries) != len(docs):
        raise ValueError(f"got {len(queries)} queries for {len(docs)} documents: give one query, or one per document")
    for i, q in enumerate(queries):
        if not isinstance(q, str):
            raise TypeError(f"query {i} must be a str, got {type(q).__name__}")
    return queries, docs


# Fewer shared tokens than this are not worth a separate prefix pass.
_MIN_SHARED_PREFIX = 4


def _shared_prefix_groups(seqs: Sequence[np.ndarray],
                          share_keys: Optional[Sequence[Hashable]]) -> List[Tuple[List[int], int]]:
    """Groups of sequences (same key, at least two) and the leading tokens they all share.

    The shared length is the common prefix of every member, one token short of the shortest
    member (each needs a last token of its own to score)."""
    if share_keys is None:
        return []
    by_key: Dict[Hashable, List[int]] = {}
    for i, key in enumerate(share_keys):
        if key is not None:
            by_key.setdefault(key, []).append(i)
    groups = []
    for members in by_key.values():
        if len(members) < 2:
            continue
        first = seqs[members[0]]
        length = min(len(seqs[i]) for i in members) - 1
        for i in members[1:]:
            k = min(length, len(seqs[i]))
            diff = np.flatnonzero(first[:k] != seqs[i][:k])
            length = int(diff[0]) if diff.size else k
            if length < _MIN_SHARED_PREFIX:
                break
        if length >= _MIN_SHARED_PREFIX:
            groups.append((members, length))
    return groups


def _interruptible(call: Callable[[], Any], control: CancelToken) -> Any:
    """Runs one engine call (which polls ``control``) so that Ctrl-C stops it.

    On the main thread the call runs in a helper thread while the main thread waits in short
    slices, so a KeyboardInterrupt arrives within a fraction of a second; it then cancels the
    call through its control, waits for the engine to stop and re-raises.
    """
    if threading.current_thread() is not threading.main_thread():
        return call()
    box: Dict[str, Any] = {}

    def run() -> None:
        try:
            box["out"] = call()
        except BaseException as exc:  # handed to the waiting thread
            box["err"] = exc

    worker = threading.Thread(target=run, name="crossrank-forward", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.05)
    except KeyboardInterrupt:
        control.cancel()
        worker.join()
        raise
    if "err" in box:
        raise box["err"]
    return box["out"]
