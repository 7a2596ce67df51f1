"""The server as a drop-in for vLLM and TEI (issue 15): over-long queries, templates on every request
form, TEI's truncation and error shape, null fields, priority, Cohere v1 documents, ``/tokenize``,
``/detokenize``, ``/invocations``, ``/info`` and ``/ping``.

Servers run as subprocesses on 127.0.0.1 with the random-weight Qwen3 fixture and a small
``--max-length`` (so over-long inputs stay cheap); scores are compared with the in-process model
for exact equality, as in test_server.py.
"""
import json

import numpy as np
import pytest

requests = pytest.importorskip("requests")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from _fixtures import fixture_path  # noqa: E402
from crossrank import CrossEncoder  # noqa: E402
from crossrank.chat_template import ChatTemplate  # noqa: E402
from crossrank.server.engine import ScoringEngine  # noqa: E402
from test_server import (QWEN3_NAME, QWEN3_OVERRIDES, as_floats, assert_error, post,  # noqa: E402
                         start_server)  # noqa: F401,F811 (a fixture)

MAX_LENGTH = 160
LONG_QUERY = " ".join(f"query word {i}" for i in range(120))  # alone more than MAX_LENGTH tokens
LONG_DOC = " ".join(f"Iceland has volcano number {i}." for i in range(60))
DOCS = ["Beijing is the capital of China.", "Paris is the capital of France.", LONG_DOC]
REDUCE = "Please reduce the length of the input prompt"
# vLLM's words for an input that cannot fit (docs/server.md), never the Python API's options.
VLLM_TOO_LONG = f"This model's maximum context length is {MAX_LENGTH} tokens. However, "


def assert_vllm_too_long(err):
    assert err["message"].startswith(VLLM_TOO_LONG) and REDUCE in err["message"], err
    assert "max_length" not in err["message"] and "truncate_query" not in err["message"], err
# A reranker chat (score) template: query and document roles, the instruction from a system message,
# an optional variable (vLLM's chat_template_kwargs).
CHAT = (
    "{% if prefix is defined %}{{ prefix }}{% endif %}"
    "<|im_start|>user\n<Instruct>: {{ messages | selectattr('role', 'eq', 'system') | map(attribute='content') "
    "| first | default('Find it') }}\n"
    "<Query>: {{ (messages | selectattr('role', 'eq', 'query') | first).content }}\n"
    "<Document>: {{ (messages | selectattr('role', 'eq', 'document') | first).content }}<|im_end|>\n"
    "<|im_start|>assistant\n"
)


@pytest.fixture(scope="module")
def qwen3_path():
    return fixture_path("qwen3-tiny")


@pytest.fixture(scope="module")
def model(qwen3_path):
    return CrossEncoder(qwen3_path, hf_overrides=QWEN3_OVERRIDES, threads=2, max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def server(start_server, qwen3_path):
    return start_server(qwen3_path, "--hf_overrides", json.dumps(QWEN3_OVERRIDES), "--served-model-name",
                        QWEN3_NAME, "--threads", "2", "--max-length", str(MAX_LENGTH))


@pytest.fixture(scope="module")
def chat_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("chat") / "score.jinja"
    path.write_text(CHAT)
    return path


@pytest.fixture(scope="module")
def chat_model(qwen3_path, chat_file):
    return CrossEncoder(qwen3_path, hf_overrides=QWEN3_OVERRIDES, threads=2, max_length=MAX_LENGTH,
                        template=ChatTemplate.from_file(chat_file))


@pytest.fixture(scope="module")
def chat_server(start_server, qwen3_path, chat_file):
    return start_server(qwen3_path, "--hf_overrides", json.dumps(QWEN3_OVERRIDES), "--threads", "2",
                        "--max-length", str(MAX_LENGTH), "--chat-template", str(chat_file))


def tei_error(resp, status, error_type):
    """An error in TEI's shape, {"error", "error_type"}, with the message also under "detail"."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert set(body) == {"error", "error_type", "detail"}, body
    assert body["error_type"] == error_type and body["error"] and body["detail"] == body["error"]
    return body


def rerank_scores(body):
    return {r["index"]: r["relevance_score"] for r in body["results"]}


# -- item 1: an over-long query never scores without its document -------------------------------

VLLM_FORMS = [
    ("/score", {"queries": LONG_QUERY, "documents": DOCS}),
    ("/v1/score", {"queries": [LONG_QUERY] * 3, "items": DOCS}),
    ("/rerank", {"query": LONG_QUERY, "documents": DOCS}),
    ("/v1/rerank", {"query": LONG_QUERY, "documents": DOCS}),
    ("/v2/rerank", {"query": LONG_QUERY, "documents": DOCS}),
]


@pytest.mark.parametrize("path, body", VLLM_FORMS, ids=[p for p, _ in VLLM_FORMS])
def test_over_long_query_is_refused_on_vllm_routes_as_vllm_does(server, path, body):
    err = assert_error(post(server, path, body), 400, "query")
    assert_vllm_too_long(err)

def test_over_long_query_is_named_as_the_request_numbers_it(server):
    # pair 70 is in the second slice of 64 pairs that tokenization works in
    body = {"queries": ["q"] * 70 + [LONG_QUERY], "documents": ["d"] * 71}
    err = assert_error(post(server, "/score", body), 400, "query")
    assert_vllm_too_long(err)
    assert "pair 70 " in err["message"], err


@pytest.mark.parametrize("form", ["queries", "text_1", "data_1"])
def test_over_long_query_is_refused_with_a_chat_template_on_every_form(chat_server, form):
    other = {"queries": "documents", "text_1": "text_2", "data_1": "data_2"}[form]
    err = assert_error(post(chat_server, "/score", {form: LONG_QUERY, other: DOCS}), 400)
    assert_vllm_too_long(err)
    err = assert_error(post(chat_server, "/rerank", {"query": LONG_QUERY, "documents": DOCS}), 400)
    assert_vllm_too_long(err)


def test_long_document_is_still_cut_inside_the_document(server, model):
    body = post(server, "/rerank", {"query": "volcano", "documents": DOCS}).json()
    assert rerank_scores(body) == dict(enumerate(as_floats(model.score("volcano", DOCS))))
    assert body["usage"]["prompt_tokens"] == sum(model.tokenize("volcano", DOCS).num_tokens)


def test_tei_rerank_cuts_an_over_long_query_longest_first(server, model):
    resp = post(server, "/rerank", {"query": LONG_QUERY, "texts": DOCS, "raw_scores": True})
    assert resp.status_code == 200, resp.text
    got = {r["index"]: r["score"] for r in resp.json()}
    # The same cut in-process: the engine's longest-first fit, then the model on those ids.
    engine = ScoringEngine(model)
    prepared = engine.encode_queries([LONG_QUERY] * 3, DOCS, None, fit="longest_first")
    expected = as_floats(model.forward_ids(prepared.ids))
    assert got == dict(enumerate(expected))
    assert len(set(expected)) == 3, "documents scored alike: a document was cut out"
    for ids, doc in zip(prepared.ids, DOCS):
        assert len(ids) <= MAX_LENGTH
        text = model.tokenizer.decode(ids.tolist(), skip_special_tokens=False)
        assert doc[:20] in text and "query word 0 " in text
    # the long document shares the room: the query keeps about half of what the template leaves
    template = len(model.tokenize("", [""]).input_ids[0])
    room = MAX_LENGTH - template
    query_tokens = len(model.tokenizer.encode(LONG_QUERY[:LONG_QUERY.index("query word 80")],
                                              add_special_tokens=False).ids)
    assert query_tokens > room // 2
    with_long_doc = model.tokenizer.decode(prepared.ids[2].tolist(), skip_special_tokens=False)
    assert abs(len(model.tokenizer.encode(with_long_doc.split("<Query>: ")[1].split("\n<Document>")[0],
                                          add_special_tokens=False).ids) - room // 2) <= 3


# -- items 12, 13: TEI's truncation default and error shape -----------------------------------


def test_tei_truncate_omitted_or_null_auto_truncates_and_false_is_413(server, model):
    expected = as_floats(model.score("volcano", DOCS))
    for extra in ({}, {"truncate": None}, {"truncate": True}):
        resp = post(server, "/rerank", {"query": "volcano", "texts": DOCS, **extra})
        assert resp.status_code == 200, resp.text
        assert {r["index"]: r["score"] for r in resp.json()} == dict(enumerate(expected))
    # TEI's ErrorType::Validation is PAYLOAD_TOO_LARGE (router/src/http/server.rs)
    body = tei_error(post(server, "/rerank", {"query": "volcano", "texts": DOCS, "truncate": False}), 413,
                     "Validation")
    assert "truncate" in body["error"]


@pytest.mark.parametrize("body, status, error_type", [
    ({"query": "q", "texts": []}, 400, "Empty"),
    ({"texts": ["d"]}, 422, "Validation"),
    ({"query": "q", "texts": "not a list"}, 422, "Validation"),
    ({"query": "q", "texts": ["d"], "truncation_direction": "Middle"}, 422, "Validation"),
    ({"query": "q", "texts": ["d"], "raw_scores": "sometimes"}, 422, "Validation"),
])
def test_tei_errors_in_tei_shape(server, body, status, error_type):
    tei_error(post(server, "/rerank", body), status, error_type)


def test_tei_left_truncation_and_return_text(server, model):
    resp = post(server, "/rerank", {"query": "volcano", "texts": DOCS, "truncation_direction": "Left",
                                    "return_text": True})
    assert resp.status_code == 200
    body = resp.json()
    assert {r["index"]: r["text"] for r in body} == dict(enumerate(DOCS))
    right = as_floats(model.score("volcano", DOCS))
    got = {r["index"]: r["score"] for r in body}
    assert got[0] == right[0] and got[2] != right[2]  # only the long document is cut, at its start


# -- item 5: templates on every request form --------------------------------------------------


def test_chat_template_renders_every_request_form(chat_server, chat_model):
    query, docs = "capital of China", DOCS[:2]
    expected = as_floats(chat_model.score(query, docs))
    for first, second in (("queries", "documents"), ("queries", "items"), ("text_1", "text_2"),
                          ("data_1", "data_2")):
        body = post(chat_server, "/score", {first: query, second: docs}).json()
        assert [d["score"] for d in body["data"]] == expected, (first, second)
        assert body["usage"]["prompt_tokens"] == sum(chat_model.tokenize(query, docs).num_tokens)
    assert rerank_scores(post(chat_server, "/rerank", {"query": query, "documents": docs}).json()) == \
        dict(enumerate(expected))
    # an instruction goes into the template on every form
    with_instruction = as_floats(chat_model.score(query, docs, "Find capitals"))
    body = post(chat_server, "/score", {"text_1": query, "text_2": docs, "instruction": "Find capitals"}).json()
    assert [d["score"] for d in body["data"]] == with_instruction != expected


def test_family_template_leaves_text_1_text_2_as_given(server, model):
    query, docs = "capital of China", DOCS[:2]
    given = post(server, "/score", {"text_1": query, "text_2": docs}).json()
    assert [d["score"] for d in given["data"]] == as_floats(model.predict([(query, d) for d in docs]))
    templated = post(server, "/score", {"queries": query, "documents": docs}).json()
    assert [d["score"] for d in templated["data"]] == as_floats(model.score(query, docs))
    assert given["usage"]["prompt_tokens"] < templated["usage"]["prompt_tokens"]


# -- item 7: truncate_prompt_tokens below the maximum with a chat template --------------------


def test_truncate_prompt_tokens_with_a_chat_template_cuts_inside_the_document(chat_server, qwen3_path, chat_file):
    limit = 90
    short = CrossEncoder(qwen3_path, hf_overrides=QWEN3_OVERRIDES, threads=2, max_length=limit,
                         template=ChatTemplate.from_file(chat_file))
    expected = as_floats(short.score("volcano", DOCS))
    for path, body in (("/rerank", {"query": "volcano", "documents": DOCS, "truncate_prompt_tokens": limit}),
                       ("/score", {"text_1": "volcano", "text_2": DOCS, "truncate_prompt_tokens": limit})):
        resp = post(chat_server, path, body)
        assert resp.status_code == 200, resp.text
        got = (rerank_scores(resp.json()) if path == "/rerank"
               else dict(enumerate(d["score"] for d in resp.json()["data"])))
        assert got == dict(enumerate(expected))
        assert resp.json()["usage"]["prompt_tokens"] == sum(short.tokenize("volcano", DOCS).num_tokens)
    ids = short.tokenize("volcano", [LONG_DOC]).input_ids[0]
    assert len(ids) <= limit and short.tokenizer.decode(ids[-6:], skip_special_tokens=False).endswith(
        "<|im_end|>\n<|im_start|>assistant")  # the template's end survives; Jinja drops one final newline


# -- items 6, 14, 15, 16, 17: request fields ---------------------------------------------------


@pytest.mark.parametrize("field", ["max_tokens_per_doc", "max_tokens_per_query"])
@pytest.mark.parametrize("path", ["/score", "/rerank", "/v2/rerank"])
def test_zero_token_caps_are_refused(server, path, field):
    body = {"query": "q", "documents": ["d"]} if "rerank" in path else {"queries": "q", "documents": ["d"]}
    err = assert_error(post(server, path, {**body, field: 0}), 400, field)
    assert "must be a positive integer" in err["message"]


def test_null_means_absent_on_every_route(server, model):
    expected = as_floats(model.score("q", ["d1", "d2"]))
    cohere_v2 = {"model": QWEN3_NAME, "query": "q", "documents": ["d1", "d2"], "top_n": None,
                 "max_tokens_per_doc": None, "priority": None, "return_documents": None}
    for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
        resp = post(server, path, cohere_v2)
        assert resp.status_code == 200, resp.text
        assert rerank_scores(resp.json()) == dict(enumerate(expected))
        assert all("document" in r for r in resp.json()["results"])  # return_documents: null is the default
    body = {"queries": "q", "documents": ["d1", "d2"], "model": None, "truncate_prompt_tokens": None,
            "use_activation": None, "instruction": None, "chat_template_kwargs": None, "max_tokens_per_doc": None,
            "truncation_side": None, "request_id": None, "text_1": None}
    resp = post(server, "/score", body)
    assert resp.status_code == 200 and [d["score"] for d in resp.json()["data"]] == expected
    resp = post(server, "/rerank", {"query": "q", "texts": ["d1", "d2"], "truncate": None, "raw_scores": None,
                                    "return_text": None, "truncation_direction": None})
    assert {r["index"]: r["score"] for r in resp.json()} == dict(enumerate(expected))
    resp = post(server, "/tokenize", {"prompt": "hello", "add_special_tokens": None, "model": None})
    assert resp.status_code == 200 and resp.json()["count"] >= 1
    # a null where a value is required is still an error
    assert_error(post(server, "/rerank", {"query": None, "documents": ["d"]}), 400, "query")


def test_priority_is_accepted_and_ignored(server, model):
    expected = dict(enumerate(as_floats(model.score("q", ["d1", "d2"]))))
    for priority in (0, 5, 999):
        resp = post(server, "/v2/rerank", {"query": "q", "documents": ["d1", "d2"], "priority": priority})
        assert resp.status_code == 200 and rerank_scores(resp.json()) == expected
    assert_error(post(server, "/rerank", {"query": "q", "documents": ["d"], "priority": -1}), 400, "priority")


def test_cohere_v1_object_documents_and_rank_fields(server, model):
    docs = [{"title": "China", "text": "Beijing is the capital.", "id": 7}, {"title": "France", "text": "Paris."}]
    body = post(server, "/v1/rerank", {"query": "capital", "documents": docs, "rank_fields": ["title", "text"]}).json()
    built = ["title: China\ntext: Beijing is the capital.", "title: France\ntext: Paris."]
    assert rerank_scores(body) == dict(enumerate(as_floats(model.score("capital", built))))
    assert {r["index"]: r["document"] for r in body["results"]} == dict(enumerate(docs))  # echoed as given
    body = post(server, "/v1/rerank", {"query": "capital", "documents": docs, "rank_fields": ["title"]}).json()
    assert rerank_scores(body) == dict(enumerate(as_floats(model.score("capital", ["China", "France"]))))
    body = post(server, "/v1/rerank", {"query": "capital", "documents": docs}).json()  # default: the text field
    assert rerank_scores(body) == dict(enumerate(as_floats(model.score("capital", [d["text"] for d in docs]))))


@pytest.mark.parametrize("documents, rank_fields, param", [
    ([{"title": "t"}], None, "documents.0"),
    (["a", {"text": "b"}, {"title": "t"}], ["text"], "documents.2"),
    ([{"text": ["not", "text"]}], None, "documents.0.text"),
    ([5], None, "documents.0"),
    ([None], None, "documents.0"),
    ([{"text": "a"}], [], "rank_fields"),
])
def test_bad_documents_name_the_field_never_a_class(server, documents, rank_fields, param):
    body = {"query": "q", "documents": documents}
    if rank_fields is not None:
        body["rank_fields"] = rank_fields
    err = assert_error(post(server, "/rerank", body), 400, param)
    assert "_" not in err["message"].replace("rank_fields", "").replace("max_tokens", ""), err["message"]
    assert "Object" not in err["message"] and "Request" not in err["message"]


# -- items 8, 18: /tokenize, /detokenize, /invocations, POST /, /info, /ping -----------------


def test_tokenize_and_detokenize_in_vllm_shapes(server, model):
    text = "Hello world, <|im_start|> again"
    body = post(server, "/tokenize", {"model": QWEN3_NAME, "prompt": text}).json()
    ids = model.tokenizer.encode(text, add_special_tokens=True).ids
    assert body == {"count": len(ids), "max_model_len": MAX_LENGTH, "tokens": ids, "token_strs": None}
    body = post(server, "/tokenize", {"prompt": text, "return_token_strs": True, "add_special_tokens": False}).json()
    assert body["token_strs"] == [model.tokenizer.id_to_token(i) for i in ids]
    assert post(server, "/detokenize", {"model": QWEN3_NAME, "tokens": ids}).json() == {"prompt": text}
    assert_error(post(server, "/detokenize", {"tokens": [10 ** 9]}), 400, "tokens")
    assert_error(post(server, "/detokenize", {"tokens": "abc"}), 400, "tokens")
    assert_error(post(server, "/tokenize", {"messages": [{"role": "user", "content": "hi"}]}), 400, "messages")
    assert_error(post(server, "/tokenize", {"prompt": "x", "model": "other"}), 404, "model")


def test_invocations_and_root_route_by_body(server, model):
    expected = as_floats(model.score("q", ["d1", "d2"]))
    for path in ("/invocations", "/"):
        tei = post(server, path, {"query": "q", "texts": ["d1", "d2"]}).json()
        assert isinstance(tei, list) and {r["index"]: r["score"] for r in tei} == dict(enumerate(expected))
        vllm = post(server, path, {"query": "q", "documents": ["d1", "d2"]}).json()
        assert rerank_scores(vllm) == dict(enumerate(expected))
        score = post(server, path, {"queries": "q", "documents": ["d1", "d2"]}).json()
        assert score["object"] == "list" and [d["score"] for d in score["data"]] == expected
        given = post(server, path, {"text_1": "q", "text_2": ["d1", "d2"]}).json()
        assert [d["score"] for d in given["data"]] == as_floats(model.predict([("q", "d1"), ("q", "d2")]))
        err = assert_error(post(server, path, {"prompt": "what is this"}), 400)
        assert "Cannot find suitable handler" in err["message"]
        tei_error(post(server, path, {"query": "q", "texts": []}), 400, "Empty")


def test_info_ping_and_health(server):
    info = requests.get(server.url + "/info", timeout=10).json()
    assert info["model_id"] == QWEN3_NAME and info["max_input_length"] == MAX_LENGTH
    assert info["model_type"] == {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}
    assert info["auto_truncate"] is True and isinstance(info["version"], str)
    assert info["model_dtype"] in ("float32", "bfloat16", "int8")
    for method in ("get", "post"):
        assert getattr(requests, method)(server.url + "/ping", timeout=10).status_code == 200
    assert requests.get(server.url + "/health", timeout=10).status_code == 200


def test_chat_template_flag_errors(tmp_path, qwen3_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "crossrank.cli", "serve", str(qwen3_path), "--port", "1",
           "--hf_overrides", json.dumps(QWEN3_OVERRIDES)]
    out = subprocess.run(cmd + ["--chat-template", str(tmp_path / "missing.jinja")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "neither a file nor a Jinja template" in out.stderr
    out = subprocess.run(cmd + ["--chat-template", CHAT, "--template", "qwen3-reranker"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "not both" in out.stderr


def test_inline_chat_template_scores_as_the_file(start_server, qwen3_path, chat_model):
    inline = start_server(qwen3_path, "--hf_overrides", json.dumps(QWEN3_OVERRIDES), "--threads", "1",
                          "--max-length", str(MAX_LENGTH), "--chat-template", CHAT)
    body = post(inline, "/score", {"text_1": "q", "text_2": ["d1", "d2"]}).json()
    assert [d["score"] for d in body["data"]] == as_floats(chat_model.score("q", ["d1", "d2"]))
    assert np.isfinite([d["score"] for d in body["data"]]).all()


# -- vLLM's own request forms and messages -------------------------------------------------------


def test_vllm_query_object_image_documents_and_truncation_size(server, model):
    expected = dict(enumerate(as_floats(model.score("capital", ["Paris.", "Beijing."]))))
    body = post(server, "/rerank", {"query": {"text": "capital"}, "documents": [{"text": "Paris."}, "Beijing."]}).json()
    assert rerank_scores(body) == expected
    assert {r["index"]: r["document"] for r in body["results"]} == {0: {"text": "Paris."}, 1: {"text": "Beijing."}}
    err = assert_error(post(server, "/rerank", {"query": "q", "documents": [{"image_url": "https://x/1.jpg"}]}), 400,
                       "documents.0")
    assert "multimodal" in err["message"]
    err = assert_error(post(server, "/rerank", {"query": {"image_url": "https://x/1.jpg"}, "documents": ["d"]}), 400,
                       "query")
    assert "multimodal" in err["message"]
    err = assert_error(post(server, "/score", {"queries": "q", "documents": ["d"],
                                               "truncate_prompt_tokens": MAX_LENGTH + 1}), 400,
                       "truncate_prompt_tokens")
    assert "Please request a smaller truncation size." in err["message"]


def test_truncating_pairs_as_given_never_cuts_all_of_text_2(server, model):
    err = assert_error(post(server, "/score", {"text_1": LONG_QUERY, "text_2": ["short answer"],
                                               "truncate_prompt_tokens": 50}), 400, "text_1")
    assert REDUCE in err["message"]
    # a cut that keeps some of text_2 is vLLM's cut of the ids
    ids = model.tokenizer.encode("q" + LONG_DOC, add_special_tokens=True).ids  # vLLM's text_1 + text_2
    body = post(server, "/score", {"text_1": "q", "text_2": LONG_DOC, "truncate_prompt_tokens": 50,
                                   "use_activation": False}).json()
    assert body["data"][0]["score"] == as_floats(model.forward_ids([ids[:50]]))[0]
    # left truncation drops text_1 first
    body = post(server, "/score", {"text_1": LONG_QUERY, "text_2": ["short answer"], "truncate_prompt_tokens": 50,
                                   "truncation_side": "left"}).json()
    assert body["usage"]["prompt_tokens"] == 50


def test_tei_longest_first_on_pairs_taken_as_given(start_server, qwen3_path, model):
    plain = start_server(qwen3_path, "--hf_overrides", json.dumps(QWEN3_OVERRIDES), "--threads", "1",
                         "--max-length", str(MAX_LENGTH), "--no-template")
    resp = post(plain, "/rerank", {"query": LONG_QUERY, "texts": DOCS, "raw_scores": True})
    assert resp.status_code == 200, resp.text
    prepared = ScoringEngine(model, use_template=False).encode_pairs([LONG_QUERY] * 3, DOCS, limit=MAX_LENGTH,
                                                                     fit="longest_first")
    expected = as_floats(model.forward_ids(prepared.ids))
    assert {r["index"]: r["score"] for r in resp.json()} == dict(enumerate(expected))
    assert len(set(expected)) == 3 and all(len(ids) <= MAX_LENGTH for ids in prepared.ids)
    for ids, doc in zip(prepared.ids, DOCS):
        assert doc[:20] in model.tokenizer.decode(ids.tolist(), skip_special_tokens=False)
    # the vLLM route refuses the same cut
    err = assert_error(post(plain, "/rerank", {"query": LONG_QUERY, "documents": DOCS, "truncate_prompt_tokens": -1}),
                       400)
    assert REDUCE in err["message"]


def test_chat_template_kwargs_are_chat_template_variables(chat_server, qwen3_path, chat_file, chat_model):
    with_prefix = CrossEncoder(qwen3_path, hf_overrides=QWEN3_OVERRIDES, threads=2, max_length=MAX_LENGTH,
                               template=ChatTemplate.from_file(chat_file), chat_template_kwargs={"prefix": "Rate: "})
    expected = as_floats(with_prefix.score("q", ["d1", "d2"]))
    assert expected != as_floats(chat_model.score("q", ["d1", "d2"]))
    for path, body in (("/score", {"text_1": "q", "text_2": ["d1", "d2"]}),
                       ("/rerank", {"query": "q", "documents": ["d1", "d2"]})):
        resp = post(chat_server, path, {**body, "chat_template_kwargs": {"prefix": "Rate: "}})
        assert resp.status_code == 200, resp.text
        got = (rerank_scores(resp.json()) if path == "/rerank"
               else dict(enumerate(d["score"] for d in resp.json()["data"])))
        assert got == dict(enumerate(expected))


def test_tei_longest_first_with_a_chat_template(chat_server):
    resp = post(chat_server, "/rerank", {"query": LONG_QUERY, "texts": DOCS, "raw_scores": True})
    assert resp.status_code == 200, resp.text
    assert len({r["score"] for r in resp.json()}) == 3
