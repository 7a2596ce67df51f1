"""The offline converter (crossrank.convert, ``crossrank convert``): a causal-LM reranker becomes a
``*ForSequenceClassification`` checkpoint that crossrank loads with no hf_overrides and scores
exactly as the online conversion does. No torch (see test_convert_vs_transformers.py for the
comparison with transformers)."""
import json
import os
import struct

import numpy as np
import pytest

from _fixtures import fixture_path, load_golden
from crossrank import CheckpointError, ConfigError, CrossEncoder, UnsupportedModelError, _core, convert
from crossrank.config import load_config

ONLINE = {"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["no", "yes"],
          "is_original_qwen3_reranker": True}
TOKENS = ["no", "yes"]
NO_ID, YES_ID = 2152, 9693
QUERY = "How do vaccines train the immune system?"
DOCS = [
    "Vaccines expose the immune system to a harmless piece of a pathogen so it can learn to recognise it.",
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
]


# ---- helpers ----------------------------------------------------------------------------------

def named_source(tmp_dir, fixture):
    """The fixture under a Qwen3-Reranker name (a symlink), so the template is found by name."""
    link = tmp_dir / f"Qwen3-Reranker-{fixture}"
    if not link.exists():
        os.symlink(fixture_path(fixture), link)
    return link


def read_safetensors(path):
    """{name: (dtype, shape, raw bytes)} and the header length of one safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    out = {k: (v["dtype"], tuple(v["shape"]), data[v["data_offsets"][0]:v["data_offsets"][1]])
           for k, v in header.items()}
    return out, n


def read_checkpoint(model_dir):
    tensors = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        tensors.update(read_safetensors(f)[0])
    return tensors


def as_f32(dtype, shape, raw):
    if dtype == "F32":
        return np.frombuffer(raw, dtype="<f4").reshape(shape)
    assert dtype == "BF16"
    return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)


def score_golden(model, golden, activation_fn=None):
    """score() over the golden pairs, one call per instruction."""
    pairs = golden["pairs"]
    out = np.zeros(len(pairs))
    groups = {}
    for i, p in enumerate(pairs):
        groups.setdefault(p.get("instruction"), []).append(i)
    for instruction, idx in groups.items():
        out[idx] = model.score([pairs[i]["query"] for i in idx], [pairs[i]["document"] for i in idx],
                               instruction, activation_fn=activation_fn)
    return out


def no_leftovers(parent):
    return [p.name for p in parent.iterdir() if p.name.startswith(".")] == []


# ---- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("convert")


@pytest.fixture(scope="module", params=["qwen3-tiny", "qwen3-tiny-tied"])
def converted(request, workdir):
    """(fixture name, converted directory) for the untied and the tied fixture."""
    name = request.param
    out = convert(named_source(workdir, name), TOKENS, "from_2_way_softmax", workdir / f"{name}-seq-cls",
                  show_progress_bar=False)
    return name, out


@pytest.fixture(scope="module")
def online_models():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = CrossEncoder(fixture_path(name), hf_overrides=ONLINE, threads=2, dtype="float32")
        return cache[name]

    return get


# ---- the converted checkpoint scores as the online conversion ----------------------------------

def test_converted_loads_without_overrides_and_matches_the_online_path(converted, online_models):
    name, out = converted
    golden = load_golden(name)
    online = online_models(name)
    offline = CrossEncoder(out, threads=2, dtype="float32")  # no hf_overrides: the template comes from crossrank_template
    assert offline.config.head.kind == "score_weight" and offline.num_labels == 1
    assert offline.template is not None and offline.template.name == "qwen3-reranker"
    assert offline.config.use_sep_token is False

    raw_online = online.forward_ids(golden["input_ids"])
    raw_offline = offline.forward_ids(golden["input_ids"])
    assert raw_offline.shape == (len(golden["input_ids"]), 1)
    np.testing.assert_allclose(raw_offline, raw_online, rtol=0, atol=1e-6)

    np.testing.assert_allclose(score_golden(offline, golden), score_golden(online, golden), rtol=0, atol=1e-6)
    np.testing.assert_allclose(score_golden(offline, golden, "identity"), score_golden(online, golden, "identity"),
                               rtol=0, atol=1e-6)
    # ... and both are the reference's scores.
    np.testing.assert_allclose(score_golden(offline, golden), golden["scores"], rtol=0, atol=1e-4)

    pairs = [offline.template.request_texts(p["query"], p["document"], p.get("instruction"))
             for p in golden["pairs"][:8]]
    np.testing.assert_allclose(offline.predict(pairs), online.predict(pairs), rtol=0, atol=1e-6)


def test_a_tied_config_over_a_file_with_its_own_lm_head_reads_that_head(workdir, online_models):
    # transformers ties only equal tensors: a stored lm_head.weight that differs from the
    # embeddings stays the head. qwen3-tiny's files (untied, distinct head) under a tied config
    # must score as qwen3-tiny, online and converted.
    src = fixture_path("qwen3-tiny")
    d = workdir / "Qwen3-Reranker-tied-config-own-head"
    d.mkdir()
    for f in src.iterdir():
        if f.name != "config.json":
            os.symlink(f, d / f.name)
    cfg = json.loads((src / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is False
    (d / "config.json").write_text(json.dumps({**cfg, "tie_word_embeddings": True}))
    expected = online_models("qwen3-tiny").score(QUERY, DOCS)
    np.testing.assert_array_equal(CrossEncoder(d, hf_overrides=ONLINE, threads=2, dtype="float32").score(QUERY, DOCS),
                                  expected)
    out = convert(d, TOKENS, "from_2_way_softmax", workdir / "tied-config-own-head-seq-cls", show_progress_bar=False)
    np.testing.assert_allclose(CrossEncoder(out, threads=2, dtype="float32").score(QUERY, DOCS), expected,
                               rtol=0, atol=1e-6)


def test_output_has_score_weight_and_no_lm_head(converted):
    name, out = converted
    src = read_checkpoint(fixture_path(name))
    dst = read_checkpoint(out)
    assert "lm_head.weight" not in dst
    assert set(dst) == (set(src) - {"lm_head.weight"}) | {"score.weight"}
    for k in set(src) & set(dst):
        assert dst[k] == src[k], k  # dtype, shape and bytes unchanged

    dtype, shape, raw = dst["score.weight"]
    assert dtype == "F32" and shape == (1, 64)
    cfg = json.loads((fixture_path(name) / "config.json").read_text())
    head = "model.embed_tokens.weight" if cfg["tie_word_embeddings"] else "lm_head.weight"
    w = as_f32(*src[head])
    expected = (w[YES_ID].astype(np.float32) - w[NO_ID].astype(np.float32))[None, :]
    np.testing.assert_array_equal(as_f32(dtype, shape, raw), expected)

    # The C reader accepts the file; the data section is 8-byte aligned.
    names = {t["name"] for t in _core.inspect_checkpoint(str(out))}
    assert names == set(dst)
    _, n = read_safetensors(out / "model.safetensors")
    assert (8 + n) % 8 == 0


def test_output_config(converted):
    name, out = converted
    cfg = json.loads((out / "config.json").read_text())
    src = json.loads((fixture_path(name) / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen3ForSequenceClassification"]
    assert cfg["num_labels"] == 1
    assert cfg["id2label"] == {"0": "LABEL_0"} and cfg["label2id"] == {"LABEL_0": 0}
    assert cfg["use_sep_token"] is False
    assert cfg["pad_token_id"] == 151643  # tokenizer_config.json's pad_token <|endoftext|>
    assert cfg["crossrank_template"] == "qwen3-reranker"
    conv = cfg["crossrank_conversion"]
    assert conv["method"] == "from_2_way_softmax"
    assert conv["classifier_from_token"] == TOKENS and conv["token_ids"] == [NO_ID, YES_ID]
    assert conv["source"].endswith(f"Qwen3-Reranker-{name}")
    for key in ("method", "classifier_from_token", "is_original_qwen3_reranker", "use_pad_token"):
        assert key not in cfg
    for key in ("hidden_size", "num_hidden_layers", "tie_word_embeddings", "rope_parameters", "eos_token_id"):
        assert cfg[key] == src[key]
    for f in ("tokenizer.json", "tokenizer_config.json"):
        assert (out / f).read_bytes() == (fixture_path(name) / f).read_bytes()

    spec = load_config(out)
    assert spec.head.kind == "score_weight" and spec.head.num_labels == 1
    assert spec.architecture == "Qwen3ForSequenceClassification"
    # The nested provenance key is an ordinary config key, also as an override.
    assert load_config(out, {"crossrank_conversion": conv}).head.kind == "score_weight"


# ---- other methods, dtypes and layouts ------------------------------------------------------------

def test_no_post_processing_keeps_the_rows_in_order(workdir):
    out = convert(fixture_path("qwen3-tiny"), ["yes", "no", "Yes"], "no_post_processing", workdir / "npp",
                  template="qwen3-reranker")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_labels"] == 3 and cfg["id2label"] == {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}
    src = read_checkpoint(fixture_path("qwen3-tiny"))
    dtype, shape, raw = read_checkpoint(out)["score.weight"]
    assert dtype == "F32" and shape == (3, 64)
    np.testing.assert_array_equal(as_f32(dtype, shape, raw), as_f32(*src["lm_head.weight"])[[9693, 2152, 9454]])

    golden = load_golden("qwen3-tiny")
    online = CrossEncoder(fixture_path("qwen3-tiny"), threads=2, hf_overrides={
        "architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["yes", "no", "Yes"],
        "method": "no_post_processing"}, dtype="float32")
    offline = CrossEncoder(out, threads=2, dtype="float32")
    assert offline.num_labels == 3
    ids = golden["input_ids"][:16]
    np.testing.assert_allclose(offline.forward_ids(ids), online.forward_ids(ids), rtol=0, atol=1e-6)


def test_bf16_source_keeps_its_dtype(workdir, online_models):
    out = convert(fixture_path("qwen3-tiny-bf16"), TOKENS, "from_2_way_softmax", workdir / "bf16")
    tensors = read_checkpoint(out)
    assert tensors["score.weight"][0] == "F32"
    assert {d for k, (d, _, _) in tensors.items() if k != "score.weight"} == {"BF16"}
    golden = load_golden("qwen3-tiny-bf16")
    online = CrossEncoder(fixture_path("qwen3-tiny-bf16"), hf_overrides=ONLINE, threads=2, dtype="float32")
    offline = CrossEncoder(out, threads=2, dtype="float32")
    np.testing.assert_allclose(offline.forward_ids(golden["input_ids"]), online.forward_ids(golden["input_ids"]),
                               rtol=0, atol=1e-6)


def test_sharded_source_and_sharded_output(workdir):
    out = convert(fixture_path("qwen3-tiny-sharded"), TOKENS, "from_2_way_softmax", workdir / "sharded",
                  max_shard_size=100_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(files) > 2 and not (out / "model.safetensors").exists()
    assert files == [f"model-{i:05d}-of-{len(files):05d}.safetensors" for i in range(1, len(files) + 1)]
    assert set(index["weight_map"].values()) == set(files)
    assert "score.weight" in index["weight_map"] and "lm_head.weight" not in index["weight_map"]
    tensors = read_checkpoint(out)
    assert index["metadata"]["total_size"] == sum(len(raw) for _, _, raw in tensors.values())
    assert set(index["weight_map"]) == set(tensors)

    golden = load_golden("qwen3-tiny-sharded")
    single = CrossEncoder(convert(fixture_path("qwen3-tiny"), TOKENS, "from_2_way_softmax", workdir / "single"),
                          threads=2, dtype="float32")
    sharded = CrossEncoder(out, threads=2, dtype="float32")
    np.testing.assert_array_equal(sharded.forward_ids(golden["input_ids"]), single.forward_ids(golden["input_ids"]))


def test_template_is_recorded_only_when_known(workdir):
    plain = convert(fixture_path("qwen3-tiny"), TOKENS, "from_2_way_softmax", workdir / "plain")
    assert "crossrank_template" not in json.loads((plain / "config.json").read_text())
    named = convert(fixture_path("qwen3-tiny"), TOKENS, "from_2_way_softmax", workdir / "named",
                    template="qwen3-reranker")
    assert json.loads((named / "config.json").read_text())["crossrank_template"] == "qwen3-reranker"
    with pytest.raises(ValueError, match="unknown template"):
        convert(fixture_path("qwen3-tiny"), TOKENS, "from_2_way_softmax", workdir / "bad-template",
                template="nope")


def test_use_sep_token_is_recorded(workdir):
    out = convert(fixture_path("qwen3-tiny"), TOKENS, "from_2_way_softmax", workdir / "sep", use_sep_token=True)
    assert json.loads((out / "config.json").read_text())["use_sep_token"] is True
    assert load_config(out).use_sep_token is True


# ---- the destination -------------------------------------------------------------------------------

def test_non_empty_destination_needs_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--force"):
        convert(fixture_path("qwen3-tiny"), TOKENS, "from_2_way_softmax", out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert no_leftovers(tmp_path)

    convert(fixture_path("qwen3-tiny"), TOKENS, "from_2_way_softmax", out, force=True)
    assert not (out / "keep.txt").exists()
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert no_leftovers(tmp_path)
    CrossEncoder(out, template="qwen3-reranker", threads=1, dtype="float32")


def test_empty_destination_is_fine(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    convert(fixture_path("qwen3-tiny"), TOKENS, "from_2_way_softmax", out)
    assert (out / "model.safetensors").is_file()
    assert no_leftovers(tmp_path)


def test_output_cannot_be_the_source(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for f in fixture_path("qwen3-tiny").iterdir():
        os.symlink(f, src / f.name)
    with pytest.raises(ValueError, match="overwrite the source"):
        convert(src, TOKENS, "from_2_way_softmax", src, force=True)


# ---- teaching errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("tokens, method, match", [
    (TOKENS, "softmax", "not a reranker method"),
    (["no", "yes", "maybe"], "from_2_way_softmax", "exactly 2 classifier tokens"),
    (["yes"], "from_2_way_softmax", "exactly 2 classifier tokens"),
    (TOKENS, None, "no method is set"),
    ("yes", "no_post_processing", "list of token strings"),
    (["no", "definitely-not-a-token"], "from_2_way_softmax", "not a single entry of the tokenizer's vocabulary"),
    (["no", " yes"], "from_2_way_softmax", "'Ġyes'"),
])
def test_bad_head_arguments_raise_config_error(tmp_path, tokens, method, match):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=match):
        convert(fixture_path("qwen3-tiny"), tokens, method, out)
    assert not out.exists() and no_leftovers(tmp_path)


def test_single_token_defaults_to_no_post_processing(tmp_path):
    out = convert(fixture_path("qwen3-tiny"), ["yes"], None, tmp_path / "one")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_labels"] == 1 and cfg["crossrank_conversion"]["method"] == "no_post_processing"


def test_already_converted_source_is_refused(converted, tmp_path):
    _, out = converted
    with pytest.raises(UnsupportedModelError, match="already holds a score.weight"):
        convert(out, TOKENS, "from_2_way_softmax", tmp_path / "again")


def test_hostile_source_file_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        os.symlink(fixture_path("qwen3-tiny") / f, src / f)
    header = json.dumps({"model.embed_tokens.weight": {"dtype": "F32", "shape": [151669, 64],
                                                       "data_offsets": [0, 151669 * 64 * 4]}}).encode()
    (src / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
    with pytest.raises(CheckpointError):
        convert(src, TOKENS, "from_2_way_softmax", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_lm_head_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        os.symlink(fixture_path("qwen3-tiny") / f, src / f)
    tensors = read_checkpoint(fixture_path("qwen3-tiny"))
    del tensors["lm_head.weight"]
    header, data, off = {}, b"", 0
    for k, (dtype, shape, raw) in tensors.items():
        header[k] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        data += raw
        off += len(raw)
    text = json.dumps(header).encode()
    (src / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + data)
    with pytest.raises(CheckpointError, match="lm_head.weight"):
        convert(src, TOKENS, "from_2_way_softmax", tmp_path / "out")


# ---- command line ---------------------------------------------------------------------------------------

def test_cli_round_trip(workdir, tmp_path, capsys):
    from crossrank.cli import main

    out = tmp_path / "cli-out"
    rc = main(["convert", "--model_name", str(named_source(workdir, "qwen3-tiny")),
               "--classifier_from_tokens", '["no", "yes"]', "--method", "from_2_way_softmax",
               "--path", str(out), "--use-pad-token"])
    assert rc == 0 and str(out) in capsys.readouterr().out
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["use_sep_token"] is True and cfg["crossrank_template"] == "qwen3-reranker"

    # Without --force a second run refuses; the hyphenated spellings work too.
    argv = ["convert", "--model-name", str(named_source(workdir, "qwen3-tiny")),
            "--classifier-from-tokens", '["no", "yes"]', "--method", "from_2_way_softmax",
            "--path", str(out), "--use-sep-token"]
    assert main(argv) == 2
    assert "--force" in capsys.readouterr().err
    assert main(argv + ["--force"]) == 0
    capsys.readouterr()

    # The converted directory scores with no --hf_overrides, as the online conversion does.
    assert main(["score", str(out), "--query", QUERY, "--doc", DOCS[0], "--doc", DOCS[1], "--json", "--raw",
                 "--dtype", "float32"]) == 0
    cli_scores = [r["score"] for r in json.loads(capsys.readouterr().out)]
    online = CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=ONLINE, threads=2, dtype="float32")
    np.testing.assert_allclose(cli_scores, online.score(QUERY, DOCS, activation_fn="identity"), rtol=0, atol=1e-6)


def test_cli_reports_bad_arguments(tmp_path, capsys):
    from crossrank.cli import main

    rc = main(["convert", "--model_name", str(fixture_path("qwen3-tiny")), "--classifier_from_tokens",
               '["no", "yes"]', "--method", "2_way", "--path", str(tmp_path / "x")])
    assert rc == 2 and "not a reranker method" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="valid JSON"):
        main(["convert", "--model_name", str(fixture_path("qwen3-tiny")), "--classifier_from_tokens", "no,yes",
              "--path", str(tmp_path / "x")])
