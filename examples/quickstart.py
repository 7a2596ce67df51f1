"""Rerank a few documents with Qwen3-Reranker on the CPU.

    python examples/quickstart.py                # Qwen/Qwen3-Reranker-0.6B if it is on this machine
    python examples/quickstart.py /path/to/model # any local Qwen3-Reranker directory or hub id

When no real weights can be found (no local copy, the hub unreachable), the demo builds a
checkpoint of the real Qwen3-Reranker-0.6B shape with RANDOM weights and says so: the pipeline,
the token counts and the speed are real, the relevance scores are not. The shape (config.json) and
the real Qwen3 tokenizer come from the repository's assets/; the checkpoint is written once under
$XDG_CACHE_HOME/crossrank (default ~/.cache/crossrank).
"""
import argparse
import sys
import time
from pathlib import Path

from crossrank import CrossEncoder, ModelNotFoundError, cpu_info
from crossrank.random_checkpoint import cache_dir, write_random_checkpoint

# The repository carries the real Qwen3 tokenizer and the published 0.6B config.json (assets/).
ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEMO_DIR = cache_dir() / "demo-qwen3-reranker-0.6b-random-weights"

QUERY = "What causes the seasons on Earth?"
DOCUMENTS = [
    "Earth's axis is tilted about 23.4 degrees relative to its orbit, so each hemisphere leans toward "
    "the Sun for part of the year and away from it for the other part. The tilt changes the angle and "
    "duration of sunlight, which is what drives summer and winter.",
    "The distance between Earth and the Sun changes only slightly during the year; Earth is actually "
    "closest to the Sun in early January, during the northern winter.",
    "Monsoon seasons in South Asia are driven by the temperature difference between the land and the "
    "Indian Ocean, which reverses the prevailing winds twice a year.",
    "A sourdough starter is a mixture of flour and water colonised by wild yeast and lactic acid "
    "bacteria; it needs regular feeding to stay active.",
    "The Tour de France is a multi-stage bicycle race held mainly in France every July.",
    "Deciduous trees drop their leaves in autumn to conserve water and energy during the cold months.",
]


def find_real_model(name):
    """A loaded CrossEncoder over real weights, or None if they are not on this machine."""
    try:
        return CrossEncoder(name, local_files_only=name == "Qwen/Qwen3-Reranker-0.6B")
    except ModelNotFoundError:
        return None


def random_weight_model():
    config_path = ASSETS / "model-configs" / "Qwen3-Reranker-0.6B.json"
    tokenizer_dir = ASSETS / "tokenizers" / "qwen3"
    if not config_path.is_file() or not (tokenizer_dir / "tokenizer.json").is_file():
        sys.exit(f"No real weights were found, and the shape and tokenizer files to build random ones are "
                 f"not at {ASSETS} (run the demo from a clone of the repository), or pass the path of a "
                 "downloaded Qwen3-Reranker directory.")
    import json

    if not (DEMO_DIR / "model.safetensors").is_file():
        print(f"Building a random-weight checkpoint of the Qwen3-Reranker-0.6B shape in {DEMO_DIR} ...")
        t0 = time.perf_counter()
        write_random_checkpoint(DEMO_DIR, json.loads(config_path.read_text()), tokenizer_dir, seed=0)
        print(f"  done in {time.perf_counter() - t0:.1f} s")
    return CrossEncoder(DEMO_DIR, template="qwen3-reranker")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="Qwen/Qwen3-Reranker-0.6B")
    args = parser.parse_args()

    model = find_real_model(args.model)
    if model is not None:
        print(f"Weights: REAL, {args.model} from {model.path}")
    else:
        if args.model != "Qwen/Qwen3-Reranker-0.6B":
            sys.exit(f"Could not find {args.model}.")
        model = random_weight_model()
        print("Weights: RANDOM (Qwen/Qwen3-Reranker-0.6B could not be found or downloaded here).")
        print("         The scores below show that the pipeline runs and how fast; they say nothing")
        print("         about relevance. Pass the path of a real Qwen3-Reranker checkpoint for real scores.")
    print(f"Model: {model}")
    print(f"CPU kernels: {cpu_info()['isa']}")

    tokens = sum(model.tokenize(QUERY, DOCUMENTS).num_tokens)
    t0 = time.perf_counter()
    ranked = model.rank(QUERY, DOCUMENTS, return_documents=True)
    elapsed = time.perf_counter() - t0
    print(f"\nQuery: {QUERY}")
    for r in ranked:
        print(f"  {r['score']:.4f}  [{r['corpus_id']}] {r['text'][:90]}...")
    print(f"\n{len(DOCUMENTS)} pairs, {tokens} tokens in {elapsed:.2f} s "
          f"({len(DOCUMENTS) / elapsed:.1f} pairs/s, {tokens / elapsed:.0f} tokens/s, {model.dtype})")


if __name__ == "__main__":
    main()
