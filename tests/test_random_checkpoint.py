"""crossrank.random_checkpoint writes the random-weight checkpoints of the benchmarks (up to the
Qwen3-Reranker-8B shape, ~16 GB in bf16): it must stream (memory flat whatever the size, never
the checkpoint or a whole tensor in RAM) and write bf16 directly, rounded to nearest even from
the same float32 values it writes in float32 mode.
"""
import json
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from crossrank.random_checkpoint import tensor_shapes, write_random_checkpoint

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "model-configs"
MIB = 1 << 20


def small_config(**changes):
    config = json.loads((ASSETS / "Qwen3-Reranker-0.6B.json").read_text(encoding="utf-8"))
    config.update(vocab_size=4000, hidden_size=128, num_hidden_layers=2, intermediate_size=300,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=32)
    config.update(changes)
    return config


def read_tensors(path):
    raw = Path(path, "model.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    data = raw[8 + n:]
    return header, data


def test_bf16_is_the_float32_values_rounded_to_nearest_even(tmp_path):
    config = small_config()
    write_random_checkpoint(tmp_path / "f32", config, seed=7, dtype="float32")
    write_random_checkpoint(tmp_path / "bf16", config, seed=7, dtype="bfloat16")
    h32, d32 = read_tensors(tmp_path / "f32")
    h16, d16 = read_tensors(tmp_path / "bf16")
    assert list(h32) == list(h16) == [name for name, _ in tensor_shapes(config)]
    for name, meta in h16.items():
        assert meta["dtype"] == "BF16" and h32[name]["dtype"] == "F32" and meta["shape"] == h32[name]["shape"]
        a, b = h32[name]["data_offsets"]
        f32 = np.frombuffer(d32[a:b], dtype="<f4")
        a, b = meta["data_offsets"]
        bf16 = np.frombuffer(d16[a:b], dtype="<u2")
        # reference rounding in float64 arithmetic: the nearest bf16, ties to even
        bits = f32.view("<u4").astype(np.uint64)
        expected = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        np.testing.assert_array_equal(bf16, expected, err_msg=name)
        assert np.isfinite(f32).all() and f32.std() > 0
    cfg = json.loads((tmp_path / "bf16" / "config.json").read_text(encoding="utf-8"))
    assert cfg["torch_dtype"] == "bfloat16"


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_memory_stays_flat_whatever_the_checkpoint_size(tmp_path, dtype):
    """The embedding alone (32768 x 2048) is 128 MiB in bf16 and 256 MiB in float32; NumPy reports
    its allocations to tracemalloc, and the writer's peak must stay at its block size."""
    config = small_config(vocab_size=32768, hidden_size=2048, intermediate_size=1024, num_hidden_layers=1,
                          num_attention_heads=16, num_key_value_heads=8, head_dim=128)
    tracemalloc.start()
    try:
        write_random_checkpoint(tmp_path, config, seed=1, dtype=dtype)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    size = (tmp_path / "model.safetensors").stat().st_size
    assert size > 128 * MIB
    assert peak < 32 * MIB, f"writing {size / MIB:.0f} MiB held {peak / MIB:.0f} MiB at once"


def test_the_4b_and_8b_shapes_have_the_published_tensor_table():
    for name, params in (("Qwen3-Reranker-4B", 4.02e9), ("Qwen3-Reranker-8B", 8.19e9)):
        config = json.loads((ASSETS / f"{name}.json").read_text(encoding="utf-8"))
        total = sum(int(np.prod(shape)) for _, shape in tensor_shapes(config))
        assert abs(total - params) / params < 0.01, (name, total)


def test_an_unknown_dtype_is_refused(tmp_path):
    with pytest.raises(ValueError, match="bfloat16"):
        write_random_checkpoint(tmp_path, small_config(), dtype="float16")
