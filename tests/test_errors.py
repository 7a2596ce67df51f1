"""Bad inputs give clear Python exceptions, never a crash or a silently wrong score."""
import json
import shutil
import struct

import numpy as np
import pytest

from _fixtures import fixture_path
import crossrank
from crossrank import (CheckpointError, ConfigError, CrossEncoder, ModelNotFoundError, TooLongError,
                       UnsupportedModelError)

OVERRIDES = {"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["no", "yes"],
             "is_original_qwen3_reranker": True}


@pytest.fixture(scope="module")
def model():
    return CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=OVERRIDES, threads=2)


@pytest.fixture()
def copy(tmp_path):
    """A private copy of the tiny checkpoint that a test may damage."""
    dst = tmp_path / "model"
    shutil.copytree(fixture_path("qwen3-tiny"), dst)
    return dst


def read_header(path):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def write_with_header(path, header, payload):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + payload)


def test_missing_directory_says_where_it_looked(tmp_path):
    with pytest.raises(ModelNotFoundError) as err:
        CrossEncoder(tmp_path / "nope", hf_overrides=OVERRIDES)
    assert "nope" in str(err.value)


def test_directory_without_config_json(copy):
    (copy / "config.json").unlink()
    with pytest.raises(ModelNotFoundError, match="config.json"):
        CrossEncoder(copy, hf_overrides=OVERRIDES)


def test_missing_tokenizer(copy):
    (copy / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        CrossEncoder(copy, hf_overrides=OVERRIDES)


# Files tokenizers reads but whose Rust code panics once it encodes (PanicException, a BaseException
# that slips past `except Exception`), or that it refuses to parse.
BROKEN_TOKENIZERS = {
    "a normalizer that replaces the empty string": lambda t: t.update(
        normalizer={"type": "Replace", "pattern": {"String": ""}, "content": "aa"}),
    "a post-processor naming a special token the vocabulary lacks": lambda t: t.update(post_processor={
        "type": "TemplateProcessing", "special_tokens": {},
        "single": [{"SpecialToken": {"id": "<nope>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}]}),
    "an unparsable precompiled normalizer": lambda t: t.update(
        normalizer={"type": "Precompiled", "precompiled_charsmap": "AAAA"}),
    "a merge of tokens outside the vocabulary": lambda t: t["model"].update(
        merges=[["zzqq", "qqzz"]] + t["model"]["merges"]),
}


@pytest.mark.parametrize("damage", BROKEN_TOKENIZERS, ids=list(BROKEN_TOKENIZERS))
def test_a_tokenizer_that_fails_on_plain_text_is_refused_at_load_naming_the_file(tmp_path, damage):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for f in fixture_path("qwen3-tiny").iterdir():
        if f.name != "tokenizer.json":
            (model_dir / f.name).symlink_to(f)
    tokenizer = json.loads((fixture_path("qwen3-tiny") / "tokenizer.json").read_text(encoding="utf-8"))
    BROKEN_TOKENIZERS[damage](tokenizer)
    (model_dir / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    with pytest.raises(crossrank.CrossrankError, match="tokenizer.json"):
        CrossEncoder(model_dir, hf_overrides=OVERRIDES)
    with pytest.raises(ConfigError, match="tokenizer.json"):
        crossrank.convert(model_dir, ["no", "yes"], "from_2_way_softmax", tmp_path / "converted")


CHAT_HEAD = {"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["no", "yes"],
             "method": "from_2_way_softmax"}  # no family template: the prompt comes from the chat template


@pytest.mark.parametrize("name", ["tokenizer_config.json", "special_tokens_map.json", "modules.json",
                                  "config_sentence_transformers.json"])
@pytest.mark.parametrize("content", ["[" * 100_000 + "]" * 100_000, '{"bos_token": ' + "9" * 5000 + "}"],
                         ids=["nesting past the recursion limit", "an integer of 5,000 digits"])
def test_json_that_python_cannot_parse_in_any_file_of_the_model_is_refused_naming_it(tmp_path, name, content):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for f in fixture_path("qwen3-tiny").iterdir():
        if f.name != name:
            (model_dir / f.name).symlink_to(f)
    (model_dir / name).write_text(content, encoding="utf-8")
    # a chat template, so that the tokenizer's configs are read for the names it may use
    (model_dir / "chat_template.jinja").write_text("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}")
    with pytest.raises(ConfigError, match=f"cannot read .*{name}"):
        CrossEncoder(model_dir, hf_overrides=CHAT_HEAD)


def test_truncated_safetensors(copy):
    f = copy / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        CrossEncoder(copy, hf_overrides=OVERRIDES)


def test_header_length_past_the_end_of_the_file(copy):
    f = copy / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(struct.pack("<Q", len(data) * 2) + data[8:])
    with pytest.raises(CheckpointError, match="header"):
        CrossEncoder(copy, hf_overrides=OVERRIDES)


def test_range_past_the_end_of_the_file(copy):
    f = copy / "model.safetensors"
    header, payload = read_header(f)
    last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    begin, end = header[last]["data_offsets"]
    header[last]["data_offsets"] = [begin + 4, end + 4]
    write_with_header(f, header, payload)
    with pytest.raises(CheckpointError, match=last.replace(".", r"\.")):
        CrossEncoder(copy, hf_overrides=OVERRIDES)


def test_overlapping_ranges(copy):
    f = copy / "model.safetensors"
    header, payload = read_header(f)
    names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    a, b = names[0], names[1]
    header[b]["data_offsets"] = list(header[a]["data_offsets"])
    header[b]["shape"] = header[a]["shape"]
    header[b]["dtype"] = header[a]["dtype"]
    write_with_header(f, header, payload)
    with pytest.raises(CheckpointError, match="overlap|hole"):
        CrossEncoder(copy, hf_overrides=OVERRIDES)


def test_hole_between_tensors(copy):
    f = copy / "model.safetensors"
    header, payload = read_header(f)
    names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    # shift every tensor after the first by 16 bytes and pad: a hole after the first tensor
    for k in names[1:]:
        b, e = header[k]["data_offsets"]
        header[k]["data_offsets"] = [b + 16, e + 16]
    first_end = header[names[0]]["data_offsets"][1]
    write_with_header(f, header, payload[:first_end] + b"\0" * 16 + payload[first_end:])
    with pytest.raises(CheckpointError, match="hole"):
        CrossEncoder(copy, hf_overrides=OVERRIDES)


def test_tensor_shape_that_does_not_fit_the_config(copy):
    cfg = json.loads((copy / "config.json").read_text())
    cfg["intermediate_size"] = cfg["intermediate_size"] + 8
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"mlp\.gate_proj\.weight.*shape"):
        CrossEncoder(copy, hf_overrides=OVERRIDES)


def test_unsupported_architecture_lists_the_supported_ones(copy):
    cfg = json.loads((copy / "config.json").read_text())
    cfg["architectures"] = ["BertForSequenceClassification"]
    cfg["model_type"] = "bert"
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError, match="Qwen3ForCausalLM"):
        CrossEncoder(copy)


def test_quantized_config_is_refused(copy):
    cfg = json.loads((copy / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "awq", "bits": 4}
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError, match="quantiz"):
        CrossEncoder(copy, hf_overrides=OVERRIDES)


def test_causal_lm_without_overrides_or_template_explains_what_to_pass():
    with pytest.raises(UnsupportedModelError, match="hf_overrides"):
        CrossEncoder(fixture_path("qwen3-tiny"))


def test_template_name_alone_turns_the_causal_lm_into_a_reranker(model):
    by_template = CrossEncoder(fixture_path("qwen3-tiny"), template="qwen3-reranker", threads=2)
    docs = ["Paris is the capital of France.", "Bananas are yellow."]
    np.testing.assert_array_equal(by_template.score("capital of France?", docs),
                                  model.score("capital of France?", docs))


def test_unknown_method_is_a_config_error():
    with pytest.raises(ConfigError, match="from_2_way_softmax"):
        CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides={**OVERRIDES, "method": "softmax_2way"})


def test_classifier_token_not_in_vocabulary_suggests_variants():
    bad = {"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["no", "YESS"],
           "method": "from_2_way_softmax"}
    with pytest.raises(ConfigError, match="YESS"):
        CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=bad)


def test_non_string_texts_are_type_errors(model):
    with pytest.raises(TypeError, match="document 1"):
        model.score("query", ["fine", 42])
    with pytest.raises(TypeError, match="str"):
        model.score(None, ["doc"])
    with pytest.raises(TypeError, match=r"pair 1: both texts must be str, got \(str, NoneType\)"):
        model.predict([("query", "fine"), ("query", None)])
    with pytest.raises(TypeError, match="list of str"):
        model.score("query", "a single document string")


def test_mismatched_list_lengths(model):
    with pytest.raises(ValueError, match="2 queries for 3 documents"):
        model.score(["q1", "q2"], ["a", "b", "c"])


def test_empty_inputs_give_empty_arrays(model):
    assert model.score("query", []).shape == (0,)
    assert model.predict([]).shape == (0,)
    assert model.rank("query", []) == []


def test_token_ids_outside_the_vocabulary(model):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.forward_ids([[1, 2, 10**8]])
    with pytest.raises(ValueError, match="empty"):
        model.forward_ids([[]])


def test_predict_refuses_prompts_over_max_length_instead_of_cutting_the_template():
    short = CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=OVERRIDES, max_length=16)
    with pytest.raises(TooLongError, match="max_length=16"):
        short.predict([("a " * 40, "b")])


def test_template_longer_than_max_length(model):
    tiny = CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=OVERRIDES, max_length=20)
    with pytest.raises(TooLongError, match="raise max_length"):
        tiny.score("q", ["d"])


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="dtype"):
        CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=OVERRIDES, dtype="float8")
    with pytest.raises(ValueError, match="threads"):
        CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=OVERRIDES, threads=0)
    with pytest.raises(ValueError, match="max_length"):
        CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=OVERRIDES, max_length=0)
    with pytest.raises(ValueError, match="activation_fn"):
        CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=OVERRIDES, activation_fn="tanhh")


def test_errors_share_one_base_class():
    for cls in (CheckpointError, ConfigError, UnsupportedModelError, ModelNotFoundError, TooLongError):
        assert issubclass(cls, crossrank.CrossrankError)
    assert crossrank._core.CheckpointError is CheckpointError


def test_lone_surrogates_are_refused_naming_the_text_and_position(model):
    with pytest.raises(ValueError, match=r"document 1 is not valid Unicode text: lone surrogate '\\ud800' at index 3"):
        model.score("query", ["fine", "bad\ud800text"])
    with pytest.raises(ValueError, match="the query is not valid Unicode text"):
        model.score("q\udfff", ["fine"])
    with pytest.raises(ValueError, match="pair 0, text_2 is not valid Unicode text"):
        model.predict([("query", "\ud83d")])
    assert model.score("query", ["fine 😀"]).shape == (1,)  # a real astral character is fine


def test_check_finite_must_be_a_bool_or_none():
    with pytest.raises(TypeError, match="check_finite must be True, False or None"):
        CrossEncoder(fixture_path("qwen3-tiny"), template="qwen3-reranker", check_finite="yes")
