#!/usr/bin/env python
"""Side-by-side reranking benchmark: crossrank, the official Qwen3-Reranker recipe in transformers,
and sentence-transformers' CrossEncoder, on the same pairs in the same run.

    python benchmarks/bench_rerank.py --quick          # smoke run: 8 documents, one HF batch size
    python benchmarks/bench_rerank.py                  # 1 query x 64 documents, every engine
    python benchmarks/bench_rerank.py --threads 1,2,4,8,16 --docs 16 \\
        --engines crossrank-bf16,crossrank-int8,crossrank-f32,transformers-bf16,transformers-f32,st-bf16
    python benchmarks/bench_rerank.py --model 8B --mode memory      # 8,192-token pair: anonymous RSS over load
    python benchmarks/bench_rerank.py --mode latency   # 1 query x 1 document of ~300 tokens, p50/p90 per call
    python benchmarks/bench_rerank.py --mode long8k --engines crossrank-bf16,transformers-bf16,st-bf16
    python benchmarks/bench_rerank.py --scaling --engines crossrank-bf16,crossrank-f32   # 1 thread vs all

The model is a checkpoint of a real Qwen3-Reranker shape (--model 0.6B, 4B or 8B: the configs in
assets/model-configs) with RANDOM weights (speed does not depend on the weight values; the scores
say nothing about relevance), written once by crossrank's streaming writer into the cache
(--cache-dir, else $XDG_CACHE_HOME/crossrank-bench, else benchmarks/.cache). --prepare only builds it.

Modes (--mode):
  throughput   (default) one query and --docs (64) documents of 150-400 tokens; transformers and
               sentence-transformers at each of --hf-batch-sizes (1,8,16), the best reported.
  latency      one query and one document of ~300 tokens, scored by one call (batch 1) --repeats (20)
               times after 2 warm-up calls; p50/p90/min ms per call.
  long4k       one query and --docs (2) documents, each as long as fits a prompt of 4,096 / 8,192
  long8k       tokens (8,192 is the card's max_length: no engine truncates); peers at batch 1; tokens/s
               and memory (anonymous and total RSS after loading, at the peak, and their difference).
  memory       one 8,192-token pair (default engine crossrank-auto): the peak anonymous RSS while
               scoring minus the anonymous RSS after loading, against the bound of 1 GiB; the exit
               status is 1 when an engine exceeds it.

--threads takes one count or a list (a thread sweep): every selected engine runs at each count
(torch engines through torch.set_num_threads in their child process), each cell is printed as it
completes, then a table per thread count with the ratios to transformers bf16 / float32 and
crossrank float32 at that count, and the sweep's pairs/s, ratio and speed-up matrices.
--scaling runs every selected crossrank engine again at 1 thread right after its run.
--profile runs the crossrank engines with CROSSRANK_PROFILE=1 and prints each one's time per call
by phase (projections, attention, row-wise steps) over its timed calls: the phase whose share grows
along a thread sweep is what bends the curve.

Engines (--engines; benchmarks/README.md says what each runs): crossrank-auto, crossrank-int8,
crossrank-bf16, crossrank-bf16-noreuse, crossrank-f32, crossrank-f32-openblas,
crossrank-f32-openblas-unset, transformers-f32, transformers-bf16 (the card's recipe in eager
PyTorch, best of --hf-batch-sizes), st-f32, st-bf16 (sentence-transformers on a package the
benchmark writes). Each configuration runs in its own process: it loads the model, warms up,
resets the peak-RSS counter, then times --repeats runs end to end from strings.

Every run starts with the machine: CPU model, family/model, AMX flags and whether Linux grants
the tiles, torch's oneDNN ISA and the implementation of a bf16 linear, library versions. Results
go to benchmarks/results/bench_rerank[-MODE][-MODEL]-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rerank_engines import (ENGINES, child_main, engine_configs, run_child, write_st_package,  # noqa: E402
                            write_workload)
from rerank_report import (best_record, cell_line, machine_info, print_checks, print_machine,  # noqa: E402
                           print_phases, print_results, print_sweep, summarise, write_record)
from rerank_workload import (CHECKPOINT_SEED, LATENCY_DOC_TOKENS, LONG_PROMPT_TOKENS, MODELS, REPO,  # noqa: E402
                             RESULTS_DIR, WORKLOAD_SEED, cache_dir, ensure_checkpoint, flop_model,
                             make_long_workload, make_workload)

MODES = ("throughput", "latency", "long4k", "long8k", "memory")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line, checked and with the mode's defaults filled in."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=MODES, default="throughput",
                   help="throughput (default), latency, long4k, long8k, memory (see above)")
    p.add_argument("--model", choices=list(MODELS), default="0.6B", help="the Qwen3-Reranker shape (default 0.6B)")
    p.add_argument("--cache-dir", help="where built checkpoints live (default: $XDG_CACHE_HOME/crossrank-bench, "
                                       "else benchmarks/.cache)")
    p.add_argument("--prepare", action="store_true", help="build the model's checkpoint (if needed) and exit")
    p.add_argument("--docs", type=int, default=None,
                   help="documents scored against the query (default 64; long modes 2; latency and memory: 1)")
    p.add_argument("--threads", default=None,
                   help="compute threads for every engine: a count or a comma list for a sweep, e.g. 1,2,4,8,16 "
                        "(default: all CPUs)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per engine after the warm-up (default 1; latency: timed calls, default 20)")
    p.add_argument("--hf-batch-sizes", default="1,8,16",
                   help="transformers / sentence-transformers batch sizes to try in throughput mode (default "
                        "1,8,16; the other modes run them at batch 1)")
    p.add_argument("--engines", default=None,
                   help=f"comma list, a subset of {','.join(ENGINES)} (default: all but crossrank-auto; "
                        "memory mode: crossrank-auto)")
    p.add_argument("--warmup-docs", type=int, default=2, help="documents in the warm-up call (default 2)")
    p.add_argument("--scaling", action="store_true",
                   help="also run the crossrank engines at 1 thread and print the speedup of --threads over 1")
    p.add_argument("--hf-full-logits", action="store_true",
                   help="run the model card's forward verbatim (LM head over every position)")
    p.add_argument("--no-peak", action="store_true", help="skip the float32 GEMM peak measurement")
    p.add_argument("--no-onednn-probe", action="store_true", help="skip asking oneDNN which ISA it runs")
    p.add_argument("--profile", action="store_true",
                   help="run the crossrank engines with CROSSRANK_PROFILE=1 and print where their timed calls' "
                        "time went (projections, attention, row-wise steps; the timers cost a little speed)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: throughput 8 documents and one batch size; latency 5 calls; long modes 1 document")
    args = p.parse_args(argv)
    mode = args.mode
    if mode in ("latency", "memory") and args.docs not in (None, 1):
        p.error(f"--mode {mode} scores 1 query x 1 document; --docs does not apply")
    if args.quick:
        if mode == "throughput":
            args.docs, args.hf_batch_sizes = 8, "8"
        elif mode == "latency":
            args.repeats = args.repeats or 5
        else:
            args.docs = args.docs or 1
    args.n_docs = args.docs or {"throughput": 64, "latency": 1, "memory": 1}.get(mode, 2)
    args.repeats = args.repeats or (20 if mode == "latency" else 1)
    try:
        args.thread_list = ([int(t) for t in args.threads.split(",") if t.strip()] if args.threads
                            else [len(os.sched_getaffinity(0))])
    except ValueError:
        p.error(f"--threads takes a count or a comma list of counts, got {args.threads!r}")
    default_engines = ["crossrank-auto"] if mode == "memory" else [e for e in ENGINES if e != "crossrank-auto"]
    args.engine_list = [e.strip() for e in args.engines.split(",") if e.strip()] if args.engines else default_engines
    unknown = [e for e in args.engine_list if e not in ENGINES]
    if unknown:
        p.error(f"unknown engine(s) {unknown}; choose from {list(ENGINES)}")
    try:
        batch_sizes = sorted({int(b) for b in args.hf_batch_sizes.split(",") if b.strip()})
    except ValueError:
        p.error(f"--hf-batch-sizes takes a comma list of sizes, got {args.hf_batch_sizes!r}")
    if args.n_docs < 1 or args.repeats < 1 or not args.thread_list or min(args.thread_list) < 1 \
            or not batch_sizes or min(batch_sizes) < 1:
        p.error("--docs, --repeats, --threads and the batch sizes must be positive")
    if args.scaling and args.thread_list == [1]:
        p.error("--scaling compares --threads with 1 thread; --threads is 1")
    # throughput: a batch larger than the workload is one batch; otherwise one pair per forward, as a user would
    args.batch_sizes = sorted({min(b, args.n_docs) for b in batch_sizes}) if mode == "throughput" else [1]
    return args


def plan(args: argparse.Namespace, base: Dict[str, Any], st_package: Optional[Path]) -> List[Dict[str, Any]]:
    """Every cell of the run, in order: for each thread count, each engine (at each batch size)."""
    configs: List[Dict[str, Any]] = []
    for t in args.thread_list:
        for engine in args.engine_list:
            for spec in engine_configs(engine, dict(base, threads=t), args.batch_sizes, st_package):
                configs.append(spec)
                if args.scaling and engine.startswith("crossrank") and t != 1:
                    configs.append(dict(spec, threads=1, scaling=True))  # right after it: same machine load
    return configs


def workload(args: argparse.Namespace):
    """(query, documents, document token counts, warm-up documents, warm-up calls) of the mode."""
    if args.mode == "throughput":
        query, docs, doc_tokens = make_workload(args.n_docs)
        return query, docs, doc_tokens, docs[: max(1, min(args.warmup_docs, len(docs)))], 1
    if args.mode == "latency":
        query, docs, doc_tokens = make_workload(1, doc_tokens=LATENCY_DOC_TOKENS)
        return query, docs, doc_tokens, docs, 2
    query, docs, doc_tokens = make_long_workload(args.n_docs, LONG_PROMPT_TOKENS[args.mode])
    # a short document: warms threads and allocators without a long forward before the timing
    return query, docs, doc_tokens, make_workload(1)[1], 1


def base_spec(args: argparse.Namespace, checkpoint: Path, workload_file: Path, warmup_calls: int,
              warmup_docs: int) -> Dict[str, Any]:
    """What every cell's child spec shares: the checkpoint, the workload file and the timing settings."""
    return {"checkpoint": str(checkpoint), "workload": str(workload_file), "mode": args.mode,
            "repeats": args.repeats, "warmup_calls": warmup_calls, "warmup_docs": warmup_docs,
            "hf_full_logits": args.hf_full_logits, "profile": args.profile,
            # anonymous-RSS sampling: every ms where memory is the point, else rarely (it costs CPU)
            "anon_interval_s": 0.001 if args.mode in ("long4k", "long8k", "memory") else 0.05}


def cell_label(spec: Dict[str, Any]) -> str:
    """A cell as the progress line names it: engine, batch size, threads."""
    return spec["engine"] + (f" (batch {spec['batch_size']})" if "batch_size" in spec else "") + \
        f" at {spec['threads']} thread{'s' if spec['threads'] > 1 else ''}" + \
        (" (scaling)" if spec.get("scaling") else "")


def run_cell(spec: Dict[str, Any], tmp: Path, tag: str) -> Dict[str, Any]:
    """Runs one cell in its child process; the result carries its engine, threads and config (the spec
    without its paths), as summarise() and the record expect."""
    res = run_child(spec, tmp, tag)
    res["engine"] = spec["engine"]
    res["threads"] = spec["threads"]
    res["config"] = {key: v for key, v in spec.items() if key not in ("workload", "checkpoint", "st_package")}
    return res


def describe(args: argparse.Namespace, docs: List[str], doc_tokens: List[int]) -> str:
    """One line saying what the run scores."""
    if args.mode == "latency":
        return f"1 query x 1 document of {doc_tokens[0]} tokens, {args.repeats} timed calls per engine (batch 1)"
    span = str(doc_tokens[0]) if len(set(doc_tokens)) == 1 else f"{min(doc_tokens)}-{max(doc_tokens)}"
    desc = (f"1 query x {len(docs)} document{'s' if len(docs) > 1 else ''}, {span} document tokens"
            + (f" (mean {sum(doc_tokens) / len(doc_tokens):.0f})" if len(docs) > 1 else ""))
    if args.mode != "throughput":
        desc += f", prompts of up to {LONG_PROMPT_TOKENS[args.mode]} tokens, peers at batch 1"
    return desc


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the benchmark (or, with --child, one engine's cell); 1 when a cell failed, the token
    ids differ between engines or, in memory mode, an engine exceeds the bound."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "--child":
        child_main(argv[1], argv[2])
        return 0
    args = parse_args(argv)
    mode, threads = args.mode, args.thread_list
    started = _dt.datetime.now()
    info = machine_info(threads if len(threads) > 1 else threads[0], probe_onednn=not args.no_onednn_probe)
    print_machine(info)
    checkpoint = ensure_checkpoint(args.model, cache_dir(args.cache_dir))
    if args.prepare:
        print(f"checkpoint ready: {checkpoint}")
        return 0
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    fm = flop_model(config)
    query, docs, doc_tokens, warmup_docs, warmup_calls = workload(args)
    print(f"Mode {mode}. Workload: {describe(args, docs, doc_tokens)}; model: {MODELS[args.model]} shape, RANDOM "
          f"weights; threads {','.join(map(str, threads))}", flush=True)

    runs: List[Dict[str, Any]] = []
    peaks: Dict[int, Dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_rerank-") as tmpdir:
        tmp = Path(tmpdir)
        workload_file = write_workload(tmp, query, docs, warmup_docs)
        st_package, st_files = None, None
        if any(e.startswith("st-") for e in args.engine_list):
            st_package = tmp / "st-package"
            st_files = write_st_package(checkpoint, st_package)
        base = base_spec(args, checkpoint, workload_file, warmup_calls, len(warmup_docs))
        if not args.no_peak and mode != "memory":
            for t in threads:
                print(f"measuring the float32 GEMM peak at {t} thread(s) ...", end="", flush=True)
                peak = run_child({"engine": "peak", "threads": t}, tmp, f"peak{t}")
                if "error" in peak:
                    print(f" failed: {peak['error']}", flush=True)
                else:
                    peaks[t] = peak
                    print(f" {peak['peak_gflops']:.0f} GFLOP/s", flush=True)
        configs = plan(args, base, st_package)
        for k, spec in enumerate(configs):
            print(f"[{k + 1}/{len(configs)}] {cell_label(spec)} ...", end="", flush=True)
            res = run_cell(spec, tmp, f"run{k}")
            print(cell_line(mode, res, len(docs)), flush=True)
            runs.append(res)

    summary = summarise(runs, mode, len(docs), fm, peaks)
    print_results(mode, runs, summary, threads, len(docs), args.repeats, warmup_calls, args.batch_sizes)
    if len(threads) > 1:
        print_sweep(summary, threads)
    print_phases(runs)
    print_checks(mode, summary, peaks)

    suffix = ("" if mode == "throughput" else f"-{mode}") + ("" if args.model == "0.6B" else f"-{args.model}")
    out = RESULTS_DIR / f"bench_rerank{suffix}-{started.strftime('%Y%m%d-%H%M%S')}.json"
    record = {
        "started": started.isoformat(timespec="seconds"), "command": [sys.executable, *sys.argv], "mode": mode,
        "args": {k: v for k, v in vars(args).items()}, "machine": info,
        "model": {"shape": MODELS[args.model], "weights": "random", "seed": CHECKPOINT_SEED,
                  "checkpoint": str(checkpoint), "config": config, "flops": fm},
        "st_package_files": st_files,
        "workload": {"mode": mode, "query": query, "documents": len(docs), "document_tokens": doc_tokens,
                     "prompt_tokens": summary["lengths"], "total_tokens": summary["n_tokens"],
                     "useful_flop": summary["flops"], "shared_prefix_tokens": summary["shared_prefix"],
                     "useful_flop_prefix_per_pair": summary["flops_prefix_per_pair"], "seed": WORKLOAD_SEED,
                     "repeats": args.repeats, "warmup_calls": warmup_calls, "warmup_documents": len(warmup_docs),
                     "batch_sizes": args.batch_sizes, "threads": threads,
                     "prompt_token_budget": LONG_PROMPT_TOKENS.get(mode)},
        "peaks": {str(t): v for t, v in peaks.items()}, "checks": summary["checks"],
        "scaling": summary["scaling"] or None, "best": best_record(summary), "runs": runs,
    }
    write_record(out, record)
    print(f"\nwrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    failed = len(runs) - len(summary["ok"])
    over = [r for r in summary["ok"] if mode == "memory" and r.get("anon_within_bound") is False]
    return 1 if failed or over or not summary["checks"]["same_token_ids"] else 0


if __name__ == "__main__":
    sys.exit(main())
