#!/usr/bin/env python
"""Long-document attention: the tiled kernel's time and GFLOP/s, and the memory of one 8,192-token
pair.

    python benchmarks/bench_attention.py                        # 1k / 4k / 8k tokens
    python benchmarks/bench_attention.py --tokens 1024 4096 --repeats 5
    python benchmarks/bench_attention.py --rss                  # peak RSS of one 8,192-token pair
    python benchmarks/bench_attention.py --rss --model DIR --dtype float32 --json out.json

Attention mode: one layer's attention of one sequence of N tokens at the Qwen3-Reranker-0.6B
shape (heads, KV heads and head_dim from assets/model-configs), random q/k/v, through the
test hook ``crossrank._testing.attention`` (the engine's cr_attention), best of --repeats.
GFLOP/s counts the causal work, 4 * heads * head_dim per (query, visible key).

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


def bench_attention(args: argparse.Namespace) -> Dict[str, Any]:
    import numpy as np

    from crossrank import _testing

    shape = attention_shape()
    nh, nkv, d = shape["n_heads"], shape["n_kv_heads"], shape["head_dim"]
    rng = np.random.default_rng(0)
    rows: List[Dict[str, Any]] = []
    print(f"one layer, {nh} heads / {nkv} KV heads / head_dim {d}, {args.threads} thread(s), "
          f"kernels {_testing.cpu_info()['isa']}")
    head = f"{'tokens':>7} {'ms':>10} {'GFLOP/s':>8}"
    print(head + "\n" + "-" * len(head))
    for n in args.tokens:
        q = rng.standard_normal((n, nh, d), dtype=np.float32)
        k = rng.standard_normal((n, nkv, d), dtype=np.float32)
        v = rng.standard_normal((n, nkv, d), dtype=np.float32)
        pos = np.arange(n, dtype=np.int32)
        starts = np.array([0, n], dtype=np.int64)
        flops = 4.0 * nh * d * n * (n + 1) / 2
        times: List[float] = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            _testing.attention(q, k, v, pos, starts, threads=args.threads)
            times.append(time.perf_counter() - t0)
        best = min(times)
        row = {"tokens": n, "tiled_s": best, "tiled_gflops": flops / best / 1e9, "tiled_times_s": times}
        rows.append(row)
        print(f"{n:>7} {best * 1e3:>10.1f} {row['tiled_gflops']:>8.1f}", flush=True)
    print(f"(whole model: x {shape['layers']} layers; best of {args.repeats} runs)")
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

def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096, 8192])
    p.add_argument("--repeats", type=int, default=3, help="runs per length (best kept)")
    p.add_argument("--rss", action="store_true", help="measure the peak RSS of one long pair instead")
    p.add_argument("--model", help="RSS mode: model directory (default: the random 0.6B-shape checkpoint)")
    p.add_argument("--dtype", default="auto", help="RSS mode: compute dtype")
    p.add_argument("--pair-tokens", type=int, default=8192, help="RSS mode: prompt length")
    p.add_argument("--json", help="write the results here (default: benchmarks/results/)")
    p.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
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
