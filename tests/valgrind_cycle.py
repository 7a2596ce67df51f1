"""Load, score and free a small model a few times through crossrank._core, for valgrind:

    python tests/valgrind_cycle.py --write DIR                  # writes a tiny checkpoint to DIR
    PYTHONMALLOC=malloc CROSSRANK_ISA=avx2 valgrind --leak-check=full --show-leak-kinds=definite \\
        python tests/valgrind_cycle.py DIR

No tokenizer (Rust) and no torch in the measured process: only NumPy and the engine, so every
definite leak valgrind reports with a crossrank frame in its stack is the engine's.
tests/test_memory.py runs this and fails on such a leak.
"""
import sys

import numpy as np

CYCLES = 3


def write(path: str) -> None:
    from _hardening import small_checkpoint

    small_checkpoint(__import__("pathlib").Path(path), seed=3, vocab_size=512, hidden_size=32,
                     intermediate_size=48, num_attention_heads=2, num_key_value_heads=1, head_dim=16)


def cycle(path: str) -> None:
    from crossrank import _core
    from crossrank.config import load_config

    from _hardening import OVERRIDES

    params = load_config(path, OVERRIDES).core_params()
    head = {"kind": "lm_rows", "rows": [9, 10], "two_way": True}
    tokens = np.arange(1, 41, dtype=np.int32)
    positions = np.concatenate([np.arange(25), np.arange(15)]).astype(np.int32)
    seq_start = np.array([0, 25, 40], dtype=np.int64)
    for _ in range(CYCLES):
        model = _core.Model(path, params, head, threads=2, check_finite=True)
        out = model.forward(tokens, positions, seq_start, control=_core.Control())
        assert out.shape == (2, 1) and np.isfinite(out).all()
        prefix = model.build_prefix(tokens[:10])
        model.forward(tokens[10:25], positions[10:25], np.array([0, 15], np.int64), prefixes=[prefix])
        try:  # a failing call must not leak either
            model.forward(np.array([10**6], np.int32), np.zeros(1, np.int32), np.array([0, 1], np.int64))
        except ValueError:
            pass
        del prefix, model
    try:
        _core.Model(path + "/missing", params, head)
    except OSError:
        pass
    print("cycles done")


if __name__ == "__main__":
    if sys.argv[1] == "--write":
        write(sys.argv[2])
    else:
        cycle(sys.argv[1])
