"""``crossrank serve`` under connection faults and stops: header, body and keep-alive timeouts, the
connection cap below the file limit, repeated log lines, the drain on SIGTERM, and several
workers (connections spread over them, one set of metrics).

Every server is a subprocess on 127.0.0.1 with the tiny random Qwen3 fixture; time limits are
generous (the machine is shared).
"""
import json
import logging
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

requests = pytest.importorskip("requests")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from _fixtures import fixture_path  # noqa: E402
from crossrank.server.serving import RepeatFilter  # noqa: E402
from test_server import (QWEN3_OVERRIDES, STARTUP_TIMEOUT, Server, assert_error, free_port, post,  # noqa: E402
                         start_server)  # noqa: F401,F811 (a fixture)

SLOW_DOCS = [f"{i} " + "word " * 7000 for i in range(48)]


@pytest.fixture(scope="module")
def qwen3_path():
    return fixture_path("qwen3-tiny")


def base_args():
    return ["--hf_overrides", json.dumps(QWEN3_OVERRIDES), "--threads", "1"]


@pytest.fixture(scope="module")
def server(start_server, qwen3_path):
    return start_server(qwen3_path, *base_args(), "--header-timeout", "1", "--body-timeout", "2",
                        "--timeout-keep-alive", "1", "--max-connections", "40")


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` (or answers and closes) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except socket.timeout:
        return False
    except OSError:
        return True


# -- item 5: connections and files -----------------------------------------------------------------


def test_silent_and_slow_header_connections_are_closed(server):
    silent = socket.create_connection(("127.0.0.1", server.port))
    partial = socket.create_connection(("127.0.0.1", server.port))
    partial.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\n")
    t0 = time.monotonic()
    assert closed_within(silent, 15) and closed_within(partial, 15)
    assert time.monotonic() - t0 < 15
    silent.close()
    partial.close()


def test_slow_body_gets_408(server):
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        s.settimeout(20)
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 408"), head


def test_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(server):
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(10)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        assert closed_within(s, 15)
        assert time.monotonic() - t0 < 10


def test_connections_over_the_cap_get_503_and_the_server_recovers(server):
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(40)]
    try:
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", server.port)) as extra:
            extra.settimeout(10)
            assert extra.recv(4096).startswith(b"HTTP/1.1 503")
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 20
    while True:
        try:
            if requests.get(server.url + "/health", timeout=5).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_a_low_file_limit_with_many_silent_sockets_neither_floods_the_log_nor_wedges(tmp_path, qwen3_path):
    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    port_server = Server.__new__(Server)  # Server, started under a low file limit
    port_server.port = free_port()
    port_server.url = f"http://127.0.0.1:{port_server.port}"
    port_server.log_path = tmp_path / "server.log"
    port_server._log = open(port_server.log_path, "w", encoding="utf-8")
    cmd = [sys.executable, "-m", "crossrank.cli", "serve", str(qwen3_path), "--port", str(port_server.port),
           *base_args(), "--header-timeout", "2"]
    port_server.proc = subprocess.Popen(cmd, stdout=port_server._log, stderr=subprocess.STDOUT, preexec_fn=low_limit,
                                        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        port_server.wait_ready()
        socks = []
        for _ in range(300):
            try:
                socks.append(socket.create_connection(("127.0.0.1", port_server.port), timeout=5))
            except OSError:
                break
        time.sleep(3)  # the header timeout closes them
        for s in socks:
            s.close()
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(port_server.url + "/health", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, port_server.log()[-2000:]
            time.sleep(0.2)
        assert post(port_server, "/score", {"text_1": "q", "text_2": ["d"]}).status_code == 200
        assert os.path.getsize(port_server.log_path) < 200_000
        assert port_server.log().count("Too many open files") < 20
    finally:
        port_server.stop()


def test_repeated_log_lines_are_capped():
    handler_records = []

    class Collect(logging.Handler):
        def emit(self, record):
            handler_records.append(record.getMessage())

    log = logging.getLogger("crossrank.test.repeat")
    log.propagate = False
    log.setLevel(logging.INFO)
    handler = Collect()
    handler.addFilter(RepeatFilter(burst=5, window=0.5))
    log.addHandler(handler)
    try:
        for _ in range(1000):
            log.error("socket.accept() out of system resource")
        log.info("an info line")
        log.info("an info line")
        time.sleep(0.6)
        log.error("socket.accept() out of system resource")
    finally:
        log.removeHandler(handler)
    errors = [m for m in handler_records if "socket.accept" in m]
    assert len(errors) == 6 and "995 more like this" in errors[-1]
    assert handler_records.count("an info line") == 2


# -- item 6: graceful stop --------------------------------------------------------------------------


def test_sigterm_finishes_or_503s_in_flight_work_and_exits_0(tmp_path, qwen3_path):
    srv = Server(qwen3_path, [*base_args(), "--shutdown-timeout", "3", "--max-batch-tokens", "32768"],
                 tmp_path / "server.log").wait_ready()
    try:
        results = {}

        def send(name, body):
            results[name] = post(srv, "/rerank", body, timeout=120)

        slow = threading.Thread(target=send, args=("slow", {"query": "q", "documents": SLOW_DOCS}))
        slow.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        slow.join(60)
        code = srv.proc.wait(60)
        took = time.monotonic() - t0
    finally:
        srv.stop()
    assert code == 0, srv.log()[-3000:]
    assert took < 30
    resp = results["slow"]
    assert resp.status_code in (200, 503), resp.text
    if resp.status_code == 503:
        err = assert_error(resp, 503)
        assert "shutting down" in err["message"]
    assert "Traceback" not in srv.log()


# -- items 6 and 7 with several workers -------------------------------------------------------------


def _children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return out


def _sockets(pid):
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


def test_two_workers_share_connections_and_report_one_set_of_metrics(tmp_path, qwen3_path):
    srv = Server(qwen3_path, [*base_args(), "--workers", "2"], tmp_path / "server.log").wait_ready(
        timeout=2 * STARTUP_TIMEOUT)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while len(re.findall(r"ready: ", srv.log())) < 2:  # both workers loaded
            assert time.monotonic() < deadline, srv.log()
            time.sleep(0.2)
        workers = [p for p in _children(srv.proc.pid) if _sockets(p) > 0]
        workers = [p for p in workers if any(f"[pid {p}] ready" in line for line in srv.log().splitlines())]
        assert len(workers) == 2, (workers, srv.log())
        before = {p: _sockets(p) for p in workers}
        sessions = []
        for _ in range(16):  # keep-alive connections, each held open
            s = requests.Session()
            assert s.get(srv.url + "/health", timeout=10).status_code == 200
            sessions.append(s)
        after = {p: _sockets(p) for p in workers}
        assert all(after[p] > before[p] for p in workers), (before, after)
        for s in sessions:
            s.close()
        for _ in range(6):
            assert post(srv, "/score", {"text_1": "q", "text_2": ["d"]}).status_code == 200
        counts = set()
        for _ in range(6):  # fresh connections: each scrape may reach either worker
            text = requests.get(srv.url + "/metrics", timeout=10, headers={"connection": "close"}).text
            found = re.search(r'^crossrank_requests_total\{(?=[^}]*endpoint="/score")(?=[^}]*status="200")[^}]*\} '
                              r'(\S+)$', text, re.M)
            counts.add(float(found.group(1)))
        assert counts == {6.0}, counts
        # a killed worker is replaced and the counts it had stay in the sum
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while len(re.findall(r"ready: ", srv.log())) < 3:
            assert time.monotonic() < deadline, srv.log()[-3000:]
            time.sleep(0.2)
        for _ in range(4):
            assert post(srv, "/score", {"text_1": "q", "text_2": ["d"]}).status_code == 200
        text = requests.get(srv.url + "/metrics", timeout=10).text
        found = re.search(r'^crossrank_requests_total\{(?=[^}]*endpoint="/score")(?=[^}]*status="200")[^}]*\} '
                          r'(\S+)$', text, re.M)
        assert float(found.group(1)) == 10.0, text
    finally:
        srv.stop()
