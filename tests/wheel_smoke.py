"""Smoke test of an installed crossrank, e.g. a wheel in a fresh virtual environment.

    python tests/wheel_smoke.py --checkpoint DIR --write --tokenizer assets/tokenizers/qwen3 --out a.json
    qemu-x86_64 -cpu Haswell venv/bin/python tests/wheel_smoke.py --checkpoint DIR --expect-isa avx2 --out b.json

Imports crossrank (refusing a copy under --not-under, such as the source tree), checks the kernel
level the CPU gets (--expect-isa) and what the build links (--expect-blas), scores a tiny
random-weight Qwen3 checkpoint in float32 with the Qwen3-Reranker template, and, unless --no-cli,
runs `crossrank --help` from the same environment. Writes the scores' float32 bit patterns to
--out, so runs of different builds and CPUs can be compared bitwise. Exits non-zero on any failure.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

TINY_QWEN3 = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 151669, "hidden_size": 64,
    "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 32, "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
    "tie_word_embeddings": False, "hidden_act": "silu", "bos_token_id": 151643, "eos_token_id": 151645,
    "initializer_range": 0.02,
}
QUERY = "What causes the seasons on Earth?"
DOCUMENTS = [
    "Earth's axis is tilted about 23.4 degrees, so each hemisphere leans toward the Sun for part of the year.",
    "Earth is closest to the Sun in early January, during the northern winter.",
    "A sourdough starter is a mixture of flour and water colonised by wild yeast.",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--write", action="store_true", help="write the tiny random checkpoint first")
    parser.add_argument("--tokenizer", type=Path, help="Qwen3 tokenizer folder (with --write)")
    parser.add_argument("--expect-isa")
    parser.add_argument("--expect-blas")
    parser.add_argument("--not-under", type=Path, help="fail if crossrank is imported from below this folder")
    parser.add_argument("--no-cli", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import numpy as np

    import crossrank
    from crossrank.random_checkpoint import write_random_checkpoint

    where = Path(crossrank.__file__).resolve()
    if args.not_under is not None and args.not_under.resolve() in where.parents:
        sys.exit(f"crossrank was imported from {where}, inside {args.not_under}: not the installed copy")
    info = crossrank.cpu_info()
    build = crossrank.build_info()
    if args.expect_isa and info["isa"] != args.expect_isa:
        sys.exit(f"kernel level {info['isa']!r}, expected {args.expect_isa!r} ({info})")
    if args.expect_blas and build["blas"] != args.expect_blas:
        sys.exit(f"build links {build['blas']!r}, expected {args.expect_blas!r}")
    if args.write:
        write_random_checkpoint(args.checkpoint, TINY_QWEN3, args.tokenizer, seed=0, dtype="float32")
    model = crossrank.CrossEncoder(args.checkpoint, template="qwen3-reranker", dtype="float32", threads=1)
    scores = np.asarray(model.score(QUERY, DOCUMENTS), dtype=np.float32)
    if scores.shape != (len(DOCUMENTS),) or not np.all(np.isfinite(scores)) or np.ptp(scores) == 0:
        sys.exit(f"bad scores {scores!r}")
    if not args.no_cli:
        cli = Path(sys.executable).with_name("crossrank")
        proc = subprocess.run([str(cli), "--help"], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0 or "serve" not in proc.stdout:
            sys.exit(f"`crossrank --help` failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result = {"crossrank": str(where), "isa": info["isa"], "blas": build["blas"],
              "scores": [float(s) for s in scores], "bits": [int(b) for b in scores.view(np.uint32)]}
    args.out.write_text(json.dumps(result) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
