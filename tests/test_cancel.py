"""Cancellation: a CancelToken or Ctrl-C stops a long forward within a fraction of a second, and
the model gives the same scores afterwards.

The model is a random-weight Qwen3 (tests/_numpy_checkpoint.py) large enough that one pass over
five 3000-token sequences takes seconds: hidden 512, 8 layers, intermediate 2048, 8 query and
4 KV heads of 64. Its vocabulary is cut to 10000 ids (it still holds the "yes"/"no" tokens its
head reads), which keeps the checkpoint small; the tests feed token ids directly.
"""
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import crossrank
from _numpy_checkpoint import copy_qwen3_tokenizer, write_qwen3_checkpoint
from crossrank import CrossEncoder

OVERRIDES = {"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["no", "yes"],
             "is_original_qwen3_reranker": True}
VOCAB = 10000
LONG_TOKENS, LONG_SEQS = 3000, 40
CANCEL_AFTER = 0.5  # seconds
STOP_WITHIN = 5.0   # seconds from cancel() to the call raising: generous, it takes ~0.1 s


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen3-cancel")
    write_qwen3_checkpoint(path, seed=11, vocab_size=VOCAB, hidden_size=512, num_hidden_layers=8,
                           intermediate_size=2048, num_attention_heads=8, num_key_value_heads=4, head_dim=64)
    copy_qwen3_tokenizer(path)
    return path


def token_ids(n, seed):
    return np.random.default_rng(seed).integers(0, VOCAB, n).tolist()


SHORT = [token_ids(40, 1), token_ids(97, 2), token_ids(5, 3)]
LONG = [token_ids(LONG_TOKENS, 4)] * LONG_SEQS


NO_BLAS = pytest.mark.skipif(crossrank.build_info()["blas"] == "none",
                             reason="this build has no OpenBLAS (CROSSRANK_BLAS=none or not found at build time)")


@pytest.fixture(scope="module", params=["panels-1-thread", "panels-2-threads", pytest.param("openblas", marks=NO_BLAS)])
def model(request, checkpoint):
    if request.param == "openblas":
        # read when the weights are packed, i.e. while the model loads
        os.environ["CROSSRANK_GEMM"] = "openblas"
        try:
            return CrossEncoder(checkpoint, hf_overrides=OVERRIDES, threads=2)
        finally:
            del os.environ["CROSSRANK_GEMM"]
    saved = os.environ.pop("CROSSRANK_GEMM", None)
    try:
        return CrossEncoder(checkpoint, hf_overrides=OVERRIDES, threads=1 if "1" in request.param else 2)
    finally:
        if saved is not None:
            os.environ["CROSSRANK_GEMM"] = saved


def test_cancel_from_another_thread_stops_a_long_call_and_the_model_stays_usable(model):
    before = model.forward_ids(SHORT)
    token = crossrank.CancelToken()
    box = {}

    def run():
        try:
            box["out"] = model.forward_ids(LONG, cancel=token)
        except BaseException as exc:
            box["err"] = exc
        box["end"] = time.monotonic()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    time.sleep(CANCEL_AFTER)
    assert worker.is_alive(), "the long call finished before it could be cancelled: make it longer"
    assert not token.cancelled
    cancelled_at = time.monotonic()
    token.cancel()
    worker.join(STOP_WITHIN + 30)
    assert not worker.is_alive(), "the call did not stop after cancel()"
    assert isinstance(box.get("err"), crossrank.Cancelled), box
    assert box["end"] - cancelled_at < STOP_WITHIN
    assert token.cancelled
    done, total = token.progress
    assert done < total or total == 0  # stopped mid-pass, not after it

    np.testing.assert_array_equal(model.forward_ids(SHORT, cancel=crossrank.CancelToken()), before)
    np.testing.assert_array_equal(model.forward_ids(SHORT), before)


def test_a_token_cancelled_before_the_call_stops_it_at_once(model):
    before = model.forward_ids(SHORT)
    token = crossrank.CancelToken()
    token.cancel()
    start = time.monotonic()
    with pytest.raises(crossrank.Cancelled):
        model.forward_ids(LONG, cancel=token)
    assert time.monotonic() - start < 1.0
    with pytest.raises(crossrank.Cancelled):  # a token stays cancelled
        model.forward_ids(SHORT, cancel=token)
    np.testing.assert_array_equal(model.forward_ids(SHORT, cancel=crossrank.CancelToken()), before)


INTERRUPT_SCRIPT = r"""
import json, sys, time
import numpy as np
from crossrank import CrossEncoder
path, overrides, short, long_ids, n_long = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4]), int(sys.argv[5])
model = CrossEncoder(path, hf_overrides=overrides, threads=2)
before = model.forward_ids(short)
# one call of at least ~20 s on any machine (at least n_long sequences), so that it is still
# running when the signal comes, and finishing by itself would fail the test's 3 s bound
start = time.monotonic()
model.forward_ids([long_ids])
n_long = max(n_long, int(20.0 / max(time.monotonic() - start, 1e-3)) + 1)
print("READY", flush=True)
try:
    model.forward_ids([long_ids] * n_long)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
else:
    print("FINISHED", flush=True)
    sys.exit(3)
after = model.forward_ids(short)
assert np.array_equal(after, before), (after, before)
print("OK", flush=True)
"""


def test_ctrl_c_interrupts_a_long_call_on_the_main_thread(checkpoint):
    import json

    env = {k: v for k, v in os.environ.items() if k != "CROSSRANK_GEMM"}
    proc = subprocess.Popen(
        [sys.executable, "-c", INTERRUPT_SCRIPT, str(checkpoint), json.dumps(OVERRIDES), json.dumps(SHORT),
         json.dumps(LONG[0]), str(LONG_SEQS)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line.strip()) for line in proc.stdout], daemon=True)
    reader.start()
    try:
        assert lines.get(timeout=60) == "READY"
        time.sleep(1.0)
        assert proc.poll() is None
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert lines.get(timeout=30) == "INTERRUPTED"
        assert time.monotonic() - sent < 3.0
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
        reader.join(5)
        assert lines.get(timeout=5) == "OK"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
