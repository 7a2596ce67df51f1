"""Multi-process scoring, as sentence-transformers' ``start_multi_process_pool`` / ``pool=`` /
``stop_multi_process_pool``.

Each worker is a spawned process that loads the model from its path and options (a model pickles
as those, not as its weights) with ``cores // processes`` compute threads, so the pool uses the
cores it is given without oversubscribing them. Inputs are cut into chunks that the workers take
from one queue; the results are put back in the input order. The caller resolves the prompt (and
for ``rank`` the chunking) before sending a call, as sentence-transformers does, and every chunk
carries the model's settings as they are then (``max_length``, ``prompts``, ``activation_fn``, ...:
:meth:`~crossrank.CrossEncoder.apply_settings`), so a model changed after the pool started scores
in the workers as it does in the caller. A score does not depend on the
batch it ran in, the thread count or the process (the engine's sums have one fixed order), so a
pool returns bitwise the scores of one process.

One process already uses every core; a pool pays off where one call cannot keep them busy (short
inputs, Python overhead) or to run several models side by side.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import pickle
import queue
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .integers import positive_int

__all__ = ["start_pool", "stop_pool", "run_in_pool", "run_pooled", "default_processes"]

Pool = Dict[str, Any]


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_processes() -> int:
    """sentence-transformers starts 4 CPU workers; crossrank starts at most one per core."""
    return max(1, min(4, _cores()))


def _worker(state: Dict[str, Any], inputs: Any, outputs: Any) -> None:
    from .model import CrossEncoder  # imported in the child: spawn starts a fresh interpreter

    try:
        model = CrossEncoder.__new__(CrossEncoder)
        model.__setstate__(state)
    except BaseException as exc:  # reported on every chunk this worker takes
        model, load_error = None, exc
    while True:
        job = inputs.get()
        if job is None:
            return
        chunk_id, method, args, kwargs, settings = job
        try:
            if model is None:
                raise load_error
            model.apply_settings(settings)
            result: Any = ("ok", np.asarray(getattr(model, method)(*args, **kwargs)))
        except BaseException as exc:
            try:
                pickle.dumps(exc)
                result = ("error", exc)
            except Exception:
                result = ("error", RuntimeError(f"{type(exc).__name__}: {exc}"))
        outputs.put((chunk_id, result))


def start_pool(model: Any, target_devices: Optional[Sequence[str]] = None) -> Pool:
    """Starts one worker process per entry of ``target_devices`` (each ``"cpu"``; default
    :func:`default_processes` of them), each with ``cores // processes`` threads (at least one).

    Returns:
        ``{"input": queue, "output": queue, "processes": [...]}``, sentence-transformers' pool shape.
    """
    if target_devices is None:
        target_devices = ["cpu"] * default_processes()
    devices = list(target_devices)
    if not devices:
        raise ValueError("target_devices is empty: give one 'cpu' entry per worker process")
    for device in devices:
        if str(device) != "cpu":
            raise ValueError(f"crossrank runs on the CPU; target device {device!r} is not available "
                             "(give one 'cpu' per worker process)")
    state = model.__getstate__()
    options = dict(state["options"])
    options["threads"] = max(1, _cores() // len(devices))
    state = {**state, "options": options}
    ctx = mp.get_context("spawn")
    inputs, outputs = ctx.Queue(), ctx.Queue()
    processes = []
    for _ in devices:
        p = ctx.Process(target=_worker, args=(state, inputs, outputs), daemon=True)
        p.start()
        processes.append(p)
    return {"input": inputs, "output": outputs, "processes": processes, "threads": options["threads"]}


def stop_pool(pool: Pool) -> None:
    """Stops the workers of a pool and closes its queues."""
    for _ in pool["processes"]:
        try:
            pool["input"].put(None)
        except (ValueError, OSError):  # already closed
            break
    for p in pool["processes"]:
        p.join(timeout=10)
        if p.is_alive():
            p.terminate()
            p.join()
        p.close()
    pool["input"].cancel_join_thread()
    pool["input"].close()
    pool["output"].close()


def run_in_pool(pool: Pool, method: str, chunks: List[tuple], kwargs: Dict[str, Any],
                settings: Optional[Dict[str, Any]] = None) -> List[np.ndarray]:
    """Runs ``model.<method>(*chunk, **kwargs)`` for every chunk on the pool's workers, each worker's
    model first given ``settings`` (see :meth:`~crossrank.CrossEncoder.apply_settings`); the results
    in chunk order. A worker's error is raised here (the first chunk's, in chunk order)."""
    settings = settings or {}
    try:
        pickle.dumps((kwargs, settings))
    except Exception as exc:
        raise TypeError(f"a pool sends the call's options to worker processes, and one of them cannot be pickled "
                        f"({exc}); use a named activation or a module-level function") from exc
    for i, args in enumerate(chunks):
        pool["input"].put((i, method, args, kwargs, settings))
    results: Dict[int, Any] = {}
    while len(results) < len(chunks):
        try:
            chunk_id, result = pool["output"].get(timeout=1.0)
        except queue.Empty:
            dead = [p for p in pool["processes"] if not p.is_alive()]
            if dead:
                raise RuntimeError(f"{len(dead)} worker process(es) of the pool died (exit code "
                                   f"{dead[0].exitcode}); stop the pool and start a new one") from None
            continue
        results[chunk_id] = result
    for i in range(len(chunks)):
        status, value = results[i]
        if status == "error":
            raise value
    return [results[i][1] for i in range(len(chunks))]


def chunk_size_for(n: int, processes: int, chunk_size: Optional[int]) -> int:
    """sentence-transformers' default chunk size: about ten chunks per process, at most 5000."""
    if chunk_size is not None:
        return positive_int(chunk_size, "chunk_size")
    return max(1, min(math.ceil(n / processes / 10), 5000))


def run_pooled(model: Any, method: str, items: Sequence[Any], chunk: Callable[[Sequence[Any]], tuple],
               kwargs: Dict[str, Any], pool: Optional[Pool], device: Any, chunk_size: Optional[int]) -> np.ndarray:
    """Runs ``model.<method>`` over ``items`` on a pool's workers (a temporary pool of ``model`` for a
    device list): ``chunk`` turns a slice of the items into the method's positional arguments."""
    settings = model.__getstate__()["settings"]  # raises, naming it, for an activation that cannot be sent
    own = pool is None
    if own:
        pool = model.start_multi_process_pool(list(device))
    try:
        size = chunk_size_for(len(items), len(pool["processes"]), chunk_size)
        parts = run_in_pool(pool, method, [chunk(items[i:i + size]) for i in range(0, len(items), size)],
                            {**kwargs, "show_progress_bar": False}, settings)
    finally:
        if own:
            model.stop_multi_process_pool(pool)
    return np.concatenate(parts) if parts else np.empty((0,), dtype=np.float32)
