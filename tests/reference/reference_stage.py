"""What every recipe of the reference stage shares: paths, the test pairs, spec hashes, freshness,
golden files, weight digests, score statistics, logging, locking, the atomic build of a fixture
directory, and the parts of the libraries' tokenization that the recipes reproduce.

Importing it has no side effects and does not import torch: the spec, the hash and the freshness
check are usable from the torch-free test process (tests/_fixtures.py). The recipes
(recipe_*.py) and the fixture sets (fixtures_*.py) build on it; make_fixtures.py is the CLI.
"""

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
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# The repository's assets/ (the Qwen3 tokenizer, the seed configs); CROSSRANK_ASSETS overrides it.
ASSETS = Path(os.environ.get("CROSSRANK_ASSETS", ROOT / "assets"))
TOKENIZER_DIR = ASSETS / "tokenizers" / "qwen3"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
MODEL_CONFIGS = ASSETS / "model-configs"
DEFAULT_OUT = Path(os.environ.get("CROSSRANK_FIXTURES", ROOT / "tests" / ".fixtures"))

# Exit status when torch/transformers cannot be imported (the autotools "skip").
EXIT_NO_TORCH = 77

REFERENCE_BATCH = 8          # the batch the libraries' usage would run


def _load_texts():
    spec = importlib.util.spec_from_file_location("crossrank_reference_texts", HERE / "texts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PAIRS = _load_texts().PAIRS


# --------------------------------------------------------------------------
# Spec, hash, freshness (no torch)

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tokenizer_sha256():
    """Digests of the Qwen3 tokenizer files (part of the spec of every fixture that uses them)."""
    return {f: sha256_file(TOKENIZER_DIR / f) for f in TOKENIZER_FILES}


def pair_indices(spec):
    return list(range(len(PAIRS))) if spec["pairs"] == "all" else list(spec["pairs"])


def spec_hash(script_version, resolved):
    """Hash of a fixture's resolved spec (plain JSON data) and its script's version."""
    blob = json.dumps({"script_version": script_version, "spec": resolved},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def read_golden(name, out):
    path = Path(out) / name / "golden.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_golden(tmp, golden):
    """golden.json, one top-level key per line (readable, and the id lists stay compact); every
    file of the fixture made world-readable (save_pretrained leaves some files 0600)."""
    lines = [f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in golden.items()]
    (tmp / "golden.json").write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    for f in tmp.iterdir():
        f.chmod(0o644)


def copy_qwen3_tokenizer(dst):
    for f in TOKENIZER_FILES:
        shutil.copyfile(TOKENIZER_DIR / f, Path(dst) / f)


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


def spread_problems(stats):
    """What makes the scores unfit for parity tests: too narrow a spread, or saturated."""
    problems = []
    if not stats["score_iqr"] > 0.25:
        problems.append(f"score IQR {stats['score_iqr']:.3f} <= 0.25")
    if not stats["fraction_outside_0.01_0.99"] < 0.08:
        problems.append(f"{stats['fraction_outside_0.01_0.99']:.1%} of scores saturated")
    return problems


def sigmoid(x):
    return 0.5 * (1.0 + math.tanh(0.5 * x))


def orthonormal(vectors):
    import torch

    q, _ = torch.linalg.qr(torch.stack(vectors, dim=1))
    return q


def reference_versions(attn):
    """The "reference" section of a golden file: who computed it, and how."""
    import tokenizers
    import torch
    import transformers

    return {
        "torch": torch.__version__, "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__, "threads": torch.get_num_threads(),
        "batch": REFERENCE_BATCH, "dtype": "float32", "attn_implementation": attn,
    }


def seeds(seed):
    return {"torch_manual_seed": seed, "init_generator_seed": seed, "head_generator_seed": seed + 1}


# --------------------------------------------------------------------------
# Logging, locking, building

def log(msg):
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def phase(what):
    started = time.time()
    yield
    log(f"  {what}: {time.time() - started:.1f} s")


@contextlib.contextmanager
def locked(out, name):
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


def build_atomically(name, out, force, fresh, make):
    """Build DIR/NAME unless fresh(name, out). make(tmp, started) writes the fixture into the
    empty directory tmp and returns its golden dict; tmp then replaces DIR/NAME. Under a lock, so
    that concurrent test processes build a fixture once. Returns the golden dict and whether it
    was built."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with locked(out, name):
        if not force and fresh(name, out):
            return read_golden(name, out), False
        for stale in out.glob(f"{name}.tmp-*"):   # left by a killed build
            shutil.rmtree(stale, ignore_errors=True)
        tmp = out / f"{name}.tmp-{os.getpid()}"
        tmp.mkdir()
        started = time.time()
        try:
            golden = make(tmp, started)
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


def torch_available():
    """None, or why the reference stage cannot run here."""
    try:
        import torch  # noqa: F401
        import transformers
        import transformers.initialization  # noqa: F401
    except ImportError as e:
        return str(e)
    if int(transformers.__version__.split(".")[0]) < 5:
        return f"transformers >= 5 is required, found {transformers.__version__}"
    return None


# --------------------------------------------------------------------------
# The libraries' tokenization, as the recipes use it

def prepare_for_model_only_second(ids, pair_ids, max_length):
    """transformers 4's prepare_for_model(..., truncation="only_second", add_special_tokens=False):
    ids + pair_ids, the end of pair_ids cut so that the total fits max_length. As in
    transformers 4, nothing is cut (the library logs an error) when pair_ids is too short.
    transformers 5 dropped prepare_for_model from fast tokenizers, so the official libraries do
    not run on it as written; this is the only part of it the recipes use."""
    excess = len(ids) + len(pair_ids) - max_length
    if max_length and excess > 0:
        if len(pair_ids) > excess:
            pair_ids = pair_ids[:-excess]
        else:
            log(f"  only_second: cannot remove {excess} tokens from a second sequence of "
                f"{len(pair_ids)} (transformers 4 keeps it whole)")
    return list(ids) + list(pair_ids)


def first_token_after(tokenizer, text, n_chars):
    """Index of the first token of tokenizer(text) that ends after character n_chars."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    for k, (_, end) in enumerate(enc["offset_mapping"]):
        if end > n_chars:
            return k
    return len(enc["input_ids"])


class Recipe:
    """Tokenization (no model needed) and scoring (model) of one family's official recipe.

    encode(pairs, max_length) -> (ids, details); logits(model, ids) -> raw scores of the padded
    batches the library would run; head_logits(model, ids) -> raw scores run unpadded, one
    sequence at a time (vLLM's way); request_texts(pair) -> vLLM's (text_1, text_2);
    label_tokens: the head's token ids by name.
    """

    pad_to_multiple_of = 8
    #: the model's config, where the builder has one before the model directory holds it
    config = None

    def __init__(self, model_dir):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"

    def ids_of(self, text):
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode(self, pairs, max_length):
        raise NotImplementedError

    def request_texts(self, pair):
        raise NotImplementedError

    def score_rows(self, logits_last):
        """Raw score from the last position's logits [batch, vocab] (float32 tensor)."""
        raise NotImplementedError

    def _batches(self, ids, batch_size):
        for start in range(0, len(ids), batch_size):
            yield list(range(start, min(start + batch_size, len(ids))))

    def logits(self, model, ids, batch_size=REFERENCE_BATCH):
        import torch

        out = [None] * len(ids)
        for chunk in self._batches(ids, batch_size):
            feats = [{"input_ids": ids[i], "attention_mask": [1] * len(ids[i])} for i in chunk]
            batch = self.tokenizer.pad(feats, padding="longest", pad_to_multiple_of=self.pad_to_multiple_of,
                                       return_tensors="pt")
            # The libraries compute the logits of every position and read the last; the LM head
            # is applied position by position, so computing the last one only (logits_to_keep)
            # gives the same values at a fraction of the cost (151k-row head).
            with torch.no_grad():
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               logits_to_keep=1).logits
            rows = self.score_rows(self.last_logits(logits, batch["attention_mask"]))
            for k, i in enumerate(chunk):
                out[i] = float(rows[k])
        return out

    @staticmethod
    def last_logits(logits, attention_mask):
        return logits[:, -1, :]

    def head_logits(self, model, ids):
        """Unpadded, batch size 1, only the last position through the LM head."""
        import torch

        out = []
        for seq in ids:
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([seq]), logits_to_keep=1).logits
            out.append(float(self.score_rows(logits[:, -1, :])[0]))
        return out


def encode_grouped(recipe, pairs, max_length):
    """recipe.encode on pairs in one call per instruction (the libraries take one instruction
    or prompt per call), in the pairs' order."""
    ids, details = [None] * len(pairs), [None] * len(pairs)
    groups = {}
    for i, p in enumerate(pairs):
        groups.setdefault(p["instruction"], []).append(i)
    for idx in groups.values():
        got, det = recipe.encode([pairs[i] for i in idx], max_length)
        for k, i in enumerate(idx):
            ids[i] = got[k]
            details[i] = det[k] if det is not None else None
    return ids, details
