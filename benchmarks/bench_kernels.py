#!/usr/bin/env python
"""GEMM paths at the Qwen3-Reranker-0.6B shapes, next to the instruction peaks of this machine.

    python benchmarks/bench_kernels.py                   # threads = CPUs available, M = 64..2048
    python benchmarks/bench_kernels.py --threads 1 --m 256

For every projection shape of the model (fused q|k|v, o, fused gate|up, down) and each row count
M, one packed layer is timed through the engine's own entry point (cr_linear_apply, best of
--reps): crossrank's float32 panels, OpenBLAS sgemm (as the engine calls it) and crossrank's
bfloat16 panels and int8 panels (with the per-token input quantization). The peaks come from
register-only loops run on the same pool in the same run: AVX-512 FMA for float32, vdpbf16ps for
bfloat16 and vpdpbusd for int8 (a CPU without them reports none). Results are
printed and written as JSON under benchmarks/results/.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONFIG_FILE = REPO / "assets" / "model-configs" / "Qwen3-Reranker-0.6B.json"
RESULTS_DIR = REPO / "benchmarks" / "results"
FORMATS = ("float32", "openblas", "bfloat16", "int8")


def model_shapes(config: Dict[str, Any]) -> Dict[str, tuple]:
    H, I = config["hidden_size"], config["intermediate_size"]
    D = config.get("head_dim") or H // config["num_attention_heads"]
    q, kv = config["num_attention_heads"] * D, config["num_key_value_heads"] * D
    return {"qkv": (q + 2 * kv, H), "o": (H, q), "gate_up": (2 * I, H), "down": (H, I)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    from crossrank import _core

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--m", type=int, nargs="+", default=[64, 256, 1024, 2048], help="row counts")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--formats", default=",".join(FORMATS))
    args = p.parse_args(argv)
    formats = [f for f in args.formats.split(",") if f]
    config = json.loads(CONFIG_FILE.read_text())
    shapes = model_shapes(config)

    peaks: Dict[str, Optional[float]] = {}
    for kind in ("fma_f32", "dpbf16", "vnni"):
        try:
            peaks[kind] = max(_core._bench_peak(kind, threads=args.threads) for _ in range(3))
        except RuntimeError:
            peaks[kind] = None
    peak_of = {"float32": peaks["fma_f32"], "openblas": peaks["fma_f32"], "bfloat16": peaks["dpbf16"],
               "int8": peaks["vnni"]}
    print(f"{args.threads} thread(s), kernels {_core.cpu_info()['isa']}; peaks: float32 FMA "
          f"{peaks['fma_f32'] or float('nan'):.0f} GFLOP/s, bf16 vdpbf16ps {peaks['dpbf16'] or float('nan'):.0f} GFLOP/s, "
          f"int8 vpdpbusd {peaks['vnni'] or float('nan'):.0f} GOP/s")
    rng = np.random.default_rng(0)
    rows: List[Dict[str, Any]] = []
    head = f"{'layer':8} {'N x K':>12} {'M':>5}  " + "  ".join(f"{f:>18}" for f in formats)
    print(head + "\n" + "-" * len(head))
    for name, (n_out, n_in) in shapes.items():
        w = (rng.standard_normal((n_out, n_in), dtype=np.float32) * 0.05).astype(np.float32)
        for m in args.m:
            cells = []
            for fmt in formats:
                seconds = _core._bench_linear(w, m, fmt=fmt, threads=args.threads, reps=args.reps)
                gflops = 2.0 * m * n_out * n_in / seconds / 1e9
                pct = 100.0 * gflops / peak_of[fmt] if peak_of[fmt] else None
                rows.append({"layer": name, "n_out": n_out, "n_in": n_in, "m": m, "format": fmt,
                             "seconds": seconds, "gflops": gflops, "pct_peak": pct})
                cells.append(f"{gflops:7.0f} ({pct:3.0f}%)" if pct is not None else f"{gflops:7.0f}       ")
            print(f"{name:8} {f'{n_out}x{n_in}':>12} {m:>5}  " + "  ".join(f"{c:>18}" for c in cells))
    print("GFLOP/s (percent of the peak of that precision: float32 FMA for float32 and OpenBLAS, "
          "vdpbf16ps for bfloat16, vpdpbusd for int8; int8 timings include the per-token quantization)")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"bench_kernels-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"threads": args.threads, "isa": _core.cpu_info()["isa"], "peaks": peaks,
                               "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
                               "rows": rows}, indent=2))
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
