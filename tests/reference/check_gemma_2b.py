#!/usr/bin/env python
"""One-off check of bge-reranker-v2-gemma at the real Gemma-2B shape (~2.5 B parameters).

    python tests/reference/check_gemma_2b.py [--work DIR] [--threads N] [--rebuild] [--reuse-reference]

Not part of CI or pytest (the file name keeps it out of collection): the float32 model takes
~10 GB, so transformers and crossrank cannot hold it side by side, and a run takes tens of
minutes on two cores. It proves on the real shape what tests/test_parity_families.py proves on
gemma-tiny. Three stages, each in its own subprocess so that its memory is returned before the
next starts and its peak RSS is its own:

1. build (once, cached in DIR/checkpoint): a GemmaForCausalLM with the config of
   bge-reranker-v2-gemma (model-configs/bge-reranker-v2-gemma.json: 18 layers, hidden 2048,
   head_dim 256, one KV head, vocabulary 256000, tied embeddings), created directly in bfloat16,
   random weights shaped as fixtures_family.py shapes gemma-tiny (embeddings at unit scale
   after the sqrt(hidden) factor, fan-in scaled projections, jittered (1 + w) norms, the tied
   "Yes" row fitted so the raw scores spread out; the fit runs the bf16 model), saved as bf16
   safetensors in 2 GB shards, plus the Gemma-convention tokenizer that recipe_flag_llm.py
   trains for gemma-tiny (the real Gemma tokenizer is not available; see GEMMA_TOKENIZER_NOTES
   there). config.json keeps the real activation keys (hidden_act "gelu", hidden_activation
   "gelu_pytorch_tanh"): transformers 5.24 rewrites the legacy "gelu" to the tanh GELU, crossrank
   follows vLLM's hidden_activation, so both run the tanh GELU.
   The pairs are the ones of tests/reference/texts.py whose prompt can fit 128 tokens (the long
   query alone takes 89 tokens + the 52-token prompt, so its two pairs are left out); a document
   whose prompt is longer than 128 tokens is cut to the longest prefix (at a word end when one is
   close) that keeps the whole prompt within a budget of 128, 112, 96 or 80 tokens, in turn, so
   that the lengths are mixed. They are written to DIR/checkpoint/pairs.json.
2. reference: FlagEmbedding's recipe for bge-reranker-v2-gemma (the piecewise
   FlagLLMRerankerRecipe of recipe_flag_llm.py, max_length 1024, so nothing is truncated by
   the recipe) in transformers, the bf16 checkpoint loaded with dtype=torch.float32, one unpadded
   sequence at a time (as golden.json's "logits"); writes ids, raw "Yes" logits and sigmoid
   scores to DIR/reference.json.
3. crossrank: crossrank.CrossEncoder(DIR/checkpoint, dtype="float32", template and hf_overrides
   as test_parity_families.py passes them for gemma-tiny) scores the same pairs with score();
   writes ids, raw logits and scores to DIR/crossrank.json.

The parent process (no torch) compares: identical token ids, max |delta raw logit| and max
|delta score| (target 1e-4, as for every family in float32), the score spread (IQR, fraction
outside [0.01, 0.99]), peak RSS (getrusage in each child) and wall times; it prints a Markdown
table and writes everything to DIR/results.json. Exit status 0 when ids are identical and both
deltas are within 1e-4, 1 otherwise.

Memory: before each stage the parent waits (up to --memory-wait minutes) until MemAvailable
covers the stage's estimate (build ~7 GiB, reference ~13 GiB, crossrank ~10 GiB), so that a
shared machine is not pushed into the OOM killer.
"""

import argparse
import contextlib
import gc
import hashlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


# The reference stage: the shared module, the FlagLLMReranker recipe and its Gemma tokenizer, the
# family fixtures' weight shaping and head fit (no torch at import).
sys.path.insert(0, str(HERE))
import fixtures_family  # noqa: E402
import recipe_flag_llm  # noqa: E402
import reference_stage  # noqa: E402
from reference_stage import log  # noqa: E402

SCRIPT_VERSION = 1
DEFAULT_WORK = Path(os.environ.get("TMPDIR", "/tmp")) / "crossrank-gemma-2b"
CONFIG_FILE = reference_stage.MODEL_CONFIGS / "bge-reranker-v2-gemma.json"
SEED = 20250810
MAX_TOKENS = 128              # every prompt, BOS to the last prompt token
CUT_BUDGETS = (128, 112, 96, 80)   # documents that must be cut are cut to these in turn (mixed lengths)
MAX_LENGTH = recipe_flag_llm.GEMMA_MAX_LENGTH   # the recipe's (model card) max_length: no recipe truncation
WORD_END_SLACK = 24           # prefer a cut at a word end when it loses at most this many characters
SHARD_SIZE = "2GB"
PARITY_ATOL = 1e-4
TEMPLATE = recipe_flag_llm.FAMILY["template"]
HF_OVERRIDES = {
    "architectures": ["GemmaForSequenceClassification"],
    "classifier_from_token": list(recipe_flag_llm.FAMILY["tokens"]),
    "method": recipe_flag_llm.FAMILY["method"],
}
# The activation keys of the real bge-reranker-v2-gemma config.json, kept in the checkpoint.
REAL_ACTIVATION_KEYS = {"hidden_act": "gelu", "hidden_activation": "gelu_pytorch_tanh"}
# Estimated peak memory of each stage (GiB) and what MemAvailable must show before it starts.
STAGE_MEMORY_GIB = {"build": 7.0, "reference": 13.0, "crossrank": 10.0}


def _shaping(hidden_size):
    # As gemma-tiny: embeddings at unit scale after Gemma's sqrt(hidden) factor. q/k gain 1.0 as
    # mxbai-base (deep models: sharper attention compounds layer after layer).
    return dict(fixtures_family.SHAPING, embed_std=1.0 / math.sqrt(hidden_size), qk_gain=1.0)


def _hf_config_dict():
    cfg = json.loads(CONFIG_FILE.read_text())
    for key in ("architectures", "torch_dtype", "dtype", "transformers_version"):
        cfg.pop(key, None)
    return {k: v for k, v in cfg.items() if v is not None}   # rope_scaling: null


def spec():
    cfg = _hf_config_dict()
    return {
        "script_version": SCRIPT_VERSION,
        "config": cfg,
        "activation_keys": REAL_ACTIVATION_KEYS,
        "shaping": _shaping(cfg["hidden_size"]),
        "seed": SEED,
        "pairs": reference_stage.PAIRS,
        "max_tokens": MAX_TOKENS,
        "cut_budgets": CUT_BUDGETS,
        "word_end_slack": WORD_END_SLACK,
        "max_length": MAX_LENGTH,
        "prompt": recipe_flag_llm.GEMMA_PROMPT,
        "sep": recipe_flag_llm.GEMMA_SEP,
        "tokenizer_build": dict(recipe_flag_llm.GEMMA_TOKENIZER, corpus=recipe_flag_llm.gemma_corpus()),
        "shard_size": SHARD_SIZE,
        "family_script_version": fixtures_family.SCRIPT_VERSION,
    }


def spec_hash():
    blob = json.dumps(spec(), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------
# Utilities (no torch)

@contextlib.contextmanager
def _phase(times, what):
    started = time.time()
    log(f"  {what} ...")
    yield
    times[what] = round(time.time() - started, 1)
    log(f"  {what}: {times[what]:.1f} s")


def _peak_rss_gib():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)   # KiB on Linux


def _mem_available_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _write_json(path, data):
    tmp = Path(f"{path}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def _read_json(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------
# Stage 1: the checkpoint (torch, bf16)

def _prompt_length(recipe, pair):
    ids, _ = recipe.encode([pair], MAX_LENGTH)
    return len(ids[0])


def _longest_fitting(n, fits):
    """Largest k in [0, n) with fits(k), by bisection (token counts grow with the prefix but for
    rare merges, so the answer is checked and walked down if needed); -1 if none."""
    lo, hi = -1, n - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    while lo >= 0 and not fits(lo):
        lo -= 1
    return lo


def select_pairs(recipe):
    """The texts.py pairs whose prompt fits MAX_TOKENS, documents cut to fit (see the docstring)."""
    out, skipped = [], []
    n_cut = 0
    for index, p in enumerate(reference_stage.PAIRS):
        pair = dict(p)
        empty = _prompt_length(recipe, dict(pair, document=""))
        if empty > MAX_TOKENS:
            skipped.append(index)
            continue
        doc = pair["document"]
        cut = budget = None
        if _prompt_length(recipe, pair) > MAX_TOKENS:
            budget = CUT_BUDGETS[n_cut % len(CUT_BUDGETS)]
            budget = budget if empty + 8 <= budget else MAX_TOKENS
            n_cut += 1

            def fits_at(ends):
                return lambda k: _prompt_length(recipe, dict(pair, document=doc[:ends[k]])) <= budget
            chars = list(range(len(doc)))
            words = [k for k in range(1, len(doc)) if doc[k].isspace() and not doc[k - 1].isspace()]
            by_char = chars[_longest_fitting(len(chars), fits_at(chars))]
            w = _longest_fitting(len(words), fits_at(words))
            cut = words[w] if w >= 0 and words[w] >= by_char - WORD_END_SLACK else by_char
            pair["document"] = doc[:cut]
        out.append({"index": index, **pair, "document_chars": len(pair["document"]),
                    "original_document_chars": len(doc), "document_cut": cut is not None, "budget": budget,
                    "tokens": _prompt_length(recipe, pair)})
    return out, skipped


def _model_config():
    import warnings

    from transformers import AutoConfig

    cfg = _hf_config_dict()
    model_type = cfg.pop("model_type")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoConfig.for_model(model_type, dtype="bfloat16", **cfg)


def stage_build(work, threads):
    import torch
    import transformers
    from transformers.initialization import no_init_weights

    torch.set_num_threads(threads)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    started, times = time.time(), {}
    final = work / "checkpoint"
    for stale in work.glob("checkpoint.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = work / f"checkpoint.tmp-{os.getpid()}"
    tmp.mkdir(parents=True)
    log(f"build: {tmp}")

    with _phase(times, "tokenizer and pairs"):
        vocab_used = recipe_flag_llm.build_gemma_tokenizer(tmp)
        recipe = recipe_flag_llm.FlagLLMRerankerRecipe(tmp)
        pairs, skipped = select_pairs(recipe)
    config = _model_config()
    shaping = _shaping(config.hidden_size)
    torch.manual_seed(SEED)
    with _phase(times, "init (bf16)"):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            with no_init_weights():
                model = transformers.GemmaForCausalLM(config)
        finally:
            torch.set_default_dtype(previous)
        model.tie_weights()
        dtypes = {str(p.dtype) for p in model.parameters()}
        if dtypes != {"torch.bfloat16"}:
            raise RuntimeError(f"the model was not created in bfloat16: {dtypes}")
        if model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
            raise RuntimeError("the embeddings are not tied")
        fixtures_family.init_weights(model, SEED, shaping, gemma_norms=True)
        model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    log(f"  {n_params / 1e9:.3f} B parameters, peak RSS {_peak_rss_gib()} GiB")
    ids, _ = reference_stage.encode_grouped(recipe, pairs, MAX_LENGTH)
    with _phase(times, "head fit (bf16 forward)"):
        fixtures_family.set_head_rows(model, ids, [p["instruction"] for p in pairs], [recipe.yes_loc], SEED, shaping)
    with _phase(times, "save (bf16 safetensors)"):
        model.save_pretrained(tmp, max_shard_size=SHARD_SIZE)
    hidden_act_in_memory = model.config.hidden_act
    del model
    gc.collect()

    path = tmp / "config.json"
    cfg = json.loads(path.read_text())
    cfg.update(REAL_ACTIVATION_KEYS)
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    _write_json(tmp / "pairs.json", {"max_tokens": MAX_TOKENS, "skipped_pair_indices": skipped, "pairs": pairs})
    with _phase(times, "weights sha256"):
        sha = reference_stage.weights_sha256(tmp)
    files = sorted(f.name for f in tmp.iterdir())
    dtypes_on_disk = set()
    for f in reference_stage.safetensors_files(tmp):
        _, header = reference_stage.safetensors_header(f)
        dtypes_on_disk |= {info["dtype"] for info in header.values()}
    build = {
        "spec_hash": spec_hash(),
        "script_version": SCRIPT_VERSION,
        "parameters": n_params,
        "tokenizer_vocab": vocab_used,
        "config_vocab_size": config.vocab_size,
        "hidden_act_in_memory": hidden_act_in_memory,
        "shaping": shaping,
        "seed": SEED,
        "safetensors_dtypes": sorted(dtypes_on_disk),
        "files": files,
        "bytes": sum(f.stat().st_size for f in tmp.iterdir()),
        "weights_sha256": sha,
        "times_s": times,
        "wall_s": round(time.time() - started, 1),
        "peak_rss_gib": _peak_rss_gib(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "threads": threads,
        "tokenizer_notes": recipe_flag_llm.GEMMA_TOKENIZER_NOTES,
    }
    _write_json(tmp / "build.json", build)
    for f in tmp.iterdir():
        f.chmod(0o644)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    log(f"build: done in {build['wall_s']:.0f} s, peak RSS {build['peak_rss_gib']} GiB")
    return build


# --------------------------------------------------------------------------
# Stage 2: the reference (transformers, float32)

def stage_reference(work, threads):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    started, times = time.time(), {}
    ckpt = work / "checkpoint"
    build = _read_json(ckpt / "build.json")
    pairs = _read_json(ckpt / "pairs.json")["pairs"]
    recipe = recipe_flag_llm.FlagLLMRerankerRecipe(ckpt)
    ids, _ = reference_stage.encode_grouped(recipe, pairs, MAX_LENGTH)
    if [len(x) for x in ids] != [p["tokens"] for p in pairs] or max(map(len, ids)) > MAX_TOKENS:
        raise RuntimeError("the recipe's ids do not have the lengths pairs.json records")
    rss_before = _peak_rss_gib()
    with _phase(times, "load (bf16 -> float32)"):
        model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    dtypes = {str(p.dtype) for p in model.parameters()}
    if dtypes != {"torch.float32"}:
        raise RuntimeError(f"the reference model is not float32: {dtypes}")
    rss_loaded = _peak_rss_gib()
    log(f"  loaded: peak RSS {rss_loaded} GiB, hidden_act {model.config.hidden_act!r}, "
        f"attention {model.config._attn_implementation}")
    logits = []
    with _phase(times, "forward (batch size 1, unpadded)"):
        for start in range(0, len(ids), 8):
            logits += recipe.head_logits(model, ids[start:start + 8])
            log(f"    {len(logits)}/{len(ids)} pairs, {time.time() - started:.0f} s")
    reference = {
        "spec_hash": build["spec_hash"],
        "weights_sha256": build["weights_sha256"],
        "input_ids": ids,
        "logits": logits,
        "scores": [reference_stage.sigmoid(z) for z in logits],
        "yes_token_id": recipe.yes_loc,
        "hidden_act": model.config.hidden_act,
        "attn_implementation": model.config._attn_implementation,
        "times_s": times,
        "wall_s": round(time.time() - started, 1),
        "peak_rss_before_load_gib": rss_before,
        "peak_rss_after_load_gib": rss_loaded,
        "peak_rss_gib": _peak_rss_gib(),
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    del model
    _write_json(work / "reference.json", reference)
    log(f"reference: done in {reference['wall_s']:.0f} s, peak RSS {reference['peak_rss_gib']} GiB")
    return reference


# --------------------------------------------------------------------------
# Stage 3: crossrank (float32)

def stage_crossrank(work, threads):
    import numpy as np

    import crossrank
    from crossrank import CrossEncoder, _core

    started, times = time.time(), {}
    ckpt = work / "checkpoint"
    build = _read_json(ckpt / "build.json")
    pairs = _read_json(ckpt / "pairs.json")["pairs"]
    with _phase(times, "load (bf16 -> float32)"):
        model = CrossEncoder(ckpt, hf_overrides=HF_OVERRIDES, template=TEMPLATE, dtype="float32",
                             threads=threads)
    rss_loaded = _peak_rss_gib()
    log(f"  loaded: {model!r}, activation {model.config.activation!r}, embed_scale "
        f"{model.config.embed_scale!r}, peak RSS {rss_loaded} GiB")
    groups = {}
    for i, p in enumerate(pairs):
        groups.setdefault(p["instruction"], []).append(i)
    ids = [None] * len(pairs)
    truncated = [None] * len(pairs)
    raw = np.zeros(len(pairs), dtype=np.float32)
    with _phase(times, "score"):
        for instruction, idx in groups.items():
            queries = [pairs[i]["query"] for i in idx]
            docs = [pairs[i]["document"] for i in idx]
            enc = model.tokenize(queries, docs, instruction)
            raw[idx] = model.score(queries, docs, instruction, activation_fn="identity")
            for k, i in enumerate(idx):
                ids[i] = list(enc.input_ids[k])
                truncated[i] = bool(enc.truncated[k])
            prompt = "default prompt" if instruction is None else "custom instruction"
            log(f"    {len(idx)} pairs ({prompt}), {time.time() - started:.0f} s")
    # The model's default activation (sigmoid for one label) on the same raw logits: a second
    # score() call would run the 2.5 B forward again for the same numbers.
    scores = model.activate(raw.reshape(-1, 1), defaults="vllm")
    core = Path(_core.__file__)
    result = {
        "spec_hash": build["spec_hash"],
        "weights_sha256": build["weights_sha256"],
        "input_ids": ids,
        "truncated": truncated,
        "logits": [float(x) for x in raw],
        "scores": [float(x) for x in scores],
        "model": repr(model),
        "max_length": model.max_length,
        "activation": model.config.activation,
        "embed_scale": model.config.embed_scale,
        "times_s": times,
        "wall_s": round(time.time() - started, 1),
        "peak_rss_after_load_gib": rss_loaded,
        "peak_rss_gib": _peak_rss_gib(),
        "threads": model.threads,
        "cpu": _core.cpu_info(),
        "crossrank": {"version": getattr(crossrank, "__version__", None), "core": str(core),
                      "core_sha256": hashlib.sha256(core.read_bytes()).hexdigest(),
                      "core_mtime": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(core.stat().st_mtime))},
    }
    _write_json(work / "crossrank.json", result)
    log(f"crossrank: done in {result['wall_s']:.0f} s, peak RSS {result['peak_rss_gib']} GiB")
    return result


STAGES = {"build": stage_build, "reference": stage_reference, "crossrank": stage_crossrank}


# --------------------------------------------------------------------------
# The parent: runs the stages in subprocesses, compares, reports

def _wait_for_memory(stage, minutes):
    need = STAGE_MEMORY_GIB[stage]
    deadline = time.time() + 60 * minutes
    while True:
        avail = _mem_available_gib()
        if avail is None or avail >= need:
            return avail
        if time.time() > deadline:
            raise SystemExit(f"{stage}: MemAvailable is {avail:.1f} GiB, the stage needs ~{need} GiB; "
                             f"gave up after {minutes} min")
        log(f"{stage}: MemAvailable {avail:.1f} GiB < ~{need} GiB needed; waiting")
        time.sleep(30)


def run_stage(stage, args):
    avail = _wait_for_memory(stage, args.memory_wait)
    python = os.environ.get("CROSSRANK_REFERENCE_PYTHON", sys.executable) if stage != "crossrank" else sys.executable
    cmd = [python, str(Path(__file__).resolve()), "--stage", stage, "--work", str(args.work),
           "--threads", str(args.threads)]
    log(f"== {stage} (MemAvailable {avail if avail is None else round(avail, 1)} GiB): {' '.join(cmd)}")
    started = time.time()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{stage} failed (exit {proc.returncode})")
    return {"wall_s": round(time.time() - started, 1), "wait4_maxrss_gib": round(usage.ru_maxrss / 2**20, 2),
            "mem_available_before_gib": None if avail is None else round(avail, 1)}


def _fmt(x, spec=".2e"):
    return "-" if x is None else format(x, spec)


def compare(work, build, reference, cr, runs):
    import numpy as np

    pairs = _read_json(work / "checkpoint" / "pairs.json")
    plist = pairs["pairs"]
    n = len(plist)
    same = [a == b for a, b in zip(reference["input_ids"], cr["input_ids"])]
    z_ref, z_cr = np.asarray(reference["logits"]), np.asarray(cr["logits"])
    s_ref, s_cr = np.asarray(reference["scores"]), np.asarray(cr["scores"])
    d_logit, d_score = np.abs(z_ref - z_cr), np.abs(s_ref - s_cr)
    lengths = np.asarray([len(x) for x in reference["input_ids"]])
    worst = int(np.argmax(d_logit))
    stats = reference_stage.score_stats(s_ref.tolist(), z_ref.tolist(), lengths.tolist())
    stats_cr = reference_stage.score_stats(s_cr.tolist(), z_cr.tolist(), lengths.tolist())
    ok = {
        "ids_identical": all(same),
        "logits_within_1e-4": bool(d_logit.max() <= PARITY_ATOL),
        "scores_within_1e-4": bool(d_score.max() <= PARITY_ATOL),
        "none_truncated_by_crossrank": not any(cr["truncated"]),
        # tests/test_parity_families.py's assert_spread
        "spread": bool(stats_cr["score_iqr"] > 0.2 and stats_cr["fraction_outside_0.01_0.99"] < 0.10),
    }
    results = {
        "ok": ok,
        "parity_atol": PARITY_ATOL,
        "pairs": n,
        "pairs_custom_instruction": sum(p["instruction"] is not None for p in plist),
        "pairs_document_cut": sum(p["document_cut"] for p in plist),
        "skipped_pair_indices": pairs["skipped_pair_indices"],
        "ids_identical": f"{sum(same)}/{n}",
        "tokens": {"min": int(lengths.min()), "median": float(np.median(lengths)), "max": int(lengths.max()),
                   "total": int(lengths.sum())},
        "max_abs_logit_diff": float(d_logit.max()),
        "mean_abs_logit_diff": float(d_logit.mean()),
        "max_abs_score_diff": float(d_score.max()),
        "worst_pair": {"index": plist[worst]["index"], "tokens": int(lengths[worst]),
                       "reference_logit": float(z_ref[worst]), "crossrank_logit": float(z_cr[worst])},
        "abs_logit_diff_vs_length_corr": float(np.corrcoef(d_logit, lengths)[0, 1]) if d_logit.std() > 0 else None,
        "reference_stats": stats,
        "crossrank_stats": stats_cr,
        "per_pair": [{"index": p["index"], "tokens": int(L), "reference_logit": float(a), "crossrank_logit": float(b),
                      "abs_logit_diff": float(d)} for p, L, a, b, d in zip(plist, lengths, z_ref, z_cr, d_logit)],
        "build": {k: build[k] for k in ("parameters", "tokenizer_vocab", "config_vocab_size", "safetensors_dtypes",
                                        "bytes", "weights_sha256", "times_s", "wall_s", "peak_rss_gib", "versions",
                                        "shaping", "seed", "hidden_act_in_memory")},
        "reference": {k: reference[k] for k in ("times_s", "wall_s", "peak_rss_after_load_gib", "peak_rss_gib",
                                                "threads", "versions", "hidden_act", "attn_implementation")},
        "crossrank": {k: cr[k] for k in ("times_s", "wall_s", "peak_rss_after_load_gib", "peak_rss_gib", "threads",
                                         "model", "activation", "embed_scale", "cpu", "crossrank")},
        "runs": runs,
        "checkpoint": str(work / "checkpoint"),
    }
    return results


def markdown(r):
    b, ref, cr = r["build"], r["reference"], r["crossrank"]
    t = r["tokens"]
    st = r["crossrank_stats"]
    q = st["score_quartiles"]
    yes = {True: "yes", False: "**no**"}
    rows = [
        ("checkpoint", f"GemmaForCausalLM, {b['parameters'] / 1e9:.3f} B parameters, "
                       f"{'/'.join(b['safetensors_dtypes'])} safetensors ({b['bytes'] / 2**30:.2f} GiB), tied embeddings"),
        ("pairs", f"{r['pairs']} ({r['pairs_custom_instruction']} with the custom instruction, "
                  f"{r['pairs_document_cut']} documents cut to fit)"),
        ("prompt tokens", f"{t['min']} / {t['median']:.0f} / {t['max']} (min / median / max), {t['total']} in all"),
        ("token ids identical", f"{r['ids_identical']} {yes[r['ok']['ids_identical']]}"),
        ("max abs delta raw Yes logit", f"{r['max_abs_logit_diff']:.2e} (mean {r['mean_abs_logit_diff']:.2e}) "
                                        f"{yes[r['ok']['logits_within_1e-4']]} <= 1e-4"),
        ("max abs delta score (sigmoid)", f"{r['max_abs_score_diff']:.2e} {yes[r['ok']['scores_within_1e-4']]} <= 1e-4"),
        ("raw logit", f"{st['logit_mean']:+.2f} +- {st['logit_std']:.2f}"),
        ("score spread", f"IQR {st['score_iqr']:.3f} (quartiles {q[0]:.3f} {q[1]:.3f} {q[2]:.3f}), "
                         f"{st['fraction_outside_0.01_0.99']:.1%} outside [0.01, 0.99] {yes[r['ok']['spread']]}"),
        ("peak RSS: build (bf16)", f"{b['peak_rss_gib']:.2f} GiB"),
        ("peak RSS: transformers float32", f"{ref['peak_rss_gib']:.2f} GiB"),
        ("peak RSS: crossrank float32", f"{cr['peak_rss_gib']:.2f} GiB"),
        ("wall: build", f"{b['wall_s']:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in b['times_s'].items())})"),
        ("wall: transformers", f"{ref['wall_s']:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in ref['times_s'].items())}), "
                               f"{ref['threads']} thread(s)"),
        ("wall: crossrank", f"{cr['wall_s']:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in cr['times_s'].items())}), "
                            f"{cr['threads']} thread(s), kernels {cr['cpu']['isa']}"),
        ("versions", f"torch {ref['versions']['torch']}, transformers {ref['versions']['transformers']}, "
                     f"attention {ref['attn_implementation']}, hidden_act {ref['hidden_act']} / "
                     f"crossrank {cr['activation']}"),
    ]
    lines = ["| bge-reranker-v2-gemma, Gemma-2B shape | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK,
                    help=f"checkpoint and results directory (default {DEFAULT_WORK})")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch and crossrank threads (default 1: see fixtures_family.THREADS)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the checkpoint even if it is current")
    ap.add_argument("--reuse-reference", action="store_true",
                    help="keep DIR/reference.json when it was computed on the current checkpoint")
    ap.add_argument("--memory-wait", type=float, default=30.0,
                    help="minutes to wait for enough MemAvailable before a stage (default 30)")
    ap.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)

    if args.stage:
        STAGES[args.stage](args.work, args.threads)
        return 0

    started = time.time()
    runs = {}
    build = _read_json(args.work / "checkpoint" / "build.json")
    if args.rebuild or build is None or build.get("spec_hash") != spec_hash():
        runs["build"] = run_stage("build", args)
        build = _read_json(args.work / "checkpoint" / "build.json")
    else:
        log(f"== build: cached in {args.work / 'checkpoint'}")
    reference = _read_json(args.work / "reference.json")
    if not (args.reuse_reference and reference is not None
            and reference.get("weights_sha256") == build["weights_sha256"]):
        runs["reference"] = run_stage("reference", args)
        reference = _read_json(args.work / "reference.json")
    else:
        log("== reference: reused")
    runs["crossrank"] = run_stage("crossrank", args)
    cr = _read_json(args.work / "crossrank.json")
    results = compare(args.work, build, reference, cr, runs)
    results["total_wall_s"] = round(time.time() - started, 1)
    table = markdown(results)
    results["markdown"] = table
    _write_json(args.work / "results.json", results)
    print(table)
    print(f"\nresults: {args.work / 'results.json'}")
    passed = all(results["ok"][k] for k in ("ids_identical", "logits_within_1e-4", "scores_within_1e-4"))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
