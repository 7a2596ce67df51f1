"""Numerical guards: NaN or Inf in the weights is refused at load (on by default for small
models, check_finite=True/False to force it), and a non-finite logit is never returned as a
score (NumericalError). No torch.
"""
import json
import struct

import numpy as np
import pytest

import crossrank
from crossrank import CheckpointError, CrossEncoder, NumericalError
from _hardening import OVERRIDES, core_model, small_checkpoint, token_ids
from crossrank.safetensors_writer import f32_to_bf16

SEQS = [token_ids(20, 1), token_ids(9, 2)]


def poison(path, name, index, value):
    """Overwrites element `index` (flat) of tensor `name` in path/model.safetensors with `value`,
    in the tensor's own dtype."""
    f = path / "model.safetensors"
    data = bytearray(f.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    entry = json.loads(data[8:8 + n])[name]
    begin = 8 + n + entry["data_offsets"][0]
    if entry["dtype"] == "F32":
        data[begin + 4 * index:begin + 4 * index + 4] = struct.pack("<f", value)
    elif entry["dtype"] == "BF16":
        data[begin + 2 * index:begin + 2 * index + 2] = struct.pack(
            "<H", int(f32_to_bf16(np.array([value], np.float32))[0]))
    else:
        raise ValueError(entry["dtype"])
    f.write_bytes(bytes(data))


def forward(engine, seqs):
    flat = np.concatenate([np.asarray(s, np.int32) for s in seqs])
    pos = np.concatenate([np.arange(len(s), dtype=np.int32) for s in seqs])
    start = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    return engine.forward(flat, pos, start)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name,index,value", [
    ("model.layers.1.self_attn.k_proj.weight", 17, float("nan")),
    ("model.layers.0.mlp.down_proj.weight", 5, float("inf")),
    ("model.layers.0.input_layernorm.weight", 3, float("-inf")),
    ("model.norm.weight", 0, float("nan")),
    ("model.embed_tokens.weight", 9999 * 64 + 63, float("inf")),  # last element of the table
])
def test_non_finite_weights_are_refused_at_load_by_default(tmp_path, dtype, name, index, value):
    path = small_checkpoint(tmp_path, seed=4, dtype=dtype)
    poison(path, name, index, value)
    kind = "NaN" if value != value else "an infinity"
    with pytest.raises(CheckpointError, match=rf"tensor {name.replace('.', '[.]')} in model\.safetensors holds {kind}"):
        CrossEncoder(path, hf_overrides=OVERRIDES)
    with pytest.raises(CheckpointError, match="holds"):
        core_model(path, check_finite=True)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
@pytest.mark.parametrize("layer", ["self_attn.q_proj", "mlp.down_proj"])
def test_check_finite_false_loads_and_a_nan_weight_surfaces_as_numericalerror(tmp_path, dtype, layer):
    # int8 included: a NaN among finite weights must poison its channel's scale, not be
    # skipped by the max and then cast to an integer
    path = small_checkpoint(tmp_path, seed=4)
    poison(path, f"model.layers.1.{layer}.weight", 0, float("nan"))
    engine = core_model(path, check_finite=False, dtype=dtype)
    with pytest.raises(NumericalError, match=r"non-finite logit \(nan\) for sequence 0"):
        forward(engine, SEQS)


def test_an_infinite_embedding_row_fails_only_the_sequences_that_use_it(tmp_path):
    path = small_checkpoint(tmp_path, seed=4)
    bad_token = 1234
    poison(path, "model.embed_tokens.weight", bad_token * 64 + 7, float("inf"))
    engine = core_model(path, check_finite=False)
    clean = [[t for t in s if t != bad_token] for s in SEQS]
    assert np.isfinite(forward(engine, clean)).all()
    with pytest.raises(NumericalError, match="for sequence 1 of the batch"):
        forward(engine, [clean[0], clean[1] + [bad_token]])
    assert np.isfinite(forward(engine, clean)).all()  # the model stays usable


def test_finite_weights_that_overflow_in_the_forward_raise_numericalerror(tmp_path):
    # 3e38 in the final norm passes the load check (it is finite) but the head's dot product
    # overflows: the engine must say so, never hand back sigmoid(inf) = 1.0.
    path = small_checkpoint(tmp_path, seed=4)
    for i in range(64):
        poison(path, "model.norm.weight", i, 3e38)
    model = CrossEncoder(path, hf_overrides=OVERRIDES, threads=1)
    with pytest.raises(NumericalError, match="overflow float32"):
        model.forward_ids(SEQS)
    with pytest.raises(crossrank.CrossrankError):   # NumericalError is a CrossrankError
        model.forward_ids(SEQS[:1])


def test_the_check_is_on_by_default_and_can_be_turned_off_for_a_clean_model(tmp_path):
    path = small_checkpoint(tmp_path, seed=4)
    default, on, off = (forward(core_model(path, check_finite=c), SEQS) for c in (None, True, False))
    np.testing.assert_array_equal(default, on)
    np.testing.assert_array_equal(on, off)
    assert np.isfinite(on).all()


def test_check_finite_rejects_other_types(tmp_path):
    path = small_checkpoint(tmp_path, seed=4)
    with pytest.raises(TypeError, match="check_finite must be True, False or None"):
        core_model(path, check_finite=1)


def test_a_non_finite_lm_head_row_used_by_the_head_is_refused(tmp_path):
    # Only the "no"/"yes" rows of an untied lm_head are read: a NaN there is caught in the built
    # head; a NaN in a row the head never reads does not matter.
    from tokenizers import Tokenizer

    path = small_checkpoint(tmp_path, seed=4, tie_word_embeddings=False)
    yes = Tokenizer.from_file(str(path / "tokenizer.json")).token_to_id("yes")
    unused = 1 if yes != 1 else 2
    poison(path, "lm_head.weight", unused * 64 + 5, float("nan"))
    assert np.isfinite(forward(core_model(path), SEQS)).all()
    poison(path, "lm_head.weight", yes * 64 + 5, float("nan"))
    with pytest.raises(CheckpointError, match=r"head built from rows of lm_head\.weight holds NaN"):
        core_model(path)
