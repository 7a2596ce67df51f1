"""CROSSRANK_ISA: the kernel level is chosen once at import, capped by the variable, and every
level gives bitwise the same scores — except bfloat16 on AMX tiles, whose TDPBF16PS sums in its
own order: there the AMX level is compared within the bfloat16 bar, and the other levels bitwise
with each other.

Each case runs a fresh interpreter (the choice is made once per process). The parity checks score
a few query/document pairs with a tiny random-weight Qwen3 checkpoint (float32 and bfloat16, and
one of ragged shapes; written with NumPy by tests/_numpy_checkpoint.py) under each cap, and compare
the raw logits with those of an uncapped run. No torch.
"""

import ast
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import crossrank
from _numpy_checkpoint import copy_qwen3_tokenizer, qwen3_tokenizer_dir, write_qwen3_checkpoint

ORDER = ["ref", "avx2", "avxvnni", "avx512", "avx512vnni", "avx512bf16", "amx"]
DETECTED = crossrank.cpu_info()["detected"]
HAS_AVX_VNNI = "avx_vnni" in crossrank.cpu_info()["features"].split(",")

QWEN3_RERANKER = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}

QUERY = "Why did the East India Company smuggle opium into China?"
DOCUMENTS = [
    "China accepted little but silver for its tea, so the company sold opium in Canton to "
    "balance its accounts, which led to the Opium Wars.",
    "Iceland sits on the Mid-Atlantic Ridge, where two plates drift apart by about two "
    "centimetres a year.",
    "Tea reached Europe in the early seventeenth century, carried by Dutch merchants.",
    "Le thé est arrivé en Europe au XVIIe siècle.",
    "",
]


def run_python(code, isa=None, timeout=300):
    """Runs `code` in a fresh interpreter with CROSSRANK_ISA=isa (unset when None)."""
    env = dict(os.environ)
    env.pop("CROSSRANK_ISA", None)
    if isa is not None:
        env["CROSSRANK_ISA"] = isa
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"CROSSRANK_ISA={isa!r}: exit {proc.returncode}\n{proc.stderr}"
    return proc.stdout


def cpu_info_under(isa):
    out = run_python("import crossrank; print(crossrank.cpu_info())", isa)
    return ast.literal_eval(out.strip().splitlines()[-1])


def expected_level(cap):
    level = ORDER[min(ORDER.index(cap), ORDER.index(DETECTED))]
    # AVX-VNNI is a side level: an AVX-512 CPU may lack it, and a cap there then means AVX2
    return "avx2" if level == "avxvnni" and not HAS_AVX_VNNI else level


# ---- the cap -------------------------------------------------------------------------------------

@pytest.mark.parametrize("cap", ORDER)
def test_crossrank_isa_caps_the_kernel_level_at_import(cap):
    info = cpu_info_under(cap)
    assert info["isa"] == expected_level(cap)
    assert info["detected"] == DETECTED  # the cap never changes what was detected


@pytest.mark.parametrize("value", ["sse4", "AVX2", "avx3", "neon", "ref ", "0"])
def test_unknown_crossrank_isa_values_are_ignored_and_detection_decides(value):
    info = cpu_info_under(value)
    assert info["isa"] == DETECTED


def test_empty_crossrank_isa_means_no_cap():
    assert cpu_info_under("")["isa"] == DETECTED


def test_without_crossrank_isa_the_best_detected_level_is_used():
    assert cpu_info_under(None)["isa"] == DETECTED


# ---- parity of a whole model under each cap ------------------------------------------------------

SCORE_SCRIPT = """
import json, sys
import crossrank
model = crossrank.CrossEncoder(sys.argv[1], hf_overrides=json.loads(sys.argv[2]), dtype=sys.argv[5])
scores = model.score(sys.argv[3], json.loads(sys.argv[4]), activation_fn="identity")
print(json.dumps({"isa": crossrank.cpu_info()["isa"], "logits": [float(s) for s in scores]}))
"""


def score_under(model_dir, isa, dtype="float32"):
    code = ("import sys; sys.argv[1:] = " +
            repr([str(model_dir), json.dumps(QWEN3_RERANKER), QUERY, json.dumps(DOCUMENTS), dtype]) +
            "\n" + SCORE_SCRIPT)
    out = run_python(code, isa)
    return json.loads(out.strip().splitlines()[-1])


# Ragged shapes: hidden and head sizes that are no multiple of any vector width, GQA 3:1.
RAGGED = dict(hidden_size=72, intermediate_size=100, num_attention_heads=3, num_key_value_heads=1, head_dim=42,
              num_hidden_layers=3)


@pytest.fixture(scope="module", params=["float32", "bfloat16", "bfloat16-ragged"])
def tiny_qwen3(request, tmp_path_factory):
    if not (qwen3_tokenizer_dir() / "tokenizer.json").is_file():
        pytest.skip(f"Qwen3 tokenizer files not found in {qwen3_tokenizer_dir()}")
    path = tmp_path_factory.mktemp(f"tiny-qwen3-{request.param}")
    weights, _, shape = request.param.partition("-")
    write_qwen3_checkpoint(path, seed=7, dtype=weights, **(RAGGED if shape == "ragged" else {}))
    copy_qwen3_tokenizer(path)
    uncapped = {}
    for compute in ("float32", "bfloat16", "int8"):
        run = score_under(path, None, compute)
        assert run["isa"] == DETECTED
        logits = np.array(run["logits"])
        assert logits.shape == (len(DOCUMENTS),) and np.all(np.isfinite(logits))
        # Not degenerate: the documents get clearly different logits, so parity means something.
        assert np.ptp(logits) > 1e-2, logits
        uncapped[compute] = logits
    if DETECTED == "amx":  # the vector levels' bf16, for the levels below AMX
        uncapped["bfloat16-vector"] = np.array(score_under(path, "avx512bf16", "bfloat16")["logits"])
    return path, uncapped


@pytest.mark.parametrize("compute", ["float32", "bfloat16", "int8"])
@pytest.mark.parametrize("cap", ORDER)
def test_logits_under_each_isa_cap_match_the_uncapped_run(tiny_qwen3, cap, compute):
    path, uncapped = tiny_qwen3
    capped = score_under(path, cap, compute)
    assert capped["isa"] == expected_level(cap)
    # Every kernel table runs the same operations in the same order (GEMM chains, dot/sumsq lanes,
    # exp, bf16 emulation, exact int8 sums), so a model scores bit for bit the same on every CPU;
    # bf16 on AMX tiles is its own level (see the test below).
    want = uncapped[compute]
    if compute == "bfloat16" and DETECTED == "amx" and capped["isa"] != "amx":
        want = uncapped["bfloat16-vector"]
    np.testing.assert_array_equal(np.array(capped["logits"]), want)


def test_amx_bf16_logits_are_within_the_bf16_bar_of_the_vector_levels(tiny_qwen3):
    if DETECTED != "amx":
        pytest.skip(f"no AMX here (kernels up to {DETECTED})")
    _, uncapped = tiny_qwen3
    amx, vector, f32 = uncapped["bfloat16"], uncapped["bfloat16-vector"], uncapped["float32"]
    assert not np.array_equal(amx, vector)  # TDPBF16PS's order, not vdpbf16ps's
    def sigmoid(z):
        return 1.0 / (1.0 + np.exp(-z))
    # the bf16 bar of tests/test_dtype_accuracy.py: probabilities within 0.02 of float32
    assert np.abs(sigmoid(amx) - sigmoid(f32)).max() <= 0.02
    assert np.abs(sigmoid(amx) - sigmoid(vector)).max() <= 0.02


WARN_SCRIPT = """
import json, sys, warnings
import crossrank
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    crossrank.CrossEncoder(sys.argv[1], hf_overrides=json.loads(sys.argv[2]), dtype="int8")
print(json.dumps({"isa": crossrank.cpu_info()["isa"],
                  "warnings": [str(w.message) for w in caught if w.category is RuntimeWarning]}))
"""


@pytest.mark.parametrize("cap", ["ref", "avx2", "avxvnni", None])
def test_int8_warns_where_it_runs_without_vnni(tiny_qwen3, cap):
    path, _ = tiny_qwen3
    code = "import sys; sys.argv[1:] = " + repr([str(path), json.dumps(QWEN3_RERANKER)]) + "\n" + WARN_SCRIPT
    run = json.loads(run_python(code, cap).strip().splitlines()[-1])
    slow = [w for w in run["warnings"] if "without VNNI" in w]
    if run["isa"] in ("avxvnni", "avx512vnni", "avx512bf16", "amx"):
        assert slow == []
    else:
        assert len(slow) == 1 and "float32" in slow[0], run
