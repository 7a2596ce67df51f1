"""Locate a model: a local directory, the Hugging Face cache, or a hub download.

:func:`resolve_model_path` accepts what users type: a path to a checkpoint
directory, or a hub repository id such as ``"Qwen/Qwen3-Reranker-0.6B"``. It
looks, in order, at

1. the local directory (it must hold ``config.json``);
2. the Hugging Face cache (``cache_folder``, else ``HF_HUB_CACHE``, else
   ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``), through
   ``huggingface_hub.try_to_load_from_cache`` (no network);
3. ``huggingface_hub.snapshot_download`` unless ``local_files_only`` or
   ``HF_HUB_OFFLINE`` is set;

and raises :class:`~crossrank.errors.ModelNotFoundError` listing every place it
looked (the cache's state as ``huggingface_hub.scan_cache_dir`` reads it) when
all fail. Only the files crossrank needs are downloaded (configs, safetensors
weights, tokenizer files, templates).

``huggingface_hub`` reads the cache location and the offline flag from the
environment once, at its import; crossrank reads them at every call (as it did
before it used the library), so a process that sets ``HF_HOME`` later is heard.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, List, Optional, Union

from .errors import ModelNotFoundError

__all__ = ["resolve_model_path", "hf_cache_dir", "is_offline", "ALLOW_PATTERNS"]

#: Files fetched by the hub download: configs and indexes, weights, tokenizer files,
#: SentencePiece models, vocabularies/merges, chat/score templates.
ALLOW_PATTERNS: List[str] = ["*.json", "*.safetensors", "tokenizer*", "*.txt", "*.model", "*.jinja"]

_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def _env_true(name: str) -> bool:
    value = os.environ.get(name)
    return value is not None and value.strip().upper() in _TRUE_VALUES


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or the older ``TRANSFORMERS_OFFLINE``) is set to a true value."""
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def hf_cache_dir(cache_folder: Optional[Union[str, os.PathLike]] = None) -> Path:
    """The Hugging Face hub cache directory, resolved as ``huggingface_hub`` does.

    ``cache_folder`` when given; else ``HF_HUB_CACHE`` (or the older
    ``HUGGINGFACE_HUB_CACHE``); else ``HF_HOME/hub``; else
    ``$XDG_CACHE_HOME/huggingface/hub``; else ``~/.cache/huggingface/hub``.
    The environment is read at every call.
    """
    if cache_folder is not None:
        return Path(os.path.expandvars(os.path.expanduser(os.fspath(cache_folder))))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        value = os.environ.get(var)
        if value:
            return Path(os.path.expandvars(os.path.expanduser(value)))
    home = os.environ.get("HF_HOME")
    if not home:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        home = os.path.join(xdg, "huggingface")
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def _is_repo_id(name: str) -> bool:
    """An ``org/name`` id as the hub validates it."""
    # Imported by name: ``huggingface_hub.utils`` is not an attribute of the package until
    # something imports it (a fresh notebook kernel has not).
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _check_revision(revision: Optional[str]) -> str:
    rev = "main" if revision is None else revision
    if not isinstance(rev, str) or not rev or rev.startswith("/") or "\\" in rev or ".." in rev.split("/"):
        raise ModelNotFoundError(
            f"revision {revision!r} is not a valid revision: give a branch or tag name (e.g. 'main'), "
            f"or a 40-character commit hash."
        )
    return rev


def _from_cache(hf: Any, cache: Path, repo_id: str, revision: str, looked: List[str]) -> Optional[Path]:
    """The cached snapshot of ``repo_id`` at ``revision`` holding ``config.json``, or ``None``."""
    found = hf.try_to_load_from_cache(repo_id, "config.json", cache_dir=str(cache), revision=revision)
    if isinstance(found, str):
        return Path(found).parent
    looked.append("Hugging Face cache: " + _cache_miss(hf, cache, repo_id, revision))
    return None


def _cache_miss(hf: Any, cache: Path, repo_id: str, revision: str) -> str:
    """Why the cache holds no usable snapshot, as ``huggingface_hub.scan_cache_dir`` sees it."""
    if not cache.is_dir():
        return f"{cache} does not exist"
    info = hf.scan_cache_dir(cache)
    folder = "models--" + repo_id.replace("/", "--")
    for warning in info.warnings:
        if folder in str(warning):
            return f"{cache / folder} is damaged: {warning} Download the model again."
    repo = next((r for r in info.repos if r.repo_type == "model" and r.repo_id == repo_id), None)
    if repo is None:
        return f"{cache / folder} does not exist"
    commit = next((rev for rev in repo.revisions if revision in rev.refs or rev.commit_hash == revision), None)
    if commit is None:
        what = "commit" if _COMMIT.match(revision) else "ref"
        return f"no {what} {revision!r} in {repo.repo_path} (revision {revision!r} was never downloaded)"
    return f"{commit.snapshot_path} has no config.json (missing or partial download)"


def resolve_model_path(
    model_name_or_path: Union[str, os.PathLike],
    *,
    revision: Optional[str] = None,
    cache_folder: Optional[str] = None,
    token: Union[str, bool, None] = None,
    local_files_only: bool = False,
) -> Path:
    """Return the directory holding the model's ``config.json`` and weights.

    Args:
        model_name_or_path: a local checkpoint directory, or a hub repository id
            ``"org/name"``. An ``os.PathLike`` is always treated as a path.
        revision: branch, tag or commit hash of a hub repository (default
            ``"main"``); ignored for a local directory.
        cache_folder: the hub cache directory to use instead of the default.
        token: hub token for private or gated repositories (passed to
            ``huggingface_hub``; ``None`` uses the saved login).
        local_files_only: never download; use the local directory or the cache.

    Raises:
        ModelNotFoundError: the directory lacks ``config.json``, the string is
            neither a directory nor a repository id, or the model is neither
            cached nor downloadable. The message lists where it looked and how
            to fix it.
    """
    is_pathlike = not isinstance(model_name_or_path, str)
    try:
        name = os.fspath(model_name_or_path)
    except TypeError:
        raise ModelNotFoundError(
            f"model_name_or_path must be a string or a path, got {type(model_name_or_path).__name__}."
        ) from None
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    if not name:
        raise ModelNotFoundError(
            "model_name_or_path is empty: pass a model directory or a hub id like 'org/name'."
        )

    local = Path(os.path.expanduser(name))
    if local.is_dir():
        if (local / "config.json").is_file():
            return local.resolve()
        raise ModelNotFoundError(
            f"{local} is a directory but has no config.json, so it is not a model checkpoint. Pass the "
            f"directory that holds config.json and the *.safetensors weights (for a cache snapshot: "
            f"models--org--name/snapshots/<commit>)."
        )
    if local.exists():
        raise ModelNotFoundError(
            f"{local} is a file, not a model directory; pass the directory that contains config.json."
        )

    neither = ModelNotFoundError(
        f"{name!r} is neither an existing directory nor a Hugging Face repository id. Pass the path "
        f"of a local checkpoint directory (holding config.json), or a hub id of the form 'org/name' "
        f"(e.g. 'Qwen/Qwen3-Reranker-0.6B')."
    )
    if is_pathlike or name.count("/") != 1:
        raise neither
    try:
        import huggingface_hub as hf
    except ImportError:
        raise ModelNotFoundError(
            f"cannot look up {name!r}: huggingface_hub is not installed, and crossrank reads the Hugging "
            f"Face cache and downloads through it. Reinstall crossrank's dependencies "
            f"(`pip install huggingface_hub`), or pass the path of a local checkpoint directory."
        ) from None
    if not _is_repo_id(name):
        raise neither

    rev = _check_revision(revision)
    looked: List[str] = [f"local directory: {local} does not exist"]
    cache = hf_cache_dir(cache_folder)
    found = _from_cache(hf, cache, name, rev, looked)
    if found is not None:
        return found

    fixes = [
        f"download it first: `huggingface-cli download {name}"
        + (f" --revision {rev}" if revision else "")
        + (f" --cache-dir {cache}" if cache_folder else "")
        + "`",
        "or pass the path of a local checkpoint directory",
    ]
    offline_reason = None
    if local_files_only:
        offline_reason = "local_files_only=True"
    elif is_offline():
        offline_reason = "HF_HUB_OFFLINE is set"

    if offline_reason is not None:
        looked.append(f"hub download: skipped ({offline_reason})")
        fixes.append("or allow downloads (local_files_only=False, unset HF_HUB_OFFLINE)")
    else:
        try:
            path = hf.snapshot_download(
                repo_id=name,
                revision=revision,
                cache_dir=str(cache),
                token=token,
                allow_patterns=ALLOW_PATTERNS,
            )
        except Exception as e:  # huggingface_hub raises many types (HTTP, auth, offline, OS)
            raise ModelNotFoundError(
                f"could not download {name!r} (revision {rev!r}) from the Hugging Face hub: "
                f"{type(e).__name__}: {e}. Looked first at: " + "; ".join(looked) + ". "
                "Check the repository id and revision, your network, and for private or gated "
                "models your access and token (token=... or `huggingface-cli login`)."
            ) from e
        snapshot = Path(path)
        if not (snapshot / "config.json").is_file():
            raise ModelNotFoundError(
                f"downloaded {name!r} (revision {rev!r}) to {snapshot}, but it has no config.json: "
                f"the repository is not a transformers checkpoint crossrank can load."
            )
        return snapshot

    raise ModelNotFoundError(
        f"model {name!r} (revision {rev!r}) was not found. Looked at:\n  - "
        + "\n  - ".join(looked)
        + "\nTo fix: "
        + "; ".join(fixes)
        + "."
    )
