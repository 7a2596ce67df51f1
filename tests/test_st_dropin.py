"""sentence-transformers 6 code run against crossrank, side by side with sentence-transformers itself:
activations (torch's modules, saved paths, the multi-label default, apply_softmax), the packages
``save_pretrained`` writes, ``CrossEncoderRerankingEvaluator`` on a crossrank model, return types.

sentence-transformers and torch run in a subprocess (``python tests/test_st_dropin.py --reference
JOB OUT``); this process never imports torch.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent
EXIT_NO_REFERENCE = 77
ATOL = 1e-4


# -- the reference side (subprocess) ---------------------------------------------------------------

def _torch_activation(torch, spec):
    if isinstance(spec, dict):  # a torch function, as sentence-transformers code passes them
        import functools

        return {"torch.sigmoid": torch.sigmoid, "torch.nn.functional.sigmoid": torch.nn.functional.sigmoid,
                "partial(torch.softmax, dim=-1)": functools.partial(torch.softmax, dim=-1),
                "lambda x: x.sigmoid()": lambda x: x.sigmoid(),
                "lambda x: torch.tanh(x)": lambda x: torch.tanh(x)}[spec["function"]]
    name, kwargs = spec if isinstance(spec, list) else (spec, {})
    return getattr(torch.nn, name)(**kwargs)


def _reference_main(job_path, out_path):
    try:
        import torch
        from sentence_transformers import CrossEncoder
    except ImportError as exc:
        print(f"sentence-transformers reference unavailable: {exc}", file=sys.stderr)
        sys.exit(EXIT_NO_REFERENCE)
    torch.set_num_threads(2)
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    out = {}
    for task in job:
        kind = task["kind"]
        if kind == "activations":
            x = torch.tensor(task["x"], dtype=torch.float32)
            out[task["id"]] = {json.dumps(spec): _torch_activation(torch, spec)(x).tolist() for spec in task["specs"]}
        elif kind == "call":
            model = CrossEncoder(task["path"], **task.get("init", {}))
            kwargs = dict(task.get("kwargs", {}))
            if "activation_fn" in kwargs:
                kwargs["activation_fn"] = _torch_activation(torch, kwargs["activation_fn"])
            result = getattr(model, task["method"])(*task["args"], **kwargs)
            plain = [r.tolist() if hasattr(r, "tolist") else r for r in result] if isinstance(result, list) else result
            entry = {"result": plain.tolist() if hasattr(plain, "tolist") else plain,
                     "type": type(result).__name__, "activation": type(model.activation_fn).__name__}
            if isinstance(result, list) and result and hasattr(result[0], "dtype"):
                entry["items"] = [[type(r).__name__, str(r.dtype), r.ndim] for r in result]
            if hasattr(result, "dtype"):
                entry["dtype"] = str(result.dtype)
            if hasattr(result, "shape"):
                entry["shape"] = list(result.shape)
            out[task["id"]] = entry
        elif kind == "evaluator":
            from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

            if task["library"] == "crossrank":
                import crossrank

                model = crossrank.CrossEncoder(task["path"], dtype="float32")
            else:
                model = CrossEncoder(task["path"])
            evaluator = CrossEncoderRerankingEvaluator(task["samples"], name="dev", always_rerank_positives=True)
            metrics = evaluator(model)
            out[task["id"]] = {"metrics": metrics,
                               "stored": list(model.model_card_data.eval_results_dict.values())}
        elif kind == "crossrank_torch":  # crossrank given real torch modules, as sentence-transformers code does
            import crossrank

            class Double(torch.nn.Module):
                def forward(self, x):
                    return 2 * x

            model = crossrank.CrossEncoder(task["path"], dtype="float32")
            results = {json.dumps(spec): model.predict(task["pairs"],
                                                       activation_fn=_torch_activation(torch, spec)).tolist()
                       for spec in task["specs"]}
            results["Double"] = model.predict(task["pairs"], activation_fn=Double()).tolist()
            three = crossrank.CrossEncoder(task["three"], dtype="float32")
            for spec in task["functions"]:
                results[json.dumps(spec)] = three.predict(task["pairs"],
                                                          activation_fn=_torch_activation(torch, spec)).tolist()
            empty = three.predict([], convert_to_tensor=True)
            results["three_empty_tensor"] = [type(empty).__name__, str(empty.dtype), list(empty.shape)]
            results["device"] = [model.device == torch.device("cpu"), model.to(torch.device("cpu")) is model,
                                 model.to("cpu", non_blocking=True) is model, model.eval() is model]
            out[task["id"]] = results
        elif kind == "crossrank_list":
            import crossrank

            model = crossrank.CrossEncoder(task["path"], dtype="float32")
            result = model.predict(task["pairs"], convert_to_numpy=False)
            out[task["id"]] = {"items": [[type(r).__name__, str(r.dtype), r.ndim] for r in result],
                               "values": [float(r) for r in result]}
    Path(out_path).write_text(json.dumps(out), encoding="utf-8")


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--reference":
    _reference_main(sys.argv[2], sys.argv[3])
    sys.exit(0)


# -- the crossrank side ----------------------------------------------------------------------------

import pytest  # noqa: E402

import crossrank  # noqa: E402
from _fixtures import REFERENCE_PYTHON, fixture_path  # noqa: E402
from crossrank import CrossEncoder  # noqa: E402
from crossrank.activations import ACTIVATIONS, apply_activation, normalize_activation  # noqa: E402
from crossrank.errors import UnsupportedModelError  # noqa: E402
from test_st_compat import (PAIRS, QUERY, DOCS, QWEN3_RERANKER_CHAT, link_checkpoint, torch_hidden,  # noqa: E402
                            write_st_package)

SAMPLES = [{"query": QUERY, "positive": DOCS[:2], "negative": DOCS[2:8]},
           {"query": PAIRS[20][0], "positive": [PAIRS[20][1]], "negative": [p[1] for p in PAIRS[30:36]]}]
X = [[-30.0, -4.5, -1.0, -0.25, 0.0], [0.3, 0.75, 2.0, 6.5, 40.0]]
ACTIVATION_SPECS = [ACTIVATIONS[name][0] for name in ACTIVATIONS] + [
    ["GELU", {"approximate": "tanh"}], ["LeakyReLU", {"negative_slope": 0.2}], ["ELU", {"alpha": 0.5}],
    ["Hardtanh", {"min_val": -2.0, "max_val": 3.0}], ["Softplus", {"beta": 2.0, "threshold": 5.0}],
    ["Softmax", {"dim": -1}], ["CELU", {"alpha": 2.0}], ["Softshrink", {"lambd": 1.0}]]


class _TorchLike:
    """Stands in for a torch.nn module: crossrank knows them by class name and module."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


def torch_module(name, **kwargs):
    module = "torch.nn.modules.linear" if name == "Identity" else "torch.nn.modules.activation"
    return type(name, (_TorchLike,), {"__module__": module})(**kwargs)


TORCH_SPECS = ["Tanh", "GELU", ["LeakyReLU", {"negative_slope": 0.2}], ["Softplus", {"beta": 2.0}]]
TORCH_FUNCTIONS = [{"function": name} for name in ("torch.sigmoid", "torch.nn.functional.sigmoid",
                                                   "partial(torch.softmax, dim=-1)", "lambda x: x.sigmoid()",
                                                   "lambda x: torch.tanh(x)")]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dropin")
    src = fixture_path("qwen3-tiny")
    package = write_st_package(link_checkpoint(src, root / "package"))
    three = crossrank.convert(src, ["no", "yes", "Yes"], "no_post_processing", root / "three-labels")
    (three / "chat_template.jinja").write_text(QWEN3_RERANKER_CHAT)
    # A plain sequence-classification checkpoint: no template, no reranker keys (pairs as pairs).
    plain = crossrank.convert(src, ["no", "yes"], "from_2_way_softmax", root / "plain")
    config = json.loads((plain / "config.json").read_text())
    for key in ("use_sep_token", "crossrank_conversion"):
        config.pop(key)
    (plain / "config.json").write_text(json.dumps(config))
    (plain / "tokenizer_config.json").write_text(json.dumps(
        {k: v for k, v in json.loads((plain / "tokenizer_config.json").read_text()).items() if k != "chat_template"}))
    tanh = write_st_package(link_checkpoint(src, root / "tanh"))
    conf = json.loads((tanh / "config_sentence_transformers.json").read_text())
    conf["activation_fn"] = "torch.nn.modules.activation.Tanh"
    (tanh / "config_sentence_transformers.json").write_text(json.dumps(conf))
    family = CrossEncoder(src, template="qwen3-reranker", dtype="float32", prompts={"web": "Find the answer"})
    family.save_pretrained(root / "saved-family")
    CrossEncoder(package, dtype="float32", activation_fn="identity").save(root / "saved-package")
    CrossEncoder(three, dtype="float32", activation_fn=torch_module("Tanh")).save(root / "saved-three")
    return {"package": package, "three": three, "tanh": tanh, "plain": plain, "saved-family": root / "saved-family",
            "saved-package": root / "saved-package", "saved-three": root / "saved-three"}


def _jobs(d):
    p = {k: str(v) for k, v in d.items()}
    pairs = PAIRS[:16]
    calls = [
        ("three_default", p["three"], "predict", [pairs], {}),
        ("three_softmax", p["three"], "predict", [pairs], {"apply_softmax": True}),
        ("three_sigmoid_softmax", p["three"], "predict", [pairs], {"apply_softmax": True, "activation_fn": "Sigmoid"}),
        ("three_list", p["three"], "predict", [pairs[:3]], {"convert_to_numpy": False}),
        ("tanh_package", p["tanh"], "predict", [pairs], {}),
        ("empty", p["package"], "predict", [[]], {}),
        ("saved_family", p["saved-family"], "predict", [pairs], {}),
        ("saved_family_prompt", p["saved-family"], "predict", [pairs], {"prompt_name": "web"}),
        ("saved_family_rank", p["saved-family"], "rank", [QUERY, DOCS], {}),
        ("saved_package", p["saved-package"], "predict", [pairs], {}),
        ("saved_three", p["saved-three"], "predict", [pairs], {}),
        ("plain_rank", p["plain"], "rank", [QUERY, DOCS], {"return_documents": True}),
        ("plain_predict", p["plain"], "predict", [pairs], {}),
    ]
    job = [{"kind": "activations", "id": "activations", "x": X, "specs": ACTIVATION_SPECS}]
    job += [{"kind": "call", "id": cid, "path": path, "method": method, "args": args, "kwargs": kwargs}
            for cid, path, method, args, kwargs in calls]
    job += [{"kind": "call", "id": "plain_truncated", "path": p["plain"], "init": {"max_length": 40},
             "method": "predict", "args": [PAIRS], "kwargs": {}}]
    job += [{"kind": "evaluator", "id": f"eval_{lib}", "library": lib, "path": p["package"], "samples": SAMPLES}
            for lib in ("crossrank", "sentence-transformers")]
    job += [{"kind": "crossrank_list", "id": "crossrank_list", "path": p["package"], "pairs": pairs[:3]}]
    job += [{"kind": "crossrank_torch", "id": "crossrank_torch", "path": p["package"], "three": p["three"],
             "pairs": pairs, "specs": TORCH_SPECS, "functions": TORCH_FUNCTIONS}]
    job += [{"kind": "call", "id": f"st_{json.dumps(spec)}", "path": p["three"], "method": "predict",
             "args": [pairs], "kwargs": {"activation_fn": spec}} for spec in TORCH_FUNCTIONS]
    job += [{"kind": "call", "id": "three_empty_tensor", "path": p["three"], "method": "predict", "args": [[]],
             "kwargs": {"convert_to_tensor": True}}]
    job += [{"kind": "call", "id": f"st_{json.dumps(spec)}", "path": p["package"], "method": "predict",
             "args": [pairs], "kwargs": {"activation_fn": spec}} for spec in TORCH_SPECS]
    return job


@pytest.fixture(scope="module")
def reference(dirs, tmp_path_factory):
    work = tmp_path_factory.mktemp("dropin-reference")
    (work / "job.json").write_text(json.dumps(_jobs(dirs)))
    proc = subprocess.run([REFERENCE_PYTHON, str(Path(__file__)), "--reference", str(work / "job.json"),
                           str(work / "out.json")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode == EXIT_NO_REFERENCE:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((work / "out.json").read_text())


# -- activations ------------------------------------------------------------------------------------

def test_torch_activations_computed_in_numpy_equal_torch(reference):
    ref = reference["activations"]
    x = np.asarray(X, dtype=np.float32).astype(np.float64)
    assert len(ref) == len(ACTIVATION_SPECS) >= 30
    for spec in ACTIVATION_SPECS:
        name, kwargs = spec if isinstance(spec, list) else (spec, {})
        ours = apply_activation(x, normalize_activation(torch_module(name, **kwargs))).astype(np.float32)
        np.testing.assert_allclose(ours, np.asarray(ref[json.dumps(spec)], dtype=np.float32), rtol=1e-6, atol=1e-6,
                                   err_msg=str(spec))


def test_activation_names_paths_and_refusals():
    assert normalize_activation(torch_module("Tanh")) == "tanh"
    assert normalize_activation("torch.nn.modules.activation.GELU") == "gelu"
    assert normalize_activation("torch.nn.Identity") == "identity"
    leaky = normalize_activation(torch_module("LeakyReLU", negative_slope=0.2))
    assert leaky.name == "leaky_relu" and dict(leaky.params) == {"negative_slope": 0.2}
    with pytest.raises(ValueError, match="would mix the scores of different pairs"):
        normalize_activation(torch_module("Softmax", dim=0))
    with pytest.raises(UnsupportedModelError, match="'my_package.Scale'"):
        normalize_activation("my_package.Scale")
    with pytest.raises(UnsupportedModelError, match="'torch.nn.modules.linear.Linear'"):
        normalize_activation("torch.nn.modules.linear.Linear")
    with pytest.raises(ValueError, match="'tanhh' is not known"):
        normalize_activation("tanhh")


def test_a_saved_activation_path_is_honoured_or_refused_by_name(dirs, tmp_path, reference):
    tanh = CrossEncoder(dirs["tanh"], dtype="float32")
    assert tanh.activation_fn == "tanh" and reference["tanh_package"]["activation"] == "Tanh"
    np.testing.assert_allclose(tanh.predict(PAIRS[:16]), reference["tanh_package"]["result"], atol=ATOL, rtol=0)
    raw = tanh.predict(PAIRS[:16], activation_fn="identity").astype(np.float64)
    np.testing.assert_allclose(tanh.predict(PAIRS[:16]), np.tanh(raw), atol=1e-6, rtol=0)

    custom = write_st_package(link_checkpoint(fixture_path("qwen3-tiny"), tmp_path / "custom"))
    conf = json.loads((custom / "config_sentence_transformers.json").read_text())
    conf["activation_fn"] = "my_package.activations.Scaled"
    (custom / "config_sentence_transformers.json").write_text(json.dumps(conf))
    with pytest.raises(UnsupportedModelError, match="'my_package.activations.Scaled'"):
        CrossEncoder(custom, dtype="float32")
    assert CrossEncoder(custom, dtype="float32", activation_fn="sigmoid").activation_fn == "sigmoid"


def test_an_activation_module_assigned_after_loading_is_computed_in_numpy(dirs):
    model = CrossEncoder(dirs["package"], dtype="float32")
    raw = model.predict(PAIRS[:6], activation_fn="identity").astype(np.float64)
    model.activation_fn = torch_module("Tanh")
    np.testing.assert_allclose(model.predict(PAIRS[:6]), np.tanh(raw), atol=1e-6, rtol=0)
    assert model.rank(QUERY, DOCS[:3])[0]["score"] == pytest.approx(float(np.max(np.tanh(
        model.score(QUERY, DOCS[:3], activation_fn="identity").astype(np.float64)))), abs=1e-6)


@pytest.mark.parametrize("where", ["sentence_transformers", "sbert_ce_default_activation_function"])
def test_config_json_activation_of_older_packages_is_honoured(tmp_path, where):
    d = link_checkpoint(fixture_path("qwen3-tiny"), tmp_path / "m",
                        files=("model.safetensors", "tokenizer.json", "tokenizer_config.json"))
    config = json.loads((fixture_path("qwen3-tiny") / "config.json").read_text())
    path = "torch.nn.modules.activation.Softsign"
    config[where] = {"activation_fn": path} if where == "sentence_transformers" else path
    (d / "config.json").write_text(json.dumps(config))
    model = CrossEncoder(d, template="qwen3-reranker", dtype="float32")
    assert model.activation_fn == "softsign"
    raw = model.score(QUERY, DOCS[:4], activation_fn="identity").astype(np.float64)
    np.testing.assert_allclose(model.score(QUERY, DOCS[:4]), raw / (1 + np.abs(raw)), atol=1e-6, rtol=0)


def test_multi_label_default_is_identity_then_softmax_as_sentence_transformers(dirs, reference):
    model = CrossEncoder(dirs["three"], dtype="float32")
    pairs = PAIRS[:16]
    assert model.num_labels == 3 and reference["three_default"]["activation"] == "Identity"
    raw = model.forward_ids(model.tokenize_pairs(pairs).input_ids)
    default = model.predict(pairs)
    np.testing.assert_array_equal(default, raw)
    for cid, kwargs in (("three_default", {}), ("three_softmax", {"apply_softmax": True}),
                        ("three_sigmoid_softmax", {"apply_softmax": True, "activation_fn": torch_module("Sigmoid")})):
        np.testing.assert_allclose(model.predict(pairs, **kwargs), reference[cid]["result"], atol=ATOL, rtol=0,
                                   err_msg=cid)
    soft = model.predict(pairs, apply_softmax=True)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)
    # The server keeps vLLM's default: softmax over the labels.
    np.testing.assert_allclose(model.activate(raw, defaults="vllm"), soft, atol=1e-7, rtol=0)


# -- return types -------------------------------------------------------------------------------------

def test_predict_return_types_follow_sentence_transformers(dirs, reference):
    model = CrossEncoder(dirs["package"], dtype="float32")
    empty = model.predict([])
    assert isinstance(empty, np.ndarray) and empty.dtype == np.float64 and empty.shape == (0,)
    assert reference["empty"]["dtype"] == "float64" and reference["empty"]["result"] == []
    # torch importable: 0-dim float32 tensors, as sentence-transformers (checked where torch runs)
    ours = reference["crossrank_list"]
    assert ours["items"] == [["Tensor", "torch.float32", 0]] * 3
    assert reference["three_list"]["items"] == [["Tensor", "torch.float32", 1]] * 3
    np.testing.assert_array_equal(ours["values"], model.predict(PAIRS[:3]))
    with torch_hidden():  # no torch: NumPy float32 scalars
        items = model.predict(PAIRS[:3], convert_to_numpy=False)
        assert model.predict([], convert_to_numpy=False) == []
    assert [type(x) for x in items] == [np.float32] * 3


# -- saving a package ---------------------------------------------------------------------------------

def test_saved_family_model_scores_the_same_in_both_libraries(dirs, reference):
    family = CrossEncoder(fixture_path("qwen3-tiny"), template="qwen3-reranker", dtype="float32")
    saved = CrossEncoder(dirs["saved-family"], dtype="float32")
    assert saved.prompt_format == "chat" and saved.prompts == {"web": "Find the answer"}
    pairs = PAIRS[:16]
    queries, docs = [p[0] for p in pairs], [p[1] for p in pairs]
    # the family recipe, the saved package in crossrank, and in sentence-transformers
    recipe = family.score(queries, docs)
    np.testing.assert_allclose(saved.predict(pairs), recipe, atol=1e-6, rtol=0)
    assert saved.tokenize_pairs(pairs).input_ids == family.tokenize(queries, docs).input_ids
    np.testing.assert_allclose(reference["saved_family"]["result"], recipe, atol=ATOL, rtol=0)
    np.testing.assert_allclose(reference["saved_family_prompt"]["result"],
                               family.score(queries, docs, "Find the answer"), atol=ATOL, rtol=0)
    ref_rank = reference["saved_family_rank"]["result"]
    ours = family.rank(QUERY, DOCS)
    assert [r["corpus_id"] for r in ours] == [r["corpus_id"] for r in ref_rank]
    np.testing.assert_allclose([r["score"] for r in ours], [r["score"] for r in ref_rank], atol=ATOL, rtol=0)
    assert json.loads((dirs["saved-family"] / "sentence_bert_config.json").read_text())["max_seq_length"] == 8192


@pytest.mark.parametrize("cid,source,activation", [("saved_package", "package", "Identity"),
                                                   ("saved_three", "three", "Tanh")])
def test_saved_packages_keep_the_head_activation_and_scores(dirs, reference, cid, source, activation):
    saved = CrossEncoder(dirs[cid.replace("_", "-")], dtype="float32")
    assert reference[cid]["activation"] == activation
    np.testing.assert_allclose(saved.predict(PAIRS[:16]), reference[cid]["result"], atol=ATOL, rtol=0)
    original = CrossEncoder(dirs[source], dtype="float32", activation_fn=activation.lower())
    np.testing.assert_array_equal(saved.predict(PAIRS[:16]), original.predict(PAIRS[:16]))
    files = {p.name for p in dirs[cid.replace("_", "-")].iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "modules.json", "chat_template.jinja",
            "config_sentence_transformers.json", "sentence_bert_config.json"} <= files


def test_models_sentence_transformers_cannot_load_the_same_are_refused(tmp_path):
    src = fixture_path("qwen3-tiny")
    with pytest.raises(ValueError, match="cannot be saved by its dotted path"):
        CrossEncoder(src, template="qwen3-reranker", activation_fn=lambda x: x).save(tmp_path / "a")
    with pytest.raises(ValueError, match="logit_mean"):
        CrossEncoder(src, template="qwen3-reranker", hf_overrides={"logit_mean": 1.0}).save(tmp_path / "b")
    with pytest.raises(ValueError, match="3 LM-head rows"):
        CrossEncoder(src, template="qwen3-reranker", hf_overrides={
            "classifier_from_token": ["no", "yes", "Yes"], "method": "no_post_processing",
            "is_original_qwen3_reranker": False}).save(tmp_path / "c")
    with pytest.raises(ValueError, match="model's own directory"):
        CrossEncoder(src, template="qwen3-reranker").save(src)


# -- the evaluator ------------------------------------------------------------------------------------

def test_reranking_evaluator_runs_on_a_crossrank_model(reference):
    ours, theirs = reference["eval_crossrank"], reference["eval_sentence-transformers"]
    assert set(ours["metrics"]) == set(theirs["metrics"]) and len(ours["metrics"]) >= 3
    for key, value in theirs["metrics"].items():
        assert ours["metrics"][key] == pytest.approx(value, abs=1e-6), key
    assert ours["stored"] == [ours["metrics"]]


# -- a plain sequence-classification checkpoint --------------------------------------------------------

def test_rank_on_a_plain_checkpoint_ranks_the_raw_pairs_as_sentence_transformers(dirs, reference):
    model = CrossEncoder(dirs["plain"], dtype="float32")
    assert model.prompt_format == "pairs" and model.config.use_sep_token
    np.testing.assert_allclose(model.predict(PAIRS[:16]), reference["plain_predict"]["result"], atol=ATOL, rtol=0)
    ours, ref = model.rank(QUERY, DOCS, return_documents=True), reference["plain_rank"]["result"]
    assert [(r["corpus_id"], r["text"]) for r in ours] == [(r["corpus_id"], r["text"]) for r in ref]
    np.testing.assert_allclose([r["score"] for r in ours], [r["score"] for r in ref], atol=ATOL, rtol=0)
    np.testing.assert_array_equal(model.score(QUERY, DOCS), model.predict([(QUERY, d) for d in DOCS]))


def test_plain_pairs_cut_longest_first_with_truncate_query_as_sentence_transformers(dirs, reference):
    model = CrossEncoder(dirs["plain"], dtype="float32", max_length=40)
    with pytest.raises(crossrank.TooLongError, match="longer than max_length=40") as info:
        model.predict(PAIRS)
    assert len(info.value.indices) >= 10
    encoded = model.tokenize_pairs(PAIRS, truncate_query=True)
    assert sum(encoded.truncated) == len(info.value.indices) and max(encoded.num_tokens) == 40
    np.testing.assert_allclose(model.predict(PAIRS, truncate_query=True), reference["plain_truncated"]["result"],
                               atol=ATOL, rtol=0)


def test_real_torch_modules_passed_to_crossrank_score_as_in_sentence_transformers(dirs, reference):
    ours = reference["crossrank_torch"]
    for spec in TORCH_SPECS:
        np.testing.assert_allclose(ours[json.dumps(spec)], reference[f"st_{json.dumps(spec)}"]["result"], atol=ATOL,
                                   rtol=0, err_msg=str(spec))
    raw = CrossEncoder(dirs["package"], dtype="float32").predict(PAIRS[:16], activation_fn="identity")
    np.testing.assert_allclose(ours["Double"], 2 * raw, atol=1e-6, rtol=0)  # a custom module runs on a tensor


def test_torch_functions_passed_to_crossrank_score_as_in_sentence_transformers(reference):
    ours = reference["crossrank_torch"]
    for spec in TORCH_FUNCTIONS:  # torch's functions, partials of them, lambdas written for tensors
        np.testing.assert_allclose(ours[json.dumps(spec)], reference[f"st_{json.dumps(spec)}"]["result"], atol=ATOL,
                                   rtol=0, err_msg=str(spec))


def test_no_pairs_as_a_tensor_have_sentence_transformers_shape_whatever_the_labels(reference):
    st = reference["three_empty_tensor"]
    assert reference["crossrank_torch"]["three_empty_tensor"] == [st["type"], st["dtype"], st["shape"]] == \
        ["Tensor", "torch.float32", [0]]


def test_device_to_and_eval_answer_as_sentence_transformers_on_the_cpu(reference):
    assert reference["crossrank_torch"]["device"] == [True, True, True, True]
