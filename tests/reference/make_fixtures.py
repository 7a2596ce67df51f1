#!/usr/bin/env python
"""Reference stage of the test suite: random-weight checkpoints and golden scores.

    python tests/reference/make_fixtures.py --out tests/.fixtures [--only NAME ...]

Each fixture is a directory DIR/NAME/ holding a checkpoint written by
`transformers` (config.json, safetensors), the real Qwen3 tokenizer files and
golden.json: the token ids and scores of the official Qwen3-Reranker recipe
(model card) run by `transformers` in float32.  The crossrank stage of the
tests reads these files and never imports torch.

Random weights are shaped so that the scores say something (with HF's default
init the last token's state barely depends on the document): embeddings and
every projection are drawn at unit scale (fan-in scaled), so each block adds
as much as the residual it reads; the q/k norms of the shallow models are
raised so that attention is sharper and content-dependent; all norm weights
are jittered so that an engine ignoring one of them fails; the "yes"/"no" rows
of the head are set from the principal direction of what varies in the last
token's final hidden state beyond prompt length, over the fixture's own pairs,
scaled for a logit spread of about two and centred near zero.  The build fails
if the scores are not spread out or if they move by 1e-5 or more between batch
size 1 and the recipe's padded batches of 8 (float noise: HF's RoPE at the
shifted positions of left-padded rows).

A fixture is rebuilt only when golden.json is missing or its "spec_hash"
differs from the hash of the fixture's spec, its pairs, the tokenizer files
and SCRIPT_VERSION (bump it whenever the build or reference code changes).
Derived fixtures (bf16, sharded, legacy config) are made from the files of
their source fixture, which is built first when needed.

This module imports torch lazily: the spec, the hash and the freshness check
are usable from the torch-free test process (see tests/_fixtures.py).
"""

import argparse
import contextlib
import hashlib
import importlib.util
import json
import math
import os
import shutil
import struct
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load_texts():
    spec = importlib.util.spec_from_file_location("crossrank_reference_texts", HERE / "texts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PAIRS = _load_texts().PAIRS

SCRIPT_VERSION = 1

ROOT = HERE.parents[1]
# The repository's assets/ (the Qwen3 tokenizer, the seed configs); CROSSRANK_ASSETS overrides it.
ASSETS = Path(os.environ.get("CROSSRANK_ASSETS", ROOT / "assets"))
TOKENIZER_DIR = ASSETS / "tokenizers" / "qwen3"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
MODEL_CONFIGS = ASSETS / "model-configs"
DEFAULT_OUT = Path(os.environ.get("CROSSRANK_FIXTURES", ROOT / "tests" / ".fixtures"))

# Exit status when torch/transformers cannot be imported (the autotools "skip").
EXIT_NO_TORCH = 77

THREADS = 2
REFERENCE_BATCH = 8          # the batch the model card's usage would run
NOISE_TOLERANCE = 1e-5       # max |score(batch 1) - score(batch 8)|

# The Qwen3-Reranker model card recipe (RECIPES.md).
QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on "
    "the Query and the Instruct provided. Note that the answer can only be \"yes\" "
    "or \"no\".<|im_end|>\n<|im_start|>user\n"
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_DEFAULT_INSTRUCTION = (
    "Given a web search query, retrieve relevant passages that answer the query"
)
QWEN3_MAX_LENGTH = 8192
TRUNCATION_MAX_LENGTH = 96
TRUNCATION_PAIRS = 12        # at most; at least 8 are required

# Weight shaping (see the module docstring).
SHAPING = {
    "embed_std": 1.0,          # token embeddings ~ N(0, embed_std^2)
    "linear_gain": 1.0,        # every projection ~ N(0, gain^2 / fan_in)
    "norm_jitter": 0.1,        # RMSNorm weights = scale * (1 + jitter * N(0, 1))
    "qk_norm_scale": 1.5,      # q_norm/k_norm scale: attention logits' std ~ scale^2
    "head_logit_iqr": 2.4,     # target IQR of logit_yes - logit_no (std ~1.8 if Gaussian)
    "head_abs_q95": 4.0,       # ... capped so that 95% of |logit| stay below this
    "head_common_rms": 2.0,    # RMS of the part the yes and no logits share
    "tied_rounds": 2,          # head fits with tied embeddings (see _set_head_rows)
}

TINY_CONFIG = {
    "vocab_size": 151669,
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,             # 4 * 32 != 64: Qwen3 allows it
    "tie_word_embeddings": False,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 40960,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}

# Pairs of the real-shape fixture: >= 32 pairs from 0 to 600+ document
# tokens, ordered so that the long documents share the last, short batch
# (the recipe pads each batch of 8 to its longest prompt).
QWEN3_06B_PAIRS = [
    0, 1, 2, 3, 46, 47, 48, 49,
    58, 44, 45, 34, 37, 41, 42, 50,
    51, 32, 52, 57, 38, 43, 14, 8,
    53, 54, 4, 5, 9, 19, 29, 27,
    25, 26,
]

FIXTURES = {
    "qwen3-tiny": {
        "kind": "random",
        "architecture": "Qwen3ForCausalLM",
        "config": TINY_CONFIG,
        "seed": 20250701,
        "pairs": "all",
        "slow": False,
    },
    "qwen3-tiny-bf16": {
        "kind": "derived",
        "source": "qwen3-tiny",
        "transform": {"dtype": "bfloat16"},
        "slow": False,
    },
    "qwen3-tiny-sharded": {
        "kind": "derived",
        "source": "qwen3-tiny",
        "transform": {"max_shard_size": "256KB"},
        "slow": False,
    },
    "qwen3-tiny-legacy": {
        "kind": "derived",
        "source": "qwen3-tiny",
        "transform": {"legacy_config": True},
        "slow": False,
    },
    "qwen3-tiny-tied": {
        "kind": "random",
        "architecture": "Qwen3ForCausalLM",
        "config": dict(TINY_CONFIG, tie_word_embeddings=True),
        "seed": 20250702,
        "pairs": "all",
        "slow": False,
    },
    "qwen3-0.6b": {
        "kind": "random",
        "architecture": "Qwen3ForCausalLM",
        "config_file": "Qwen3-Reranker-0.6B.json",
        # Sharp attention compounds over 28 layers: with the q/k norms at 2
        # the recipe's padded batches (RoPE at shifted positions) move the
        # scores by 2e-5, at 1.5 by ~5e-6, at 1 by ~1e-6.
        # The yes/no embeddings barely move its states: one head fit is enough.
        "shaping": {"qk_norm_scale": 1.0, "tied_rounds": 1},
        "seed": 20250703,
        "pairs": QWEN3_06B_PAIRS,
        "slow": True,
    },
}


# --------------------------------------------------------------------------
# Spec, hash, freshness (no torch)

def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pair_indices(spec):
    return list(range(len(PAIRS))) if spec["pairs"] == "all" else list(spec["pairs"])


def resolved_spec(name):
    """Everything a fixture's content depends on, as plain JSON data."""
    spec = dict(FIXTURES[name])
    if spec["kind"] == "derived":
        spec["source_spec"] = resolved_spec(spec["source"])
        return spec
    if "config_file" in spec:
        spec["config"] = json.loads((MODEL_CONFIGS / spec["config_file"]).read_text())
    spec["shaping"] = dict(SHAPING, **spec.get("shaping", {}))
    spec["pair_list"] = [PAIRS[i] for i in pair_indices(spec)]
    spec["tokenizer_sha256"] = {f: _sha256_file(TOKENIZER_DIR / f) for f in TOKENIZER_FILES}
    spec["recipe"] = {
        "prefix": QWEN3_PREFIX, "suffix": QWEN3_SUFFIX,
        "default_instruction": QWEN3_DEFAULT_INSTRUCTION,
        "max_length": QWEN3_MAX_LENGTH, "truncation_max_length": TRUNCATION_MAX_LENGTH,
        "batch": REFERENCE_BATCH, "threads": THREADS,
    }
    return spec


def spec_hash(name):
    blob = json.dumps({"script_version": SCRIPT_VERSION, "spec": resolved_spec(name)},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def read_golden(name, out):
    path = Path(out) / name / "golden.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_fresh(name, out):
    """True when DIR/NAME holds a complete fixture built from the current spec."""
    golden = read_golden(name, out)
    if golden is None or golden.get("spec_hash") != spec_hash(name):
        return False
    source = FIXTURES[name].get("source")
    if source is not None:
        src = read_golden(source, out)
        if not is_fresh(source, out) or src is None:
            return False
        return golden.get("source_weights_sha256") == src.get("weights_sha256")
    return True


def safetensors_files(model_dir):
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [model_dir / f for f in sorted(set(weight_map.values()))]
    return [model_dir / "model.safetensors"]


def safetensors_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return 8 + n, header


def weights_sha256(model_dir):
    """Digest of every tensor (name, dtype, shape, bytes) in name order,
    independent of how the checkpoint is split into files."""
    tensors = []
    for path in safetensors_files(model_dir):
        base, header = safetensors_header(path)
        for tname, info in header.items():
            tensors.append((tname, path, base, info))
    h = hashlib.sha256()
    for tname, path, base, info in sorted(tensors, key=lambda t: t[0]):
        begin, end = info["data_offsets"]
        h.update(json.dumps([tname, info["dtype"], info["shape"]]).encode())
        with open(path, "rb") as f:
            f.seek(base + begin)
            remaining = end - begin
            while remaining:
                block = f.read(min(remaining, 1 << 24))
                h.update(block)
                remaining -= len(block)
    return h.hexdigest()


# --------------------------------------------------------------------------
# The official recipe (Qwen3-Reranker model card), in transformers

def format_instruction(instruction, query, doc):
    if instruction is None:
        instruction = QWEN3_DEFAULT_INSTRUCTION
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"


class Qwen3RerankerRecipe:
    """The model card's code, kept as close to the card as possible."""

    def __init__(self, model_dir, load_model=True):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
        self.model = None
        if load_model:
            self.model = AutoModelForCausalLM.from_pretrained(
                model_dir, dtype=torch.float32).eval()
        self.token_false_id = self.tokenizer.convert_tokens_to_ids("no")
        self.token_true_id = self.tokenizer.convert_tokens_to_ids("yes")
        self.prefix_tokens = self.tokenizer.encode(QWEN3_PREFIX, add_special_tokens=False)
        self.suffix_tokens = self.tokenizer.encode(QWEN3_SUFFIX, add_special_tokens=False)

    def process_inputs(self, pairs, max_length):
        inputs = self.tokenizer(
            pairs, padding=False, truncation="longest_first", return_attention_mask=False,
            max_length=max_length - len(self.prefix_tokens) - len(self.suffix_tokens),
        )
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = self.prefix_tokens + ele + self.suffix_tokens
        unpadded = [list(ids) for ids in inputs["input_ids"]]
        inputs = self.tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=max_length)
        return inputs, unpadded

    def compute_logits(self, inputs, **model_kwargs):
        torch = self.torch
        with torch.no_grad():
            batch_scores = self.model(**inputs, **model_kwargs).logits[:, -1, :]
            true_vector = batch_scores[:, self.token_true_id]
            false_vector = batch_scores[:, self.token_false_id]
            raw = (true_vector - false_vector).tolist()
            batch_scores = torch.stack([false_vector, true_vector], dim=1)
            batch_scores = torch.nn.functional.log_softmax(batch_scores, dim=1)
            scores = batch_scores[:, 1].exp().tolist()
        return scores, raw

    def run(self, pairs, max_length, batch_size=REFERENCE_BATCH, **model_kwargs):
        """pairs: dicts with query/document/instruction. Returns ids, scores, logits."""
        texts = [format_instruction(p["instruction"], p["query"], p["document"]) for p in pairs]
        ids, scores, logits = [], [], []
        for start in range(0, len(texts), batch_size):
            inputs, unpadded = self.process_inputs(texts[start:start + batch_size], max_length)
            s, r = self.compute_logits(inputs, **model_kwargs)
            ids += unpadded
            scores += s
            logits += r
        return ids, scores, logits

    def joined_ids(self, pairs):
        """vLLM's request form: tokenizer(text_1 + text_2), special tokens as usual."""
        out = []
        for p in pairs:
            instruction = p["instruction"]
            if instruction is None:
                instruction = QWEN3_DEFAULT_INSTRUCTION
            text_1 = f"{QWEN3_PREFIX}<Instruct>: {instruction}\n<Query>: {p['query']}\n"
            text_2 = f"<Document>: {p['document']}{QWEN3_SUFFIX}"
            out.append(list(self.tokenizer(text_1 + text_2)["input_ids"]))
        return out

    def truncation_candidates(self, pairs, max_length):
        """Indices of pairs whose right-truncation at max_length cuts only
        inside the document, keeping at least 4 of its tokens and dropping
        at least 4."""
        budget = max_length - len(self.prefix_tokens) - len(self.suffix_tokens)
        found = []
        for i, p in enumerate(pairs):
            if not p["document"].strip():
                continue
            text = format_instruction(p["instruction"], p["query"], p["document"])
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            doc_start = len(text) - len(p["document"])
            first = next(k for k, (_, end) in enumerate(enc["offset_mapping"]) if end > doc_start)
            if first + 4 <= budget and len(enc["input_ids"]) >= budget + 4:
                found.append(i)
        return found


def score_stats(scores, logits, lengths):
    import numpy as np

    s = np.asarray(scores, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)
    log_len = np.log(np.asarray(lengths, dtype=np.float64))
    q25, q50, q75 = np.quantile(s, [0.25, 0.5, 0.75])
    return {
        "score_quartiles": [float(q25), float(q50), float(q75)],
        "score_iqr": float(q75 - q25),
        "score_min": float(s.min()),
        "score_max": float(s.max()),
        "fraction_outside_0.01_0.99": float(np.mean((s < 0.01) | (s > 0.99))),
        "logit_mean": float(z.mean()),
        "logit_std": float(z.std()),
        "logit_loglength_correlation": float(np.corrcoef(z, log_len)[0, 1]),
    }


# --------------------------------------------------------------------------
# Building

def _log(msg):
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _phase(what):
    started = time.time()
    yield
    _log(f"  {what}: {time.time() - started:.1f} s")


def _copy_tokenizer(dst):
    for f in TOKENIZER_FILES:
        shutil.copyfile(TOKENIZER_DIR / f, dst / f)


def _model_config(spec):
    from transformers import AutoConfig

    cfg = dict(spec["config"])
    cfg.pop("architectures", None)
    cfg.pop("torch_dtype", None)
    cfg.pop("dtype", None)
    model_type = cfg.pop("model_type", "qwen3")
    return AutoConfig.for_model(model_type, dtype="float32", **cfg)


def _init_weights(model, seed, shaping):
    """Draw every parameter from our own generator (see SHAPING)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    linear = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
              "lm_head"}
    norms = {"input_layernorm", "post_attention_layernorm", "norm"}
    with torch.no_grad():
        for name, p in model.named_parameters():
            parts = name.split(".")
            leaf, kind = parts[-2], parts[-1]
            if kind != "weight":
                raise ValueError(f"unexpected parameter {name}")
            if leaf == "embed_tokens":
                p.normal_(0.0, shaping["embed_std"], generator=gen)
            elif leaf in linear:
                p.normal_(0.0, shaping["linear_gain"] / math.sqrt(p.shape[1]), generator=gen)
            elif leaf in norms or leaf in ("q_norm", "k_norm"):
                scale = shaping["qk_norm_scale"] if leaf in ("q_norm", "k_norm") else 1.0
                p.normal_(0.0, shaping["norm_jitter"], generator=gen)
                p.add_(1.0).mul_(scale)
            else:
                raise ValueError(f"no init rule for parameter {name}")


def _last_hidden(model, recipe_tok, pairs):
    """Final-normed hidden state of the last token per pair (recipe
    tokenization; batches of similar length, so little padding) and the
    prompt lengths."""
    import torch

    texts = [format_instruction(p["instruction"], p["query"], p["document"]) for p in pairs]
    _, ids = recipe_tok.process_inputs(texts, QWEN3_MAX_LENGTH)
    order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
    rows = [None] * len(texts)
    for start in range(0, len(order), REFERENCE_BATCH):
        chunk = order[start:start + REFERENCE_BATCH]
        inputs, _ = recipe_tok.process_inputs([texts[i] for i in chunk], QWEN3_MAX_LENGTH)
        with torch.no_grad():
            h = model.model(**inputs).last_hidden_state[:, -1, :].double()
        for k, i in enumerate(chunk):
            rows[i] = h[k]
    return torch.stack(rows), torch.tensor([len(x) for x in ids], dtype=torch.float64)


def _orthonormal(vectors):
    import torch

    q, _ = torch.linalg.qr(torch.stack(vectors, dim=1))
    return q


def _set_head_rows(model, recipe_tok, pairs, seed, shaping):
    """Set the yes/no rows of the head from the last token's final hidden
    state h over `pairs`.

    logit_yes - logit_no = alpha * h.d.  d is the top principal direction u of
    what varies in h beyond prompt length: h is regressed on [1, log length],
    and u is taken from the residuals with the mean and length directions
    projected out, so the scores follow content rather than length.  A small
    multiple of the mean direction (length direction removed) puts the median
    logit at zero, and alpha gives the target IQR.  Both rows also share a
    random part orthogonal to d, so that logit_yes and logit_no are not mirror
    images.  With tied embeddings the rows are also the embeddings of "yes"
    and "no", which occur in the prompt's system text, so h moves when they
    change: recompute h and refit the scales along the same u (u itself would
    wander: the spectrum of h is rather flat)."""
    import torch

    weight = model.get_output_embeddings().weight
    yes, no = recipe_tok.token_true_id, recipe_tok.token_false_id
    gen = torch.Generator().manual_seed(seed + 1)
    r0 = torch.randn(weight.shape[1], generator=gen, dtype=torch.float64)
    tied = weight is model.get_input_embeddings().weight
    u = None
    for _ in range(shaping["tied_rounds"] if tied else 1):
        h, lengths = _last_hidden(model, recipe_tok, pairs)
        x = torch.stack([torch.ones_like(lengths), lengths.log()], dim=1)
        coef = torch.linalg.lstsq(x, h).solution            # [2, hidden]
        q = _orthonormal([h.mean(0), coef[1]])
        if u is None:
            resid = h - x @ coef
            resid = resid - (resid @ q) @ q.T
            u = torch.linalg.svd(resid, full_matrices=False).Vh[0]
            u = u * torch.sign(u[u.abs().argmax()])
        e = q[:, 0] - (q[:, 0] @ u) * u                     # mean direction, off u
        gamma = -(h @ u).median() / (h @ e).median()
        d = u + gamma * e
        z = h @ d
        q25, q75 = torch.quantile(z, 0.25), torch.quantile(z, 0.75)
        q95 = torch.quantile(z.abs(), 0.95)
        alpha = min(shaping["head_logit_iqr"] / (q75 - q25), shaping["head_abs_q95"] / q95)
        dhat = d / d.norm()
        r = r0 - (r0 @ dhat) * dhat
        r = r / r.norm()
        beta = shaping["head_common_rms"] / (h @ r).pow(2).mean().sqrt()
        with torch.no_grad():
            weight[yes] = (beta * r + alpha * d / 2).to(weight.dtype)
            weight[no] = (beta * r - alpha * d / 2).to(weight.dtype)
        _log(f"  head: logit IQR {float(alpha * (q75 - q25)):.2f}, |logit| q95 "
             f"{float(alpha * q95):.2f}, |d| {float(alpha * d.norm()):.2f}")


def _build_random(name, spec, tmp):
    import torch
    from transformers import Qwen3ForCausalLM
    from transformers.initialization import no_init_weights

    if spec["architecture"] != "Qwen3ForCausalLM":
        raise ValueError(f"{name}: unsupported architecture {spec['architecture']}")
    torch.manual_seed(spec["seed"])
    _copy_tokenizer(tmp)
    config = _model_config(spec)
    with _phase("init"):
        with no_init_weights():
            model = Qwen3ForCausalLM(config)
        if config.tie_word_embeddings:
            model.tie_weights()
        _init_weights(model, spec["seed"], spec["shaping"])
        model.eval()
    recipe_tok = Qwen3RerankerRecipe(tmp, load_model=False)
    with _phase("head fit"):
        _set_head_rows(model, recipe_tok, spec["pair_list"], spec["seed"], spec["shaping"])
    with _phase("save"):
        model.save_pretrained(tmp)
    del model


def _legacy_config(config):
    """transformers-5 keys -> the keys hub checkpoints carry."""
    cfg = dict(config)
    rope = cfg.pop("rope_parameters")
    if set(rope) != {"rope_type", "rope_theta"} or rope["rope_type"] != "default":
        raise ValueError(f"cannot express rope_parameters {rope} in legacy keys")
    theta = rope["rope_theta"]
    cfg["rope_theta"] = int(theta) if float(theta).is_integer() else theta
    cfg["rope_scaling"] = None
    cfg["torch_dtype"] = cfg.pop("dtype")
    return cfg


def _build_derived(name, spec, tmp, out):
    import torch
    from transformers import AutoModelForCausalLM

    src = Path(out) / spec["source"]
    transform = spec["transform"]
    _copy_tokenizer(tmp)
    if transform.get("legacy_config"):
        for f in src.iterdir():
            if f.name.endswith(".safetensors") or f.name == "generation_config.json":
                shutil.copyfile(f, tmp / f.name)
        config = json.loads((src / "config.json").read_text())
        (tmp / "config.json").write_text(
            json.dumps(_legacy_config(config), indent=2, sort_keys=True) + "\n")
        return
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    if "dtype" in transform:
        model = model.to(getattr(torch, transform["dtype"]))
    model.save_pretrained(tmp, max_shard_size=transform.get("max_shard_size", "50GB"))
    del model


def _write_golden(name, spec, tmp, out, started):
    import numpy as np
    import tokenizers
    import torch
    import transformers

    base = spec if spec["kind"] != "derived" else spec["source_spec"]
    pairs = base["pair_list"]
    with _phase("load"):
        recipe = Qwen3RerankerRecipe(tmp)
    with _phase("reference, batches of 8"):
        ids, scores, logits = recipe.run(pairs, QWEN3_MAX_LENGTH)
    joined = recipe.joined_ids(pairs)

    # Float noise: batch size 1 (no padding, positions from 0) and only the
    # last position through the LM head must give the same scores.
    with _phase("reference, batch size 1"):
        _, scores_1, logits_1 = recipe.run(pairs, QWEN3_MAX_LENGTH, batch_size=1,
                                           logits_to_keep=1)
    noise_s = float(np.max(np.abs(np.subtract(scores, scores_1))))
    noise_z = float(np.max(np.abs(np.subtract(logits, logits_1))))

    cand = recipe.truncation_candidates(pairs, TRUNCATION_MAX_LENGTH)
    if len(cand) > TRUNCATION_PAIRS:
        step = len(cand) / TRUNCATION_PAIRS
        cand = [cand[int(k * step)] for k in range(TRUNCATION_PAIRS)]
    if len(cand) < 8:
        raise RuntimeError(f"{name}: only {len(cand)} pairs qualify for the truncation case")
    t_pairs = [pairs[i] for i in cand]
    t_ids, t_scores, t_logits = recipe.run(t_pairs, TRUNCATION_MAX_LENGTH)
    attn = recipe.model.config._attn_implementation
    label_tokens = {"no": recipe.token_false_id, "yes": recipe.token_true_id}
    del recipe

    stats = score_stats(scores, logits, [len(x) for x in ids])
    stats["batch1_max_abs_score_diff"] = noise_s
    stats["batch1_max_abs_logit_diff"] = noise_z
    problems = []
    if not stats["score_iqr"] > 0.25:
        problems.append(f"score IQR {stats['score_iqr']:.3f} <= 0.25")
    if not stats["fraction_outside_0.01_0.99"] < 0.08:
        problems.append(f"{stats['fraction_outside_0.01_0.99']:.1%} of scores saturated")
    if not noise_s < NOISE_TOLERANCE:
        problems.append(f"scores move by {noise_s:.2e} between batch 1 and 8")
    if any(a != b for a, b in zip(ids, joined)):
        problems.append("joined (vLLM) ids differ from the recipe's ids")
    if problems:
        raise RuntimeError(f"{name}: " + "; ".join(problems))

    golden = {
        "fixture": name,
        "spec_hash": spec_hash(name),
        "script_version": SCRIPT_VERSION,
        "source_fixture": spec.get("source"),
        "source_weights_sha256": None,
        "slow": spec["slow"],
        "template": "qwen3-reranker",
        "max_length": QWEN3_MAX_LENGTH,
        "prefix": QWEN3_PREFIX,
        "suffix": QWEN3_SUFFIX,
        "default_instruction": QWEN3_DEFAULT_INSTRUCTION,
        "label_tokens": label_tokens,
        "pair_indices": pair_indices(base),
        "pairs": pairs,
        "input_ids": ids,
        "scores": scores,
        "logits": logits,
        "joined_input_ids": joined,
        "truncation": {
            "max_length": TRUNCATION_MAX_LENGTH,
            "pair_indices": [pair_indices(base)[i] for i in cand],
            "pairs": t_pairs,
            "input_ids": t_ids,
            "scores": t_scores,
            "logits": t_logits,
        },
        "unpadded": {
            # Batch size 1: no padding, positions from 0 (as crossrank runs),
            # only the last position through the LM head.
            "scores": scores_1,
            "logits": logits_1,
        },
        "stats": stats,
        "weights_sha256": weights_sha256(tmp),
        "seeds": {"torch_manual_seed": base["seed"], "init_generator_seed": base["seed"],
                  "head_generator_seed": base["seed"] + 1},
        "reference": {
            "torch": torch.__version__, "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__, "threads": torch.get_num_threads(),
            "batch": REFERENCE_BATCH, "dtype": "float32", "attn_implementation": attn,
        },
    }
    if spec["kind"] == "derived":
        src_golden = read_golden(spec["source"], out)
        golden["source_weights_sha256"] = src_golden["weights_sha256"]
        if spec["transform"].get("dtype") is None:
            # Same weights, so the same golden (computed, then compared).
            for key in ("input_ids", "joined_input_ids"):
                if golden[key] != src_golden[key]:
                    raise RuntimeError(f"{name}: {key} differ from {spec['source']}")
            diff = max(abs(a - b) for a, b in zip(scores, src_golden["scores"]))
            if diff > 1e-6 or golden["weights_sha256"] != src_golden["weights_sha256"]:
                raise RuntimeError(f"{name}: weights or scores differ from {spec['source']}"
                                   f" (max score diff {diff:.2e})")
    golden["build_seconds"] = round(time.time() - started, 1)
    # One top-level key per line: readable, and the id lists stay compact.
    lines = [f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in golden.items()]
    (tmp / "golden.json").write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    for f in tmp.iterdir():
        f.chmod(0o644)   # save_pretrained leaves some files 0600
    return golden


@contextlib.contextmanager
def _locked(out, name):
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock
        yield
        return
    with open(Path(out) / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build(name, out, force=False):
    """Build DIR/NAME unless it is fresh. Returns the golden dict and whether it was built."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = resolved_spec(name)
    if spec["kind"] == "derived":
        build(spec["source"], out)
    with _locked(out, name):
        if not force and is_fresh(name, out):
            return read_golden(name, out), False
        for stale in out.glob(f"{name}.tmp-*"):   # left by a killed build
            shutil.rmtree(stale, ignore_errors=True)
        tmp = out / f"{name}.tmp-{os.getpid()}"
        tmp.mkdir()
        started = time.time()
        try:
            import torch
            import transformers

            torch.set_num_threads(THREADS)
            transformers.utils.logging.disable_progress_bar()
            # The card's tokenizer.pad(..., padding=True, max_length=...) warns on every batch.
            warnings.filterwarnings("ignore", message="`max_length` is ignored when `padding`")
            _log(f"{name}: building in {tmp}")
            if spec["kind"] == "derived":
                _build_derived(name, spec, tmp, out)
            else:
                _build_random(name, spec, tmp)
            golden = _write_golden(name, spec, tmp, out, started)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        final = out / name
        old = out / f"{name}.old-{os.getpid()}"
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        return golden, True


def _torch_available():
    """None, or why the reference stage cannot run here."""
    try:
        import torch  # noqa: F401
        import transformers
    except ImportError as e:
        return str(e)
    if int(transformers.__version__.split(".")[0]) < 5:
        return f"transformers >= 5 is required, found {transformers.__version__}"
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help="fixture directory (default: $CROSSRANK_FIXTURES or tests/.fixtures)")
    ap.add_argument("--only", nargs="+", metavar="NAME", choices=sorted(FIXTURES),
                    help="build these fixtures (and the fixtures they derive from)")
    ap.add_argument("--skip-slow", action="store_true", help="leave out the real-shape fixtures")
    ap.add_argument("--force", action="store_true", help="rebuild even if fresh")
    ap.add_argument("--check", action="store_true",
                    help="build nothing; exit 1 if a selected fixture is missing or stale")
    ap.add_argument("--list", action="store_true", help="list fixtures and their state")
    args = ap.parse_args(argv)

    names = args.only or [n for n in FIXTURES if not (args.skip_slow and FIXTURES[n]["slow"])]
    if args.list or args.check:
        stale = [n for n in names if not is_fresh(n, args.out)]
        for n in names:
            state = "stale or missing" if n in stale else "fresh"
            print(f"{n:22s} {'slow' if FIXTURES[n]['slow'] else '    '}  {state}")
        return 1 if args.check and stale else 0

    if args.force or not all(is_fresh(n, args.out) for n in names):
        missing = _torch_available()
        if missing:
            print(f"make_fixtures: the reference stage needs torch and transformers ({missing})",
                  file=sys.stderr)
            return EXIT_NO_TORCH
    for n in names:
        started = time.time()
        golden, built = build(n, args.out, force=args.force)
        st = golden["stats"]
        print(f"{n:22s} {'built in %.1f s' % (time.time() - started) if built else 'cached':16s}"
              f" pairs={len(golden['scores'])} IQR={st['score_iqr']:.3f}"
              f" saturated={st['fraction_outside_0.01_0.99']:.1%}"
              f" logit={st['logit_mean']:+.2f}+-{st['logit_std']:.2f}"
              f" batch1-noise={st['batch1_max_abs_score_diff']:.1e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
