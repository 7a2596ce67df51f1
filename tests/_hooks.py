"""The C engine's test and benchmark hooks, ``crossrank._testing`` (built beside ``_core`` by
setup.py, shipped in the wheel), or a skip of the importing test module that says how to get them."""
import pytest

hooks = pytest.importorskip(
    "crossrank._testing",
    reason="crossrank._testing (the C engine's test hooks, built beside _core) is not importable: "
           "build in place with `python setup.py build_ext --inplace` or install the package")
