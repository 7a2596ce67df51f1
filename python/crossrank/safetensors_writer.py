"""The one safetensors writer of the package: the converter's and the random-checkpoint writer's.

Tensors are streamed to disk, never assembled in memory: each :class:`TensorData` hands its bytes
to the writer chunk by chunk (from a memory-mapped source file, a generator of blocks or an
in-memory array), so writing a 16 GB checkpoint keeps memory flat. Each file is written under a
temporary name, flushed to disk and renamed into place, so a reader never sees a half-written
file. Above ``max_shard_size`` bytes of tensor data the output is sharded as
``save_pretrained`` does (``model-00001-of-0000N.safetensors`` + ``model.safetensors.index.json``,
written last).

The format: an 8-byte little-endian header length, a JSON header (padded with spaces so the data
section starts 8-byte aligned, as the reference writer does) mapping each name to
``{"dtype", "shape", "data_offsets"}``, then the tensors' little-endian bytes in header order.
"""
from __future__ import annotations

import json
import math
import mmap
import os
import struct
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["ITEMSIZE", "MAX_SHARD_SIZE", "TensorData", "MappedFiles", "array_tensor", "f32_to_bf16",
           "write_safetensors"]

#: Bytes per element of each safetensors dtype.
ITEMSIZE: Dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}

#: Above this many bytes of tensor data the output is sharded, as ``save_pretrained``'s
#: default ``max_shard_size="5GB"`` (5 * 10**9 bytes).
MAX_SHARD_SIZE = 5 * 10**9

_COPY_CHUNK = 64 << 20  # bytes per write when copying from a mapped file

#: Receives the next bytes of a tensor (any buffer: bytes, memoryview, contiguous array).
Sink = Callable[[Any], None]

_NUMPY_DTYPES = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
                 np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int16): "I16",
                 np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL"}


class TensorData:
    """One tensor to write: its header entry and the producer of its bytes.

    ``produce(sink)`` must call ``sink`` with the tensor's little-endian bytes, in order, in as
    many chunks as it likes; the writer checks that exactly ``nbytes`` arrive."""

    __slots__ = ("name", "dtype", "shape", "nbytes", "produce")

    def __init__(self, name: str, dtype: str, shape: Sequence[int], produce: Callable[[Sink], None]):
        if dtype not in ITEMSIZE:
            raise ValueError(f"tensor {name}: unknown safetensors dtype {dtype!r}")
        self.name = name
        self.dtype = dtype
        self.shape = [int(d) for d in shape]
        self.nbytes = math.prod(self.shape) * ITEMSIZE[dtype]
        self.produce = produce


def array_tensor(name: str, array: np.ndarray, dtype: Optional[str] = None) -> TensorData:
    """A tensor held in memory. ``dtype`` names the safetensors dtype when the array's does not
    say it, e.g. ``"BF16"`` for a uint16 array of bfloat16 bit patterns."""
    arr = np.ascontiguousarray(array)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    st = dtype or _NUMPY_DTYPES.get(arr.dtype)
    if st is None:
        raise TypeError(f"{name}: no safetensors dtype for {arr.dtype}; pass dtype=")
    if arr.dtype.itemsize != ITEMSIZE[st]:
        raise TypeError(f"{name}: a {arr.dtype} array cannot hold {st} elements")
    return TensorData(name, st, arr.shape, lambda sink: sink(arr.reshape(-1).view(np.uint8)))


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) of float32 values, rounded to nearest, ties to even.

    NaNs stay NaNs (quiet, sign kept): rounding could otherwise carry a NaN payload into the
    exponent and make an infinity. Temporaries: one uint32 copy and the result."""
    x = np.asarray(x, dtype=np.float32)
    bits = np.array(x, dtype=np.float32).view(np.uint32)  # a copy, rounded in place
    nan = np.isnan(x)
    lsb = bits >> np.uint32(16)
    lsb &= np.uint32(1)
    lsb += np.uint32(0x7FFF)
    bits += lsb
    bits >>= np.uint32(16)
    if nan.any():
        bits[nan] = (x[nan].view(np.uint32) >> np.uint32(16)) | np.uint32(0x40)
    return bits.astype(np.uint16)


class MappedFiles:
    """Copies byte ranges of source files, each mapped once; pages already written are dropped
    from this process's resident set (they stay in the page cache), so copying a 16 GB model does
    not show a 16 GB RSS. Use as a context manager: the maps close on exit."""

    def __init__(self) -> None:
        self._maps: Dict[Path, Tuple[Any, mmap.mmap]] = {}

    def __enter__(self) -> "MappedFiles":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Unmaps and closes every source file."""
        for fh, mm in self._maps.values():
            mm.close()
            fh.close()
        self._maps.clear()

    def tensor(self, name: str, dtype: str, shape: Sequence[int], path: Path, offset: int) -> TensorData:
        """The tensor whose bytes start at ``offset`` of ``path`` (a range already validated)."""
        src, start = Path(path), int(offset)
        t = TensorData(name, dtype, shape, lambda sink: self._copy(src, start, t.nbytes, sink))
        return t

    def _copy(self, path: Path, offset: int, nbytes: int, sink: Sink) -> None:
        if nbytes == 0:
            return
        if path not in self._maps:
            fh = open(path, "rb")
            self._maps[path] = (fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
        mm = self._maps[path][1]
        with memoryview(mm) as view:
            pos, end = offset, offset + nbytes
            while pos < end:
                stop = min(end, pos + _COPY_CHUNK)
                with view[pos:stop] as chunk:
                    sink(chunk)
                _release(mm, pos, stop)
                pos = stop


def _release(mm: mmap.mmap, begin: int, end: int) -> None:
    """Drops copied pages from the resident set. Read-only file mapping: nothing is lost."""
    if not hasattr(mmap, "MADV_DONTNEED"):
        return
    start = begin - begin % mmap.PAGESIZE
    try:
        mm.madvise(mmap.MADV_DONTNEED, start, end - start)
    except (OSError, ValueError):
        pass


def _header_bytes(tensors: Sequence[TensorData], metadata: Mapping[str, str]) -> bytes:
    header: Dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for t in tensors:
        header[t.name] = {"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return raw + b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned


def _shards(tensors: Sequence[TensorData], max_shard_size: Optional[int]) -> List[List[TensorData]]:
    """Greedy split in order, as ``save_pretrained``: a new shard when the next tensor would not
    fit; a tensor larger than the limit gets a shard of its own."""
    shards: List[List[TensorData]] = [[]]
    size = 0
    for t in tensors:
        if max_shard_size is not None and shards[-1] and size + t.nbytes > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def _write_file(path: Path, tensors: Sequence[TensorData], metadata: Mapping[str, str],
                progress: Optional[Callable[[int], None]]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "wb") as f:
            header = _header_bytes(tensors, metadata)
            f.write(struct.pack("<Q", len(header)))
            f.write(header)
            for t in tensors:
                written = 0

                def sink(buf: Any) -> None:
                    nonlocal written
                    n = f.write(buf)
                    written += n
                    if progress is not None:
                        progress(n)

                t.produce(sink)
                if written != t.nbytes:
                    raise ValueError(f"tensor {t.name}: {written} bytes were produced for a "
                                     f"{t.dtype} {t.shape} tensor of {t.nbytes} bytes")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_safetensors(
    out_dir: Union[str, os.PathLike],
    tensors: Sequence[TensorData],
    *,
    max_shard_size: Optional[int] = MAX_SHARD_SIZE,
    metadata: Optional[Mapping[str, str]] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> List[str]:
    """Writes ``tensors`` (in this order) into ``out_dir`` and returns the names of the files.

    Args:
        out_dir: An existing directory.
        tensors: The tensors, in the order of the header and the data.
        max_shard_size: Bytes of tensor data per file; above it the output is sharded.
            ``None``: always one ``model.safetensors``.
        metadata: The header's ``__metadata__`` (default ``{"format": "pt"}``).
        progress: Called with the number of bytes after each chunk written.
    """
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise ValueError("tensor names must be unique")
    meta = dict(metadata) if metadata is not None else {"format": "pt"}
    out = Path(out_dir)
    shards = _shards(tensors, max_shard_size)
    if len(shards) == 1:
        _write_file(out / "model.safetensors", shards[0], meta, progress)
        return ["model.safetensors"]
    files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map: Dict[str, str] = {}
    for fname, shard in zip(files, shards):
        _write_file(out / fname, shard, meta, progress)
        weight_map.update({t.name: fname for t in shard})
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors)},
             "weight_map": dict(sorted(weight_map.items()))}
    tmp = out / f".model.safetensors.index.json.{uuid.uuid4().hex[:12]}.tmp"
    tmp.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / "model.safetensors.index.json")
    return files + ["model.safetensors.index.json"]
