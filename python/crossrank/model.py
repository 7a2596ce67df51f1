"""CrossEncoder: the user-facing reranker, shaped like sentence-transformers' ``CrossEncoder``."""
from __future__ import annotations

import logging
import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from .chat_template import ChatTemplate, read_tokenizer_config
from .chunking import Chunking, ChunkingLike, as_chunking, token_windows, window_texts
from .config import ModelSpec, load_config, resolve_classifier_tokens
from .activations import ActivationLike, apply_activation, default_activation, normalize_activation
from .errors import ConfigError, UnsupportedModelError
from .hub import resolve_model_path
from .multiprocess import chunk_size_for, run_in_pool, start_pool, stop_pool
from .pairs import broadcast, flatten_queries, ranked
from .engine import CancelToken, Engine, plan_passes
from .passes import shared_prefix_groups
from .st_compat import (ModelCardData, TokenizerAdapter, convert_scores, is_singular_input, saved_activation_path,
                        st_call_args, st_init_args, warn_once)
from .st_package import STPackage, head_overrides, read_st_package
from .st_save import save_package
from .prompting import ChatPrompting, Prompting, TemplateLike, choose_prompt, make_prompting
from .templates import Template, split_pairs
from .tokenization import Encoded, PromptEncoder

__all__ = ["CrossEncoder", "CancelToken", "shared_prefix_groups"]

logger = logging.getLogger("crossrank")

ActivationFn = ActivationLike
Pair = Tuple[str, str]

# transformers' model_max_length when a tokenizer config sets none.
_NO_TOKENIZER_LIMIT = int(1e30)
_DTYPES = ("auto", "float32", "bfloat16", "int8")
# Kernel levels with vpdpbusd: without it the int8 GEMM is slower than float32.
_VNNI_LEVELS = ("avxvnni", "avx512vnni", "avx512bf16", "amx")


def auto_dtype(vendor: str, isa: str, amx_usable: bool) -> str:
    """The fastest float dtype that meets the bfloat16 accuracy bar, as a fixed function of the CPU
    (never a timing probe; ``auto`` never picks int8, whose bar is looser):

    * AMX tiles usable (``isa == "amx"`` and the OS granted the permission): ``"bfloat16"`` on tiles;
    * AVX512_BF16 on AMD (Zen 4/5: ``vdpbf16ps`` at twice the float32 FMA rate): ``"bfloat16"``;
    * Intel with AVX512_BF16 but no usable AMX: ``"float32"`` (``vdpbf16ps`` runs at half the
      float32 FMA rate there, so bfloat16 would be the slower path);
    * anything else: ``"float32"``.
    """
    if isa == "amx" and amx_usable:
        return "bfloat16"
    if isa in ("avx512bf16", "amx") and vendor == "AuthenticAMD":
        return "bfloat16"
    return "float32"


def resolve_dtype(dtype: str) -> str:
    """The compute dtype ``dtype`` means on this CPU: ``"auto"`` is :func:`auto_dtype` of this CPU's
    vendor, kernel level and AMX permission (asked from the OS here, once per process)."""
    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r} is not available; choose one of {', '.join(_DTYPES)}")
    if dtype == "auto":
        info = _core.cpu_info()
        amx = info["isa"] == "amx" and _core.amx_usable()
        # a refused permission turns the level into avx512bf16: read it again
        return auto_dtype(info["vendor"], _core.cpu_info()["isa"], amx)
    return dtype


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _is_pair(obj: Any) -> bool:
    return isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(t, str) for t in obj)


def _check_device(device: Any) -> None:
    if device is not None and str(device) != "cpu":
        raise ValueError(f"crossrank runs on the CPU; device={device!r} is not available (pass None or 'cpu')")


class CrossEncoder:
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
        hf_overrides: Config overrides with vLLM's semantics, e.g. for Qwen3-Reranker
            ``{"architectures": ["Qwen3ForSequenceClassification"],
            "classifier_from_token": ["no", "yes"], "is_original_qwen3_reranker": True}``.
            A known reranker family needs none: its template supplies them; so does a
            sentence-transformers package's ``LogitScore`` module. Given
            ``is_original_qwen3_reranker`` without tokens, ``["no", "yes"]`` is used.
        max_length: Token budget of one prompt; default: the family's (Qwen3-Reranker 8192); for a
            sentence-transformers package its ``max_seq_length`` rule; else
            ``min(max_position_embeddings, 8192)``.
        dtype: Compute dtype of the linear layers: ``"auto"`` (bfloat16 where it is the faster
            path: AMX tiles, or AMD with AVX512_BF16; else float32; see :func:`auto_dtype`), ``"float32"`` (the reference path: scores within 1e-4 of
            transformers in float32) or ``"bfloat16"`` (weights and layer inputs rounded to
            bfloat16, float32 accumulation and residual stream; on CPUs without AVX512_BF16 it
            saves memory, not time) or ``"int8"`` (opt-in: int8 weights per output channel and
            inputs per token, exact int32 sums with AVX512_VNNI or AVX-VNNI; a token's few huge
            inputs, the outlier channels of real LLMs, are applied in float32). The resolved
            value is ``self.dtype``.
        threads: Compute threads; default: the CPUs this process may use.
        template: A :class:`~crossrank.templates.Template` or its name, ``"chat"`` /
            ``"chat:NAME"`` (the model's chat template), a
            :class:`~crossrank.chat_template.ChatTemplate`, or ``None`` to choose from the model.
        activation_fn: Default activation of the scores: ``None`` (the saved one of a
            sentence-transformers model, else as sentence-transformers: one label sigmoid, several
            identity), a name of :data:`crossrank.activations.ACTIVATIONS` (``"sigmoid"``,
            ``"identity"``: raw logits, ``"tanh"``, ...), a ``torch.nn`` activation module (computed in
            NumPy), a torch dotted path, or a callable on a float NumPy array.
        revision: Hub revision (branch, tag or commit) to look up in the cache.
        cache_folder: Hugging Face cache directory to search.
        token: Hub token, for a download (never stored or pickled).
        local_files_only: Never download.
        split_special_tokens: Tokenize special-token strings inside queries and documents as
            plain text (the official recipes parse them as special tokens: default ``False``).
        prompts: Named instructions, as sentence-transformers' ``prompts``
            (``{"web": "Given a web search query, ..."}``); they extend a package's saved prompts.
        default_prompt_name: The prompt used when a call names none.
        chat_template_kwargs: Extra variables for the chat template (vLLM's
            ``chat_template_kwargs``, e.g. ``{"add_generation_prompt": True}``).
        chunking: Default long-document handling of :meth:`score`/:meth:`rank`: ``None`` (truncate),
            ``"max"``/``"first"``, a dict or a :class:`~crossrank.chunking.Chunking`.
        device: ``None`` or ``"cpu"`` (accepted for sentence-transformers code).
        truncate_query: Default of the calls' ``truncate_query`` (see :meth:`score`).
        model_card_data: A :class:`~crossrank.st_compat.ModelCardData` (sentence-transformers'
            evaluators store their metrics there); default: a new one.
        check_finite: Scan the weights for NaN/Inf at load and raise
            :class:`~crossrank.CheckpointError` naming the tensor. ``None`` (default): on for
            checkpoints of up to 2^31 weights, off above (where the scan costs seconds). Whatever
            this says, a non-finite logit raises :class:`~crossrank.NumericalError` instead of
            being returned as a score.

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
        options = dict(hf_overrides=hf_overrides, max_length=max_length, dtype=dtype, threads=threads,
                       template=template, activation_fn=activation_fn, split_special_tokens=split_special_tokens,
                       prompts=prompts, default_prompt_name=default_prompt_name,
                       chat_template_kwargs=chat_template_kwargs, chunking=chunking, device=device,
                       check_finite=check_finite, truncate_query=bool(truncate_query))
        self.model_card_data = model_card_data if model_card_data is not None else ModelCardData(
            model_id=str(model_name_or_path))
        self._validate_options(**options)
        resolution = dict(revision=revision, cache_folder=cache_folder, local_files_only=local_files_only)
        path = resolve_model_path(model_name_or_path, token=token, **resolution)
        try:
            self._load(str(model_name_or_path), path, resolution, options)
        finally:
            # Parsing tokenizer.json and converting weights leave 100-200 MB freed but held by the
            # C allocator at the 0.6B shape; hand it back (about 20 ms).
            _core.release_free_memory()

    # -- loading -------------------------------------------------------------------------------

    @staticmethod
    def _validate_options(*, dtype: str, threads: Optional[int], activation_fn: ActivationFn,
                          chunking: ChunkingLike, device: Any, check_finite: Optional[bool], **_: Any) -> None:
        resolve_dtype(dtype)
        if check_finite is not None and not isinstance(check_finite, bool):
            raise TypeError(f"check_finite must be True, False or None, got {check_finite!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or not 1 <= threads <= 256):
            raise ValueError(f"threads must be an integer in [1, 256], got {threads!r}")
        normalize_activation(activation_fn)
        as_chunking(chunking)
        _check_device(device)

    def _load(self, name: str, path: Path, resolution: Dict[str, Any], options: Dict[str, Any]) -> None:
        """Builds the model from a resolved directory (shared by ``__init__`` and unpickling)."""
        self._options = dict(options)
        self._resolution = dict(resolution)
        self.model_name_or_path = name
        self.path: Path = path
        threads = options["threads"] if options["threads"] is not None else _default_threads()
        hf_overrides = options["hf_overrides"]
        self.st_package: Optional[STPackage] = read_st_package(path)
        spec = load_config(path, hf_overrides)
        encoder = PromptEncoder(path, split_special_tokens=options["split_special_tokens"])
        choice = choose_prompt(options["template"], options["chat_template_kwargs"], path=path, name=name,
                               package=self.st_package, config=spec.raw, encoder=encoder)

        if spec.head.kind == "none":
            # A causal LM: the package's LogitScore, the family's overrides, or (chat prompts, as
            # sentence-transformers does for a bare causal LM) yes/no turn it into a classifier.
            tok = encoder.tokenizer
            if self.st_package is not None and self.st_package.has_logit_score:
                defaults = head_overrides(self.st_package, spec.architecture, tok.id_to_token)
            elif isinstance(choice, Template) and choice.overrides:
                defaults = dict(choice.overrides)
            elif isinstance(choice, ChatPrompting) and None not in (tok.token_to_id("yes"), tok.token_to_id("no")):
                defaults = head_overrides(STPackage(true_token_id=tok.token_to_id("yes"),
                                                    false_token_id=tok.token_to_id("no")),
                                          spec.architecture, tok.id_to_token)
                logger.info("%s: no head is configured; scoring logit('yes') - logit('no') as "
                            "sentence-transformers does for a causal LM", name)
            else:
                raise UnsupportedModelError(
                    f"{name} is a causal LM ({spec.architecture}) and crossrank does not "
                    "know which answer tokens score it. Pass hf_overrides as for vLLM, e.g. "
                    '{"architectures": ["Qwen3ForSequenceClassification"], '
                    '"classifier_from_token": ["no", "yes"], "is_original_qwen3_reranker": true}, '
                    "or template='qwen3-reranker' for a Qwen3-Reranker checkpoint")
            spec = load_config(path, {**defaults, **(hf_overrides or {})})
        self.config: ModelSpec = spec
        #: How pairs become token ids (see :mod:`crossrank.prompting`).
        self.prompting: Prompting = make_prompting(choice, encoder, use_sep_token=spec.use_sep_token,
                                                   package=self.st_package)
        #: The family template, when that is the prompt format.
        self.template: Optional[Template] = self.prompting.family

        package = self.st_package
        self.prompts: Dict[str, str] = dict(package.prompts) if package else {}
        self.prompts.update(options["prompts"] or {})
        self.default_prompt_name: Optional[str] = options["default_prompt_name"] or (
            package.default_prompt_name if package else None)
        if self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            raise ValueError(f"default_prompt_name {self.default_prompt_name!r} is not one of the prompts "
                             f"{sorted(self.prompts)}")
        activation = normalize_activation(options["activation_fn"])
        if activation is None:  # the saved one; a path crossrank cannot run raises, naming it
            activation = normalize_activation(saved_activation_path(path, package))
        self.activation_fn: ActivationFn = activation
        self.truncate_query: bool = bool(options.get("truncate_query", False))
        self.chunking: Optional[Chunking] = as_chunking(options["chunking"])
        self.max_length: int = self._pick_max_length(options["max_length"])
        self.threads = threads
        self.dtype = resolve_dtype(options["dtype"])
        if self.dtype == "int8" and _core.cpu_info()["isa"] not in _VNNI_LEVELS:
            warnings.warn(f"dtype='int8' runs without VNNI on this CPU (kernels: {_core.cpu_info()['isa']}), "
                          "slower than float32; use dtype='float32' for speed or 'bfloat16' to halve memory",
                          RuntimeWarning, stacklevel=3)

        head: Dict[str, Any]
        if spec.head.kind == "lm_rows":
            rows = resolve_classifier_tokens(spec.head.tokens, encoder.get_vocab(),
                                             vocab_size=spec.vocab_size)
            head = {"kind": "lm_rows", "rows": list(rows),
                    "two_way": spec.head.method == "from_2_way_softmax"}
            self._head_rows: Optional[List[int]] = list(rows)
        else:
            head = {"kind": "score_weight"}
            self._head_rows = None
        #: The engine running this model's passes (see :mod:`crossrank.engine`).
        self.engine: Engine = Engine.load(str(path), spec.core_params(), head, dtype=self.dtype, threads=threads,
                                          check_finite=options.get("check_finite"))
        self.num_labels: int = self.engine.num_labels
        logger.info("loaded %s (%s, %d layers, %s head, %d label(s), prompt %s, %d threads, kernels %s)",
                    name, spec.architecture, spec.num_hidden_layers, spec.head.kind, self.num_labels,
                    self.prompt_format, threads, _core.cpu_info()["isa"])

    def _pick_max_length(self, max_length: Optional[int]) -> int:
        if max_length is None:
            if self.template is not None:
                return self.template.default_max_length
            if self.st_package is not None:
                # sentence-transformers: max_seq_length, else the tokenizer's limit capped by the model's.
                if self.st_package.max_seq_length is not None:
                    return self.st_package.max_seq_length
                limit = read_tokenizer_config(self.path).get("model_max_length")
                limit = limit if isinstance(limit, int) and not isinstance(limit, bool) else _NO_TOKENIZER_LIMIT
                return min(limit, self.config.max_position_embeddings)
            return min(self.config.max_position_embeddings, 8192)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
        if max_length > self.config.max_position_embeddings:
            logger.warning("max_length=%d is beyond the model's max_position_embeddings=%d",
                           max_length, self.config.max_position_embeddings)
        return max_length

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
        """What a pickle holds: the name, resolved path and constructor options (no weights), with the
        current ``max_length``, ``activation_fn`` and ``truncate_query`` (settable after loading)."""
        activation = self.activation_fn
        if callable(activation):
            try:
                pickle.dumps(activation)
            except Exception as exc:
                raise TypeError(f"this CrossEncoder cannot be pickled: its activation_fn {activation!r} cannot "
                                f"be pickled ({exc}); use a named activation or a module-level function") from exc
        options = {**self._options, "max_length": self.max_length, "activation_fn": activation,
                   "truncate_query": self.truncate_query}
        return {"format": 1, "model_name_or_path": self.model_name_or_path, "path": str(self.path),
                "resolution": self._resolution, "options": options}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        """Reloads from the pickled path (resolving the name again where the path does not exist)."""
        if state.get("format") != 1:
            raise ValueError(f"cannot unpickle a CrossEncoder saved in format {state.get('format')!r}")
        path = Path(state["path"])
        if not (path / "config.json").is_file():
            path = resolve_model_path(state["model_name_or_path"], **state["resolution"])
        self.model_card_data = ModelCardData(model_id=state["model_name_or_path"])
        self._load(state["model_name_or_path"], path, state["resolution"], state["options"])

    @property
    def tokenizer(self) -> TokenizerAdapter:
        """The model's ``tokenizers.Tokenizer``, with transformers' ``model_max_length`` (the model's
        ``max_length``) on top."""
        return TokenizerAdapter(self.prompting.encoder.tokenizer, self)

    @property
    def max_seq_length(self) -> int:
        """sentence-transformers' name of :attr:`max_length`."""
        return self.max_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"max_seq_length must be a positive integer, got {value!r}")
        self.max_length = value

    @property
    def default_activation_function(self) -> ActivationFn:
        """Deprecated name of :attr:`activation_fn` (as in sentence-transformers)."""
        warn_once("The `default_activation_function` property was renamed and is now deprecated. "
                  "Please use `activation_fn` instead.")
        return self.activation_fn

    @property
    def modalities(self) -> List[str]:
        """The input modalities: text."""
        return ["text"]

    def supports(self, modality: Union[str, Tuple[str, ...]]) -> bool:
        """Whether the model takes inputs of ``modality`` (sentence-transformers' rule; only ``"text"``)."""
        return modality in self.modalities

    def is_singular_input(self, inputs: Any) -> bool:
        """Whether ``inputs`` is one pair rather than a list of pairs (sentence-transformers' rule)."""
        return is_singular_input(inputs)

    def save(self, path: Union[str, os.PathLike], model_name: Optional[str] = None, create_model_card: bool = True,
             train_datasets: Optional[List[str]] = None, safe_serialization: bool = True) -> None:
        """Writes a sentence-transformers CrossEncoder package that sentence-transformers and crossrank
        load with the same scores: the source checkpoint's files, copied, and the module files (see
        :mod:`crossrank.st_save`). ``model_name``, ``create_model_card``, ``train_datasets`` and
        ``safe_serialization`` are accepted for sentence-transformers code; no model card is written.

        Raises:
            ValueError: the model cannot be described as such a package (the message says why).
        """
        chat = self.chat_template
        save_package(self, path, chat_template=chat.source if chat is not None else None,
                     chat_variables=dict(chat.variables) if chat is not None else {},
                     message_format=chat.format if chat is not None else None, head_token_ids=self._head_rows,
                     family=self.template, activation=self.activation_fn, overrides=self._options["hf_overrides"])

    save_pretrained = save

    def start_multi_process_pool(self, target_devices: Optional[List[str]] = None) -> Dict[str, Any]:
        """Starts worker processes for ``predict(..., pool=)``/``rank(..., pool=)`` (one per ``"cpu"`` in
        ``target_devices``; default up to 4, one per core), each with ``cores // processes`` threads;
        see :mod:`crossrank.multiprocess`. Stop it with :meth:`stop_multi_process_pool`."""
        return start_pool(self, target_devices)

    @staticmethod
    def stop_multi_process_pool(pool: Dict[str, Any]) -> None:
        """Stops a pool from :meth:`start_multi_process_pool`."""
        stop_pool(pool)

    def _pooled(self, method: str, items: Sequence[Any], chunk: Callable[[Sequence[Any]], tuple],
                kwargs: Dict[str, Any], pool: Optional[Dict[str, Any]], device: Any,
                chunk_size: Optional[int]) -> np.ndarray:
        """Runs ``method`` over ``items`` on a pool's workers (a temporary pool for a device list)."""
        own = pool is None
        if own:
            pool = self.start_multi_process_pool(list(device))
        try:
            size = chunk_size_for(len(items), len(pool["processes"]), chunk_size)
            parts = run_in_pool(pool, method, [chunk(items[i:i + size]) for i in range(0, len(items), size)],
                                {**kwargs, "show_progress_bar": False})
        finally:
            if own:
                self.stop_multi_process_pool(pool)
        return np.concatenate(parts) if parts else np.empty((0,), dtype=np.float32)

    # -- prompts -------------------------------------------------------------------------------

    def _resolve_prompt(self, prompt: Optional[str], prompt_name: Optional[str]) -> Optional[str]:
        """sentence-transformers' rule: ``prompt``, else ``prompts[prompt_name]``, else the default
        prompt; an empty prompt is no prompt."""
        if prompt_name is not None and not isinstance(prompt_name, str):
            raise TypeError(
                f"prompt_name must be a str or None, got {type(prompt_name).__name__}; predict() and rank() "
                "take sentence-transformers 6's parameter order (inputs, prompt_name, prompt, batch_size, ...): "
                "pass batch_size and the others by keyword")
        if prompt is not None and not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str or None, got {type(prompt).__name__}")
        if prompt is None:
            if prompt_name is not None:
                if prompt_name not in self.prompts:
                    raise ValueError(f"prompt name {prompt_name!r} is not one of the prompts {sorted(self.prompts)}")
                prompt = self.prompts[prompt_name]
            elif self.default_prompt_name is not None:
                prompt = self.prompts.get(self.default_prompt_name)
        elif prompt_name is not None:
            logger.warning("both prompt and prompt_name were given; using prompt")
        return prompt or None

    def _instruction(self, instruction: Optional[str], prompt_name: Optional[str],
                     prompt: Optional[str]) -> Optional[str]:
        if instruction is not None:
            if not isinstance(instruction, str):
                raise TypeError(f"instruction must be a str or None, got {type(instruction).__name__}")
            if prompt is not None or prompt_name is not None:
                raise ValueError("give the instruction as instruction= or as prompt=/prompt_name=, not both")
            return instruction
        return self._resolve_prompt(prompt, prompt_name)

    # -- tokenization --------------------------------------------------------------------------

    def _truncate_query(self, truncate_query: Optional[bool]) -> bool:
        return self.truncate_query if truncate_query is None else bool(truncate_query)

    def _encode(self, queries: Sequence[str], documents: Sequence[str], instruction: Optional[str],
                truncate_query: Optional[bool] = None) -> Encoded:
        """Token ids of (query, document) prompts in the model's prompt format; without one, the
        texts as a pair, as :meth:`predict` (and sentence-transformers) take them."""
        return self.prompting.encode(queries, documents, instruction, self.max_length,
                                     truncate_query=self._truncate_query(truncate_query))

    def _warn_truncated(self, encoded: Encoded) -> None:
        n_cut = sum(encoded.truncated)
        if n_cut:
            logger.warning("%d of %d prompts were longer than max_length=%d; their documents were truncated",
                           n_cut, len(encoded), self.max_length)

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
        encoded = self.prompting.encode_pairs(texts_1, texts_2, prompt, self.max_length,
                                              truncate=self._truncate_query(truncate_query))
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
        if inputs is None:
            raise TypeError("predict() needs the pairs to score")
        if not isinstance(device, list):
            _check_device(device)
        if isinstance(inputs, np.ndarray):
            inputs = inputs.tolist()
        single = _is_pair(inputs)
        pairs = [inputs] if single else list(inputs)
        activation_fn = normalize_activation(activation_fn)
        if pool is not None or isinstance(device, list):
            texts_1, texts_2 = split_pairs(pairs)
            kwargs = dict(prompt_name=prompt_name, prompt=prompt, batch_size=batch_size, activation_fn=activation_fn,
                          apply_softmax=apply_softmax, truncate_query=truncate_query)
            scores = self._pooled("predict", list(zip(texts_1, texts_2)), lambda part: (list(part),), kwargs, pool,
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
        chunks = self._chunk_texts(queries, docs, instruction, plan, encoded)
        # One pass over every prompt: documents that fit keep their ids, chunks are encoded as documents.
        ids: List[List[int]] = []
        owner: List[int] = []
        chunk_queries: List[str] = []
        chunk_docs: List[str] = []
        chunk_owner: List[int] = []
        for i, texts in enumerate(chunks):
            if texts is None:
                ids.append(encoded.input_ids[i])
                owner.append(i)
            else:
                chunk_queries += [queries[i]] * len(texts)
                chunk_docs += texts
                chunk_owner += [i] * len(texts)
        if chunk_docs:
            chunk_encoded = self._encode(chunk_queries, chunk_docs, instruction, truncate_query)
            ids += chunk_encoded.input_ids
            owner += chunk_owner
        scores = self._scores(Encoded(ids, [False] * len(ids)), batch_size, show_progress_bar, activation_fn, cancel,
                              [share_keys[i] for i in owner])
        # Chunks of a document are in order, so the first one seen is the document's first chunk.
        out = np.full(len(docs), -np.inf, dtype=np.float32)
        seen = np.zeros(len(docs), dtype=bool)
        for value, i in zip(scores, owner):
            if plan.aggregate == "first":
                if not seen[i]:
                    out[i] = value
            else:
                out[i] = max(out[i], value)
            seen[i] = True
        return out

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
            documents: The documents.
            top_k: Return at most this many.
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
        self._check_rank_options("rank", top_k, None if isinstance(device, list) else device)
        kwargs = dict(prompt_name=prompt_name, prompt=prompt, chunking=chunking, batch_size=batch_size,
                      activation_fn=normalize_activation(activation_fn), truncate_query=truncate_query)
        if pool is not None or isinstance(device, list):
            broadcast(query, documents)
            scores = self._pooled("score", list(documents), lambda part: (query, list(part), instruction), kwargs,
                                  pool, device, chunk_size)
        else:
            scores = self.score(query, documents, instruction, show_progress_bar=show_progress_bar, cancel=cancel,
                                **kwargs)
        return ranked("rank", scores, documents, top_k, return_documents)

    def score_many(
        self,
        queries: Sequence[str],
        documents_per_query: Sequence[Sequence[str]],
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
    ) -> List[np.ndarray]:
        """:meth:`score` for several queries, each with its own documents, in one batched run.

        Every pair of every query goes through one pass pipeline: each query's prompt prefix runs
        once, and the passes (``batch_size`` pairs, capped by a token budget) span queries, so an
        evaluation loop over many queries with few documents each keeps the passes full. The
        scores are those :meth:`score` gives each query alone.

        Args:
            queries: The queries (a list of str).
            documents_per_query: One list of documents per query; a list may be empty.
            instruction, prompt_name, prompt, chunking, truncate_query: As in :meth:`score`, for every
                query (a :class:`~crossrank.TooLongError`'s ``indices`` count the pairs of all
                queries in order).
            batch_size, show_progress_bar, activation_fn, cancel: As in :meth:`predict`; the
                progress bar counts the pairs of all queries, and a callable ``activation_fn``
                gets the scores of all pairs at once (it must work row by row).

        Returns:
            One ``float32`` array per query, as :meth:`score` returns it (empty for a query
            without documents).
        """
        flat_queries, flat_docs, owners, counts = flatten_queries(queries, documents_per_query)
        instruction = self._instruction(instruction, prompt_name, prompt)
        # Shared by query position, not text: each query's documents form exactly the prefix group
        # that score(query, documents) forms, even when a query text repeats with other documents.
        scores = self._score_documents(flat_queries, flat_docs, owners, instruction, self._chunking_for(chunking),
                                       batch_size, show_progress_bar, activation_fn, cancel, truncate_query)
        if not counts:
            return []
        return np.split(scores, np.cumsum(counts)[:-1])

    def rank_many(
        self,
        queries: Sequence[str],
        documents_per_query: Sequence[Sequence[str]],
        top_k: Optional[int] = None,
        return_documents: bool = False,
        prompt_name: Optional[str] = None,
        prompt: Optional[str] = None,
        batch_size: int = 32,
        show_progress_bar: Optional[bool] = None,
        activation_fn: ActivationFn = None,
        device: Optional[str] = None,
        *,
        instruction: Optional[str] = None,
        chunking: ChunkingLike = None,
        truncate_query: Optional[bool] = None,
        cancel: Optional[CancelToken] = None,
    ) -> List[List[Dict[str, Any]]]:
        """:meth:`rank` for several queries, each with its own documents, scored in one batched run
        (see :meth:`score_many`): for evaluation loops.

        Example::

            results = model.rank_many(["what is TCP?", "volcanoes"],
                                      [["TCP is ...", "A recipe ..."], ["Lava ...", "Ash ...", "Tea ..."]],
                                      top_k=2)
            results[1][0]  # {"corpus_id": 0, "score": 0.97}: the best document of the second query

        Args:
            queries: The queries (a list of str).
            documents_per_query: One list of documents per query; a list may be empty.
            top_k: Return at most this many per query.
            return_documents, prompt_name, prompt, instruction, chunking, batch_size, truncate_query,
                show_progress_bar, activation_fn, device, cancel: As in :meth:`rank` and
                :meth:`score_many`, for every query.

        Returns:
            One list per query, as :meth:`rank` returns it: ``[{"corpus_id": index in that query's
            documents, "score": float[, "text": document]}, ...]``, best first, ties in document
            order; ``[]`` for a query without documents.
        """
        self._check_rank_options("rank_many", top_k, device)
        per_query = self.score_many(queries, documents_per_query, instruction, prompt_name=prompt_name,
                                    prompt=prompt, chunking=chunking, batch_size=batch_size,
                                    show_progress_bar=show_progress_bar, activation_fn=activation_fn,
                                    truncate_query=truncate_query, cancel=cancel)
        return [ranked("rank_many", scores, documents, top_k, return_documents)
                for scores, documents in zip(per_query, documents_per_query)]

    def _check_rank_options(self, method: str, top_k: Optional[int], device: Optional[str]) -> None:
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
        _check_device(device)
        if self.num_labels != 1:
            raise ValueError(f"{method}() needs one score per document; this model has {self.num_labels} labels")

    # -- long documents ------------------------------------------------------------------------

    def _chunking_for(self, chunking: ChunkingLike) -> Optional[Chunking]:
        plan = self.chunking if chunking is None else as_chunking(chunking)
        if plan is not None and self.num_labels != 1:
            raise ValueError(f"chunking needs one score per document; this model has {self.num_labels} labels")
        return plan

    def _chunk_texts(self, queries: Sequence[str], docs: Sequence[str], instruction: Optional[str],
                     plan: Chunking, encoded: Encoded) -> List[Optional[List[str]]]:
        """Per document, ``None`` (scored whole) or the texts of its chunks."""
        if encoded.document_tokens is None and plan.size is None:
            # Prompts crossrank cannot cut are refused when too long, so every document fitted whole.
            return [None] * len(docs)
        if encoded.document_tokens is None:
            raise ValueError(
                f"chunking with a chunk size needs a prompt that crossrank can cut inside the document; the "
                f"{self.prompt_format!r} prompt of this model cannot be (a chat template that rewrites its inputs, "
                "or pair tokenization)")
        to_split = []
        for i, (kept, whole) in enumerate(encoded.document_tokens):
            cut = kept < whole
            if cut and kept == 0:
                raise ValueError(
                    f"document {i}: the template, instruction and query take all of max_length={self.max_length}, "
                    "so no part of the document fits; shorten the query or raise max_length")
            if cut or plan.size is not None:
                to_split.append((i, kept if cut else None))
        out: List[Optional[List[str]]] = [None] * len(docs)
        offsets = self.prompting.encoder.text_offsets([docs[i] for i, _ in to_split])
        for (i, budget), doc_offsets in zip(to_split, offsets):
            n = len(doc_offsets)
            if budget is None and n <= plan.size:
                continue  # it fits and is no longer than the chunk size: scored whole
            size, overlap = plan.window(budget if budget is not None else n)
            windows = token_windows(n, size, overlap, plan.max_chunks)
            if plan.aggregate == "first":
                windows = windows[:1]
            out[i] = window_texts(docs[i], doc_offsets, windows)
        return out

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
        chunks = self._chunk_texts(queries, docs, instruction, plan, self._encode(queries, docs, instruction))
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
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
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
        x = np.asarray(raw, dtype=np.float64)
        mean = self.config.logit_mean if self.config.logit_mean is not None else self.config.logit_bias
        if mean is not None:
            x = x - mean
        if self.config.logit_sigma is not None:
            x = x / self.config.logit_sigma
        x = apply_activation(x, fn).astype(np.float32)
        return x[:, 0] if x.ndim == 2 and x.shape[1] == 1 else x

