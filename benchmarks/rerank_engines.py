"""The engines the rerank benchmark compares, each run in its own child process (so its peak RSS
is its own): crossrank at each dtype, the Qwen3-Reranker model card's recipe in transformers
(eager PyTorch, no torch.compile; float32 or bfloat16, at each batch size tried),
sentence-transformers' CrossEncoder on a package the benchmark writes, and a float32 GEMM peak
probe.

Parent side: ``engine_configs`` turns engine names into child specs, ``run_child`` runs one.
Child side (``python bench_rerank.py --child SPEC OUT``): ``child_main`` loads the engine, warms
it up, resets the peak-RSS counter, times ``repeats`` runs and writes what it measured. Torch
engines set ``torch.set_num_threads`` to the spec's thread count in the child.

Memory: besides VmRSS/VmHWM (which count the file pages of a mapped checkpoint), a sampling
thread reads RssAnon from the end of loading to the end of the timed runs, every
``anon_interval_s`` of the spec (the engines release the GIL while they compute), so
``peak_anon - anon_after_load`` is what scoring adds in anonymous memory.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from rerank_workload import (QWEN3_DEFAULT_INSTRUCTION, QWEN3_MAX_LENGTH, QWEN3_PREFIX, QWEN3_ST_CHAT_TEMPLATE,
                             QWEN3_SUFFIX, ST_PROMPT_NAME, shared_prefix_length)

ENGINES = ("crossrank-auto", "crossrank-int8", "crossrank-bf16", "crossrank-bf16-noreuse", "crossrank-f32",
           "crossrank-f32-openblas", "crossrank-f32-openblas-unset", "transformers-f32", "transformers-bf16",
           "st-f32", "st-bf16")
BATCHED = ("transformers-", "st-")  # engines run at each of --hf-batch-sizes, best one reported
# OpenBLAS picks its kernels by CPU model unless these say otherwise; a machine that pins
# OPENBLAS_CORETYPE=Haswell leaves the AVX-512 kernels unused. crossrank-f32-openblas-unset runs without them.
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
BENCH_SCRIPT = Path(__file__).resolve().parent / "bench_rerank.py"
# --profile: the line a crossrank child writes before its timed calls, and the line each forward
# pass writes under CROSSRANK_PROFILE ("crossrank pass: ..., 12.3 ms: q|k|v 20.1% attention ...")
TIMED_MARK = "bench_rerank: timed calls start"
_PASS_LINE = re.compile(r"^crossrank pass: .*?, ([0-9.]+) ms:(.*)$")
_PHASE_SHARE = re.compile(r"(\S+) ([0-9.]+)%")
_CROSSRANK_DTYPES = {"crossrank-auto": "auto", "crossrank-int8": "int8", "crossrank-bf16": "bfloat16",
                     "crossrank-bf16-noreuse": "bfloat16", "crossrank-f32": "float32",
                     "crossrank-f32-openblas": "float32", "crossrank-f32-openblas-unset": "float32"}


def engine_configs(engine: str, base: Dict[str, Any], batch_sizes: Sequence[int],
                   st_package: Optional[Path]) -> List[Dict[str, Any]]:
    """The child specs of one engine: one for crossrank (it batches on its own), one per batch
    size for transformers and sentence-transformers."""
    if engine.startswith("crossrank"):
        spec = dict(base, engine=engine, crossrank_dtype=_CROSSRANK_DTYPES[engine], reuse=not engine.endswith("noreuse"))
        if engine.startswith("crossrank-f32-openblas"):
            spec["env"] = {"CROSSRANK_GEMM": "openblas"}
        if engine == "crossrank-f32-openblas-unset":
            spec["env_unset"] = list(OPENBLAS_VARS)
        if base.get("profile"):
            spec["env"] = dict(spec.get("env", {}), CROSSRANK_PROFILE="1")
        return [spec]
    dtype = "float32" if engine.endswith("-f32") else "bfloat16"
    extra = {"st_package": str(st_package)} if engine.startswith("st-") else {}
    return [dict(base, engine=engine, dtype=dtype, batch_size=bs, **extra) for bs in batch_sizes]


# --------------------------------------------------------------------------------------------
# The sentence-transformers package


def write_st_package(checkpoint: Path, out: Path) -> Dict[str, Any]:
    """A sentence-transformers CrossEncoder package of the checkpoint, as ST 6 saves a causal-LM reranker.

    The weights, config and tokenizer are linked from ``checkpoint``; next to them: ``modules.json``
    (a Transformer at the root, then LogitScore in ``1_LogitScore/``), ``sentence_bert_config.json``
    (AutoModelForCausalLM, flat chat messages, ``causal_logits`` out), ``1_LogitScore/config.json``
    (logit("yes") - logit("no") of the last position), ``config_sentence_transformers.json`` (the
    card's instruction as the default prompt) and ``chat_template.jinja`` (the card's prompt).
    Returns the files written, for the record.
    """
    from tokenizers import Tokenizer

    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        try:
            os.symlink(checkpoint / name, out / name)
        except OSError:
            (out / name).write_bytes((checkpoint / name).read_bytes())
    tok = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    files: Dict[str, Any] = {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
            {"idx": 1, "name": "1", "path": "1_LogitScore",
             "type": "sentence_transformers.cross_encoder.modules.logit_score.LogitScore"},
        ],
        "sentence_bert_config.json": {
            "transformer_task": "text-generation",
            "modality_config": {"text": {"method": "forward", "method_output_name": "logits"},
                                "message": {"method": "forward", "method_output_name": "logits", "format": "flat"}},
            "module_output_name": "causal_logits",
        },
        "1_LogitScore/config.json": {"true_token_id": tok.token_to_id("yes"), "false_token_id": tok.token_to_id("no"),
                                     "module_input_name": "causal_logits"},
        "config_sentence_transformers.json": {
            "model_type": "CrossEncoder", "prompts": {ST_PROMPT_NAME: QWEN3_DEFAULT_INSTRUCTION},
            "default_prompt_name": ST_PROMPT_NAME, "activation_fn": "torch.nn.modules.activation.Sigmoid",
        },
    }
    for name, content in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(json.dumps(content, indent=2), encoding="utf-8")
    # transformers prefers chat_template.jinja to the chat template in tokenizer_config.json
    (out / "chat_template.jinja").write_text(QWEN3_ST_CHAT_TEMPLATE, encoding="utf-8")
    files["chat_template.jinja"] = QWEN3_ST_CHAT_TEMPLATE
    return files


# --------------------------------------------------------------------------------------------
# Child side: one engine configuration per process


def proc_status(key: str) -> Optional[int]:
    """A /proc/self/status field in bytes (VmHWM, VmRSS)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class AnonSampler:
    """Samples RssAnon (anonymous resident memory: heap, workspaces, copied weights; not the file
    pages of a mapped checkpoint) every ``interval`` seconds on a daemon thread; ``peak`` is the
    largest value seen. Anonymous memory the engines allocate for a pass lives for the whole pass
    or layer (seconds at the long lengths), far longer than the interval."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.peak = proc_status("RssAnon") or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="anon-rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            v = proc_status("RssAnon")
            if v is not None and v > self.peak:
                self.peak = v

    def stop(self) -> int:
        """Stops the thread (after one last sample) and returns the peak in bytes."""
        self._stop.set()
        self._thread.join()
        v = proc_status("RssAnon")
        if v is not None and v > self.peak:
            self.peak = v
        return self.peak


_SAMPLER: Optional[AnonSampler] = None
_ANON_AFTER_LOAD: Optional[int] = None


def _loaded(spec: Dict[str, Any]) -> Optional[int]:
    """Call right after loading: starts the anonymous-RSS sampler, returns VmRSS."""
    global _SAMPLER, _ANON_AFTER_LOAD
    _ANON_AFTER_LOAD = proc_status("RssAnon")
    _SAMPLER = AnonSampler(float(spec.get("anon_interval_s", 0.05)))
    return proc_status("VmRSS")


def _peak_rss() -> int:
    hwm = proc_status("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _warmed(rss_after_load: Optional[int]) -> Dict[str, Optional[int]]:
    """Call after the warm-up: the RSS now is the resident model (weights paged in: transformers
    maps a bf16 checkpoint and touches it only in the first forward) plus the runtime; then resets the
    peak counter, so the VmHWM read at the end is the timed runs' own peak."""
    out = {"rss_after_load": rss_after_load, "rss_after_warmup": proc_status("VmRSS"),
           "anon_after_load": _ANON_AFTER_LOAD, "anon_after_warmup": proc_status("RssAnon"),
           "peak_rss_before_timing": proc_status("VmHWM")}
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        out["peak_reset"] = 1
    except OSError:  # not Linux, or not allowed: the final peak then includes loading
        out["peak_reset"] = 0
    return out


def system_busy_seconds() -> Optional[float]:
    """CPU seconds all processes spent busy since boot (/proc/stat), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds (user + system) this process has used."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _ids_digest(ids: Sequence[Sequence[int]]) -> str:
    return hashlib.sha256(json.dumps([list(map(int, x)) for x in ids]).encode()).hexdigest()


class _Timer:
    """Times repeated runs and the CPU other processes used meanwhile."""

    def __init__(self) -> None:
        self.times: List[float] = []
        self.other_cpu: List[Optional[float]] = []

    def run(self, fn):
        sys0, own0 = system_busy_seconds(), own_cpu_seconds()
        t0 = time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t0
        sys1, own1 = system_busy_seconds(), own_cpu_seconds()
        self.times.append(wall)
        if sys0 is None or sys1 is None:
            self.other_cpu.append(None)
        else:
            self.other_cpu.append(max(0.0, (sys1 - sys0) - (own1 - own0)) / wall)
        return out


def _openblas_core() -> Optional[str]:
    """The kernel set of the OpenBLAS crossrank links (openblas_get_corename), or None."""
    import ctypes

    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as f:
            paths = sorted({line.split()[-1] for line in f if "/libopenblas" in line})
    except OSError:
        return None
    for path in paths:
        try:
            fn = ctypes.CDLL(path).openblas_get_corename
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_char_p
        name = fn()
        return name.decode() if name else None
    return None


def _warm_then_time(spec: Dict[str, Any], run: Any, docs: List[str], warmup: List[str],
                    rss_loaded: Optional[int]) -> Tuple[Any, "_Timer", Dict[str, Optional[int]]]:
    """Warm-up calls of run(documents, batch_size) on `warmup`, then --repeats timed calls on
    `docs`: the last call's result, the timer and the memory figures."""
    bs = spec["batch_size"]
    for _ in range(spec["warmup_calls"]):
        run(warmup, min(bs, len(warmup)))
    memory = _warmed(rss_loaded)
    timer = _Timer()
    out = None
    for _ in range(spec["repeats"]):
        out = timer.run(lambda: run(docs, bs))
    return out, timer, memory


def child_crossrank(spec: Dict[str, Any], query: str, docs: List[str], warmup: List[str]) -> Dict[str, Any]:
    """crossrank's CrossEncoder at the spec's dtype and threads: score() (or forward_ids without
    prefix reuse), raw log-odds, timed after the warm-up."""
    import numpy as np

    from crossrank import CrossEncoder

    t0 = time.perf_counter()
    model = CrossEncoder(spec["checkpoint"], template="qwen3-reranker", threads=spec["threads"],
                         dtype=spec.get("crossrank_dtype", "float32"))
    load_s = time.perf_counter() - t0
    rss_loaded = _loaded(spec)
    enc = model.tokenize(query, docs)
    # Raw log-odds (logit_yes - logit_no) from the timed call; P(yes) is their sigmoid, which is
    # what the default activation computes. The activation is negligible next to the forward.
    for _ in range(spec["warmup_calls"]):
        model.score(query, warmup, activation_fn="identity")
    memory = _warmed(rss_loaded)
    timer = _Timer()
    raw = None
    if spec.get("reuse", True):
        def call():
            return model.score(query, docs, activation_fn="identity")
    else:
        def call():  # tokenization included, as in score(); no shared-prefix reuse
            return model.forward_ids(model.tokenize(query, docs).input_ids)[:, 0]
    if spec.get("profile"):
        print(TIMED_MARK, file=sys.stderr, flush=True)  # the passes after it are the timed ones
    for _ in range(spec["repeats"]):
        raw = timer.run(call)
    raw = np.asarray(raw, dtype=np.float64)
    return {
        "load_s": load_s, "times_s": timer.times, "other_cpu": timer.other_cpu,
        "raw": raw.tolist(), "scores": (1.0 / (1.0 + np.exp(-raw))).tolist(),
        "lengths": enc.num_tokens, "ids_sha256": _ids_digest(enc.input_ids),
        "shared_prefix": shared_prefix_length(enc.input_ids),
        **memory, "weight_bytes": int(model.engine.core.weight_bytes), "batch_size": "default (32)", "dtype": model.dtype,
        "gemm": os.environ.get("CROSSRANK_GEMM", "panels"),
        "openblas_core": _openblas_core(), "openblas_env": {k: os.environ.get(k) for k in OPENBLAS_VARS},
    }


def _torch_weight_bytes(model: Any) -> int:
    """Bytes of a torch module's parameters and buffers (tied weights once)."""
    tensors = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    return int(sum(t.numel() * t.element_size() for t in tensors.values()))


def child_transformers(spec: Dict[str, Any], query: str, docs: List[str], warmup: List[str]) -> Dict[str, Any]:
    """The model card's recipe (AutoModelForCausalLM in eager PyTorch with transformers' default
    attention, left padding) at the spec's dtype, batch size and torch threads."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(spec["threads"])
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[spec["dtype"]]
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(spec["checkpoint"], padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(spec["checkpoint"], dtype=dtype).eval()
    load_s = time.perf_counter() - t0
    rss_loaded = _loaded(spec)
    token_false_id = tokenizer.convert_tokens_to_ids("no")
    token_true_id = tokenizer.convert_tokens_to_ids("yes")
    prefix_tokens = tokenizer.encode(QWEN3_PREFIX, add_special_tokens=False)
    suffix_tokens = tokenizer.encode(QWEN3_SUFFIX, add_special_tokens=False)
    max_length = QWEN3_MAX_LENGTH
    model_kwargs = {} if spec["hf_full_logits"] else {"logits_to_keep": 1}

    # The model card's functions.
    def format_instruction(instruction, query, doc):
        if instruction is None:
            instruction = QWEN3_DEFAULT_INSTRUCTION
        return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"

    def process_inputs(pairs):
        inputs = tokenizer(pairs, padding=False, truncation="longest_first", return_attention_mask=False,
                           max_length=max_length - len(prefix_tokens) - len(suffix_tokens))
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = prefix_tokens + ele + suffix_tokens
        unpadded = [list(ids) for ids in inputs["input_ids"]]
        inputs = tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=max_length)
        for key in inputs:
            inputs[key] = inputs[key].to(model.device)
        return inputs, unpadded

    @torch.no_grad()
    def compute_logits(inputs):
        batch_scores = model(**inputs, **model_kwargs).logits[:, -1, :]
        true_vector = batch_scores[:, token_true_id]
        false_vector = batch_scores[:, token_false_id]
        raw = (true_vector - false_vector).float().tolist()
        batch_scores = torch.stack([false_vector, true_vector], dim=1)
        batch_scores = torch.nn.functional.log_softmax(batch_scores, dim=1)
        return batch_scores[:, 1].exp().float().tolist(), raw

    def run(documents, batch_size):
        pairs = [format_instruction(None, query, d) for d in documents]
        scores, raw, ids, padded = [], [], [], 0
        for start in range(0, len(pairs), batch_size):
            inputs, unpadded = process_inputs(pairs[start:start + batch_size])
            s, r = compute_logits(inputs)
            scores += s
            raw += r
            ids += unpadded
            padded += int(inputs["input_ids"].numel())
        return scores, raw, ids, padded

    bs = spec["batch_size"]
    out, timer, memory = _warm_then_time(spec, run, docs, warmup, rss_loaded)
    scores, raw, ids, padded = out
    return {
        "load_s": load_s, "times_s": timer.times, "other_cpu": timer.other_cpu,
        "raw": raw, "scores": scores, "lengths": [len(x) for x in ids], "ids_sha256": _ids_digest(ids),
        "shared_prefix": shared_prefix_length(ids),
        **memory, "weight_bytes": _torch_weight_bytes(model), "batch_size": bs, "padded_tokens": padded,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "torch_threads": torch.get_num_threads(),
        "logits_to_keep": model_kwargs.get("logits_to_keep", "all"),
    }


def child_st(spec: Dict[str, Any], query: str, docs: List[str], warmup: List[str]) -> Dict[str, Any]:
    """sentence-transformers' CrossEncoder on the package write_st_package wrote: rank() with the
    package's default prompt, raw scores (identity activation; P(yes) is their sigmoid)."""
    import sentence_transformers
    import torch
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(spec["threads"])
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[spec["dtype"]]
    t0 = time.perf_counter()
    model = CrossEncoder(spec["st_package"], device="cpu", model_kwargs={"dtype": dtype})
    load_s = time.perf_counter() - t0
    rss_loaded = _loaded(spec)
    identity = torch.nn.Identity()

    def run(documents, batch_size):
        ranked = model.rank(query, documents, batch_size=batch_size, activation_fn=identity, show_progress_bar=False)
        raw = [0.0] * len(documents)
        for r in ranked:
            raw[r["corpus_id"]] = float(r["score"])
        return raw

    bs = spec["batch_size"]
    raw, timer, memory = _warm_then_time(spec, run, docs, warmup, rss_loaded)
    # The token ids ST fed the model (outside the timing), for the same-ids check.
    ids: List[List[int]] = []
    prompt = model.prompts.get(model.default_prompt_name) if model.default_prompt_name else None
    for start in range(0, len(docs), 8):
        features = model[0].preprocess([(query, d) for d in docs[start:start + 8]], prompt=prompt)
        for row, mask in zip(features["input_ids"].tolist(), features["attention_mask"].tolist()):
            ids.append([t for t, m in zip(row, mask) if m])
    raw_arr = [float(x) for x in raw]
    return {
        "load_s": load_s, "times_s": timer.times, "other_cpu": timer.other_cpu,
        "raw": raw_arr, "scores": [1.0 / (1.0 + math.exp(-x)) for x in raw_arr],
        "lengths": [len(x) for x in ids], "ids_sha256": _ids_digest(ids),
        "shared_prefix": shared_prefix_length(ids),
        **memory, "weight_bytes": _torch_weight_bytes(model), "batch_size": bs,
        "modules": [type(m).__name__ for m in model], "prompt": prompt,
        "model_dtype": str(model.model.dtype),
        "attn_implementation": getattr(model.model.config, "_attn_implementation", None),
        "torch_threads": torch.get_num_threads(), "sentence_transformers_version": sentence_transformers.__version__,
    }


def child_peak(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Measured float32 GEMM peak (best of numpy's BLAS and torch's) at the benchmark's thread count."""
    import numpy as np

    n = 2048
    flop = 2.0 * n ** 3
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)

    def best(fn, reps=5):
        fn()
        t = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        return flop / min(t) / 1e9

    out = {"numpy_sgemm_gflops": best(lambda: a @ b)}
    try:
        import torch

        torch.set_num_threads(spec["threads"])
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        out["torch_sgemm_gflops"] = best(lambda: ta @ tb)
    except ImportError:
        pass
    out["peak_gflops"] = max(v for k, v in out.items())
    out["matrix"] = n
    try:  # register-only loops: the instruction peaks the GEMMs are measured against
        from crossrank import _testing

        out["fma_f32_loop_gflops"] = _testing.bench_peak("fma_f32", threads=spec["threads"])
        out["dpbf16_loop_gflops"] = _testing.bench_peak("dpbf16", threads=spec["threads"])
        out["vnni_loop_gops"] = _testing.bench_peak("vnni", threads=spec["threads"])
    except (ImportError, RuntimeError):
        pass
    return out


def write_workload(tmp: Path, query: str, docs: List[str], warmup_docs: List[str]) -> Path:
    """The pairs every cell's child scores, as the file child_main reads."""
    path = tmp / "workload.json"
    path.write_text(json.dumps({"query": query, "documents": docs, "warmup_documents": warmup_docs}), encoding="utf-8")
    return path


def child_main(spec_file: str, out_file: str) -> None:
    """The child process: runs the spec's engine and writes what it measured to ``out_file``."""
    spec = json.loads(Path(spec_file).read_text(encoding="utf-8"))
    if spec["engine"] == "peak":
        result = child_peak(spec)
    else:
        workload = json.loads(Path(spec["workload"]).read_text(encoding="utf-8"))
        query, docs, warmup = workload["query"], workload["documents"], workload["warmup_documents"]
        if spec["engine"].startswith("crossrank"):
            result = child_crossrank(spec, query, docs, warmup)
        elif spec["engine"].startswith("st-"):
            result = child_st(spec, query, docs, warmup)
        else:
            result = child_transformers(spec, query, docs, warmup)
        # VmHWM was reset after the warm-up: what it holds now is the timed runs' peak
        result["peak_rss_scoring"] = _peak_rss()
        if _SAMPLER is not None:
            result["peak_anon"] = _SAMPLER.stop()  # from the end of loading to the end of the timed runs
    result["peak_rss"] = max(_peak_rss(), result.get("peak_rss_before_timing") or 0)
    Path(out_file).write_text(json.dumps(result), encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Parent side


# --------------------------------------------------------------------------------------------
# Parent side


def run_child(spec: Dict[str, Any], tmp: Path, tag: str) -> Dict[str, Any]:
    """Runs one cell in a child process (its environment as the spec says) and returns its
    result, or ``{"error", "log_tail"}`` when it failed."""
    spec_file, out_file = tmp / f"{tag}.spec.json", tmp / f"{tag}.out.json"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    env = dict(os.environ)
    env.pop("CROSSRANK_GEMM", None)
    env.update(spec.get("env", {}))
    for key in spec.get("env_unset", ()):
        env.pop(key, None)
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if spec["engine"] == "peak":
        env["OPENBLAS_NUM_THREADS"] = str(spec["threads"])
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(BENCH_SCRIPT), "--child", str(spec_file), str(out_file)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or not out_file.is_file():
        tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
        return {"error": f"exit code {proc.returncode}", "log_tail": tail, "process_s": elapsed}
    result = json.loads(out_file.read_text(encoding="utf-8"))
    result["process_s"] = elapsed
    if spec.get("profile") and spec["engine"].startswith("crossrank"):
        result["phases_ms"] = phase_totals(proc.stdout)
    return result


def phase_totals(log: str) -> Dict[str, float]:
    """Milliseconds per phase of the forward passes after TIMED_MARK in a child's log (each pass
    line's shares times its time), with the passes' whole time under "total"."""
    totals: Dict[str, float] = {}
    timed = False
    for line in log.splitlines():
        if line.strip() == TIMED_MARK:
            timed = True
            continue
        m = _PASS_LINE.match(line.strip()) if timed else None
        if not m:
            continue
        ms = float(m.group(1))
        totals["total"] = totals.get("total", 0.0) + ms
        for name, share in _PHASE_SHARE.findall(m.group(2)):
            totals[name] = totals.get(name, 0.0) + ms * float(share) / 100
    return totals
