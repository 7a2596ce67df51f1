"""A valid tokenizer.json whose Rust code panics on some input (pyo3's PanicException, a
BaseException that slips past ``except Exception``): scoring raises crossrank's TokenizationError
naming the pair, and the server answers 400 (TEI: 422 ``Tokenizer``) instead of a raw panic."""
import json
import pickle

import pytest

from _fixtures import fixture_path
import crossrank
from crossrank import CrossEncoder, TokenizationError

OVERRIDES = {"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["no", "yes"],
             "is_original_qwen3_reranker": True}
TRIGGER = "\u2603panic-here"  # the text the patched tokenizer panics on


def real_panic_class():
    """pyo3's PanicException, from a real panic: pyo3 creates the class only when a panic happens
    (a normalizer that replaces the empty string panics on any text, see test_errors.py)."""
    from tokenizers import Tokenizer

    data = json.loads((fixture_path("qwen3-tiny") / "tokenizer.json").read_text(encoding="utf-8"))
    data["normalizer"] = {"type": "Replace", "pattern": {"String": ""}, "content": "aa"}
    try:
        Tokenizer.from_str(json.dumps(data)).encode("x")
    except BaseException as exc:  # noqa: B036 (the panic is what we want)
        assert not isinstance(exc, Exception)
        return type(exc)
    pytest.fail("the damaged tokenizer did not panic")


class PanickyTokenizer:
    """The model's tokenizer, except that it panics on any text ``bad`` says is bad (default: one
    holding TRIGGER), as tokenizers' Rust code does on the input that hits one of its bugs."""

    def __init__(self, real, panic, bad=lambda text: TRIGGER in text):
        self._real = real
        self._panic = panic
        self._bad = bad

    def __getattr__(self, name):
        return getattr(self._real, name)

    def _check(self, inputs):
        for item in inputs:
            if self._bad(item if isinstance(item, str) else "".join(item)):
                raise self._panic("index out of bounds: the len is 5 but the index is 5")

    def encode(self, sequence, pair=None, **kwargs):
        self._check([sequence] + ([pair] if pair is not None else []))
        return self._real.encode(sequence, pair, **kwargs)

    def encode_batch(self, inputs, **kwargs):
        self._check(inputs)
        return self._real.encode_batch(inputs, **kwargs)


@pytest.fixture(scope="module")
def panic():
    return real_panic_class()


def patch(model, monkeypatch, panic, **kwargs):
    encoder = model.prompting.encoder
    patched = PanickyTokenizer(encoder.tokenizer, panic, **kwargs)
    monkeypatch.setattr(encoder, "_tokenizer", patched)
    monkeypatch.setattr(encoder, "_user_tokenizer", patched)
    return model


@pytest.fixture()
def model(panic, monkeypatch):
    return patch(CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=OVERRIDES, threads=1), monkeypatch, panic)


def check_error(exc_info, pair):
    err = exc_info.value
    assert isinstance(err, ValueError) and isinstance(err, crossrank.CrossrankError)
    assert err.indices == [pair]
    message = str(err)
    assert f"the tokenizer failed on the text of pair {pair}" in message and "panicked" in message
    assert "index out of bounds" in err.reason


DOCS = ["Beijing is the capital of China.", "Gravity pulls objects together.", "a " + TRIGGER, "Paris."]


@pytest.mark.parametrize("call", ["score", "rank", "predict", "score_many", "rank_many"])
def test_a_panic_on_the_users_text_is_a_tokenization_error_naming_the_pair(model, call):
    with pytest.raises(TokenizationError) as info:
        if call == "score":
            model.score("capital of China", DOCS)
        elif call == "rank":
            model.rank("capital of China", DOCS)
        elif call == "predict":
            model.predict([("capital of China", d) for d in DOCS])
        elif call == "score_many":
            model.score_many(["q1", "q2"], [DOCS[:2], DOCS[2:]])
        else:
            model.rank_many(["q1", "q2"], [DOCS[:2], DOCS[2:]])
    check_error(info, 2)
    # the model is still usable, and the error crosses processes
    assert len(model.score("capital of China", DOCS[:2])) == 2
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value) and again.indices == info.value.indices and again.reason


def test_documents_tokenized_alone_for_chunking_name_their_pair(panic, monkeypatch):
    # panics only on a text that starts with TRIGGER: the document alone, not the prompt holding it
    model = patch(CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=OVERRIDES, threads=1), monkeypatch, panic,
                  bad=lambda text: text.startswith(TRIGGER))
    docs = ["short", "word " * 200, TRIGGER + "word " * 200]
    assert len(model.score("q", docs)) == 3
    with pytest.raises(TokenizationError) as info:
        model.score("q", docs, chunking={"size": 64})
    check_error(info, 2)


# -- the server --------------------------------------------------------------------------------


@pytest.fixture()
def client(model):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from crossrank.server.app import create_app
    from crossrank.server.settings import ServerSettings

    app = create_app(ServerSettings(model=str(fixture_path("qwen3-tiny")), threads=1), model=model)
    with TestClient(app) as client:
        yield client


def test_the_server_answers_a_panic_on_the_input_with_400_naming_the_pair(client):
    docs = [f"document {i}" for i in range(70)]
    docs[66] = TRIGGER  # in the second slice the server tokenizes (64 pairs a slice)
    for path, body in [("/rerank", {"query": "q", "documents": docs}),
                       ("/score", {"queries": "q", "documents": docs}),
                       ("/score", {"text_1": "q", "text_2": docs}),
                       ("/rerank", {"query": "q", "documents": docs, "max_tokens_per_doc": 8})]:
        resp = client.post(path, json=body)
        assert resp.status_code == 400, (path, resp.text)
        message = resp.json()["error"]["message"]
        assert "the tokenizer failed on the text of pair 66" in message and "panicked" in message
    tei = client.post("/rerank", json={"query": "q", "texts": docs})
    assert tei.status_code == 422 and tei.json()["error_type"] == "Tokenizer"
    assert "pair 66" in tei.json()["error"]
    resp = client.post("/tokenize", json={"prompt": TRIGGER})
    assert resp.status_code == 400 and "the tokenizer failed on the prompt" in resp.json()["error"]["message"]
    # the server goes on serving
    ok = client.post("/rerank", json={"query": "q", "documents": docs[:3]})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 3
