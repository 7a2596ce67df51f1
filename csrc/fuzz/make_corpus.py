#!/usr/bin/env python3
"""Writes the seed corpus of the checkpoint fuzz targets (run.sh) into csrc/fuzz/corpus/.

    python csrc/fuzz/make_corpus.py            # rewrites corpus/safetensors and corpus/index

corpus/safetensors holds whole files for fuzz_safetensors: a valid file of every dtype, 0-dim and
empty tensors, metadata, unaligned data, escaped names, and broken files (holes, overlaps,
truncation, huge or overflowing sizes, bad JSON). corpus/index holds model.safetensors.index.json
texts for fuzz_index, valid and hostile (shard names with "..", absolute paths, separators).
Standard library only, so it runs anywhere the fuzzer builds. The other files in those folders
(hex names) are inputs libFuzzer found to reach new code, merged in with
`build/fuzz/fuzz_<target> -merge=1 csrc/fuzz/corpus/<target> build/fuzz/new-<target>`; this script
rewrites only its own named seeds.
"""
import json
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent
DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
          "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


def raw(header, data=b"", header_len=None):
    """[u64 little-endian header length][header][data]; header is a dict or bytes."""
    if not isinstance(header, bytes):
        header = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(header) if header_len is None else header_len) + header + data


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}


def valid(tensors, metadata=None, pad=8):
    """tensors: [(name, dtype, shape)], laid out in order with patterned data."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape in tensors:
        n = DTYPES[dtype]
        for d in shape:
            n *= d
        header[name] = entry(dtype, shape, len(data), len(data) + n)
        data += bytes((len(data) + i) & 0xFF for i in range(n))
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % pad)
    return raw(text, data)


def safetensors_seeds():
    seeds = {}
    for dt in DTYPES:
        seeds[f"valid-{dt.lower()}"] = valid([("w", dt, [2, 3]), ("b", dt, [3])], {"format": "pt"})
    seeds["valid-scalar-and-empty"] = valid([("s", "F32", []), ("e", "F32", [0, 7]), ("v", "BF16", [5])])
    seeds["valid-no-tensors"] = raw({"__metadata__": {"format": "pt"}})
    seeds["valid-empty-object"] = raw(b"{}")
    seeds["valid-unaligned"] = valid([("a", "F32", [2]), ("b", "F16", [3]), ("c", "F64", [1])], pad=0)
    seeds["valid-8-dims"] = valid([("x", "U8", [1, 2, 1, 2, 1, 2, 1, 2])])
    seeds["valid-escaped-names"] = raw(b'{"caf\\u00e9.\\ud83d\\ude00":' + json.dumps(entry("F32", [1], 0, 4)).encode()
                                       + b',"t\\"ab\\\\":' + json.dumps(entry("U8", [2], 4, 6)).encode() + b"}",
                                       b"\1" * 6)
    seeds["valid-qwen3-like"] = valid([
        ("model.embed_tokens.weight", "BF16", [16, 8]),
        ("model.layers.0.input_layernorm.weight", "F32", [8]),
        ("model.layers.0.self_attn.q_proj.weight", "BF16", [8, 8]),
        ("model.layers.0.self_attn.k_norm.weight", "F32", [4]),
        ("model.norm.weight", "F32", [8]),
        ("score.weight", "F32", [1, 8]),
    ], {"format": "pt"})
    # broken
    seeds["bad-short"] = b"\x02\x00\x00"
    seeds["bad-header-past-end"] = raw(b"{}", header_len=64)
    seeds["bad-header-over-limit"] = struct.pack("<Q", 100_000_001) + b"{}"
    seeds["bad-header-huge"] = struct.pack("<Q", 2**64 - 1) + b"{}"
    seeds["bad-json"] = raw(b'{"w": {"dtype": "F32", ')
    seeds["bad-trailing"] = raw(b"{}  xyz")
    seeds["bad-nul-padding"] = raw(b"{}\0\0\0\0\0\0")
    seeds["bad-duplicate"] = raw(b'{"w":' + json.dumps(entry("F32", [1], 0, 4)).encode() + b',"w":'
                                 + json.dumps(entry("F32", [1], 0, 4)).encode() + b"}", b"\0" * 4)
    seeds["bad-deep"] = raw(b'{"__metadata__":' + b"[" * 80 + b"]" * 80 + b"}")
    seeds["bad-hole"] = raw({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 12, 20)}, b"\0" * 20)
    seeds["bad-hole-at-start"] = raw({"a": entry("F32", [2], 4, 12)}, b"\0" * 12)
    seeds["bad-overlap"] = raw({"a": entry("F32", [4], 0, 16), "b": entry("F32", [4], 8, 24)}, b"\0" * 24)
    seeds["bad-same-range"] = raw({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 0, 8)}, b"\0" * 8)
    seeds["bad-trailing-data"] = raw({"a": entry("F32", [2], 0, 8)}, b"\0" * 13)
    seeds["bad-past-end"] = raw({"w": entry("F32", [4], 0, 16)}, b"\0" * 8)
    seeds["bad-size-mismatch"] = raw({"w": entry("F32", [2, 3], 0, 20)}, b"\0" * 20)
    seeds["bad-size-overflow"] = raw({"w": entry("F32", [2**40, 2**40, 2**40], 0, 0)})
    seeds["bad-huge-offsets"] = raw(b'{"w":{"dtype":"U8","shape":[18446744073709551615],'
                                    b'"data_offsets":[0,18446744073709551615]}}')
    seeds["bad-offset-over-u64"] = raw(b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551616]}}')
    seeds["bad-negative-dim"] = raw({"w": entry("F32", [3, -2], 0, 0)})
    seeds["bad-float-dim"] = raw(b'{"w":{"dtype":"F32","shape":[2.5e0],"data_offsets":[0,8]}}', b"\0" * 8)
    seeds["bad-dtype"] = raw({"w": entry("Q4_K", [2], 0, 2)}, b"\0" * 2)
    seeds["bad-9-dims"] = raw({"w": entry("U8", [1] * 9, 0, 1)}, b"\0")
    seeds["bad-metadata-number"] = raw({"__metadata__": {"step": 3}})
    seeds["bad-utf8"] = raw(b'{"w\xff\xfe":' + json.dumps(entry("F32", [1], 0, 4)).encode() + b"}", b"\0" * 4)
    seeds["bad-lone-surrogate"] = raw(b'{"w\\ud800":' + json.dumps(entry("F32", [1], 0, 4)).encode() + b"}", b"\0" * 4)
    seeds["bad-nul-in-name"] = raw(b'{"w\\u0000x":' + json.dumps(entry("F32", [1], 0, 4)).encode() + b"}", b"\0" * 4)
    seeds["bad-many-values"] = raw(b"[" + b"0," * 2000 + b"0]")
    return seeds


def index(weight_map, metadata=None):
    return json.dumps({"metadata": metadata or {"total_size": 0}, "weight_map": weight_map}).encode()


def index_seeds():
    seeds = {
        "valid-two-shards": index({"w1": "model-00001-of-00002.safetensors",
                                   "w2": "model-00001-of-00002.safetensors",
                                   "w3": "model-00002-of-00002.safetensors"}),
        "valid-one-entry": index({"model.embed_tokens.weight": "a.safetensors"}),
        "valid-empty-map": index({}),
        "valid-unicode": json.dumps({"weight_map": {"caf\u00e9": "sh\u00e4rd.safetensors"}}, ensure_ascii=False).encode(),
        "valid-no-metadata": b'{"weight_map":{"x":"y.safetensors"}}',
        "bad-not-json": b'{"weight_map": {"w1": ',
        "bad-no-map": b'{"metadata": {}}',
        "bad-map-list": b'{"weight_map": ["a"]}',
        "bad-metadata-list": b'{"metadata": [], "weight_map": {}}',
        "bad-shard-number": b'{"weight_map": {"w": 1}}',
        "bad-empty-name": b'{"weight_map": {"": "a.safetensors"}}',
        "bad-nul-name": b'{"weight_map": {"a\\u0000b": "a.safetensors"}}',
        "bad-duplicate": b'{"weight_map": {"w": "a.safetensors", "w": "b.safetensors"}}',
    }
    for i, shard in enumerate(["../x.safetensors", "/abs/x.safetensors", "sub/x.safetensors", "..", ".", "",
                               "sub\\x.safetensors", "x\u0001.safetensors", "x\u0000.safetensors",
                               "x\u007f.safetensors", "/", "../../etc/passwd"]):
        seeds[f"bad-shard-{i:02d}"] = index({"w": shard})
    return seeds


def main() -> None:
    for sub, seeds in (("safetensors", safetensors_seeds()), ("index", index_seeds())):
        out = HERE / "corpus" / sub
        out.mkdir(parents=True, exist_ok=True)
        for name, content in seeds.items():
            (out / name).write_bytes(content)
        print(f"{out}: {len(seeds)} files")


if __name__ == "__main__":
    main()
