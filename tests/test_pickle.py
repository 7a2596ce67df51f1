"""A CrossEncoder pickles as its path and options and reloads on unpickling (Ray workers,
multiprocessing pools): same prompts, same scores, no weights and no hub token in the pickle."""
import multiprocessing
import operator
import os
import pickle

import numpy as np
import pytest

from _fixtures import fixture_path
from crossrank import CrossEncoder, ModelNotFoundError
from crossrank.chat_template import ChatTemplate
from crossrank.chunking import Chunking

OVERRIDES = {"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["no", "yes"],
             "is_original_qwen3_reranker": True}
QUERY = "How do vaccines train the immune system?"
DOCS = [
    "Vaccines expose the immune system to a harmless piece of a pathogen so it can learn to recognise it.",
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "Memory B cells and T cells persist after vaccination and respond quickly to later infection. " * 12,
]
CHAT = ("Q: {{ (messages | selectattr('role', 'eq', 'query') | first).content }}\n"
        "D: {{ (messages | selectattr('role', 'eq', 'document') | first).content }}\nRelevant (yes/no):")


@pytest.fixture(scope="module")
def model():
    return CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=OVERRIDES, max_length=96, threads=1,
                        activation_fn="identity", prompts={"med": "Judge medical accuracy"},
                        default_prompt_name="med", chunking=Chunking(size=30, overlap=5), token="hf_secret_value")


def test_round_trip_keeps_options_and_scores(model):
    blob = pickle.dumps(model)
    assert len(blob) < 20_000 and b"hf_secret_value" not in blob
    copy = pickle.loads(blob)
    assert copy is not model and copy.engine is not model.engine
    assert (copy.path, copy.max_length, copy.threads, copy.prompt_format, copy.activation_fn) == \
        (model.path, 96, 1, "qwen3-reranker", "identity")
    assert copy.prompts == model.prompts and copy.default_prompt_name == "med" and copy.chunking == model.chunking
    np.testing.assert_array_equal(copy.score(QUERY, DOCS), model.score(QUERY, DOCS))
    np.testing.assert_array_equal(copy.predict([(QUERY, DOCS[0])]), model.predict([(QUERY, DOCS[0])]))


def test_a_spawned_worker_scores_like_this_process(model):
    expected = model.score(QUERY, DOCS)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        (got,) = pool.map(operator.methodcaller("score", QUERY, DOCS), [model])
    np.testing.assert_array_equal(got, expected)


def test_chat_template_models_pickle(tmp_path):
    chat = CrossEncoder(fixture_path("qwen3-tiny"), template=ChatTemplate(CHAT),
                        hf_overrides={"architectures": ["Qwen3ForSequenceClassification"],
                                      "classifier_from_token": ["no", "yes"], "method": "from_2_way_softmax"})
    copy = pickle.loads(pickle.dumps(chat))
    assert copy.prompt_format == "chat" and copy.chat_template == chat.chat_template
    np.testing.assert_array_equal(copy.score(QUERY, DOCS), chat.score(QUERY, DOCS))


def test_an_unpicklable_activation_is_named():
    custom = CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=OVERRIDES, activation_fn=lambda x: x * 2)
    with pytest.raises(TypeError, match="cannot be pickled: its activation_fn .* cannot be pickled"):
        pickle.dumps(custom)


def test_a_moved_model_is_looked_up_again_and_reported_when_gone(tmp_path):
    src = fixture_path("qwen3-tiny")
    d = tmp_path / "qwen3"
    d.mkdir()
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        os.symlink(src / f, d / f)
    blob = pickle.dumps(CrossEncoder(d, hf_overrides=OVERRIDES, local_files_only=True))
    d.rename(tmp_path / "moved")
    with pytest.raises(ModelNotFoundError, match="qwen3"):
        pickle.loads(blob)


def test_prompts_and_chunking_set_after_loading_survive_pickling(model):
    copy = pickle.loads(pickle.dumps(model))
    copy.prompts["strict"] = "Judge strictly"
    copy.default_prompt_name = "strict"
    copy.chunking = Chunking(size=20, overlap=2, aggregate="first")
    copy.max_length = 80
    again = pickle.loads(pickle.dumps(copy))
    assert (again.prompts, again.default_prompt_name, again.chunking, again.max_length) == \
        (copy.prompts, "strict", copy.chunking, 80)
    np.testing.assert_array_equal(again.score(QUERY, DOCS), copy.score(QUERY, DOCS))
    copy.default_prompt_name = None  # no default, though the constructor gave one
    assert pickle.loads(pickle.dumps(copy)).default_prompt_name is None
