"""Reference fixtures for the crossrank stage of the tests.

    from _fixtures import fixture_path, load_golden
    model_dir = fixture_path("qwen3-tiny")     # checkpoint + tokenizer + golden.json
    golden = load_golden("qwen3-tiny")

Fixtures live in $CROSSRANK_FIXTURES (default tests/.fixtures).  A missing or
stale fixture is built by tests/reference/make_fixtures.py (the one CLI of the
reference stage, every family) in a subprocess run by $CROSSRANK_REFERENCE_PYTHON (default: this interpreter): this process never
imports torch, so the crossrank stage can run under sanitizers and valgrind,
and a large checkpoint is never held by two libraries in one process.  When
the reference stage cannot run (no torch/transformers), FixtureUnavailable is
raised; under pytest it is a skip.

Build everything up front with
    python tests/reference/make_fixtures.py --out tests/.fixtures
"""

import contextlib
import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
MAKE_FIXTURES = TESTS_DIR / "reference" / "make_fixtures.py"
FIXTURES_DIR = Path(os.environ.get("CROSSRANK_FIXTURES", TESTS_DIR / ".fixtures"))
REFERENCE_PYTHON = os.environ.get("CROSSRANK_REFERENCE_PYTHON", sys.executable)

try:
    import pytest

    _SkipBase = pytest.skip.Exception
except ImportError:  # used outside pytest (benchmarks, scripts)
    _SkipBase = Exception


class FixtureUnavailable(_SkipBase):
    """The reference stage cannot build this fixture here (no torch/transformers)."""


@functools.lru_cache(maxsize=None)
def specs():
    """The make_fixtures module: fixture specs (FIXTURES, every family; FIXTURE_SETS by recipe),
    spec hashes, freshness checks. It imports torch only inside its build functions."""
    spec = importlib.util.spec_from_file_location("crossrank_make_fixtures", MAKE_FIXTURES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fixture_names(slow=None, fixture_set="qwen3"):
    """The names of one fixture set (default: the Qwen3 fixtures); slow=False/True keeps only
    the fast/slow ones."""
    fixtures = specs().FIXTURE_SETS[fixture_set].FIXTURES
    return [n for n, s in fixtures.items() if slow is None or s["slow"] == slow]


def is_slow(name):
    return specs().FIXTURES[name]["slow"]


_unavailable = {}


@functools.lru_cache(maxsize=None)
def fixture_path(name):
    """Directory of the built fixture `name`, building it first if needed."""
    mf = specs()
    if name not in mf.FIXTURES:
        raise KeyError(f"unknown reference fixture {name!r}; known: {sorted(mf.FIXTURES)}")
    if name in _unavailable:  # do not retry the subprocess for every test
        raise FixtureUnavailable(_unavailable[name])
    if not mf.is_fresh(name, FIXTURES_DIR):
        try:
            _build(name)
        except FixtureUnavailable as e:
            _unavailable[name] = str(e)
            raise
    return FIXTURES_DIR / name


def load_golden(name):
    with open(fixture_path(name) / "golden.json", encoding="utf-8") as f:
        return json.load(f)


def _build(name):
    mf = specs()
    cmd = [REFERENCE_PYTHON, str(MAKE_FIXTURES), "--out", str(FIXTURES_DIR), "--only", name]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode == mf.EXIT_NO_TORCH:
        raise FixtureUnavailable(
            f"reference fixture {name!r} is not built and {REFERENCE_PYTHON} cannot run the "
            f"reference stage: {proc.stderr.strip()}. Build it with torch installed: "
            f"python {MAKE_FIXTURES} --out {FIXTURES_DIR}")
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-40:])
        raise RuntimeError(f"building reference fixture {name!r} failed "
                           f"(exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    if not mf.is_fresh(name, FIXTURES_DIR):
        raise RuntimeError(f"{' '.join(cmd)} succeeded but {FIXTURES_DIR / name} is not fresh")


@contextlib.contextmanager
def torch_hidden():
    """This process never imports torch: make it look absent while a call would reach for it
    (``predict(..., convert_to_numpy=False)`` returns torch tensors where torch is installed)."""
    missing = object()
    saved = sys.modules.get("torch", missing)
    sys.modules["torch"] = None
    try:
        yield
    finally:
        if saved is missing:
            del sys.modules["torch"]
        else:
            sys.modules["torch"] = saved
