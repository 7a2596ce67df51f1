"""The rerank benchmark's report: the machine it ran on (CPU model, family/model, AMX tiles and
whether Linux grants them, torch's oneDNN ISA, library versions), the figures derived from the
children's timings (pairs/s, tokens/s, useful GFLOP/s, ratios to the peers at the same thread
count), the checks (same token ids, score agreement), the tables and the JSON record.
"""
from __future__ import annotations

import ctypes
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from rerank_engines import BATCHED, ENGINES, OPENBLAS_VARS
from rerank_workload import REPO, useful_flops

REFERENCE = "transformers-f32"
OURS = "crossrank-f32"
# (engine, key) of the ratios every run gets against the best run of that engine at its thread count
RATIOS = (("transformers-bf16", "vs_transformers_bf16"), (REFERENCE, "vs_transformers_f32"), (OURS, "vs_crossrank_f32"))
GIB = 1 << 30
MEMORY_BOUND = GIB  # memory mode: peak anonymous RSS over the loaded model, 8,192-token pair

# ---- the machine -------------------------------------------------------------------------------

_ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA, _SYS_ARCH_PRCTL = 0x1023, 18, 158


def _amx_permission() -> Optional[bool]:
    """Whether Linux grants this process the AMX tile data (arch_prctl ARCH_REQ_XCOMP_PERM), or
    None off x86-64 Linux."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0
    except (OSError, AttributeError):
        return None


def _onednn_isa(timeout: float = 60.0) -> Dict[str, Optional[str]]:
    """What oneDNN (torch) reports: its ISA line and the implementation of a small bf16 linear, from
    ONEDNN_VERBOSE in a child process (a few seconds)."""
    code = ("import torch; torch.set_num_threads(1); "
            "torch.nn.functional.linear(torch.ones(64, 256, dtype=torch.bfloat16), torch.ones(256, 256, dtype=torch.bfloat16))")
    out: Dict[str, Optional[str]] = {"onednn_isa": None, "onednn_bf16_linear": None}
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, ONEDNN_VERBOSE="1"),
                              capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return out
    for line in proc.stdout.splitlines():
        parts = line.split(",")
        if ",info,cpu,isa:" in line:
            out["onednn_isa"] = line.split("isa:", 1)[1].strip()
        elif len(parts) > 6 and parts[2] == "primitive" and parts[3] == "exec" and parts[5] == "matmul":
            out["onednn_bf16_linear"] = parts[6]
    return out


def machine_info(threads: Any, probe_onednn: bool = False) -> Dict[str, Any]:
    """The machine and libraries, for the header and the JSON. ``probe_onednn`` adds oneDNN's ISA
    (a child process importing torch)."""
    import crossrank

    info: Dict[str, Any] = {"threads": threads, "cpu_count": os.cpu_count(),
                            **{k: os.environ.get(k) for k in OPENBLAS_VARS},
                            "crossrank_cpu_info": crossrank.cpu_info(), "crossrank_version": crossrank.__version__,
                            "python": platform.python_version(), "platform": platform.platform()}
    try:
        info["affinity"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        fields: Dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                break  # the first processor is enough
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        info["cpu_model"] = fields.get("model name")
        info["cpu_vendor"] = fields.get("vendor_id")
        info["cpu_family"] = fields.get("cpu family")
        info["cpu_model_number"] = fields.get("model")
        flags = set(fields.get("flags", "").split())
        info["amx_flags"] = sorted(f for f in flags if f.startswith("amx"))
        info["avx512_bf16"] = "avx512_bf16" in flags
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemTotal:"):
                info["mem_total_bytes"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in lscpu.splitlines():
            if line.strip().startswith("Model name:"):
                info["lscpu_model_name"] = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.TimeoutExpired):
        pass
    info["amx_permission"] = _amx_permission() if "amx_tile" in info.get("amx_flags", []) else False
    try:
        info["loadavg_at_start"] = Path("/proc/loadavg").read_text(encoding="ascii").split()[:3]
    except OSError:
        pass
    for mod in ("numpy", "torch", "transformers", "tokenizers", "sentence_transformers"):
        try:
            info[f"{mod}_version"] = __import__(mod).__version__
        except ImportError:
            info[f"{mod}_version"] = None
    if probe_onednn and info.get("torch_version"):
        info.update(_onednn_isa())
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True)
        info["git_commit"] = rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def cpu_line(info: Dict[str, Any]) -> str:
    """The header's CPU line: model name, vendor, family/model, usable CPUs and the load average."""
    return (f"CPU: {info.get('lscpu_model_name') or info.get('cpu_model')} ({info.get('cpu_vendor')}, family "
            f"{info.get('cpu_family')} model {info.get('cpu_model_number')}), {info.get('affinity')} CPUs usable, "
            f"load average {' '.join(info.get('loadavg_at_start', []))}")


def print_machine(info: Dict[str, Any]) -> None:
    """The header every run starts with."""
    amx = info.get("amx_flags") or []
    usable = "usable" if amx and info.get("amx_permission") else ("not granted by the kernel" if amx else "absent")
    print(cpu_line(info))
    print(f"AMX: {' '.join(amx) or '-'} -> tiles {usable}; AVX512_BF16 {'yes' if info.get('avx512_bf16') else 'no'}; "
          f"crossrank kernels {info['crossrank_cpu_info'].get('isa')}")
    if info.get("onednn_isa") or info.get("onednn_bf16_linear"):
        print(f"oneDNN (torch): {info.get('onednn_isa')}; bf16 linear runs {info.get('onednn_bf16_linear')}")
    print(f"Versions: crossrank {info.get('crossrank_version')}, torch {info.get('torch_version')}, transformers "
          f"{info.get('transformers_version')}, sentence-transformers {info.get('sentence_transformers_version')}, "
          f"numpy {info.get('numpy_version')}, Python {info.get('python')}")
    print("OpenBLAS environment: " + ", ".join(f"{k}={info[k] if info[k] is not None else '(unset)'}"
                                               for k in OPENBLAS_VARS), flush=True)


# ---- figures -----------------------------------------------------------------------------------

def summarise(runs: List[Dict[str, Any]], mode: str, n_docs: int, fm: Dict[str, float],
              peaks: Dict[int, Dict[str, Any]]) -> Dict[str, Any]:
    """Adds each successful run's figures (pairs/s, GFLOP/s, %peak, ratios to the peers at the same
    thread count, memory over the loaded model) and returns the best run per (engine, threads),
    the thread scaling and the checks."""
    import numpy as np

    ok = [r for r in runs if "error" not in r]
    lengths = next((r["lengths"] for r in ok if r["engine"].startswith("crossrank")), None)
    if lengths is None and ok:
        lengths = ok[0]["lengths"]
    lengths = lengths or []
    n_tokens = sum(lengths)
    shared_prefix = next((r.get("shared_prefix", 0) for r in ok if r["engine"].startswith("crossrank")), 0)
    # Useful FLOPs count the prompt prefix the pairs share once (what the scores need); the per-pair
    # count (an engine without reuse computes it every time) is kept in the JSON.
    flops = useful_flops(lengths, fm, shared_prefix) if lengths else 0.0
    flops_prefix_per_pair = useful_flops(lengths, fm) if lengths else 0.0
    for r in ok:
        times = r["times_s"]
        if mode == "latency":  # one call per timed run: the median call stands for the engine
            r["p50_ms"] = 1e3 * float(np.percentile(times, 50))
            r["p90_ms"] = 1e3 * float(np.percentile(times, 90))
            r["min_ms"] = 1e3 * min(times)
            r["best_s"] = r["p50_ms"] / 1e3
            busy = [v for v in r["other_cpu"] if v is not None]
            r["other_cpu_best"] = sum(busy) / len(busy) if busy else None
        else:
            r["best_s"] = min(times)
            r["other_cpu_best"] = r["other_cpu"][times.index(r["best_s"])]
        t, peak = r["best_s"], peaks.get(r["threads"]) or {}
        r["pairs_per_s"] = n_docs / t
        r["tokens_per_s"] = n_tokens / t
        r["gflops"] = flops / t / 1e9
        r["gflops_prefix_per_pair"] = flops_prefix_per_pair / t / 1e9
        r["pct_peak"] = 100.0 * r["gflops"] / peak["peak_gflops"] if peak.get("peak_gflops") else None
        r["pct_bf16_peak"] = 100.0 * r["gflops"] / peak["dpbf16_loop_gflops"] if peak.get("dpbf16_loop_gflops") else None
        if r.get("rss_after_warmup") and r.get("peak_rss_scoring") and r.get("peak_reset"):
            r["scoring_rss_over_loaded"] = r["peak_rss_scoring"] - r["rss_after_warmup"]
        if r.get("peak_anon") is not None and r.get("anon_after_load") is not None:
            r["anon_over_loaded"] = r["peak_anon"] - r["anon_after_load"]
            r["anon_within_bound"] = r["anon_over_loaded"] <= MEMORY_BOUND
    best: Dict[Tuple[str, int], Dict[str, Any]] = {}
    for r in ok:
        if r["config"].get("scaling"):
            continue
        cur = best.get((r["engine"], r["threads"]))
        if cur is None or r["best_s"] < cur["best_s"]:
            best[(r["engine"], r["threads"])] = r
    for r in ok:
        for name, key in RATIOS:
            ref = best.get((name, r["threads"]))
            r[key] = r["pairs_per_s"] / ref["pairs_per_s"] if ref else None
    scaling: Dict[str, Dict[str, Any]] = {}
    for r1 in (r for r in ok if r["config"].get("scaling")):
        rn = next((v for (e, _), v in best.items() if e == r1["engine"]), None)
        if rn is not None:
            scaling[r1["engine"]] = {"threads": [1, rn["threads"]], "time_s": [r1["best_s"], rn["best_s"]],
                                     "pairs_per_s": [r1["pairs_per_s"], rn["pairs_per_s"]],
                                     "other_cpu": [r1["other_cpu_best"], rn["other_cpu_best"]],
                                     "speedup": r1["best_s"] / rn["best_s"],
                                     "efficiency": r1["best_s"] / rn["best_s"] / rn["threads"]}
    return {"ok": ok, "best": best, "scaling": scaling, "checks": _checks(ok, best), "lengths": lengths,
            "n_tokens": n_tokens, "shared_prefix": shared_prefix, "flops": flops,
            "flops_prefix_per_pair": flops_prefix_per_pair}


def _max_diff(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, float]:
    import numpy as np

    return {"max_abs_diff_p_yes": float(np.max(np.abs(np.subtract(a["scores"], b["scores"])))),
            "max_abs_diff_log_odds": float(np.max(np.abs(np.subtract(a["raw"], b["raw"]))))}


def _checks(ok: List[Dict[str, Any]], best: Dict[Tuple[str, int], Dict[str, Any]]) -> Dict[str, Any]:
    """Same token ids in every engine; crossrank float32 against the recipe; sentence-transformers
    against the recipe (same dtype, and float32) and crossrank float32. Against the recipe at the
    same batch size (same padding) the difference is the pipeline's alone; across batch sizes it
    also holds the rounding of different matrix shapes (in bf16 one logit step is 0.125 near 20)."""
    checks: Dict[str, Any] = {"same_token_ids": len({r["ids_sha256"] for r in ok}) <= 1}
    main = [r for r in ok if not r["config"].get("scaling")]
    ours = next((r for (e, _), r in best.items() if e == OURS), None)
    for r in ok:
        if ours is not None and r is not ours:
            r["agreement_vs_crossrank_f32"] = _max_diff(r, ours)
    ref_runs = [r for r in main if r["engine"] == REFERENCE]
    if ours is not None and ref_runs:
        per_bs = {f"{r['batch_size']}@{r['threads']}": _max_diff(ours, r) for r in ref_runs}
        checks["crossrank_f32_vs_transformers_f32"] = {
            "max_abs_diff_p_yes": max(v["max_abs_diff_p_yes"] for v in per_bs.values()),
            "max_abs_diff_log_odds": max(v["max_abs_diff_log_odds"] for v in per_bs.values()),
            "per_batch_size_at_threads": per_bs,
        }
    keys = ("max_abs_diff_log_odds", "max_abs_diff_p_yes")
    st_agree: Dict[str, Dict[str, Any]] = {}
    for st_engine in ("st-f32", "st-bf16"):
        st_runs = [r for r in main if r["engine"] == st_engine]
        for ref in dict.fromkeys(["transformers-" + st_engine.split("-")[1], REFERENCE, OURS]) if st_runs else ():
            refs = [r for r in main if r["engine"] == ref]
            if not refs:
                continue
            diffs = [_max_diff(a, b) for a in st_runs for b in refs]
            entry: Dict[str, Any] = {k: max(d[k] for d in diffs) for k in keys}
            same = [_max_diff(a, b) for a in st_runs for b in refs
                    if a["batch_size"] == b["batch_size"] and a["threads"] == b["threads"]]
            if same:
                entry["same_batch_size"] = {k: max(d[k] for d in same) for k in keys}
            st_agree.setdefault(st_engine, {})[ref] = entry
    if st_agree:
        checks["sentence_transformers"] = st_agree
    return checks


# ---- tables ------------------------------------------------------------------------------------

def fmt(v: Optional[float], spec: str) -> str:
    """``v`` formatted, or "-" for a missing value."""
    return "-" if v is None else format(v, spec)


def mib(v: Optional[float]) -> str:
    """Bytes as MiB, or "-"."""
    return "-" if v is None else f"{v / 2**20:.0f}"


def print_table(head: List[str], rows: List[List[str]], left: int = 2) -> None:
    """Columns: the first ``left`` left-aligned, the rest right-aligned. A row shorter than the head
    (a failed run: name, batch, message) ends with its last cell as is."""
    widths = [max([len(h)] + [len(row[i]) for row in rows if len(row) == len(head) or i < len(row) - 1])
              for i, h in enumerate(head)]
    line = "  ".join(h.ljust(w) if i < left else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths)))
    print(line)
    print("-" * len(line))
    for row in rows:
        cells = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        if len(row) < len(head):
            cells[-1] = row[-1]
        print("  ".join(cells))


def cell_line(mode: str, res: Dict[str, Any], n_docs: int) -> str:
    """One completed cell, as printed the moment it ends."""
    if "error" in res:
        return f" FAILED ({res['error']})\n{res['log_tail']}"
    if mode == "latency":
        t = sorted(res["times_s"])
        return f" p50 {1e3 * t[len(t) // 2]:.0f} ms (load {res['load_s']:.1f} s, process {res['process_s']:.0f} s)"
    best = min(res["times_s"])
    extra = ""
    if res.get("peak_anon") is not None and res.get("anon_after_load") is not None and mode in ("long4k", "long8k", "memory"):
        extra = f", +{(res['peak_anon'] - res['anon_after_load']) / 2**20:.0f} MiB anonymous over the loaded model"
    return (f" {best:.1f} s, {n_docs / best:.2f} pairs/s (load {res['load_s']:.1f} s, process "
            f"{res['process_s']:.0f} s{extra})")


def _row(mode: str, r: Dict[str, Any], name: str, bs: str, n_docs: int) -> List[str]:
    tail = [fmt(r[k], ".2f") for _, k in RATIOS] + [fmt(r["other_cpu_best"], ".2f"), f"{r['load_s']:.1f}"]
    if mode == "throughput":
        return [name, bs, fmt(r["pairs_per_s"], ".2f"), fmt(r["tokens_per_s"], ".0f"), fmt(r["gflops"], ".1f"),
                fmt(r["pct_peak"], ".0f"), mib(r["peak_rss"])] + tail
    if mode == "latency":
        return [name, bs, f"{r['p50_ms']:.0f}", f"{r['p90_ms']:.0f}", f"{r['min_ms']:.0f}", fmt(r["tokens_per_s"], ".0f"),
                fmt(r["gflops"], ".1f"), mib(r["peak_rss"])] + tail
    row = [name, bs, fmt(r["tokens_per_s"], ".0f"), f"{r['best_s'] / n_docs:.1f}", fmt(r["gflops"], ".1f"),
           mib(r.get("anon_after_load")), mib(r.get("peak_anon")), mib(r.get("anon_over_loaded")),
           mib(r["peak_rss"]), mib(r.get("rss_after_warmup")), mib(r.get("scoring_rss_over_loaded")),
           mib(r.get("weight_bytes"))]
    if mode == "memory":
        bound = r.get("anon_within_bound")
        return row + ["-" if bound is None else ("ok" if bound else "EXCEEDED"), f"{r['load_s']:.1f}"]
    return row + tail


def print_results(mode: str, runs: List[Dict[str, Any]], summary: Dict[str, Any], threads: Sequence[int],
                  n_docs: int, repeats: int, warmup_calls: int, batch_sizes: Sequence[int]) -> None:
    """The main table, one block per thread count, then the notes and checks."""
    order = {e: i for i, e in enumerate(ENGINES)}
    best, n_tokens, flops = summary["best"], summary["n_tokens"], summary["flops"]
    ratio_head = ["vs HF bf16", "vs HF f32", "vs cr f32", "other CPU", "load s"]
    if mode == "throughput":
        head = ["engine", "batch", "pairs/s", "tokens/s", "GFLOP/s", "%sgemm", "RSS MiB"] + ratio_head
        print(f"\n{n_docs} pairs, {n_tokens} tokens ({n_tokens / max(1, n_docs):.0f}/pair), {flops / 1e12:.2f} TFLOP useful, "
              f"best of {repeats} run(s) after 1 warm-up")
    elif mode == "latency":
        head = ["engine", "batch", "p50 ms", "p90 ms", "min ms", "tokens/s", "GFLOP/s", "RSS MiB"] + ratio_head
        print(f"\n1 pair of {n_tokens} tokens per call, {flops / 1e9:.0f} GFLOP useful, {repeats} timed calls after "
              f"{warmup_calls} warm-up calls; tokens/s and GFLOP/s at the p50")
    else:
        head = ["engine", "batch", "tokens/s", "s/pair", "GFLOP/s", "anon loaded", "anon peak", "+anon MiB",
                "peak RSS", "loaded RSS", "+RSS MiB", "weights MiB"]
        head += ["<= 1 GiB", "load s"] if mode == "memory" else ratio_head
        print(f"\n{n_docs} pair{'s' if n_docs > 1 else ''}, {n_tokens} tokens ({n_tokens / max(1, n_docs):.0f}/pair), "
              f"{flops / 1e12:.2f} TFLOP useful, best of {repeats} run(s) after 1 short warm-up")
    for t in threads:
        rows = []
        for r in sorted((r for r in runs if r["threads"] == t and not r["config"].get("scaling")),
                        key=lambda r: (order[r["engine"]], r["config"].get("batch_size", 0))):
            bs = str(r["config"].get("batch_size", "-")) if r["engine"].startswith(BATCHED) else "32"
            marked = "error" not in r and best.get((r["engine"], t)) is r and r["engine"].startswith(BATCHED) \
                and len(batch_sizes) > 1
            name = r["engine"] + (" *" if marked else "")
            if r["engine"] == "crossrank-auto" and r.get("dtype"):
                name += f" ({r['dtype']})"
            rows.append([name, bs, "failed: " + r["error"]] if "error" in r else _row(mode, r, name, bs, n_docs))
        if rows:
            print(f"\n{t} thread{'s' if t > 1 else ''}:")
            print_table(head, rows)
    notes = []
    if len(batch_sizes) > 1 and any(r["engine"].startswith(BATCHED) for r in runs):
        notes.append("* best transformers / sentence-transformers batch size (the ratios use it).")
    if mode != "memory":
        notes.append("vs = speed ratio (pairs/s" + (", from the p50" if mode == "latency" else "")
                     + ") to that engine's best run at the same thread count.")
    if mode in ("long4k", "long8k", "memory"):
        notes.append("anon = anonymous RSS (RssAnon: heap, workspaces, copied weights; not a mapped checkpoint's "
                     "file pages), sampled every ms: after loading, its peak until the end of the timed runs, and "
                     "their difference (+anon: what scoring adds); peak / loaded RSS = VmHWM of the timed runs / "
                     "VmRSS after the warm-up, +RSS their difference; weights = the model's weight bytes.")
    else:
        notes.append("RSS = peak RSS of the engine's process.")
    if mode != "memory":
        notes.append("other CPU = CPUs busy with other processes during the timed run"
                     + (" (mean over the calls)." if mode == "latency" else "."))
    print(" ".join(notes))


def print_sweep(summary: Dict[str, Any], threads: Sequence[int]) -> None:
    """Thread sweep: pairs/s of every engine at each thread count, its speed-up over its fewest
    threads, and its ratio to transformers bf16 / float32 at the same thread count."""
    order = {e: i for i, e in enumerate(ENGINES)}
    best = summary["best"]
    engines = sorted({e for e, _ in best}, key=order.get)
    print("\nThread sweep (best batch size of each peer at each thread count; ratios within a thread count):")
    tables = [("pairs/s", lambda r: fmt(r["pairs_per_s"], ".2f"))]
    for ref, key in RATIOS[:2]:
        if ref in engines:
            tables.append((f"ratio to {ref}", lambda r, key=key: fmt(r[key], ".2f")))
    for title, value in tables:
        rows = [[e] + [value(best[(e, t)]) if (e, t) in best else "-" for t in threads] for e in engines]
        print(f"\n{title}:")
        print_table(["engine"] + [f"{t} thr" for t in threads], rows, left=1)
    rows = []
    for e in engines:
        have = [t for t in threads if (e, t) in best]
        if len(have) > 1:
            base = best[(e, have[0])]["pairs_per_s"]
            rows.append([e] + [fmt(best[(e, t)]["pairs_per_s"] / base, ".2f") + "x" if (e, t) in best else "-"
                               for t in threads])
    if rows:
        print("\nspeed-up over the fewest threads:")
        print_table(["engine"] + [f"{t} thr" for t in threads], rows, left=1)


def print_phases(runs: List[Dict[str, Any]]) -> None:
    """--profile: each crossrank cell's timed forward passes, milliseconds per call and the share of
    each phase, which says what stops a thread sweep where it bends (a phase whose share grows with
    the threads is the one that does not scale)."""
    profiled = [r for r in runs if r.get("phases_ms", {}).get("total")]
    if not profiled:
        return
    names: List[str] = []
    for r in profiled:
        names += [n for n in r["phases_ms"] if n != "total" and n not in names]
    rows = []
    for r in profiled:
        ph, calls = r["phases_ms"], len(r["times_s"])
        rows.append([r["engine"] + (" (1 thread, scaling)" if r["config"].get("scaling") else ""), str(r["threads"]),
                     f"{ph['total'] / calls:.1f}"] + [f"{100 * ph.get(n, 0.0) / ph['total']:.1f}%" for n in names])
    print("\nWhere the forward passes' time went (CROSSRANK_PROFILE, timed calls):")
    print_table(["engine", "threads", "ms/call"] + names, rows, left=1)


def print_checks(mode: str, summary: Dict[str, Any], peaks: Dict[int, Dict[str, Any]]) -> None:
    """Thread scaling (--scaling), instruction peaks, OpenBLAS kernels, agreement and busy warnings."""
    order = {e: i for i, e in enumerate(ENGINES)}
    best, scaling, checks = summary["best"], summary["scaling"], summary["checks"]
    if scaling:
        print("\nThread scaling (crossrank, the same workload at 1 thread and at --threads):")
        unit = "p50 ms" if mode == "latency" else "pairs/s"
        srows = []
        for e in sorted(scaling, key=order.get):
            v = scaling[e]
            vals = ([f"{1e3 * x:.0f}" for x in v["time_s"]] if mode == "latency" else [f"{x:.2f}" for x in v["pairs_per_s"]])
            srows.append([e] + vals + [f"{v['threads'][1]}", f"{v['speedup']:.2f}x", f"{100 * v['efficiency']:.0f}%",
                                       " / ".join(fmt(x, ".2f") for x in v["other_cpu"])])
        print_table(["engine", f"1 thread {unit}", f"N threads {unit}", "N", "speedup", "per thread", "other CPU"],
                    srows, left=1)
    for t, peak in sorted(peaks.items()):
        if peak.get("dpbf16_loop_gflops"):
            print(f"Instruction peaks at {t} thread(s) (register-only loops): float32 FMA {peak['fma_f32_loop_gflops']:.0f} "
                  f"GFLOP/s, bf16 vdpbf16ps {peak['dpbf16_loop_gflops']:.0f} GFLOP/s.")
            for (e, th), r in sorted(best.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
                if th == t and e.startswith("crossrank-bf16") and r.get("pct_bf16_peak") is not None:
                    print(f"  {e}: {r['gflops']:.0f} useful GFLOP/s = {r['pct_bf16_peak']:.0f}% of the bf16 peak "
                          f"(the {summary['shared_prefix']}-token shared prefix counted once; "
                          f"{r['gflops_prefix_per_pair']:.0f} GFLOP/s counting it for every pair)")
        print(f"%sgemm at {t} thread(s): of the best float32 GEMM measured here (2048^3), {peak['peak_gflops']:.1f} "
              f"GFLOP/s (numpy {peak['numpy_sgemm_gflops']:.1f}, torch {peak.get('torch_sgemm_gflops', float('nan')):.1f}).")
    print(f"Token ids identical across engines: {'yes' if checks['same_token_ids'] else 'NO'}")
    for (e, _), r in best.items():
        if e.startswith("crossrank-f32-openblas"):
            env_desc = ", ".join(f"{k}={v}" for k, v in r["openblas_env"].items() if v is not None) or "both unset"
            print(f"{e}: OpenBLAS kernels {r.get('openblas_core') or 'unknown'} ({env_desc})")
    agree = checks.get("crossrank_f32_vs_transformers_f32")
    if agree:
        print(f"crossrank f32 vs transformers f32 (every batch size): max |dP(yes)| = "
              f"{agree['max_abs_diff_p_yes']:.2e}, max |d log-odds| = {agree['max_abs_diff_log_odds']:.2e}")
    for st_engine, refs in checks.get("sentence_transformers", {}).items():
        parts = []
        for ref, v in refs.items():
            same = v.get("same_batch_size")
            parts.append(f"{ref}: max |d| = {v['max_abs_diff_log_odds']:.2e}"
                         + (f" (same batch size: {same['max_abs_diff_log_odds']:.2e})" if same else ""))
        print(f"{st_engine} raw logit(yes) - logit(no) vs " + "; ".join(parts))
    seen = set()
    for (e, _), r in sorted(best.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        a = r.get("agreement_vs_crossrank_f32")
        if a and e not in seen and e not in (REFERENCE, OURS) and not e.startswith("st-"):
            seen.add(e)
            print(f"{e} vs crossrank f32: max |dP(yes)| = {a['max_abs_diff_p_yes']:.2e}, "
                  f"max |d log-odds| = {a['max_abs_diff_log_odds']:.2e}")
    ours = next((r for (e, _), r in best.items() if e == OURS), None)
    if ours is not None:
        print(f"(random weights: log-odds range {min(ours['raw']):.2f} .. {max(ours['raw']):.2f}; "
              f"scores carry no relevance information)")
    busy = [r["other_cpu_best"] for r in summary["ok"] if r.get("other_cpu_best") is not None]
    if busy and max(busy) > 0.25:
        print(f"WARNING: other processes used up to {max(busy):.2f} CPUs during the timed runs; "
              f"the numbers are pessimistic and the ratios are noisy.")


def best_record(summary: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The JSON's "best": per "engine@threads", the figures of its best run."""
    keys = ("pairs_per_s", "tokens_per_s", "gflops", "gflops_prefix_per_pair", "pct_peak", "pct_bf16_peak", "p50_ms",
            "p90_ms", "min_ms", "peak_rss", "rss_after_load", "rss_after_warmup", "peak_rss_scoring",
            "scoring_rss_over_loaded", "anon_after_load", "anon_after_warmup", "peak_anon", "anon_over_loaded",
            "anon_within_bound", "weight_bytes", "vs_transformers_bf16", "vs_transformers_f32", "vs_crossrank_f32",
            "batch_size", "best_s", "threads", "dtype")
    return {f"{e}@{t}": {k: r.get(k) for k in keys} for (e, t), r in summary["best"].items()}


def write_record(path: Path, record: Dict[str, Any]) -> None:
    """Writes the run's JSON record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2), encoding="utf-8")
