"""Checkpoint files: valid safetensors files and shard indexes are listed exactly, and hostile ones
are rejected with a CheckpointError (format problems) or an OSError (missing files) whose message
names what is wrong.

Valid files are written by hand (and once by the `safetensors` library when it is installed);
hostile files are crafted byte by byte with struct and json. No torch.
"""

import json
import re
import struct

import numpy as np
import pytest

from crossrank import _core

CheckpointError = _core.CheckpointError


# ---- file builders ------------------------------------------------------------------------------

def raw_file(header, data=b"", header_len=None):
    """[u64 header length][header][data]; header is a dict (dumped compactly) or raw bytes."""
    if not isinstance(header, bytes):
        header = json.dumps(header, separators=(",", ":")).encode()
    length = len(header) if header_len is None else header_len
    return struct.pack("<Q", length) + header + data


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}


def f32(a):
    a = np.asarray(a, dtype="<f4")
    return ("F32", a.shape, a.tobytes())


def f16(a):
    a = np.asarray(a, dtype="<f2")
    return ("F16", a.shape, a.tobytes())


def bf16(a):
    a = np.asarray(a, dtype="<f4")
    return ("BF16", a.shape, (a.view("<u4") >> 16).astype("<u2").tobytes())


def tensor_file(tensors, metadata=None, pad=True):
    """A valid file holding tensors {name: (dtype, shape, raw bytes)}, laid out in dict order.
    Like the safetensors writer, pads the header with spaces so the data starts 8-byte aligned."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = entry(dtype, shape, len(data), len(data) + len(raw))
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return raw_file(text, data)


def write_index(model_dir, weight_map, metadata=None):
    index = {"metadata": metadata or {"total_size": 0}, "weight_map": weight_map}
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(index))


def inspect_file(model_dir, content):
    (model_dir / "model.safetensors").write_bytes(content)
    return _core.inspect_checkpoint(str(model_dir))


def assert_rejected(model_dir, content, fragment, exc=CheckpointError):
    with pytest.raises(exc, match=re.escape(fragment)):
        inspect_file(model_dir, content)


def two_shards(model_dir):
    """Writes a-00001.safetensors {w1, w2} and a-00002.safetensors {w3}."""
    (model_dir / "a-00001.safetensors").write_bytes(
        tensor_file({"w1": f32([1.0, 2.0]), "w2": bf16([[1.0, 2.0], [3.0, 4.0]])}))
    (model_dir / "a-00002.safetensors").write_bytes(tensor_file({"w3": f16([5.0, 6.0, 7.0])}))


TWO_SHARD_MAP = {"w1": "a-00001.safetensors", "w2": "a-00001.safetensors", "w3": "a-00002.safetensors"}


# ---- valid files ---------------------------------------------------------------------------------

def test_single_file_lists_every_tensor_sorted_with_dtype_shape_and_file(tmp_path):
    content = tensor_file({
        "z.weight": f32(np.arange(6).reshape(2, 3)),
        "b.bf16": bf16([1.0, -2.0, 3.5, 0.25]),
        "c.half": f16([[1.0, 2.0], [3.0, 4.0]]),
        "scalar": f32(np.float32(7.0)),            # 0-dim: shape [], 4 bytes
        "empty": ("F32", (0, 5), b""),             # zero-size: begin == end
    }, metadata={"format": "pt"})
    tensors = inspect_file(tmp_path, content)
    assert [t["name"] for t in tensors] == ["b.bf16", "c.half", "empty", "scalar", "z.weight"]
    by_name = {t["name"]: t for t in tensors}
    assert by_name["z.weight"] == {"name": "z.weight", "dtype": "F32", "shape": (2, 3), "file": "model.safetensors"}
    assert by_name["b.bf16"]["dtype"] == "BF16" and by_name["b.bf16"]["shape"] == (4,)
    assert by_name["c.half"]["dtype"] == "F16" and by_name["c.half"]["shape"] == (2, 2)
    assert by_name["scalar"]["shape"] == ()
    assert by_name["empty"]["shape"] == (0, 5)


def test_accepts_a_pathlike_model_dir(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(tensor_file({"w": f32([1.0])}))
    assert [t["name"] for t in _core.inspect_checkpoint(tmp_path)] == ["w"]


def test_file_without_tensors_is_valid(tmp_path):
    assert inspect_file(tmp_path, raw_file({"__metadata__": {"format": "pt"}})) == []


def test_file_written_by_the_safetensors_library_is_accepted(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    st_numpy.save_file({"x": np.ones((3, 4), np.float32), "y": np.zeros((5,), np.float16),
                        "i": np.arange(3, dtype=np.int64)},
                       str(tmp_path / "model.safetensors"), metadata={"format": "np"})
    tensors = _core.inspect_checkpoint(str(tmp_path))
    assert [(t["name"], t["dtype"], t["shape"]) for t in tensors] == [
        ("i", "I64", (3,)), ("x", "F32", (3, 4)), ("y", "F16", (5,))]


def test_unaligned_data_section_is_accepted(tmp_path):
    # Header length 8k + 3: every tensor's data starts at an odd address. Valid per the format.
    content = tensor_file({"a": f32([1.0, 2.0]), "b": f16([3.0]), "c": f32([4.0])}, pad=False)
    header_len = struct.unpack("<Q", content[:8])[0]
    if header_len % 8 != 3:
        text = content[8:8 + header_len] + b" " * ((3 - header_len) % 8)
        content = raw_file(text, content[8 + header_len:])
    assert struct.unpack("<Q", content[:8])[0] % 8 == 3
    assert [t["name"] for t in inspect_file(tmp_path, content)] == ["a", "b", "c"]


def test_escaped_tensor_names_are_decoded_to_utf8(tmp_path):
    header = b'{"caf\\u00e9.\\ud83d\\ude00":' + json.dumps(entry("F32", [1], 0, 4)).encode() + b"}"
    tensors = inspect_file(tmp_path, raw_file(header, b"\0" * 4))
    assert tensors[0]["name"] == "caf\u00e9.\U0001F600"


def test_sharded_index_with_two_shards_lists_tensors_from_both(tmp_path):
    two_shards(tmp_path)
    write_index(tmp_path, TWO_SHARD_MAP)
    tensors = _core.inspect_checkpoint(str(tmp_path))
    assert [(t["name"], t["dtype"], t["shape"], t["file"]) for t in tensors] == [
        ("w1", "F32", (2,), "a-00001.safetensors"),
        ("w2", "BF16", (2, 2), "a-00001.safetensors"),
        ("w3", "F16", (3,), "a-00002.safetensors"),
    ]


def test_index_takes_precedence_over_a_single_file(tmp_path):
    two_shards(tmp_path)
    write_index(tmp_path, TWO_SHARD_MAP)
    (tmp_path / "model.safetensors").write_bytes(tensor_file({"other": f32([1.0])}))
    assert [t["name"] for t in _core.inspect_checkpoint(str(tmp_path))] == ["w1", "w2", "w3"]


# ---- missing files -------------------------------------------------------------------------------

def test_missing_model_directory_raises_oserror(tmp_path):
    with pytest.raises(OSError, match="does not exist"):
        _core.inspect_checkpoint(str(tmp_path / "nope"))


def test_directory_without_checkpoint_names_the_files_looked_for(tmp_path):
    with pytest.raises(OSError, match=r"model\.safetensors\.index\.json and model\.safetensors"):
        _core.inspect_checkpoint(str(tmp_path))


def test_missing_shard_file_raises_oserror_naming_it(tmp_path):
    two_shards(tmp_path)
    (tmp_path / "a-00002.safetensors").unlink()
    write_index(tmp_path, TWO_SHARD_MAP)
    with pytest.raises(OSError, match=r"a-00002\.safetensors listed in .* does not exist"):
        _core.inspect_checkpoint(str(tmp_path))


def test_dangling_index_link_raises_oserror_instead_of_falling_back(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(tensor_file({"w": f32([1.0])}))
    (tmp_path / "model.safetensors.index.json").symlink_to(tmp_path / "blob-not-downloaded")
    with pytest.raises(OSError, match=r"model\.safetensors\.index\.json is a broken symbolic link"):
        _core.inspect_checkpoint(str(tmp_path))


@pytest.mark.parametrize("fifo", ["model.safetensors", "model.safetensors.index.json", "a-00002.safetensors"])
def test_a_fifo_named_like_a_checkpoint_file_is_refused_without_waiting_for_a_writer(tmp_path, fifo):
    # open() of a FIFO blocks until a writer comes: run it in a child so that a regression fails
    # on the timeout instead of hanging the suite.
    import os
    import subprocess
    import sys

    if fifo == "a-00002.safetensors":
        two_shards(tmp_path)
        (tmp_path / fifo).unlink()
        write_index(tmp_path, TWO_SHARD_MAP)
    elif fifo == "model.safetensors.index.json":
        (tmp_path / "model.safetensors").write_bytes(tensor_file({"w": f32([1.0])}))
    os.mkfifo(tmp_path / fifo)
    code = ("import sys\nfrom crossrank import _core\ntry:\n    _core.inspect_checkpoint(sys.argv[1])\n"
            "except OSError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert f"{fifo} is not a regular file" in out.stdout, out.stdout + out.stderr


# ---- hostile single files: length prefix ---------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 7])
def test_file_shorter_than_the_length_prefix_is_rejected(tmp_path, size):
    assert_rejected(tmp_path, b"\x02" * size, f"file is {size} bytes, shorter than the 8-byte header length")


def test_header_length_past_the_end_of_the_file_is_rejected(tmp_path):
    assert_rejected(tmp_path, raw_file(b"{}", header_len=3),
                    "header length 3 runs past the end of the file (2 bytes after the length)")


@pytest.mark.parametrize("length", [100_000_001, 2**63, 2**64 - 1])
def test_header_length_over_the_100mb_limit_is_rejected_without_allocating(tmp_path, length):
    # Only the 8-byte prefix is written: the length must be refused before anything is read.
    assert_rejected(tmp_path, struct.pack("<Q", length),
                    f"header length {length} exceeds the limit of 100000000 bytes")


# ---- hostile single files: JSON --------------------------------------------------------------------

def test_header_that_is_not_json_is_rejected(tmp_path):
    assert_rejected(tmp_path, raw_file(b'{"w": {"dtype": "F32", '), "invalid header JSON")


def test_trailing_garbage_after_the_header_json_is_rejected(tmp_path):
    assert_rejected(tmp_path, raw_file(b"{}  xyz"), "unexpected data after the JSON value at byte 4")


def test_header_padded_with_nul_bytes_is_rejected(tmp_path):
    assert_rejected(tmp_path, raw_file(b"{}\0\0\0\0\0\0"), "unexpected data after the JSON value")


def test_duplicate_tensor_names_are_rejected(tmp_path):
    e = json.dumps(entry("F32", [1], 0, 4))
    header = f'{{"w":{e},"w":{e}}}'.encode()
    assert_rejected(tmp_path, raw_file(header, b"\0" * 4), 'duplicate key "w"')


def test_header_that_is_not_an_object_is_rejected(tmp_path):
    assert_rejected(tmp_path, raw_file(b"[]"), "header is an array, must be a JSON object")


def test_invalid_utf8_in_a_tensor_name_is_rejected(tmp_path):
    header = b'{"w\xff\xfe":' + json.dumps(entry("F32", [1], 0, 4)).encode() + b"}"
    assert_rejected(tmp_path, raw_file(header, b"\0" * 4), "invalid UTF-8 in string at byte 3")


def test_overlong_utf8_encoding_in_a_tensor_name_is_rejected(tmp_path):
    header = b'{"w\xc0\xaf":' + json.dumps(entry("F32", [1], 0, 4)).encode() + b"}"
    assert_rejected(tmp_path, raw_file(header, b"\0" * 4), "invalid UTF-8 in string")


def test_lone_surrogate_escape_in_a_tensor_name_is_rejected(tmp_path):
    header = b'{"w\\ud800":' + json.dumps(entry("F32", [1], 0, 4)).encode() + b"}"
    assert_rejected(tmp_path, raw_file(header, b"\0" * 4), "lone high surrogate \\uD800")


def test_raw_control_character_in_a_tensor_name_is_rejected(tmp_path):
    header = b'{"w\n":' + json.dumps(entry("F32", [1], 0, 4)).encode() + b"}"
    assert_rejected(tmp_path, raw_file(header, b"\0" * 4), "raw control character 0x0a in string")


def test_nesting_deeper_than_64_levels_is_rejected(tmp_path):
    header = b'{"__metadata__":' + b"[" * 100 + b"]" * 100 + b"}"
    assert_rejected(tmp_path, raw_file(header), "nesting deeper than 64 levels")


# ---- hostile single files: tensor entries --------------------------------------------------------

def test_empty_tensor_name_is_rejected(tmp_path):
    assert_rejected(tmp_path, raw_file({"": entry("F32", [1], 0, 4)}, b"\0" * 4), "a tensor has an empty name")


def test_unknown_dtype_is_rejected_by_name(tmp_path):
    assert_rejected(tmp_path, raw_file({"w": entry("Q4_K", [2], 0, 2)}, b"\0" * 2),
                    'tensor w: unknown dtype "Q4_K"')


def test_unknown_field_in_a_tensor_entry_is_rejected(tmp_path):
    e = dict(entry("F32", [1], 0, 4), offset=0)
    assert_rejected(tmp_path, raw_file({"w": e}, b"\0" * 4), 'tensor w: unknown field "offset"')


def test_missing_data_offsets_is_rejected(tmp_path):
    assert_rejected(tmp_path, raw_file({"w": {"dtype": "F32", "shape": [1]}}, b"\0" * 4),
                    'tensor w: missing "data_offsets"')


def test_negative_shape_entry_is_rejected(tmp_path):
    assert_rejected(tmp_path, raw_file({"w": entry("F32", [3, -2], 0, 0)}),
                    "tensor w: shape[1] is negative (-2)")


def test_non_integer_shape_entry_is_rejected(tmp_path):
    assert_rejected(tmp_path, raw_file({"w": entry("F32", [2.0], 0, 8)}, b"\0" * 8),
                    "tensor w: shape[0] is a non-integer number")


def test_shape_that_is_not_a_list_is_rejected(tmp_path):
    e = {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}
    assert_rejected(tmp_path, raw_file({"w": e}, b"\0" * 8), "tensor w: shape is a string")


def test_more_than_8_dimensions_is_rejected(tmp_path):
    assert_rejected(tmp_path, raw_file({"w": entry("U8", [1] * 9, 0, 1)}, b"\0"),
                    "tensor w: shape has 9 dimensions, more than the 8 supported")


def test_data_offsets_that_end_before_they_begin_are_rejected(tmp_path):
    assert_rejected(tmp_path, raw_file({"w": entry("F32", [1], 8, 4)}, b"\0" * 8),
                    "tensor w: data_offsets [8, 4] end before they begin")


def test_data_offsets_that_are_not_a_pair_are_rejected(tmp_path):
    e = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}
    assert_rejected(tmp_path, raw_file({"w": e}, b"\0" * 4), "tensor w: data_offsets has 3 entries")


def test_data_offset_above_2_pow_64_is_rejected(tmp_path):
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551616]}}'
    assert_rejected(tmp_path, raw_file(header), "tensor w: data_offsets[1] is larger than 2^64 - 1")


def test_shape_and_offsets_size_mismatch_is_rejected(tmp_path):
    assert_rejected(tmp_path, raw_file({"w": entry("F32", [2, 3], 0, 20)}, b"\0" * 20),
                    "tensor w: shape [2, 3] of F32 needs 24 bytes, but data_offsets [0, 20] span 20")


def test_byte_size_overflow_from_huge_dims_is_rejected(tmp_path):
    assert_rejected(tmp_path, raw_file({"w": entry("F32", [2**40, 2**40, 2**40], 0, 0)}),
                    "tensor w: byte size of shape [1099511627776, 1099511627776, 1099511627776] x F32 "
                    "overflows 64 bits")


def test_zero_dimension_makes_a_tensor_empty_even_with_huge_other_dims(tmp_path):
    tensors = inspect_file(tmp_path, raw_file({"w": entry("F32", [2**62, 0, 2**62], 0, 0)}))
    assert tensors[0]["shape"] == (2**62, 0, 2**62)


def test_metadata_with_a_non_string_value_is_rejected(tmp_path):
    assert_rejected(tmp_path, raw_file({"__metadata__": {"format": "pt", "step": 3}}),
                    '__metadata__ value for "step" is a number, must be a string')


# ---- hostile single files: layout of the data section -------------------------------------------

def test_range_past_the_end_of_the_file_is_rejected(tmp_path):
    assert_rejected(tmp_path, raw_file({"w": entry("F32", [4], 0, 16)}, b"\0" * 8),
                    "tensor w: data_offsets [0, 16] run past the end of the data section (8 bytes)")


def test_overlapping_ranges_are_rejected_naming_both_tensors(tmp_path):
    header = {"a": entry("F32", [4], 0, 16), "b": entry("F32", [4], 8, 24)}
    assert_rejected(tmp_path, raw_file(header, b"\0" * 24), "tensors a [0, 16] and b [8, 24] overlap")


def test_two_tensors_sharing_one_range_are_rejected(tmp_path):
    header = {"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 0, 8)}
    assert_rejected(tmp_path, raw_file(header, b"\0" * 8), "tensors a [0, 8] and b [0, 8] overlap")


def test_hole_between_tensors_is_rejected_with_offsets(tmp_path):
    header = {"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 12, 20)}
    assert_rejected(tmp_path, raw_file(header, b"\0" * 20),
                    "hole of 4 bytes between tensor a (ends at 8) and tensor b (begins at 12)")


def test_hole_before_the_first_tensor_is_rejected(tmp_path):
    assert_rejected(tmp_path, raw_file({"a": entry("F32", [2], 4, 12)}, b"\0" * 12),
                    "hole of 4 bytes at the start of the data section, before tensor a")


def test_trailing_bytes_after_the_last_tensor_are_rejected(tmp_path):
    assert_rejected(tmp_path, raw_file({"a": entry("F32", [2], 0, 8)}, b"\0" * 13),
                    "5 extra bytes after the last tensor (tensors end at byte 8 of a 13-byte data section)")


def test_data_without_any_tensor_is_rejected(tmp_path):
    assert_rejected(tmp_path, raw_file({}, b"\0" * 4), "4 extra bytes after the last tensor")


# ---- hostile shard indexes -----------------------------------------------------------------------

@pytest.mark.parametrize("shard,why", [("../x.safetensors", "path separator"), ("/abs/x.safetensors", "path separator"),
                                       ("sub/x.safetensors", "path separator"), ("..", "names a directory"),
                                       (".", "names a directory"), ("", "is empty"),
                                       ("sub\\x.safetensors", "path separator"),
                                       ("x\u0001.safetensors", "control character"),
                                       ("x\u0000.safetensors", "NUL character")])
def test_shard_name_that_escapes_the_model_directory_is_rejected(tmp_path, shard, why):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "sub").mkdir()
    # A valid file sits at every place the name could reach: it must not be opened.
    for target in (tmp_path / "x.safetensors", model_dir / "sub" / "x.safetensors"):
        target.write_bytes(tensor_file({"w": f32([1.0])}))
    write_index(model_dir, {"w": shard})
    with pytest.raises(CheckpointError, match=f"{why}.*must be a plain file name in the model directory"):
        _core.inspect_checkpoint(str(model_dir))


def test_index_that_is_not_json_is_rejected(tmp_path):
    two_shards(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text('{"weight_map": {"w1": ')
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json: invalid JSON"):
        _core.inspect_checkpoint(str(tmp_path))


def test_index_without_weight_map_is_rejected(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text('{"metadata": {}}')
    with pytest.raises(CheckpointError, match='"weight_map" is missing'):
        _core.inspect_checkpoint(str(tmp_path))


def test_index_with_a_non_string_shard_is_rejected(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text('{"weight_map": {"w": 1}}')
    with pytest.raises(CheckpointError, match="weight_map entry for tensor w is a number"):
        _core.inspect_checkpoint(str(tmp_path))


def test_tensor_listed_in_the_index_but_missing_from_its_shard_is_rejected(tmp_path):
    two_shards(tmp_path)
    write_index(tmp_path, dict(TWO_SHARD_MAP, w4="a-00002.safetensors"))
    with pytest.raises(CheckpointError, match=r"lists tensor w4 in shard a-00002\.safetensors, "
                                              r"which does not contain it"):
        _core.inspect_checkpoint(str(tmp_path))


def test_tensor_listed_under_the_wrong_shard_is_rejected(tmp_path):
    two_shards(tmp_path)
    write_index(tmp_path, dict(TWO_SHARD_MAP, w3="a-00001.safetensors", w1="a-00002.safetensors"))
    with pytest.raises(CheckpointError, match=r"lists tensor w1 in shard a-00002\.safetensors, "
                                              r"but it is in shard a-00001\.safetensors"):
        _core.inspect_checkpoint(str(tmp_path))


def test_tensor_in_a_shard_but_missing_from_the_index_is_rejected(tmp_path):
    two_shards(tmp_path)
    write_index(tmp_path, {k: v for k, v in TWO_SHARD_MAP.items() if k != "w2"})
    with pytest.raises(CheckpointError, match=r"tensor w2 is in shard a-00001\.safetensors "
                                              r"but missing from the index"):
        _core.inspect_checkpoint(str(tmp_path))


def test_tensor_in_two_shards_is_rejected(tmp_path):
    two_shards(tmp_path)
    (tmp_path / "a-00002.safetensors").write_bytes(tensor_file({"w1": f32([9.0, 9.0]), "w3": f16([1, 2, 3])}))
    write_index(tmp_path, TWO_SHARD_MAP)
    with pytest.raises(CheckpointError, match=r"tensor w1 is in two shards, a-00001\.safetensors "
                                              r"and a-00002\.safetensors"):
        _core.inspect_checkpoint(str(tmp_path))


def test_hostile_shard_is_rejected_naming_the_shard_file(tmp_path):
    two_shards(tmp_path)
    (tmp_path / "a-00002.safetensors").write_bytes(b"\x10\0\0")
    write_index(tmp_path, TWO_SHARD_MAP)
    with pytest.raises(CheckpointError, match=r"a-00002\.safetensors: file is 3 bytes"):
        _core.inspect_checkpoint(str(tmp_path))
