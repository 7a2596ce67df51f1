"""A load reads and normalises the checkpoint's config.json once, whichever way the head is named."""
import pytest

import crossrank
from crossrank import loading

from _fixtures import fixture_path


@pytest.fixture
def counted_reads(monkeypatch):
    calls = []
    original = loading.load_config

    def counting(path, hf_overrides=None):
        calls.append(path)
        return original(path, hf_overrides)

    monkeypatch.setattr(loading, "load_config", counting)
    return calls


def _head_overrides():
    return {"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["no", "yes"],
            "is_original_qwen3_reranker": True}


@pytest.mark.parametrize("how", ["template", "hf_overrides"])
def test_config_is_loaded_once(counted_reads, how):
    path = fixture_path("qwen3-tiny")
    kwargs = {"template": "qwen3-reranker"} if how == "template" else {"hf_overrides": _head_overrides()}
    model = crossrank.CrossEncoder(path, threads=1, **kwargs)
    assert len(counted_reads) == 1
    assert model.config.head.kind != "none"

