"""``crossrank serve`` under hostile and heavy requests: cheap refusals, admission at the door,
fair sharing of a large request, no 500 on bad input, disconnects counted as 499.

Each test talks to a real server (a subprocess on 127.0.0.1, the tiny random Qwen3 fixture).
Time limits are generous (the machine is shared): each bounds work that used to take tens of
seconds, so a regression still fails them.
"""
import json
import re
import socket
import threading
import time

import pytest

requests = pytest.importorskip("requests")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from _fixtures import fixture_path  # noqa: E402
from crossrank.server.responses import JSONResponse  # noqa: E402
from crossrank.server.limits import MAX_DEPTH, MAX_INT_DIGITS, check_items, parse_json_body  # noqa: E402
from crossrank.server.errors import APIError  # noqa: E402
from test_server import QWEN3_OVERRIDES, assert_error, post, start_server  # noqa: E402,F401,F811 (a fixture)

MAX_ITEMS = 1000
SLOW_DOCS = [f"{i} " + "word " * 7000 for i in range(24)]  # seconds of engine work


@pytest.fixture(scope="module")
def qwen3_path():
    return fixture_path("qwen3-tiny")


@pytest.fixture(scope="module")
def server(start_server, qwen3_path):
    return start_server(qwen3_path, "--hf_overrides", json.dumps(QWEN3_OVERRIDES), "--threads", "2",
                        "--max-client-batch-size", str(MAX_ITEMS), "--max-concurrent-requests", "2",
                        "--max-batch-tokens", "32768")


def raw_post(server, path, data: bytes, **kw):
    return requests.post(server.url + path, data=data, headers={"content-type": "application/json"},
                         timeout=kw.pop("timeout", 60), **kw)


def health_ms(server) -> float:
    t0 = time.monotonic()
    assert requests.get(server.url + "/health", timeout=30).status_code == 200
    return 1e3 * (time.monotonic() - t0)


# -- the parser, in process ----------------------------------------------------------------------


def test_parser_bounds_integers_and_finds_lone_surrogates_anywhere():
    with pytest.raises(APIError, match="digits"):
        parse_json_body(b'{"a": [' + b"9" * 5000 + b"]}")
    assert parse_json_body(b'{"a": ' + b"9" * MAX_INT_DIGITS + b"}")["a"] == int("9" * MAX_INT_DIGITS)
    for raw, where in ((b'{"model": "\\ud800"}', "model"), (b'{"x": [1, {"y": "a\\udfff"}]}', "x.1.y"),
                       (b'{"k\\udc00": 1}', "body")):
        with pytest.raises(APIError) as info:
            parse_json_body(raw)
        assert info.value.status == 400 and info.value.message.startswith(where), info.value.message
    assert parse_json_body(b'{"e": "\\ud83d\\ude00"}') == {"e": "\U0001F600"}  # a valid pair is fine
    assert parse_json_body(b'{"e": "\\\\ud800"}') == {"e": "\\ud800"}  # an escaped backslash is text


def nested(depth: int, pad: str = "") -> bytes:
    """A rerank body nesting ``depth`` levels in all (the body is level 1), the innermost in an
    object document's extra field, which the answer echoes; ``pad`` adds a field to make it large."""
    inner = depth - 3  # body > documents > the document object > ...
    extra = f', "pad": "{pad}"' if pad else ""
    return (f'{{"query": "q", "documents": [{{"text": "a", "x": {"[" * inner}{"]" * inner}}}]{extra}}}').encode()


def test_parser_refuses_non_finite_numbers_and_deep_nesting():
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1" * 400 + b".0"):
        with pytest.raises(APIError) as info:
            parse_json_body(b'{"documents": [{"text": "a", "x": [' + literal + b']}]}')
        assert info.value.status == 400 and "JSON has no" in info.value.message, info.value.message
    assert parse_json_body(b'{"x": [1.5e308, -0.0, 1e-999]}') == {"x": [1.5e308, -0.0, 0.0]}
    assert parse_json_body(nested(MAX_DEPTH))["documents"][0]["x"] is not None
    for depth in (MAX_DEPTH + 1, 990, 100_000):  # the last: past the parser's own recursion limit
        with pytest.raises(APIError) as info:
            parse_json_body(nested(depth))
        assert info.value.status == 400 and f"nested too deeply: at most {MAX_DEPTH}" in info.value.message
    # brackets inside strings are text, not nesting
    assert parse_json_body(b'{"q": "' + b"[" * 500 + b'"}')["q"] == "[" * 500


def test_a_response_always_encodes():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    content = {"a": float("nan"), "b": [float("inf"), -float("inf"), 1.5, True, None, "\ud800"], "d": deep, 1: "k"}
    body = JSONResponse(content).body
    head = b'{"a":null,"b":[null,null,1.5,true,null,"\\ud800"],"d":'
    assert body == head + b"[" * 5001 + b"]" * 5001 + b',"1":"k"}'
    assert JSONResponse({"s": "\ud800"}).body == b'{"s":"\\ud800"}'
    assert JSONResponse({"x": [1, "\u00e9"]}).body == '{"x":[1,"\u00e9"]}'.encode()  # the usual path: UTF-8


def test_item_check_refuses_counts_and_types_with_one_error():
    with pytest.raises(APIError) as info:
        check_items({"texts": ["a"] * 11}, 10, tei=True)
    assert info.value.tei()[0] == 413 and "at most 10" in info.value.message and info.value.param == "texts"
    with pytest.raises(APIError) as info:
        check_items({"documents": ["a", "b", 0] + [0] * 100_000}, 200_000, tei=False)
    assert info.value.status == 400 and info.value.param == "documents.2" and "int" in info.value.message
    check_items({"documents": ["a", {"text": "b"}], "queries": "q"}, 10, tei=False)


# -- item 1: cheap requests stay cheap -----------------------------------------------------------


def test_a_million_items_are_refused_in_a_moment_with_the_limit_named(server):
    body = b'{"query": "q", "documents": [' + b",".join([b"0"] * 1_000_000) + b"]}"
    t0 = time.monotonic()
    resp = raw_post(server, "/rerank", body)
    assert time.monotonic() - t0 < 10.0
    err = assert_error(resp, 400, "documents")
    assert f"at most {MAX_ITEMS}" in err["message"] and "--max-client-batch-size" in err["message"]
    # TEI's shape: TEI's own batch-size check, 413 Validation
    tei = raw_post(server, "/rerank", json.dumps({"query": "q", "texts": ["t"] * (MAX_ITEMS + 1)}).encode())
    assert tei.status_code == 413 and tei.json()["error_type"] == "Validation"
    # a mistyped item is refused by TEI's JSON extractor before that: 422
    tei = raw_post(server, "/rerank", json.dumps({"query": "q", "texts": ["t", 0]}).encode())
    assert tei.status_code == 422 and tei.json()["error_type"] == "Validation"
    info = requests.get(server.url + "/info", timeout=10).json()
    assert info["max_client_batch_size"] == MAX_ITEMS
    # at the limit: served
    assert post(server, "/score", {"text_1": "q", "text_2": ["d"] * MAX_ITEMS}).status_code == 200


def test_wrong_item_types_get_one_error_not_one_per_item(server):
    body = b'{"queries": "q", "documents": ["a", ' + b",".join([b"0"] * (MAX_ITEMS - 1)) + b"]}"
    err = assert_error(raw_post(server, "/score", body), 400, "documents.1")
    assert len(err["message"]) < 200


# -- item 2: a large request does not stall the rest ---------------------------------------------


def test_a_document_that_cannot_fit_is_refused_before_tokenizing(server):
    huge = "word " * 1_500_000  # 7.5 MB: seconds of tokenizing
    t0 = time.monotonic()
    tei = post(server, "/rerank", {"query": "q", "texts": [huge], "truncate": False})
    assert time.monotonic() - t0 < 5.0
    assert tei.status_code == 413 and tei.json()["error_type"] == "Validation", tei.text
    assert "does not fit" in tei.json()["error"]
    assert_error(post(server, "/score", {"text_1": "q", "text_2": [huge]}), 400, "truncate_prompt_tokens")
    assert_error(post(server, "/rerank", {"query": huge, "documents": ["d"]}), 400, "query")


def test_small_requests_finish_while_a_large_one_runs(server):
    large = {"query": "q", "documents": [f"{i} " + "word " * 300 for i in range(MAX_ITEMS)]}
    done = {}

    def send_large():
        done["large"] = post(server, "/rerank", large, timeout=300)
        done["large_at"] = time.monotonic()

    thread = threading.Thread(target=send_large)
    thread.start()
    time.sleep(0.5)
    small = []
    for _ in range(3):
        resp = post(server, "/rerank", {"query": "q", "documents": ["a short document"]}, timeout=300)
        assert resp.status_code == 200
        small.append(time.monotonic())
    thread.join()
    assert done["large"].status_code == 200
    # fair sharing: a small request does not wait for the large one to end
    assert small[0] < done["large_at"], "the small request waited for the large one"


# -- item 3: shed load at the door ----------------------------------------------------------------


def test_overload_is_refused_at_once_with_retry_after_and_health_answers(server):
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        post(server, "/rerank", {"query": "q", "documents": SLOW_DOCS}, timeout=300))) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while True:  # both permits taken
        text = requests.get(server.url + "/metrics", timeout=10).text
        if re.search(r"^crossrank_requests_in_flight\{[^}]*\} 2", text, re.M):
            break
        assert time.monotonic() < deadline, text
        time.sleep(0.05)
    t0 = time.monotonic()
    resp = post(server, "/rerank", {"query": "q", "documents": ["d"]})
    assert time.monotonic() - t0 < 2.0
    err = assert_error(resp, 503)
    assert resp.headers["retry-after"] == "1" and "overloaded" in err["message"]
    tei = post(server, "/rerank", {"query": "q", "texts": ["d"]})
    assert tei.status_code == 429 and tei.json()["error_type"] == "Overloaded" and tei.headers["retry-after"]
    assert max(health_ms(server) for _ in range(5)) < 1000
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200, 200]
    text = requests.get(server.url + "/metrics", timeout=10).text
    assert re.search(r"crossrank_overloaded_total\{[^}]*\} [1-9]", text)


# -- item 4: no 500 on bad input --------------------------------------------------------------------


@pytest.mark.parametrize("path,data,status", [
    ("/rerank", b'{"query": "q", "documents": ["d"], "top_n": ' + b"9" * 5000 + b"}", 400),
    ("/score", b'{"queries": "q", "documents": ["d"], "other": [' + b"1" * 4400 + b"]}", 400),
    ("/rerank", b'{"query": "q", "documents": ["d"], "model": "\\ud800"}', 400),
    ("/rerank", b'{"query": "q", "documents": ["d"], "request_id": "\\udfff"}', 400),
    ("/score", b'{"queries": "q", "documents": ["d"], "chat_template_kwargs": {"x": "\\ud800"}}', 400),
    ("/rerank", b'{"query": "q", "texts": ["d\\ud800"]}', 422),
    ("/tokenize", b'{"prompt": "\\ud800"}', 400),
    ("/detokenize", b'{"tokens": [' + b"1" * 5000 + b"]}", 400),
    ("/rerank", b'{"query": "q", "documents": ["d"], "top_n": 1e999}', 400),
])
def test_malformed_requests_get_a_4xx_in_the_route_shape(server, path, data, status):
    resp = raw_post(server, path, data)
    assert resp.status_code == status, resp.text
    if status == 422:
        assert resp.json()["error_type"] == "Validation"
    else:
        assert_error(resp, status)


@pytest.mark.parametrize("pad", [0, 300_000], ids=["parsed-on-the-loop", "parsed-on-the-pool"])
def test_non_finite_numbers_and_deep_nesting_get_400_never_500(server, pad):
    padding = "p" * pad  # bodies over 256 KiB are parsed on the tokenizer pool
    for literal in ("NaN", "Infinity", "-Infinity", "1e999"):
        for body in ({"query": "q", "documents": [{"text": "a", "x": "@"}], "pad": padding},
                     {"queries": "q", "documents": ["a"], "x": {"y": ["@"]}, "pad": padding}):
            data = json.dumps(body).replace('"@"', literal).encode()
            err = assert_error(raw_post(server, "/rerank" if "query" in body else "/score", data), 400)
            assert "JSON has no NaN or Infinity" in err["message"], err
        # TEI's shape: TEI's status and error type for a body that does not parse
        data = json.dumps({"query": "q", "texts": ["a"], "x": "@", "pad": padding}).replace('"@"', literal).encode()
        tei = raw_post(server, "/rerank", data)
        assert tei.status_code == 422 and tei.json()["error_type"] == "Validation", tei.text
        assert "JSON has no NaN or Infinity" in tei.json()["error"]
    err = assert_error(raw_post(server, "/rerank", b'{"query": "q", "documents": [{"text": NaN}]}'), 400)
    assert "NaN" in err["message"]  # never scored as the text "nan"
    for depth in (MAX_DEPTH + 1, 950, 990):
        err = assert_error(raw_post(server, "/rerank", nested(depth, padding)), 400)
        assert f"nested too deeply: at most {MAX_DEPTH} levels" in err["message"]
        tei = raw_post(server, "/rerank", json.dumps({"query": "q", "texts": ["a"], "pad": padding, "x": "@"}).replace(
            '"@"', "[" * (depth - 1) + "]" * (depth - 1)).encode())
        assert tei.status_code == 422 and "nested too deeply" in tei.json()["error"], tei.text
    # at the limit the document is echoed as sent
    resp = raw_post(server, "/rerank", nested(MAX_DEPTH, padding))
    assert resp.status_code == 200, resp.text
    assert json.dumps(resp.json()["results"][0]["document"]["x"]) == json.dumps(
        json.loads(nested(MAX_DEPTH))["documents"][0]["x"])
    text = requests.get(server.url + "/metrics", timeout=10).text
    assert not re.search(r'^crossrank_requests_total\{[^}]*status="500"[^}]*\} [1-9]', text, re.M), text


# -- item 7: a disconnect during upload is not a 500 -------------------------------------------------


def test_a_client_gone_during_upload_is_counted_499_not_500(server):
    def statuses():
        text = requests.get(server.url + "/metrics", timeout=10).text
        found = {}
        for labels, value in re.findall(r"^crossrank_requests_total\{([^}]*)\} (\S+)$", text, re.M):
            if 'endpoint="/score"' in labels:
                found[re.search(r'status="(\d+)"', labels).group(1)] = float(value)
        return found, text

    before, _ = statuses()
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{\"queries\": ")
            time.sleep(0.1)
    deadline = time.monotonic() + 10
    while True:
        after, text = statuses()
        if after.get("499", 0) - before.get("499", 0) >= 3:
            break
        assert time.monotonic() < deadline, text
        time.sleep(0.1)
    assert after.get("500", 0) == before.get("500", 0)
    assert re.search(r"crossrank_client_disconnects_total\{[^}]*\} [1-9]", text)


# -- a huge document: tokenizing is bounded and raced against the deadline ---------------------------

PRE_CUT_TIMEOUT = 3.0
HUGE = ("lorem ipsum dolor sit amet " * 600_000)[:15_000_000]  # tens of seconds to tokenize whole


@pytest.fixture(scope="module")
def timed_server(start_server, qwen3_path):
    return start_server(qwen3_path, "--hf_overrides", json.dumps(QWEN3_OVERRIDES), "--threads", "1",
                        "--max-length", "512", "--request-timeout", str(PRE_CUT_TIMEOUT))


def _mixed_text(n_chars: int, seed: int, boundaries) -> str:
    """Many scripts, emoji sequences, combining marks and whitespace runs; a long whitespace run, a
    ZWJ sequence and a word without spaces straddle each of ``boundaries`` (where a cut falls)."""
    import random

    rng = random.Random(seed)
    pieces = ["Grüße aus Köln. ", "東京は日本の首都です。", "ٱلْعَرَبِيَّةُ لُغَةٌ ", "हिन्दी भाषा ", "Ελληνικά ",
              "😀👩‍👩‍👧🏳️‍🌈 ", "e\u0301\u0302a\u0308 ", "   \t\t  ", "\n\n\n", "x" * 40, "1234567890 ", "ＡＢＣ ",
              "ﬁﬂ Å Ω ", "<tag attr='v'>", "--------" * 8]
    out, size = [], 0
    while size < n_chars:
        piece = rng.choice(pieces)
        out.append(piece)
        size += len(piece)
    text = "".join(out)[:n_chars]
    for at in boundaries:
        tricky = " " * 3000 + "👩‍👩‍👧" * 50 + "a\u0301" * 200 + "w" * 3000
        text = text[:at - len(tricky) // 2] + tricky + text[at + len(tricky) // 2:]
    return text[:n_chars]


# The first measured piece's characters per needed token: the default (the cut falls in ordinary
# mixed text), 104 (192 needed tokens: the cut falls at 19,968 characters, inside a tricky run), and
# 10,000 (past the bound: the cut falls at the bound, inside a tricky run, with no count).
@pytest.mark.parametrize("first_chars", [None, 104, 10_000])
def test_pre_cut_texts_give_the_ids_of_the_whole_texts(qwen3_path, monkeypatch, first_chars):
    from crossrank import CrossEncoder
    from crossrank.server import engine as engine_module
    from crossrank.server.engine import PRE_CUT_MARGIN, PromptError, ScoringEngine
    from crossrank.server.limits import pre_cut
    from crossrank.server.protocol import ScoringTask

    if first_chars is not None:
        monkeypatch.setattr(engine_module, "PRE_CUT_FIRST_CHARS", first_chars)
    engine = ScoringEngine(CrossEncoder(qwen3_path, hf_overrides=QWEN3_OVERRIDES, threads=1))
    budget = 128
    keep = engine.pre_cut_chars(budget)
    n = 2 * keep + 20_000
    at = min(keep, (budget + PRE_CUT_MARGIN) * engine_module.PRE_CUT_FIRST_CHARS)
    # the cuts at `at` from each end fall inside a tricky run where the first piece holds enough
    # tokens (104, 10,000); the default's first piece is under a run's length
    marks = [keep, n - keep] + ([at, n - at] if at > 4_000 else [])
    long_a, long_b = _mixed_text(n, 1, marks), _mixed_text(n, 2, marks)

    def ids(task):
        try:
            return prepared_ids(task)
        except PromptError as exc:  # a right cut that takes all of text_2: refused either way
            return str(exc)

    def prepared_ids(task):
        if task.templated:
            prepared = engine.encode_queries(task.firsts, task.seconds, None, limit=task.limit, side=task.side,
                                             truncate=task.truncate, fit=task.fit)
        else:
            prepared = engine.encode_pairs(engine.cut_texts(task.firsts, task.max_tokens_per_query),
                                           engine.cut_texts(task.seconds, task.max_tokens_per_doc),
                                           limit=task.limit, side=task.side, fit=task.fit)
        return [a.tolist() for a in prepared.ids]

    cases = [
        dict(kind="rerank", firsts=["q", "q"], seconds=[long_a, long_b], templated=True),
        dict(kind="tei", firsts=[long_a], seconds=[long_b], templated=True, fit="longest_first"),
        dict(kind="score", firsts=["q", long_a], seconds=[long_b, "d"], templated=False),
        dict(kind="tei", firsts=[long_a], seconds=[long_b], templated=False, fit="longest_first"),
        dict(kind="score", firsts=["q"], seconds=[long_b], templated=False, max_tokens_per_doc=budget - 28),
    ]
    scored = 0
    for case in cases:
        for side in ("right", "left"):
            task = ScoringTask(limit=budget, side=side, **case)
            cut = pre_cut(engine, task)
            assert sum(map(len, cut.firsts + cut.seconds)) < sum(map(len, task.firsts + task.seconds))
            expected = ids(task)
            assert ids(cut) == expected, (case["kind"], side)
            scored += isinstance(expected, list)
    assert scored >= 8
    # the pieces are measured: this text's first try (or the one after it) holds enough tokens
    assert len(engine.pre_cut([long_a], budget)[0]) <= 2 * (4 * at if first_chars is None else at)
    # where an over-long prompt is refused, nothing is cut
    refused = ScoringTask(kind="tei", firsts=["q"], seconds=[long_a], templated=True, truncate=False)
    assert pre_cut(engine, refused) is refused


def _timed_post(server, path, body):
    t0 = time.monotonic()
    resp = post(server, path, body, timeout=120)
    return resp, time.monotonic() - t0


def test_a_huge_document_is_answered_within_the_timeout(timed_server):
    bound = PRE_CUT_TIMEOUT + 6.0  # tokenizing the whole document took 15-35 s
    for path, body in (("/rerank", {"query": "q", "documents": [HUGE]}),
                       ("/rerank", {"query": "q", "texts": [HUGE]}),
                       ("/score", {"text_1": "q", "text_2": HUGE, "truncate_prompt_tokens": -1})):
        resp, took = _timed_post(timed_server, path, body)
        assert resp.status_code in (200, 504) and took < bound, (path, resp.status_code, took, resp.text[:200])
    # nothing of /tokenize can be cut: its 504 comes at the deadline, and its thread, which runs on,
    # holds none of the scoring requests' tokenizers
    resp, took = _timed_post(timed_server, "/tokenize", {"prompt": HUGE})
    assert_error(resp, 504)
    assert took < bound, took
    small, took = _timed_post(timed_server, "/rerank", {"query": "q", "documents": ["a", "b"]})
    assert small.status_code == 200 and took < PRE_CUT_TIMEOUT, (small.text, took)


def test_two_huge_documents_do_not_hold_up_a_small_request(timed_server):
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        _timed_post(timed_server, "/rerank", {"query": "q", "documents": [HUGE]}))) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    small, took = _timed_post(timed_server, "/rerank", {"query": "q", "documents": ["a", "b"]})
    for t in threads:
        t.join()
    assert small.status_code == 200 and took < PRE_CUT_TIMEOUT, (small.text, took)
    assert [r.status_code for r, _ in results] == [200, 200]
