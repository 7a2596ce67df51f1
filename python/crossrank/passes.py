"""Pass planning helpers of :meth:`~crossrank.CrossEncoder.forward_ids`: which sequences share a
prompt prefix, and running an engine call so that Ctrl-C stops it."""
from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["shared_prefix_groups", "interruptible"]


# Fewer shared tokens than this are not worth a separate prefix pass.
_MIN_SHARED_PREFIX = 4


def shared_prefix_groups(seqs: Sequence[np.ndarray],
                          share_keys: Optional[Sequence[Hashable]]) -> List[Tuple[List[int], int]]:
    """Groups of sequences (same key, at least two) and the leading tokens they all share.

    The shared length is the common prefix of every member, one token short of the shortest
    member (each needs a last token of its own to score)."""
    if share_keys is None:
        return []
    by_key: Dict[Hashable, List[int]] = {}
    for i, key in enumerate(share_keys):
        if key is not None:
            by_key.setdefault(key, []).append(i)
    groups = []
    for members in by_key.values():
        if len(members) < 2:
            continue
        first = seqs[members[0]]
        length = min(len(seqs[i]) for i in members) - 1
        for i in members[1:]:
            k = min(length, len(seqs[i]))
            diff = np.flatnonzero(first[:k] != seqs[i][:k])
            length = int(diff[0]) if diff.size else k
            if length < _MIN_SHARED_PREFIX:
                break
        if length >= _MIN_SHARED_PREFIX:
            groups.append((members, length))
    return groups


def interruptible(call: Callable[[], Any], control: Any) -> Any:
    """Runs one engine call (which polls ``control``) so that Ctrl-C stops it.

    On the main thread the call runs in a helper thread while the main thread waits in short
    slices, so a KeyboardInterrupt arrives within a fraction of a second; it then cancels the
    call through its control, waits for the engine to stop and re-raises.
    """
    if threading.current_thread() is not threading.main_thread():
        return call()
    box: Dict[str, Any] = {}

    def run() -> None:
        try:
            box["out"] = call()
        except BaseException as exc:  # handed to the waiting thread
            box["err"] = exc

    worker = threading.Thread(target=run, name="crossrank-forward", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.05)
    except KeyboardInterrupt:
        control.cancel()
        worker.join()
        raise
    if "err" in box:
        raise box["err"]
    return box["out"]
