#!/usr/bin/env python
"""Load benchmark of ``crossrank serve``: requests/s and latency at 1, 8 and 32 concurrent clients,
and the server's throughput against the in-process ``CrossEncoder`` on the same pairs.

    python benchmarks/bench_server.py                      # tiny random checkpoint: a quick run
    python benchmarks/bench_server.py --size medium        # a bigger random checkpoint (~1 minute)
    python benchmarks/bench_server.py --size 0.6b --requests 4 --docs 2 --concurrency 1,4
    python benchmarks/bench_server.py --model DIR [--hf-overrides JSON]

Workload: ``--requests`` rerank requests, each one query (eight questions in turn) and ``--docs``
documents of 150-400 tokens of English text from rerank_workload.py's sentence bank, deterministic.
The same requests run at every concurrency level (each level warms up first) and, afterwards,
in-process with the server stopped:

* ``in-process, per request``: ``model.score(query, docs)`` once per request, one after another,
  what a single-threaded service calling the library would do;
* ``in-process, one call``: ``model.score(queries, docs)`` over every pair at once, the library's
  best case.

The server runs in a subprocess with ``--threads`` compute threads (default: every CPU), access
log off; the HTTP clients (httpx, asyncio) run in this process, on the same machine, so their CPU
time counts against the server. Every server score is checked against the in-process one
(exact equality). Checkpoints have RANDOM weights: timings are real, scores mean nothing.

CPU time is recorded for every timed span: the server process's, this process's (the clients, or
the in-process model), and the CPUs other processes kept busy meanwhile ("others"; from
/proc/stat). Above ~0.2 the machine was shared and wall-clock figures are pessimistic; the ratio
of pairs per CPU-second of the server to pairs per CPU-second in-process does not depend on it.

Results: a table on stdout and JSON in benchmarks/results/bench_server-<timestamp>.json (machine
description, workload, per level: requests/s, pairs/s, p50/p90/p99/mean/max latency, mean pairs
per forward pass and prefix tokens reused from /metrics, CPU times; in-process throughput and
CPU; ratios by wall clock and by CPU-second).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import rerank_engines  # noqa: E402  (CPU time helpers)
import rerank_report  # noqa: E402  (machine description)
import rerank_workload  # noqa: E402  (workload, checkpoint)

REPO = HERE.parent
RESULTS_DIR = HERE / "results"

QUERIES = [
    "Why do we have seasons, and why is it summer in Australia when it is winter in Europe?",
    "How do I keep a sourdough starter healthy?",
    "What was the Hanseatic League?",
    "How can I find a memory leak in a long-running program?",
    "Why do corals bleach?",
    "Why do central banks raise interest rates?",
    "What is the offside rule in football?",
    "Do antibiotics help against viruses?",
]

# Random-weight Qwen3-Reranker shapes (the real vocabulary, so the real tokenizer works).
_BASE = json.loads((rerank_workload.CONFIG_FILE).read_text(encoding="utf-8")) if rerank_workload.CONFIG_FILE.is_file() else {}
SIZES: Dict[str, Dict[str, Any]] = {
    "tiny": {"hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 3, "num_attention_heads": 4,
             "num_key_value_heads": 2, "head_dim": 32},
    "medium": {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8, "num_attention_heads": 8,
               "num_key_value_heads": 4, "head_dim": 64},
}
DEFAULTS = {"tiny": (64, 8), "medium": (16, 4), "0.6b": (4, 2)}  # (requests, docs per request)


def ensure_checkpoint(size: str) -> Path:
    """The random-weight checkpoint of ``size``, built once in the benchmarks' cache directory."""
    if size == "0.6b":
        return rerank_workload.ensure_checkpoint("0.6B")
    from crossrank.random_checkpoint import write_random_checkpoint

    if not _BASE:
        sys.exit(f"missing {rerank_workload.CONFIG_FILE}: the benchmark needs the model config in assets/model-configs")
    config = dict(_BASE, **SIZES[size])
    out = rerank_workload.cache_dir() / f"qwen3-reranker-{size}-random-bf16"
    stamp = {"config": config, "seed": 0, "dtype": "bfloat16"}
    stamp_file = out / "bench-stamp.json"
    if (out / "model.safetensors").is_file() and stamp_file.is_file() and \
            json.loads(stamp_file.read_text(encoding="utf-8")) == stamp:
        return out
    print(f"building a {size} random-weight Qwen3-Reranker checkpoint in {out} ...", flush=True)
    stamp_file.unlink(missing_ok=True)
    write_random_checkpoint(out, config, rerank_workload.TOKENIZER_DIR, seed=0, dtype="bfloat16")
    stamp_file.write_text(json.dumps(stamp, indent=2), encoding="utf-8")
    return out


def make_requests(n_requests: int, n_docs: int) -> List[Tuple[str, List[str]]]:
    _, docs, _ = rerank_workload.make_workload(n_requests * n_docs)
    return [(QUERIES[r % len(QUERIES)], docs[r * n_docs:(r + 1) * n_docs]) for r in range(n_requests)]


# -- the server --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``crossrank serve`` in a subprocess."""

    def __init__(self, model: Path, args: Sequence[str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "w", encoding="utf-8")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "crossrank.cli", "serve", str(model), "--port", str(self.port),
               "--disable-access-log", *args]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 300.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"the server exited ({self.proc.returncode}):\n{self.log_path.read_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        sys.exit(f"the server was not ready within {timeout} s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._log.close()


def read_metrics(url: str) -> Dict[str, float]:
    """The unlabelled totals of /metrics (summed over labels) we report."""
    import httpx

    totals: Dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in ("crossrank_batch_pairs_sum", "crossrank_batch_pairs_count", "crossrank_forward_passes_total",
                    "crossrank_prefix_tokens_reused_total", "crossrank_computed_tokens_total"):
            totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


async def run_level(url: str, endpoint: str, requests: List[Tuple[str, List[str]]], concurrency: int,
                    warmup: int, on_start: Callable[[], None]) -> Dict[str, Any]:
    """Sends every request with ``concurrency`` clients (after ``warmup`` untimed ones, then
    ``on_start()``); returns timings and the scores."""
    import httpx

    def body(query: str, docs: List[str]) -> Dict[str, Any]:
        if endpoint == "score":
            return {"queries": query, "documents": docs}
        return {"query": query, "documents": docs, "return_documents": False}

    path = "/score" if endpoint == "score" else "/rerank"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    scores: List[Optional[List[float]]] = [None] * len(requests)
    latencies: List[float] = [0.0] * len(requests)
    async with httpx.AsyncClient(base_url=url, timeout=3600, limits=limits) as client:
        async def one(k: int, record: bool) -> None:
            t0 = time.perf_counter()
            resp = await client.post(path, json=body(*requests[k]))
            elapsed = time.perf_counter() - t0
            if resp.status_code != 200:
                raise RuntimeError(f"request {k}: HTTP {resp.status_code}: {resp.text[:500]}")
            if record:
                latencies[k] = elapsed
                data = resp.json()
                if endpoint == "score":
                    scores[k] = [d["score"] for d in data["data"]]
                else:
                    by_index = {r["index"]: r["relevance_score"] for r in data["results"]}
                    scores[k] = [by_index[i] for i in range(len(by_index))]

        async def clients(indices: List[int], record: bool) -> None:
            queue = iter(indices)

            async def worker() -> None:
                for k in queue:
                    await one(k, record)

            await asyncio.gather(*(worker() for _ in range(concurrency)))

        await clients(list(range(min(warmup, len(requests)))), record=False)
        on_start()
        t0 = time.perf_counter()
        await clients(list(range(len(requests))), record=True)
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "latencies": latencies, "scores": scores}


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its finished children (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


class CPUMeter:
    """CPU time of the server, of this process (the clients) and of everything else, over a span."""

    def __init__(self, server_pid: Optional[int]) -> None:
        self.server_pid = server_pid

    def read(self) -> Dict[str, Optional[float]]:
        return {"server": process_cpu_seconds(self.server_pid) if self.server_pid else 0.0,
                "self": rerank_engines.own_cpu_seconds(), "machine": rerank_engines.system_busy_seconds()}

    @staticmethod
    def delta(before: Dict[str, Optional[float]], after: Dict[str, Optional[float]], wall: float) -> Dict[str, Any]:
        server = after["server"] - before["server"]
        own = after["self"] - before["self"]
        out: Dict[str, Any] = {"server_cpu_s": server, "client_cpu_s": own, "other_cpu": None}
        if before["machine"] is not None and after["machine"] is not None:
            # CPUs other processes kept busy meanwhile: above ~0.2 the numbers are noisy.
            out["other_cpu"] = max(0.0, (after["machine"] - before["machine"] - server - own) / wall)
        return out


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _fmt(v: Optional[float], spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


# -- in-process --------------------------------------------------------------------------------


def in_process(model_dir: Path, overrides: Optional[Dict[str, Any]], threads: Optional[int],
               requests: List[Tuple[str, List[str]]], repeats: int) -> Dict[str, Any]:
    from crossrank import CrossEncoder

    model = CrossEncoder(model_dir, hf_overrides=overrides, threads=threads)
    model.score(requests[0][0], requests[0][1][:1])  # warm-up
    meter = CPUMeter(None)
    per_request: List[Tuple[float, Dict[str, Any]]] = []
    scores: List[List[float]] = []
    for _ in range(repeats):
        before, t0 = meter.read(), time.perf_counter()
        scores = [[float(s) for s in model.score(q, d)] for q, d in requests]
        wall = time.perf_counter() - t0
        per_request.append((wall, CPUMeter.delta(before, meter.read(), wall)))
    queries = [q for q, docs in requests for _ in docs]
    docs = [d for _, ds in requests for d in ds]
    one_call: List[Tuple[float, Dict[str, Any]]] = []
    for _ in range(repeats):
        before, t0 = meter.read(), time.perf_counter()
        model.score(queries, docs)
        wall = time.perf_counter() - t0
        one_call.append((wall, CPUMeter.delta(before, meter.read(), wall)))
    tokens = sum(model.tokenize(queries, docs).num_tokens)
    best_pr, best_oc = min(per_request, key=lambda r: r[0]), min(one_call, key=lambda r: r[0])
    return {"per_request_s": best_pr[0], "per_request_cpu_s": best_pr[1]["client_cpu_s"],
            "per_request_other_cpu": best_pr[1]["other_cpu"],
            "one_call_s": best_oc[0], "one_call_cpu_s": best_oc[1]["client_cpu_s"],
            "one_call_other_cpu": best_oc[1]["other_cpu"],
            "scores": scores, "prompt_tokens": tokens, "threads": model.threads}


# -- main --------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--size", choices=("tiny", "medium", "0.6b"), default="tiny",
                        help="random-weight checkpoint to build and serve (default: tiny)")
    parser.add_argument("--model", default=None, help="serve this model directory instead")
    parser.add_argument("--hf-overrides", "--hf_overrides", default=None, help="overrides for --model (JSON)")
    parser.add_argument("--requests", type=int, default=None, help="requests per level (default: by size)")
    parser.add_argument("--docs", type=int, default=None, help="documents per request (default: by size)")
    parser.add_argument("--concurrency", default="1,8,32", help="client counts (default: 1,8,32)")
    parser.add_argument("--endpoint", choices=("rerank", "score"), default="rerank")
    parser.add_argument("--threads", type=int, default=None, help="compute threads (default: every CPU)")
    parser.add_argument("--warmup", type=int, default=4, help="warm-up requests per level (default: 4)")
    parser.add_argument("--repeats", type=int, default=2, help="in-process repeats, the fastest counts")
    parser.add_argument("--out", default=None, help="JSON output path (default: benchmarks/results/...)")
    args = parser.parse_args(argv)

    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    size_key = "tiny" if args.model else args.size
    n_requests = args.requests or DEFAULTS[size_key][0]
    n_docs = args.docs or DEFAULTS[size_key][1]
    overrides = json.loads(args.hf_overrides) if args.hf_overrides else None
    model_dir = Path(args.model) if args.model else ensure_checkpoint(args.size)
    requests = make_requests(n_requests, n_docs)
    n_pairs = n_requests * n_docs
    print(f"model {model_dir} ({'given' if args.model else args.size + ', random weights'}); "
          f"{n_requests} requests x {n_docs} documents; endpoint /{args.endpoint}", flush=True)

    server_args = []
    if overrides:
        server_args += ["--hf_overrides", json.dumps(overrides)]
    if args.threads:
        server_args += ["--threads", str(args.threads)]
    results: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(model_dir, server_args, Path(tmp) / "server.log")
        try:
            t0 = time.perf_counter()
            server.wait_ready()
            startup_s = time.perf_counter() - t0
            meter = CPUMeter(server.proc.pid)
            for c in levels:
                before = read_metrics(server.url)
                cpu_before: Dict[str, Optional[float]] = {}
                run = asyncio.run(run_level(server.url, args.endpoint, requests, c, args.warmup,
                                            lambda: cpu_before.update(meter.read())))
                cpu = CPUMeter.delta(cpu_before, meter.read(), run["wall_s"])
                after = read_metrics(server.url)
                delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
                lat = run["latencies"]
                passes = delta.get("crossrank_batch_pairs_count", 0.0)
                results[str(c)] = {
                    "concurrency": c, "wall_s": run["wall_s"],
                    "requests_per_s": n_requests / run["wall_s"], "pairs_per_s": n_pairs / run["wall_s"],
                    "latency_s": {"p50": percentile(lat, 50), "p90": percentile(lat, 90),
                                  "p99": percentile(lat, 99), "mean": sum(lat) / len(lat), "max": max(lat)},
                    "forward_passes": passes,
                    "mean_pairs_per_pass": (delta.get("crossrank_batch_pairs_sum", 0.0) / passes) if passes else None,
                    "prefix_tokens_reused": delta.get("crossrank_prefix_tokens_reused_total", 0.0),
                    "cpu": cpu,
                    "scores": run["scores"],
                }
                r = results[str(c)]
                print(f"  {c:3d} clients: {r['requests_per_s']:8.2f} req/s {r['pairs_per_s']:9.2f} pairs/s  "
                      f"p50 {1e3 * r['latency_s']['p50']:8.1f} ms  p99 {1e3 * r['latency_s']['p99']:8.1f} ms  "
                      f"{r['mean_pairs_per_pass'] or 0:6.1f} pairs/pass  CPU: server {cpu['server_cpu_s']:5.1f} s, "
                      f"clients {cpu['client_cpu_s']:5.1f} s, others {_fmt(cpu['other_cpu'])} CPUs", flush=True)
        finally:
            server.stop()

    print("in-process CrossEncoder (server stopped) ...", flush=True)
    local = in_process(model_dir, overrides, args.threads, requests, args.repeats)
    local["per_request_pairs_per_s"] = n_pairs / local["per_request_s"]
    local["one_call_pairs_per_s"] = n_pairs / local["one_call_s"]
    mismatches = sum(1 for lv in results.values() for got, want in zip(lv["scores"], local["scores"]) if got != want)
    best = max(results.values(), key=lambda r: r["pairs_per_s"])
    summary = {
        "best_level": best["concurrency"],
        "server_pairs_per_s": best["pairs_per_s"],
        "in_process_per_request_pairs_per_s": local["per_request_pairs_per_s"],
        "in_process_one_call_pairs_per_s": local["one_call_pairs_per_s"],
        "server_vs_in_process_per_request": best["pairs_per_s"] / local["per_request_pairs_per_s"],
        "server_vs_in_process_one_call": best["pairs_per_s"] / local["one_call_pairs_per_s"],
        # Pairs per CPU-second of the server process against the in-process calls: independent of
        # what else the machine runs (the server's CPU includes HTTP, JSON and tokenization).
        "server_pairs_per_cpu_s": n_pairs / best["cpu"]["server_cpu_s"] if best["cpu"]["server_cpu_s"] else None,
        "in_process_per_request_pairs_per_cpu_s": n_pairs / local["per_request_cpu_s"],
        "scores_equal_in_process": mismatches == 0,
        "prompt_tokens": local["prompt_tokens"],
    }
    if summary["server_pairs_per_cpu_s"]:
        summary["server_vs_in_process_per_cpu_s"] = (summary["server_pairs_per_cpu_s"]
                                                     / summary["in_process_per_request_pairs_per_cpu_s"])
    print(f"  in-process, per request: {local['per_request_pairs_per_s']:9.2f} pairs/s (other CPU "
          f"{_fmt(local['per_request_other_cpu'])}); one call: {local['one_call_pairs_per_s']:9.2f} pairs/s")
    print(f"  server at {best['concurrency']} clients / in-process per request: "
          f"{summary['server_vs_in_process_per_request']:.3f}; / one call: {summary['server_vs_in_process_one_call']:.3f}; "
          f"per CPU-second: {_fmt(summary.get('server_vs_in_process_per_cpu_s'), '.3f')}; "
          f"scores equal: {summary['scores_equal_in_process']}")

    for lv in results.values():
        del lv["scores"]
    del local["scores"]
    report = {
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": [sys.executable] + list(sys.argv if argv is None else ["bench_server.py", *argv]),
        "args": vars(args),
        "machine": rerank_report.machine_info(local["threads"]),
        "model": {"path": str(model_dir), "size": None if args.model else args.size,
                  "weights": "given" if args.model else "random", "hf_overrides": overrides},
        "workload": {"requests": n_requests, "documents_per_request": n_docs, "pairs": n_pairs,
                     "prompt_tokens": local["prompt_tokens"], "endpoint": args.endpoint,
                     "document_tokens": list(rerank_workload.DOC_TOKENS)},
        "server": {"startup_s": startup_s, "levels": results},
        "in_process": local,
        "summary": summary,
    }
    out = Path(args.out) if args.out else RESULTS_DIR / f"bench_server-{_dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(f"wrote {out}")
    return 0 if mismatches == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
