"""Shared pytest fixtures.

The test process must never import torch (see tests/_fixtures.py): reference
checkpoints and golden scores are built in a subprocess and read from disk.
"""

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
