"""The HTTP server (``crossrank serve``): vLLM's /score and /rerank, TEI's /rerank, batching, limits.

Every test talks to a real server started as a subprocess on 127.0.0.1 (a free port) with a
random-weight fixture checkpoint, through real HTTP clients (``requests``; ``httpx`` async for
concurrency). Server scores are compared with the in-process ``CrossEncoder`` on the same inputs
for exact equality: the engine is deterministic whatever the batching and prefix reuse, and JSON
carries a float32 exactly.
"""
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

requests = pytest.importorskip("requests")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from _family_fixtures import family_fixture_path, load_family_golden  # noqa: E402
from _fixtures import fixture_path  # noqa: E402
from crossrank import CrossEncoder  # noqa: E402

QWEN3_OVERRIDES = {"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["no", "yes"],
                   "is_original_qwen3_reranker": True}
QWEN3_NAME = "Qwen/Qwen3-Reranker-0.6B"
MXBAI_NAME = "mixedbread-ai/mxbai-rerank-base-v2"
GEMMA_NAME = "BAAI/bge-reranker-v2-gemma"
API_KEY = "test-key-0123456789"
BODY_LIMIT = 200_000
STARTUP_TIMEOUT = 120.0  # seconds; the machine may be shared with builds

QUERIES = ["What is the capital of China?", "Explain gravity"]
DOCUMENTS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other. It gives weight to physical objects "
    "and is responsible for the movement of planets around the sun.",
]
RERANK_DOCS = [
    "Beijing is the capital of the People's Republic of China.",
    "The Great Wall stretches for thousands of kilometres.",
    "Paris is the capital of France.",
    "Gravity pulls objects toward each other.",
    "Shanghai is the largest city in China by population.",
]


# -- server processes --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``crossrank serve`` in a subprocess, its output in a log file."""

    def __init__(self, model, args, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("CROSSRANK_API_KEY", None)
        self._log = open(log_path, "w", encoding="utf-8")
        cmd = [sys.executable, "-m", "crossrank.cli", "serve", str(model), "--port", str(self.port),
               "--host", "127.0.0.1", *args]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT, headers=None) -> "Server":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/health", timeout=2, headers=headers).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server was not ready within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        self._log.close()


@pytest.fixture(scope="module")
def start_server(tmp_path_factory, request):
    """start_server(model, *args) -> a ready Server, stopped when the module's tests end."""
    servers = []

    def start(model, *args, ready_headers=None):
        server = Server(model, list(args), tmp_path_factory.mktemp("server") / "server.log")
        servers.append(server)
        return server.wait_ready(headers=ready_headers)

    def stop_all():
        for server in servers:
            server.stop()

    request.addfinalizer(stop_all)
    return start


@pytest.fixture(scope="module")
def qwen3_path():
    return fixture_path("qwen3-tiny")


@pytest.fixture(scope="module")
def qwen3_model(qwen3_path):
    return CrossEncoder(qwen3_path, hf_overrides=QWEN3_OVERRIDES, threads=2)


@pytest.fixture(scope="module")
def qwen3_server(start_server, qwen3_path):
    return start_server(qwen3_path, "--hf_overrides", json.dumps(QWEN3_OVERRIDES), "--served-model-name",
                        QWEN3_NAME, "--threads", "2", "--max-body-bytes", str(BODY_LIMIT))


def post(server, path, body, **kw):
    return requests.post(server.url + path, json=body, timeout=kw.pop("timeout", 60), **kw)


def assert_error(resp, status, param=None):
    """A 4xx (or 5xx) in vLLM's shape, {"error": {"message", "type", "param", "code"}}, with the message
    also under "detail" (what Jina's client reads)."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert set(body) == {"error", "detail"}, body
    err = body["error"]
    assert body["detail"] == err["message"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert err["code"] == status and isinstance(err["message"], str) and err["message"] and err["type"]
    if param is not None:
        assert err["param"] == param, err
    return err


def assert_alive(server, headers=None):
    assert requests.get(server.url + "/health", timeout=10, headers=headers).status_code == 200
    resp = post(server, "/score", {"text_1": "a question", "text_2": ["an answer"]}, headers=headers)
    assert resp.status_code == 200, resp.text


def as_floats(values):
    return [float(v) for v in np.asarray(values, dtype=np.float32).reshape(-1)]


def assert_score_response(body, model_name, n, prompt_tokens):
    assert set(body) == {"id", "object", "created", "model", "data", "usage"}
    assert body["object"] == "list" and body["id"].startswith("score-") and isinstance(body["created"], int)
    assert body["model"] == model_name
    assert [d["index"] for d in body["data"]] == list(range(n))
    assert all(set(d) == {"index", "object", "score"} and d["object"] == "score" for d in body["data"])
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] == prompt_tokens


# -- the seed's request demos (vLLM's request form: the prompt pieces written by the client) ------

QWEN3_PREFIX = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and "
                "the Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n"
                "<|im_start|>user\n")
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
MXBAI_PREFIX = ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                "<|im_end|>\n<|im_start|>user\n")
MXBAI_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
MXBAI_TASK = ("You are a search relevance expert who evaluates how well documents match search queries. For each "
              "query-document pair, carefully analyze the semantic relationship between them, then provide your "
              "binary relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:")
GEMMA_PROMPT = ("Given a query A and a passage B, determine whether the passage contains an answer to the query "
                "by providing a prediction of either 'Yes' or 'No'.")


def qwen3_demo():
    queries = [f"{QWEN3_PREFIX}<Instruct>: {QWEN3_INSTRUCTION}\n<Query>: {q}\n" for q in QUERIES]
    documents = [f"<Document>: {d}{QWEN3_SUFFIX}" for d in DOCUMENTS]
    return queries, documents


def mxbai_demo():
    queries = [f"{MXBAI_PREFIX}query: {q}\n" for q in QUERIES]
    documents = [f"document: {d}\n{MXBAI_TASK}{MXBAI_SUFFIX}" for d in DOCUMENTS]
    return queries, documents


def gemma_demo():
    queries = [f"A: {q}\n" for q in QUERIES]
    documents = [f"B: {d}\n{GEMMA_PROMPT}" for d in DOCUMENTS]
    return queries, documents


def check_demo(server, model, model_name, demo):
    queries, documents = demo()
    resp = requests.post(server.url + "/score", json={"model": model_name, "text_1": queries, "text_2": documents,
                                                      "truncate_prompt_tokens": -1}, timeout=60)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    pairs = list(zip(queries, documents))
    assert_score_response(body, model_name, len(pairs), sum(model.tokenize_pairs(pairs).num_tokens))
    assert [d["score"] for d in body["data"]] == as_floats(model.predict(pairs))


def test_qwen3_reranker_demo_returns_vllm_shape_and_predict_scores(qwen3_server, qwen3_model):
    check_demo(qwen3_server, qwen3_model, QWEN3_NAME, qwen3_demo)


@pytest.fixture(scope="module", params=[("mxbai-tiny", MXBAI_NAME), ("gemma-tiny", GEMMA_NAME)],
                ids=["mxbai-rerank-v2", "bge-reranker-v2-gemma"])
def family(request, start_server):
    """(server, in-process model, served name) of a non-Qwen3 family; the template is found from the
    served name, as for a hub id."""
    name, served = request.param
    path = family_fixture_path(name)
    golden = load_family_golden(name)
    model = CrossEncoder(path, hf_overrides=golden["hf_overrides"], template=golden["template"], threads=2)
    server = start_server(path, "--hf_overrides", json.dumps(golden["hf_overrides"]), "--served-model-name",
                          served, "--threads", "2")
    return server, model, served


def test_family_demo_returns_vllm_shape_and_predict_scores(family):
    server, model, served = family
    check_demo(server, model, served, mxbai_demo if served == MXBAI_NAME else gemma_demo)


def test_family_rerank_applies_the_family_template_on_the_server(family):
    server, model, served = family
    query = "capital of China"
    body = post(server, "/rerank", {"model": served, "query": query, "documents": RERANK_DOCS}).json()
    expected = model.score(query, RERANK_DOCS)
    assert {r["index"]: r["relevance_score"] for r in body["results"]} == dict(enumerate(as_floats(expected)))
    assert body["usage"]["prompt_tokens"] == sum(model.tokenize(query, RERANK_DOCS).num_tokens)


def test_served_model_name_gives_a_bare_causal_lm_its_family(start_server, qwen3_path):
    """docs/server.md: a local directory named otherwise, its config the bare ``Qwen3ForCausalLM`` the
    real Qwen3-Reranker ships, finds its family through --served-model-name (no --hf_overrides, no
    --template), scoring as --template qwen3-reranker does; a family the model names itself wins."""
    from crossrank.errors import UnsupportedModelError
    from crossrank.server.app import load_model
    from crossrank.server.settings import ServerSettings

    server = start_server(qwen3_path, "--served-model-name", QWEN3_NAME, "--threads", "2")
    templated = CrossEncoder(qwen3_path, template="qwen3-reranker", threads=2)
    query = "capital of China"
    body = post(server, "/rerank", {"query": query, "documents": RERANK_DOCS}).json()
    assert {r["index"]: r["relevance_score"] for r in body["results"]} == dict(
        enumerate(as_floats(templated.score(query, RERANK_DOCS))))
    # a served name that names no family: the library's refusal stands
    with pytest.raises(UnsupportedModelError, match="causal LM"):
        load_model(ServerSettings(model=str(qwen3_path), served_model_names=["my-reranker"], threads=1))
    # the model's config names its family: the served name of another one is no hint
    own = load_model(ServerSettings(model=str(qwen3_path), served_model_names=[GEMMA_NAME],
                                    hf_overrides=QWEN3_OVERRIDES, threads=1))
    assert own.prompt_format == "qwen3-reranker"


# -- /score and /rerank ------------------------------------------------------------------------


def test_score_queries_documents_get_the_template_with_instruction(qwen3_server, qwen3_model):
    docs = RERANK_DOCS[:3]
    # 1:N
    body = post(qwen3_server, "/score", {"queries": QUERIES[0], "documents": docs}).json()
    assert_score_response(body, QWEN3_NAME, 3, sum(qwen3_model.tokenize(QUERIES[0], docs).num_tokens))
    assert [d["score"] for d in body["data"]] == as_floats(qwen3_model.score(QUERIES[0], docs))
    # N:N, with an instruction, in vLLM's newer queries + items form
    queries = [QUERIES[0], QUERIES[1], QUERIES[0]]
    instruction = "Given a question, find passages about geography"
    body = post(qwen3_server, "/v1/score", {"queries": queries, "items": docs, "instruction": instruction}).json()
    assert [d["score"] for d in body["data"]] == as_floats(qwen3_model.score(queries, docs, instruction))
    # a list of one query is broadcast (1:N), as vLLM does
    body = post(qwen3_server, "/score", {"data_1": [QUERIES[1]], "data_2": DOCUMENTS}).json()
    assert [d["score"] for d in body["data"]] == as_floats(qwen3_model.predict([(QUERIES[1], d) for d in DOCUMENTS]))


def test_score_use_activation_false_gives_raw_logits(qwen3_server, qwen3_model):
    queries, documents = qwen3_demo()
    body = post(qwen3_server, "/score", {"text_1": queries, "text_2": documents, "use_activation": False}).json()
    raw = qwen3_model.predict(list(zip(queries, documents)), activation_fn="identity")
    assert [d["score"] for d in body["data"]] == as_floats(raw)


def test_rerank_top_n_and_return_documents(qwen3_server, qwen3_model):
    query = "Which city is the capital of China?"
    expected = as_floats(qwen3_model.score(query, RERANK_DOCS))
    order = sorted(range(len(RERANK_DOCS)), key=lambda i: -expected[i])
    tokens = sum(qwen3_model.tokenize(query, RERANK_DOCS).num_tokens)
    for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
        body = post(qwen3_server, path, {"model": QWEN3_NAME, "query": query, "documents": RERANK_DOCS,
                                         "top_n": 3}).json()
        assert set(body) == {"id", "model", "usage", "results"} and body["model"] == QWEN3_NAME
        assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
        assert [r["index"] for r in body["results"]] == order[:3]
        for r in body["results"]:
            assert list(r) == ["index", "document", "relevance_score"]
            assert r["document"] == {"text": RERANK_DOCS[r["index"]]}
            assert r["relevance_score"] == expected[r["index"]]
    body = post(qwen3_server, "/rerank", {"query": query, "documents": RERANK_DOCS, "return_documents": False}).json()
    assert [r["index"] for r in body["results"]] == order  # top_n absent: all, best first
    assert all(set(r) == {"index", "relevance_score"} for r in body["results"])
    # Cohere v1 / Jina document objects
    body = post(qwen3_server, "/rerank", {"query": query, "documents": [{"text": d} for d in RERANK_DOCS],
                                          "top_n": 0}).json()
    assert [r["relevance_score"] for r in body["results"]] == [expected[i] for i in order]


def test_tei_rerank_shape(qwen3_server, qwen3_model):
    query = "capital of China"
    body = post(qwen3_server, "/rerank", {"query": query, "texts": RERANK_DOCS, "raw_scores": True,
                                          "return_text": True}).json()
    raw = as_floats(qwen3_model.score(query, RERANK_DOCS, activation_fn="identity"))
    assert isinstance(body, list) and len(body) == len(RERANK_DOCS)
    assert [r["score"] for r in body] == sorted(raw, reverse=True)
    for r in body:
        assert set(r) == {"index", "score", "text"} and r["score"] == raw[r["index"]]
        assert r["text"] == RERANK_DOCS[r["index"]]
    body = post(qwen3_server, "/rerank", {"query": query, "texts": RERANK_DOCS}).json()
    scores = as_floats(qwen3_model.score(query, RERANK_DOCS))
    assert all(set(r) == {"index", "score"} and r["score"] == scores[r["index"]] for r in body)


def test_truncation_options(qwen3_server, qwen3_model, qwen3_path):
    query = "volcano"
    long_doc = " ".join(f"Iceland has volcano number {i}." for i in range(60))
    # truncate_prompt_tokens on templated pairs: the recipe's cut inside the document
    short = CrossEncoder(qwen3_path, hf_overrides=QWEN3_OVERRIDES, threads=2, max_length=120)
    body = post(qwen3_server, "/rerank", {"query": query, "documents": [long_doc, "short"],
                                          "truncate_prompt_tokens": 120}).json()
    expected = as_floats(short.score(query, [long_doc, "short"]))
    assert {r["index"]: r["relevance_score"] for r in body["results"]} == {0: expected[0], 1: expected[1]}
    assert body["usage"]["prompt_tokens"] == sum(short.tokenize(query, [long_doc, "short"]).num_tokens)
    # cutting the document's start instead keeps the budget
    body = post(qwen3_server, "/rerank", {"query": query, "documents": [long_doc], "truncate_prompt_tokens": 120,
                                          "truncation_side": "left"}).json()
    assert body["usage"]["prompt_tokens"] <= 120
    assert body["results"][0]["relevance_score"] != expected[0]
    # truncate_prompt_tokens on raw pairs cuts the ids, as vLLM does
    ids = qwen3_model.tokenize_pairs([(query, long_doc)]).input_ids[0]
    body = post(qwen3_server, "/score", {"text_1": query, "text_2": long_doc, "truncate_prompt_tokens": 50,
                                         "use_activation": False}).json()
    assert body["usage"]["prompt_tokens"] == 50
    assert body["data"][0]["score"] == as_floats(qwen3_model.forward_ids([ids[:50]]))[0]
    # max_tokens_per_doc cuts the document text before the template
    tok = qwen3_model.tokenizer
    cut = long_doc[:tok.encode(long_doc, add_special_tokens=False).offsets[9][1]]
    body = post(qwen3_server, "/rerank", {"query": query, "documents": [long_doc], "max_tokens_per_doc": 10}).json()
    assert body["results"][0]["relevance_score"] == as_floats(qwen3_model.score(query, [cut]))[0]


def test_models_health_and_metrics(qwen3_server):
    body = requests.get(qwen3_server.url + "/v1/models", timeout=10).json()
    assert body["object"] == "list" and body["data"][0]["id"] == QWEN3_NAME
    assert body["data"][0]["max_model_len"] == 8192
    assert post(qwen3_server, "/score", {"text_1": "q", "text_2": ["a", "b"]}).status_code == 200
    resp = requests.get(qwen3_server.url + "/metrics", timeout=10)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    sample = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [0-9.e+-]+$|^[a-z_]+\{.*\} \+Inf$')
    for line in text.splitlines():
        assert line.startswith("# ") or sample.match(line), line
    # label order is the exposition library's (Prometheus gives it no meaning)
    assert re.search(r'crossrank_requests_total\{(?=[^}]*model="[^"]+")(?=[^}]*endpoint="/score")(?=[^}]*status="200")'
                     r'[^}]*\} [1-9]', text)
    assert re.search(r"crossrank_pairs_total\{[^}]*\} [1-9]", text)
    assert re.search(r"crossrank_prompt_tokens_total\{[^}]*\} [1-9]", text)
    assert re.search(r'crossrank_request_duration_seconds_bucket\{(?=[^}]*model="Qwen/Qwen3-Reranker-0.6B")'
                     r'(?=[^}]*endpoint="/score")(?=[^}]*le="\+Inf")[^}]*\}', text)
    assert "crossrank_batch_pairs_count" in text


# -- concurrency -------------------------------------------------------------------------------


def test_200_concurrent_requests_from_32_clients_are_batched_and_exact(qwen3_server, qwen3_model):
    rng = np.random.default_rng(0)
    words = ("Beijing capital China river mountain gravity planet orbit city population history wall "
             "emperor dynasty trade silk road ocean tide moon").split()
    cases = []
    for k in range(200):
        query = f"question {k}: " + " ".join(rng.choice(words, 5))
        docs = [" ".join(rng.choice(words, int(rng.integers(5, 40)))) for _ in range(int(rng.integers(1, 9)))]
        if k % 2:
            cases.append(("/rerank", {"query": query, "documents": docs, "return_documents": False},
                          as_floats(qwen3_model.score(query, docs))))
        else:
            pairs = [(query, d) for d in docs]
            cases.append(("/score", {"text_1": query, "text_2": docs}, as_floats(qwen3_model.predict(pairs))))
    log_start = len(qwen3_server.log())

    async def run():
        results = [None] * len(cases)
        next_case = iter(range(len(cases)))
        async with httpx.AsyncClient(base_url=qwen3_server.url, timeout=120) as client:
            async def client_loop():
                for k in next_case:
                    path, body, _ = cases[k]
                    results[k] = await client.post(path, json=body)
            await asyncio.gather(*(client_loop() for _ in range(32)))
        return results

    results = asyncio.run(run())
    for (path, _, expected), resp in zip(cases, results):
        assert resp.status_code == 200, resp.text
        body = resp.json()
        if path == "/score":
            assert [d["score"] for d in body["data"]] == expected
        else:
            assert {r["index"]: r["relevance_score"] for r in body["results"]} == dict(enumerate(expected))
    passes = [(int(p), int(r)) for p, r in re.findall(r"forward pass: (\d+) pairs from (\d+) requests",
                                                      qwen3_server.log()[log_start:])]
    assert sum(p for p, _ in passes) == sum(len(c[1].get("documents", c[1].get("text_2"))) for c in cases)
    assert max(r for _, r in passes) > 1, "no forward pass packed more than one request"
    assert len(passes) < len(cases)


# -- bad input ---------------------------------------------------------------------------------

LONG_TEXT = "word " * 9000  # more tokens than the model's 8192


@pytest.mark.parametrize("path, body, status, param", [
    ("/score", "{not json", 400, None),
    ("/score", "[1, 2]", 400, None),
    ("/score", "", 400, None),
    ("/score", "[" * 50000 + "]" * 50000, 400, None),
    ("/rerank", '{"query": "q", "documents": ["\\ud800 lone surrogate"]}', 400, None),
    ("/score", {}, 400, None),
    ("/score", {"text_1": "a"}, 400, None),
    ("/score", {"text_1": 5, "text_2": ["a"]}, 400, "text_1"),
    ("/score", {"text_1": "a", "text_2": [1, 2]}, 400, None),
    ("/score", {"text_1": "a", "text_2": []}, 400, "text_2"),
    ("/score", {"text_1": [], "text_2": ["a"]}, 400, "text_1"),
    ("/score", {"text_1": ["a", "b"], "text_2": ["a", "b", "c"]}, 400, "text_2"),
    ("/score", {"text_1": "a", "text_2": ["b"], "model": "someone/else"}, 404, "model"),
    ("/score", {"text_1": "a", "text_2": ["b"], "use_activation": [1]}, 400, "use_activation"),
    ("/score", {"text_1": "a", "text_2": ["b"], "truncate_prompt_tokens": -5}, 400, "truncate_prompt_tokens"),
    ("/score", {"text_1": "a", "text_2": ["b"], "truncate_prompt_tokens": 10 ** 6}, 400, "truncate_prompt_tokens"),
    ("/score", {"text_1": "a", "text_2": ["b"], "max_tokens_per_doc": -1}, 400, "max_tokens_per_doc"),
    ("/score", {"text_1": "a", "text_2": ["b"], "instruction": "use the template"}, 400, "instruction"),
    ("/score", {"text_1": "a", "text_2": [LONG_TEXT]}, 400, "truncate_prompt_tokens"),
    ("/score", {"text_1": "", "text_2": [""]}, 400, None),
    ("/score", {"text_1": "a", "text_2": [{"content": [{"type": "image_url"}]}]}, 400, None),
    ("/rerank", {"query": "q"}, 400, "documents"),
    ("/rerank", {"documents": ["d"]}, 400, "query"),
    ("/rerank", {"query": "q", "documents": []}, 400, "documents"),
    ("/rerank", {"query": "q", "documents": ["d"], "top_n": "many"}, 400, "top_n"),
    ("/rerank", {"query": ["q"], "documents": ["d"]}, 400, "query"),
    ("/rerank", {"query": "q", "documents": ["d"], "model": "x"}, 404, "model"),
])
def test_bad_input_gets_a_4xx_in_vllm_shape_and_the_server_keeps_answering(qwen3_server, path, body, status, param):
    data = body if isinstance(body, str) else json.dumps(body)
    resp = requests.post(qwen3_server.url + path, data=data.encode(), timeout=60,
                         headers={"content-type": "application/json"})
    assert_error(resp, status, param)
    assert_alive(qwen3_server)


def test_body_over_the_limit_gets_413_declared_or_chunked(qwen3_server):
    big = json.dumps({"text_1": "a", "text_2": ["x" * (BODY_LIMIT + 10)]}).encode()
    assert_error(requests.post(qwen3_server.url + "/score", data=big, timeout=60,
                               headers={"content-type": "application/json"}), 413)

    def chunks():
        for k in range(0, len(big), 16384):
            yield big[k:k + 16384]

    assert_error(requests.post(qwen3_server.url + "/score", data=chunks(), timeout=60,
                               headers={"content-type": "application/json"}), 413)
    assert_alive(qwen3_server)


def test_unknown_route_and_method_get_vllm_shaped_errors(qwen3_server):
    assert_error(requests.get(qwen3_server.url + "/nope", timeout=10), 404)
    assert_error(requests.get(qwen3_server.url + "/score", timeout=10), 405)
    assert_alive(qwen3_server)


# -- API key, --no-template, several workers ---------------------------------------------------


@pytest.fixture(scope="module")
def secure_server(start_server, qwen3_path):
    return start_server(qwen3_path, "--hf_overrides", json.dumps(QWEN3_OVERRIDES), "--api-key", API_KEY,
                        "--no-template", "--workers", "2", "--threads", "1")


AUTH = {"Authorization": f"Bearer {API_KEY}"}


def test_api_key_is_required_except_for_health(secure_server):
    body = {"text_1": "q", "text_2": ["d"]}
    assert_error(post(secure_server, "/score", body), 401)
    assert_error(post(secure_server, "/score", body, headers={"Authorization": "Bearer wrong"}), 401)
    assert_error(post(secure_server, "/rerank", {"query": "q", "documents": ["d"]},
                      headers={"Authorization": API_KEY}), 401)
    assert_error(requests.get(secure_server.url + "/metrics", timeout=10), 401)
    assert_error(requests.get(secure_server.url + "/v1/models", timeout=10), 401)
    assert requests.get(secure_server.url + "/health", timeout=10).status_code == 200
    assert post(secure_server, "/score", body, headers=AUTH).status_code == 200
    assert post(secure_server, "/score", body, headers={"Authorization": f"bearer {API_KEY}"}).status_code == 200


def test_no_template_takes_queries_and_documents_as_given(secure_server, qwen3_model):
    query = "capital of China"
    body = post(secure_server, "/rerank", {"query": query, "documents": RERANK_DOCS}, headers=AUTH).json()
    expected = as_floats(qwen3_model.predict([(query, d) for d in RERANK_DOCS]))
    assert {r["index"]: r["relevance_score"] for r in body["results"]} == dict(enumerate(expected))
    assert_error(post(secure_server, "/rerank", {"query": query, "documents": ["d"], "instruction": "x"},
                      headers=AUTH), 400, "instruction")


def test_each_worker_loads_the_model_and_serves(secure_server):
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while len(set(re.findall(r"\[pid (\d+)\] ready:", secure_server.log()))) < 2:
        assert time.monotonic() < deadline, secure_server.log()
        time.sleep(0.2)
    ready = set(re.findall(r"\[pid (\d+)\] ready:", secure_server.log()))
    body = {"text_1": "q", "text_2": ["d1", "d2"]}
    serving = set()
    deadline = time.monotonic() + 60
    while serving != ready and time.monotonic() < deadline:
        threads = [threading.Thread(target=post, args=(secure_server, "/score", body), kwargs={"headers": AUTH})
                   for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        serving = set(re.findall(r"\[pid (\d+)\] forward pass", secure_server.log()))
    assert serving == ready and len(ready) == 2


# -- timeouts and the queue limit --------------------------------------------------------------

TIMEOUT = 2.0
# 48 distinct documents of ~7000 tokens: a few per pass, many passes, so the request takes the tiny
# model far longer than TIMEOUT however fast the engine gets (each pass stays short, so a
# cancellation is seen quickly).
SLOW_DOCS = [f"{i} " + "word " * 7000 for i in range(48)]


@pytest.fixture(scope="module")
def slow_server(start_server, qwen3_path):
    return start_server(qwen3_path, "--hf_overrides", json.dumps(QWEN3_OVERRIDES), "--threads", "2",
                        "--request-timeout", str(TIMEOUT), "--max-queue", "1", "--max-batch-tokens", "32768")


def test_timeout_gets_504_and_cancels_the_engine_work(slow_server):
    start = time.monotonic()
    resp = post(slow_server, "/rerank", {"query": "q", "documents": SLOW_DOCS})
    took = time.monotonic() - start
    err = assert_error(resp, 504)
    assert err["type"] == "TimeoutError" and TIMEOUT <= took < TIMEOUT + 5
    # The cancelled pass would otherwise hold the engine for seconds more.
    start = time.monotonic()
    assert post(slow_server, "/score", {"text_1": "q", "text_2": ["d"]}).status_code == 200
    assert time.monotonic() - start < 4.0
    assert "forward pass cancelled" in slow_server.log()
    metrics = requests.get(slow_server.url + "/metrics", timeout=10).text
    assert re.search(r"crossrank_timeouts_total\{[^}]*\} [1-9]", metrics)


def test_a_client_that_goes_away_has_its_engine_work_cancelled(slow_server):
    log_start = len(slow_server.log())
    with pytest.raises(requests.exceptions.Timeout):
        post(slow_server, "/rerank", {"query": "q", "documents": SLOW_DOCS}, timeout=TIMEOUT / 3)
    deadline = time.monotonic() + TIMEOUT / 2  # before the server's own timeout would cancel it
    # The work is dropped wherever it is: between tokenization slices (no pass starts) or in the
    # engine (its pass is cancelled); either way the engine is idle again long before it would be.
    while "client went away" not in slow_server.log()[log_start:]:
        assert time.monotonic() < deadline, slow_server.log()[log_start:]
        time.sleep(0.05)
    while True:
        text = requests.get(slow_server.url + "/metrics", timeout=10).text
        if re.search(r"^crossrank_engine_busy(?:\{[^}]*\})? 0(\.0)?$", text, re.M):
            break
        assert time.monotonic() < deadline, slow_server.log()[log_start:]
        time.sleep(0.05)
    assert_alive(slow_server)


def test_full_queue_gets_503_and_the_server_recovers(slow_server):
    results = {}

    def send(name, body):
        results[name] = post(slow_server, "/rerank", body)

    def gauges():
        text = requests.get(slow_server.url + "/metrics", timeout=10).text
        value = lambda name: float(re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M).group(1))  # noqa: E731
        return value("crossrank_engine_busy"), value("crossrank_queue_depth")

    def wait_for(condition, what):
        # polled, not slept: on a loaded machine the steps take longer than any fixed pause
        deadline = time.monotonic() + TIMEOUT
        while not condition(*gauges()):
            assert time.monotonic() < deadline, f"timed out waiting until {what}"
            time.sleep(0.01)

    running = threading.Thread(target=send, args=("running", {"query": "q", "documents": SLOW_DOCS}))
    running.start()
    wait_for(lambda busy, queued: busy == 1 and queued == 0, "the first request's pass runs")
    waiting = threading.Thread(target=send, args=("waiting", {"query": "q", "documents": ["short"]}))
    waiting.start()
    wait_for(lambda busy, queued: queued == 1, "the second request waits in the queue")
    err = assert_error(post(slow_server, "/rerank", {"query": "q", "documents": ["d"]}), 503)
    assert err["type"] == "ServiceUnavailableError"
    # TEI's shape of the same request: TEI's 429 "Overloaded"
    tei = post(slow_server, "/rerank", {"query": "q", "texts": ["d"]})
    assert tei.status_code == 429 and tei.json()["error_type"] == "Overloaded" and tei.json()["detail"]
    running.join()
    waiting.join()
    assert results["running"].status_code == 504
    assert results["waiting"].status_code in (200, 504)
    assert_alive(slow_server)
