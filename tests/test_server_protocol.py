"""The server's request parsing and error shapes, without a server: null fields, token caps,
priority, Cohere v1 documents, TEI's parsing and error codes, /invocations routing."""
import pytest

pytest.importorskip("fastapi")

from crossrank.server.errors import APIError, error_body, tei_error  # noqa: E402
from crossrank.server.protocol import document_texts, drop_nulls, parse_rerank, parse_score, query_text  # noqa: E402
from crossrank.server.tei import info_response, is_tei_rerank, parse_tei_rerank  # noqa: E402


def test_error_bodies_carry_detail_in_both_shapes():
    assert error_body("bad", "BadRequestError", 400, "query") == {
        "error": {"message": "bad", "type": "BadRequestError", "param": "query", "code": 400}, "detail": "bad"}
    assert tei_error("bad", "Validation") == (413, {"error": "bad", "error_type": "Validation", "detail": "bad"})
    assert tei_error("bad", "Backend") == (424, {"error": "bad", "error_type": "Backend", "detail": "bad"})


@pytest.mark.parametrize("status, tei_type, expected", [
    (400, None, (422, "Validation")),        # refused before TEI's checks: its JSON extractor's 422
    (413, "Validation", (413, "Validation")),
    (400, "Validation", (413, "Validation")),  # TEI's own validation: ErrorType::Validation is 413
    (401, None, (401, "Validation")),
    (400, "Empty", (400, "Empty")),
    (400, "Tokenizer", (422, "Tokenizer")),
    (503, "Overloaded", (429, "Overloaded")),
    (503, None, (503, "Unhealthy")),
    (504, None, (504, "Backend")),
    (500, None, (424, "Backend")),
])
def test_tei_codes(status, tei_type, expected):
    code, body = APIError("m", status, tei_type=tei_type).tei()
    assert (code, body["error_type"]) == expected


def test_null_means_absent():
    assert drop_nulls({"a": None, "b": 0, "c": False, "d": ""}) == {"b": 0, "c": False, "d": ""}
    task = parse_rerank({"query": "q", "documents": ["d"], "top_n": None, "return_documents": None,
                         "max_tokens_per_doc": None, "priority": None, "rank_fields": None})
    assert task.top_n == 0 and task.return_documents is True and task.max_tokens_per_doc == 0
    task = parse_score({"text_1": "a", "text_2": "b", "queries": None, "truncate_prompt_tokens": None})
    assert task.firsts == ["a"] and task.limit is None and not task.templated
    assert parse_tei_rerank({"query": "q", "texts": ["t"], "truncate": None}).truncate is True


@pytest.mark.parametrize("field", ["max_tokens_per_doc", "max_tokens_per_query"])
@pytest.mark.parametrize("value", [0, -3])
def test_token_caps_must_be_positive(field, value):
    with pytest.raises(APIError, match="must be a positive integer") as info:
        parse_rerank({"query": "q", "documents": ["d"], field: value})
    assert info.value.param == field
    assert getattr(parse_rerank({"query": "q", "documents": ["d"], field: 7}), field) == 7


def test_priority():
    assert parse_rerank({"query": "q", "documents": ["d"], "priority": 10}).kind == "rerank"
    with pytest.raises(APIError, match="priority must be an integer >= 0"):
        parse_rerank({"query": "q", "documents": ["d"], "priority": -1})


def test_cohere_v1_documents():
    docs = [{"title": "T", "text": "body", "n": 3}, "plain"]
    assert document_texts(docs, None) == ["body", "plain"]
    assert document_texts(docs, ["title", "text"]) == ["title: T\ntext: body", "plain"]
    assert document_texts(docs, ["n"]) == ["3", "plain"]
    task = parse_rerank({"query": {"text": "q"}, "documents": docs})
    assert task.firsts == ["q", "q"] and task.echoed == [docs[0], {"text": "plain"}]
    for bad, param in (([{"title": "T"}], "documents.0"), ([7], "documents.0"),
                       ([{"text": {"a": 1}}], "documents.0.text")):
        with pytest.raises(APIError) as info:
            document_texts(bad, None)
        assert info.value.param == param and "_" not in info.value.message.replace("image_url", "")
    with pytest.raises(APIError, match="multimodal"):
        query_text({"image_url": "x"})


def test_tei_parsing():
    assert is_tei_rerank({"query": "q", "texts": []}) and not is_tei_rerank({"query": "q", "documents": []})
    task = parse_tei_rerank({"query": "q", "texts": ["a", "b"], "truncation_direction": "Left", "raw_scores": True,
                             "model": "ignored"})
    assert (task.side, task.use_activation, task.fit, task.truncate) == ("left", False, "longest_first", True)
    with pytest.raises(APIError) as info:
        parse_tei_rerank({"query": "q", "texts": []})
    assert info.value.tei() == (400, {"error": info.value.message, "error_type": "Empty", "detail": info.value.message})
    with pytest.raises(APIError) as info:
        parse_tei_rerank({"texts": ["a"]})
    assert info.value.tei()[0] == 422


def test_info_shape():
    info = info_response(model_id="m", revision=None, dtype="float32", max_input_length=512,
                         max_concurrent_requests=4, max_batch_tokens=100, tokenization_workers=2, version="1")
    assert info["model_type"] == {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}
    assert info["auto_truncate"] is True and info["max_input_length"] == 512


def test_tei_shape_with_documents_null_is_tei():
    assert is_tei_rerank({"query": "q", "texts": ["a"], "documents": None})
    assert not is_tei_rerank({"query": "q", "texts": None, "documents": ["a"]})


@pytest.mark.parametrize("parse, body, param", [
    (parse_rerank, {"query": "q", "documents": {"content": [{"type": "image_url", "image_url": {"url": "x"}}]}},
     "documents"),
    (parse_rerank, {"query": {"content": [{"type": "image_url", "image_url": {"url": "x"}}]}, "documents": ["d"]},
     "query"),
    (parse_score, {"data_1": "q", "data_2": {"content": [{"type": "image_url", "image_url": {"url": "x"}}]}},
     "data_2"),
    (parse_score, {"text_1": "q", "text_2": {"content": [{"type": "video_url", "video_url": {"url": "x"}}]}},
     "text_2"),
])
def test_vllm_multimodal_sides_are_refused_in_words(parse, body, param):
    with pytest.raises(APIError, match="multimodal") as info:
        parse(body)
    assert info.value.param == param and info.value.status == 400


@pytest.mark.parametrize("top_n", [0, -1, -7])
def test_top_n_zero_or_negative_means_every_document_as_in_vllm(top_n):
    from crossrank.server.protocol import rerank_response

    task = parse_rerank({"query": "q", "documents": ["a", "b", "c"], "top_n": top_n})
    assert [r["index"] for r in rerank_response(task, "m", [0.1, 0.9, 0.5], 3)["results"]] == [1, 2, 0]
