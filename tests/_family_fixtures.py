"""Reference fixtures of the non-Qwen3 families, for the crossrank stage of the tests.

    from _family_fixtures import family_fixture_path, load_family_golden
    model_dir = family_fixture_path("mxbai-tiny")    # checkpoint + tokenizer + golden.json

They are built by tests/reference/make_fixtures.py (fixtures_family.py), in a subprocess, into the
same directory as the Qwen3 fixtures ($CROSSRANK_FIXTURES, default tests/.fixtures), by the same
code as tests/_fixtures.py builds those: this process never imports torch, and a test is skipped
when the reference stage cannot run here (no torch/transformers).
"""

import functools
import json

from _fixtures import fixture_path, specs


def family_specs():
    """The family fixture set (fixtures_family: specs, hashes, freshness; torch only inside builds)."""
    return specs().FIXTURE_SETS["family"]


@functools.lru_cache(maxsize=None)
def family_fixture_path(name):
    """Directory of the built family fixture `name`, building it first if missing or stale."""
    fixtures = family_specs().FIXTURES
    if name not in fixtures:
        raise KeyError(f"unknown family fixture {name!r}; known: {sorted(fixtures)}")
    return fixture_path(name)


def load_family_golden(name):
    with open(family_fixture_path(name) / "golden.json", encoding="utf-8") as f:
        return json.load(f)
