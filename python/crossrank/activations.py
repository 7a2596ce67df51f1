"""Score activations: crossrank's names, torch's ``torch.nn`` activation modules computed in NumPy,
the dotted paths sentence-transformers saves, and callables.

torch is never imported to recognise a module: ``torch.nn.Tanh()`` is known by its class name and
module, and computed here in NumPy (float64, returned as float32 by the caller). An object from
torch that is not one of these (a custom ``nn.Module``, ``torch.sigmoid``,
``functools.partial(torch.softmax, dim=-1)``) is called on a float32 ``torch.Tensor``, as
sentence-transformers calls it, which imports torch because the caller already uses it. Any other
callable gets a NumPy array; where NumPy cannot run it (``lambda x: x.sigmoid()``) and torch is
installed, it is called on a float32 tensor instead.

Element-wise: Sigmoid, Tanh, ReLU, ReLU6, GELU (``approximate="none"``/``"tanh"``), SiLU, Mish,
Identity, Softplus, Softsign, LeakyReLU, ELU, CELU, SELU, Hardtanh, Hardsigmoid, Hardswish,
LogSigmoid, Tanhshrink, Softshrink, Hardshrink; over the labels: Softmax, LogSoftmax, Softmin, with
torch's implicit-dim rule (``dim=None`` on a 2-D ``[pairs, labels]`` array is dim 1). A ``dim`` that
mixes pairs (``dim=0``) is refused: its scores would depend on the batch.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy as np

from .errors import UnsupportedModelError

__all__ = ["ActivationLike", "NumpyActivation", "ACTIVATIONS", "normalize_activation", "activation_from_path",
           "activation_path", "apply_activation", "default_activation", "activate_logits"]

ActivationLike = Union[None, str, Callable[[np.ndarray], np.ndarray]]

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
_erf = np.frompyfunc(math.erf, 1, 1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # = 1 / (1 + exp(-x)), without overflow


def _softplus(x: np.ndarray, beta: float = 1.0, threshold: float = 20.0) -> np.ndarray:
    bx = beta * x
    with np.errstate(over="ignore"):
        soft = np.logaddexp(0.0, bx) / beta
    return np.where(bx > threshold, x, soft)


def _relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def _gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if approximate != "none":
        raise ValueError(f"GELU(approximate={approximate!r}): torch knows 'none' and 'tanh'")
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def _label_dim(x: np.ndarray, dim: Optional[int], name: str) -> int:
    if dim is None:  # torch's _get_softmax_dim: 0 for 0-, 1- and 3-D inputs, else 1
        dim = 0 if x.ndim in (0, 1, 3) else 1
    if dim not in (x.ndim - 1, -1):
        raise ValueError(f"torch.nn.{name}(dim={dim}) would mix the scores of different pairs (a result that depends "
                         "on the batch); use dim=-1, over the labels")
    return -1


def _softmax(x: np.ndarray, dim: Optional[int] = None) -> np.ndarray:
    d = _label_dim(x, dim, "Softmax")
    e = np.exp(x - x.max(axis=d, keepdims=True))
    return e / e.sum(axis=d, keepdims=True)


def _log_softmax(x: np.ndarray, dim: Optional[int] = None) -> np.ndarray:
    d = _label_dim(x, dim, "LogSoftmax")
    shifted = x - x.max(axis=d, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=d, keepdims=True))


def _softmin(x: np.ndarray, dim: Optional[int] = None) -> np.ndarray:
    _label_dim(x, dim, "Softmin")
    return _softmax(-x, -1)


# crossrank's name -> (torch class name, function, parameters with torch's defaults)
ACTIVATIONS: Dict[str, Tuple[str, Callable[..., np.ndarray], Dict[str, Any]]] = {
    "sigmoid": ("Sigmoid", _sigmoid, {}),
    "tanh": ("Tanh", np.tanh, {}),
    "relu": ("ReLU", lambda x: np.maximum(x, 0.0), {}),
    "relu6": ("ReLU6", _relu6, {}),
    "gelu": ("GELU", _gelu, {"approximate": "none"}),
    "silu": ("SiLU", lambda x: x * _sigmoid(x), {}),
    "mish": ("Mish", lambda x: x * np.tanh(_softplus(x)), {}),
    "identity": ("Identity", lambda x: x, {}),
    "softplus": ("Softplus", _softplus, {"beta": 1.0, "threshold": 20.0}),
    "softsign": ("Softsign", lambda x: x / (1.0 + np.abs(x)), {}),
    "leaky_relu": ("LeakyReLU", lambda x, negative_slope: np.where(x > 0, x, x * negative_slope),
                   {"negative_slope": 0.01}),
    "elu": ("ELU", lambda x, alpha: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0))), {"alpha": 1.0}),
    "celu": ("CELU", lambda x, alpha: np.maximum(x, 0.0) + np.minimum(0.0, alpha * np.expm1(np.minimum(x, 0) / alpha)),
             {"alpha": 1.0}),
    "selu": ("SELU", lambda x: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0.0))), {}),
    "hardtanh": ("Hardtanh", lambda x, min_val, max_val: np.clip(x, min_val, max_val),
                 {"min_val": -1.0, "max_val": 1.0}),
    "hardsigmoid": ("Hardsigmoid", lambda x: _relu6(x + 3.0) / 6.0, {}),
    "hardswish": ("Hardswish", lambda x: x * _relu6(x + 3.0) / 6.0, {}),
    "logsigmoid": ("LogSigmoid", lambda x: np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x))), {}),
    "tanhshrink": ("Tanhshrink", lambda x: x - np.tanh(x), {}),
    "softshrink": ("Softshrink", lambda x, lambd: np.where(x > lambd, x - lambd, np.where(x < -lambd, x + lambd, 0.0)),
                   {"lambd": 0.5}),
    "hardshrink": ("Hardshrink", lambda x, lambd: np.where(np.abs(x) > lambd, x, 0.0), {"lambd": 0.5}),
    "softmax": ("Softmax", _softmax, {"dim": None}),
    "log_softmax": ("LogSoftmax", _log_softmax, {"dim": None}),
    "softmin": ("Softmin", _softmin, {"dim": None}),
}
_BY_TORCH_NAME = {torch_name: name for name, (torch_name, _, _) in ACTIVATIONS.items()}
# torch's own module paths, for saving a package (Identity lives in torch.nn.modules.linear).
_TORCH_MODULE = {"Identity": "torch.nn.modules.linear"}


@dataclass(frozen=True)
class NumpyActivation:
    """A torch activation module with non-default arguments (``LeakyReLU(0.2)``), computed in NumPy.

    Attributes:
        name: crossrank's name (a key of :data:`ACTIVATIONS`).
        params: The module's arguments, as ``(name, value)`` pairs.
    """

    name: str
    params: Tuple[Tuple[str, Any], ...] = ()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ACTIVATIONS[self.name][1](np.asarray(x, dtype=np.float64), **dict(self.params))

    @property
    def torch_path(self) -> str:
        """The dotted path of the torch class."""
        return activation_path(self.name)


def _is_torch_object(fn: Any) -> bool:
    return any(getattr(c, "__module__", "").split(".")[0] == "torch" for c in type(fn).__mro__)


def _is_torch_function(fn: Any) -> bool:
    """A function of torch's (``torch.sigmoid``, ``torch.nn.functional.softmax``, ``torch.Tensor.sigmoid``),
    alone or in a ``functools.partial``: known by its module, without importing torch."""
    target = fn.func if isinstance(fn, functools.partial) else fn
    module = getattr(target, "__module__", None) or getattr(getattr(target, "__objclass__", None), "__module__", None)
    return isinstance(module, str) and module.split(".")[0] == "torch"


class _TorchCall:
    """A torch module or function crossrank does not compute itself, called on a float32 tensor of
    the scores (what sentence-transformers passes an activation)."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch  # the caller passed a torch object, so torch is installed and in use

        with torch.no_grad():
            out = self.module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return out.detach().cpu().float().numpy() if hasattr(out, "detach") else np.asarray(out)

    def __repr__(self) -> str:
        return f"torch callable {self.module!r}"

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_TorchCall, (self.module,))


def normalize_activation(fn: Any) -> ActivationLike:
    """The activation ``fn`` means, as ``None``, a name of :data:`ACTIVATIONS`, or a callable on a
    float64 NumPy array.

    Accepts ``None``, a name (``"sigmoid"``, ``"identity"``, ``"tanh"``, ...), a torch dotted path
    (``"torch.nn.Tanh"``), a ``torch.nn`` activation module (recognised without importing torch;
    its arguments are read off it), any other torch module or torch function (called on a tensor)
    or another callable (called on a NumPy array; see :func:`apply_activation`).

    Raises:
        ValueError: an unknown name or a ``dim`` that mixes pairs.
        UnsupportedModelError: a dotted path crossrank cannot run.
    """
    if fn is None:
        return None
    if isinstance(fn, str):
        if fn in ACTIVATIONS:
            return fn
        if "." in fn:
            return activation_from_path(fn)
        raise ValueError(f"activation_fn {fn!r} is not known; use None, one of {', '.join(sorted(ACTIVATIONS))}, "
                         "a torch.nn activation module or a callable on a NumPy array")
    cls = type(fn)
    if _is_torch_object(fn) and cls.__name__ in _BY_TORCH_NAME and cls.__module__.startswith("torch.nn"):
        name = _BY_TORCH_NAME[cls.__name__]
        defaults = ACTIVATIONS[name][2]
        params = tuple((k, getattr(fn, k, v)) for k, v in defaults.items())
        if name in ("softmax", "log_softmax", "softmin"):
            _label_dim(np.zeros((1, 1)), dict(params)["dim"], cls.__name__)  # refuse dim=0 at once
        if name == "gelu":
            _gelu(np.zeros(1), dict(params)["approximate"])
        return name if all(v == defaults[k] for k, v in params) else NumpyActivation(name, params)
    if callable(fn) and (_is_torch_object(fn) or _is_torch_function(fn)):
        return _TorchCall(fn)
    if callable(fn):
        return fn
    raise ValueError(f"activation_fn must be None, a name ({', '.join(sorted(ACTIVATIONS))}), a torch.nn activation "
                     f"module or a callable, got {fn!r}")


def activation_from_path(path: str) -> str:
    """crossrank's name for a torch activation saved by its dotted path
    (``"torch.nn.modules.activation.Tanh"`` -> ``"tanh"``), as sentence-transformers saves them.

    Raises:
        UnsupportedModelError: the path is not one of torch's activations that crossrank computes
            (crossrank never imports code named by a model's files).
    """
    module, _, cls = path.rpartition(".")
    if (module == "torch.nn" or module.startswith("torch.nn.modules")) and cls in _BY_TORCH_NAME:
        return _BY_TORCH_NAME[cls]
    raise UnsupportedModelError(
        f"activation_fn {path!r} is not one of torch.nn's activations that crossrank computes "
        f"({', '.join(sorted(_BY_TORCH_NAME))}); crossrank does not import code named by a model's files. Pass "
        "activation_fn= (a name, a torch module or a callable) to choose the activation")


def activation_path(name: str) -> str:
    """The torch dotted path sentence-transformers saves for crossrank's activation ``name``."""
    torch_name = ACTIVATIONS[name][0]
    return f"{_TORCH_MODULE.get(torch_name, 'torch.nn.modules.activation')}.{torch_name}"


def default_activation(num_labels: int, defaults: str) -> str:
    """The activation used when neither the call nor the model sets one: one label ``"sigmoid"``;
    several, ``"identity"`` (sentence-transformers' ``CrossEncoder``) or ``"softmax"`` (vLLM)."""
    if defaults not in ("sentence-transformers", "vllm"):
        raise ValueError(f"defaults must be 'sentence-transformers' or 'vllm', got {defaults!r}")
    if num_labels == 1:
        return "sigmoid"
    return "identity" if defaults == "sentence-transformers" else "softmax"


def _call_user_function(fn: Callable[[Any], Any], x: np.ndarray) -> Any:
    """``fn(x)``; where NumPy cannot run ``fn`` (written for torch tensors: ``x.sigmoid()``,
    ``torch.sigmoid(x)``) and torch is installed, ``fn`` of a float32 tensor, as sentence-transformers
    calls it."""
    try:
        return fn(x)
    except (TypeError, AttributeError) as numpy_error:
        try:
            import torch  # noqa: F401  (only for a callable that NumPy cannot run)
        except ImportError:
            raise TypeError(f"activation_fn {fn!r} fails on the scores as a NumPy array ({type(numpy_error).__name__}: "
                            f"{numpy_error}); without torch installed, crossrank calls it on a NumPy array only. "
                            "Use a name such as 'sigmoid' or a function of NumPy arrays") from numpy_error
        try:
            return _TorchCall(fn)(x)
        except Exception as torch_error:
            raise TypeError(f"activation_fn {fn!r} fails on the scores both as a NumPy array "
                            f"({type(numpy_error).__name__}: {numpy_error}) and as a float32 torch tensor "
                            f"({type(torch_error).__name__}: {torch_error})") from torch_error


def apply_activation(x: np.ndarray, fn: ActivationLike) -> np.ndarray:
    """``fn`` (normalized, not ``None``) applied to ``x`` (``[pairs, labels]``, float64); float64 out."""
    if isinstance(fn, str):
        _, function, defaults = ACTIVATIONS[fn]
        return np.asarray(function(x, **defaults), dtype=np.float64)
    known = isinstance(fn, (NumpyActivation, _TorchCall))
    out = np.asarray(fn(x) if known else _call_user_function(fn, x), dtype=np.float64)  # type: ignore[misc]
    if out.ndim == 0 or out.shape[0] != x.shape[0]:
        raise ValueError(f"activation_fn returned shape {out.shape} for {x.shape[0]} inputs; it must keep one row "
                         "per pair")
    return out


def activate_logits(raw: np.ndarray, fn: ActivationLike, *, logit_mean: Optional[float] = None,
             logit_sigma: Optional[float] = None) -> np.ndarray:
    """Scores from raw logits ``[n, labels]``: ``logit_mean`` subtracted and ``logit_sigma`` divided
    first, then ``fn`` (normalized, not ``None``), in float64; float32 out, ``[n]`` for one label."""
    x = np.asarray(raw, dtype=np.float64)
    if logit_mean is not None:
        x = x - logit_mean
    if logit_sigma is not None:
        x = x / logit_sigma
    x = apply_activation(x, fn).astype(np.float32)
    return x[:, 0] if x.ndim == 2 and x.shape[1] == 1 else x
