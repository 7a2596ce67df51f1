#!/usr/bin/env python
"""Reference stage of the test suite: random-weight checkpoints and golden scores.

    python tests/reference/make_fixtures.py --out tests/.fixtures [--only NAME ...] [--force]

One CLI for every fixture. Each fixture is a directory DIR/NAME/ holding a checkpoint written by
`transformers`, its tokenizer files and golden.json: the token ids and scores of the family's
official recipe, run by `transformers` in float32. The crossrank stage of the tests reads these
files and never imports torch.

    reference_stage.py   what every recipe shares: paths, pairs, hashes, freshness, golden files,
                         weight digests, locking, the atomic build, the Recipe protocol
    recipe_qwen3.py      Qwen3-Reranker (model card)
    recipe_mxbai.py      mxbai-rerank-v2 (mixedbread's MxbaiRerankV2)
    recipe_flag_llm.py   bge-reranker-v2-gemma (FlagEmbedding's FlagLLMReranker), Gemma tokenizer
    fixtures_qwen3.py    the qwen3-* fixtures (the card's padded batches, derived fixtures)
    fixtures_family.py   the mxbai, gemma, llama and mistral fixtures
    texts.py             the query/document pairs

A fixture is rebuilt only when golden.json is missing or its "spec_hash" differs from the hash of
its spec. This module imports torch lazily: the spec, the hash and the freshness check are usable
from the torch-free test process (tests/_fixtures.py).
"""

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:   # the stage's modules sit beside this file
    sys.path.insert(0, str(HERE))

import fixtures_family  # noqa: E402
import fixtures_qwen3  # noqa: E402
from reference_stage import DEFAULT_OUT, EXIT_NO_TORCH, torch_available  # noqa: E402
# For the test helpers (tests/_fixtures.py: specs()), which load this file by its path.
from reference_stage import TOKENIZER_DIR, safetensors_files, weights_sha256  # noqa: E402,F401

# The fixture sets, in build order; fixture names are unique across them.
FIXTURE_SETS = {"qwen3": fixtures_qwen3, "family": fixtures_family}
FIXTURES = {name: spec for module in FIXTURE_SETS.values() for name, spec in module.FIXTURES.items()}


def fixture_set(name):
    """The module (fixtures_qwen3 or fixtures_family) that builds fixture `name`."""
    for module in FIXTURE_SETS.values():
        if name in module.FIXTURES:
            return module
    raise KeyError(f"unknown reference fixture {name!r}; known: {sorted(FIXTURES)}")


def resolved_spec(name):
    return fixture_set(name).resolved_spec(name)


def spec_hash(name):
    return fixture_set(name).spec_hash(name)


def is_fresh(name, out):
    """True when DIR/NAME holds a complete fixture built from the current spec."""
    return fixture_set(name).is_fresh(name, out)


def build(name, out, force=False):
    """Build DIR/NAME unless it is fresh. Returns the golden dict and whether it was built."""
    return fixture_set(name).build(name, out, force=force)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help="fixture directory (default: $CROSSRANK_FIXTURES or tests/.fixtures)")
    ap.add_argument("--only", nargs="+", metavar="NAME", choices=sorted(FIXTURES),
                    help="build these fixtures (and the fixtures they derive from)")
    ap.add_argument("--set", choices=sorted(FIXTURE_SETS), dest="fixture_set",
                    help="only the fixtures of this set (qwen3: the Qwen3 card recipe on Qwen3 "
                         "checkpoints; family: the other families)")
    ap.add_argument("--skip-slow", action="store_true", help="leave out the real-shape fixtures")
    ap.add_argument("--force", action="store_true", help="rebuild even if fresh")
    ap.add_argument("--check", action="store_true",
                    help="build nothing; exit 1 if a selected fixture is missing or stale")
    ap.add_argument("--list", action="store_true", help="list fixtures and their state")
    args = ap.parse_args(argv)

    pool = FIXTURE_SETS[args.fixture_set].FIXTURES if args.fixture_set else FIXTURES
    names = args.only or [n for n in pool if not (args.skip_slow and pool[n]["slow"])]
    if args.list or args.check:
        stale = [n for n in names if not is_fresh(n, args.out)]
        for n in names:
            state = "stale or missing" if n in stale else "fresh"
            print(f"{n:24s} {'slow' if FIXTURES[n]['slow'] else '    '}  {state}")
        return 1 if args.check and stale else 0

    if args.force or not all(is_fresh(n, args.out) for n in names):
        missing = torch_available()
        if missing:
            print(f"make_fixtures: the reference stage needs torch and transformers ({missing})",
                  file=sys.stderr)
            return EXIT_NO_TORCH
    for n in names:
        started = time.time()
        golden, built = build(n, args.out, force=args.force)
        print(f"{n:24s} {'built in %.1f s' % (time.time() - started) if built else 'cached':16s}"
              f" {fixture_set(n).summary(golden)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
