#!/usr/bin/env python3
"""Writes what the C driver (driver.c) needs to run a fixture without Python, and prints the
package's own logits for it, in the driver's output format.

    CROSSRANK_ISA=ref python csrc/cross/write_spec.py tests/.fixtures/qwen3-tiny --spec qwen3-tiny.spec

The spec is text: the cr_config exactly as the package hands it to the C core (floats as their
float32 bits, rope_inv_freq and the per-layer windows included), the head, and the token ids of the
first pairs of the fixture's golden.json as the package's prompt recipe encodes them. The fields
are taken from the call that loads the engine, so the driver's model is the package's. The logits
(one line per weight dtype and thread count: "DTYPE tTHREADS BITS...") come from the package's own
forward of the same sequences.
"""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

# The order driver.c reads them in.
INTS = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim"]
FLOATS = ["rms_norm_eps", "attn_scale", "embed_scale", "rope_attention_factor"]
BOOLS = ["qk_norm", "qkv_bias", "o_bias", "mlp_bias", "norm_add_one", "tie_word_embeddings"]
DTYPES = ["float32", "bfloat16", "int8"]
THREADS = [1, 2]
PAIRS = 4


def f32_bits(values):
    return " ".join(f"{b:08x}" for b in np.asarray(values, dtype=np.float32).reshape(-1).view(np.uint32))


def spec_text(params, head, input_ids):
    lines = ["crossrank-spec 1"]
    lines += [f"{k} {int(params[k])}" for k in INTS]
    # The C glue casts these Python floats to float: the same rounding as numpy's.
    lines += [f"{k} {f32_bits([params[k]])}" for k in FLOATS]
    lines += [f"{k} {int(bool(params[k]))}" for k in BOOLS]
    lines.append(f"activation {params['activation']}")
    windows = list(params["layer_windows"] or [])
    lines.append(" ".join(["layer_windows", str(len(windows))] + [str(int(w)) for w in windows]))
    inv_freq = np.asarray(params["rope_inv_freq"], dtype=np.float32)
    lines.append(f"rope_inv_freq {inv_freq.size} {f32_bits(inv_freq)}")
    if head["kind"] == "lm_rows":
        rows = [int(r) for r in head["rows"]]
        lines.append(" ".join(["head lm_rows", str(int(bool(head.get("two_way")))), str(len(rows))]
                              + [str(r) for r in rows]))
    else:
        lines.append(f"head {head['kind']}")
    lines.append(f"sequences {len(input_ids)}")
    lines += [" ".join([str(len(ids))] + [str(int(t)) for t in ids]) for ids in input_ids]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fixture", type=Path, help="a fixture folder: checkpoint, tokenizer, golden.json")
    parser.add_argument("--spec", type=Path, help="write the spec here")
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=DTYPES)
    args = parser.parse_args()

    import crossrank
    from crossrank.engine import Engine

    golden = json.loads((args.fixture / "golden.json").read_text())
    loads = []
    original = Engine.load.__func__

    def recording_load(cls, path, params, head, **kw):
        loads.append((dict(params), dict(head)))
        return original(cls, path, params, head, **kw)

    Engine.load = classmethod(recording_load)
    try:
        model = crossrank.CrossEncoder(args.fixture, template=golden.get("template"),
                                       hf_overrides=golden.get("hf_overrides"), dtype="float32", threads=1)
    finally:
        Engine.load = classmethod(original)
    (params, head), = loads
    pairs = golden["pairs"][:PAIRS]
    input_ids = model.tokenize([p["query"] for p in pairs], [p["document"] for p in pairs]).input_ids
    if args.spec is not None:
        args.spec.write_text(spec_text(params, head, input_ids))
    for dtype in args.dtypes:
        for threads in THREADS:
            # The same engine the model would load with this dtype and thread count.
            engine = Engine.load(str(args.fixture), params, head, dtype=dtype, threads=threads, check_finite=None)
            print(f"{dtype} t{threads} {f32_bits(engine.forward_ids(input_ids))}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
