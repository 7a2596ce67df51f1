#!/usr/bin/env python
"""Soak of ``crossrank serve``: mixed good, bad, heavy, slow, vanishing and silent clients on
loopback for a bounded time, every 200 compared with a sequential run of the same request.

    python benchmarks/soak_server.py                           # tiny fixture checkpoint, 150 s
    python benchmarks/soak_server.py --duration 60 --workers 2
    python benchmarks/soak_server.py --model DIR --hf-overrides JSON --server-arg=--max-queue=64

The server runs in a subprocess (``python -m crossrank.cli serve``, access log off) on 127.0.0.1.
Before the load, each request of a fixed pool of good requests (``/rerank``, ``/score`` and TEI's
``/rerank`` shapes) is sent once, alone: those answers are the reference. Then, for ``--duration``
seconds (and at most ``--max-requests`` requests), these clients run together:

* ``good`` (``--good`` clients): a request from the pool; a 200 must equal its reference exactly;
* ``bad``: malformed JSON, wrong types, a 5,000-digit integer, lone surrogates in echoed fields,
  100,000- and 200,000-item lists, an over-long document with TEI's ``truncate: false``; each must be a 4xx;
* ``heavy``: one legal request of ``--heavy-docs`` documents at a time;
* ``slow``: headers (or a body) sent a few bytes a second; ``vanish``: a request sent and the
  socket closed before the answer; ``silent``: ``--silent`` connections opened and held idle;
* ``health``: ``GET /health`` every 0.25 s (its latency is reported apart);
* a sampler: resident memory (the server's processes, summed) and open file descriptors.

Output: requests by client kind and status, wrong results, latency percentiles per kind,
``/health`` latency, RSS and file descriptors over time; ``--json PATH`` writes the same figures.
Exit code 0 when no 200 was wrong and the server answered ``/health`` at the end, else 1.
Checkpoints have random weights: the scores mean nothing, only their equality does.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Dict, List, Tuple

import httpx

REPO = Path(__file__).resolve().parent.parent
QWEN3_OVERRIDES = {"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["no", "yes"],
                   "is_original_qwen3_reranker": True}
WORDS = ("the river city light north stone market winter paper garden signal harbor engine forest "
         "question answer capital gravity planet ocean machine history science music").split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def good_pool(seed: int = 0, size: int = 24) -> List[Tuple[str, Dict[str, Any]]]:
    """Fixed good requests: (path, body)."""
    rng = random.Random(seed)
    pool = []
    for i in range(size):
        q = _text(rng, rng.randint(3, 12))
        docs = [_text(rng, rng.randint(5, 120)) for _ in range(rng.randint(1, 12))]
        form = i % 3
        if form == 0:
            pool.append(("/rerank", {"query": q, "documents": docs, "request_id": f"r{i}"}))
        elif form == 1:
            pool.append(("/score", {"queries": q, "documents": docs}))
        else:
            pool.append(("/rerank", {"query": q, "texts": docs, "raw_scores": bool(i % 2)}))
    return pool


def scores_of(body: Any) -> List[Tuple[int, float]]:
    """(index, score) pairs of any of the three answer shapes, comparable across runs."""
    if isinstance(body, list):  # TEI
        return sorted((r["index"], r["score"]) for r in body)
    if "results" in body:
        return sorted((r["index"], r["relevance_score"]) for r in body["results"])
    return sorted((r["index"], r["score"]) for r in body["data"])


def bad_bodies(rng: random.Random) -> List[Tuple[str, bytes]]:
    """Malformed or hostile requests; each deserves a 4xx."""
    big_int = "9" * 5000
    return [
        ("/rerank", b"{not json"),
        ("/rerank", b'{"query": 1, "documents": "x"}'),
        ("/score", b'{"queries": ["a", "b"], "documents": ["x", "y", "z"]}'),
        ("/rerank", ('{"query": "q", "documents": ["d"], "top_n": ' + big_int + "}").encode()),
        ("/score", ('{"queries": "q", "documents": ["d"], "x": [' + big_int + "]}").encode()),
        ("/rerank", b'{"query": "q", "documents": ["d"], "model": "\\ud800"}'),
        ("/rerank", b'{"query": "q", "documents": ["d"], "request_id": "\\udfff"}'),
        ("/rerank", b'{"query": "q", "texts": ["d\\ud800"]}'),
        ("/rerank", b'{"query": "q", "documents": [' + b",".join([b"0"] * 100_000) + b"]}"),
        ("/score", b'{"queries": "q", "documents": [' + b",".join([b'"d"'] * 200_000) + b"]}"),
        ("/rerank", json.dumps({"query": "q", "texts": [_text(rng, 40_000)], "truncate": False}).encode()),
        ("/tokenize", b'{"prompt": "\\ud800"}'),
        ("/detokenize", b'{"tokens": [' + big_int.encode() + b"]}"),
    ]


class Stats:
    def __init__(self) -> None:
        self.status: Dict[str, Counter] = defaultdict(Counter)
        self.latency: Dict[str, List[float]] = defaultdict(list)
        self.wrong: List[str] = []
        self.requests = 0

    def record(self, kind: str, status: Any, seconds: float) -> None:
        self.requests += 1
        self.status[kind][str(status)] += 1
        self.latency[kind].append(seconds)


def pct(values: List[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(pid: int) -> List[int]:
    """``pid`` and its descendants (the uvicorn supervisor and its workers)."""
    children: Dict[int, List[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children[ppid].append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_and_fds(pid: int) -> Tuple[float, int]:
    rss, fds = 0.0, 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) / 1024
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            pass
    return rss, fds


async def raw_request(port: int, data: bytes, *, head: bytes = b"", delay: float = 0.0, chunk: int = 0,
                      read: bool = True, timeout: float = 20.0, hold: float = 20.0) -> Any:
    """Sends ``head`` then ``data`` on a fresh connection (``data`` in ``chunk``-byte pieces ``delay``
    s apart when given, for at most ``hold`` s); returns the status read back, ``"closed"`` when the
    server closed the connection first, ``"held"`` when it still held it after ``hold`` s, or
    ``"no answer"``."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return "connect failed"
    try:
        if head:
            writer.write(head)
        if chunk:
            stop = time.monotonic() + hold
            for i in range(0, len(data), chunk):
                if time.monotonic() > stop:
                    return "held"
                writer.write(data[i:i + chunk])
                await writer.drain()
                try:  # the server may answer (408) or close while we dawdle
                    line = await asyncio.wait_for(reader.readline(), delay)
                    if not line:
                        return "closed"
                    parts = line.split()
                    return int(parts[1]) if len(parts) > 1 else "closed"
                except asyncio.TimeoutError:
                    pass
        else:
            writer.write(data)
            await writer.drain()
        if not read:
            return None
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts = line.split()
        return int(parts[1]) if len(parts) > 1 else "closed"
    except (OSError, ValueError):
        return "closed"
    except asyncio.TimeoutError:
        return "no answer"
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


def http_bytes(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def soak(args: argparse.Namespace, port: int, server: subprocess.Popen) -> Dict[str, Any]:
    url = f"http://127.0.0.1:{port}"
    pool = good_pool()
    rng = random.Random(1)
    stats = Stats()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(base_url=url, timeout=args.client_timeout, limits=limits) as client:
        reference = []
        for path, body in pool:  # the sequential run
            resp = await client.post(path, json=body)
            resp.raise_for_status()
            reference.append(scores_of(resp.json()))
        t0 = time.monotonic()
        end = t0 + args.duration
        health: List[Tuple[float, Any]] = []
        samples: List[Tuple[float, float, int]] = []

        def running() -> bool:
            return time.monotonic() < end and stats.requests < args.max_requests

        async def good(i: int) -> None:
            r = random.Random(100 + i)
            while running():
                k = r.randrange(len(pool))
                path, body = pool[k]
                s = time.monotonic()
                try:
                    resp = await client.post(path, json=body)
                    status = resp.status_code
                    if status == 200 and scores_of(resp.json()) != reference[k]:
                        stats.wrong.append(f"{path} #{k}")
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                stats.record("good", status, time.monotonic() - s)

        async def bad() -> None:
            bodies = bad_bodies(rng)
            k = 0
            while running():
                path, data = bodies[k % len(bodies)]
                k += 1
                s = time.monotonic()
                try:
                    resp = await client.post(path, content=data, headers={"content-type": "application/json"})
                    status = resp.status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                stats.record("bad", status, time.monotonic() - s)
                await asyncio.sleep(0.05)

        async def heavy() -> None:
            docs = [_text(rng, 60) for _ in range(args.heavy_docs)]
            while running():
                s = time.monotonic()
                try:
                    resp = await client.post("/rerank", json={"query": "heavy", "documents": docs})
                    status = resp.status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                stats.record("heavy", status, time.monotonic() - s)
                await asyncio.sleep(1.0)

        async def slow() -> None:
            body = json.dumps(pool[0][1]).encode()
            k = 0
            while running():
                s = time.monotonic()
                data = http_bytes("/rerank", body)
                if k % 2 == 0:  # slow headers: 4 bytes every 0.5 s, given up after 45 s
                    status = await raw_request(port, data, delay=0.5, chunk=4, timeout=args.client_timeout,
                                               hold=45)
                else:  # headers at once, then the body in 60 slices a second apart, given up after 45 s
                    head, rest = data.split(b"\r\n\r\n", 1)
                    status = await raw_request(port, rest, head=head + b"\r\n\r\n", delay=1.0,
                                               chunk=max(1, len(rest) // 60), timeout=args.client_timeout, hold=45)
                k += 1
                stats.record("slow", status, time.monotonic() - s)

        async def vanish() -> None:
            body = json.dumps(pool[1][1]).encode()
            while running():
                s = time.monotonic()
                await raw_request(port, http_bytes(pool[1][0], body), read=False)
                stats.record("vanish", "sent", time.monotonic() - s)
                await asyncio.sleep(0.1)

        async def silent() -> None:
            socks = []
            try:
                for _ in range(args.silent):
                    try:
                        socks.append(await asyncio.open_connection("127.0.0.1", port))
                    except OSError:
                        break
                stats.record("silent", f"opened {len(socks)}", 0.0)
                while running():
                    await asyncio.sleep(0.5)
                closed = 0
                for reader, _ in socks:
                    if reader.at_eof():
                        closed += 1
                stats.record("silent", f"closed by server {closed}", 0.0)
            finally:
                for _, w in socks:
                    w.close()

        async def prober() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=10) as c:
                while running():
                    s = time.monotonic()
                    try:
                        status: Any = (await c.get("/health")).status_code
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    health.append((time.monotonic() - s, status))
                    await asyncio.sleep(0.25)

        async def sampler() -> None:
            while running():
                rss, fds = rss_and_fds(server.pid)
                samples.append((time.monotonic() - t0, rss, fds))
                await asyncio.sleep(2.0)

        tasks = [good(i) for i in range(args.good)] + [bad(), heavy(), slow(), vanish(), silent(), prober(),
                                                       sampler()]
        running_tasks = [asyncio.ensure_future(t) for t in tasks]
        _, pending = await asyncio.wait(running_tasks, timeout=args.duration + args.client_timeout + 30)
        for t in pending:  # a client stuck past every bound: stopped, and counted
            t.cancel()
            stats.record("stuck", "cancelled", 0.0)
        elapsed = time.monotonic() - t0
        try:
            final_health = (await client.get("/health", timeout=10)).status_code
        except httpx.HTTPError as exc:
            final_health = type(exc).__name__
        rss, fds = rss_and_fds(server.pid)
        samples.append((time.monotonic() - t0, rss, fds))
    return {"elapsed_s": elapsed, "requests": stats.requests, "wrong": stats.wrong,
            "status": {k: dict(v) for k, v in stats.status.items()},
            "latency_s": {k: {"p50": pct(v, 50), "p90": pct(v, 90), "p99": pct(v, 99), "max": max(v)}
                          for k, v in stats.latency.items() if v},
            "health": {"n": len(health), "p50": pct([h for h, _ in health], 50),
                       "p99": pct([h for h, _ in health], 99), "max": max((h for h, _ in health), default=0),
                       "status": dict(Counter(str(s) for _, s in health)), "final": final_health},
            "samples": samples}


def report(result: Dict[str, Any]) -> None:
    print(f"\n{result['requests']} requests in {result['elapsed_s']:.0f} s; wrong results: {len(result['wrong'])}")
    print("\nrequests by client kind and status")
    for kind, counts in sorted(result["status"].items()):
        print(f"  {kind:7s} " + ", ".join(f"{s}: {n}" for s, n in sorted(counts.items())))
    print("\nlatency (s)       p50      p90      p99      max")
    for kind, lat in sorted(result["latency_s"].items()):
        if kind in ("silent",):
            continue
        print(f"  {kind:9s} {lat['p50']:8.3f} {lat['p90']:8.3f} {lat['p99']:8.3f} {lat['max']:8.3f}")
    h = result["health"]
    print(f"\n/health: {h['n']} probes, p50 {h['p50'] * 1e3:.1f} ms, p99 {h['p99'] * 1e3:.1f} ms, "
          f"max {h['max'] * 1e3:.1f} ms, statuses {h['status']}, at the end: {h['final']}")
    print("\n  t (s)   RSS (MiB)   fds")
    samples = result["samples"]
    step = max(1, len(samples) // 8)
    for t, rss, fds in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
        print(f"  {t:6.0f} {rss:10.0f} {fds:6d}")
    print(f"  max    {max(s[1] for s in samples):10.0f} {max(s[2] for s in samples):6d}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(Path(os.environ.get("CROSSRANK_FIXTURES", REPO / "tests" / ".fixtures")) / "qwen3-tiny"))
    p.add_argument("--hf-overrides", default=json.dumps(QWEN3_OVERRIDES))
    p.add_argument("--duration", type=float, default=150.0, help="seconds of load (default 150)")
    p.add_argument("--max-requests", type=int, default=100_000)
    p.add_argument("--good", type=int, default=8, help="concurrent good clients")
    p.add_argument("--heavy-docs", type=int, default=3000)
    p.add_argument("--silent", type=int, default=200, help="idle connections held open")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--client-timeout", type=float, default=30.0)
    p.add_argument("--server-arg", action="append", default=[], help="extra `crossrank serve` argument")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args()

    port = free_port()
    log = tempfile.NamedTemporaryFile("w+", prefix="soak-server-", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "crossrank.cli", "serve", args.model, "--hf_overrides", args.hf_overrides,
           "--port", str(port), "--workers", str(args.workers), "--disable-access-log", *args.server_arg]
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                print(open(log.name).read()[-3000:], file=sys.stderr)
                return 1
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        result = asyncio.run(soak(args, port, server))
    finally:
        server.terminate()
        try:
            code = server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            code = server.wait()
    log.flush()
    size = os.path.getsize(log.name)
    result["server_exit_code"] = code
    result["server_log_bytes"] = size
    report(result)
    print(f"\nserver exit code after SIGTERM: {code}; server log: {size} bytes ({log.name})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0 if not result["wrong"] and result["health"]["final"] == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
