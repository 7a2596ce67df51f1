#!/usr/bin/env python
"""GEMM paths at the Qwen3-Reranker-0.6B shapes, next to the instruction peaks of this machine and
oneDNN's bf16 linear (through torch) in the same run.

    python benchmarks/bench_kernels.py                      # threads = CPUs available, M = 64..4096
    python benchmarks/bench_kernels.py --threads 1,2 --m 64 256
    python benchmarks/bench_kernels.py --threads 1,16 --formats bfloat16,int8,onednn-prepacked
    python benchmarks/bench_kernels.py --threads 1 --clock thread   # on a machine shared with others
    python benchmarks/bench_kernels.py --require-amx --threads 1,2,4,8,16   # stop unless tiles are usable

For every projection shape of the model (fused q|k|v, o, fused gate|up, down; config from
assets/model-configs/, --config for another) and each row count M, one packed layer is timed
through the engine's own entry point (cr_linear_apply, best of --reps):

  float32    crossrank's float32 panels
  openblas   OpenBLAS sgemm, as the engine calls it
  bfloat16   crossrank's bf16 layer: AMX tiles (tdpbf16ps) where the CPU and OS allow, else the
             vdpbf16ps panels; includes rounding the inputs to bf16
  bfloat16-rows
             the bf16 layer on inputs already rounded (on AMX into its tile order), as the
             forward's norms, attention and GLU write them for every projection (like oneDNN's,
             whose inputs are bf16 tensors)
  int8       crossrank's int8 layer: AMX tiles (tdpbusd) or vpdpbusd; includes the per-token
             input quantization and the outlier scan
  int8-rows  the int8 layer on inputs already quantized (into the tile order on AMX), as the
             forward's norms and GLU write them for q|k|v, gate|up and down
  onednn     torch.nn.functional.linear on bf16 tensors (oneDNN re-packs the weight every call)
  onednn-prepacked
             oneDNN with the weight packed once: torch.ops.mkldnn._linear_pointwise on a weight
             from torch.ops.mkldnn._reorder_linear_weight (what torch.compile's freezing uses)

The peaks come from register-only loops run on the same pool in the same run: AVX-512 FMA for
float32, vdpbf16ps, vpdpbusd, and the AMX tile multiplier (tdpbf16ps / tdpbusd on four
accumulator tiles). bfloat16 cells show the % of the bf16 tile peak on AMX (else of vdpbf16ps),
int8 cells of the int8 one; the summary gives crossrank bf16 (and bf16-rows) / oneDNN prepacked and
int8 / bf16.
oneDNN's ISA is read from ONEDNN_VERBOSE in a subprocess (an `amx` in it means it runs on tiles).
Results are printed and written as JSON under benchmarks/results/. Needs numpy; torch is optional
(the oneDNN columns are skipped without it).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONFIG_FILE = REPO / "assets" / "model-configs" / "Qwen3-Reranker-0.6B.json"
RESULTS_DIR = REPO / "benchmarks" / "results"
FORMATS = ("float32", "openblas", "bfloat16", "bfloat16-rows", "int8", "int8-rows", "onednn", "onednn-prepacked")
TORCH_FORMATS = ("onednn", "onednn-prepacked")


def model_shapes(config: Dict[str, Any]) -> Dict[str, tuple]:
    """(n_out, n_in) of each projection of one decoder layer, with q|k|v and gate|up fused."""
    H, I = config["hidden_size"], config["intermediate_size"]
    D = config.get("head_dim") or H // config["num_attention_heads"]
    q, kv = config["num_attention_heads"] * D, config["num_key_value_heads"] * D
    return {"qkv": (q + 2 * kv, H), "o": (H, q), "gate_up": (2 * I, H), "down": (H, I)}


#: "wall": time.perf_counter; "thread": the calling thread's CPU time (single-thread runs on a
#: machine shared with other processes: the time they take the core does not count).
CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}


def best_seconds(fn: Callable[[], Any], reps: int, clock: str = "wall") -> float:
    now = CLOCKS[clock]
    fn()  # warm-up (oneDNN creates its primitive on the first call)
    best = float("inf")
    for _ in range(reps):
        t0 = now()
        fn()
        best = min(best, now() - t0)
    return best


class OneDNN:
    """oneDNN's bf16 linear through torch, both as F.linear and with a prepacked weight."""

    def __init__(self) -> None:
        import torch
        import torch.nn.functional as F

        self.torch, self.F = torch, F
        self.version = torch.__version__
        self.failed: set = set()

    def try_seconds(self, w: np.ndarray, m: int, fmt: str, threads: int, reps: int,
                    clock: str = "wall") -> Optional[float]:
        """seconds(), or None (said once per format) where this torch lacks the entry point."""
        try:
            return self.seconds(w, m, fmt, threads, reps, clock)
        except (AttributeError, RuntimeError) as e:
            if fmt not in self.failed:
                print(f"{fmt}: not available in torch {self.version} ({type(e).__name__}: {e})")
                self.failed.add(fmt)
            return None

    def seconds(self, w: np.ndarray, m: int, fmt: str, threads: int, reps: int, clock: str = "wall") -> float:
        torch = self.torch
        torch.set_num_threads(threads)
        wt = torch.from_numpy(w).to(torch.bfloat16)
        x = (torch.rand(m, w.shape[1]) - 0.5).to(torch.bfloat16)
        with torch.no_grad():
            if fmt == "onednn":
                return best_seconds(lambda: self.F.linear(x, wt), reps, clock)
            packed = torch.ops.mkldnn._reorder_linear_weight(wt, m)
            return best_seconds(lambda: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], ""), reps,
                                clock)


def onednn_isa() -> Optional[str]:
    """The ISA oneDNN's bf16 matmul runs on here (from ONEDNN_VERBOSE), or None without torch."""
    code = ("import torch; w = torch.randn(256, 256).bfloat16(); x = torch.randn(64, 256).bfloat16();"
            "torch.nn.functional.linear(x, w)")
    env = dict(os.environ, ONEDNN_VERBOSE="1", DNNL_VERBOSE="1")
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.findall(r"(?:brg_matmul|brgemm|gemm|jit)[^,]*:([a-z0-9_]+)", out)
    return found[-1] if found else ("unknown" if out else None)


#: FLOP (OP) per iteration of each peak loop (csrc/testing/bench.c), for the thread clock.
PEAK_FLOP = {"fma_f32": 384, "dpbf16": 768, "vnni": 1536, "amx_bf16": 65536, "amx_int8": 131072}


def peaks_for(core: Any, threads: int, clock: str = "wall") -> Dict[str, Optional[float]]:
    """GFLOP/s (GOP/s for int8) of the register-only loops, best of 3, on `threads` workers."""
    peaks: Dict[str, Optional[float]] = {}
    for kind, iters in (("fma_f32", 50_000_000), ("dpbf16", 50_000_000), ("vnni", 50_000_000),
                        ("amx_bf16", 2_000_000), ("amx_int8", 2_000_000)):
        try:
            best = 0.0
            for _ in range(3):
                t0 = time.thread_time()
                rate = core.bench_peak(kind, threads=threads, iters=iters)
                cpu = time.thread_time() - t0
                # the hook runs iters // 64 * 64 iterations (64 slices per thread)
                best = max(best, rate if clock == "wall" else PEAK_FLOP[kind] * (iters // 64 * 64) / cpu / 1e9)
            peaks[kind] = best
        except RuntimeError:
            peaks[kind] = None
    return peaks


def run_threads(core: Any, threads: int, args: argparse.Namespace, formats: List[str], shapes: Dict[str, tuple],
                onednn: Optional[OneDNN]) -> Dict[str, Any]:
    peaks = peaks_for(core, threads, args.clock)
    amx = core.cpu_info()["amx"] == "usable"
    peak_of = {"float32": peaks["fma_f32"], "openblas": peaks["fma_f32"],
               "bfloat16": peaks["amx_bf16"] if amx else peaks["dpbf16"],
               "int8": peaks["amx_int8"] if amx else peaks["vnni"],
               "onednn": peaks["amx_bf16"] if amx else peaks["dpbf16"]}
    peak_of["onednn-prepacked"] = peak_of["onednn"]
    peak_of["bfloat16-rows"] = peak_of["bfloat16"]
    peak_of["int8-rows"] = peak_of["int8"]
    fmt_peak = lambda v: f"{v:.0f}" if v else "n/a"  # noqa: E731
    print(f"\n== {threads} thread(s), kernels {core.cpu_info()['isa']} (AMX: {core.cpu_info()['amx']}); peaks GFLOP/s: "
          f"float32 FMA {fmt_peak(peaks['fma_f32'])}, vdpbf16ps {fmt_peak(peaks['dpbf16'])}, "
          f"vpdpbusd {fmt_peak(peaks['vnni'])} (GOP/s), tdpbf16ps {fmt_peak(peaks['amx_bf16'])}, "
          f"tdpbusd {fmt_peak(peaks['amx_int8'])} (GOP/s)")
    rng = np.random.default_rng(0)
    rows: List[Dict[str, Any]] = []
    head = f"{'layer':8} {'N x K':>11} {'M':>5}  " + "  ".join(f"{f:>17}" for f in formats)
    print(head + "\n" + "-" * len(head))
    for name, (n_out, n_in) in shapes.items():
        w = (rng.standard_normal((n_out, n_in), dtype=np.float32) * 0.05).astype(np.float32)
        for m in args.m:
            cells = []
            for fmt in formats:
                if fmt in TORCH_FORMATS:
                    seconds = onednn.try_seconds(w, m, fmt, threads, args.reps, args.clock) if onednn else None
                elif fmt == "bfloat16-rows":
                    seconds = core.bench_linear(w, m, fmt="bfloat16", threads=threads, reps=args.reps,
                                                clock=args.clock, rows=True)
                elif fmt == "int8-rows":
                    seconds = core.bench_linear(w, m, fmt="int8", threads=threads, reps=args.reps,
                                                clock=args.clock, rows=True)
                else:
                    seconds = core.bench_linear(w, m, fmt=fmt, threads=threads, reps=args.reps, clock=args.clock)
                if seconds is None:
                    cells.append("n/a")
                    continue
                gflops = 2.0 * m * n_out * n_in / seconds / 1e9
                pct = 100.0 * gflops / peak_of[fmt] if peak_of.get(fmt) else None
                rows.append({"layer": name, "n_out": n_out, "n_in": n_in, "m": m, "format": fmt, "threads": threads,
                             "seconds": seconds, "gflops": gflops, "pct_peak": pct})
                cells.append(f"{gflops:6.0f} ({pct:3.0f}%)" if pct is not None else f"{gflops:6.0f}       ")
            print(f"{name:8} {f'{n_out}x{n_in}':>11} {m:>5}  " + "  ".join(f"{c:>17}" for c in cells))
    summary = summarize(rows)
    for line in summary["lines"]:
        print(line)
    return {"threads": threads, "peaks": peaks, "rows": rows, "summary": summary["ratios"]}


def summarize(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Geometric means over the cells of: bf16 / oneDNN prepacked, bf16 / oneDNN F.linear,
    int8 / bf16, and bf16's % of its peak."""
    by = {(r["layer"], r["m"], r["format"]): r for r in rows}
    cells = sorted({(r["layer"], r["m"]) for r in rows})

    def gmean(num: str, den: str) -> Optional[float]:
        vals = [by[c + (num,)]["gflops"] / by[c + (den,)]["gflops"] for c in cells
                if c + (num,) in by and c + (den,) in by]
        return float(np.exp(np.mean(np.log(vals)))) if vals else None

    def pcts(fmt_name: str) -> List[float]:
        return [by[c + (fmt_name,)]["pct_peak"] for c in cells if c + (fmt_name,) in by
                and by[c + (fmt_name,)]["pct_peak"] is not None]

    bf16, rows16 = pcts("bfloat16"), pcts("bfloat16-rows")
    ratios = {"bf16_vs_onednn_prepacked": gmean("bfloat16", "onednn-prepacked"),
              "bf16_vs_onednn_linear": gmean("bfloat16", "onednn"),
              "int8_vs_bf16": gmean("int8", "bfloat16"),
              "bf16_pct_of_peak_mean": float(np.mean(bf16)) if bf16 else None,
              "bf16_pct_of_peak_min": float(np.min(bf16)) if bf16 else None,
              "bf16_rows_vs_onednn_prepacked": gmean("bfloat16-rows", "onednn-prepacked"),
              "bf16_rows_pct_of_peak_mean": float(np.mean(rows16)) if rows16 else None,
              "bf16_rows_pct_of_peak_min": float(np.min(rows16)) if rows16 else None,
              "int8_rows_vs_bf16_rows": gmean("int8-rows", "bfloat16-rows"),
              "int8_rows_vs_int8": gmean("int8-rows", "int8")}
    fmt = lambda v, s="x": "n/a" if v is None else f"{v:.2f}{s}"  # noqa: E731
    lines = [f"crossrank bf16 / oneDNN prepacked: {fmt(ratios['bf16_vs_onednn_prepacked'])} (geometric mean), "
             f"/ oneDNN F.linear: {fmt(ratios['bf16_vs_onednn_linear'])}; int8 / bf16: {fmt(ratios['int8_vs_bf16'])}; "
             f"bf16 at {fmt(ratios['bf16_pct_of_peak_mean'], '%')} of its peak on average "
             f"(min {fmt(ratios['bf16_pct_of_peak_min'], '%')})"]
    if rows16:
        lines.append(f"on bf16 rows (bf16 inputs, as oneDNN's): / oneDNN prepacked "
                     f"{fmt(ratios['bf16_rows_vs_onednn_prepacked'])}, at "
                     f"{fmt(ratios['bf16_rows_pct_of_peak_mean'], '%')} of the peak on average "
                     f"(min {fmt(ratios['bf16_rows_pct_of_peak_min'], '%')})")
    if ratios["int8_rows_vs_int8"] is not None:
        lines.append(f"int8 on quantized rows (as the forward runs q|k|v, gate|up, down): / int8 quantizing its inputs "
                     f"{fmt(ratios['int8_rows_vs_int8'])}, / bf16 rows {fmt(ratios['int8_rows_vs_bf16_rows'])}")
    return {"ratios": ratios, "lines": lines}


def main(argv: Optional[Sequence[str]] = None) -> int:
    # the hooks' module: the layers, the peak loops and the dispatcher state they ran on
    from crossrank import _testing

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default=str(len(os.sched_getaffinity(0))),
                   help="comma-separated thread counts, e.g. 1,2,4,8,16 (default: CPUs available)")
    p.add_argument("--m", type=int, nargs="+", default=[64, 256, 1024, 4096], help="row counts")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--formats", default=",".join(FORMATS))
    p.add_argument("--config", type=Path, default=CONFIG_FILE, help="model config.json for the shapes")
    p.add_argument("--require-amx", action="store_true",
                   help="stop (exit 2) unless /proc/cpuinfo lists amx_tile, the OS grants crossrank the tiles "
                        "and oneDNN's bf16 matmul reports an AMX ISA")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="thread: CPU time of the calling thread (with --threads 1 only), for a machine "
                        "shared with other processes")
    args = p.parse_args(argv)
    formats = [f for f in args.formats.split(",") if f]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        p.error(f"unknown formats {unknown}; choose from {','.join(FORMATS)}")
    thread_counts = [int(t) for t in args.threads.split(",") if t]
    if args.clock == "thread" and thread_counts != [1]:
        p.error("--clock thread measures the calling thread: use it with --threads 1")
    shapes = model_shapes(json.loads(args.config.read_text()))

    onednn: Optional[OneDNN] = None
    if any(f in TORCH_FORMATS for f in formats):
        try:
            onednn = OneDNN()
        except ImportError:
            print("torch is not installed: the oneDNN columns are skipped")
    usable = _testing.amx_usable()
    info = _testing.cpu_info()
    dnn_isa = onednn_isa() if onednn else None
    print(f"{platform.processor() or platform.machine()}, vendor {info['vendor']}, kernels {info['isa']}, "
          f"AMX: {info['amx']} (usable: {usable}); torch {onednn.version if onednn else 'n/a'}, oneDNN bf16 "
          f"matmul ISA: {dnn_isa or 'n/a'}; config {args.config.name}")
    if args.require_amx:
        try:
            cpuinfo_amx = "amx_tile" in Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo_amx = False
        problems = [msg for ok, msg in (
            (cpuinfo_amx, "/proc/cpuinfo lists no amx_tile"),
            (usable, f"crossrank may not use the tiles: {info['amx']}"),
            (onednn is None or (dnn_isa or "").find("amx") >= 0, f"oneDNN's bf16 matmul runs on {dnn_isa}, not AMX"),
        ) if not ok]
        if problems:
            print("--require-amx: " + "; ".join(problems))
            return 2
    runs = [run_threads(_testing, t, args, formats, shapes, onednn) for t in thread_counts]
    print("\nGFLOP/s (percent of the peak of that precision: float32 FMA for float32 and OpenBLAS; the AMX "
          "tile peak for bfloat16, int8 and oneDNN where AMX is usable, else vdpbf16ps / vpdpbusd; int8 "
          "timings include the per-token quantization, bfloat16 the rounding of the inputs)")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"bench_kernels-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"cpu_info": info, "onednn_isa": dnn_isa, "config": args.config.name, "clock": args.clock,
                               "torch": onednn.version if onednn else None,
                               "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
                               "runs": runs}, indent=2))
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
