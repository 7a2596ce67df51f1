#!/usr/bin/env python
"""A/B of crossrank builds or settings on a noisy machine: the variants run alternately, round by
round, on the same pairs, and each variant is compared with the first (the baseline) pair by pair.

    python benchmarks/bench_ab.py --variant base=rev:HEAD~1 --variant new=rev:HEAD --threads 16 --docs 16
    python benchmarks/bench_ab.py --variant rb1024=env:CROSSRANK_ROW_BLOCK=1024 \\
        --variant rb512=env:CROSSRANK_ROW_BLOCK=512 --threads 16 --engines crossrank-auto,crossrank-int8

On a shared host the same build moves by up to 20% from one run to the next; the ratio of two runs
made next to each other moves far less. So every round runs each variant once, round k in the
reverse order of round k-1 (A B, B A, A B, ...: drift over the script cancels), and the report
gives, per engine, each variant's pairs/s per round and its ratio to the baseline in the same round:
the median, min and max of those ratios and in how many rounds it was faster.

Variants (--variant NAME=SPEC, two or more; the first is the baseline). SPEC is one or more of
these parts joined by "+":
  rev:REV        a git revision of this repository (HEAD~1, a branch, a commit), exported with
                 git archive into a temporary directory and built there
  tree:          the working tree as it is, uncommitted and untracked (not ignored) files included,
                 copied into a temporary directory and built there
  env:K=V[,K=V]  environment variables of the variant's benchmark processes (at run time, not at
                 build time; values cannot contain commas)
e.g. rev:HEAD~1+env:CROSSRANK_ROW_BLOCK=512. A SPEC without rev: or tree: runs the working tree.
Every source is built with `python setup.py build_ext --inplace -q` by this interpreter (no
network, no build isolation); identical sources are built once. Everything temporary lives in one
temporary directory, removed at the end.

The workload, the engines and the timing are bench_rerank.py's throughput mode, always from this
checkout (every variant scores the same pairs): each cell runs in a child process of the current
benchmark script, with PYTHONPATH at the variant's build and the variant's environment.
--check-scores also compares each variant's raw scores (logit(yes) - logit(no)) with the baseline's:
bitwise equal, or the largest difference. Results go to benchmarks/results/bench_ab-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_rerank  # noqa: E402
from rerank_engines import ENGINES, write_workload  # noqa: E402
from rerank_report import (cell_line, cpu_line, fmt, machine_info, print_machine, print_table,  # noqa: E402
                           summarise, write_record)
from rerank_workload import MODELS, REPO, RESULTS_DIR, cache_dir, ensure_checkpoint, flop_model  # noqa: E402

_PART = re.compile(r"\+(?=(?:rev|tree|env):)")  # "+" only where a new part starts: revisions may hold "+"
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
LOG_TAIL_LINES = 30


class ABError(Exception):
    """A user-facing error: bad input, an unknown revision, a build that fails."""


@dataclass
class Variant:
    """One side of the comparison: a source (a revision, or the working tree when ``rev`` is None)
    and the environment its benchmark processes run with."""
    name: str
    spec: str
    rev: Optional[str] = None
    env: Dict[str, str] = field(default_factory=dict)
    commit: Optional[str] = None  # the revision resolved, once checked
    source_digest: Optional[str] = None
    python_dir: Optional[Path] = None  # the built package's directory (PYTHONPATH)

    @property
    def source(self) -> str:
        """The source as the report names it."""
        if self.rev is None:
            return "tree:"
        return f"rev:{self.rev}" + (f" = {self.commit[:12]}" if self.commit else "")


# ---- input -------------------------------------------------------------------------------------

def parse_spec(spec: str) -> Tuple[Optional[str], Dict[str, str]]:
    """``rev:REV``, ``tree:`` and ``env:K=V[,K=V]`` parts joined by "+" -> (revision or None for the
    working tree, environment). Raises ValueError on bad syntax."""
    if not spec.strip():
        raise ValueError("empty SPEC")
    rev: Optional[str] = None
    source_given = False
    env: Dict[str, str] = {}
    for part in _PART.split(spec):
        kind, colon, value = part.partition(":")
        if not colon or kind not in ("rev", "tree", "env"):
            raise ValueError(f"{part!r} is not rev:REV, tree: or env:K=V[,K=V]")
        if kind in ("rev", "tree"):
            if source_given:
                raise ValueError("one source only: rev:REV or tree:")
            source_given = True
            if kind == "rev":
                if not value.strip():
                    raise ValueError("rev: needs a revision, e.g. rev:HEAD~1")
                rev = value.strip()
            elif value:
                raise ValueError(f"tree: takes nothing after the colon, got {value!r}")
            continue
        if env:
            raise ValueError("one env: part only; separate its variables with commas")
        for item in value.split(","):
            key, eq, val = item.partition("=")
            if not eq or not _ENV_KEY.match(key):
                raise ValueError(f"env: takes KEY=VALUE pairs separated by commas, got {item!r}")
            if key == "PYTHONPATH":
                raise ValueError("PYTHONPATH is the variant's build; it cannot be set")
            if key in env:
                raise ValueError(f"{key} is set twice")
            env[key] = val
    return rev, env


def parse_variant(text: str) -> Variant:
    """``NAME=SPEC`` -> Variant. Raises ValueError on bad syntax."""
    name, eq, spec = text.partition("=")
    if not eq or not _NAME.match(name):
        raise ValueError(f"--variant takes NAME=SPEC with a NAME of letters, digits, '_', '.', '-'; got {text!r}")
    try:
        rev, env = parse_spec(spec)
    except ValueError as e:
        raise ValueError(f"--variant {text!r}: {e}") from None
    return Variant(name=name, spec=spec, rev=rev, env=env)


def parse_args(argv: Sequence[str]) -> Tuple[argparse.Namespace, argparse.Namespace]:
    """The command line and, from it, bench_rerank's own (throughput mode) arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", action="append", default=[], metavar="NAME=SPEC",
                   help="a variant (two or more; the first is the baseline): SPEC is rev:REV, tree: and/or "
                        "env:K=V[,K=V], joined by '+'")
    p.add_argument("--engines", default="crossrank-auto",
                   help="comma list of crossrank engines of bench_rerank.py (default crossrank-auto)")
    p.add_argument("--threads", type=int, default=None, help="compute threads, one count (default: all CPUs)")
    p.add_argument("--docs", type=int, default=None, help="documents scored against the query (default 64)")
    p.add_argument("--model", choices=list(MODELS), default="0.6B", help="the Qwen3-Reranker shape (default 0.6B)")
    p.add_argument("--cache-dir", help="where built checkpoints live (as bench_rerank.py)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per cell, the fastest counts (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; each runs every variant once (default 3)")
    p.add_argument("--check-scores", action="store_true",
                   help="compare each variant's raw scores with the baseline's (bitwise, or the largest difference)")
    args = p.parse_args(argv)
    try:
        args.variants = [parse_variant(v) for v in args.variant]
    except ValueError as e:
        p.error(str(e))
    if len(args.variants) < 2:
        p.error("give two or more --variant NAME=SPEC (the first is the baseline)")
    names = [v.name for v in args.variants]
    if len(set(names)) < len(names):
        p.error(f"variant names must differ: {names}")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = [e for e in engines if e not in ENGINES or not e.startswith("crossrank")]
    if bad or not engines:
        p.error(f"--engines: choose crossrank engines from {[e for e in ENGINES if e.startswith('crossrank')]}, "
                f"got {bad or engines}")
    if args.threads is None:
        args.threads = len(os.sched_getaffinity(0))
    for opt in ("threads", "docs", "repeats", "rounds"):
        if getattr(args, opt) is not None and getattr(args, opt) < 1:
            p.error(f"--{opt} must be positive")
    rargv = ["--engines", ",".join(engines), "--threads", str(args.threads), "--model", args.model]
    for opt in ("docs", "repeats", "cache_dir"):
        if getattr(args, opt) is not None:
            rargv += ["--" + opt.replace("_", "-"), str(getattr(args, opt))]
    return args, bench_rerank.parse_args(rargv)


def round_orders(n_variants: int, rounds: int) -> List[List[int]]:
    """The variants' order in each round: round k reverses round k-1 (ABBA), so a drift of the
    machine over the script weighs on every variant alike."""
    orders: List[List[int]] = []
    for k in range(rounds):
        order = list(range(n_variants))
        orders.append(order if k % 2 == 0 else order[::-1])
    return orders


# ---- sources and builds ------------------------------------------------------------------------

def _git(*args: str) -> str:
    proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ABError(f"git {' '.join(args)}: {proc.stderr.strip() or f'exit code {proc.returncode}'}")
    return proc.stdout


def resolve_rev(rev: str) -> str:
    """The commit a revision names; ABError when the repository has none."""
    proc = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", "--end-of-options",
                           rev + "^{commit}"], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise ABError(f"unknown revision {rev!r} (git rev-parse found no commit)")
    return proc.stdout.strip()


def export_commit(commit: str, dest: Path) -> None:
    """The commit's files (git archive) into ``dest``; nothing is added to the repository."""
    dest.mkdir(parents=True)
    with tempfile.TemporaryFile() as err:
        archive = subprocess.Popen(["git", "-C", str(REPO), "archive", "--format=tar", commit],
                                   stdout=subprocess.PIPE, stderr=err)
        tar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, capture_output=True, text=True)
        archive.stdout.close()
        code = archive.wait()
        err.seek(0)
        if code != 0 or tar.returncode != 0:
            raise ABError(f"exporting {commit[:12]} failed: {err.read().decode(errors='replace').strip()} "
                          f"{tar.stderr.strip()}")


def export_tree(dest: Path) -> None:
    """The working tree's files as they are (tracked, and untracked but not ignored) into ``dest``."""
    listed = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for rel in sorted({r for r in listed if r}):
        src, dst = REPO / rel, dest / rel
        if not (src.is_file() or src.is_symlink()):
            continue  # deleted in the working tree, or a submodule's directory
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)


def tree_digest(root: Path) -> str:
    """A digest of a directory's files: paths, symlink targets, executable bits and contents."""
    h = hashlib.sha256()

    def walk(d: Path) -> None:
        for entry in sorted(os.scandir(d), key=lambda e: e.name):
            rel = os.path.relpath(entry.path, root).encode()
            if entry.is_symlink():
                h.update(b"L" + rel + b"\0" + os.readlink(entry.path).encode() + b"\0")
            elif entry.is_dir():
                walk(Path(entry.path))
            else:
                data = Path(entry.path).read_bytes()
                x = b"x" if os.access(entry.path, os.X_OK) else b"-"
                h.update(b"F" + x + rel + b"\0" + str(len(data)).encode() + b"\0" + data)

    walk(root)
    return h.hexdigest()


def build(src: Path, name: str) -> None:
    """``python setup.py build_ext --inplace -q`` in ``src`` by this interpreter; ABError with the
    log's tail when it fails."""
    log = src / "build-ab.log"
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=src,
                              stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:])
        raise ABError(f"building {name} failed (exit code {proc.returncode}); the log's last lines:\n{tail}")


def pythonpath(python_dir: Path) -> str:
    """PYTHONPATH with the variant's package first (so it wins over any other crossrank)."""
    rest = os.environ.get("PYTHONPATH", "")
    return str(python_dir) + (os.pathsep + rest if rest else "")


def check_import(python_dir: Path, name: str) -> None:
    """ABError unless a child with the variant's PYTHONPATH imports crossrank from its build."""
    proc = subprocess.run([sys.executable, "-c", "import crossrank, sys; sys.stdout.write(crossrank.__file__)"],
                          env=dict(os.environ, PYTHONPATH=pythonpath(python_dir)), cwd=python_dir.parent.parent,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-LOG_TAIL_LINES:])
        raise ABError(f"the build of {name} does not import:\n{tail}")
    if not Path(proc.stdout).resolve().is_relative_to(python_dir.resolve()):
        raise ABError(f"{name}: crossrank imports from {proc.stdout}, not from its build in {python_dir}")


def prepare_builds(variants: Sequence[Variant], tmp: Path) -> None:
    """Exports and builds every variant's source under ``tmp`` (each distinct source once) and sets
    its ``source_digest`` and ``python_dir``."""
    built: Dict[str, Tuple[Path, str]] = {}  # source digest -> (its directory, the first variant of it)
    tree_digest_: Optional[str] = None  # the working tree is copied once, whatever the variants using it
    for k, v in enumerate(variants):
        label = f"{v.name} ({v.source}{'' if not v.env else ', ' + ','.join(f'{a}={b}' for a, b in v.env.items())})"
        if v.rev is None and tree_digest_ is not None:
            v.source_digest = tree_digest_
        else:
            src = tmp / f"src{k}"
            if v.rev:
                export_commit(v.commit or v.rev, src)
            else:
                export_tree(src)
            v.source_digest = tree_digest(src)  # before the build writes into it
            if v.rev is None:
                tree_digest_ = v.source_digest
            if v.source_digest in built:
                shutil.rmtree(src)
        if v.source_digest in built:
            print(f"{label}: the same source as {built[v.source_digest][1]}, built once", flush=True)
        else:
            print(f"{label}: building ...", end="", flush=True)
            t0 = time.perf_counter()
            build(src, v.name)
            check_import(src / "python", v.name)
            print(f" {time.perf_counter() - t0:.0f} s", flush=True)
            built[v.source_digest] = (src, v.name)
        v.python_dir = built[v.source_digest][0] / "python"


# ---- figures -----------------------------------------------------------------------------------

def paired_ratios(base: Sequence[Optional[float]], other: Sequence[Optional[float]]) -> Dict[str, Any]:
    """Round by round, ``other / base`` (pairs/s: above 1 is faster; None where either run failed),
    and over the rounds with both: their median, min, max and how many are above 1."""
    ratios = [o / b if b and o is not None else None for b, o in zip(base, other)]
    valid = [r for r in ratios if r is not None]
    return {"ratios": ratios, "n": len(valid), "faster": sum(r > 1.0 for r in valid),
            "median": statistics.median(valid) if valid else None,
            "min": min(valid) if valid else None, "max": max(valid) if valid else None}


def verdict(engine: str, threads: int, name: str, base: str, s: Dict[str, Any]) -> str:
    """One comparison in one line, numbers only."""
    if not s["n"]:
        return f"{engine} at {threads} threads, {name} / {base}: no round with both runs"
    return (f"{engine} at {threads} threads, {name} / {base}: median {s['median']:.3f}x (min {s['min']:.3f}x, "
            f"max {s['max']:.3f}x), faster in {s['faster']} of {s['n']} rounds")


def compare_scores(reference: Sequence[float], runs: Sequence[Sequence[float]]) -> Dict[str, Any]:
    """Raw scores of several runs against a reference: bitwise equal (every run), else the largest
    absolute difference (None when a run has another number of scores)."""
    ref = struct.pack(f"<{len(reference)}d", *reference)
    equal, diff = True, 0.0
    for raw in runs:
        if len(raw) != len(reference):
            return {"bitwise_equal": False, "max_abs_diff": None, "runs": len(runs)}
        equal = equal and struct.pack(f"<{len(raw)}d", *raw) == ref
        diff = max([diff] + [abs(a - b) for a, b in zip(raw, reference)])
    return {"bitwise_equal": equal, "max_abs_diff": diff, "runs": len(runs)}


def results_by_engine(runs: Sequence[Dict[str, Any]], variants: Sequence[Variant], engines: Sequence[str],
                      rounds: int, check_scores: bool) -> Dict[str, Dict[str, Any]]:
    """Per engine: each variant's pairs/s per round (None for a failed run), each variant's paired
    ratios to the baseline and, with ``check_scores``, its raw scores against the baseline's first."""
    out: Dict[str, Dict[str, Any]] = {}
    names = [v.name for v in variants]
    for engine in engines:
        cell = {(r["variant"], r["round"]): r for r in runs if r["engine"] == engine}
        pps = {n: [cell[(n, k)].get("pairs_per_s") if (n, k) in cell else None for k in range(1, rounds + 1)]
               for n in names}
        entry: Dict[str, Any] = {"pairs_per_s": pps,
                                 "vs_baseline": {n: paired_ratios(pps[names[0]], pps[n]) for n in names[1:]}}
        if check_scores:
            ok = {n: [cell[(n, k)] for k in range(1, rounds + 1) if (n, k) in cell and "error" not in cell[(n, k)]]
                  for n in names}
            if ok[names[0]]:
                ref = ok[names[0]][0]
                entry["scores"] = {n: dict(compare_scores(ref["raw"], [r["raw"] for r in ok[n]]),
                                           same_token_ids=all(r["ids_sha256"] == ref["ids_sha256"] for r in ok[n]))
                                   for n in names if ok[n]}
        out[engine] = entry
    return out


# ---- report ------------------------------------------------------------------------------------

def print_report(results: Dict[str, Dict[str, Any]], variants: Sequence[Variant], threads: int, rounds: int,
                 info: Dict[str, Any], runs: Sequence[Dict[str, Any]] = ()) -> List[str]:
    """Per engine: pairs/s per round, the paired ratios to the baseline and, where checked, the
    scores; then the machine and one verdict line per comparison (returned too)."""
    base = variants[0].name
    head = ["variant"] + [f"round {k}" for k in range(1, rounds + 1)]
    verdicts: List[str] = []
    for engine, entry in results.items():
        print(f"\n{engine} at {threads} thread{'s' if threads > 1 else ''}, pairs/s:")
        print_table(head, [[n] + [fmt(x, ".3f") for x in xs] for n, xs in entry["pairs_per_s"].items()], left=1)
        print(f"\nratio to {base} in the same round (pairs/s; above 1: faster):")
        rows = []
        for n, s in entry["vs_baseline"].items():
            rows.append([n] + [fmt(x, ".3f") for x in s["ratios"]]
                        + [fmt(s["median"], ".3f"), fmt(s["min"], ".3f"), fmt(s["max"], ".3f"), f"{s['faster']} of {s['n']}"])
            verdicts.append(verdict(engine, threads, n, base, s))
        print_table(head + ["median", "min", "max", "faster"], rows, left=1)
        for n, c in entry.get("scores", {}).items():
            what = f"{n}'s rounds vs its first" if n == base else f"{n} vs {base}"
            same = "bitwise equal" if c["bitwise_equal"] else (
                "different numbers of scores" if c["max_abs_diff"] is None else f"max |d| = {c['max_abs_diff']:.3e}")
            print(f"raw scores, {what}: {same} ({c['runs']} run(s); token ids "
                  f"{'identical' if c['same_token_ids'] else 'DIFFER'})")
    print(f"\n{cpu_line(info)}; threads {threads}")
    busy = [r.get("other_cpu_best") for r in runs if r.get("other_cpu_best") is not None]
    if busy:  # above ~0.2 the machine was shared while timing
        print(f"other processes used up to {max(busy):.2f} CPUs during the timed runs")
    for line in verdicts:
        print(line)
    return verdicts


# ---- main --------------------------------------------------------------------------------------

def run_rounds(args: argparse.Namespace, rargs: argparse.Namespace, base: Dict[str, Any],
               tmp: Path, n_docs: int) -> List[Dict[str, Any]]:
    """Every round: every variant (in the round's order), every engine; each cell in its child
    process with the variant's PYTHONPATH and environment."""
    variants: List[Variant] = args.variants
    specs = bench_rerank.plan(rargs, base, None)
    runs: List[Dict[str, Any]] = []
    for k, order in enumerate(round_orders(len(variants), args.rounds), start=1):
        print(f"\nround {k}/{args.rounds}: {', '.join(variants[i].name for i in order)}", flush=True)
        for i in order:
            v = variants[i]
            for spec in specs:
                # the variant's settings over the engine's own (CROSSRANK_GEMM of the openblas engines)
                spec = dict(spec, env={**spec.get("env", {}), **v.env, "PYTHONPATH": pythonpath(v.python_dir)})
                print(f"  {v.name}: {bench_rerank.cell_label(spec)} ...", end="", flush=True)
                res = bench_rerank.run_cell(spec, tmp, f"r{k}-v{i}-{spec['engine']}")
                res.update(variant=v.name, round=k)
                print(cell_line("throughput", res, n_docs), flush=True)
                runs.append(res)
    return runs


def _terminated(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # unwinds like Ctrl-C: the child is killed, the temporary directory removed


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Builds the variants, runs the rounds, prints the report and writes the record: 0, or 1
    when a cell failed, 2 on bad input or a failed build, 130 when interrupted (SIGINT or SIGTERM)."""
    args, rargs = parse_args(sys.argv[1:] if argv is None else list(argv))
    signal.signal(signal.SIGTERM, _terminated)  # e.g. a time limit's kill: leave no builds behind
    variants: List[Variant] = args.variants
    started = _dt.datetime.now()
    try:
        for v in variants:
            if v.rev:
                v.commit = resolve_rev(v.rev)
        with tempfile.TemporaryDirectory(prefix="bench_ab-") as tmpdir:
            tmp = Path(tmpdir)
            prepare_builds(variants, tmp)
            # the header's crossrank (kernel level, version) is the baseline's build
            sys.path.insert(0, str(variants[0].python_dir))
            info = machine_info(args.threads)
            print_machine(info)
            checkpoint = ensure_checkpoint(args.model, cache_dir(args.cache_dir))
            config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
            query, docs, doc_tokens, warmup_docs, warmup_calls = bench_rerank.workload(rargs)
            print(f"Workload: {bench_rerank.describe(rargs, docs, doc_tokens)}; model: {MODELS[args.model]} shape, "
                  f"RANDOM weights; {args.threads} threads; best of {rargs.repeats} timed run(s) per cell", flush=True)
            workload_file = write_workload(tmp, query, docs, warmup_docs)
            base = bench_rerank.base_spec(rargs, checkpoint, workload_file, warmup_calls, len(warmup_docs))
            runs = run_rounds(args, rargs, base, tmp, len(docs))
    except ABError as e:
        print(f"\nbench_ab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nbench_ab: interrupted; temporary builds removed", file=sys.stderr)
        return 130

    summary = summarise(runs, "throughput", len(docs), flop_model(config), {})
    results = results_by_engine(runs, variants, rargs.engine_list, args.rounds, args.check_scores)
    verdicts = print_report(results, variants, args.threads, args.rounds, info, runs)
    out = RESULTS_DIR / f"bench_ab-{started.strftime('%Y%m%d-%H%M%S')}.json"
    write_record(out, {
        "started": started.isoformat(timespec="seconds"), "command": [sys.executable, *sys.argv],
        "machine": info, "threads": args.threads, "engines": rargs.engine_list, "rounds": args.rounds,
        "variants": [{"name": v.name, "spec": v.spec, "rev": v.rev, "commit": v.commit, "env": v.env,
                      "source_digest": v.source_digest} for v in variants],
        "round_orders": [[variants[i].name for i in o] for o in round_orders(len(variants), args.rounds)],
        "model": {"shape": MODELS[args.model], "weights": "random", "checkpoint": str(checkpoint)},
        "workload": {"query": query, "documents": len(docs), "document_tokens": doc_tokens,
                     "repeats": rargs.repeats, "warmup_calls": warmup_calls, "warmup_documents": len(warmup_docs)},
        "results": results, "verdicts": verdicts, "same_token_ids": summary["checks"]["same_token_ids"],
        "runs": runs,
    })
    print(f"\nwrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 1 if len(summary["ok"]) < len(runs) else 0


if __name__ == "__main__":
    sys.exit(main())
