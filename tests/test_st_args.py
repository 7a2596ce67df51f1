"""What sentence-transformers 6 code passes and reads: its deprecated and torch-only arguments,
``max_seq_length``, ``tokenizer.model_max_length``, ``is_singular_input``, ``supports``, ``device``,
``top_k`` slicing, the inputs it passes (NumPy integers, array-likes), and multi-process prediction
(bitwise the scores of one process, with the model's settings of the moment)."""
import logging

import numpy as np
import pytest

from _fixtures import fixture_path
from crossrank import CrossEncoder, st_compat
from crossrank.chunking import Chunking
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


def test_a_pool_scores_with_the_prompts_chunking_and_length_the_model_has_now(package):
    m = CrossEncoder(package, dtype="float32", threads=1)
    pairs, long_docs = PAIRS[:6], [" ".join(["words"] * 300), DOCS[0]]
    pool = m.start_multi_process_pool(["cpu"])  # started before the changes below
    try:
        m.default_prompt_name = "student"
        m.prompts["mine"] = "Judge strictly whether the document answers the query"
        m.max_length = 150
        m.chunking = Chunking(size=40, overlap=4)
        assert not np.array_equal(m.predict(pairs), m.predict(pairs, prompt_name="mine"))
        np.testing.assert_array_equal(m.predict(pairs, pool=pool), m.predict(pairs))
        np.testing.assert_array_equal(m.predict(pairs, pool=pool, prompt_name="mine"),
                                      m.predict(pairs, prompt_name="mine"))
        assert m.rank(QUERY, long_docs, pool=pool) == m.rank(QUERY, long_docs)
        assert m.rank(QUERY, long_docs, pool=pool, chunking=False) == m.rank(QUERY, long_docs, chunking=False)
        assert m.rank(QUERY, long_docs, prompt_name="mine", pool=pool) == m.rank(QUERY, long_docs, prompt_name="mine")
        np.testing.assert_array_equal(m.predict(pairs, pool=pool, batch_size=np.int64(2), chunk_size=np.int64(4)),
                                      m.predict(pairs))
    finally:
        m.stop_multi_process_pool(pool)


def test_rank_slices_top_k_as_sentence_transformers_for_any_integer(model):
    full = model.rank(QUERY, DOCS[:6])
    assert model.rank(QUERY, DOCS[:6], top_k=0) == []
    assert model.rank(QUERY, DOCS[:6], top_k=-1) == full[:-1]
    assert model.rank(QUERY, DOCS[:6], top_k=np.int64(2)) == full[:2]
    for bad in (2.0, True, "2"):
        with pytest.raises(ValueError, match="top_k must be an integer or None"):
            model.rank(QUERY, DOCS[:6], top_k=bad)


def test_documents_may_be_any_iterable_of_str(model):
    docs = DOCS[:4]
    expected = model.rank(QUERY, docs, return_documents=True)
    for given in (tuple(docs), np.array(docs), (d for d in docs), map(str, docs)):
        got = model.rank(QUERY, given, return_documents=True)
        assert got == expected and all(type(r["text"]) in (str, np.str_) for r in got), type(given)
    np.testing.assert_array_equal(model.score(QUERY, np.array(docs)), model.score(QUERY, docs))
    pd = pytest.importorskip("pandas")
    series = pd.Series(docs, index=[10, 11, 12, 13])  # labels that are not positions
    assert model.rank(QUERY, series, return_documents=True) == expected
    with pytest.raises(TypeError, match="documents must be a list of str, got str"):
        model.rank(QUERY, "one document")
    with pytest.raises(TypeError, match="document 1 must be a str, got int"):
        model.score(QUERY, iter(["fine", 3]))


def test_numpy_integers_are_taken_where_integers_are(package, model):
    m = CrossEncoder(package, dtype="float32", max_length=np.int64(64), threads=np.int32(2))
    assert m.max_length == 64 and type(m.max_length) is int
    np.testing.assert_array_equal(model.predict(PAIRS[:4], batch_size=np.int64(2)), model.predict(PAIRS[:4]))
    m.max_seq_length = np.int16(50)
    assert m.tokenizer.model_max_length == 50 and type(m.max_length) is int
    assert Chunking(size=np.int64(30), overlap=np.int8(3)) == Chunking(size=30, overlap=3)
    for bad in (True, 2.0):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            model.predict(PAIRS[:2], batch_size=bad)


def test_max_length_is_checked_however_it_is_set(package):
    m = CrossEncoder(package, dtype="float32", max_length=120)
    for bad in (None, 0, 1.5, True):
        with pytest.raises(ValueError, match="max_length must be a positive integer"):
            m.max_length = bad
    assert m.max_length == 120 and len(m.tokenize_pairs([(QUERY, " ".join(["words"] * 200))]).input_ids[0]) == 120


def test_predict_tells_one_pair_from_a_batch_by_sentence_transformers_rule(model):
    with pytest.raises(TypeError, match=r"pair 0: both texts must be str, got \(str, NoneType\)"):
        model.predict((QUERY, None))
    with pytest.raises(TypeError, match=r"pair 0 must be a \(text_1, text_2\) pair, got a list of 3 items"):
        model.predict([QUERY, "a", "b"])
    with pytest.raises(TypeError, match="takes a .* pair or a list of them, got str"):
        model.predict("a single text")
    assert np.ndim(model.predict([QUERY, DOCS[0]])) == 0  # a list of two str is one pair
    np.testing.assert_array_equal(model.predict(p for p in PAIRS[:3]), model.predict(PAIRS[:3]))


def test_sentence_transformers_members_on_the_cpu(model):
    from _fixtures import torch_hidden

    with torch_hidden():
        assert model.device == "cpu"
    assert model.to("cpu") is model and model.eval() is model
    assert model.get_max_seq_length() == model.max_seq_length == model.max_length
    with pytest.raises(ValueError, match="runs on the CPU .* to\\('cuda'\\) is not available"):
        model.to("cuda")


def test_sentence_transformers_constructor_options_are_taken_where_they_change_nothing(package, caplog):
    with caplog.at_level(logging.WARNING, logger="crossrank"):
        m = CrossEncoder(package, dtype="float32", trust_remote_code=False, model_kwargs={}, processor_kwargs=None,
                         config_kwargs={}, backend="torch", keep_in_fp32_modules=None, modules=None,
                         tokenizer_args=None, config_args={}, automodel_args={}, classifier_dropout=0.1)
    messages = " ".join(_warnings(caplog))
    assert "`tokenizer_args` argument was renamed" in messages
    assert "`classifier_dropout` argument is deprecated" in messages
    np.testing.assert_array_equal(m.predict(PAIRS[:2], processing_kwargs=None),
                                  m.predict(PAIRS[:2], processing_kwargs={}))
    for option, value, why in (("backend", "onnx", "its own C engine"),
                               ("model_kwargs", {"torch_dtype": "float16"}, "dtype="),
                               ("automodel_args", {"attn_implementation": "sdpa"}, "dtype="),
                               ("config_kwargs", {"num_hidden_layers": 1}, "hf_overrides=")):
        with pytest.raises(ValueError, match=f"is not supported: .*{why}"):
            CrossEncoder(package, dtype="float32", **{option: value})
    with pytest.raises(ValueError, match="processing_kwargs=...\\) is not supported"):
        m.predict(PAIRS[:2], processing_kwargs={"text": {"max_length": 16}})


def test_callables_for_torch_tensors_are_named_when_torch_is_missing(model):
    from _fixtures import torch_hidden
    from crossrank.activations import normalize_activation

    def torch_like(x):
        return x.sigmoid()

    torch_like.__module__ = "torch.nn.functional"  # known as torch's by its module, without importing torch
    assert repr(normalize_activation(torch_like)).startswith("torch callable")
    with torch_hidden():
        with pytest.raises(TypeError, match="fails on the scores as a NumPy array .*without torch installed"):
            model.predict(PAIRS[:2], activation_fn=lambda x: x.sigmoid())
    np.testing.assert_allclose(model.predict(PAIRS[:2], activation_fn=lambda x: 1 / (1 + np.exp(-x))),
                               model.predict(PAIRS[:2]), atol=1e-6)
