"""mxbai-rerank-v2, bge-reranker-v2-gemma, Llama and Mistral parity: crossrank against the official
recipes run in transformers (float32; same token ids, raw scores within 1e-4).

The golden ids and scores come from the reference stage (tests/reference/make_fixtures.py, the
recipes in recipe_*.py), run in a subprocess; this file imports no torch. Each fixture is a
random-weight checkpoint of its architecture:

* mxbai-tiny / mxbai-base (Qwen2, the real Qwen tokenizer): mixedbread's library recipe, pieces
  tokenized alone; mxbai-base has the real mxbai-rerank-base-v2 shape;
* gemma-tiny (Gemma, a tokenizer with Gemma's conventions built by the script): FlagEmbedding's
  recipe for bge-reranker-v2-gemma;
* llama-tiny-llama3rope (Llama, llama3 RoPE scaling with an original context of 32 tokens) and
  mistral-tiny-window (Mistral, sliding window of 8): the Qwen3-Reranker prompts.
"""
import functools
import json

import numpy as np
import pytest

from _family_fixtures import family_fixture_path
from crossrank import CrossEncoder
from crossrank.templates import get_template

PARITY_ATOL = 1e-4
TINY = ["mxbai-tiny", "gemma-tiny", "llama-tiny-llama3rope", "mistral-tiny-window"]
ALL = TINY + [pytest.param("mxbai-base", marks=pytest.mark.slow)]
TEMPLATED = ["mxbai-tiny", "gemma-tiny"]
# Names under which crossrank recognises the family (a substring of the hub id).
HUB_NAMES = {"mxbai-tiny": "mxbai-rerank-base-v2-tiny", "gemma-tiny": "bge-reranker-v2-gemma-tiny"}


@functools.lru_cache(maxsize=None)
def golden_of(name):
    return json.loads((family_fixture_path(name) / "golden.json").read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=6)
def load(name, max_length=None, **overrides):
    """The fixture with the golden's hf_overrides (plus `overrides`) and its template, cached
    (a model is immutable, and the real-shape one takes seconds to load)."""
    golden = golden_of(name)
    return CrossEncoder(family_fixture_path(name), hf_overrides={**golden["hf_overrides"], **overrides},
                        template=golden["template"], max_length=max_length, dtype="float32")


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def score_like_golden(model, section, activation_fn="identity"):
    """ids and scores (raw by default) of section["pairs"], one tokenize/score call per
    instruction, and whether each prompt was truncated."""
    pairs = section["pairs"]
    groups = {}
    for i, p in enumerate(pairs):
        groups.setdefault(p["instruction"], []).append(i)
    ids = [None] * len(pairs)
    raw = np.zeros(len(pairs))
    truncated = [None] * len(pairs)
    for instruction, idx in groups.items():
        queries = [pairs[i]["query"] for i in idx]
        docs = [pairs[i]["document"] for i in idx]
        enc = model.tokenize(queries, docs, instruction)
        raw[idx] = model.score(queries, docs, instruction, activation_fn=activation_fn)
        for k, i in enumerate(idx):
            ids[i] = enc.input_ids[k]
            truncated[i] = enc.truncated[k]
    return ids, raw, truncated


def assert_spread(scores):
    q25, q75 = np.percentile(scores, [25, 75])
    assert q75 - q25 > 0.2, f"scores are not spread: IQR {q75 - q25:.3f}"
    assert np.mean((scores < 0.01) | (scores > 0.99)) < 0.10, "too many saturated scores"


def request_pairs(section, indices=None):
    pairs = list(zip(section["text_1"], section["text_2"]))
    return pairs if indices is None else [pairs[i] for i in indices]


# -- The official recipe (template form) -----------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_official_recipe_ids_and_raw_scores_match_transformers(name):
    model, golden = load(name), golden_of(name)
    assert len(golden["pairs"]) >= 32
    ids, raw, _ = score_like_golden(model, golden)
    assert ids == golden["input_ids"]
    np.testing.assert_allclose(raw, golden["logits"], atol=PARITY_ATOL, rtol=0)
    # The library's own padded batches (left padding shifts RoPE positions: float noise only).
    np.testing.assert_allclose(raw, golden["padded"]["logits"], atol=PARITY_ATOL, rtol=0)


@pytest.mark.parametrize("name", TINY)
def test_default_activation_is_the_sigmoid_of_the_raw_score(name):
    model, golden = load(name), golden_of(name)
    default = [i for i, p in enumerate(golden["pairs"]) if p["instruction"] is None]
    queries = [golden["pairs"][i]["query"] for i in default]
    docs = [golden["pairs"][i]["document"] for i in default]
    scores = model.score(queries, docs)
    assert scores.dtype == np.float32 and scores.shape == (len(default),)
    np.testing.assert_allclose(scores, np.asarray(golden["scores"])[default], atol=PARITY_ATOL, rtol=0)
    np.testing.assert_allclose(scores, sigmoid(np.asarray(golden["logits"])[default]),
                               atol=PARITY_ATOL, rtol=0)
    assert_spread(scores)


@pytest.mark.parametrize("name", TEMPLATED)
def test_family_is_recognised_by_name_and_by_template_without_overrides(name, tmp_path):
    """A known family needs no hf_overrides: the hub name or template= brings its recipe."""
    golden = golden_of(name)
    link = tmp_path / HUB_NAMES[name]
    link.symlink_to(family_fixture_path(name), target_is_directory=True)
    by_name = CrossEncoder(str(link), dtype="float32")
    explicit = CrossEncoder(family_fixture_path(name), template=golden["template"], dtype="float32")
    for model in (by_name, explicit):
        assert model.template is get_template(golden["template"])
        assert model.max_length == golden["max_length"]
        ids, raw, _ = score_like_golden(model, golden)
        assert ids == golden["input_ids"]
        np.testing.assert_allclose(raw, golden["logits"], atol=PARITY_ATOL, rtol=0)


@pytest.mark.parametrize("name", TEMPLATED)
def test_truncation_cuts_inside_the_document_like_the_official_recipe(name):
    golden = golden_of(name)
    section = golden["truncation"]
    model = load(name, max_length=section["max_length"])
    assert len(section["pairs"]) >= 8
    ids, raw, truncated = score_like_golden(model, section)
    assert ids == section["input_ids"]
    assert all(truncated)
    np.testing.assert_allclose(raw, section["logits"], atol=PARITY_ATOL, rtol=0)


def test_mxbai_truncation_caps_the_query_and_counts_only_query_separator_and_document():
    section = golden_of("mxbai-tiny")["truncation"]
    model = load("mxbai-tiny", max_length=section["max_length"])
    template = model.template
    constants = sum(len(model.tokenizer.encode(template.pieces[k], add_special_tokens=False).ids)
                    for k in (0, 4, 5, 6))
    assert any(d["query_capped"] for d in section["details"])
    for ids in section["input_ids"]:
        assert len(ids) - constants <= section["max_length"] < len(ids)


def test_mxbai_fits_its_prompt_into_max_position_embeddings_as_its_library_does():
    section = golden_of("mxbai-tiny")["positions"]
    limit = section["max_position_embeddings"]
    model = load("mxbai-tiny", max_position_embeddings=limit)
    assert model.max_length == section["max_length"] > limit  # the family default, lowered inside the recipe
    ids, raw, _ = score_like_golden(model, section)
    assert ids == section["input_ids"]
    assert max(len(i) for i in ids) == limit
    np.testing.assert_allclose(raw, section["logits"], rtol=0, atol=PARITY_ATOL)


def test_fit_positions_counts_the_constant_pieces_outside_the_budget():
    from crossrank.templates import Template

    assert get_template("mxbai-rerank-v2").fixed_pieces() == [0, 4, 5, 6]
    with pytest.raises(ValueError, match="fit_positions needs the pieces outside the budget to be constant text"):
        Template(name="t", pieces=("{instruction}", "q: {query}", "d: {document}"), budget_pieces=(1, 2),
                 fit_positions=True)


def test_gemma_truncation_caps_the_passage_and_allows_separator_and_prompt_on_top():
    """FlagEmbedding: the passage is capped at max_length, and BOS + query + separator + passage
    may take max_length + len(separator) + len(prompt); both limits occur in the section."""
    section = golden_of("gemma-tiny")["truncation"]
    bounds = [d["bound"] for d in section["details"]]
    assert {"passage_cap", "budget"} <= set(bounds)
    assert any(len(ids) > section["max_length"] for ids in section["input_ids"])


# -- vLLM's request form ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_predict_on_the_request_form_matches_transformers(name):
    """RECIPES.md's request demos (bge-gemma, mxbai, Qwen3's text_1/text_2 on Llama and Mistral):
    text_1 + text_2 tokenized once, scored like transformers on the same ids."""
    model, golden = load(name), golden_of(name)
    joined = golden["joined"]
    pairs = request_pairs(joined)
    by_index = dict(zip(golden["pair_indices"], golden["pairs"]))
    template = get_template(golden["template"])
    for k, i in enumerate(joined["pair_indices"]):
        p = by_index[i]
        assert template.request_texts(p["query"], p["document"], p["instruction"]) == pairs[k]
    assert model.tokenize_pairs(pairs).input_ids == joined["input_ids"]
    raw = model.predict(pairs, activation_fn="identity")
    np.testing.assert_allclose(raw, joined["logits"], atol=PARITY_ATOL, rtol=0)
    np.testing.assert_allclose(model.predict(pairs), sigmoid(joined["logits"]), atol=PARITY_ATOL, rtol=0)
    single = model.predict(pairs[0], activation_fn="identity")
    assert np.ndim(single) == 0 and abs(float(single) - joined["logits"][0]) <= PARITY_ATOL


def test_mxbai_pieces_and_joined_strings_tokenize_differently_and_each_matches_its_reference():
    """The Qwen BPE merges "?\\n" and ".\\n" when the strings are joined (vLLM) but not when each
    piece is tokenized alone (the library)."""
    model, golden = load("mxbai-tiny"), golden_of("mxbai-tiny")
    differ = golden["piecewise_differs_from_joined"]
    k = golden["pair_indices"].index(3)   # "Who built the first bicycle?" / "Karl Drais."
    assert golden["pairs"][k]["document"].endswith(".") and 3 in differ
    p = golden["pairs"][k]
    pieces = model.tokenize(p["query"], [p["document"]]).input_ids[0]
    joined = model.tokenize_pairs([request_pairs(golden["joined"])[k]]).input_ids[0]
    assert pieces == golden["input_ids"][k] and joined == golden["joined"]["input_ids"][k]
    for merged in (".\n", "?\n"):
        (token,) = model.tokenizer.encode(merged, add_special_tokens=False).ids
        assert token in joined and token not in pieces
    rows = [golden["pair_indices"].index(i) for i in differ]
    assert len(rows) >= 8
    by_pieces = np.asarray(golden["logits"])[rows]
    by_joined = np.asarray(golden["joined"]["logits"])[rows]
    assert np.max(np.abs(by_pieces - by_joined)) > 10 * PARITY_ATOL   # the difference matters
    _, raw_pieces, _ = score_like_golden(model, {"pairs": [golden["pairs"][r] for r in rows]})
    raw_joined = model.predict(request_pairs(golden["joined"], rows), activation_fn="identity")
    np.testing.assert_allclose(raw_pieces, by_pieces, atol=PARITY_ATOL, rtol=0)
    np.testing.assert_allclose(raw_joined, by_joined, atol=PARITY_ATOL, rtol=0)


@pytest.mark.parametrize("name", TINY)
def test_use_sep_token_tokenizes_a_pair_like_transformers(name):
    golden = golden_of(name)
    section = golden["sep_pair"]
    pairs = request_pairs(section)
    as_pair = load(name, use_sep_token=True)
    assert as_pair.config.use_sep_token
    assert as_pair.tokenize_pairs(pairs).input_ids == section["input_ids"]
    np.testing.assert_allclose(as_pair.predict(pairs, activation_fn="identity"), section["logits"],
                               atol=PARITY_ATOL, rtol=0)
    joined = load(name, use_sep_token=False)
    assert not joined.config.use_sep_token
    n = len(pairs)
    assert joined.tokenize_pairs(pairs).input_ids == golden["joined"]["input_ids"][:n]


def test_gemma_pair_tokenization_adds_bos_before_each_text():
    """The fixture's post-processor is Gemma's: <bos> $A <bos> $B for a pair, <bos> $A alone."""
    golden = golden_of("gemma-tiny")
    bos = load("gemma-tiny").tokenizer.token_to_id("<bos>")
    for single, pair in zip(golden["joined"]["input_ids"], golden["sep_pair"]["input_ids"]):
        assert single[0] == bos and single.count(bos) == 1
        assert pair[0] == bos and pair.count(bos) == 2


# -- Architecture features at lengths where they matter ------------------------------------------

def test_mistral_sliding_window_matches_transformers_far_beyond_the_window():
    golden = golden_of("mistral-tiny-window")
    model = load("mistral-tiny-window")
    window = golden["config"]["sliding_window"]
    assert window == 8
    assert model.config.layer_windows == (window,) * model.config.num_hidden_layers
    assert model.config.head_dim == 16   # no head_dim in config.json: hidden / heads
    short = golden["short"]
    assert 2 * window <= min(map(len, short["input_ids"])) and max(map(len, short["input_ids"])) <= 60
    pairs = request_pairs(short)
    assert model.tokenize_pairs(pairs).input_ids == short["input_ids"]
    np.testing.assert_allclose(model.predict(pairs, activation_fn="identity"), short["logits"],
                               atol=PARITY_ATOL, rtol=0)
    # Without the window the same prompts score differently: the window is what is being matched.
    full = load("mistral-tiny-window", sliding_window=None)
    assert set(full.config.layer_windows) == {0}
    assert np.max(np.abs(full.predict(pairs, activation_fn="identity") - short["logits"])) > 100 * PARITY_ATOL


def test_llama3_rope_scaling_matches_transformers_beyond_the_original_context():
    golden = golden_of("llama-tiny-llama3rope")
    model = load("llama-tiny-llama3rope")
    rope = golden["config"]["rope_scaling"]   # the hub's legacy key, as Llama 3.1 checkpoints
    assert rope["rope_type"] == "llama3" and model.config.rope_type == "llama3"
    assert min(map(len, golden["input_ids"])) > 2 * rope["original_max_position_embeddings"]
    assert model.config.qkv_bias and model.config.o_bias and model.config.mlp_bias
    without = load("llama-tiny-llama3rope", rope_scaling=None)
    assert without.config.rope_type == "default"
    ids = golden["input_ids"][:8]
    scaled = model.forward_ids(ids)[:, 0]
    np.testing.assert_allclose(scaled, golden["logits"][:8], atol=PARITY_ATOL, rtol=0)
    assert np.max(np.abs(without.forward_ids(ids)[:, 0] - scaled)) > 100 * PARITY_ATOL


@pytest.mark.slow
def test_real_mxbai_rerank_base_v2_shape_scores_like_transformers_from_short_to_long_prompts():
    model, golden = load("mxbai-base"), golden_of("mxbai-base")
    assert model.config.num_hidden_layers == 24 and model.config.vocab_size == 151936
    assert max(map(len, golden["input_ids"])) > 500 and min(map(len, golden["input_ids"])) < 150
    _, scores, _ = score_like_golden(model, golden, activation_fn=None)   # default: sigmoid
    np.testing.assert_allclose(scores, golden["scores"], atol=PARITY_ATOL, rtol=0)
    assert_spread(scores)
