"""benchmarks/bench_attention.py's attention mode on a tiny batch: every engine path and the
torch peer time the same shape at each thread count, and a bad argument is refused. No timing is
asserted."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_attention.py"


def bench(*args):
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=600)


def test_every_path_is_timed_at_every_thread_count(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "a.json"
    proc = bench("--batch", "3", "--tokens", "40", "70", "--threads", "1,2", "--repeats", "1",
                 "--paths", "float32,bf16,tiles,torch-float32,torch-bf16", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text(encoding="utf-8"))
    assert r["mode"] == "attention" and r["shape"]["n_heads"] % r["shape"]["n_kv_heads"] == 0
    cells = {(row["tokens"], row["threads"]) for row in r["rows"]}
    assert cells == {(40, 1), (40, 2), (70, 1), (70, 2)}
    for row in r["rows"]:
        assert row["batch"] == 3
        assert set(row["seconds"]) == {"float32", "bf16", "tiles", "torch-float32", "torch-bf16"}
        assert all(s > 0 for s in row["seconds"].values())
        assert all(g > 0 for g in row["gflops"].values())


@pytest.mark.parametrize("args,message", [(["--paths", "tiles,fp8"], "unknown path"),
                                          (["--batch", "0"], "must be >= 1"),
                                          (["--threads", "0"], "thread counts")])
def test_bad_arguments_are_refused_with_the_reason(args, message):
    proc = bench(*args)
    assert proc.returncode == 2 and message in proc.stderr
