"""sentence-transformers compatibility: the same user code against sentence_transformers.CrossEncoder
(6.x, run in a subprocess: this process never imports torch) and crossrank.CrossEncoder gives the
same token ids, then the same numbers (float32, 1e-4).

The models are what hub repos ship for sentence-transformers: a random-weight Qwen3 checkpoint with
the package files written here by hand (modules.json, sentence_bert_config.json,
config_sentence_transformers.json with prompts, 1_LogitScore/config.json, chat_template.jinja with
query/document roles), and a checkpoint written by ``crossrank convert`` with the same chat template.

Run as a script (``python tests/test_st_compat.py --reference JOB OUT``) this file is the
sentence-transformers side: it executes the calls listed in JOB and writes ids and results to OUT.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS / "reference"))
import texts  # noqa: E402

PARITY_ATOL = 1e-4
EXIT_NO_REFERENCE = 77

PROMPTS = {"web": "Given a web search query, retrieve relevant passages that answer the query",
           "student": texts.CUSTOM_INSTRUCTION}
PAIRS = [[p["query"], p["document"]] for p in texts.PAIRS]
QUERY = "How do vaccines train the immune system?"
DOCS = [p["document"] for p in texts.PAIRS[:12]]


# -- the sentence-transformers side (subprocess) ---------------------------------------------------

def _reference_main(job_path, out_path):
    try:
        import torch
        from sentence_transformers import CrossEncoder
    except ImportError as exc:
        print(f"sentence-transformers reference unavailable: {exc}", file=sys.stderr)
        sys.exit(EXIT_NO_REFERENCE)
    torch.set_num_threads(2)
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    models, out = {}, {}
    for call in job["calls"]:
        key = json.dumps(call["model"], sort_keys=True)
        if key not in models:
            models[key] = CrossEncoder(call["model"]["path"], **call["model"].get("init", {}))
        model = models[key]
        kwargs = dict(call.get("kwargs", {}))
        if "activation_fn" in kwargs:
            kwargs["activation_fn"] = getattr(torch.nn, kwargs["activation_fn"])()
        result = getattr(model, call["method"])(*call.get("args", []), **kwargs)
        entry = {"result": _to_json(result), "type": type(result).__name__}
        if call["method"] == "predict":
            inputs = call["args"][0] if call.get("args") else kwargs["inputs"]
            pairs = [inputs] if isinstance(inputs[0], str) else inputs
            prompt = model._resolve_prompt(kwargs.get("prompt"), kwargs.get("prompt_name"))
            ids = []
            for start in range(0, len(pairs), 8):
                features = model[0].preprocess(pairs[start:start + 8], prompt=prompt)
                for row, mask in zip(features["input_ids"].tolist(), features["attention_mask"].tolist()):
                    ids.append([t for t, m in zip(row, mask) if m])
            entry["ids"] = ids
        out[call["id"]] = entry
    Path(out_path).write_text(json.dumps(out), encoding="utf-8")


def _to_json(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--reference":
    _reference_main(sys.argv[2], sys.argv[3])
    sys.exit(0)


# -- the crossrank side ----------------------------------------------------------------------------

import pytest  # noqa: E402

import crossrank  # noqa: E402
from _fixtures import REFERENCE_PYTHON, fixture_path, torch_hidden  # noqa: E402
from crossrank import CrossEncoder  # noqa: E402
from crossrank.errors import ConfigError, UnsupportedModelError  # noqa: E402
# The model card's prompt as a chat template (the instruction from a system message).
from test_chat_template import QWEN3_CHAT as QWEN3_RERANKER_CHAT  # noqa: E402


def link_checkpoint(src, dst, files=("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")):
    """A model directory that shares the (large) files of `src`."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in files:
        try:
            os.symlink(src / name, dst / name)
        except OSError:
            (dst / name).write_bytes((src / name).read_bytes())
    return dst


def write_st_package(model_dir, *, chat_template=QWEN3_RERANKER_CHAT, prompts=PROMPTS, default_prompt_name=None,
                     logit_score=True, modules=None):
    """The files sentence-transformers 6 saves for a causal-LM CrossEncoder, written by hand."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    if modules is None:
        modules = [{"idx": 0, "name": "0", "path": "",
                    "type": "sentence_transformers.base.modules.transformer.Transformer"}]
        if logit_score:
            modules.append({"idx": 1, "name": "1", "path": "1_LogitScore",
                            "type": "sentence_transformers.cross_encoder.modules.logit_score.LogitScore"})
    (model_dir / "modules.json").write_text(json.dumps(modules, indent=2))
    if logit_score:
        (model_dir / "1_LogitScore").mkdir(exist_ok=True)
        (model_dir / "1_LogitScore" / "config.json").write_text(json.dumps(
            {"true_token_id": tok.token_to_id("yes"), "false_token_id": tok.token_to_id("no"),
             "module_input_name": "causal_logits"}))
    (model_dir / "sentence_bert_config.json").write_text(json.dumps({
        "transformer_task": "text-generation" if logit_score else "sequence-classification",
        "modality_config": {"text": {"method": "forward", "method_output_name": "logits"},
                            "message": {"method": "forward", "method_output_name": "logits", "format": "flat"}},
        "module_output_name": "causal_logits" if logit_score else "scores"}))
    (model_dir / "config_sentence_transformers.json").write_text(json.dumps({
        "model_type": "CrossEncoder", "prompts": prompts, "default_prompt_name": default_prompt_name,
        "activation_fn": "torch.nn.modules.activation.Sigmoid"}))
    if chat_template is not None:
        (model_dir / "chat_template.jinja").write_text(chat_template)
    return model_dir


@pytest.fixture(scope="module")
def st_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("st")
    src = fixture_path("qwen3-tiny")
    package = write_st_package(link_checkpoint(src, root / "qwen3-st"))
    converted = crossrank.convert(src, ["no", "yes"], "from_2_way_softmax", root / "qwen3-converted")
    (converted / "chat_template.jinja").write_text(QWEN3_RERANKER_CHAT)
    return {"package": package, "converted": converted}


# Every call is run by both libraries with the same arguments: (id, model, init kwargs, method, args, kwargs).
def _calls(dirs):
    pkg, conv = str(dirs["package"]), str(dirs["converted"])
    return [
        ("predict", pkg, {}, "predict", [PAIRS], {}),
        ("predict_prompt_name", pkg, {}, "predict", [PAIRS], {"prompt_name": "student"}),
        ("predict_prompt", pkg, {}, "predict", [PAIRS[:10]], {"prompt": "Find passages about history"}),
        ("predict_single", pkg, {}, "predict", [PAIRS[3]], {}),
        ("predict_options", pkg, {}, "predict", [PAIRS[:10]],
         {"batch_size": 3, "show_progress_bar": False, "apply_softmax": True, "activation_fn": "Identity"}),
        ("predict_list", pkg, {}, "predict", [PAIRS[:5]], {"convert_to_numpy": False}),
        ("rank", pkg, {}, "rank", [QUERY, DOCS], {"top_k": 5, "return_documents": True}),
        ("rank_prompt_name", pkg, {}, "rank", [QUERY, DOCS], {"prompt_name": "student"}),
        ("default_prompt", pkg, {"default_prompt_name": "student"}, "predict", [PAIRS[:10]], {}),
        ("truncated", pkg, {"max_length": 120}, "predict", [PAIRS], {}),
        ("converted", conv, {}, "predict", [PAIRS], {}),
        ("converted_rank", conv, {}, "rank", [QUERY, DOCS], {"return_documents": True}),
    ]


@pytest.fixture(scope="module")
def reference(st_dirs, tmp_path_factory):
    """The sentence-transformers results of every call (a subprocess; skipped without it)."""
    work = tmp_path_factory.mktemp("st-reference")
    job = {"calls": [{"id": cid, "model": {"path": path, "init": init}, "method": method, "args": args,
                      "kwargs": kwargs} for cid, path, init, method, args, kwargs in _calls(st_dirs)]}
    (work / "job.json").write_text(json.dumps(job))
    proc = subprocess.run([REFERENCE_PYTHON, str(Path(__file__)), "--reference", str(work / "job.json"),
                           str(work / "out.json")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode == EXIT_NO_REFERENCE:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((work / "out.json").read_text())


class _TorchLike:
    """Stands in for a torch.nn activation module (this process never imports torch)."""


def _torch_activation(name):
    cls = type(name, (_TorchLike,), {"__module__": "torch.nn.modules.activation"})
    return cls()


@pytest.fixture(scope="module")
def crossrank_results(st_dirs):
    """The same calls run by crossrank: per call, the result, the Encoded prompts and the model."""
    models, out = {}, {}
    for cid, path, init, method, args, kwargs in _calls(st_dirs):
        key = json.dumps([path, init], sort_keys=True)
        if key not in models:
            models[key] = CrossEncoder(path, **init, dtype="float32")  # the reference path: ST runs float32
        model = models[key]
        kwargs = dict(kwargs)
        if "activation_fn" in kwargs:
            kwargs["activation_fn"] = _torch_activation(kwargs["activation_fn"])
        try:
            with torch_hidden():
                entry = {"result": getattr(model, method)(*args, **kwargs), "model": model}
        except crossrank.TooLongError as exc:
            out[cid] = {"error": exc, "model": model}
            continue
        if method == "predict":
            pairs = [args[0]] if isinstance(args[0][0], str) else args[0]
            entry["encoded"] = model.tokenize_pairs(pairs, prompt_name=kwargs.get("prompt_name"),
                                                    prompt=kwargs.get("prompt"))
            entry["ids"] = entry["encoded"].input_ids
        out[cid] = entry
    return out


PREDICT_IDS = ["predict", "predict_prompt_name", "predict_prompt", "predict_single", "predict_options",
               "predict_list", "default_prompt", "converted"]


@pytest.mark.parametrize("cid", PREDICT_IDS)
def test_predict_gives_sentence_transformers_ids_then_scores(cid, reference, crossrank_results):
    ours, ref = crossrank_results[cid], reference[cid]
    assert ours["ids"] == ref["ids"]
    got = np.asarray([float(x) for x in np.atleast_1d(ours["result"])])
    want = np.atleast_1d(np.asarray(ref["result"], dtype=np.float64))
    np.testing.assert_allclose(got, want, atol=PARITY_ATOL, rtol=0)


def test_scores_are_spread_so_the_comparison_means_something(reference):
    scores = np.asarray(reference["predict"]["result"])
    assert len(scores) >= 32 and scores.std() > 0.05 and scores.max() - scores.min() > 0.3


def test_return_types_follow_sentence_transformers(reference, crossrank_results):
    ours = crossrank_results
    assert isinstance(ours["predict"]["result"], np.ndarray) and reference["predict"]["type"] == "ndarray"
    assert ours["predict"]["result"].dtype == np.float32 and ours["predict"]["result"].shape == (len(PAIRS),)
    assert np.ndim(ours["predict_single"]["result"]) == 0 and reference["predict_single"]["type"] == "float32"
    assert isinstance(ours["predict_list"]["result"], list) and reference["predict_list"]["type"] == "list"
    assert len(ours["predict_list"]["result"]) == len(reference["predict_list"]["result"]) == 5


@pytest.mark.parametrize("cid", ["rank", "rank_prompt_name", "converted_rank"])
def test_rank_gives_sentence_transformers_results(cid, reference, crossrank_results):
    ours, ref = crossrank_results[cid]["result"], reference[cid]["result"]
    assert [r["corpus_id"] for r in ours] == [r["corpus_id"] for r in ref]
    assert [set(r) for r in ours] == [set(r) for r in ref]
    assert [r.get("text") for r in ours] == [r.get("text") for r in ref]
    assert all(isinstance(r["score"], float) for r in ours)
    np.testing.assert_allclose([r["score"] for r in ours], [r["score"] for r in ref], atol=PARITY_ATOL, rtol=0)


def test_truncation_cuts_the_document_as_sentence_transformers_does(reference, crossrank_results):
    """sentence-transformers cuts the rendered prompt and writes the template's tail back; crossrank
    cuts inside the document's tokens. Same ids whenever part of the document survives. When the
    template and the query leave no room for the document, sentence-transformers also cuts the
    template's "<Document>:" label and scores the query alone; crossrank refuses those pairs
    (TooLongError naming them: the score would ignore the document), and with truncate_query=True
    cuts the query and the document longest-first, keeping the label."""
    ours, ref = crossrank_results["truncated"], reference["truncated"]
    error, model = ours["error"], ours["model"]
    assert isinstance(error, ValueError) and 1 <= len(error.indices) <= 5
    assert all(str(i) in str(error) for i in error.indices)
    same = [i for i in range(len(PAIRS)) if i not in error.indices]
    fitting = [PAIRS[i] for i in same]
    encoded = model.tokenize_pairs(fitting)
    assert all(len(ids) <= 120 for ids in encoded.input_ids)
    assert sum(encoded.truncated) >= 10 and all(kept > 0 or whole == 0 for kept, whole in encoded.document_tokens)
    assert encoded.input_ids == [ref["ids"][i] for i in same]
    np.testing.assert_allclose(model.predict(fitting), np.asarray(ref["result"])[same], atol=PARITY_ATOL, rtol=0)
    # "<Document>:" as it tokenizes after a newline (the newline may merge with the query's end)
    label = model.tokenizer.encode("\n<Document>:", add_special_tokens=False).ids[1:]
    no_room = [PAIRS[i] for i in error.indices]
    assert all(not _contains(ref["ids"][i], label) and len(ref["ids"][i]) == 120 for i in error.indices)
    cut = model.tokenize_pairs(no_room, truncate_query=True)
    assert all(len(ids) == 120 and _contains(ids, label) for ids in cut.input_ids)
    assert all(kept > 0 for kept, _ in cut.document_tokens)
    assert np.isfinite(model.predict(no_room, truncate_query=True)).all()


def _contains(seq, sub):
    return any(seq[i:i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def test_chat_prompt_reproduces_the_official_recipe_ids(st_dirs, reference_golden):
    """The package's chat template is the model card's prompt: its ids equal the golden ids of the
    official recipe (run in transformers), custom instructions included."""
    golden = reference_golden("qwen3-tiny")
    model = CrossEncoder(st_dirs["package"], dtype="float32")
    assert model.prompt_format == "chat"
    for instruction in {p["instruction"] for p in golden["pairs"]}:
        idx = [i for i, p in enumerate(golden["pairs"]) if p["instruction"] == instruction]
        pairs = [(golden["pairs"][i]["query"], golden["pairs"][i]["document"]) for i in idx]
        assert model.tokenize_pairs(pairs, prompt=instruction).input_ids == [golden["input_ids"][i] for i in idx]
        scores = model.predict(pairs, prompt=instruction)
        np.testing.assert_allclose(scores, np.asarray(golden["scores"])[idx], atol=PARITY_ATOL, rtol=0)


# -- the API without the reference ----------------------------------------------------------------

@pytest.fixture(scope="module")
def package_model(st_dirs):
    return CrossEncoder(st_dirs["package"], dtype="float32")


def test_package_files_set_the_head_prompts_activation_and_length(package_model):
    m = package_model
    assert m.config.head.kind == "lm_rows" and m.config.head.tokens == ("no", "yes")
    assert m.prompts == PROMPTS and m.default_prompt_name is None
    assert m.activation_fn == "sigmoid"
    assert m.max_length == 40960  # sentence-transformers: min(tokenizer limit, max_position_embeddings)


def test_predict_takes_sentence_transformers_parameter_order(package_model):
    pairs = PAIRS[:4]
    a = package_model.predict(pairs, None, None, 2, False, None, False, True)
    b = package_model.predict(inputs=pairs, batch_size=1)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="parameter order"):
        package_model.predict(pairs, 16)
    with pytest.raises(TypeError, match="parameter order"):
        package_model.rank(QUERY, DOCS, 3, True, 16)


def test_predict_accepts_numpy_string_arrays(package_model):
    pairs = PAIRS[:3]
    np.testing.assert_array_equal(package_model.predict(np.array(pairs, dtype=object)), package_model.predict(pairs))
    assert np.ndim(package_model.predict(np.array(pairs[0]))) == 0


def test_prompt_errors_name_the_prompts(package_model):
    with pytest.raises(ValueError, match="'nope' is not one of the prompts"):
        package_model.predict(PAIRS[:2], prompt_name="nope")
    with pytest.raises(ValueError, match="not both"):
        package_model.score(QUERY, DOCS[:2], "an instruction", prompt="another")
    with pytest.raises(ValueError, match="default_prompt_name 'x'"):
        CrossEncoder(package_model.path, default_prompt_name="x", dtype="float32")


def test_score_and_rank_use_the_chat_prompt_like_predict(package_model):
    scores = package_model.score(QUERY, DOCS, prompt_name="student")
    np.testing.assert_array_equal(scores, package_model.predict([(QUERY, d) for d in DOCS], prompt_name="student"))
    np.testing.assert_array_equal(scores, package_model.score(QUERY, DOCS, texts.CUSTOM_INSTRUCTION))


def test_device_and_torch_activations_are_understood(package_model):
    raw = package_model.predict(PAIRS[:3], activation_fn="identity")
    np.testing.assert_array_equal(package_model.predict(PAIRS[:3], activation_fn=_torch_activation("Identity"),
                                                        device="cpu"), raw)
    with pytest.raises(ValueError, match="runs on the CPU"):
        package_model.predict(PAIRS[:3], device="cuda")
    with pytest.raises(ValueError, match="runs on the CPU"):
        CrossEncoder(package_model.path, device="cuda:0", dtype="float32")


def test_convert_to_tensor_returns_a_torch_tensor(st_dirs):
    code = ("import sys, crossrank, torch; m = crossrank.CrossEncoder(sys.argv[1], dtype='float32'); "
            "pairs = [('q', 'a document.'), ('q2', 'another one.')]; t = m.predict(pairs, convert_to_tensor=True); "
            "a = m.predict(pairs); assert isinstance(t, torch.Tensor) and t.dtype == torch.float32, type(t); "
            "assert t.numpy().tolist() == a.tolist(); s = m.predict(pairs[0], convert_to_tensor=True); "
            "assert isinstance(s, torch.Tensor) and s.ndim == 0; print('ok')")
    proc = subprocess.run([REFERENCE_PYTHON, "-c", code, str(st_dirs["package"])], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0 and "No module named 'torch'" in proc.stderr:
        pytest.skip("torch is not installed")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_package_without_pair_roles_is_refused_like_sentence_transformers(tmp_path):
    generic = (fixture_path("qwen3-tiny") / "tokenizer_config.json").read_text()
    d = write_st_package(link_checkpoint(fixture_path("qwen3-tiny"), tmp_path / "m"), chat_template=None)
    assert "chat_template" in json.loads(generic)
    with pytest.raises(ConfigError, match="cannot carry a query/document pair"):
        CrossEncoder(d, dtype="float32")


@pytest.mark.parametrize("problem,match,error", [
    ("dense", "crossrank runs a Transformer", UnsupportedModelError),
    ("subfolder", "lives in '0_Transformer'", UnsupportedModelError),
    ("no_logit_config", "1_LogitScore/config.json is missing", ConfigError),
    ("embedding", "SentenceTransformer, not a CrossEncoder", UnsupportedModelError),
    ("bad_ids", "true_token_id must be a token id", ConfigError),
])
def test_package_misuse_is_named(tmp_path, problem, match, error):
    d = write_st_package(link_checkpoint(fixture_path("qwen3-tiny"), tmp_path / "m"))
    modules = json.loads((d / "modules.json").read_text())
    if problem == "dense":
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.base.modules.Dense"})
    elif problem == "subfolder":
        modules[0]["path"] = "0_Transformer"
    elif problem == "no_logit_config":
        (d / "1_LogitScore" / "config.json").unlink()
    elif problem == "embedding":
        (d / "config_sentence_transformers.json").write_text(json.dumps({"model_type": "SentenceTransformer"}))
    elif problem == "bad_ids":
        (d / "1_LogitScore" / "config.json").write_text(json.dumps({"true_token_id": "yes"}))
    (d / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(error, match=match):
        CrossEncoder(d, dtype="float32")


def test_single_token_logit_score_is_the_raw_true_logit(tmp_path, package_model):
    d = write_st_package(link_checkpoint(fixture_path("qwen3-tiny"), tmp_path / "m"))
    yes = package_model.tokenizer.token_to_id("yes")
    (d / "1_LogitScore" / "config.json").write_text(json.dumps({"true_token_id": yes, "false_token_id": None}))
    single = CrossEncoder(d, dtype="float32")
    assert single.config.head.tokens == ("yes",) and single.config.head.method == "no_post_processing"
    two_rows = CrossEncoder(fixture_path("qwen3-tiny"), template=package_model.chat_template,
                            hf_overrides={"architectures": ["Qwen3ForSequenceClassification"],
                                          "classifier_from_token": ["no", "yes"], "method": "no_post_processing"}, dtype="float32")
    expected = two_rows.predict(PAIRS[:6], activation_fn="identity")[:, 1]
    np.testing.assert_allclose(single.predict(PAIRS[:6], activation_fn="identity"), expected, atol=1e-5, rtol=0)


def test_package_processing_kwargs_reach_the_chat_template(tmp_path):
    template = ("{{ marker }}|Q: {{ (messages | selectattr('role', 'eq', 'query') | first).content[0].text }}"
                "|D: {{ (messages | selectattr('role', 'eq', 'document') | first).content[0].text }}")
    d = write_st_package(link_checkpoint(fixture_path("qwen3-tiny"), tmp_path / "m"), chat_template=template)
    sbert = json.loads((d / "sentence_bert_config.json").read_text())
    sbert["processing_kwargs"] = {"chat_template": {"marker": "M1", "max_length": 5, "restore_suffix": True}}
    sbert["modality_config"]["message"]["format"] = "structured"
    (d / "sentence_bert_config.json").write_text(json.dumps(sbert))
    model = CrossEncoder(d, dtype="float32")
    assert model.chat_template.format == "structured" and dict(model.chat_template.variables) == {"marker": "M1"}
    assert model.prompting.render("q", "d") == "M1|Q: q|D: d"
