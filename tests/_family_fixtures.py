"""Reference fixtures of the non-Qwen3 families, for the crossrank stage of the tests.

    from _family_fixtures import family_fixture_path, load_family_golden
    model_dir = family_fixture_path("mxbai-tiny")    # checkpoint + tokenizer + golden.json

They are built by tests/reference/make_family_fixtures.py, in a subprocess, into the same
directory as the Qwen3 fixtures ($CROSSRANK_FIXTURES, default tests/.fixtures), exactly as
tests/_fixtures.py builds those: this process never imports torch, and a test is skipped when the
reference stage cannot run here (no torch/transformers).
"""

import functools
import importlib.util
import json
import subprocess

from _fixtures import FIXTURES_DIR, REFERENCE_PYTHON, TESTS_DIR, FixtureUnavailable

MAKE_FAMILY_FIXTURES = TESTS_DIR / "reference" / "make_family_fixtures.py"


@functools.lru_cache(maxsize=None)
def family_specs():
    """The make_family_fixtures module (specs, hashes, freshness; torch only inside builds)."""
    spec = importlib.util.spec_from_file_location("crossrank_make_family_fixtures", MAKE_FAMILY_FIXTURES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=None)
def family_fixture_path(name):
    """Directory of the built family fixture `name`, building it first if missing or stale."""
    mf = family_specs()
    if name not in mf.FIXTURES:
        raise KeyError(f"unknown family fixture {name!r}; known: {sorted(mf.FIXTURES)}")
    if not mf.is_fresh(name, FIXTURES_DIR):
        cmd = [REFERENCE_PYTHON, str(MAKE_FAMILY_FIXTURES), "--out", str(FIXTURES_DIR), "--only", name]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if proc.returncode == mf.EXIT_NO_TORCH:
            raise FixtureUnavailable(
                f"family fixture {name!r} is not built and {REFERENCE_PYTHON} cannot run the reference "
                f"stage: {proc.stderr.strip()}")
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-40:])
            raise RuntimeError(f"building family fixture {name!r} failed (exit {proc.returncode}): "
                               f"{' '.join(cmd)}\n{tail}")
        if not mf.is_fresh(name, FIXTURES_DIR):
            raise RuntimeError(f"{' '.join(cmd)} succeeded but {FIXTURES_DIR / name} is not fresh")
    return FIXTURES_DIR / name


def load_family_golden(name):
    with open(family_fixture_path(name) / "golden.json", encoding="utf-8") as f:
        return json.load(f)
