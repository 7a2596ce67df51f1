"""examples/notebooks/evaluate_reranker.ipynb runs top to bottom and reports `crossrank eval`'s numbers.

The notebook runs in a Jupyter kernel (nbclient + ipykernel) with parameters injected after its
"parameters" cell, as papermill does. The Hugging Face cache is pointed at an empty directory, so
the notebook takes its no-real-weights path and builds a tiny random-weight checkpoint with
crossrank.random_checkpoint; `crossrank eval` then runs on that checkpoint in its own process.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")
pytest.importorskip("bm25s")
pytest.importorskip("ir_measures")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples" / "notebooks" / "evaluate_reranker.ipynb"
DATA = REPO / "tests" / "data" / "beir-mini"


def inject_parameters(nb, **params):
    """Adds a cell setting ``params`` after the cell tagged "parameters" (papermill's convention)."""
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))


def outputs(nb, tag=None):
    for cell in nb.cells:
        if cell.cell_type == "code" and (tag is None or tag in cell.metadata.get("tags", [])):
            yield from cell.get("outputs", [])


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("notebook")
    (tmp / "hub").mkdir()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    inject_parameters(nb, DATA_DIR=str(DATA), RANDOM_CHECKPOINT_DIR=str(tmp / "checkpoint"),
                      FIGURE_DIR=str(tmp / "figures"), MODEL_KWARGS={"threads": 1})
    env = {"MPLBACKEND": "Agg", "HF_HUB_CACHE": str(tmp / "hub"), "HF_HUB_OFFLINE": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                         resources={"metadata": {"path": str(NOTEBOOK.parent)}})
        client.execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb, tmp


def test_notebook_runs_top_to_bottom_without_errors(executed):
    nb, _ = executed
    assert not [o for o in outputs(nb) if o.output_type == "error"]
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code")


def test_notebook_says_the_weights_are_random(executed):
    nb, tmp = executed
    text = "".join(o.get("text", "") for o in outputs(nb) if o.output_type == "stream")
    assert f"Weights: RANDOM: a tiny Qwen3 checkpoint with random weights in {tmp / 'checkpoint'}" in text
    assert "chance level" in text
    assert (tmp / "checkpoint" / "model.safetensors").is_file()


def test_notebook_metric_cell_equals_crossrank_eval(executed):
    nb, tmp = executed
    shown = [o.data for o in outputs(nb, tag="metrics")
             if o.output_type == "display_data" and "application/json" in o.data]
    assert len(shown) == 1
    metrics = shown[0]["application/json"]
    out = tmp / "eval.json"
    proc = subprocess.run([sys.executable, "-m", "crossrank.cli", "eval", str(tmp / "checkpoint"), "--data", str(DATA),
                           "--template", "qwen3-reranker", "--threads", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    cli_metrics = json.loads(out.read_text())["metrics"]
    assert set(metrics) == {"bm25", "reranked"}
    for stage in ("bm25", "reranked"):
        assert set(metrics[stage]) == {"nDCG@10", "MRR@10", "Recall@100"}
        for name, value in metrics[stage].items():
            assert value == cli_metrics[stage][name], (stage, name)
    # The table a person reads shows the same numbers.
    table = shown[0]["text/plain"]
    assert f"{metrics['reranked']['nDCG@10']:.4f}" in table and f"{metrics['bm25']['MRR@10']:.4f}" in table


def test_notebook_draws_its_plots(executed):
    _, tmp = executed
    for name in ("score_distributions", "latency_vs_length", "ndcg_per_query"):
        png = tmp / "figures" / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def documented_commands():
    """The shell lines docs/integrations.md gives for running the notebook from a clone's root."""
    text = (REPO / "docs" / "integrations.md").read_text()
    section = text[text.index("## The evaluation notebook"):text.index("## LangChain")]
    papermill = next(line for line in section.splitlines() if line.startswith("papermill "))
    nbconvert = next(part for part in section.replace("\n", " ").split("`") if part.startswith("jupyter nbconvert"))
    return {"papermill": papermill, "nbconvert": nbconvert}


@pytest.mark.parametrize("tool", ["papermill", "nbconvert"])
def test_the_documented_command_runs_the_notebook_in_a_plain_clone(tool, tmp_path):
    """docs/integrations.md's command, run from the repository root with the defaults: no real
    weights, so the notebook writes its random checkpoint under $XDG_CACHE_HOME, never ~/.cache."""
    import shlex
    import shutil

    if shutil.which(tool if tool == "papermill" else "jupyter") is None:
        pytest.skip(f"{tool} is not installed (pip install 'crossrank[notebook]')")
    argv = shlex.split(documented_commands()[tool])
    if tool == "papermill":
        argv[2] = str(tmp_path / "evaluated.ipynb")  # the output notebook, kept out of the clone
    else:
        argv[argv.index("--output-dir") + 1] = str(tmp_path)
    (tmp_path / "hub").mkdir()
    env = {**os.environ, "MPLBACKEND": "Agg", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1",
           "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = next(tmp_path.glob("*.ipynb"))
    nb = nbformat.read(out, as_version=4)
    assert not [o for o in outputs(nb) if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs(nb) if o.output_type == "stream")
    checkpoint = tmp_path / "xdg" / "crossrank" / "notebook-qwen3-tiny-random"
    assert f"Weights: RANDOM: a tiny Qwen3 checkpoint with random weights in {checkpoint}" in text
    assert (checkpoint / "model.safetensors").is_file()
