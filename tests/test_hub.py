"""Tests of model resolution (crossrank.hub). Never touches the network."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from crossrank import hub
from crossrank.errors import CrossrankError, ModelNotFoundError
from crossrank.hub import hf_cache_dir, resolve_model_path

REPO = "Qwen/Qwen3-Reranker-0.6B"
COMMIT = "a" * 40
OTHER = "b" * 40


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No user cache, no offline flag, and a hub download that fails loudly if reached."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "HF_HUB_OFFLINE",
                "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def no_network(*args, **kwargs):
        raise AssertionError("snapshot_download must not be called in this test")

    try:
        import huggingface_hub
    except ImportError:
        pass
    else:
        monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)


def make_snapshot(cache: Path, repo: str = REPO, commit: str = COMMIT, ref: str | None = "main",
                  config: bool = True) -> Path:
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True)
    if config:
        (snap / "config.json").write_text("{}")
    if ref is not None:
        (repo_dir / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo_dir / "refs" / ref).write_text(commit)  # as the hub writes it: no newline
    return snap


@pytest.fixture
def fake_download(monkeypatch):
    """Replace huggingface_hub.snapshot_download; return the list of recorded calls."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    calls = []

    def download(**kwargs):
        calls.append(kwargs)
        snap = make_snapshot(Path(kwargs["cache_dir"]), kwargs["repo_id"], OTHER, ref=None)
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    return calls


# ------------------------------------------------------------------------------- local


def test_local_directory(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model_path(str(tmp_path)) == tmp_path.resolve()
    assert resolve_model_path(tmp_path) == tmp_path.resolve()


def test_local_directory_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model_path(tmp_path)
    assert str(tmp_path) in str(e.value) and "no config.json" in str(e.value)


def test_local_file_is_not_a_model(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model_path(f)
    assert "is a file" in str(e.value)


def test_local_directory_wins_over_repo_id(tmp_path, monkeypatch):
    local = tmp_path / "Qwen" / "Qwen3-Reranker-0.6B"
    local.mkdir(parents=True)
    (local / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path(REPO) == local.resolve()


@pytest.mark.parametrize("bad", ["not-a-model", "./missing/dir/model", "a/b/c", "org/../etc", "org/name.git", ""])
def test_neither_path_nor_repo_id(bad, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model_path(bad)
    assert "org/name" in str(e.value)


def test_missing_pathlike_is_never_a_repo_id(tmp_path):
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model_path(Path("Qwen/Qwen3-Reranker-0.6B"))
    assert "neither an existing directory" in str(e.value)


# ------------------------------------------------------------------------------- cache location


def test_cache_dir_precedence(monkeypatch, tmp_path):
    home = Path(os.environ["HOME"])
    assert hf_cache_dir() == home / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hf_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hfhome"))
    assert hf_cache_dir() == tmp_path / "hfhome" / "hub"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "legacy"))
    assert hf_cache_dir() == tmp_path / "legacy"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hubcache"))
    assert hf_cache_dir() == tmp_path / "hubcache"
    assert hf_cache_dir(str(tmp_path / "explicit")) == tmp_path / "explicit"


def test_default_cache_is_used(monkeypatch):
    cache = Path(os.environ["HOME"]) / ".cache" / "huggingface" / "hub"
    snap = make_snapshot(cache)
    assert resolve_model_path(REPO) == snap


@pytest.mark.parametrize("how", ["cache_folder", "HF_HUB_CACHE", "HF_HOME"])
def test_cache_lookup(tmp_path, monkeypatch, how):
    cache = tmp_path / "cache"
    if how == "HF_HOME":
        cache = tmp_path / "hf" / "hub"
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    elif how == "HF_HUB_CACHE":
        monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    snap = make_snapshot(cache)
    kw = {"cache_folder": str(cache)} if how == "cache_folder" else {}
    assert resolve_model_path(REPO, **kw) == snap


def test_revisions(tmp_path):
    cache = tmp_path / "cache"
    main = make_snapshot(cache, commit=COMMIT, ref="main")
    v2 = make_snapshot(cache, commit=OTHER, ref="v2")
    assert resolve_model_path(REPO, cache_folder=str(cache)) == main
    assert resolve_model_path(REPO, revision="v2", cache_folder=str(cache)) == v2
    # A commit hash is looked up directly under snapshots/.
    assert resolve_model_path(REPO, revision=OTHER, cache_folder=str(cache)) == v2
    pr = make_snapshot(cache, commit="c" * 40, ref="refs/pr/1")
    assert resolve_model_path(REPO, revision="refs/pr/1", cache_folder=str(cache)) == pr


@pytest.mark.parametrize("bad", ["../../etc", "/abs", "a\\b", ""])
def test_bad_revision(tmp_path, bad):
    make_snapshot(tmp_path / "cache")
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model_path(REPO, revision=bad, cache_folder=str(tmp_path / "cache"))
    assert "revision" in str(e.value) and "commit hash" in str(e.value)


# ------------------------------------------------------------------------------- offline / errors


def test_offline_not_cached_lists_places(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "cache"
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model_path(REPO, cache_folder=str(cache))
    msg = str(e.value)
    assert REPO in msg and "local directory" in msg and str(cache) in msg
    assert "HF_HUB_OFFLINE" in msg and "huggingface-cli download" in msg and "local checkpoint" in msg
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, CrossrankError)


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_offline_env_values(monkeypatch, tmp_path, value):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub.is_offline()
    snap = make_snapshot(tmp_path / "cache")
    assert resolve_model_path(REPO, cache_folder=str(tmp_path / "cache")) == snap


def test_offline_false_values(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not hub.is_offline()
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    assert hub.is_offline()


def test_local_files_only(tmp_path):
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model_path(REPO, cache_folder=str(tmp_path / "cache"), local_files_only=True)
    assert "local_files_only=True" in str(e.value)


def test_partial_snapshot_and_bad_ref(tmp_path):
    cache = tmp_path / "cache"
    make_snapshot(cache, config=False)
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model_path(REPO, cache_folder=str(cache), local_files_only=True)
    assert "has no config.json" in str(e.value)
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model_path(REPO, revision="v9", cache_folder=str(cache), local_files_only=True)
    assert "v9" in str(e.value) and "never downloaded" in str(e.value)
    ref = cache / "models--Qwen--Qwen3-Reranker-0.6B" / "refs" / "main"
    ref.write_text("../../../etc")
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model_path(REPO, cache_folder=str(cache), local_files_only=True)
    assert "commit hash" in str(e.value)


def test_without_huggingface_hub(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model_path(REPO, cache_folder=str(tmp_path / "cache"))
    assert "huggingface_hub is not installed" in str(e.value) and "pip install" in str(e.value)


# ------------------------------------------------------------------------------- download (faked)


def test_download_when_not_cached(tmp_path, fake_download):
    cache = tmp_path / "cache"
    path = resolve_model_path(REPO, revision="v1", cache_folder=str(cache), token="hf_x")
    assert path == cache / "models--Qwen--Qwen3-Reranker-0.6B" / "snapshots" / OTHER
    (call,) = fake_download
    assert call["repo_id"] == REPO and call["revision"] == "v1" and call["token"] == "hf_x"
    assert call["cache_dir"] == str(cache)
    assert call["allow_patterns"] == ["*.json", "*.safetensors", "tokenizer*", "*.txt", "*.model", "*.jinja"]


def test_cached_model_is_not_downloaded(tmp_path, fake_download):
    snap = make_snapshot(tmp_path / "cache")
    assert resolve_model_path(REPO, cache_folder=str(tmp_path / "cache")) == snap
    assert fake_download == []


def test_download_uses_env_cache(tmp_path, monkeypatch, fake_download):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "envcache"))
    resolve_model_path(REPO)
    assert fake_download[0]["cache_dir"] == str(tmp_path / "envcache")


def test_download_failure_is_wrapped(tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")

    def fail(**kwargs):
        raise OSError("401 Client Error: repository not found or gated")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model_path(REPO, cache_folder=str(tmp_path / "cache"))
    msg = str(e.value)
    assert REPO in msg and "401" in msg and "token" in msg and "OSError" in msg
    assert isinstance(e.value.__cause__, OSError)


def test_download_without_config(tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")

    def download(**kwargs):
        snap = make_snapshot(Path(kwargs["cache_dir"]), kwargs["repo_id"], OTHER, ref=None, config=False)
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model_path(REPO, cache_folder=str(tmp_path / "cache"))
    assert "no config.json" in str(e.value)


def test_a_fresh_interpreter_resolves_names(tmp_path):
    """A process that imported nothing of huggingface_hub before (a new notebook kernel) gets the same
    answer: the hub's submodules are imported by name, not reached as attributes of the package."""
    import subprocess

    code = ("import sys\n"
            "from crossrank.errors import ModelNotFoundError\n"
            "from crossrank.hub import resolve_model_path\n"
            "try:\n"
            "    resolve_model_path('org/not-cached')\n"
            "except ModelNotFoundError as e:\n"
            "    print('not found:', e)\n"
            "    sys.exit(0)\n"
            "sys.exit('resolved a model that is not cached')\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "PYTHONPATH": os.pathsep.join(p for p in [str(Path(hub.__file__).parents[1]),
                                                     os.environ.get("PYTHONPATH", "")] if p)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "org/not-cached" in proc.stdout
