"""What sentence-transformers 6 code passes and reads: its deprecated arguments (with its warnings),
``max_seq_length``, ``tokenizer.model_max_length``, ``is_singular_input``, ``supports``, and
multi-process prediction (bitwise the scores of one process)."""
import logging

import numpy as np
import pytest

from _fixtures import fixture_path
from crossrank import CrossEncoder, st_compat
from crossrank.st_compat import ModelCardData, TokenizerAdapter
from test_st_compat import DOCS, PAIRS, QUERY, link_checkpoint, write_st_package


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """Deprecation warnings are logged once per process, as sentence-transformers' are; each test
    here sees them afresh, whatever ran before it in the process."""
    monkeypatch.setattr(st_compat, "_warned", set())


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return write_st_package(link_checkpoint(fixture_path("qwen3-tiny"), tmp_path_factory.mktemp("args") / "pkg"))


@pytest.fixture(scope="module")
def model(package):
    return CrossEncoder(package, dtype="float32", threads=2)


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_renamed_constructor_arguments_warn_and_apply(package, caplog):
    with caplog.at_level(logging.WARNING, logger="crossrank"):
        m = CrossEncoder(model_name=str(package), cache_dir=None, default_activation_function="identity",
                         dtype="float32")
    messages = " ".join(_warnings(caplog))
    for old, new in (("model_name", "model_name_or_path"), ("cache_dir", "cache_folder"),
                     ("default_activation_function", "activation_fn")):
        assert f"`{old}` argument was renamed and is now deprecated. Please use `{new}`" in messages
    assert m.activation_fn == "identity" and m.path == package
    with caplog.at_level(logging.WARNING, logger="crossrank"):
        assert m.default_activation_function == "identity"
    assert "`default_activation_function` property was renamed" in " ".join(_warnings(caplog))


def test_old_positional_arguments_are_taken_with_a_warning(package, caplog):
    with caplog.at_level(logging.WARNING, logger="crossrank"):
        m = CrossEncoder(str(package), 1, 256, "identity", "cpu", dtype="float32")
    assert m.max_length == 256 and m.activation_fn == "identity"
    assert "Passing `max_length` as a positional argument to CrossEncoder is deprecated" in " ".join(_warnings(caplog))
    with pytest.raises(ValueError, match="num_labels=3, but .* scores 1 label"):
        CrossEncoder(str(package), num_labels=3, dtype="float32")
    with pytest.raises(TypeError, match="at most 5 positional arguments"):
        CrossEncoder(str(package), 1, 256, None, "cpu", "extra")


def test_predict_and_rank_take_the_deprecated_keywords(model, caplog):
    pairs = PAIRS[:4]
    base = model.predict(pairs)
    with caplog.at_level(logging.WARNING, logger="crossrank"):
        np.testing.assert_array_equal(model.predict(sentences=pairs, num_workers=4), base)
        raw = model.predict(pairs, activation_fct="identity")
    assert not np.array_equal(raw, base)
    np.testing.assert_array_equal(raw, model.predict(pairs, activation_fn="identity"))
    with caplog.at_level(logging.WARNING, logger="crossrank"):
        ranked = model.rank(QUERY, DOCS, convert_to_numpy=True, convert_to_tensor=True, apply_softmax=True,
                            num_workers=2)
    assert ranked == model.rank(QUERY, DOCS)
    messages = " ".join(_warnings(caplog))
    assert "The `sentences` argument was renamed" in messages and "`activation_fct` argument was renamed" in messages
    assert "CrossEncoder.predict `num_workers` argument is deprecated and has no effect" in messages
    assert "CrossEncoder.rank `convert_to_tensor` argument is deprecated and has no effect" in messages
    assert "CrossEncoder.rank `apply_softmax` argument is deprecated and has no effect" in messages
    with pytest.raises(TypeError, match="unexpected keyword argument 'num_beams'"):
        model.predict(pairs, num_beams=2)


def test_lengths_inputs_and_modalities(package):
    m = CrossEncoder(package, dtype="float32", max_length=64)
    assert isinstance(m.tokenizer, TokenizerAdapter)
    assert m.max_seq_length == m.tokenizer.model_max_length == 64
    long_pair = (QUERY, " ".join(["words"] * 200))
    m.tokenizer.model_max_length = 100
    assert m.max_length == 100 and len(m.tokenize_pairs([long_pair]).input_ids[0]) == 100
    m.max_seq_length = 90
    assert m.tokenizer.model_max_length == 90 and len(m.tokenize_pairs([long_pair]).input_ids[0]) == 90
    with pytest.raises(ValueError, match="max_seq_length must be a positive integer"):
        m.tokenizer.model_max_length = 0
    assert m.tokenizer.token_to_id("yes") is not None  # the tokenizers.Tokenizer underneath
    assert m.is_singular_input(("q", "d")) and m.is_singular_input(["q", "d"])
    assert not m.is_singular_input([("q", "d")]) and not m.is_singular_input([])
    assert m.is_singular_input(np.array(["q", "d"])) and not m.is_singular_input(np.array([["q", "d"]]))
    assert m.supports("text") and not m.supports("image") and not m.supports(("image", "text"))
    assert isinstance(m.model_card_data, ModelCardData) and m.model_card_data.model_id == str(package)
    import pickle

    copy = pickle.loads(pickle.dumps(m))
    assert isinstance(copy.model_card_data, ModelCardData) and copy.max_seq_length == 90


def test_a_pool_gives_bitwise_the_scores_of_one_process(model):
    pairs = PAIRS[:24]
    one = model.predict(pairs)
    ranked = model.rank(QUERY, DOCS, top_k=5)
    pool = model.start_multi_process_pool(["cpu", "cpu"])
    try:
        assert len(pool["processes"]) == 2 and pool["threads"] >= 1
        np.testing.assert_array_equal(model.predict(pairs, pool=pool), one)
        np.testing.assert_array_equal(model.predict(pairs, pool=pool, chunk_size=5), one)
        np.testing.assert_array_equal(model.predict(pairs, pool=pool, activation_fn="identity"),
                                      model.predict(pairs, activation_fn="identity"))
        assert model.rank(QUERY, DOCS, top_k=5, pool=pool, chunk_size=3) == ranked
        assert model.predict(pairs[3], pool=pool) == one[3]
        with pytest.raises(ValueError, match="'nope' is not one of the prompts"):
            model.predict(pairs, pool=pool, prompt_name="nope")
        with pytest.raises(TypeError, match="cannot be pickled"):
            model.predict(pairs, pool=pool, activation_fn=lambda x: x)
    finally:
        model.stop_multi_process_pool(pool)
    np.testing.assert_array_equal(model.predict(pairs, device=["cpu", "cpu"]), one)
    with pytest.raises(ValueError, match="runs on the CPU"):
        model.start_multi_process_pool(["cuda:0"])


def test_the_package_never_imports_torch_for_numpy_results(package):
    import subprocess
    import sys

    code = ("import sys, crossrank; m = crossrank.CrossEncoder(sys.argv[1], dtype='float32', activation_fn='tanh'); "
            "m.predict([('q', 'd'), ('q', 'e')], apply_softmax=True); m.rank('q', ['d', 'e']); "
            "m.predict([('q', 'd')], activation_fn=crossrank.activations.normalize_activation('torch.nn.GELU')); "
            "assert 'torch' not in sys.modules, 'torch was imported'; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code, str(package)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
