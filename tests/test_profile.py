"""CROSSRANK_PROFILE: with it set, each forward pass writes one line on stderr saying how long it
took and where the time went (the four projections, attention, the row-wise steps, the rest), shares summing to 100%;
without it, nothing. Fresh interpreters, a tiny random-weight Qwen3 checkpoint written with NumPy."""

import os
import re
import subprocess
import sys

import pytest

from _numpy_checkpoint import copy_qwen3_tokenizer, write_qwen3_checkpoint

LINE = re.compile(r"^crossrank pass: (\d+) tokens, (\d+) sequences, (\d+) threads, ([0-9.]+) ms: (.*)$")
PHASES = ["q|k|v", "attention", "o", "gate|up+GLU", "down", "norms", "q/k-norms+RoPE", "adds", "rest"]

SCORE = """
import sys
from crossrank import CrossEncoder
model = CrossEncoder(sys.argv[1], hf_overrides={"architectures": ["Qwen3ForSequenceClassification"],
                     "classifier_from_token": ["no", "yes"], "is_original_qwen3_reranker": True},
                     threads=2, dtype=sys.argv[2])
print(model.predict([("what is tea", "a drink made from leaves"), ("what is tea", "a planet")]))
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("profiled-qwen3")
    write_qwen3_checkpoint(path, seed=3)
    copy_qwen3_tokenizer(path)
    return path


def score(checkpoint, dtype, profile):
    env = dict(os.environ)
    env.pop("CROSSRANK_PROFILE", None)
    if profile is not None:
        env["CROSSRANK_PROFILE"] = profile
    proc = subprocess.run([sys.executable, "-c", SCORE, str(checkpoint), dtype], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr.splitlines()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_each_pass_reports_its_time_and_phase_shares(checkpoint, dtype):
    lines = [line for line in score(checkpoint, dtype, "1") if line.startswith("crossrank pass:")]
    assert lines, "no profile line"
    for line in lines:
        match = LINE.match(line)
        assert match, line
        tokens, sequences, threads, ms, shares = match.groups()
        assert int(tokens) >= int(sequences) >= 1 and int(threads) == 2 and float(ms) > 0
        parts = shares.split()
        assert parts[0::2] == PHASES, line
        percents = [float(p.rstrip("%")) for p in parts[1::2]]
        assert all(p >= 0 for p in percents[:-1]) and abs(sum(percents) - 100.0) < 0.5, line


@pytest.mark.parametrize("value", [None, "", "0"])
def test_no_line_unless_asked(checkpoint, value):
    assert not [line for line in score(checkpoint, "float32", value) if "crossrank pass" in line]
