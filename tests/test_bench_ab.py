"""The A/B benchmark's input and report logic (benchmarks/bench_ab.py) on synthetic numbers: no
build, no engine. Variants alternate round by round (ABBA) and are compared with the baseline
run of the same round."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_ab  # noqa: E402


def test_a_spec_is_a_revision_or_the_working_tree_and_an_environment():
    assert bench_ab.parse_spec("rev:HEAD~1") == ("HEAD~1", {})
    assert bench_ab.parse_spec("tree:") == (None, {})
    assert bench_ab.parse_spec("env:CROSSRANK_ROW_BLOCK=512") == (None, {"CROSSRANK_ROW_BLOCK": "512"})
    assert bench_ab.parse_spec("rev:HEAD~1+env:CROSSRANK_ROW_BLOCK=512,CROSSRANK_GEMM=openblas") == \
        ("HEAD~1", {"CROSSRANK_ROW_BLOCK": "512", "CROSSRANK_GEMM": "openblas"})
    assert bench_ab.parse_spec("env:A=1+tree:") == (None, {"A": "1"})
    # "+" splits only where a part starts: inside a revision or a value it stays
    assert bench_ab.parse_spec("rev:topic+fix+env:OPTS=a+b=c") == ("topic+fix", {"OPTS": "a+b=c"})
    assert bench_ab.parse_spec("env:EMPTY=") == (None, {"EMPTY": ""})


@pytest.mark.parametrize("spec", ["", "HEAD~1", "rev:", "tree:x", "foo:1", "rev:A+rev:B", "rev:A+tree:",
                                  "env:X", "env:=1", "env:1X=2", "env:A=1,A=2", "env:A=1+env:B=2",
                                  "env:PYTHONPATH=/x"])
def test_bad_specs_are_refused(spec):
    with pytest.raises(ValueError):
        bench_ab.parse_spec(spec)


def test_variants_and_the_command_line():
    v = bench_ab.parse_variant("new=rev:HEAD+env:A=1")
    assert (v.name, v.rev, v.env, v.spec) == ("new", "HEAD", {"A": "1"}, "rev:HEAD+env:A=1")
    for bad in ("rev:HEAD", "=tree:", "a b=tree:", "x=nope"):
        with pytest.raises(ValueError):
            bench_ab.parse_variant(bad)
    args, rargs = bench_ab.parse_args(["--variant", "a=rev:HEAD", "--variant", "b=tree:", "--threads", "16",
                                       "--docs", "8", "--repeats", "2", "--engines", "crossrank-auto,crossrank-int8"])
    assert [v.name for v in args.variants] == ["a", "b"] and args.rounds == 3
    assert rargs.mode == "throughput" and rargs.thread_list == [16] and rargs.n_docs == 8 and rargs.repeats == 2
    assert rargs.engine_list == ["crossrank-auto", "crossrank-int8"] and rargs.batch_sizes == [1, 8]
    for bad in (["--variant", "a=tree:"],                                             # one variant
                ["--variant", "a=tree:", "--variant", "a=rev:HEAD"],                  # same name
                ["--variant", "a=tree:", "--variant", "b=rev"],                       # bad SPEC
                ["--variant", "a=tree:", "--variant", "b=tree:", "--engines", "transformers-bf16"],
                ["--variant", "a=tree:", "--variant", "b=tree:", "--threads", "1,2"],
                ["--variant", "a=tree:", "--variant", "b=tree:", "--rounds", "0"]):
        with pytest.raises(SystemExit):
            bench_ab.parse_args(bad)


def test_rounds_alternate_the_order_abba():
    assert bench_ab.round_orders(2, 4) == [[0, 1], [1, 0], [0, 1], [1, 0]]
    assert bench_ab.round_orders(3, 3) == [[0, 1, 2], [2, 1, 0], [0, 1, 2]]
    assert bench_ab.round_orders(2, 1) == [[0, 1]]
    # over an even number of rounds every variant holds every position equally often
    orders = bench_ab.round_orders(3, 4)
    assert all(sorted(o[p] for o in orders) == [0, 0, 2, 2] or sorted(o[p] for o in orders) == [1, 1, 1, 1]
               for p in range(3))


def test_paired_ratios_compare_the_runs_of_one_round():
    # the machine slows down over the script; the ratios of each round stay near 1.1
    base = [10.0, 8.0, 6.0]
    new = [11.0, 8.4, 6.9]
    s = bench_ab.paired_ratios(base, new)
    assert s["ratios"] == pytest.approx([1.1, 1.05, 1.15])
    assert s["median"] == pytest.approx(1.1) and s["min"] == pytest.approx(1.05) and s["max"] == pytest.approx(1.15)
    assert (s["faster"], s["n"]) == (3, 3)
    line = bench_ab.verdict("crossrank-auto", 16, "new", "base", s)
    assert line == ("crossrank-auto at 16 threads, new / base: median 1.100x (min 1.050x, max 1.150x), "
                    "faster in 3 of 3 rounds")
    # a failed run drops its round; an equal speed is not faster
    s = bench_ab.paired_ratios([10.0, None, 5.0, 4.0], [9.0, 7.0, 5.0, None])
    assert s["ratios"] == [pytest.approx(0.9), None, 1.0, None]
    assert (s["faster"], s["n"]) == (0, 2) and s["median"] == pytest.approx(0.95)
    s = bench_ab.paired_ratios([None], [1.0])
    assert s["n"] == 0 and s["median"] is None
    assert "no round with both runs" in bench_ab.verdict("crossrank-auto", 1, "b", "a", s)


def test_scores_are_compared_bitwise_else_by_their_largest_difference():
    ref = [0.5, -1.25, 3.0]
    assert bench_ab.compare_scores(ref, [list(ref), list(ref)]) == {"bitwise_equal": True, "max_abs_diff": 0.0,
                                                                    "runs": 2}
    c = bench_ab.compare_scores(ref, [list(ref), [0.5, -1.25 + 1e-6, 3.0]])
    assert not c["bitwise_equal"] and c["max_abs_diff"] == pytest.approx(1e-6)
    c = bench_ab.compare_scores([0.0], [[-0.0]])  # equal as numbers, not as bits
    assert not c["bitwise_equal"] and c["max_abs_diff"] == 0.0
    assert bench_ab.compare_scores(ref, [[0.5]])["max_abs_diff"] is None


def cell(variant, round_, engine, pps, raw=(0.25, -0.5), ids="same"):
    if pps is None:
        return {"variant": variant, "round": round_, "engine": engine, "error": "exit code 1"}
    return {"variant": variant, "round": round_, "engine": engine, "pairs_per_s": pps, "raw": list(raw),
            "ids_sha256": ids, "other_cpu_best": 0.1}


def test_the_report_gives_pairs_per_round_ratios_scores_and_verdicts(capsys):
    variants = [bench_ab.parse_variant("base=rev:HEAD~1"), bench_ab.parse_variant("new=tree:")]
    runs = [cell("base", 1, "crossrank-auto", 2.0), cell("new", 1, "crossrank-auto", 2.2),
            cell("new", 2, "crossrank-auto", 1.9, raw=(0.25, -0.5 + 2e-7)), cell("base", 2, "crossrank-auto", 2.0),
            cell("base", 3, "crossrank-auto", 1.5), cell("new", 3, "crossrank-auto", None),
            cell("base", 1, "crossrank-int8", 4.0), cell("new", 1, "crossrank-int8", 4.0),
            cell("new", 2, "crossrank-int8", 4.4), cell("base", 2, "crossrank-int8", 4.0),
            cell("base", 3, "crossrank-int8", 4.0), cell("new", 3, "crossrank-int8", 4.2)]
    results = bench_ab.results_by_engine(runs, variants, ["crossrank-auto", "crossrank-int8"], 3, True)
    auto = results["crossrank-auto"]
    assert auto["pairs_per_s"] == {"base": [2.0, 2.0, 1.5], "new": [2.2, 1.9, None]}
    vs = auto["vs_baseline"]["new"]
    assert vs["ratios"] == [pytest.approx(1.1), pytest.approx(0.95), None] and (vs["faster"], vs["n"]) == (1, 2)
    assert auto["scores"]["base"]["bitwise_equal"] and not auto["scores"]["new"]["bitwise_equal"]
    assert auto["scores"]["new"]["max_abs_diff"] == pytest.approx(2e-7) and auto["scores"]["new"]["same_token_ids"]
    assert results["crossrank-int8"]["scores"]["new"]["bitwise_equal"]
    info = {"lscpu_model_name": "Test CPU", "cpu_vendor": "GenuineIntel", "cpu_family": "6", "cpu_model_number": "207",
            "affinity": 16, "loadavg_at_start": ["0.1", "0.2", "0.3"]}
    verdicts = bench_ab.print_report(results, variants, 16, 3, info, runs)
    out = capsys.readouterr().out
    assert verdicts == ["crossrank-auto at 16 threads, new / base: median 1.025x (min 0.950x, max 1.100x), "
                        "faster in 1 of 2 rounds",
                        "crossrank-int8 at 16 threads, new / base: median 1.050x (min 1.000x, max 1.100x), "
                        "faster in 2 of 3 rounds"]
    assert "CPU: Test CPU (GenuineIntel, family 6 model 207)" in out and "threads 16" in out
    assert "raw scores, new vs base: max |d| = 2.000e-07" in out and "raw scores, new vs base: bitwise equal" in out
    assert "round 3" in out and "2.200" in out and verdicts[1] in out
    # without --check-scores, no score lines
    results = bench_ab.results_by_engine(runs, variants, ["crossrank-auto"], 3, False)
    assert "scores" not in results["crossrank-auto"]


def test_rounds_run_each_variant_with_its_build_and_environment_in_abba_order(monkeypatch, tmp_path):
    args, rargs = bench_ab.parse_args(["--variant", "a=rev:HEAD", "--variant", "b=env:CROSSRANK_ROW_BLOCK=512",
                                       "--rounds", "2", "--threads", "2", "--docs", "2",
                                       "--engines", "crossrank-auto,crossrank-f32-openblas"])
    for v, d in zip(args.variants, ("A", "B")):
        v.python_dir = tmp_path / d / "python"
    seen = []

    def fake_cell(spec, tmp, tag):
        seen.append((spec["engine"], spec["env"]))
        return {"engine": spec["engine"], "threads": spec["threads"], "config": spec, "times_s": [1.0],
                "load_s": 1.0, "process_s": 2.0}

    monkeypatch.setattr(bench_ab.bench_rerank, "run_cell", fake_cell)
    runs = bench_ab.run_rounds(args, rargs, {"repeats": 1}, tmp_path, 2)
    assert [(r["round"], r["variant"], r["engine"]) for r in runs] == [
        (1, "a", "crossrank-auto"), (1, "a", "crossrank-f32-openblas"),
        (1, "b", "crossrank-auto"), (1, "b", "crossrank-f32-openblas"),
        (2, "b", "crossrank-auto"), (2, "b", "crossrank-f32-openblas"),
        (2, "a", "crossrank-auto"), (2, "a", "crossrank-f32-openblas")]
    envs = {(r["variant"], r["engine"]): env for r, (_, env) in zip(runs, seen)}
    assert envs[("a", "crossrank-auto")]["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path / "A" / "python")
    assert "CROSSRANK_ROW_BLOCK" not in envs[("a", "crossrank-auto")]
    assert envs[("b", "crossrank-auto")]["CROSSRANK_ROW_BLOCK"] == "512"
    assert envs[("b", "crossrank-auto")]["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path / "B" / "python")
    # the engine's own setting stays beside the variant's
    assert envs[("b", "crossrank-f32-openblas")]["CROSSRANK_GEMM"] == "openblas"
