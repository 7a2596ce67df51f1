#!/usr/bin/env python
"""Attention alone: the engine's kernel next to PyTorch's scaled_dot_product_attention on the same
q/k/v, and the memory of one 8,192-token pair.

    python benchmarks/bench_attention.py                        # one sequence of 1k / 4k / 8k tokens
    python benchmarks/bench_attention.py --batch 16 --tokens 378 --threads 1,16   # a rerank batch
    python benchmarks/bench_attention.py --paths tiles --tokens 4096 --repeats 5
    python benchmarks/bench_attention.py --rss                  # peak RSS of one 8,192-token pair
    python benchmarks/bench_attention.py --rss --model DIR --dtype float32 --json out.json

Attention mode: one layer's causal attention of --batch sequences of N tokens each at the
Qwen3-Reranker-0.6B shape (heads, KV heads and head_dim from assets/model-configs), random q/k/v,
through the test hook ``crossrank._testing.attention`` (the engine's cr_attention, timed in C
around the call alone: best of --repeats after one warm-up). The engine's paths:

  float32  float32 models: float32 scores and P V
  bf16     bf16 models below AMX: QK^T from bf16-rounded q and k, float32 softmax and P V
  tiles    int8 models everywhere and bf16 models on AMX: QK^T and P V as bf16 tile products
           (AMX tiles where the CPU and OS allow them, else their float32 model)

and PyTorch's ``scaled_dot_product_attention(is_causal=True)`` on [batch, heads, N, head_dim]
tensors in float32 and bfloat16 (torch-float32, torch-bf16; skipped without torch), at the same
thread count. GFLOP/s counts the causal work, 4 * heads * head_dim per (query, visible key).

RSS mode: a child process loads the model (default: the random-weight 0.6B-shape checkpoint of
bench_rerank.py's cache), resets its peak-RSS counter (/proc/self/clear_refs), scores one query with a
document truncated so the prompt is exactly --pair-tokens tokens, and reports the peak RSS of
the scoring against the RSS after loading and the resident weights. The issue's bound: peak
<= resident model + 1 GiB.

Results are printed and written as JSON under benchmarks/results/.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from rerank_engines import AnonSampler, proc_status  # noqa: E402
from rerank_report import machine_info  # noqa: E402
from rerank_workload import CONFIG_FILE, RESULTS_DIR, SENTENCES, ensure_checkpoint  # noqa: E402

GIB = 1 << 30


# ---- attention mode ----------------------------------------------------------------------------

def attention_shape() -> Dict[str, int]:
    config = json.loads(CONFIG_FILE.read_text(encoding="utf-8"))
    nh = config["num_attention_heads"]
    return {"n_heads": nh, "n_kv_heads": config["num_key_value_heads"],
            "head_dim": config.get("head_dim") or config["hidden_size"] // nh, "layers": config["num_hidden_layers"]}


PATHS = ("float32", "bf16", "tiles")
TORCH_PATHS = ("torch-float32", "torch-bf16")


def engine_attention(path: str, q: Any, k: Any, v: Any, pos: Any, starts: Any, threads: int,
                     repeats: int) -> float:
    """Best seconds of the engine's attention on one path."""
    from crossrank import _testing

    flags = {"float32": {}, "bf16": {"bf16_scores": True}, "tiles": {"bf16_scores": True, "tiles": True}}[path]
    return _testing.attention(q, k, v, pos, starts, threads=threads, reps=repeats, **flags)[1]


def torch_attention(path: str, q: Any, k: Any, v: Any, batch: int, threads: int, repeats: int) -> float:
    """Best seconds of torch's scaled_dot_product_attention (causal, grouped-query) on the same
    values as [batch, heads, N, head_dim] tensors."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if path == "torch-bf16" else torch.float32

    def heads_first(x: Any) -> Any:  # [batch * N, heads, D] -> [batch, heads, N, D]
        t = torch.from_numpy(x).to(dtype)
        return t.reshape(batch, -1, t.shape[1], t.shape[2]).transpose(1, 2).contiguous()

    tq, tk, tv = heads_first(q), heads_first(k), heads_first(v)
    group = tq.shape[1] // tk.shape[1]
    tk, tv = tk.repeat_interleave(group, dim=1), tv.repeat_interleave(group, dim=1)
    best = float("inf")
    with torch.inference_mode():
        for r in range(repeats + 1):
            t0 = time.perf_counter()
            F.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
            if r:  # the first call warms up
                best = min(best, time.perf_counter() - t0)
    return best


def bench_attention(args: argparse.Namespace) -> Dict[str, Any]:
    import numpy as np

    from crossrank import _testing

    shape = attention_shape()
    nh, nkv, d = shape["n_heads"], shape["n_kv_heads"], shape["head_dim"]
    paths = [x for x in args.paths if x in PATHS]
    torch_paths = [x for x in args.paths if x in TORCH_PATHS]
    if torch_paths and importlib.util.find_spec("torch") is None:
        torch_paths = []
        print("torch is not installed: no torch columns")
    rng = np.random.default_rng(0)
    rows: List[Dict[str, Any]] = []
    columns = paths + torch_paths
    print(f"one layer, {nh} heads / {nkv} KV heads / head_dim {d}, {args.batch} sequence(s) per call, "
          f"kernels {_testing.cpu_info()['isa']}; ms per call (GFLOP/s)")
    head = f"{'tokens':>7} {'threads':>7}" + "".join(f" {c:>20}" for c in columns)
    print(head + "\n" + "-" * len(head))
    for n in args.tokens:
        t = args.batch * n
        q = rng.standard_normal((t, nh, d), dtype=np.float32)
        k = rng.standard_normal((t, nkv, d), dtype=np.float32)
        v = rng.standard_normal((t, nkv, d), dtype=np.float32)
        pos = np.tile(np.arange(n, dtype=np.int32), args.batch)
        starts = np.arange(0, t + 1, n, dtype=np.int64)
        flops = args.batch * 4.0 * nh * d * n * (n + 1) / 2
        for threads in args.threads:
            row: Dict[str, Any] = {"tokens": n, "batch": args.batch, "threads": threads, "seconds": {}}
            for c in columns:
                row["seconds"][c] = (engine_attention(c, q, k, v, pos, starts, threads, args.repeats) if c in PATHS
                                     else torch_attention(c, q, k, v, args.batch, threads, args.repeats))
            row["gflops"] = {c: flops / s / 1e9 for c, s in row["seconds"].items()}
            rows.append(row)
            print(f"{n:>7} {threads:>7}" + "".join(
                f" {row['seconds'][c] * 1e3:>11.2f} ({row['gflops'][c]:>6.0f})" for c in columns), flush=True)
    print(f"(whole model: x {shape['layers']} layers; best of {args.repeats} runs after a warm-up)")
    return {"mode": "attention", "shape": shape, "rows": rows}


# ---- RSS mode ----------------------------------------------------------------------------------

def long_document(tokens: int) -> str:
    """English text of somewhat more than `tokens` tokens (the sentence bank is ~2,500 tokens);
    the template cuts the document so the prompt has exactly max_length tokens."""
    sentences = [s for topic in sorted(SENTENCES) for s in SENTENCES[topic]]
    return " ".join(sentences * (tokens // 2000 + 1))


def rss_child(spec: Dict[str, Any]) -> Dict[str, Any]:
    import numpy as np

    from crossrank import CrossEncoder

    rss_start = proc_status("VmRSS")
    t0 = time.perf_counter()
    model = CrossEncoder(spec["model"], template="qwen3-reranker", dtype=spec["dtype"], threads=spec["threads"],
                         max_length=spec["pair_tokens"])
    load_s = time.perf_counter() - t0
    query, doc = "What drove the spread of tea across the world?", long_document(spec["pair_tokens"])
    n_tokens = model.tokenize(query, [doc]).num_tokens[0]
    rss_loaded = proc_status("VmRSS")
    anon_loaded = proc_status("RssAnon")
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")  # reset VmHWM: the peak from here on is the scoring's
    sampler = AnonSampler(0.001)
    t0 = time.perf_counter()
    score = float(model.score(query, [doc])[0])
    score_s = time.perf_counter() - t0
    peak_anon = sampler.stop()
    return {"model": str(spec["model"]), "dtype": model.dtype, "threads": spec["threads"], "tokens": int(n_tokens),
            "weight_bytes": int(model.engine.core.weight_bytes), "rss_start": rss_start, "rss_after_load": rss_loaded,
            "peak_rss_scoring": proc_status("VmHWM"), "anon_after_load": anon_loaded, "peak_anon_scoring": peak_anon,
            "load_s": load_s, "score_s": score_s,
            "score": score, "finite": bool(np.isfinite(score))}


def bench_rss(args: argparse.Namespace) -> Dict[str, Any]:
    model = Path(args.model) if args.model else ensure_checkpoint()
    spec = {"model": str(model), "dtype": args.dtype, "threads": args.threads, "pair_tokens": args.pair_tokens}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--rss-child", json.dumps(spec)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"the RSS child failed (exit {proc.returncode}):\n{proc.stderr}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    r["extra_bytes"] = r["peak_rss_scoring"] - r["rss_after_load"]
    r["bound_bytes"] = r["rss_after_load"] + GIB
    r["within_bound"] = r["peak_rss_scoring"] <= r["bound_bytes"]
    mib = 1 << 20
    print(f"{r['model']}: dtype {r['dtype']}, {r['threads']} thread(s), one pair of {r['tokens']} tokens")
    print(f"  resident weights       {r['weight_bytes'] / mib:9.0f} MiB")
    print(f"  RSS before load        {r['rss_start'] / mib:9.0f} MiB")
    print(f"  RSS after load         {r['rss_after_load'] / mib:9.0f} MiB")
    print(f"  peak RSS while scoring {r['peak_rss_scoring'] / mib:9.0f} MiB  (+{r['extra_bytes'] / mib:.0f} MiB; "
          f"bound: after load + 1024 MiB -> {'ok' if r['within_bound'] else 'EXCEEDED'})")
    if r.get("anon_after_load") is not None:
        extra = r["peak_anon_scoring"] - r["anon_after_load"]
        print(f"  anonymous RSS          {r['anon_after_load'] / mib:9.0f} MiB after load, peak {r['peak_anon_scoring'] / mib:.0f} "
              f"MiB while scoring (+{extra / mib:.0f} MiB; bound 1024 MiB -> {'ok' if extra <= GIB else 'EXCEEDED'})")
    print(f"  load {r['load_s']:.1f} s, score {r['score_s']:.1f} s, score {r['score']:.4f}")
    return {"mode": "rss", **r}


# ---- main --------------------------------------------------------------------------------------

def threads_list(text: str) -> List[int]:
    counts = [int(x) for x in text.split(",") if x.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {text!r}")
    return counts


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=threads_list, default=[len(os.sched_getaffinity(0))],
                   help="comma list of thread counts (attention mode) or one count (RSS mode)")
    p.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096, 8192], help="tokens per sequence")
    p.add_argument("--batch", type=int, default=1, help="sequences per call (attention mode)")
    p.add_argument("--paths", type=lambda v: v.split(","), default=list(PATHS + TORCH_PATHS),
                   help="comma list of " + ", ".join(PATHS + TORCH_PATHS) + " (default: all)")
    p.add_argument("--repeats", type=int, default=3, help="runs per length (best kept)")
    p.add_argument("--rss", action="store_true", help="measure the peak RSS of one long pair instead")
    p.add_argument("--model", help="RSS mode: model directory (default: the random 0.6B-shape checkpoint)")
    p.add_argument("--dtype", default="auto", help="RSS mode: compute dtype")
    p.add_argument("--pair-tokens", type=int, default=8192, help="RSS mode: prompt length")
    p.add_argument("--json", help="write the results here (default: benchmarks/results/)")
    p.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = [x for x in args.paths if x not in PATHS + TORCH_PATHS]
    if unknown or args.batch < 1 or args.repeats < 1 or min(args.tokens) < 1:
        p.error(f"unknown path(s) {unknown}" if unknown else "--batch, --repeats and --tokens must be >= 1")
    if args.rss:
        args.threads = args.threads[0]
    if args.rss_child:
        print(json.dumps(rss_child(json.loads(args.rss_child))))
        return 0
    result = bench_rss(args) if args.rss else bench_attention(args)
    result["machine"] = machine_info(args.threads)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.json) if args.json else RESULTS_DIR / f"bench_attention-{result['mode']}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
