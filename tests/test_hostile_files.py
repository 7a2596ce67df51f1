"""Hostile checkpoints and configs beyond the header rules of test_checkpoint_files.py: memory
bounds of header parsing, unaligned data through a whole model load, quantized weights, absurd
dims refused before any large allocation, out-of-memory during load, and the fuzz corpus
replayed through the Python binding. No torch.
"""
import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import crossrank
from crossrank import CheckpointError, ConfigError, CrossEncoder, UnsupportedModelError, _core
from _hardening import OVERRIDES, core_model, run_python, small_checkpoint, token_ids

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "csrc" / "fuzz" / "corpus"
REGRESSIONS = Path(__file__).resolve().parent / "fuzz_regressions"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return small_checkpoint(tmp_path_factory.mktemp("hostile"), seed=5)


def read_file(path):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def write_file(path, header, payload, pad_to=8, pad_rem=0):
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((pad_rem - len(text)) % pad_to)
    path.write_bytes(struct.pack("<Q", len(text)) + text + payload)


def forward(engine, seqs):
    flat = np.concatenate([np.asarray(s, np.int32) for s in seqs])
    pos = np.concatenate([np.arange(len(s), dtype=np.int32) for s in seqs])
    start = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    return engine.forward(flat, pos, start)


SEQS = [token_ids(30, 1), token_ids(7, 2), token_ids(64, 3)]


# ---- header parsing stays bounded in memory -------------------------------------------------------

PEAK_RSS_SCRIPT = r"""
import resource, sys
from crossrank import _core, CheckpointError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    _core.inspect_checkpoint(sys.argv[1])
except CheckpointError as e:
    print("ERROR", e)
else:
    print("ACCEPTED")
print("GROWTH_MB", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def test_a_98mb_header_of_tiny_values_is_refused_with_bounded_memory(tmp_path):
    # "[0,0,0,...]": one JSON value per 2 bytes, 49M values. A 16-byte node each would be 780 MB
    # of tree; the value budget stops the parse at 4M values. Peak growth counts the mapped
    # header itself (98 MB, read once) and at most 128 MB of nodes.
    n = 49_000_000
    text = b"[" + b"0," * (n - 1) + b"0]"
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text)
    proc = run_python(PEAK_RSS_SCRIPT, tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert "more than 4194304 values in the JSON text" in lines["ERROR"], proc.stdout
    assert float(lines["GROWTH_MB"]) < 350, proc.stdout


def test_a_header_with_100k_tensors_is_within_the_value_budget(tmp_path):
    n = 100_000
    header = {f"t{i:06d}": {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]} for i in range(n)}
    write_file(tmp_path / "model.safetensors", header, bytes(n))
    tensors = _core.inspect_checkpoint(str(tmp_path))
    assert len(tensors) == n and tensors[-1]["name"] == f"t{n - 1:06d}"


def test_an_index_of_too_many_values_is_refused(tmp_path):
    # 2.2M weight_map entries = 4.4M values (key + shard name each), over the budget.
    n = 2_200_000
    body = ",".join(f'"{i}":"a"' for i in range(n))
    (tmp_path / "model.safetensors.index.json").write_text('{"weight_map":{' + body + "}}")
    with pytest.raises(CheckpointError, match="more than 4194304 values"):
        _core.inspect_checkpoint(str(tmp_path))


@pytest.mark.parametrize("claim,fragment", [(2**40, "run past the end of the data section"),
                                            (2**62, "run past the end of the data section"),
                                            (2**64 - 1, "is larger than 2^63 - 1")])
def test_a_tensor_claiming_a_huge_size_is_refused_before_anything_is_read(tmp_path, claim, fragment):
    header = {"w": {"dtype": "U8", "shape": [claim], "data_offsets": [0, claim]}}
    write_file(tmp_path / "model.safetensors", header, b"\0" * 16)
    with pytest.raises(CheckpointError, match=re.escape(fragment)):
        _core.inspect_checkpoint(str(tmp_path))


# ---- unaligned data through a whole load ----------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_unaligned_tensor_data_loads_and_scores_exactly_like_aligned(tmp_path, dtype):
    # Header length 8k + 3: every tensor starts at an odd address. The loader copies with memcpy
    # (UBSan in the sanitizer build would flag a misaligned typed load).
    aligned = small_checkpoint(tmp_path / "aligned", seed=9, dtype=dtype)
    odd = tmp_path / "odd"
    shutil.copytree(aligned, odd)
    header, payload = read_file(aligned / "model.safetensors")
    write_file(odd / "model.safetensors", header, payload, pad_to=8, pad_rem=3)
    assert struct.unpack("<Q", (odd / "model.safetensors").read_bytes()[:8])[0] % 8 == 3
    np.testing.assert_array_equal(forward(core_model(odd), SEQS), forward(core_model(aligned), SEQS))


# ---- quantized checkpoints -----------------------------------------------------------------------

@pytest.mark.parametrize("qc", [{"quant_method": "gptq", "bits": 4}, {"quant_method": "fp8"}, {}])
def test_quantization_config_in_overrides_is_refused(checkpoint, qc):
    with pytest.raises(UnsupportedModelError, match="quantized"):
        CrossEncoder(checkpoint, hf_overrides={**OVERRIDES, "quantization_config": qc})


@pytest.mark.parametrize("st_dtype", ["I8", "U8", "F8_E4M3"])
def test_quantized_weight_dtypes_without_a_quantization_config_are_refused_by_name(tmp_path, checkpoint, st_dtype):
    dst = tmp_path / "model"
    shutil.copytree(checkpoint, dst)
    header, payload = read_file(dst / "model.safetensors")
    name = "model.layers.1.mlp.up_proj.weight"
    b, e = header[name]["data_offsets"]
    # Same element count, one byte each: re-lay the data section around the shrunken tensor.
    blobs, offset, new_header = [], 0, {"__metadata__": header.get("__metadata__", {})}
    for key in sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0]):
        b0, e0 = header[key]["data_offsets"]
        blob = payload[b0:e0] if key != name else bytes((e0 - b0) // 4)
        new_header[key] = dict(header[key], data_offsets=[offset, offset + len(blob)],
                               dtype=st_dtype if key == name else header[key]["dtype"])
        blobs.append(blob)
        offset += len(blob)
    write_file(dst / "model.safetensors", new_header, b"".join(blobs))
    with pytest.raises(UnsupportedModelError, match=rf"{name.replace('.', '[.]')} .* has dtype {st_dtype}"):
        CrossEncoder(dst, hf_overrides=OVERRIDES)


def test_text_past_the_vocabulary_is_refused_naming_the_tokenizer_and_ids_still_run(checkpoint, caplog):
    # the fixture's table is cut to 10000 rows under the real Qwen3 tokenizer: every prompt holds ids
    # it has no row for, starting with the template's own <|im_start|>; token ids below 10000 run
    with caplog.at_level("WARNING", logger="crossrank"):
        model = CrossEncoder(checkpoint, hf_overrides=OVERRIDES, threads=1)
    assert "token ids up to 151668" in caplog.text
    for call in (lambda: model.score("q", ["d"]), lambda: model.predict([("q", "d")]),
                 lambda: model.tokenize("q", ["d"])):
        with pytest.raises(ConfigError, match=r"token ids up to 151668 .* vocab_size is 10000"):
            call()
    assert np.isfinite(model.forward_ids([token_ids(12, 1)])).all()
    # a server cannot answer any request with it: it refuses to start
    from crossrank.server.app import load_model
    from crossrank.server.settings import ServerSettings

    with pytest.raises(crossrank.CrossrankError, match="token ids up to 151668"):
        load_model(ServerSettings(model=str(checkpoint), hf_overrides=OVERRIDES, threads=1))


# ---- absurd dims -----------------------------------------------------------------------------------

@pytest.mark.parametrize("key,value", [("num_hidden_layers", 10**9), ("hidden_size", 2**40),
                                       ("intermediate_size", 2**62), ("vocab_size", 2**63),
                                       ("num_attention_heads", -1), ("head_dim", 3)])
def test_absurd_dims_in_config_json_are_config_errors(tmp_path, checkpoint, key, value):
    dst = tmp_path / "model"
    shutil.copytree(checkpoint, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg[key] = value
    (dst / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=key):
        CrossEncoder(dst, hf_overrides=OVERRIDES)


ABSURD_SCRIPT = r"""
import json, resource, sys
from crossrank import _core
from _hardening import core_args
args = core_args(sys.argv[1], json.loads(sys.argv[2]))
# Address space: what the process has now plus 256 MB. The dims below imply tens of GB of weights.
vm = int([l for l in open("/proc/self/status") if l.startswith("VmSize")][0].split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20), resource.RLIM_INFINITY))
try:
    _core.Model(*args)
except MemoryError as e:
    print("MemoryError", e)
except Exception as e:
    print(type(e).__name__, e)
else:
    print("LOADED")
"""


@pytest.mark.parametrize("changes,exc,fragment", [
    ({"hidden_size": 65536}, "CheckpointError", "model.embed_tokens.weight"),
    ({"intermediate_size": 1 << 20}, "CheckpointError", "model.layers.0.mlp.gate_proj.weight"),
    ({"num_hidden_layers": 4096, "layer_windows": [0] * 4096}, "CheckpointError", "model.layers.2.input_layernorm.weight"),
    ({"num_attention_heads": 1024, "num_key_value_heads": 1024}, "CheckpointError", "model.layers.0.self_attn.q_proj.weight"),
    ({"num_hidden_layers": 10**9}, "ConfigError", "'num_hidden_layers' = 1000000000 is outside [1, 4096]"),
    ({"num_hidden_layers": 2**70}, "OverflowError", ""),
    ({"vocab_size": 2**40}, "ConfigError", "vocab_size"),
    ({"head_dim": 4096, "num_attention_heads": 1024, "rope_inv_freq": [1.0] * 2048}, "ConfigError", "too large"),
])
def test_absurd_engine_dims_are_refused_before_any_large_allocation(checkpoint, changes, exc, fragment):
    # The engine is fed dims the Python normaliser would refuse. Each implies far more memory than
    # the address-space limit allows, so a refusal after allocating would be a MemoryError.
    proc = run_python(ABSURD_SCRIPT, checkpoint, json.dumps(changes))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(exc + " "), proc.stdout
    assert fragment in proc.stdout


# ---- out of memory during load ---------------------------------------------------------------------

OOM_SCRIPT = r"""
import os, resource, sys
import numpy as np
from crossrank import _core
from _hardening import core_args, token_ids
args = core_args(sys.argv[1])
extra = int(sys.argv[2]) + (os.path.getsize(os.path.join(sys.argv[1], "model.safetensors")) if sys.argv[3] == "pack" else 0)
vm = int([l for l in open("/proc/self/status") if l.startswith("VmSize")][0].split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + extra, resource.RLIM_INFINITY))
try:
    _core.Model(*args)
except MemoryError as e:
    print("MemoryError:", e, flush=True)
else:
    print("LOADED", flush=True)
    sys.exit(1)
resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
m = _core.Model(*args)
ids = np.array(token_ids(20, 1), np.int32)
out = m.forward(ids, np.arange(20, dtype=np.int32), np.array([0, 20]))
assert np.isfinite(out).all()
print("OK")
"""


@pytest.mark.parametrize("stage,fragment", [("map", "out of memory mapping"),
                                            ("pack", "out of memory allocating")])
def test_out_of_memory_during_load_raises_memoryerror_and_a_later_load_works(tmp_path, stage, fragment):
    # ~150 MB checkpoint whose float32 weights are packed into ~140 MB. "map": the address space
    # left is smaller than the file; "pack": the file maps, the packed copies do not fit.
    path = small_checkpoint(tmp_path, seed=2, hidden_size=512, num_hidden_layers=8, intermediate_size=2048,
                            num_attention_heads=8, num_key_value_heads=4, head_dim=64)
    proc = run_python(OOM_SCRIPT, path, 40 << 20, stage)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MemoryError: " + fragment in proc.stdout
    assert proc.stdout.rstrip().endswith("OK")


# ---- the fuzz corpus and every former crash, through the Python binding ----------------------------

def corpus_files(kind):
    files = []
    for base in (CORPUS, REGRESSIONS):
        if (base / kind).is_dir():
            files += sorted((base / kind).iterdir())
    return files


@pytest.mark.parametrize("path", corpus_files("safetensors"), ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_fuzz_inputs_as_a_checkpoint_list_tensors_or_raise_checkpointerror(tmp_path, path):
    (tmp_path / "model.safetensors").write_bytes(path.read_bytes())
    try:
        tensors = _core.inspect_checkpoint(str(tmp_path))
    except CheckpointError as e:
        assert "model.safetensors" in str(e)
        assert not path.name.startswith("valid-"), e
    else:
        assert not path.name.startswith("bad-")
        assert all(t["file"] == "model.safetensors" for t in tensors)


@pytest.mark.parametrize("path", corpus_files("index"), ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_fuzz_inputs_as_a_shard_index_raise_checkpointerror_or_oserror(tmp_path, path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.safetensors.index.json").write_bytes(path.read_bytes())
    try:
        _core.inspect_checkpoint(str(model_dir))
    except CheckpointError as e:
        assert "model.safetensors.index.json" in str(e)
        assert not path.name.startswith("valid-") or "missing from the index" in str(e), e
    except OSError as e:  # a valid index whose shards are not there
        assert not path.name.startswith("bad-"), e
        assert "does not exist" in str(e)
