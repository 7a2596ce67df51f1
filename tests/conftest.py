"""Shared pytest fixtures.

The test process must never import torch (see tests/_fixtures.py): reference
checkpoints and golden scores are built in a subprocess and read from disk.
"""

import shutil

import pytest

import _fixtures


@pytest.fixture(scope="session")
def reference_fixture():
    """A function name -> pathlib.Path of a built reference fixture (built on
    first use; the test is skipped when torch/transformers are unavailable)."""
    return _fixtures.fixture_path


@pytest.fixture(scope="session")
def reference_golden():
    """A function name -> the fixture's golden.json as a dict."""
    return _fixtures.load_golden


@pytest.fixture(scope="module", autouse=True)
def _module_folders_go_when_its_tests_pass(request, tmp_path_factory):
    """A module's checkpoints (tens to hundreds of MB each) would stay in pytest's temporary
    folder until the session ends, and a whole run would hold several GB at its end; the
    folders a module made go when all its tests passed, and stay for a look when one failed.
    (Function-scoped tmp_path folders go after each passing test: tmp_path_retention_policy.)"""
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed == failed:
        for path in set(base.iterdir()) - before:
            shutil.rmtree(path, ignore_errors=True)
