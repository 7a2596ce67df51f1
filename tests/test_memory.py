"""Memory: no definite leak in a load-score-free cycle under valgrind, and resident memory stays
flat over 1,000 predict calls and over 50 load/free cycles (each measured in a fresh process).
No torch.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _hardening import run_python, small_checkpoint

TESTS_DIR = Path(__file__).resolve().parent
GROWTH_LIMIT = 0.05


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return small_checkpoint(tmp_path_factory.mktemp("memory"), seed=31, vocab_size=151669)


RSS_SCRIPT = r"""
import gc, os, sys
from crossrank import CrossEncoder
from _hardening import OVERRIDES

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

path, mode = sys.argv[1], sys.argv[2]
pairs = [("what is a cat?", "A cat is a small domesticated carnivorous mammal."),
         ("what is a cat?", "Bananas are yellow."), ("q", "d " * 200)]
if mode == "predict":
    model = CrossEncoder(path, hf_overrides=OVERRIDES, threads=2)
    step = lambda: model.predict(pairs)
    warmup, n = 100, 1000
else:
    def step():
        model = CrossEncoder(path, hf_overrides=OVERRIDES, threads=2)
        model.predict(pairs)
        del model
        gc.collect()
    warmup, n = 20, 50   # the tokenizer's allocations settle after ~10 loads
for _ in range(warmup):
    step()
before = rss()
for _ in range(n):
    step()
after = rss()
print(before, after)
"""


@pytest.mark.parametrize("mode", ["predict", "load"])
def test_resident_memory_stays_flat_over_repeated_calls(path, mode):
    # "predict": 1,000 predict calls on one model; "load": 50 CrossEncoder load/score/free cycles.
    proc = run_python(RSS_SCRIPT, path, mode, timeout=600, env={"CROSSRANK_GEMM": ""})
    assert proc.returncode == 0, proc.stderr
    before, after = map(int, proc.stdout.split())
    assert after <= before * (1 + GROWTH_LIMIT), f"RSS grew from {before >> 20} MB to {after >> 20} MB"


def _under_asan() -> bool:
    return "asan" in os.environ.get("LD_PRELOAD", "")


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
@pytest.mark.skipif(_under_asan(), reason="the sanitizer build cannot run under valgrind")
def test_valgrind_finds_no_definite_leak_and_no_error_in_the_engine(tmp_path):
    # ~10 s: a tiny model, three load/score/prefix/free cycles plus failing calls, no tokenizer.
    model_dir = tmp_path / "model"
    env = dict(os.environ, PYTHONMALLOC="malloc", CROSSRANK_ISA="avx2", OPENBLAS_CORETYPE="Haswell",
               PYTHONPATH=os.pathsep.join([str(TESTS_DIR), str(Path(__import__("crossrank").__file__).parents[1])]))
    subprocess.run([sys.executable, str(TESTS_DIR / "valgrind_cycle.py"), "--write", str(model_dir)],
                   check=True, env=env)
    proc = subprocess.run(
        ["valgrind", "--leak-check=full", "--show-leak-kinds=definite", "--num-callers=40",
         sys.executable, str(TESTS_DIR / "valgrind_cycle.py"), str(model_dir)],
        capture_output=True, text=True, env=env, timeout=600)
    assert "cycles done" in proc.stdout, proc.stderr[-3000:]
    # Every error or definite leak whose stack passes through the engine is a failure; CPython's
    # and NumPy's own import-time leaks and the dynamic loader's reads are not ours.
    reports = re.split(r"==\d+== \n", proc.stderr)
    ours = [r for r in reports if "_core.cpython" in r or "csrc/" in r]
    assert not ours, "\n\n".join(ours)[:6000]
    assert re.search(r"definitely lost: [\d,]+ bytes", proc.stderr)
