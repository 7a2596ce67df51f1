"""Model-level determinism of the packed-panel GEMM.

Every projection runs through the tile kernels, whose outputs are each one fused multiply-add
chain in increasing k (see tests/test_kernels.py), so raw logits must be bitwise equal whatever
the batch size (rows per pass, hence row blocks and tile tails) and the thread count.

Across ISA levels (CROSSRANK_ISA, read at import, hence subprocesses) the logits are bitwise the
same too: the GEMM chains and the other reductions (dot_f32, sumsq_f32: attention, norms, head)
sum in one fixed order on every table. OpenBLAS (CROSSRANK_GEMM=openblas) varies its summation
order with the shape: 1e-4.

The model is a random-weight Qwen3 written with NumPy (tests/_numpy_checkpoint.py); its
intermediate size (200, so the gate|up weight has 400 rows) leaves a part-filled last panel.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from _numpy_checkpoint import copy_qwen3_tokenizer, write_qwen3_checkpoint
import crossrank
from crossrank import CrossEncoder
from crossrank import _core

OVERRIDES = {"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["no", "yes"],
             "is_original_qwen3_reranker": True}

QUERY = "How do plants turn sunlight into chemical energy?"
DOCS = [
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The stock market closed higher on Tuesday.",
    "Chlorophyll absorbs mostly blue and red light. " * 3,
    "Cellular respiration releases the energy stored in sugars. " * 110,  # > 1024 tokens: MLP row blocks
    "Yes.",
    "Mitochondria are the powerhouse of the cell, while chloroplasts capture light. " * 9,
    "In the light-dependent reactions, water is split and oxygen is released.",
]

SCRIPT = r"""
import json, sys
from crossrank import CrossEncoder, _core
model = CrossEncoder(sys.argv[1], hf_overrides=json.loads(sys.argv[2]), threads=2, dtype="float32")
raw = model.score(sys.argv[3], json.loads(sys.argv[4]), activation_fn="identity")
print(json.dumps({"isa": _core.cpu_info()["isa"], "logits": [float(v) for v in raw]}))
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen3-determinism")
    write_qwen3_checkpoint(path, seed=3, intermediate_size=200)
    copy_qwen3_tokenizer(path)
    return path


def raw_logits(model, batch_size=32):
    return model.score(QUERY, DOCS, activation_fn="identity", batch_size=batch_size)


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def run_subprocess(checkpoint, **env_vars):
    env = {k: v for k, v in os.environ.items() if k not in ("CROSSRANK_ISA", "CROSSRANK_GEMM")}
    env.update(env_vars)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(checkpoint), json.dumps(OVERRIDES), QUERY,
                           json.dumps(DOCS)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["isa"], np.array(out["logits"], dtype=np.float32)


def test_prompts_span_several_row_blocks(checkpoint):
    model = CrossEncoder(checkpoint, hf_overrides=OVERRIDES, threads=1, dtype="float32")
    lengths = sorted(len(ids) for ids in model.tokenize(QUERY, DOCS).input_ids)
    assert lengths[-1] > 1024 + 16 and lengths[0] < 96  # MLP row blocks of 1024; GEMM row blocks of 48


def test_raw_logits_are_bitwise_equal_for_batch_size_1_and_64(checkpoint):
    model = CrossEncoder(checkpoint, hf_overrides=OVERRIDES, threads=2, dtype="float32")
    one = raw_logits(model, batch_size=1)
    np.testing.assert_array_equal(bits(raw_logits(model, batch_size=64)), bits(one))
    np.testing.assert_array_equal(bits(raw_logits(model, batch_size=3)), bits(one))
    assert np.isfinite(one).all() and np.ptp(one) > 1e-3  # the model says something


def test_raw_logits_are_bitwise_equal_for_1_and_2_threads(checkpoint):
    one = CrossEncoder(checkpoint, hf_overrides=OVERRIDES, threads=1, dtype="float32")
    two = CrossEncoder(checkpoint, hf_overrides=OVERRIDES, threads=2, dtype="float32")
    for batch_size in (1, 64):
        np.testing.assert_array_equal(bits(raw_logits(two, batch_size)), bits(raw_logits(one, batch_size)))


def test_raw_logits_are_bitwise_equal_across_isa_levels(checkpoint):
    detected = _core.cpu_info()["detected"]
    results = {"uncapped": run_subprocess(checkpoint)}
    for isa in ("ref", "avx2"):
        if isa == "ref" or detected != "ref":   # every x86 level above ref includes AVX2's table
            results[isa] = run_subprocess(checkpoint, CROSSRANK_ISA=isa)
    assert results["ref"][0] == "ref"
    if "avx2" in results:
        assert results["avx2"][0] == "avx2"
    assert results["uncapped"][0] == detected
    base = results["ref"][1]
    for name, (_, logits) in results.items():
        np.testing.assert_array_equal(bits(logits), bits(base), err_msg=name)
    # the uncapped level in a subprocess is this process's level unless CROSSRANK_ISA caps it here
    if "CROSSRANK_ISA" not in os.environ:
        model = CrossEncoder(checkpoint, hf_overrides=OVERRIDES, threads=2, dtype="float32")
        np.testing.assert_array_equal(bits(raw_logits(model)), bits(results["uncapped"][1]))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_raw_logits_are_bitwise_equal_whatever_the_row_block(checkpoint, monkeypatch, dtype):
    """The forward runs its norms and q|k|v / o projections in row blocks (1024 by default, read
    from CROSSRANK_ROW_BLOCK at each pass) and the MLP in sub-blocks of at most 1024 rows: 65536
    puts every pass in one block (the whole-sequence path) of several MLP sub-blocks with a ragged
    tail, 600 and 300 give several blocks with ragged tails, 1 and 7 blocks smaller than a sequence
    and than the number of sequences (the head's blocks); each must leave every raw logit bitwise
    unchanged."""
    model = CrossEncoder(checkpoint, hf_overrides=OVERRIDES, threads=2, dtype=dtype)
    monkeypatch.setenv("CROSSRANK_ROW_BLOCK", "65536")
    whole = raw_logits(model, batch_size=64)
    assert np.isfinite(whole).all() and np.ptp(whole) > 1e-3
    ids = model.tokenize(QUERY, DOCS).input_ids
    shared = next(k for k in range(min(map(len, ids)) + 1)
                  if k == min(map(len, ids)) or len({tuple(x[:k + 1]) for x in ids}) > 1)
    assert sum(map(len, ids)) - len(ids) * shared > 600  # the pass after the shared prefix: 2+ blocks of 600
    for block in ("1", "7", "48", "300", "600", "zero", "0", "-3", "999999999"):  # the last four: the default
        monkeypatch.setenv("CROSSRANK_ROW_BLOCK", block)
        np.testing.assert_array_equal(bits(raw_logits(model, batch_size=64)), bits(whole), err_msg=block)
    monkeypatch.setenv("CROSSRANK_ROW_BLOCK", "7")
    np.testing.assert_array_equal(bits(raw_logits(model, batch_size=1)), bits(whole))


@pytest.mark.skipif(crossrank.build_info()["blas"] == "none", reason="this build has no OpenBLAS")
def test_openblas_logits_agree_with_the_panel_kernels(checkpoint):
    _, panels = run_subprocess(checkpoint)
    _, blas = run_subprocess(checkpoint, CROSSRANK_GEMM="openblas")
    np.testing.assert_allclose(blas, panels, rtol=0, atol=1e-4)


@pytest.mark.skipif(crossrank.build_info()["blas"] != "none", reason="this build links OpenBLAS")
def test_openblas_asked_of_a_build_without_it_says_how_to_rebuild(checkpoint):
    os.environ["CROSSRANK_GEMM"] = "openblas"  # read when the weights are packed, at load
    try:
        with pytest.raises(crossrank.UnsupportedModelError, match="CROSSRANK_BLAS=system pip install"):
            CrossEncoder(checkpoint, hf_overrides=OVERRIDES, threads=1, dtype="float32")
    finally:
        del os.environ["CROSSRANK_GEMM"]
