"""A query that leaves no room for the document: TooLongError naming the pairs, or (opt-in) the
query and the document cut longest-first. Never a score that ignores the document."""
import logging
import pickle

import numpy as np
import pytest

from _fixtures import fixture_path
import crossrank
from crossrank import CrossEncoder, TooLongError
from crossrank.errors import CrossrankError
from crossrank.templates import QWEN3_RERANKER
from crossrank.tokenization import longest_first
from test_chat_template import HEAD, QWEN3_CHAT, model_dir

LONG_QUERY = " ".join(["how do vaccines train the immune system"] * 12)  # ~85 tokens
DOCS = ["Vaccines expose the immune system to a harmless piece of a pathogen.",
        "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
        "Memory B cells persist after vaccination."]
MAX = 150  # the Qwen3 template takes ~60 tokens: a short query fits, the long one leaves no room


@pytest.fixture(scope="module")
def family():
    return CrossEncoder(fixture_path("qwen3-tiny"), template="qwen3-reranker", max_length=MAX, dtype="float32",
                        threads=2)


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    d = model_dir(tmp_path_factory.mktemp("chat"), jinja=QWEN3_CHAT)
    return CrossEncoder(d, template="chat", max_length=MAX, dtype="float32", threads=2, hf_overrides={
        "architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["no", "yes"],
        "method": "from_2_way_softmax"})


def test_the_error_is_public_a_value_error_and_pickles():
    assert crossrank.TooLongError is crossrank.errors.TooLongError is crossrank.tokenization.TooLongError
    assert issubclass(TooLongError, CrossrankError) and issubclass(TooLongError, ValueError)
    err = pickle.loads(pickle.dumps(TooLongError("pairs 1, 3", [1, 3])))
    assert err.indices == [1, 3] and str(err) == "pairs 1, 3"


@pytest.mark.parametrize("which", ["family", "chat"])
def test_every_scoring_method_refuses_a_query_that_leaves_no_room(which, request):
    model = request.getfixturevalue(which)
    queries = ["short query", LONG_QUERY, "short query"]
    with pytest.raises(TooLongError, match="no room for the document") as info:
        model.score(queries, DOCS)
    assert info.value.indices == [1] and "pair 1 is" in str(info.value) and "truncate_query=True" in str(info.value)
    with pytest.raises(TooLongError) as info:
        model.rank(LONG_QUERY, DOCS)
    assert info.value.indices == [0, 1, 2]
    with pytest.raises(TooLongError) as info:
        model.score_many(["short query", LONG_QUERY], [DOCS[:2], DOCS])
    assert info.value.indices == [2, 3, 4]  # counted over the pairs of all queries
    with pytest.raises(TooLongError):
        model.rank_many([LONG_QUERY], [DOCS])
    with pytest.raises(TooLongError):
        model.tokenize(LONG_QUERY, DOCS)
    if which == "chat":  # predict renders the chat template too
        with pytest.raises(TooLongError) as info:
            model.predict([("short query", DOCS[0]), (LONG_QUERY, DOCS[1])])
        assert info.value.indices == [1]


@pytest.mark.parametrize("which", ["family", "chat"])
def test_truncate_query_cuts_longest_first_and_keeps_every_document(which, request):
    model = request.getfixturevalue(which)
    encoded = model.tokenize(LONG_QUERY, DOCS, truncate_query=True)
    assert all(len(ids) <= MAX for ids in encoded.input_ids) and all(encoded.truncated)
    for (kept, whole), ids in zip(encoded.document_tokens, encoded.input_ids):
        assert 0 < kept <= whole and len(ids) == MAX
    scores = model.score(LONG_QUERY, DOCS, truncate_query=True)
    assert len(set(scores.tolist())) == len(DOCS)  # each document still moves its score
    ranked = model.rank(LONG_QUERY, DOCS, truncate_query=True)
    assert [r["score"] for r in ranked] == sorted(scores.tolist(), reverse=True)
    # a query that fits is not touched by the option
    np.testing.assert_array_equal(model.score("short query", DOCS, truncate_query=True),
                                  model.score("short query", DOCS))


def test_the_document_keeps_what_tokenizers_longest_first_gives_it(family):
    encoder_lengths = family.tokenize(LONG_QUERY, [""]).num_tokens[0]  # template + whole query, no document
    query_tokens = len(family.tokenizer.encode(LONG_QUERY, add_special_tokens=False).ids)
    template_tokens = encoder_lengths - query_tokens
    encoded = family.tokenize(LONG_QUERY, DOCS, truncate_query=True)
    for (kept, whole) in encoded.document_tokens:
        q_keep, d_keep = longest_first(query_tokens, whole, MAX - template_tokens)
        assert kept == d_keep and q_keep + d_keep == MAX - template_tokens


@pytest.mark.parametrize("first,second,room", [(10, 7, 5), (10, 7, 6), (10, 7, 16), (7, 7, 5), (7, 7, 9),
                                               (5, 10, 7), (3, 40, 20), (40, 3, 20), (0, 9, 4), (9, 0, 4)])
def test_longest_first_is_the_tokenizers_rule(first, second, room):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(fixture_path("qwen3-tiny") / "tokenizer.json"))
    a, b = " ".join(["alpha"] * first), " ".join(["beta"] * second)
    assert len(tok.encode(a, add_special_tokens=False).ids) == first
    tok.enable_truncation(room, strategy="longest_first")
    enc = tok.encode(a, b, add_special_tokens=False)
    assert longest_first(first, second, room) == (enc.type_ids.count(0), enc.type_ids.count(1))


def test_the_model_default_and_the_encoder_report(family):
    cut = CrossEncoder(family.path, template="qwen3-reranker", max_length=MAX, dtype="float32", threads=2,
                       truncate_query=True)
    np.testing.assert_array_equal(cut.score(LONG_QUERY, DOCS), family.score(LONG_QUERY, DOCS, truncate_query=True))
    with pytest.raises(TooLongError):
        cut.score(LONG_QUERY, DOCS, truncate_query=False)
    assert pickle.loads(pickle.dumps(cut)).truncate_query is True
    # The tokenization layer's report, for callers that answer the error themselves (a server).
    from crossrank.tokenization import PromptEncoder

    encoder = PromptEncoder(family.path)
    report = encoder.encode_template(QWEN3_RERANKER, ["short query", LONG_QUERY], DOCS[:2], None, MAX,
                                     check_room=False)
    assert report.no_room == (1,) and report.document_tokens[1][0] == 0 and report.document_tokens[0][0] > 0
    assert encoder.encode_template(QWEN3_RERANKER, [LONG_QUERY], DOCS[:1], None, MAX, truncate_query=True,
                                   check_room=False).no_room == ()


def test_a_template_longer_than_max_length_still_names_the_pair():
    model = CrossEncoder(fixture_path("qwen3-tiny"), template="qwen3-reranker", max_length=20, dtype="float32")
    with pytest.raises(TooLongError, match="template takes") as info:
        model.score("q", ["d"], truncate_query=True)
    assert info.value.indices == [0]


def test_an_empty_document_is_not_a_dropped_one(family):
    # nothing of the document is lost: the query is cut as before, no error
    scores = family.score(LONG_QUERY, [""])
    assert scores.shape == (1,) and np.isfinite(scores).all()


def test_the_truncation_warning_names_what_was_cut(family, caplog):
    long_doc = " ".join(DOCS * 10)

    def warning(queries, documents, **options):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="crossrank"):
            family.score(queries, documents, **options)
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    # an empty document leaves nothing to cut: the query is cut, and the warning says so
    assert warning(LONG_QUERY, [""]) == ["1 of 1 prompts were longer than max_length=150; 1 query was truncated"]
    assert warning([LONG_QUERY, "short query", "short query"], ["", long_doc, DOCS[0]]) == [
        "2 of 3 prompts were longer than max_length=150; 1 document and 1 query were truncated"]
    assert warning(LONG_QUERY, [long_doc, ""], truncate_query=True) == [
        "2 of 2 prompts were longer than max_length=150; 1 document and 2 queries were truncated"]
    assert warning("short query", [long_doc, long_doc]) == [
        "2 of 2 prompts were longer than max_length=150; their documents were truncated"]


@pytest.fixture(scope="module")
def pairs():
    """No template: (query, document) tokenized as a pair, cut longest-first with truncate_query."""
    model = CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides={**HEAD, "use_sep_token": True}, max_length=40,
                         dtype="float32", threads=2, truncate_query=True)
    assert model.prompt_format == "pairs"
    return model


def test_the_request_forms_warning_names_the_text_longest_first_cut(pairs, caplog):
    def warning(queries, documents):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="crossrank"):
            pairs.score(queries, documents)
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    assert warning(LONG_QUERY, DOCS[:1]) == ["1 of 1 prompts were longer than max_length=40; 1 query was truncated"]
    assert warning("short query", [LONG_QUERY]) == [
        "1 of 1 prompts were longer than max_length=40; their documents were truncated"]
    assert warning(LONG_QUERY, [LONG_QUERY]) == [
        "1 of 1 prompts were longer than max_length=40; 1 document and 1 query were truncated"]
    queries, docs = [LONG_QUERY, LONG_QUERY, "short query", "short query"], [LONG_QUERY, DOCS[0], LONG_QUERY, DOCS[0]]
    assert warning(queries, docs) == [
        "3 of 4 prompts were longer than max_length=40; 2 documents and 2 queries were truncated"]
    assert warning("short query", DOCS) == []


def test_the_request_forms_record_matches_the_ids_it_cut(pairs):
    # a query of exactly half the room keeps it whole as the longer document is cut; one more token is cut
    half, over = " ".join(["alpha"] * 20), " ".join(["alpha"] * 21)
    queries = [LONG_QUERY, "short query", LONG_QUERY, "short query", half, over]
    docs = [DOCS[0], LONG_QUERY, LONG_QUERY, DOCS[0], LONG_QUERY, LONG_QUERY]
    encoded = pairs.tokenize(queries, docs)
    assert encoded.query_truncated == [True, False, True, False, False, True]
    assert encoded.document_truncated == [False, True, True, False, True, True]
    assert encoded.truncated == [True, True, True, False, True, True]
    assert encoded.document_tokens is None  # chunking's record, of the template form only
    for q, d, ids, q_cut, d_cut in zip(queries, docs, encoded.input_ids, encoded.query_truncated,
                                       encoded.document_truncated):
        # the fixture's pair has no special tokens: the ids are what each text kept, in order
        q_ids, d_ids = (pairs.tokenizer.encode(t, add_special_tokens=False).ids for t in (q, d))
        q_keep, d_keep = longest_first(len(q_ids), len(d_ids), 40)
        assert ids == q_ids[:q_keep] + d_ids[:d_keep]
        assert (q_cut, d_cut) == (q_keep < len(q_ids), d_keep < len(d_ids))


def test_predict_request_form_names_the_pairs(family):
    with pytest.raises(TooLongError, match="longer than max_length") as info:
        family.predict([("a", "b"), (LONG_QUERY * 2, "b"), ("c", "d"), ("e", LONG_QUERY * 2)])
    assert info.value.indices == [1, 3]
