"""Packaging: the source distribution that `pip install crossrank` builds from carries every C
source and header the extension compiles, the license, and the metadata. Built through the PEP 517
backend, as pip and `python -m build` call it; no compiler run (~5 s).
"""
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BUILD_SDIST = r"""
import sys
from setuptools import build_meta
print(build_meta.build_sdist(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    if not (ROOT / "setup.py").is_file():
        pytest.skip("not a source checkout")
    out = tmp_path_factory.mktemp("sdist")
    proc = subprocess.run([sys.executable, "-c", BUILD_SDIST, str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    name = proc.stdout.strip().splitlines()[-1]
    with tarfile.open(out / name) as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if "/" in m.name}
        pkg_info = tar.extractfile(members["PKG-INFO"]).read().decode()
    return members, pkg_info


def test_the_sdist_carries_every_c_source_and_header(sdist):
    members, _ = sdist
    needed = {str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*.[ch]")
              if not {"fuzz", "cross"} & set(p.relative_to(ROOT / "csrc").parts)}  # check tools, not the build
    assert needed, "no C sources found"
    missing = sorted(needed - set(members))
    assert not missing, f"the sdist would not compile: {missing} are not in it (add them to setup.py's depends)"


def test_the_sdist_carries_the_license_readme_and_package(sdist):
    members, pkg_info = sdist
    for name in ("LICENSE", "README.md", "pyproject.toml", "setup.py", "python/crossrank/__init__.py",
                 "python/crossrank/server/__init__.py"):
        assert name in members, f"{name} is not in the sdist"
    assert "License-Expression: Apache-2.0" in pkg_info
    assert "License-File: LICENSE" in pkg_info


def test_the_package_ships_py_typed_for_type_checkers(sdist, tmp_path):
    members, _ = sdist
    assert "python/crossrank/py.typed" in members
    # build_py lays out the wheel's Python files (no compiler run)
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "crossrank" / "py.typed").is_file()
