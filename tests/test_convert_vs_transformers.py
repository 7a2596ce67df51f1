"""REFERENCE-COMPARISON TEST: the converted checkpoint in transformers itself.

Unlike the rest of the crossrank stage, this module imports torch and transformers in the test
process (it is skipped when they are not installed), as test_config_vs_transformers.py does. It
checks that a checkpoint written by crossrank.convert loads in
``transformers.AutoModelForSequenceClassification`` with no missing, unexpected or mismatched
keys, and that transformers' logits for a right-padded batch of golden prompts equal crossrank's
raw logits within 1e-4.

transformers' ``*ForSequenceClassification`` pools the rightmost token that is not the pad id,
so the batch is right-padded with ``config.pad_token_id`` (and an attention mask), and no prompt
may itself end in the pad id; the test checks both.
"""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from _fixtures import fixture_path, load_golden  # noqa: E402
from crossrank import CrossEncoder, convert  # noqa: E402

TOKENS = ["no", "yes"]
BATCH = 8


def right_padded(ids, pad_id):
    width = max(len(s) for s in ids)
    input_ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in ids], dtype=torch.long)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in ids], dtype=torch.long)
    return input_ids, mask


def pick_pairs(golden, n=BATCH):
    """n golden prompts of different lengths (so the batch really is padded)."""
    ids = golden["input_ids"]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    step = max(1, len(order) // n)
    chosen = order[::step][:n]
    assert len({len(ids[i]) for i in chosen}) > 1
    return [ids[i] for i in chosen]


def load_hf(out):
    model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(out), dtype=torch.float32, output_loading_info=True)
    model.eval()
    return model, info


@pytest.mark.parametrize("name, tokens, method, labels", [
    ("qwen3-tiny", TOKENS, "from_2_way_softmax", 1),
    ("qwen3-tiny-tied", TOKENS, "from_2_way_softmax", 1),
    ("qwen3-tiny-bf16", TOKENS, "from_2_way_softmax", 1),
    ("qwen3-tiny", ["yes", "no", "Yes"], "no_post_processing", 3),
])
def test_converted_checkpoint_loads_in_transformers_with_crossrank_logits(tmp_path, name, tokens, method, labels):
    out = convert(fixture_path(name), tokens, method, tmp_path / "seq-cls", template="qwen3-reranker")
    model, info = load_hf(out)
    assert type(model).__name__ == "Qwen3ForSequenceClassification"
    assert not info["missing_keys"], info
    assert not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    assert model.config.num_labels == labels
    assert model.score.weight.shape == (labels, model.config.hidden_size)

    pad_id = json.loads((out / "config.json").read_text())["pad_token_id"]
    assert model.config.pad_token_id == pad_id is not None
    ids = pick_pairs(load_golden(name))
    assert len(ids) >= 4 and all(s[-1] != pad_id for s in ids)  # else transformers pools the wrong token
    input_ids, mask = right_padded(ids, pad_id)
    with torch.no_grad():
        hf_logits = model(input_ids=input_ids, attention_mask=mask).logits.numpy()
    assert hf_logits.shape == (len(ids), labels)

    ours = CrossEncoder(out, threads=2, dtype="float32").forward_ids(ids)
    np.testing.assert_allclose(ours, hf_logits, rtol=0, atol=1e-4)


def test_transformers_pools_the_last_real_token_of_a_right_padded_batch(tmp_path):
    """The padded batch gives the same logits as each prompt alone (the check the test above
    relies on: right padding with the pad id selects each prompt's own last token)."""
    out = convert(fixture_path("qwen3-tiny"), TOKENS, "from_2_way_softmax", tmp_path / "seq-cls")
    model, _ = load_hf(out)
    ids = pick_pairs(load_golden("qwen3-tiny"), 4)
    input_ids, mask = right_padded(ids, model.config.pad_token_id)
    with torch.no_grad():
        batched = model(input_ids=input_ids, attention_mask=mask).logits.numpy()
        alone = np.concatenate([model(input_ids=torch.tensor([s])).logits.numpy() for s in ids])
    np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-5)
