"""The rerank benchmark's planning and report logic (benchmarks/bench_rerank.py and its modules),
on synthetic runs: no engine is started. Ratios compare engines at the same thread count, each
peer at its best batch size there; the memory mode's bound is what scoring adds in anonymous
memory over the loaded model."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_rerank  # noqa: E402
import rerank_report  # noqa: E402
from rerank_workload import MODELS, cache_dir, config_file, flop_model  # noqa: E402

FM = flop_model({"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                 "intermediate_size": 128, "num_hidden_layers": 2})


def run(engine, threads, seconds, batch_size=None, **extra):
    config = {"engine": engine, "threads": threads}
    if batch_size is not None:
        config["batch_size"] = batch_size
    return {"engine": engine, "threads": threads, "config": config, "batch_size": batch_size, "times_s": [seconds],
            "other_cpu": [0.0], "load_s": 1.0, "lengths": [300, 320], "ids_sha256": "same", "shared_prefix": 40,
            "raw": [0.1, 0.2], "scores": [0.52, 0.55], "peak_rss": 1 << 30, **extra}


def test_ratios_compare_engines_at_the_same_thread_count_with_each_peer_at_its_best_batch_size(capsys):
    runs = [run("crossrank-bf16", 1, 4.0), run("transformers-bf16", 1, 2.0, 1), run("transformers-bf16", 1, 8.0, 8),
            run("crossrank-bf16", 2, 1.0), run("transformers-bf16", 2, 4.0, 1), run("transformers-bf16", 2, 2.0, 8),
            run("transformers-f32", 2, 8.0, 8)]
    summary = rerank_report.summarise(runs, "throughput", 2, FM, {})
    best = summary["best"]
    assert best[("transformers-bf16", 1)]["batch_size"] == 1 and best[("transformers-bf16", 2)]["batch_size"] == 8
    assert best[("crossrank-bf16", 1)]["vs_transformers_bf16"] == pytest.approx(0.5)
    assert best[("crossrank-bf16", 2)]["vs_transformers_bf16"] == pytest.approx(2.0)
    assert best[("crossrank-bf16", 2)]["vs_transformers_f32"] == pytest.approx(8.0)
    assert best[("crossrank-bf16", 1)]["vs_transformers_f32"] is None  # no float32 peer at 1 thread
    assert summary["checks"]["same_token_ids"]
    rerank_report.print_results("throughput", runs, summary, [1, 2], 2, 1, 1, [1, 8])
    rerank_report.print_sweep(summary, [1, 2])
    out = capsys.readouterr().out
    assert "ratio to transformers-bf16" in out and "4.00x" in out  # crossrank-bf16: 0.5 -> 2 pairs/s


def test_memory_mode_flags_an_engine_over_1_gib_of_anonymous_memory():
    mib = 1 << 20
    runs = [run("crossrank-auto", 16, 30.0, anon_after_load=16000 * mib, peak_anon=16500 * mib),
            run("crossrank-int8", 16, 10.0, anon_after_load=8000 * mib, peak_anon=9100 * mib)]
    summary = rerank_report.summarise(runs, "memory", 1, FM, {})
    by = {r["engine"]: r for r in summary["ok"]}
    assert by["crossrank-auto"]["anon_over_loaded"] == 500 * mib and by["crossrank-auto"]["anon_within_bound"]
    assert not by["crossrank-int8"]["anon_within_bound"]


def test_the_command_line_takes_a_thread_list_models_and_mode_defaults():
    args = bench_rerank.parse_args(["--threads", "1,2,4,8,16", "--model", "8B", "--docs", "16"])
    assert args.thread_list == [1, 2, 4, 8, 16] and args.model == "8B"
    assert args.batch_sizes == [1, 8, 16] and "crossrank-auto" not in args.engine_list
    args = bench_rerank.parse_args(["--mode", "memory", "--threads", "16"])
    assert args.engine_list == ["crossrank-auto"] and args.n_docs == 1 and args.batch_sizes == [1]
    for bad in (["--threads", "1,x"], ["--threads", "0"], ["--engines", "nope"], ["--mode", "memory", "--docs", "2"],
                ["--model", "2B"]):
        with pytest.raises(SystemExit):
            bench_rerank.parse_args(bad)


def test_plan_runs_every_engine_at_every_thread_count_in_order():
    args = bench_rerank.parse_args(["--threads", "1,4", "--docs", "8", "--hf-batch-sizes", "1,8",
                                    "--engines", "crossrank-bf16,transformers-bf16"])
    cells = [(c["engine"], c["threads"], c.get("batch_size")) for c in bench_rerank.plan(args, {}, None)]
    assert cells == [("crossrank-bf16", 1, None), ("transformers-bf16", 1, 1), ("transformers-bf16", 1, 8),
                     ("crossrank-bf16", 4, None), ("transformers-bf16", 4, 1), ("transformers-bf16", 4, 8)]


def test_model_shapes_and_cache_directory(monkeypatch, tmp_path):
    for name in MODELS:
        assert config_file(name).is_file()
    assert cache_dir(str(tmp_path)) == tmp_path
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "crossrank-bench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir().name == ".cache"


def test_profile_totals_count_only_the_timed_passes_and_the_report_gives_each_phase_share(capsys):
    from rerank_engines import TIMED_MARK, phase_totals
    log = "\n".join([
        "crossrank pass: 40 tokens, 2 sequences, 2 threads, 50.0 ms: q|k|v 50.0% attention 50.0% rest 0.0%",  # warm-up
        TIMED_MARK,
        "crossrank pass: 600 tokens, 16 sequences, 2 threads, 100.0 ms: q|k|v 20.0% attention 30.0% rest 50.0%",
        "some other line",
        "crossrank pass: 600 tokens, 16 sequences, 2 threads, 300.0 ms: q|k|v 40.0% attention 10.0% rest 50.0%",
    ])
    totals = phase_totals(log)
    assert totals == pytest.approx({"total": 400.0, "q|k|v": 140.0, "attention": 60.0, "rest": 200.0})
    assert phase_totals(log.replace(TIMED_MARK, "")) == {}
    runs = [run("crossrank-int8", 2, 0.2, phases_ms=totals), run("transformers-bf16", 2, 1.0, 8)]
    runs[0]["times_s"] = [0.2, 0.25]
    rerank_report.print_phases(runs)
    out = capsys.readouterr().out
    assert "crossrank-int8" in out and "200.0" in out and "35.0%" in out and "transformers" not in out
    args = bench_rerank.parse_args(["--profile", "--engines", "crossrank-int8,transformers-bf16"])
    specs = bench_rerank.plan(args, {"profile": args.profile}, None)
    assert [s.get("env", {}).get("CROSSRANK_PROFILE") for s in specs] == ["1"] + [None] * (len(specs) - 1)
