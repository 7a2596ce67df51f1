"""Long documents: overlapping token chunks scored as documents and aggregated ("max" or "first"),
checked against chunks cut and scored by hand."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from _fixtures import fixture_path
from crossrank import CrossEncoder, TooLongError
from crossrank.chunking import Chunking, as_chunking, token_windows

sys.path.insert(0, str(Path(__file__).resolve().parent / "reference"))
import texts  # noqa: E402

OVERRIDES = {"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["no", "yes"],
             "is_original_qwen3_reranker": True}
MAX_LENGTH = 160
QUERY = "Why did the East India Company smuggle opium?"
DOCS = [p["document"] for p in texts.PAIRS]
EXACT = 1e-6


@pytest.fixture(scope="module")
def model():
    return CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=OVERRIDES, max_length=MAX_LENGTH, threads=2)


@pytest.fixture(scope="module")
def long_docs(model):
    lengths = [len(model.tokenizer.encode(d, add_special_tokens=False).ids) for d in DOCS]
    docs = [d for d, n in zip(DOCS, lengths) if n > 2 * MAX_LENGTH]
    assert len(docs) >= 3
    return docs[:4]


def chunks_by_hand(model, doc, size, overlap):
    """Windows of `size` tokens, `size - overlap` apart, over the document tokenized alone; each
    window's text runs from its first token's first character to its last token's last one (later
    windows from their first non-space character)."""
    enc = model.tokenizer.encode(doc, add_special_tokens=False)
    n, out, start = len(enc.ids), [], 0
    while True:
        stop = min(start + size, n)
        a = min(s for s, _ in enc.offsets[start:stop])
        b = max(e for _, e in enc.offsets[start:stop])
        text = doc[a:b]
        out.append(text.lstrip() if start > 0 else text)
        if stop == n:
            return out
        start += size - overlap


def test_max_is_the_best_chunk_scored_by_hand(model, long_docs):
    plan = Chunking(size=40, overlap=8, aggregate="max")
    got = model.score(QUERY, long_docs, chunking=plan)
    for doc, value in zip(long_docs, got):
        by_hand = chunks_by_hand(model, doc, 40, 8)
        assert len(by_hand) >= 4
        assert model.chunk_documents(QUERY, [doc], chunking=plan) == [by_hand]
        scores = model.score(QUERY, by_hand)
        assert abs(value - scores.max()) <= EXACT
    # The chunks see the whole document: better than its truncated opening for some of these.
    assert (got > model.score(QUERY, long_docs) + 1e-3).any()


def test_first_is_the_first_chunk_scored_by_hand(model, long_docs):
    got = model.score(QUERY, long_docs, chunking={"size": 40, "overlap": 8, "aggregate": "first"})
    want = [model.score(QUERY, chunks_by_hand(model, d, 40, 8)[:1])[0] for d in long_docs]
    np.testing.assert_allclose(got, want, atol=EXACT, rtol=0)
    assert model.chunk_documents(QUERY, long_docs[:1], chunking="first") == \
        [model.chunk_documents(QUERY, long_docs[:1])[0][:1]]


def test_default_chunks_fill_the_prompt_and_cover_the_document(model, long_docs):
    budget = model.tokenize(QUERY, long_docs[:1]).document_tokens[0][0]
    for doc, chunks in zip(long_docs, model.chunk_documents(QUERY, long_docs)):
        assert chunks == chunks_by_hand(model, doc, budget, budget // 8)
        assert doc.startswith(chunks[0]) and doc.rstrip().endswith(chunks[-1].rstrip())
        enc = model.tokenize(QUERY, chunks)
        assert max(enc.num_tokens) <= MAX_LENGTH and sum(enc.num_tokens[:-1]) >= (len(chunks) - 1) * (MAX_LENGTH - 3)
    scores = model.score(QUERY, long_docs, chunking=True)
    want = [model.score(QUERY, c).max() for c in model.chunk_documents(QUERY, long_docs)]
    np.testing.assert_allclose(scores, want, atol=EXACT, rtol=0)


def test_documents_that_fit_are_scored_whole(model):
    short = [d for d in DOCS if len(model.tokenizer.encode(d, add_special_tokens=False).ids) < 60][:8]
    np.testing.assert_array_equal(model.score(QUERY, short, chunking="max"), model.score(QUERY, short))
    assert model.chunk_documents(QUERY, short) == [[d] for d in short]


def test_documents_no_longer_than_the_overlap_are_scored_whole(model, long_docs):
    # an explicit overlap is a property of the windows, not a minimum document length
    tiny = ["Tea.", "", "Opium was sold in Canton."]
    plan = Chunking(size=32, overlap=8)
    np.testing.assert_array_equal(model.score(QUERY, tiny, chunking=plan), model.score(QUERY, tiny))
    scores = model.score(QUERY, tiny + long_docs[:1], chunking=plan)
    assert scores.shape == (4,) and np.isfinite(scores).all()


def test_rank_and_the_constructor_default_use_chunking(model, long_docs):
    docs = long_docs + DOCS[:3]
    chunked = CrossEncoder(model.path, hf_overrides=OVERRIDES, max_length=MAX_LENGTH, chunking="max")
    scores = model.score(QUERY, docs, chunking="max")
    np.testing.assert_allclose(chunked.score(QUERY, docs), scores, atol=EXACT, rtol=0)
    ranked = chunked.rank(QUERY, docs, top_k=3)
    assert [r["corpus_id"] for r in ranked] == list(np.argsort(-scores, kind="stable")[:3])
    np.testing.assert_allclose(chunked.score(QUERY, docs, chunking=False), model.score(QUERY, docs), atol=EXACT, rtol=0)


def test_max_chunks_scores_only_the_first_chunks(model, long_docs):
    plan = Chunking(size=40, overlap=8, max_chunks=2)
    chunks = model.chunk_documents(QUERY, long_docs, chunking=plan)
    assert all(c == chunks_by_hand(model, d, 40, 8)[:2] for c, d in zip(chunks, long_docs))
    want = [model.score(QUERY, c).max() for c in chunks]
    np.testing.assert_allclose(model.score(QUERY, long_docs, chunking=plan), want, atol=EXACT, rtol=0)


def test_chat_template_prompts_are_chunked_the_same_way(tmp_path, long_docs):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_chat_template import HEAD, QWEN3_CHAT

    src = fixture_path("qwen3-tiny")
    d = tmp_path / "m"
    d.mkdir()
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        os.symlink(src / f, d / f)
    (d / "chat_template.jinja").write_text(QWEN3_CHAT)
    chat = CrossEncoder(d, hf_overrides=HEAD, max_length=MAX_LENGTH)
    family = CrossEncoder(src, hf_overrides=OVERRIDES, max_length=MAX_LENGTH)
    assert chat.prompt_format == "chat"
    assert chat.chunk_documents(QUERY, long_docs) == family.chunk_documents(QUERY, long_docs)
    np.testing.assert_allclose(chat.score(QUERY, long_docs, chunking="max"),
                               family.score(QUERY, long_docs, chunking="max"), atol=EXACT, rtol=0)


def test_token_windows_end_at_the_document_end():
    assert token_windows(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
    assert token_windows(3, 4, 1) == [(0, 3)]
    assert token_windows(100, 10, 0, max_chunks=3) == [(0, 10), (10, 20), (20, 30)]


@pytest.mark.parametrize("value,match", [
    ({"size": 10, "overlap": 10}, "overlap=10 must be smaller than Chunking.size=10"),
    ({"aggregate": "mean"}, "aggregate must be one of 'max', 'first'"),
    ({"size": 0}, "size must be a positive integer"),
    ({"stride": 3}, "unknown chunking option"),
    (3.5, "chunking must be None, a bool"),
])
def test_bad_chunking_options_are_named(value, match):
    with pytest.raises((ValueError, TypeError), match=match):
        as_chunking(value)


def test_a_query_that_fills_the_prompt_leaves_no_room_for_chunks(model, long_docs):
    long_query = " ".join(["What did the merchants trade in the ports of Canton and Nagasaki?"] * 20)
    with pytest.raises(TooLongError, match="no room for the document"):
        model.score(long_query, long_docs[:1], chunking="max")
    with pytest.raises(ValueError, match="leaves no room to advance"):
        model.score(QUERY, long_docs[:1], chunking={"overlap": MAX_LENGTH})


def test_chunking_needs_one_score_per_document():
    two = CrossEncoder(fixture_path("qwen3-tiny"), template="qwen3-reranker", max_length=MAX_LENGTH,
                       hf_overrides={"architectures": ["Qwen3ForSequenceClassification"],
                                     "classifier_from_token": ["no", "yes"], "method": "no_post_processing"})
    with pytest.raises(ValueError, match="chunking needs one score per document; this model has 2 labels"):
        two.score(QUERY, DOCS[:2], chunking="max")
