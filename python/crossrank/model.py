"""CrossEncoder: the user-facing reranker, shaped like sentence-transformers' ``CrossEncoder``."""
from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from .activations import ActivationLike, activate_logits, apply_activation, default_activation, normalize_activation
from .chat_template import ChatTemplate
from .chunking import Chunking, ChunkingLike, aggregate_chunks, as_chunking, chunk_prompts, split_documents
from .config import ModelSpec
from .engine import CancelToken, Engine, plan_passes
from .errors import ConfigError
from .hub import resolve_model_path
from .integers import as_int, positive_int
from .loading import LoadOptions, Resolution, auto_dtype, check_device, load_model, resolve_dtype
from .multiprocess import run_pooled
from .many_queries import ManyQueries
from .pairs import broadcast, ranked
from .passes import shared_prefix_groups
from .prompting import Prompting, TemplateLike, resolve_instruction, resolve_prompt
from .st_compat import (ModelCardData, SentenceTransformersSurface, convert_scores, is_singular_input, st_call_args,
                        st_init_args)
from .st_package import STPackage
from .templates import Template, split_pairs
from .tokenization import Encoded, cut_counts, truncated_texts

__all__ = ["CrossEncoder", "CancelToken", "LoadOptions", "auto_dtype", "resolve_dtype", "shared_prefix_groups"]

logger = logging.getLogger("crossrank")

ActivationFn = ActivationLike
Pair = Tuple[str, str]

# What can change on a model after loading: a pickle and a pool's workers carry these as they are
# now, so a copy scores as the model does.
_SETTINGS = ("max_length", "activation_fn", "truncate_query", "prompts", "default_prompt_name", "chunking")


class CrossEncoder(ManyQueries, SentenceTransformersSurface):
    """An LLM reranker run by crossrank's C engine.

    How pairs become prompts, chosen at load (``template``):

    * a family template (``"qwen3-reranker"``, ``"mxbai-rerank-v2"``, ``"bge-reranker-v2-gemma"``,
      or found from the model's name or config): :meth:`score`/:meth:`rank` follow the family's
      official recipe and :meth:`predict` takes vLLM's request form ``(text_1, text_2)``;
    * the model's chat template (``template="chat"``/``"chat:NAME"`` or a
      :class:`~crossrank.chat_template.ChatTemplate`): every method renders the query/document
      messages as sentence-transformers and vLLM's score templates do. Chosen by default for a
      sentence-transformers CrossEncoder package that ships one, and for a model with a
      query/document chat template and no family template.

    Args:
        model_name_or_path: A local directory, or a Hugging Face id found in the local cache (or
            downloaded when ``huggingface_hub`` is installed and not offline).
        revision: Hub revision (branch, tag or commit) to look up in the cache.
        cache_folder: Hugging Face cache directory to search.
        token: Hub token, for a download (never stored or pickled).
        local_files_only: Never download.
        model_card_data: A :class:`~crossrank.st_compat.ModelCardData` (sentence-transformers'
            evaluators store their metrics there); default: a new one.
        hf_overrides, max_length, dtype, threads, template, activation_fn, split_special_tokens,
            prompts, default_prompt_name, chat_template_kwargs, chunking, device, truncate_query,
            check_finite: The load options, documented one by one as the fields of
            :class:`~crossrank.loading.LoadOptions` (kept as :attr:`options`).

    Pickling a model stores its resolved path and options (not its weights, nor ``token``); it
    reloads on unpickling, so it can be sent to Ray workers or multiprocessing pools.

    sentence-transformers' deprecated arguments (``model_name``, ``cache_dir``,
    ``default_activation_function``, the old positional ones) are taken with its warnings.
    """

    @st_init_args
    def __init__(
        self,
        model_name_or_path: Union[str, os.PathLike],
        *,
        hf_overrides: Optional[Mapping[str, Any]] = None,
        max_length: Optional[int] = None,
        dtype: str = "auto",
        threads: Optional[int] = None,
        template: TemplateLike = None,
        activation_fn: ActivationFn = None,
        revision: Optional[str] = None,
        cache_folder: Optional[str] = None,
        token: Union[str, bool, None] = None,
        local_files_only: bool = False,
        split_special_tokens: bool = False,
        prompts: Optional[Mapping[str, str]] = None,
        default_prompt_name: Optional[str] = None,
        chat_template_kwargs: Optional[Mapping[str, Any]] = None,
        chunking: ChunkingLike = None,
        device: Optional[str] = None,
        truncate_query: bool = False,
        model_card_data: Optional[ModelCardData] = None,
        check_finite: Optional[bool] = None,
    ) -> None:
        options = LoadOptions(hf_overrides=hf_overrides, max_length=max_length, dtype=dtype, threads=threads,
                              template=template, activation_fn=activation_fn,
                              split_special_tokens=split_special_tokens, prompts=prompts,
                              default_prompt_name=default_prompt_name, chat_template_kwargs=chat_template_kwargs,
                              chunking=chunking, device=device, check_finite=check_finite,
                              truncate_query=bool(truncate_query))
        self.model_card_data = model_card_data if model_card_data is not None else ModelCardData(
            model_id=str(model_name_or_path))
        options.validate()
        resolution = Resolution(revision=revision, cache_folder=cache_folder, local_files_only=local_files_only)
        path = resolve_model_path(model_name_or_path, token=token, **resolution.as_dict())
        try:
            self._load(str(model_name_or_path), path, resolution, options)
        finally:
            # Parsing tokenizer.json and converting weights leave 100-200 MB freed but held by the
            # C allocator at the 0.6B shape; hand it back (about 20 ms).
            _core.release_free_memory()

    # -- loading -------------------------------------------------------------------------------

    def _load(self, name: str, path: Path, resolution: Resolution, options: LoadOptions) -> None:
        """Builds the model from a resolved directory (shared by ``__init__`` and unpickling)."""
        self.options = options
        self.resolution = resolution
        self.model_name_or_path = name
        self.path: Path = path
        parts = load_model(name, path, options)
        self.st_package: Optional[STPackage] = parts.st_package
        self.config: ModelSpec = parts.config
        #: How pairs become token ids (see :mod:`crossrank.prompting`).
        self.prompting: Prompting = parts.prompting
        #: The family template, when that is the prompt format.
        self.template: Optional[Template] = parts.prompting.family
        self.prompts: Dict[str, str] = parts.prompts
        self.default_prompt_name: Optional[str] = parts.default_prompt_name
        self.activation_fn: ActivationFn = parts.activation_fn
        self.truncate_query: bool = parts.truncate_query
        self.chunking: Optional[Chunking] = parts.chunking
        self.max_length = parts.max_length
        self.threads: int = parts.threads
        self.dtype: str = parts.dtype
        #: The token ids whose LM-head rows make the classifier, or ``None`` (a ``score.weight`` head).
        self.head_token_ids: Optional[List[int]] = parts.head_token_ids
        #: The engine running this model's passes (see :mod:`crossrank.engine`).
        self.engine: Engine = parts.engine
        self.num_labels: int = parts.engine.num_labels
        #: Why the tokenizer does not fit the embedding table, or ``None``: text reaching ids past
        #: ``config.vocab_size`` is then refused with this message.
        self.tokenizer_mismatch: Optional[str] = parts.tokenizer_mismatch
        spec = parts.config
        logger.info("loaded %s (%s, %d layers, %s head, %d label(s), prompt %s, %d threads, kernels %s)",
                    name, spec.architecture, spec.num_hidden_layers, spec.head.kind, self.num_labels,
                    self.prompt_format, self.threads, _core.cpu_info()["isa"])

    @property
    def max_length(self) -> int:
        """Token budget of one prompt (settable; ``max_seq_length`` and ``tokenizer.model_max_length``
        are other names of it)."""
        return self._max_length

    @max_length.setter
    def max_length(self, value: int) -> None:
        self._max_length = positive_int(value, "max_length")

    @property
    def prompt_format(self) -> str:
        """How pairs become prompts: the family template's name, ``"chat"``/``"chat:NAME"``, or
        ``"pairs"`` (no template: :meth:`predict` only)."""
        return self.prompting.name

    @property
    def chat_template(self) -> Optional[ChatTemplate]:
        """The chat template in use, or ``None``."""
        return self.prompting.chat

    def __repr__(self) -> str:
        return (f"CrossEncoder({self.model_name_or_path!r}, architecture={self.config.architecture!r}, "
                f"template={self.prompt_format!r}, max_length={self.max_length}, "
                f"dtype={self.dtype!r}, threads={self.threads})")

    def __getstate__(self) -> Dict[str, Any]:
        """What a pickle holds: the name, resolved path and constructor options (no weights), and the
        current ``max_length``, ``activation_fn``, ``truncate_query``, ``prompts``,
        ``default_prompt_name`` and ``chunking`` (settable after loading)."""
        settings = {name: getattr(self, name) for name in _SETTINGS}
        settings["prompts"] = dict(settings["prompts"])
        activation = settings["activation_fn"]
        if callable(activation):
            try:
                pickle.dumps(activation)
            except Exception as exc:
                raise TypeError(f"this CrossEncoder cannot be pickled: its activation_fn {activation!r} cannot "
                                f"be pickled ({exc}); use a named activation or a module-level function") from exc
        # the constructor's own prompts and default stay in the options: the load checks them together
        options = {**self.options.as_dict(), "max_length": self.max_length, "activation_fn": activation,
                   "truncate_query": self.truncate_query, "chunking": self.chunking}
        return {"format": 1, "model_name_or_path": self.model_name_or_path, "path": str(self.path),
                "resolution": self.resolution.as_dict(), "options": options, "settings": settings}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        """Reloads from the pickled path (resolving the name again where the path does not exist)."""
        if state.get("format") != 1:
            raise ValueError(f"cannot unpickle a CrossEncoder saved in format {state.get('format')!r}")
        path = Path(state["path"])
        if not (path / "config.json").is_file():
            path = resolve_model_path(state["model_name_or_path"], **state["resolution"])
        self.model_card_data = ModelCardData(model_id=state["model_name_or_path"])
        self._load(state["model_name_or_path"], path, Resolution(**state["resolution"]),
                   LoadOptions.from_dict(state["options"]))
        self.apply_settings(state.get("settings", {}))

    def apply_settings(self, settings: Mapping[str, Any]) -> None:
        """Sets the options that can change after loading (``max_length``, ``activation_fn``,
        ``truncate_query``, ``prompts``, ``default_prompt_name``, ``chunking``) from a pickle's
        ``"settings"``; a pool's workers call it before each chunk so they score as this model does now."""
        unknown = set(settings) - set(_SETTINGS)
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}; known: {', '.join(_SETTINGS)}")
        for name, value in settings.items():
            if name == "prompts":
                value = dict(value)
            elif name == "chunking":
                value = as_chunking(value)
            setattr(self, name, value)

    # -- prompts -------------------------------------------------------------------------------

    def _resolve_prompt(self, prompt: Optional[str], prompt_name: Optional[str]) -> Optional[str]:
        return resolve_prompt(self.prompts, self.default_prompt_name, prompt, prompt_name)

    def _instruction(self, instruction: Optional[str], prompt_name: Optional[str],
                     prompt: Optional[str]) -> Optional[str]:
        return resolve_instruction(self.prompts, self.default_prompt_name, instruction, prompt_name, prompt)

    # -- tokenization --------------------------------------------------------------------------

    def _truncate_query(self, truncate_query: Optional[bool]) -> bool:
        return self.truncate_query if truncate_query is None else bool(truncate_query)

    def _encode(self, queries: Sequence[str], documents: Sequence[str], instruction: Optional[str],
                truncate_query: Optional[bool] = None) -> Encoded:
        """Token ids of (query, document) prompts in the model's prompt format; without one, the
        texts as a pair, as :meth:`predict` (and sentence-transformers) take them."""
        return self._fits_vocabulary(self.prompting.encode(queries, documents, instruction, self.max_length,
                                                           truncate_query=self._truncate_query(truncate_query)))

    def _fits_vocabulary(self, encoded: Encoded) -> Encoded:
        """``encoded``, unless a tokenizer that does not fit the model gave ids past its vocabulary."""
        if self.tokenizer_mismatch is not None:
            if max((max(ids) for ids in encoded.input_ids if ids), default=-1) >= self.config.vocab_size:
                raise ConfigError(self.tokenizer_mismatch)
        return encoded

    def _warn_truncated(self, encoded: Encoded) -> None:
        n_cut = sum(encoded.truncated)
        if n_cut:
            logger.warning("%d of %d prompts were longer than max_length=%d; %s", n_cut, len(encoded),
                           self.max_length, truncated_texts(*cut_counts(encoded)))

    def tokenize(self, query: Union[str, Sequence[str]], documents: Sequence[str],
                 instruction: Optional[str] = None, *, prompt_name: Optional[str] = None,
                 prompt: Optional[str] = None, truncate_query: Optional[bool] = None) -> Encoded:
        """Token ids that :meth:`score` feeds the model (the family's recipe or the chat template).

        Args:
            query: One query for every document, or one query per document.
            documents: The documents.
            instruction: Task instruction; ``None`` uses the default (template's or default prompt).
            prompt_name, prompt: The instruction the sentence-transformers way.
            truncate_query: As in :meth:`score`.

        Raises:
            TooLongError: as :meth:`score`, with the indices of the pairs in ``indices``.
        """
        queries, docs = broadcast(query, documents)
        encoded = self._encode(queries, docs, self._instruction(instruction, prompt_name, prompt), truncate_query)
        self._warn_truncated(encoded)
        return encoded

    def tokenize_pairs(self, pairs: Sequence[Pair], *, prompt_name: Optional[str] = None,
                       prompt: Optional[str] = None, truncate_query: Optional[bool] = None) -> Encoded:
        """Token ids that :meth:`predict` feeds the model: the chat template's prompt for a chat model
        (sentence-transformers' and vLLM's), else vLLM's request form of ``(text_1, text_2)``."""
        texts_1, texts_2 = split_pairs(pairs)
        prompt = self._resolve_prompt(prompt, prompt_name)
        encoded = self._fits_vocabulary(self.prompting.encode_pairs(texts_1, texts_2, prompt, self.max_length,
                                                                    truncate=self._truncate_query(truncate_query)))
        if self.prompting.chat is not None:  # the request form cuts silently, as sentence-transformers does
            self._warn_truncated(encoded)
        return encoded

    # -- scoring -------------------------------------------------------------------------------

    @st_call_args
    def predict(
        self,
        inputs: Union[Pair, Sequence[Pair], np.ndarray, None] = None,
        prompt_name: Optional[str] = None,
        prompt: Optional[str] = None,
        batch_size: int = 32,
        show_progress_bar: Optional[bool] = None,
        activation_fn: ActivationFn = None,
        apply_softmax: Optional[bool] = False,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: Union[None, str, List[str]] = None,
        pool: Optional[Dict[str, Any]] = None,
        chunk_size: Optional[int] = None,
        *,
        truncate_query: Optional[bool] = None,
        cancel: Optional[CancelToken] = None,
    ) -> Any:
        """Scores ``(text_1, text_2)`` pairs, with sentence-transformers 6's parameters.

        With a chat template the pair is rendered as the ``query`` and ``document`` messages (the
        instruction as a ``system`` message), as sentence-transformers and vLLM's score templates do.
        Otherwise the two texts are joined and tokenized as one (or as a pair when the config says
        ``use_sep_token``), exactly as vLLM's ``score`` API takes them; pass prompts already formatted
        for the model (see :meth:`score` for the family's recipe).

        Args:
            inputs: One pair, or a list of pairs (a 2-D NumPy string array works too).
            prompt_name: Key of the instruction in :attr:`prompts`.
            prompt: The instruction itself (wins over ``prompt_name``).
            batch_size: Pairs per forward pass (passes are also capped by a token budget).
            show_progress_bar: Show a progress bar; ``None``: when the ``crossrank`` logger is at
                INFO or DEBUG level.
            activation_fn: Overrides the model's default activation for this call.
            apply_softmax: Softmax over the labels after the activation (several labels only).
            convert_to_numpy: Return a NumPy array (else a list: 0-dim float32 torch tensors where
                torch is installed, as sentence-transformers, else NumPy float32 scalars or rows).
            convert_to_tensor: Return a ``torch.Tensor`` (needs torch; wins over ``convert_to_numpy``).
            device: ``None``/``"cpu"``, or a list of ``"cpu"`` (a temporary pool, one process each).
            pool: A pool from :meth:`start_multi_process_pool`: the pairs are scored by its processes.
            chunk_size: Pairs per chunk sent to a pool process (default: about 10 chunks a process).
            truncate_query: As in :meth:`score` (chat templates; vLLM's request form is never cut).
            cancel: A :data:`CancelToken` to stop the call from another thread.

        ``sentences``, ``activation_fct`` and ``num_workers`` are taken with sentence-transformers'
        deprecation warnings.

        Returns:
            ``float32`` scores: shape ``[n]`` for one label, ``[n, num_labels]`` otherwise; a
            scalar (or one row) when a single pair was given; ``predict([])`` is an empty float64
            array, as in sentence-transformers.

        Raises:
            TooLongError: a pair does not fit ``max_length`` (see :meth:`score`); ``indices`` names them.
        """
        if inputs is None or isinstance(inputs, (str, bytes)):
            raise TypeError(f"predict() takes a (text_1, text_2) pair or a list of them, got "
                            f"{'nothing' if inputs is None else type(inputs).__name__}")
        if not isinstance(device, list):
            check_device(device)
        # sentence-transformers' rule for lists, tuples and arrays; any other iterable is a batch
        single = isinstance(inputs, (list, tuple, np.ndarray)) and is_singular_input(inputs)
        if isinstance(inputs, np.ndarray):
            inputs = inputs.tolist()
        pairs = [inputs] if single else list(inputs)
        activation_fn = normalize_activation(activation_fn)
        if pool is not None or isinstance(device, list):
            texts_1, texts_2 = split_pairs(pairs)
            # resolved here, as sentence-transformers does: the workers get the text, not a name
            kwargs = dict(prompt=self._resolve_prompt(prompt, prompt_name),
                          batch_size=positive_int(batch_size, "batch_size"), activation_fn=activation_fn,
                          apply_softmax=apply_softmax, truncate_query=self._truncate_query(truncate_query))
            scores = run_pooled(self, "predict", list(zip(texts_1, texts_2)), lambda part: (list(part),), kwargs, pool,
                                device, chunk_size)
            return convert_scores(scores, single, convert_to_numpy, convert_to_tensor)
        encoded = self.tokenize_pairs(pairs, prompt_name=prompt_name, prompt=prompt, truncate_query=truncate_query)
        # Pairs with the same text_1 share their leading tokens: computed once.
        share = [p[0] for p in pairs]
        scores = self._scores(encoded, batch_size, show_progress_bar, activation_fn, cancel, share)
        if apply_softmax and scores.ndim == 2:  # after the activation, as sentence-transformers
            scores = apply_activation(scores.astype(np.float64), "softmax").astype(np.float32)
        return convert_scores(scores, single, convert_to_numpy, convert_to_tensor)

    def score(
        self,
        query: Union[str, Sequence[str]],
        documents: Sequence[str],
        instruction: Optional[str] = None,
        *,
        prompt_name: Optional[str] = None,
        prompt: Optional[str] = None,
        chunking: ChunkingLike = None,
        batch_size: int = 32,
        show_progress_bar: Optional[bool] = None,
        activation_fn: ActivationFn = None,
        truncate_query: Optional[bool] = None,
        cancel: Optional[CancelToken] = None,
    ) -> np.ndarray:
        """Relevance of each document to the query, by the model's prompt (family recipe or chat template).

        Args:
            query: One query for every document, or a list with one query per document.
            documents: The documents (a list of str).
            instruction: Task instruction; ``None`` uses the default (the template's, or the default
                prompt).
            prompt_name, prompt: The instruction the sentence-transformers way (not with ``instruction``).
            chunking: Long documents: ``None`` (the model's default), ``False`` (truncate), ``"max"``,
                ``"first"``, a dict or a :class:`~crossrank.chunking.Chunking`.
            batch_size, show_progress_bar, activation_fn, cancel: As in :meth:`predict`.
            truncate_query: A prompt too long for ``max_length`` loses the document's last tokens;
                when the template and the query leave no room for the document, ``False`` (the
                default, the model's ``truncate_query``) raises :class:`~crossrank.TooLongError`
                naming the pairs (their score would ignore the document) and ``True`` cuts the query
                and the document longest-first (the tokenizers library's rule, as TEI).

        Returns:
            ``float32`` array, one score per document (``[n, num_labels]`` for several labels);
            with the default activation, Qwen3-Reranker scores are P("yes") in [0, 1]. A model
            without a prompt template scores ``(query, document)`` as :meth:`predict` does.

        Raises:
            TooLongError: see ``truncate_query``; ``indices`` lists the pairs.

        Several queries, each with documents of its own, run batched together with :meth:`score_many`.
        """
        queries, docs = broadcast(query, documents)
        instruction = self._instruction(instruction, prompt_name, prompt)
        # Documents of one query share the prompt up to the document: computed once.
        return self._score_documents(queries, docs, queries, instruction, self._chunking_for(chunking), batch_size,
                                     show_progress_bar, activation_fn, cancel, truncate_query)

    def _score_documents(self, queries: Sequence[str], docs: Sequence[str], share_keys: Sequence[Hashable],
                         instruction: Optional[str], plan: Optional[Chunking], batch_size: int,
                         show_progress_bar: Optional[bool], activation_fn: ActivationFn,
                         cancel: Optional[CancelToken], truncate_query: Optional[bool] = None) -> np.ndarray:
        """Scores of validated (query, document) pairs in one :meth:`forward_ids` call: the body of
        :meth:`score` and :meth:`score_many`. ``share_keys`` has one key per pair; pairs with the same
        key (and their chunks) run their common prompt prefix once."""
        activation_fn = normalize_activation(activation_fn)
        encoded = self._encode(queries, docs, instruction, truncate_query)
        if plan is None:
            self._warn_truncated(encoded)
            return self._scores(encoded, batch_size, show_progress_bar, activation_fn, cancel, share_keys)
        # One pass over every prompt: documents that fit keep their ids, chunks are encoded as documents.
        ids, owner = chunk_prompts(self._chunk_texts(docs, plan, encoded), encoded.input_ids, queries,
                                   lambda qs, ds: self._encode(qs, ds, instruction, truncate_query).input_ids)
        scores = self._scores(Encoded(ids, [False] * len(ids)), batch_size, show_progress_bar, activation_fn, cancel,
                              [share_keys[i] for i in owner])
        return aggregate_chunks(scores, owner, len(docs), plan.aggregate)

    @st_call_args
    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_k: Optional[int] = None,
        return_documents: bool = False,
        prompt_name: Optional[str] = None,
        prompt: Optional[str] = None,
        batch_size: int = 32,
        show_progress_bar: Optional[bool] = None,
        activation_fn: ActivationFn = None,
        device: Union[None, str, List[str]] = None,
        pool: Optional[Dict[str, Any]] = None,
        chunk_size: Optional[int] = None,
        *,
        instruction: Optional[str] = None,
        chunking: ChunkingLike = None,
        truncate_query: Optional[bool] = None,
        cancel: Optional[CancelToken] = None,
    ) -> List[Dict[str, Any]]:
        """Documents sorted by relevance to the query, best first (sentence-transformers 6's parameters).

        Args:
            query: The query.
            documents: The documents: any iterable of str but a str (read once).
            top_k: Keep ``results[:top_k]``, as sentence-transformers slices them (``0``: none, ``-1``: all
                but the last); any integer type.
            return_documents: Add each document's text under ``"text"``.
            prompt_name, prompt, instruction: The instruction (see :meth:`score`).
            chunking, truncate_query: As in :meth:`score`.
            batch_size, show_progress_bar, activation_fn, device, pool, chunk_size, cancel: As in
                :meth:`predict` (a pool scores chunks of the documents).

        ``convert_to_numpy``, ``convert_to_tensor``, ``apply_softmax``, ``num_workers`` and
        ``activation_fct`` are taken with sentence-transformers' deprecation warnings (no effect).

        Returns:
            ``[{"corpus_id": index in documents, "score": float, "text": document}, ...]``, with
            ``"text"`` only when ``return_documents`` is true, at most ``top_k`` entries; ties keep
            the documents' order.

        Several queries, each with documents of its own, run batched together with :meth:`rank_many`.
        """
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        top_k = self._check_rank_options("rank", top_k, None if isinstance(device, list) else device)
        _, docs = broadcast(query, documents)  # a list, whatever iterable the documents came in
        activation_fn = normalize_activation(activation_fn)
        if pool is not None or isinstance(device, list):
            # resolved here: the workers get the instruction's text and the chunking itself
            instruction = self._instruction(instruction, prompt_name, prompt)
            kwargs = dict(chunking=self._chunking_for(chunking) or False,
                          batch_size=positive_int(batch_size, "batch_size"), activation_fn=activation_fn,
                          truncate_query=self._truncate_query(truncate_query))
            scores = run_pooled(self, "score", docs, lambda part: (query, list(part), instruction), kwargs,
                                pool, device, chunk_size)
        else:
            scores = self.score(query, docs, instruction, prompt_name=prompt_name, prompt=prompt, chunking=chunking,
                                batch_size=batch_size, show_progress_bar=show_progress_bar,
                                activation_fn=activation_fn, truncate_query=truncate_query, cancel=cancel)
        return ranked("rank", scores, docs, top_k, return_documents)

    def _check_rank_options(self, method: str, top_k: Optional[int], device: Optional[str]) -> Optional[int]:
        """``top_k`` as an int (or ``None``), once the options and the model suit ranking."""
        if top_k is not None:
            top_k = as_int(top_k, "top_k", what="an integer or None")
        check_device(device)
        if self.num_labels != 1:
            raise ValueError(f"{method}() needs one score per document; this model has {self.num_labels} labels")
        return top_k

    # -- long documents ------------------------------------------------------------------------

    def _chunking_for(self, chunking: ChunkingLike) -> Optional[Chunking]:
        plan = self.chunking if chunking is None else as_chunking(chunking)
        if plan is not None and self.num_labels != 1:
            raise ValueError(f"chunking needs one score per document; this model has {self.num_labels} labels")
        return plan

    def _chunk_texts(self, docs: Sequence[str], plan: Chunking, encoded: Encoded) -> List[Optional[List[str]]]:
        return split_documents(docs, plan, encoded.document_tokens, self.prompting.encoder.text_offsets,
                               prompt_format=self.prompt_format, max_length=self.max_length)

    def chunk_documents(self, query: Union[str, Sequence[str]], documents: Sequence[str],
                        instruction: Optional[str] = None, *, chunking: ChunkingLike = True,
                        prompt_name: Optional[str] = None, prompt: Optional[str] = None) -> List[List[str]]:
        """The texts :meth:`score` scores for each document with ``chunking``: ``[document]`` when it is
        scored whole, else its chunks (for ``"first"``, only the first).

        Args:
            query, documents, instruction, prompt_name, prompt: As in :meth:`score` (the query and
                instruction decide how many document tokens fit).
            chunking: As in :meth:`score` (default: :class:`~crossrank.chunking.Chunking` defaults).
        """
        queries, docs = broadcast(query, documents)
        instruction = self._instruction(instruction, prompt_name, prompt)
        plan = as_chunking(chunking) or Chunking()
        chunks = self._chunk_texts(docs, plan, self._encode(queries, docs, instruction))
        return [texts if texts is not None else [doc] for texts, doc in zip(chunks, docs)]

    # -- engine --------------------------------------------------------------------------------

    def _scores(self, encoded: Encoded, batch_size: int, show_progress_bar: Optional[bool],
                activation_fn: ActivationFn, cancel: Optional[CancelToken],
                share_keys: Optional[Sequence[Hashable]] = None) -> np.ndarray:
        activation_fn = normalize_activation(activation_fn)
        raw = self.forward_ids(encoded.input_ids, batch_size=batch_size,
                               show_progress_bar=show_progress_bar, cancel=cancel, share_keys=share_keys)
        return self.activate(raw, activation_fn)

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
        batch_size = positive_int(batch_size, "batch_size")
        if len(input_ids) == 0:
            return np.empty((0, self.num_labels), dtype=np.float32)
        plan = plan_passes(input_ids, share_keys)
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() <= logging.INFO
        if not show_progress_bar:
            return self.engine.run(plan, batch_size=batch_size, cancel=cancel)
        from tqdm.auto import tqdm

        with tqdm(total=len(plan), desc="Scoring", unit="pair") as bar:
            return self.engine.run(plan, batch_size=batch_size, cancel=cancel, on_pass=bar.update)

    def activate(self, raw: np.ndarray, activation_fn: ActivationFn = None, *,
                 defaults: str = "sentence-transformers") -> np.ndarray:
        """Scores from raw logits (``[n, num_labels]``, as :meth:`forward_ids` returns them).

        ``logit_mean``/``logit_bias`` and ``logit_sigma`` are applied first, then the activation, in
        float64; the result is float32, ``[n]`` for one label.

        Args:
            raw: The logits.
            activation_fn: The activation (see the constructor); ``None``: the model's
                :attr:`activation_fn`, else the default of ``defaults``.
            defaults: ``"sentence-transformers"`` (one label sigmoid, several identity: the
                ``CrossEncoder`` API) or ``"vllm"`` (one label sigmoid, several softmax: the server).
        """
        fn = normalize_activation(activation_fn)
        if fn is None:  # the attribute may have been set to a torch module after loading, as in ST code
            fn = normalize_activation(self.activation_fn)
        if fn is None:
            fn = default_activation(self.num_labels, defaults)
        mean = self.config.logit_mean if self.config.logit_mean is not None else self.config.logit_bias
        return activate_logits(raw, fn, logit_mean=mean, logit_sigma=self.config.logit_sigma)

