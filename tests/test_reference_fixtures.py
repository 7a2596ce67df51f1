"""The reference fixtures are sound: complete goldens, ids that follow the
recipe, scores spread out and above float noise, and derived checkpoints that
differ from their source in exactly the intended way.  No torch here."""

import json
import math
import struct
import subprocess
import sys

import pytest
from tokenizers import Tokenizer

import _fixtures

FAST = _fixtures.fixture_names(slow=False)
ALL = [pytest.param(n, marks=pytest.mark.slow) if _fixtures.is_slow(n) else n
       for n in _fixtures.fixture_names()]
VOCAB_SIZE = 151669


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.from_file(str(_fixtures.specs().TOKENIZER_DIR / "tokenizer.json"))


def encode(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


def middle_text(golden, pair):
    instruction = pair["instruction"]
    if instruction is None:
        instruction = golden["default_instruction"]
    return f"<Instruct>: {instruction}\n<Query>: {pair['query']}\n<Document>: {pair['document']}"


def header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h


def tensors(model_dir):
    out = {}
    for path in _fixtures.specs().safetensors_files(model_dir):
        out.update(header(path))
    return out


@pytest.mark.parametrize("name", ALL)
def test_golden_is_complete_and_consistent(name, reference_golden):
    g = reference_golden(name)
    assert g["fixture"] == name
    assert g["template"] == "qwen3-reranker"
    assert g["max_length"] == 8192
    assert g["label_tokens"] == {"no": 2152, "yes": 9693}
    n = len(g["pairs"])
    assert n >= 32
    for key in ("input_ids", "scores", "logits", "joined_input_ids"):
        assert len(g[key]) == n, key
    for key in ("scores", "logits"):
        assert len(g["unpadded"][key]) == n, key
    for ids in g["input_ids"] + g["joined_input_ids"]:
        assert all(isinstance(t, int) and 0 <= t < VOCAB_SIZE for t in ids)
    for score, logit in zip(g["scores"], g["logits"]):
        assert 0.0 < score < 1.0
        assert score == pytest.approx(1.0 / (1.0 + math.exp(-logit)), abs=1e-6)
    t = g["truncation"]
    assert t["max_length"] == 96 and len(t["pairs"]) >= 8
    assert len(t["input_ids"]) == len(t["scores"]) == len(t["logits"]) == len(t["pairs"])


@pytest.mark.parametrize("name", ALL)
def test_input_ids_follow_the_recipe(name, reference_golden, tokenizer):
    """prefix + tokens of the formatted middle (one piece) + suffix."""
    g = reference_golden(name)
    prefix = encode(tokenizer, g["prefix"]).ids
    suffix = encode(tokenizer, g["suffix"]).ids
    assert (len(prefix), len(suffix)) == (39, 9)
    for pair, ids in zip(g["pairs"], g["input_ids"]):
        assert ids == prefix + encode(tokenizer, middle_text(g, pair)).ids + suffix


@pytest.mark.parametrize("name", ALL)
def test_joined_ids_equal_recipe_ids_for_qwen3(name, reference_golden):
    g = reference_golden(name)
    assert g["joined_input_ids"] == g["input_ids"]


@pytest.mark.parametrize("name", ALL)
def test_pairs_span_the_lengths(name, reference_golden, tokenizer):
    g = reference_golden(name)
    doc_lengths = [len(encode(tokenizer, p["document"]).ids) for p in g["pairs"]]
    assert min(doc_lengths) == 0 and 1 in doc_lengths
    assert max(doc_lengths) > 500


@pytest.mark.parametrize("name", ALL)
def test_scores_are_spread_out(name, reference_golden):
    scores = sorted(reference_golden(name)["scores"])
    n = len(scores)

    def quantile(q):
        x = q * (n - 1)
        lo = int(x)
        hi = min(lo + 1, n - 1)
        return scores[lo] + (scores[hi] - scores[lo]) * (x - lo)

    assert quantile(0.75) - quantile(0.25) > 0.2
    saturated = sum(s < 0.01 or s > 0.99 for s in scores)
    assert saturated < 0.1 * n


@pytest.mark.parametrize("name", ALL)
def test_scores_are_above_float_noise(name, reference_golden):
    """The recipe's padded batches of 8 and unpadded batch-size-1 runs agree."""
    g = reference_golden(name)
    for a, b in zip(g["scores"], g["unpadded"]["scores"]):
        assert abs(a - b) < 1e-5


@pytest.mark.parametrize("name", ALL)
def test_truncation_cuts_only_inside_the_document(name, reference_golden, tokenizer):
    g = reference_golden(name)
    t = g["truncation"]
    prefix = encode(tokenizer, g["prefix"]).ids
    suffix = encode(tokenizer, g["suffix"]).ids
    budget = t["max_length"] - len(prefix) - len(suffix)
    for pair, ids in zip(t["pairs"], t["input_ids"]):
        text = middle_text(g, pair)
        enc = encode(tokenizer, text)
        doc_start = len(text) - len(pair["document"])
        first_doc_token = next(k for k, (_, end) in enumerate(enc.offsets) if end > doc_start)
        assert first_doc_token + 4 <= budget < len(enc.ids) - 3
        assert ids == prefix + enc.ids[:budget] + suffix
        assert len(ids) == t["max_length"]


@pytest.mark.parametrize("name", ALL)
def test_weights_digest_matches_the_files(name, reference_fixture, reference_golden):
    g = reference_golden(name)
    assert _fixtures.specs().weights_sha256(reference_fixture(name)) == g["weights_sha256"]


@pytest.mark.parametrize("name", ["qwen3-tiny-sharded", "qwen3-tiny-legacy"])
def test_same_weights_give_the_same_golden(name, reference_golden):
    g, src = reference_golden(name), reference_golden("qwen3-tiny")
    assert g["source_fixture"] == "qwen3-tiny"
    assert g["weights_sha256"] == src["weights_sha256"] == g["source_weights_sha256"]
    assert g["input_ids"] == src["input_ids"]
    assert g["truncation"]["input_ids"] == src["truncation"]["input_ids"]
    assert g["scores"] == pytest.approx(src["scores"], abs=1e-7)
    assert g["truncation"]["scores"] == pytest.approx(src["truncation"]["scores"], abs=1e-7)


def test_bf16_fixture_rounds_the_f32_weights(reference_fixture, reference_golden):
    g, src = reference_golden("qwen3-tiny-bf16"), reference_golden("qwen3-tiny")
    assert g["source_fixture"] == "qwen3-tiny"
    assert g["source_weights_sha256"] == src["weights_sha256"]
    assert g["input_ids"] == src["input_ids"]
    bf16 = tensors(reference_fixture("qwen3-tiny-bf16"))
    f32 = tensors(reference_fixture("qwen3-tiny"))
    assert set(bf16) == set(f32)
    assert {t["dtype"] for t in bf16.values()} == {"BF16"}
    assert {t["dtype"] for t in f32.values()} == {"F32"}
    config = json.loads((reference_fixture("qwen3-tiny-bf16") / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    # Rounding moves the scores, but not beyond recognition.
    diffs = [abs(a - b) for a, b in zip(g["scores"], src["scores"])]
    assert 0 < max(diffs) < 0.2


def test_sharded_fixture_has_several_shards(reference_fixture):
    path = reference_fixture("qwen3-tiny-sharded")
    index = json.loads((path / "model.safetensors.index.json").read_text())
    files = set(index["weight_map"].values())
    assert len(files) >= 3
    assert not (path / "model.safetensors").exists()
    assert set(index["weight_map"]) == set(tensors(path))
    assert set(tensors(path)) == set(tensors(reference_fixture("qwen3-tiny")))


def test_legacy_config_differs_only_in_key_names(reference_fixture):
    new = json.loads((reference_fixture("qwen3-tiny") / "config.json").read_text())
    old = json.loads((reference_fixture("qwen3-tiny-legacy") / "config.json").read_text())
    assert set(new) - set(old) == {"rope_parameters", "dtype"}
    assert set(old) - set(new) == {"rope_theta", "rope_scaling", "torch_dtype"}
    assert new["rope_parameters"] == {"rope_type": "default", "rope_theta": old["rope_theta"]}
    assert old["rope_scaling"] is None
    assert new["dtype"] == old["torch_dtype"] == "float32"
    for key in set(new) & set(old):
        assert new[key] == old[key], key


def test_head_is_tied_or_separate_as_configured(reference_fixture):
    for name, tied in (("qwen3-tiny", False), ("qwen3-tiny-tied", True)):
        path = reference_fixture(name)
        config = json.loads((path / "config.json").read_text())
        assert config["tie_word_embeddings"] is tied
        assert ("lm_head.weight" in tensors(path)) is not tied
        assert config["head_dim"] * config["num_attention_heads"] != config["hidden_size"]


def test_fixture_plumbing_does_not_import_torch(reference_golden):
    reference_golden("qwen3-tiny")  # built (in a subprocess) before the probe
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import _fixtures; "
        "_fixtures.load_golden('qwen3-tiny'); "
        "_fixtures.specs().is_fresh('qwen3-tiny', _fixtures.FIXTURES_DIR); "
        "bad = sorted(m for m in ('torch', 'transformers') if m in sys.modules); "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", probe, str(_fixtures.TESTS_DIR)], check=True)
