"""The Qwen3 fixtures: random-weight Qwen3 checkpoints and the golden scores of the official
Qwen3-Reranker recipe (model card, recipe_qwen3.Qwen3RerankerRecipe) run by `transformers` in
float32.

Each fixture is a directory DIR/NAME/ holding a checkpoint written by `transformers` (config.json,
safetensors), the real Qwen3 tokenizer files and golden.json: the token ids and scores of the
recipe. The crossrank stage of the tests reads these files and never imports torch.

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

torch is imported inside the build functions only.
"""

import json
import math
import shutil
import time
import warnings
from pathlib import Path

from recipe_qwen3 import (QWEN3_DEFAULT_INSTRUCTION, QWEN3_MAX_LENGTH, QWEN3_PREFIX, QWEN3_SUFFIX,
                          Qwen3RerankerRecipe, format_instruction)
from reference_stage import (MODEL_CONFIGS, PAIRS, REFERENCE_BATCH, build_atomically,
                             copy_qwen3_tokenizer, log, orthonormal, pair_indices, phase,
                             read_golden, reference_versions, score_stats, seeds, spread_problems,
                             tokenizer_sha256, weights_sha256, write_golden)
from reference_stage import spec_hash as _spec_hash

SCRIPT_VERSION = 1

THREADS = 2
NOISE_TOLERANCE = 1e-5       # max |score(batch 1) - score(batch 8)|
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
    spec["tokenizer_sha256"] = tokenizer_sha256()
    spec["recipe"] = {
        "prefix": QWEN3_PREFIX, "suffix": QWEN3_SUFFIX,
        "default_instruction": QWEN3_DEFAULT_INSTRUCTION,
        "max_length": QWEN3_MAX_LENGTH, "truncation_max_length": TRUNCATION_MAX_LENGTH,
        "batch": REFERENCE_BATCH, "threads": THREADS,
    }
    return spec


def spec_hash(name):
    return _spec_hash(SCRIPT_VERSION, resolved_spec(name))


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


# --------------------------------------------------------------------------
# Building

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
        q = orthonormal([h.mean(0), coef[1]])
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
        log(f"  head: logit IQR {float(alpha * (q75 - q25)):.2f}, |logit| q95 "
             f"{float(alpha * q95):.2f}, |d| {float(alpha * d.norm()):.2f}")


def _build_random(name, spec, tmp):
    import torch
    from transformers import Qwen3ForCausalLM
    from transformers.initialization import no_init_weights

    if spec["architecture"] != "Qwen3ForCausalLM":
        raise ValueError(f"{name}: unsupported architecture {spec['architecture']}")
    torch.manual_seed(spec["seed"])
    copy_qwen3_tokenizer(tmp)
    config = _model_config(spec)
    with phase("init"):
        with no_init_weights():
            model = Qwen3ForCausalLM(config)
        if config.tie_word_embeddings:
            model.tie_weights()
        _init_weights(model, spec["seed"], spec["shaping"])
        model.eval()
    recipe_tok = Qwen3RerankerRecipe(tmp, load_model=False)
    with phase("head fit"):
        _set_head_rows(model, recipe_tok, spec["pair_list"], spec["seed"], spec["shaping"])
    with phase("save"):
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
    copy_qwen3_tokenizer(tmp)
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

    base = spec if spec["kind"] != "derived" else spec["source_spec"]
    pairs = base["pair_list"]
    with phase("load"):
        recipe = Qwen3RerankerRecipe(tmp)
    with phase("reference, batches of 8"):
        ids, scores, logits = recipe.run(pairs, QWEN3_MAX_LENGTH)
    joined = recipe.joined_ids(pairs)

    # Float noise: batch size 1 (no padding, positions from 0) and only the
    # last position through the LM head must give the same scores.
    with phase("reference, batch size 1"):
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
    problems = spread_problems(stats)
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
        "seeds": seeds(base["seed"]),
        "reference": reference_versions(attn),
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
    write_golden(tmp, golden)
    return golden


def build(name, out, force=False):
    """Build DIR/NAME (and first the fixture it derives from) unless it is fresh. Returns the golden
    dict and whether it was built."""
    spec = resolved_spec(name)
    if spec["kind"] == "derived":
        build(spec["source"], out)

    def make(tmp, started):
        import torch
        import transformers

        torch.set_num_threads(THREADS)
        transformers.utils.logging.disable_progress_bar()
        # The card's tokenizer.pad(..., padding=True, max_length=...) warns on every batch.
        warnings.filterwarnings("ignore", message="`max_length` is ignored when `padding`")
        log(f"{name}: building in {tmp}")
        if spec["kind"] == "derived":
            _build_derived(name, spec, tmp, out)
        else:
            _build_random(name, spec, tmp)
        return _write_golden(name, spec, tmp, out, started)

    return build_atomically(name, out, force, is_fresh, make)


def summary(golden):
    """One line of figures on a built or cached fixture."""
    st = golden["stats"]
    return (f"pairs={len(golden['scores'])} IQR={st['score_iqr']:.3f}"
            f" saturated={st['fraction_outside_0.01_0.99']:.1%}"
            f" logit={st['logit_mean']:+.2f}+-{st['logit_std']:.2f}"
            f" batch1-noise={st['batch1_max_abs_score_diff']:.1e}")
