"""``crossrank serve`` as a drop-in for ``vllm serve`` at the HTTP and command-line level: CORS,
vLLM's common flags, HEAD and ``GET /``, and connections closed after a refusal whose body is
never read.

The server is a subprocess on 127.0.0.1 with the tiny random Qwen3 fixture.
"""
import json
import socket
import subprocess
import sys
import time

import pytest

requests = pytest.importorskip("requests")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from _fixtures import fixture_path  # noqa: E402
from test_server import QWEN3_OVERRIDES, post, start_server  # noqa: E402,F401 (a fixture)

VLLM_FLAGS = ["--task", "score", "--runner", "pooling", "--trust-remote-code", "--gpu-memory-utilization", "0.5",
              "--max-num-seqs", "8", "--tensor-parallel-size", "1", "--enable-request-id-headers",
              "--uvicorn-log-level", "info", "--root-path", "/x"]


@pytest.fixture(scope="module")
def qwen3_path():
    return fixture_path("qwen3-tiny")


@pytest.fixture(scope="module")
def server(start_server, qwen3_path):
    return start_server(qwen3_path, "--hf_overrides", json.dumps(QWEN3_OVERRIDES), "--threads", "1",
                        "--max-body-bytes", "100000", "--max-concurrent-requests", "1", *VLLM_FLAGS)


def test_vllm_flags_are_accepted_and_the_meaningless_ones_logged(server):
    log = server.log()
    for flag in ("--trust-remote-code", "--gpu-memory-utilization", "--max-num-seqs", "--tensor-parallel-size"):
        assert f"{flag} means nothing on a CPU reranker; ignored" in log, log
    resp = post(server, "/rerank", {"query": "q", "documents": ["a"]}, headers={"X-Request-Id": "abc-1"})
    assert resp.status_code == 200 and resp.headers["x-request-id"] == "abc-1"
    assert requests.get(server.url + "/health", timeout=10).headers["x-request-id"]


@pytest.mark.parametrize("flag, value", [("--task", "generate"), ("--runner", "generate"), ("--convert", "embed")])
def test_generation_tasks_are_refused_with_a_clear_error(qwen3_path, flag, value):
    out = subprocess.run([sys.executable, "-m", "crossrank.cli", "serve", str(qwen3_path), flag, value],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "crossrank serves rerankers" in out.stderr, out.stderr


def test_root_path_is_the_asgi_root_path(server):
    # behind a proxy that keeps the prefix, the prefixed path reaches the same route
    assert post(server, "/x/rerank", {"query": "q", "documents": ["a"]}).status_code == 200


def test_cors_preflight_and_simple_request(server):
    pre = requests.options(server.url + "/rerank", timeout=10, headers={
        "Origin": "http://example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,authorization"})
    assert pre.status_code == 200, pre.text
    assert pre.headers["access-control-allow-origin"] == "*"
    assert "POST" in pre.headers["access-control-allow-methods"]
    resp = post(server, "/rerank", {"query": "q", "documents": ["a"]}, headers={"Origin": "http://example.com"})
    assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == "*"


def test_head_and_get_root_answer_as_health(server):
    for path in ("/health", "/ping", "/"):
        assert requests.head(server.url + path, timeout=10).status_code == 200, path
    assert requests.get(server.url + "/", timeout=10).status_code == 200


def _closed_after_answer(port: int, head: bytes) -> bytes:
    """Sends ``head`` and trickles body bytes; returns the answer once the server closes (a
    connection still open after 15 s fails)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head)
        s.settimeout(15)
        answer = s.recv(4096)
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < 15:
                s.sendall(b"x" * 1024)
                time.sleep(0.1)
        except OSError:
            return answer
        pytest.fail(f"the connection stayed open after {answer[:40]!r}")


def test_413_closes_the_connection(server):
    answer = _closed_after_answer(server.port, b"POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413") and b"connection: close" in answer.lower()


def test_overload_refusal_closes_the_connection(server):
    # the one admission permit is held by a request whose body never ends
    with socket.create_connection(("127.0.0.1", server.port)) as held:
        held.sendall(b"POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n{")
        time.sleep(0.5)
        answer = _closed_after_answer(server.port, b"POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n{")
    assert answer.startswith(b"HTTP/1.1 503") and b"connection: close" in answer.lower()
