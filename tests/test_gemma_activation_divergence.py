"""Gemma's MLP activation: vLLM's rule, which crossrank follows, against transformers 5.

vLLM (``_get_gemma_act_fn`` in its Gemma model) reads ``hidden_activation``: absent, it runs the
tanh GELU whatever ``hidden_act`` says (the original Gemma configs wrote ``"gelu"`` but meant the
tanh approximation); ``"gelu_pytorch_tanh"`` is the tanh GELU and ``"gelu"`` the exact one.

transformers 5.24 reads ``hidden_act`` only, and ``GemmaConfig.__post_init__`` rewrites the legacy
``hidden_act="gelu"`` to ``"gelu_pytorch_tanh"``. So:

* the real bge-reranker-v2-gemma config (``hidden_act: "gelu"``, ``hidden_activation:
  "gelu_pytorch_tanh"``) runs the tanh GELU in both: the scores agree;
* ``hidden_act: "gelu"`` with no ``hidden_activation`` also runs the tanh GELU in both (vLLM by
  its default, transformers by the rewrite): a config like that does *not* make them diverge;
* they part only when ``hidden_activation`` asks for something ``hidden_act`` does not say, e.g.
  ``hidden_activation: "gelu"``: exact GELU in vLLM and crossrank, tanh GELU in transformers.
  The last test shows that divergence on the gemma-tiny fixture's weights.

This module imports torch (the comparison needs transformers in-process); it is skipped without it.
"""
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from _family_fixtures import family_fixture_path  # noqa: E402
from crossrank import CrossEncoder  # noqa: E402

ATOL = 1e-4
REAL_CONFIG = {"hidden_act": "gelu", "hidden_activation": "gelu_pytorch_tanh"}   # bge-reranker-v2-gemma
LEGACY_ONLY = {"hidden_act": "gelu"}
EXACT_REQUESTED = {"hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu"}


@pytest.fixture(scope="module")
def fixture():
    path = family_fixture_path("gemma-tiny")
    golden = json.loads((path / "golden.json").read_text(encoding="utf-8"))
    return path, golden


def variant(src, dst, activation_keys):
    """The fixture's checkpoint with the activation keys of config.json replaced."""
    dst.mkdir()
    for f in src.iterdir():
        if f.name != "config.json":
            os.symlink(f, dst / f.name)
    config = json.loads((src / "config.json").read_text())
    config.pop("hidden_act", None)
    config.pop("hidden_activation", None)
    config.update(activation_keys)
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    return dst


def transformers_yes_logits(model_dir, ids, yes, act=None):
    """Raw "Yes" logit at the last position, one unpadded sequence at a time; `act` replaces
    every MLP's activation module when given."""
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if act is not None:
        for layer in model.model.layers:
            layer.mlp.act_fn = act
    out = []
    with torch.no_grad():
        for seq in ids:
            out.append(float(model(input_ids=torch.tensor([seq]), logits_to_keep=1).logits[0, -1, yes]))
    return np.array(out), model.config.hidden_act


def crossrank_yes_logits(model_dir, ids, golden):
    model = CrossEncoder(model_dir, hf_overrides=golden["hf_overrides"], template=golden["template"], dtype="float32")
    return model.forward_ids(ids)[:, 0], model.config.activation


@pytest.mark.parametrize("keys", [REAL_CONFIG, LEGACY_ONLY],
                         ids=["real-bge-gemma-config", "hidden_act-gelu-only"])
def test_tanh_gelu_in_both_when_hidden_activation_is_absent_or_tanh(fixture, tmp_path, keys):
    src, golden = fixture
    model_dir = variant(src, tmp_path / "model", keys)
    ids = golden["input_ids"][:24]
    yes = golden["label_tokens"]["Yes"]
    ours, activation = crossrank_yes_logits(model_dir, ids, golden)
    theirs, hidden_act = transformers_yes_logits(model_dir, ids, yes)
    assert activation == "gelu_tanh"
    assert hidden_act == "gelu_pytorch_tanh"   # transformers rewrote the legacy "gelu"
    np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)
    np.testing.assert_allclose(ours, golden["logits"][:24], atol=ATOL, rtol=0)


def test_explicit_exact_gelu_diverges_from_transformers(fixture, tmp_path):
    src, golden = fixture
    model_dir = variant(src, tmp_path / "model", EXACT_REQUESTED)
    ids = golden["input_ids"][:24]
    yes = golden["label_tokens"]["Yes"]
    ours, activation = crossrank_yes_logits(model_dir, ids, golden)
    theirs, hidden_act = transformers_yes_logits(model_dir, ids, yes)
    exact, _ = transformers_yes_logits(model_dir, ids, yes, act=torch.nn.GELU(approximate="none"))
    assert activation == "gelu" and hidden_act == "gelu_pytorch_tanh"
    # crossrank runs the exact GELU the config asks for (as vLLM does) ...
    np.testing.assert_allclose(ours, exact, atol=ATOL, rtol=0)
    # ... which is measurably not what transformers runs on the same config.
    assert np.max(np.abs(ours - theirs)) > 5 * ATOL
