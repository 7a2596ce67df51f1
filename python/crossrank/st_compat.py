"""What sentence-transformers 6 code passes to and reads from a ``CrossEncoder``, for crossrank's.

* the deprecated arguments it still accepts, with its warnings: ``model_name``, ``cache_dir``,
  ``default_activation_function`` and the old positional ``num_labels, max_length, activation_fn,
  device`` at construction; ``sentences``, ``activation_fct``, ``num_workers`` on ``predict``/``rank``,
  and ``convert_to_numpy``/``convert_to_tensor``/``apply_softmax`` on ``rank`` (ignored there);
* the activation a saved model names (``config_sentence_transformers.json``'s ``activation_fn``,
  ``config.json``'s ``sentence_transformers.activation_fn`` or ``sbert_ce_default_activation_function``);
* ``predict``'s return types, ``model.tokenizer.model_max_length`` and ``model_card_data``.

Saving a package sentence-transformers loads is :mod:`crossrank.st_save`; multi-process prediction
is :mod:`crossrank.multiprocess`.
"""
from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
from copy import copy
from dataclasses import dataclass, field
from pathlib import Path
import os
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, TypeVar, Union

import numpy as np

from .activations import ActivationLike
from .config import read_json_file
from .errors import ConfigError
from .integers import positive_int
from .multiprocess import start_pool, stop_pool
from .st_package import STPackage
from .st_save import save_package

__all__ = ["st_init_args", "st_call_args", "saved_activation_path", "convert_scores", "is_singular_input",
           "TokenizerAdapter", "ModelCardData", "SentenceTransformersSurface", "warn_once"]

logger = logging.getLogger("crossrank")

F = TypeVar("F", bound=Callable[..., Any])
_warned: Set[str] = set()

# sentence-transformers' CrossEncoder.__init__ renames (util/decorators.py).
_INIT_RENAMES = {"model_name": "model_name_or_path", "automodel_args": "model_kwargs",
                 "tokenizer_args": "processor_kwargs", "tokenizer_kwargs": "processor_kwargs",
                 "config_args": "config_kwargs", "cache_dir": "cache_folder",
                 "default_activation_function": "activation_fn"}
# sentence-transformers' constructor arguments that only reach torch/transformers: taken at the values
# that change nothing, refused with the reason otherwise (crossrank loads and runs the checkpoint itself).
_INIT_NO_OPS: Dict[str, Tuple[Tuple[Any, ...], str]] = {
    "modules": ((None,), "crossrank builds the model from a checkpoint, not from modules"),
    "model_kwargs": ((None, {}), "they are transformers' from_pretrained options; crossrank reads the "
                                 "checkpoint itself (choose the precision with dtype=)"),
    "processor_kwargs": ((None, {}), "crossrank's tokenization is fixed by the model; give the token budget as "
                                     "max_length= and chat template variables as chat_template_kwargs="),
    "config_kwargs": ((None, {}), "crossrank takes config changes as hf_overrides= (vLLM's semantics)"),
    "backend": (("torch",), "crossrank runs its own C engine on the CPU"),
    "keep_in_fp32_modules": ((None, []), "crossrank's precision is chosen with dtype="),
}
# Positional arguments after the model name before sentence-transformers 5.4 made them keyword-only.
_INIT_POSITIONAL = ("num_labels", "max_length", "activation_fn", "device")


def warn_once(message: str) -> None:
    """Logs ``message`` as a warning on the ``crossrank`` logger, once per process (as
    sentence-transformers' ``logger.warning_once``)."""
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


def st_init_args(init: F) -> F:
    """``CrossEncoder.__init__`` wrapper taking sentence-transformers' deprecated arguments, with its
    warnings: the old positional ``num_labels, max_length, activation_fn, device``, the renamed
    ``model_name``, ``automodel_args``, ``tokenizer_args``, ``config_args``, ``cache_dir``,
    ``default_activation_function``, and ``classifier_dropout`` (training only: no effect). Its
    torch/transformers arguments (``model_kwargs``, ``processor_kwargs``, ``config_kwargs``,
    ``backend``, ``keep_in_fp32_modules``, ``modules``) are taken at the values that change nothing
    and refused otherwise, naming the crossrank option to use; ``trust_remote_code`` is taken
    (crossrank never runs a model's code). ``num_labels`` is checked against the loaded model
    (crossrank does not build new heads)."""

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > 1:
            for name, value in zip(_INIT_POSITIONAL, args[1:]):
                logger.warning(f"Passing `{name}` as a positional argument to CrossEncoder is deprecated. "
                               f"Please use `{name}={value!r}` as a keyword argument instead.")
                kwargs.setdefault(name, value)
            if len(args) > 1 + len(_INIT_POSITIONAL):
                raise TypeError(f"CrossEncoder takes at most {1 + len(_INIT_POSITIONAL)} positional arguments "
                                f"(model_name_or_path, then the deprecated {', '.join(_INIT_POSITIONAL)}), "
                                f"got {len(args)}")
            args = args[:1]
        for old, new in _INIT_RENAMES.items():
            if old in kwargs:
                value = kwargs.pop(old)
                warn_once(f"The CrossEncoder `{old}` argument was renamed and is now deprecated. "
                          f"Please use `{new}` instead.")
                if new not in kwargs and not (new == "model_name_or_path" and args):
                    kwargs[new] = value
        if "classifier_dropout" in kwargs:  # dropout acts in training only: any value changes no score
            value = kwargs.pop("classifier_dropout")
            logger.warning("The CrossEncoder `classifier_dropout` argument is deprecated. Please use "
                           f"`config_kwargs={{'classifier_dropout': {value}}}` instead.")
        kwargs.pop("trust_remote_code", None)  # crossrank never runs a model's code: nothing to allow
        for name, (no_ops, why) in _INIT_NO_OPS.items():
            if name in kwargs and kwargs.pop(name) not in no_ops:
                raise ValueError(f"CrossEncoder({name}=...) is not supported: {why}. Leave it out (or pass "
                                 f"{' or '.join(map(repr, no_ops))})")
        num_labels = kwargs.pop("num_labels", None)
        init(self, *args, **kwargs)
        if num_labels is not None and num_labels != self.num_labels:
            raise ValueError(f"num_labels={num_labels!r}, but {self.model_name_or_path} scores {self.num_labels} "
                             "label(s); crossrank runs the model's own head (leave num_labels out)")

    return wrapper  # type: ignore[return-value]


def st_call_args(method: F) -> F:
    """``predict``/``rank`` wrapper taking sentence-transformers' deprecated keyword arguments, with its
    warnings: ``sentences`` (-> ``inputs``), ``activation_fct`` (-> ``activation_fn``), ``num_workers``
    (no effect), and on a method without them ``convert_to_numpy``/``convert_to_tensor`` and
    ``apply_softmax`` (no effect: ``rank`` returns Python floats of one label). ``predict`` takes
    ``processing_kwargs`` as ``None`` or ``{}`` (a per-call tokenization change is refused)."""
    name = method.__name__
    parameters = inspect.signature(method).parameters
    dropped = [p for p in ("convert_to_numpy", "convert_to_tensor", "apply_softmax") if p not in parameters]

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        for old, new in (("sentences", "inputs"), ("activation_fct", "activation_fn")):
            if old in kwargs and new in parameters:
                value = kwargs.pop(old)
                warn_once(f"The `{old}` argument was renamed and is now deprecated. Please use `{new}` instead.")
                if new in kwargs or (new == "inputs" and args):
                    continue
                kwargs[new] = value
        if name == "predict" and "processing_kwargs" in kwargs and kwargs.pop("processing_kwargs") not in (None, {}):
            raise ValueError("predict(processing_kwargs=...) is not supported: crossrank's tokenization is fixed "
                             "at load (max_length=, chat_template_kwargs=); leave it out or pass None")
        if "num_workers" in kwargs:
            kwargs.pop("num_workers")
            warn_once(f"The CrossEncoder.{name} `num_workers` argument is deprecated and has no effect. "
                      "It will be removed in a future version.")
        for param in dropped:
            if param in kwargs:
                kwargs.pop(param)
                if param == "apply_softmax":
                    warn_once(f"The CrossEncoder.{name} `apply_softmax` argument is deprecated and has no effect, "
                              f"as `{name}` only supports models with `num_labels=1`. It will be removed in a "
                              "future version.")
                else:
                    warn_once(f"The CrossEncoder.{name} `{param}` argument is deprecated and has no effect, as "
                              f"`{name}` always returns Python floats. It will be removed in a future version.")
        return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def saved_activation_path(model_dir: Path, package: Optional[STPackage]) -> Optional[str]:
    """The activation a saved model names, as sentence-transformers finds it: the package's
    ``config_sentence_transformers.json``, else ``config.json``'s ``sentence_transformers.activation_fn``,
    else its ``sbert_ce_default_activation_function`` (sentence-transformers < 4); ``None`` for none."""
    if package is not None and package.activation_fn is not None:
        return package.activation_fn
    try:
        config = read_json_file(Path(model_dir) / "config.json")
    except ConfigError:
        return None  # load_config reports a broken config.json
    if not isinstance(config, dict):
        return None
    st = config.get("sentence_transformers")
    if isinstance(st, dict) and isinstance(st.get("activation_fn"), str):
        return st["activation_fn"]
    old = config.get("sbert_ce_default_activation_function")
    return old if isinstance(old, str) else None


def _torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def convert_scores(scores: np.ndarray, single: bool, convert_to_numpy: bool, convert_to_tensor: bool) -> Any:
    """``predict``'s result as sentence-transformers returns it: a ``torch.Tensor``
    (``convert_to_tensor``), a NumPy array (``convert_to_numpy``; ``[]`` gives an empty float64
    array), else a list of float32 0-dim torch tensors (rows for several labels), or of NumPy
    float32 scalars/rows where torch is not installed; one item for a single pair. No pairs give
    shape ``[0]`` (float32 tensor, float64 array) whatever the number of labels."""
    if convert_to_tensor:
        try:
            import torch
        except ImportError as exc:
            raise ImportError("convert_to_tensor=True returns a torch.Tensor and needs torch installed; "
                              "use convert_to_numpy=True (the default) for a NumPy array") from exc
        # no pairs: sentence-transformers' torch.tensor([]), shape [0] whatever the labels
        out: Any = torch.from_numpy(scores if len(scores) else np.empty(0, dtype=np.float32))
    elif convert_to_numpy:
        out = scores if len(scores) else np.array([])
    elif len(scores) and _torch_available():
        import torch

        out = list(torch.from_numpy(scores))
    else:
        out = list(scores)
    return out[0] if single else out


def is_singular_input(inputs: Any) -> bool:
    """Whether ``inputs`` is one pair rather than a list of pairs (sentence-transformers' rule: a
    list or tuple whose first item is not a list or tuple, or a 1-D NumPy string array)."""
    if isinstance(inputs, (list, tuple)):
        return len(inputs) > 0 and not isinstance(inputs[0], (list, tuple))
    if isinstance(inputs, np.ndarray) and inputs.dtype.kind in ("U", "O"):
        return inputs.size > 0 and inputs.ndim < 2
    return True


class TokenizerAdapter:
    """The model's ``tokenizers.Tokenizer`` with transformers' ``model_max_length`` on top.

    ``model_max_length`` reads and sets the model's ``max_length`` (the token budget of one prompt),
    as sentence-transformers code does through ``model.tokenizer.model_max_length``; every other
    attribute is the ``tokenizers.Tokenizer``'s (``encode``, ``token_to_id``, ...).
    """

    def __init__(self, tokenizer: Any, owner: Any) -> None:
        object.__setattr__(self, "_tokenizer", tokenizer)
        object.__setattr__(self, "_owner", owner)

    @property
    def model_max_length(self) -> int:
        """The model's ``max_length``."""
        return int(self._owner.max_length)

    @model_max_length.setter
    def model_max_length(self, value: int) -> None:
        self._owner.max_seq_length = value

    @property
    def backend_tokenizer(self) -> Any:
        """The ``tokenizers.Tokenizer`` itself (transformers' name for it)."""
        return self._tokenizer

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_tokenizer", "_owner"):
            raise AttributeError(name)
        return getattr(self._tokenizer, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "model_max_length":
            object.__setattr__(self, name, value)  # the property
        else:
            setattr(self._tokenizer, name, value)

    def __repr__(self) -> str:
        return f"TokenizerAdapter(model_max_length={self.model_max_length})"


@dataclass
class ModelCardData:
    """What sentence-transformers' evaluators and model-card code read and write on
    ``model.model_card_data``: the metrics evaluators store (``set_evaluation_metrics``), the
    training log, and the model's identity. crossrank writes no model card; the data is kept for the
    caller (e.g. ``CrossEncoderRerankingEvaluator`` runs and stores its metrics here)."""

    language: Optional[List[str]] = None
    license: Optional[str] = None
    model_name: Optional[str] = None
    model_id: Optional[str] = None
    base_model: Optional[str] = None
    base_model_revision: Optional[str] = None
    tags: List[str] = field(default_factory=lambda: ["sentence-transformers", "cross-encoder", "reranker",
                                                     "crossrank"])
    eval_results_dict: Dict[Any, Dict[str, Any]] = field(default_factory=dict)
    training_logs: List[Dict[str, Any]] = field(default_factory=list)

    def set_evaluation_metrics(self, evaluator: Any, metrics: Dict[str, Any], epoch: int = 0, step: int = 0) -> None:
        """Stores an evaluator's metrics (and its primary metrics in the training log), as
        sentence-transformers' model card data does."""
        self.eval_results_dict[evaluator] = copy(metrics)
        primary = getattr(evaluator, "primary_metric", None)
        if not primary:
            return
        sub = getattr(evaluator, "evaluators", None)
        names = [e.primary_metric for e in sub] if sub else ([primary] if isinstance(primary, str) else list(primary))
        logged = {k: v for k, v in metrics.items() if k in names}
        if self.training_logs and self.training_logs[-1]["Step"] == step:
            self.training_logs[-1].update(logged)
        else:
            self.training_logs.append({"Epoch": epoch, "Step": step, **logged})

    def set_base_model(self, model_id: str, revision: Optional[str] = None) -> None:
        """Records the model the scores come from."""
        self.base_model, self.base_model_revision = model_id, revision


class SentenceTransformersSurface:
    """sentence-transformers' ``CrossEncoder`` members besides scoring: the tokenizer view,
    ``max_seq_length``, deprecated names, modalities, saving and multi-process pools. Mixed into
    :class:`crossrank.CrossEncoder`, whose public attributes it reads."""

    max_length: int
    activation_fn: ActivationLike
    prompting: Any
    template: Any
    options: Any
    chat_template: Any
    head_token_ids: Optional[List[int]]

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
        self.max_length = positive_int(value, "max_seq_length")

    def get_max_seq_length(self) -> int:
        """:attr:`max_seq_length` (sentence-transformers' deprecated getter)."""
        return self.max_seq_length

    @property
    def device(self) -> Any:
        """Where the model runs: ``torch.device("cpu")`` as sentence-transformers returns it (torch
        is imported here, for code that reads it), or the string ``"cpu"`` without torch."""
        if not _torch_available():
            return "cpu"
        import torch

        return torch.device("cpu")

    def to(self, *args: Any, **kwargs: Any) -> "SentenceTransformersSurface":
        """``self`` for the CPU (``"cpu"``, ``torch.device("cpu")``), as sentence-transformers code moves
        a model; any other device or dtype is refused (crossrank runs on the CPU in the ``dtype`` of
        the load)."""
        targets = [*args, *(kwargs[k] for k in ("device", "dtype", "tensor") if kwargs.get(k) is not None)]
        for target in targets:
            if str(target) != "cpu":
                raise ValueError(f"crossrank runs on the CPU in the dtype chosen at load (dtype=); "
                                 f"to({target!r}) is not available")
        return self

    def eval(self) -> "SentenceTransformersSurface":
        """``self``: crossrank only runs inference."""
        return self

    @property
    def default_activation_function(self) -> ActivationLike:
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
                     message_format=chat.format if chat is not None else None, head_token_ids=self.head_token_ids,
                     family=self.template, activation=self.activation_fn, overrides=self.options.hf_overrides)

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
