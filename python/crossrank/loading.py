"""Load options and the decisions taken once at load: dtype, threads, the config with the head
defaults of a bare causal LM, the prompt length, the engine's head.

:class:`LoadOptions` is the typed record of :class:`~crossrank.CrossEncoder`'s constructor options
(what a pickle carries besides the name and path); :class:`Resolution` says where the model was
looked up.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from . import _core
from .activations import ActivationLike, normalize_activation
from .chat_template import read_tokenizer_config
from .chunking import Chunking, ChunkingLike, as_chunking
from .config import ModelSpec, load_config, resolve_classifier_tokens
from .engine import Engine
from .errors import UnsupportedModelError
from .integers import positive_int
from .prompting import ChatPrompting, Prompting, PromptChoice, TemplateLike, choose_prompt, make_prompting
from .st_compat import saved_activation_path
from .st_package import STPackage, head_overrides, read_st_package
from .templates import Template
from .tokenization import PromptEncoder

__all__ = ["LoadOptions", "Resolution", "Loaded", "load_model", "auto_dtype", "resolve_dtype", "default_threads", "check_device",
           "with_head_defaults", "pick_max_length", "tokenizer_mismatch", "engine_head", "DTYPES", "VNNI_LEVELS"]

logger = logging.getLogger("crossrank")

#: The ``dtype`` option's values.
DTYPES = ("auto", "float32", "bfloat16", "int8")
#: Kernel levels with vpdpbusd: without it the int8 GEMM is slower than float32.
VNNI_LEVELS = ("avxvnni", "avx512vnni", "avx512bf16", "amx")
# transformers' model_max_length when a tokenizer config sets none.
_NO_TOKENIZER_LIMIT = int(1e30)


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
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not available; choose one of {', '.join(DTYPES)}")
    if dtype == "auto":
        info = _core.cpu_info()
        amx = info["isa"] == "amx" and _core.amx_usable()
        # a refused permission turns the level into avx512bf16: read it again
        return auto_dtype(info["vendor"], _core.cpu_info()["isa"], amx)
    return dtype


def default_threads() -> int:
    """The CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_device(device: Any) -> None:
    """Refuses a device other than ``None``/``"cpu"``."""
    if device is not None and str(device) != "cpu":
        raise ValueError(f"crossrank runs on the CPU; device={device!r} is not available (pass None or 'cpu')")


@dataclass
class LoadOptions:
    """:class:`~crossrank.CrossEncoder`'s load options, validated before any file is read.

    Attributes:
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
            path: AMX tiles, or AMD with AVX512_BF16; else float32; see :func:`auto_dtype`),
            ``"float32"`` (the reference path: scores within 1e-4 of transformers in float32) or
            ``"bfloat16"`` (weights and layer inputs rounded to bfloat16, float32 accumulation
            and residual stream; on CPUs without AVX512_BF16 it saves memory, not time) or
            ``"int8"`` (opt-in: int8 weights per output channel and inputs per token, exact int32
            sums with AVX512_VNNI or AVX-VNNI; a token's few huge inputs, the outlier channels of
            real LLMs, are applied in float32). The resolved value is ``self.dtype``.
        threads: Compute threads; default: the CPUs this process may use.
        template: A :class:`~crossrank.templates.Template` or its name, ``"chat"`` /
            ``"chat:NAME"`` (the model's chat template), a
            :class:`~crossrank.chat_template.ChatTemplate`, or ``None`` to choose from the model.
        activation_fn: Default activation of the scores: ``None`` (the saved one of a
            sentence-transformers model, else as sentence-transformers: one label sigmoid, several
            identity), a name of :data:`crossrank.activations.ACTIVATIONS` (``"sigmoid"``,
            ``"identity"``: raw logits, ``"tanh"``, ...), a ``torch.nn`` activation module (computed in
            NumPy), a torch dotted path, or a callable on a float NumPy array.
        split_special_tokens: Tokenize special-token strings inside queries and documents as
            plain text (the official recipes parse them as special tokens: default ``False``).
        prompts: Named instructions, as sentence-transformers' ``prompts``
            (``{"web": "Given a web search query, ..."}``); they extend a package's saved prompts.
        default_prompt_name: The prompt used when a call names none.
        chat_template_kwargs: Extra variables for the chat template (vLLM's
            ``chat_template_kwargs``, e.g. ``{"add_generation_prompt": True}``).
        chunking: Default long-document handling of ``score()``/``rank()``: ``None`` (truncate),
            ``"max"``/``"first"``, a dict or a :class:`~crossrank.chunking.Chunking`.
        device: ``None`` or ``"cpu"`` (accepted for sentence-transformers code).
        truncate_query: Default of the calls' ``truncate_query`` (see ``CrossEncoder.score()``).
        check_finite: Scan the weights for NaN/Inf at load and raise
            :class:`~crossrank.CheckpointError` naming the tensor. ``None`` (default): on for
            checkpoints of up to 2^31 weights, off above (where the scan costs seconds). Whatever
            this says, a non-finite logit raises :class:`~crossrank.NumericalError` instead of
            being returned as a score.
    """

    hf_overrides: Optional[Mapping[str, Any]] = None
    max_length: Optional[int] = None
    dtype: str = "auto"
    threads: Optional[int] = None
    template: TemplateLike = None
    activation_fn: ActivationLike = None
    split_special_tokens: bool = False
    prompts: Optional[Mapping[str, str]] = None
    default_prompt_name: Optional[str] = None
    chat_template_kwargs: Optional[Mapping[str, Any]] = None
    chunking: ChunkingLike = None
    device: Optional[str] = None
    check_finite: Optional[bool] = None
    truncate_query: bool = False

    def validate(self) -> None:
        """Raises ValueError/TypeError naming the first option with a bad value (before any file is read)."""
        resolve_dtype(self.dtype)
        if self.check_finite is not None and not isinstance(self.check_finite, bool):
            raise TypeError(f"check_finite must be True, False or None, got {self.check_finite!r}")
        if self.threads is not None:
            self.threads = positive_int(self.threads, "threads", what="an integer in [1, 256]")
            if self.threads > 256:
                raise ValueError(f"threads must be an integer in [1, 256], got {self.threads!r}")
        normalize_activation(self.activation_fn)
        as_chunking(self.chunking)
        check_device(self.device)

    def as_dict(self) -> Dict[str, Any]:
        """The options by name (values as given, not copied): what a pickle stores."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> "LoadOptions":
        """The options of :meth:`as_dict` (an option a pickle lacks keeps its default)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in options.items() if k in names})


@dataclass
class Resolution:
    """Where a model name is looked up (see :func:`crossrank.hub.resolve_model_path`); the token is
    never kept."""

    revision: Optional[str] = None
    cache_folder: Optional[str] = None
    local_files_only: bool = False

    def as_dict(self) -> Dict[str, Any]:
        """The fields by name, as ``resolve_model_path`` takes them."""
        return dataclasses.asdict(self)


def with_head_defaults(spec: ModelSpec, name: str, *, choice: PromptChoice, package: Optional[STPackage],
                       tokenizer: Any) -> ModelSpec:
    """``spec``, or for a causal LM without reranker keys its config with a head: the package's
    LogitScore, the family template's overrides, or (chat prompts, as sentence-transformers does
    for a bare causal LM) ``logit('yes') - logit('no')``; the caller's ``hf_overrides`` win over
    these defaults.

    Args:
        spec: The config as loaded with ``hf_overrides``.
        choice: The prompt chosen from it (:func:`crossrank.prompting.choose_prompt`).
        tokenizer: The ``tokenizers.Tokenizer`` the answer tokens are looked up in.

    Raises:
        UnsupportedModelError: a causal LM whose answer tokens nothing names.
    """
    if spec.head.kind != "none":
        return spec
    if package is not None and package.has_logit_score:
        defaults = head_overrides(package, spec.architecture, tokenizer.id_to_token)
    elif isinstance(choice, Template) and choice.overrides:
        defaults = dict(choice.overrides)
    elif isinstance(choice, ChatPrompting) and None not in (tokenizer.token_to_id("yes"),
                                                             tokenizer.token_to_id("no")):
        defaults = head_overrides(STPackage(true_token_id=tokenizer.token_to_id("yes"),
                                            false_token_id=tokenizer.token_to_id("no")),
                                  spec.architecture, tokenizer.id_to_token)
        logger.info("%s: no head is configured; scoring logit('yes') - logit('no') as "
                    "sentence-transformers does for a causal LM", name)
    else:
        raise UnsupportedModelError(
            f"{name} is a causal LM ({spec.architecture}) and crossrank does not "
            "know which answer tokens score it. Pass hf_overrides as for vLLM, e.g. "
            '{"architectures": ["Qwen3ForSequenceClassification"], '
            '"classifier_from_token": ["no", "yes"], "is_original_qwen3_reranker": true}, '
            "or template='qwen3-reranker' for a Qwen3-Reranker checkpoint")
    return spec.with_defaults(defaults)


def pick_max_length(max_length: Optional[int], *, family: Optional[Template], package: Optional[STPackage],
                    path: Path, max_position_embeddings: int) -> int:
    """The ``max_length`` option, checked, or its default: the family's; for a sentence-transformers
    package its ``max_seq_length``, else the tokenizer's limit capped by the model's; else
    ``min(max_position_embeddings, 8192)``."""
    if max_length is None:
        if family is not None:
            return family.default_max_length
        if package is not None:
            if package.max_seq_length is not None:
                return package.max_seq_length
            limit = read_tokenizer_config(path).get("model_max_length")
            limit = limit if isinstance(limit, int) and not isinstance(limit, bool) else _NO_TOKENIZER_LIMIT
            return min(limit, max_position_embeddings)
        return min(max_position_embeddings, 8192)
    max_length = positive_int(max_length, "max_length")
    if max_length > max_position_embeddings:
        logger.warning("max_length=%d is beyond the model's max_position_embeddings=%d",
                       max_length, max_position_embeddings)
    return max_length


def tokenizer_mismatch(vocab: Mapping[str, int], vocab_size: int, path: Path) -> Optional[str]:
    """What is wrong when the tokenizer can emit ids the embedding table does not hold (a
    checkpoint whose table was cut, under another model's tokenizer), else ``None``."""
    top = max(vocab.values(), default=-1)
    if top < vocab_size:
        return None
    token = next(t for t, i in vocab.items() if i == top)
    return (f"{path}: the tokenizer has token ids up to {top} ({token!r}) but the model's vocab_size is "
            f"{vocab_size}, so its embedding table has no row for them: the tokenizer does not belong to this "
            "checkpoint. Use the tokenizer the checkpoint was trained with.")


def engine_head(spec: ModelSpec, vocab: Mapping[str, int]) -> Tuple[Dict[str, Any], Optional[List[int]]]:
    """The engine's head description and, for a head built from LM rows, the token ids of its rows."""
    if spec.head.kind == "lm_rows":
        rows = list(resolve_classifier_tokens(spec.head.tokens, vocab, vocab_size=spec.vocab_size))
        return {"kind": "lm_rows", "rows": list(rows), "two_way": spec.head.method == "from_2_way_softmax"}, rows
    return {"kind": "score_weight"}, None


@dataclass
class Loaded:
    """The pieces of a loaded model, as :func:`load_model` builds them (see
    :class:`~crossrank.CrossEncoder`'s attributes of the same names)."""

    st_package: Optional[STPackage]
    config: ModelSpec
    prompting: Prompting
    prompts: Dict[str, str]
    default_prompt_name: Optional[str]
    activation_fn: ActivationLike
    truncate_query: bool
    chunking: Optional[Chunking]
    max_length: int
    threads: int
    dtype: str
    head_token_ids: Optional[List[int]]
    engine: Engine
    tokenizer_mismatch: Optional[str] = None


def load_model(name: str, path: Path, options: LoadOptions) -> Loaded:
    """Loads the model in the resolved directory ``path`` (``name``: what it was asked for by):
    config, tokenizer and prompt, the instructions, activation and lengths, and the engine."""
    threads = options.threads if options.threads is not None else default_threads()
    package = read_st_package(path)
    spec = load_config(path, options.hf_overrides)
    encoder = PromptEncoder(path, split_special_tokens=options.split_special_tokens)
    choice = choose_prompt(options.template, options.chat_template_kwargs, path=path, name=name,
                           package=package, config=spec.raw, encoder=encoder)
    spec = with_head_defaults(spec, name, choice=choice, package=package,
                              tokenizer=encoder.tokenizer)
    prompting = make_prompting(choice, encoder, use_sep_token=spec.use_sep_token, package=package,
                               max_positions=spec.max_position_embeddings)
    prompts = dict(package.prompts) if package else {}
    prompts.update(options.prompts or {})
    default_prompt_name = options.default_prompt_name or (package.default_prompt_name if package else None)
    if default_prompt_name is not None and default_prompt_name not in prompts:
        raise ValueError(f"default_prompt_name {default_prompt_name!r} is not one of the prompts {sorted(prompts)}")
    activation = normalize_activation(options.activation_fn)
    if activation is None:  # the saved one; a path crossrank cannot run raises, naming it
        activation = normalize_activation(saved_activation_path(path, package))
    chunking = as_chunking(options.chunking)
    max_length = pick_max_length(options.max_length, family=prompting.family, package=package, path=path,
                                 max_position_embeddings=spec.max_position_embeddings)
    dtype = resolve_dtype(options.dtype)
    if dtype == "int8" and _core.cpu_info()["isa"] not in VNNI_LEVELS:
        warnings.warn(f"dtype='int8' runs without VNNI on this CPU (kernels: {_core.cpu_info()['isa']}), "
                      "slower than float32; use dtype='float32' for speed or 'bfloat16' to halve memory",
                      RuntimeWarning, stacklevel=4)
    vocab = encoder.get_vocab()
    head, rows = engine_head(spec, vocab)
    engine = Engine.load(str(path), spec.core_params(), head, dtype=dtype, threads=threads,
                         check_finite=options.check_finite)
    mismatch = tokenizer_mismatch(vocab, spec.vocab_size, path)
    if mismatch is not None:
        logger.warning("%s Prompts of text that reach those ids are refused; forward_ids with ids below "
                       "vocab_size still runs.", mismatch)
    return Loaded(st_package=package, config=spec, prompting=prompting, prompts=prompts,
                  default_prompt_name=default_prompt_name, activation_fn=activation,
                  truncate_query=bool(options.truncate_query), chunking=chunking, max_length=max_length,
                  threads=threads, dtype=dtype, head_token_ids=rows, engine=engine, tokenizer_mismatch=mismatch)
