#!/usr/bin/env python
"""Side-by-side reranking benchmark: crossrank, the official Qwen3-Reranker recipe in transformers,
and sentence-transformers' CrossEncoder.

    python benchmarks/bench_rerank.py --quick          # smoke run: 8 documents, one HF batch size
    python benchmarks/bench_rerank.py                  # 1 query x 64 documents, every engine
    python benchmarks/bench_rerank.py --mode latency   # 1 query x 1 document of ~300 tokens, p50/p90 per call
    python benchmarks/bench_rerank.py --mode long8k --engines crossrank-bf16,transformers-bf16,st-bf16
    python benchmarks/bench_rerank.py --scaling --engines crossrank-bf16,crossrank-f32   # 1 thread vs all

Every engine scores the same pairs in the same run, with English text generated deterministically
from a built-in sentence bank. The model is a checkpoint of the real Qwen3-Reranker-0.6B shape with
RANDOM weights (speed does not depend on the weight values; the scores say nothing about relevance),
built once under benchmarks/.cache/.

Modes (--mode):
  throughput   (default) one query and --docs (64) documents of 150-400 tokens; transformers and
               sentence-transformers at each of --hf-batch-sizes, the best reported. pairs/s, tokens/s.
  latency      one query and one document of ~300 tokens, scored by one call (batch 1) --repeats (20)
               times after 2 warm-up calls; p50/p90/min ms per call.
  long4k       one query and --docs (2) documents, each as long as fits a prompt of 4,096 / 8,192
  long8k       tokens (8,192 is the card's max_length: no engine truncates); transformers and
               sentence-transformers at batch 1; tokens/s, peak RSS, the RSS after loading and a
               short warm-up, and what the timed runs add on top of it.
--scaling runs every selected crossrank engine again at 1 thread (right after its run at --threads,
default all CPUs) and prints the speedup, in any mode.

Engines (--engines):
  crossrank-bf16           CrossEncoder(dir, template="qwen3-reranker", threads=T, dtype="bfloat16")
                           .score(query, docs): the query's prompt prefix runs once
  crossrank-bf16-noreuse   the same without prefix reuse (forward_ids on the same token ids)
  crossrank-int8           the same with dtype="int8" (outlier inputs in float32)
  crossrank-f32            the same in float32 (the reference path)
  crossrank-f32-openblas   the same with CROSSRANK_GEMM=openblas (OpenBLAS sgemm for projections), with
                           OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE as the environment sets them
  crossrank-f32-openblas-unset
                           the same with both removed from its environment (OpenBLAS picks its kernels
                           from the CPU); the header shows what the environment set, the summary the
                           kernels each OpenBLAS engine ran (openblas_get_corename)
  transformers-f32         the model card's recipe (AutoModelForCausalLM float32, left padding,
                           process_inputs/compute_logits), best of --hf-batch-sizes
  transformers-bf16        the same recipe with the model loaded in bfloat16
  st-f32                   sentence_transformers.CrossEncoder(package).rank(query, docs) in float32, best
                           of --hf-batch-sizes, torch at the same thread count
  st-bf16                  the same with model_kwargs={"dtype": torch.bfloat16}

The sentence-transformers package is written by the benchmark (write_st_package) into its temporary
directory, linking the checkpoint's weights and tokenizer: what ST 6 saves for a causal-LM reranker.
modules.json lists a Transformer (AutoModelForCausalLM, "text-generation": left padding,
logits_to_keep=1) and a LogitScore module (logit("yes") - logit("no") at the last position);
chat_template.jinja renders ST's pair roles ("query", "document") and the prompt (a "system" message)
into the card's prompt; config_sentence_transformers.json holds the card's instruction as the default
prompt. The run checks that ST fed the model the recipe's token ids and prints the largest raw-logit
difference to the recipe (at equal batch sizes: 0 in float32) and to crossrank float32.

Each engine configuration runs in its own subprocess (so peak RSS is that engine's), loads the
model, warms up (throughput: once on the first --warmup-docs documents; latency: twice on the
document; long modes: once on a short document), then times --repeats runs: all documents per run
(the fastest is reported) or, in latency mode, one call per run (the median is reported). All are
recorded. Timings are end to end from strings: tokenization, forward passes, head, activation.

Useful FLOPs are counted the same way for every engine, from the config: for each real (not
padding) token, 2 x the linear parameters of the layers (q/k/v/o, gate/up/down) plus attention,
4 x heads x head_dim x keys x layers (causal: token i attends to i+1 keys). The prompt prefix
that every pair shares is counted once (that is all the scores need); the embedding and the LM
head are not counted, nor padding. GFLOP/s is that count divided by the wall time.

The transformers recipe passes logits_to_keep=1 to the model call: the logits it reads
(`.logits[:, -1, :]`) are the same, but the LM head is not multiplied over the whole vocabulary
for every position (at batch 64 that tensor alone is ~18 GB in float32). --hf-full-logits runs
the card verbatim. sentence-transformers passes logits_to_keep=1 itself.

"other CPU" is the CPU time used by other processes during the timed runs, in CPUs
(/proc/stat busy time minus this engine's own CPU time, divided by the wall time): a value well
above 0 means the machine was shared and the numbers are pessimistic.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CONFIG_FILE = SHARED / "model-configs" / "Qwen3-Reranker-0.6B.json"
TOKENIZER_DIR = SHARED / "tokenizers" / "qwen3"
CACHE_DIR = REPO / "benchmarks" / ".cache"
RESULTS_DIR = REPO / "benchmarks" / "results"
CHECKPOINT_SEED = 0
WORKLOAD_SEED = 1234
DOC_TOKENS = (150, 400)
# OpenBLAS picks its kernels by CPU model unless these say otherwise; a machine that pins
# OPENBLAS_CORETYPE=Haswell leaves the AVX-512 kernels unused. crossrank-f32-openblas-unset runs without them.
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

ENGINES = ("crossrank-int8", "crossrank-bf16", "crossrank-bf16-noreuse", "crossrank-f32", "crossrank-f32-openblas",
           "crossrank-f32-openblas-unset", "transformers-f32", "transformers-bf16", "st-f32", "st-bf16")
REFERENCE = "transformers-f32"
BATCHED = ("transformers-", "st-")  # engines run at each of --hf-batch-sizes, best one reported
MODES = ("throughput", "latency", "long4k", "long8k")
LATENCY_DOC_TOKENS = (290, 310)  # latency mode: one document of ~300 tokens
LONG_PROMPT_TOKENS = {"long4k": 4096, "long8k": 8192}  # long modes: the document fills a prompt of this size
OURS = "crossrank-f32"

# The Qwen3-Reranker model card recipe (RECIPES.md).
QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and "
    "the Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n"
    "<|im_start|>user\n"
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
QWEN3_MAX_LENGTH = 8192

# The same prompt as sentence-transformers 6 runs it: a (query, document) pair becomes a "query" and a
# "document" message, a prompt (the instruction) a "system" message, and the package's chat template
# renders them into the card's text. Jinja drops one trailing newline, hence three after </think>.
QWEN3_ST_CHAT_TEMPLATE = (
    QWEN3_PREFIX
    + "<Instruct>: {{ messages | selectattr(\"role\", \"eq\", \"system\") | map(attribute=\"content\") | first "
    "| default(\"" + QWEN3_DEFAULT_INSTRUCTION + "\") }}\n"
    "<Query>: {{ messages | selectattr(\"role\", \"eq\", \"query\") | map(attribute=\"content\") | first }}\n"
    "<Document>: {{ messages | selectattr(\"role\", \"eq\", \"document\") | map(attribute=\"content\") | first }}"
    + QWEN3_SUFFIX + "\n"
)
ST_PROMPT_NAME = "web_search"

# --------------------------------------------------------------------------------------------
# Workload

QUERY = "Why do we have seasons, and why is it summer in Australia when it is winter in Europe?"

SENTENCES: Dict[str, List[str]] = {
    "seasons": [
        "Earth's rotation axis is tilted by about 23.4 degrees relative to the plane of its orbit around the Sun.",
        "Because the tilt stays pointed in the same direction in space, each hemisphere leans toward the Sun for half of the year and away from it for the other half.",
        "When the Northern Hemisphere is tilted toward the Sun, sunlight strikes it at a steeper angle and the days are longer, which is why June and July are warm in Europe.",
        "At the same moment the Southern Hemisphere is tilted away, so Sydney and Buenos Aires experience short days and low sun in the middle of the calendar year.",
        "A common misconception is that the seasons are caused by the changing distance between Earth and the Sun.",
        "In fact Earth is closest to the Sun in early January, during the northern winter, and the difference in distance is only about three percent.",
        "The solstices mark the points at which one of the poles is tilted most directly toward the Sun, giving the longest and the shortest days of the year.",
        "At the equinoxes in March and September neither hemisphere is favoured, and day and night are roughly equal everywhere on the planet.",
        "Near the equator the angle of sunlight changes little over the year, so tropical regions tend to have wet and dry seasons rather than summer and winter.",
        "The oceans store heat and release it slowly, which is why the warmest weeks usually arrive a month or more after the summer solstice.",
    ],
    "baking": [
        "A sourdough starter is a mixture of flour and water colonised by wild yeast and lactic acid bacteria.",
        "Bakers feed the starter every day with fresh flour and water so that the yeast population stays active and the flavour does not become too sour.",
        "Hydration, the ratio of water to flour by weight, has a large effect on how open the crumb of a loaf will be.",
        "During the bulk fermentation the dough is stretched and folded several times to build gluten strength without kneading.",
        "Shaping creates surface tension on the outside of the dough, which helps the loaf rise upward in the oven instead of spreading sideways.",
        "Many home bakers proof their loaves overnight in the refrigerator, which slows fermentation and develops a more complex taste.",
        "A very hot Dutch oven traps steam around the loaf during the first twenty minutes and allows the crust to expand before it sets.",
        "The dark, blistered crust of a good country loaf comes from the Maillard reaction and the caramelisation of sugars at the surface.",
        "Cutting into bread straight out of the oven releases steam that is still cooking the crumb, so it is worth waiting an hour.",
    ],
    "history": [
        "The Hanseatic League was a commercial and defensive network of merchant guilds and market towns in northern Europe.",
        "From the thirteenth to the fifteenth century it dominated trade in the Baltic Sea, moving timber, furs, grain and salted fish between ports.",
        "Lübeck served as the league's leading city, and its brick Gothic churches still show the wealth that the trade brought.",
        "The league had no standing army of its own, but its members could impose trade embargoes that were often as effective as a blockade.",
        "The rise of territorial states and new Atlantic trade routes gradually eroded the privileges that the merchants had negotiated.",
        "The last formal diet of the league met in 1669 with only a handful of cities represented.",
        "Historians still debate whether the league should be described as an organisation at all or rather as a loose community of interests.",
        "Several German cities, including Hamburg and Bremen, still carry the title of Hanseatic city in their official names.",
    ],
    "software": [
        "A memory leak occurs when a program allocates memory and never releases it, so its footprint grows for as long as it runs.",
        "Garbage-collected languages reduce the risk of leaks, but a forgotten reference in a long-lived cache can keep large objects alive indefinitely.",
        "Profilers that sample the heap at regular intervals make it possible to see which call sites are responsible for most allocations.",
        "Continuous integration runs the test suite on every change, which catches regressions before they reach the main branch.",
        "Flaky tests that fail only occasionally are often caused by timing assumptions, shared global state or the order in which tests run.",
        "Code review is most effective when changes are small and focused, because reviewers can reason about every line.",
        "Semantic versioning signals through the version number whether a release contains breaking changes, new features or only fixes.",
        "A good error message names the input that was wrong, says what was expected and, where possible, suggests how to fix it.",
        "Caching the results of an expensive computation is a classic trade-off between memory use and latency.",
    ],
    "ocean": [
        "Coral reefs cover less than one percent of the ocean floor but support roughly a quarter of all known marine species.",
        "Reef-building corals live in symbiosis with microscopic algae that supply them with most of the energy they need.",
        "When the water becomes too warm for several weeks, corals expel their algae and turn white in a process known as bleaching.",
        "Bleached corals are not dead, but they starve if the stress lasts too long and the algae do not return.",
        "Parrotfish graze on algae growing on the reef and, in doing so, produce a surprising amount of fine white sand.",
        "Deep-sea hydrothermal vents host entire ecosystems that depend on chemical energy rather than on sunlight.",
        "Ocean currents such as the Gulf Stream carry enormous amounts of heat from the tropics toward higher latitudes.",
        "Marine protected areas that ban fishing often see fish populations recover within a decade.",
    ],
    "economics": [
        "Inflation measures how quickly the general level of prices rises, and therefore how quickly the purchasing power of money falls.",
        "Central banks usually raise interest rates to cool an overheating economy and lower them to encourage borrowing and investment.",
        "A yield curve plots the interest rates of bonds with the same credit quality but different maturities.",
        "When short-term rates rise above long-term rates the curve is said to be inverted, which has often preceded a recession.",
        "Comparative advantage explains why two countries can both gain from trade even if one of them is more productive at everything.",
        "Unemployment statistics count only people who are actively looking for work, so they can fall even when fewer people have jobs.",
        "Supply shocks, such as a sudden rise in the price of oil, can push inflation up while slowing growth at the same time.",
        "Household savings rates vary widely between countries and depend on pensions, culture and the availability of credit.",
    ],
    "football": [
        "The offside rule prevents attackers from waiting near the opposing goal for a long ball.",
        "A player is offside if any part of the head, body or feet is nearer to the opponents' goal line than both the ball and the second-last defender when the ball is played.",
        "Video assistant referees review goals, penalties and red cards, although their decisions on marginal offsides remain controversial.",
        "Modern teams press high up the pitch to win the ball back close to the opponent's goal.",
        "The four-four-two formation dominated English football for decades before three-man defences and single strikers became common.",
        "Set pieces, including corners and free kicks, account for roughly a third of all goals in many professional leagues.",
        "Goalkeepers are now expected to play short passes out from the back as comfortably as outfield players.",
        "The World Cup was first held in Uruguay in 1930, and the host nation won the final against Argentina.",
    ],
    "medicine": [
        "Vaccines train the immune system to recognise a pathogen without the person having to suffer the disease itself.",
        "Antibiotics act on bacteria but have no effect on viruses, which is why they do not help against the common cold.",
        "Overuse of antibiotics in medicine and agriculture has accelerated the spread of resistant bacterial strains.",
        "Randomised controlled trials assign patients to treatments by chance so that the groups differ only in the treatment they receive.",
        "Blood pressure is reported as two numbers, the pressure when the heart contracts and the pressure when it relaxes between beats.",
        "Regular physical activity lowers the risk of heart disease, type two diabetes and several forms of cancer.",
        "Sleep deprivation impairs attention and memory in ways that people consistently underestimate in themselves.",
        "Many drugs are broken down in the liver, so liver disease can change the dose a patient needs.",
    ],
    "weather": [
        "Weather describes the state of the atmosphere over hours and days, while climate is the average of that weather over decades.",
        "Monsoons are seasonal reversals of the prevailing winds driven by the temperature contrast between land and ocean.",
        "In summer the land heats up faster than the sea, warm air rises over the continent and moist ocean air flows in to replace it.",
        "Hurricanes form over warm tropical water and draw their energy from the heat released when water vapour condenses.",
        "The jet stream is a fast band of westerly wind high in the atmosphere that steers storms across the mid-latitudes.",
        "A persistent high-pressure system can block the jet stream and lock a region into the same weather for weeks.",
        "Meteorologists run ensembles of slightly different forecasts to estimate how much confidence to place in a prediction.",
        "Snow cover reflects most incoming sunlight, which helps keep high-latitude regions cold through the winter.",
    ],
    "architecture": [
        "Gothic cathedrals used pointed arches, ribbed vaults and flying buttresses to carry the weight of the roof outward and down.",
        "Moving the load to external supports allowed builders to open the walls for large stained-glass windows.",
        "Reinforced concrete combines the compressive strength of concrete with the tensile strength of steel bars.",
        "Passive houses are insulated and sealed so well that they need very little energy for heating even in cold climates.",
        "Traditional courtyard houses in hot regions use shade, thick walls and cross ventilation to stay cool without machines.",
        "The orientation of a building determines how much winter sun its windows receive and how much it overheats in summer.",
        "Skyscrapers became practical only after the invention of the safety elevator and of steel frame construction.",
        "Architects increasingly consider the carbon emitted in producing materials, not only the energy a building uses once occupied.",
    ],
    "music": [
        "An orchestra tunes to the A played by the oboe, because its clear and stable tone is easy for the other players to hear.",
        "Equal temperament divides the octave into twelve equal semitones, which lets keyboard instruments play in every key.",
        "The sonata form of the classical era presents two contrasting themes, develops them and then returns to them in the recapitulation.",
        "Jazz musicians improvise over the chord changes of a tune while keeping its underlying form.",
        "Vinyl records store sound as a continuous groove whose shape mirrors the original waveform.",
        "Streaming services pay artists fractions of a cent per play, which has changed how musicians earn a living.",
        "Vivaldi's Four Seasons is a set of violin concertos, each of which depicts a season with birdsong, storms or a frozen landscape.",
        "Learning an instrument as an adult is slower than as a child but entirely possible with regular practice.",
    ],
    "geology": [
        "Plate tectonics describes how the rigid outer shell of the Earth is divided into plates that move a few centimetres a year.",
        "Most earthquakes occur along plate boundaries, where stress accumulates until the rock suddenly slips.",
        "Volcanic island chains such as Hawaii form as a plate moves over a stationary hot spot in the mantle.",
        "Sedimentary rocks are built up in layers, and the fossils in those layers record the history of life.",
        "Glaciers carve U-shaped valleys and leave behind moraines of rock debris when they retreat.",
        "Limestone dissolves slowly in slightly acidic rainwater, which over thousands of years creates caves and sinkholes.",
        "The age of the Earth, about four and a half billion years, was established by radiometric dating of meteorites.",
        "Weathering is faster in warm, wet climates, where chemical reactions break down rock more quickly.",
    ],
    "gardening": [
        "Tomatoes need at least six hours of direct sunlight a day and a soil that drains well.",
        "Gardeners in temperate climates sow many vegetables indoors in early spring and plant them out after the last frost.",
        "Compost improves the structure of clay soils and helps sandy soils hold on to water and nutrients.",
        "Rotating crops from one bed to another each year reduces the build-up of pests and diseases in the soil.",
        "Many spring bulbs need a cold period over the winter before they will flower.",
        "Mulching the surface of the soil keeps moisture in, suppresses weeds and feeds soil life as it breaks down.",
        "Deciduous trees drop their leaves in autumn to conserve water and energy during the short, cold days of winter.",
        "The length of the day, rather than the temperature, tells many plants when it is time to flower.",
    ],
}


def make_workload(n_docs: int, seed: int = WORKLOAD_SEED,
                  doc_tokens: Tuple[int, int] = DOC_TOKENS) -> Tuple[str, List[str], List[int]]:
    """The query and ``n_docs`` documents of ``doc_tokens`` (lo, hi) tokens each (Qwen3 tokenizer),
    deterministic."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False).ids)

    rng = random.Random(seed)
    topics = sorted(SENTENCES)
    lo, hi = doc_tokens
    docs, counts = [], []
    for _ in range(n_docs):
        target = rng.randint(lo, hi)
        main, other = rng.sample(topics, 2)
        pool = rng.sample(SENTENCES[main], len(SENTENCES[main])) + rng.sample(SENTENCES[other], len(SENTENCES[other]))
        rest = [s for t in topics if t not in (main, other) for s in SENTENCES[t]]
        pool += rng.sample(rest, len(rest))
        text, n = "", 0
        for sentence in pool:
            if n >= target:
                break
            sep = "" if not text else ("\n\n" if rng.random() < 0.2 else " ")
            candidate = text + sep + sentence
            k = count(candidate)
            if k > hi:
                continue
            text, n = candidate, k
        if not lo <= n <= hi:
            raise RuntimeError(f"could not build a document of {target} tokens (got {n})")
        docs.append(text)
        counts.append(n)
    return QUERY, docs, counts


def make_long_workload(n_docs: int, prompt_tokens: int,
                       seed: int = WORKLOAD_SEED) -> Tuple[str, List[str], List[int]]:
    """The query and ``n_docs`` documents, each as long as fits a prompt of ``prompt_tokens`` tokens
    (the card's prompt: prefix, instruction, query, document, suffix; at 8,192 that is the card's
    max_length, so no engine truncates). The bank is ~2,700 tokens: documents are its sentences in a
    new shuffled order on each pass, as many passes as needed, deterministic."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False).ids)

    wrapper = count(QWEN3_PREFIX) + count(QWEN3_SUFFIX)
    head = f"<Instruct>: {QWEN3_DEFAULT_INSTRUCTION}\n<Query>: {QUERY}\n<Document>: "
    bank = [s for t in sorted(SENTENCES) for s in SENTENCES[t]]
    rng = random.Random(seed + prompt_tokens)
    docs, counts = [], []
    for _ in range(n_docs):
        text, misses = "", 0
        while misses < 20:  # stop once 20 sentences in a row would overflow the prompt
            for sentence in rng.sample(bank, len(bank)):
                sep = "" if not text else ("\n\n" if rng.random() < 0.1 else " ")
                candidate = text + sep + sentence
                # cheap bound first: a token is at least one character, so only long texts need counting
                if wrapper + len(head) + len(candidate) > prompt_tokens and \
                        wrapper + count(head + candidate) > prompt_tokens:
                    misses += 1
                    if misses >= 20:
                        break
                    continue
                text, misses = candidate, 0
        docs.append(text)
        counts.append(count(text))
    return QUERY, docs, counts


# --------------------------------------------------------------------------------------------
# Model and FLOPs


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ensure_checkpoint() -> Path:
    """The random-weight checkpoint of the Qwen3-Reranker-0.6B shape, built once and reused."""
    from crossrank.random_checkpoint import write_random_checkpoint

    for path in (CONFIG_FILE, TOKENIZER_DIR / "tokenizer.json"):
        if not path.is_file():
            sys.exit(f"missing {path}: the benchmark needs the shared model config and tokenizer")
    config = json.loads(CONFIG_FILE.read_text(encoding="utf-8"))
    stamp = {
        "config_sha256": _file_digest(CONFIG_FILE),
        "tokenizer_sha256": _file_digest(TOKENIZER_DIR / "tokenizer.json"),
        "seed": CHECKPOINT_SEED,
        "dtype": "bfloat16",
    }
    out = CACHE_DIR / "qwen3-reranker-0.6b-random-bf16"
    stamp_file = out / "bench-stamp.json"
    if (out / "model.safetensors").is_file() and stamp_file.is_file():
        if json.loads(stamp_file.read_text(encoding="utf-8")) == stamp:
            return out
    print(f"building a random-weight checkpoint of the Qwen3-Reranker-0.6B shape in {out} ...", flush=True)
    t0 = time.perf_counter()
    stamp_file.unlink(missing_ok=True)
    write_random_checkpoint(out, config, TOKENIZER_DIR, seed=CHECKPOINT_SEED, dtype="bfloat16")
    stamp_file.write_text(json.dumps(stamp, indent=2), encoding="utf-8")
    print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)
    return out


def write_st_package(checkpoint: Path, out: Path) -> Dict[str, Any]:
    """A sentence-transformers CrossEncoder package of the checkpoint, as ST 6 saves a causal-LM reranker.

    The weights, config and tokenizer are linked from ``checkpoint``; next to them: ``modules.json``
    (a Transformer at the root, then LogitScore in ``1_LogitScore/``), ``sentence_bert_config.json``
    (AutoModelForCausalLM, flat chat messages, ``causal_logits`` out), ``1_LogitScore/config.json``
    (logit("yes") - logit("no") of the last position), ``config_sentence_transformers.json`` (the
    card's instruction as the default prompt) and ``chat_template.jinja`` (the card's prompt).
    Returns the files written, for the record.
    """
    from tokenizers import Tokenizer

    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        try:
            os.symlink(checkpoint / name, out / name)
        except OSError:
            (out / name).write_bytes((checkpoint / name).read_bytes())
    tok = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    files: Dict[str, Any] = {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
            {"idx": 1, "name": "1", "path": "1_LogitScore",
             "type": "sentence_transformers.cross_encoder.modules.logit_score.LogitScore"},
        ],
        "sentence_bert_config.json": {
            "transformer_task": "text-generation",
            "modality_config": {"text": {"method": "forward", "method_output_name": "logits"},
                                "message": {"method": "forward", "method_output_name": "logits", "format": "flat"}},
            "module_output_name": "causal_logits",
        },
        "1_LogitScore/config.json": {"true_token_id": tok.token_to_id("yes"), "false_token_id": tok.token_to_id("no"),
                                     "module_input_name": "causal_logits"},
        "config_sentence_transformers.json": {
            "model_type": "CrossEncoder", "prompts": {ST_PROMPT_NAME: QWEN3_DEFAULT_INSTRUCTION},
            "default_prompt_name": ST_PROMPT_NAME, "activation_fn": "torch.nn.modules.activation.Sigmoid",
        },
    }
    for name, content in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(json.dumps(content, indent=2), encoding="utf-8")
    # transformers prefers chat_template.jinja to the chat template in tokenizer_config.json
    (out / "chat_template.jinja").write_text(QWEN3_ST_CHAT_TEMPLATE, encoding="utf-8")
    files["chat_template.jinja"] = QWEN3_ST_CHAT_TEMPLATE
    return files


def flop_model(config: Dict[str, Any]) -> Dict[str, float]:
    """Per-token FLOP coefficients of a decoder config (dense, full attention)."""
    H = int(config["hidden_size"])
    NH = int(config["num_attention_heads"])
    NKV = int(config.get("num_key_value_heads") or NH)
    D = int(config.get("head_dim") or H // NH)
    I = int(config["intermediate_size"])
    L = int(config["num_hidden_layers"])
    per_layer = H * NH * D + 2 * H * NKV * D + NH * D * H + 3 * H * I
    return {
        "linear_params": float(per_layer * L),
        "linear_flop_per_token": 2.0 * per_layer * L,
        "attention_flop_per_token_per_key": 4.0 * NH * D * L,
    }


def useful_flops(lengths: Sequence[int], fm: Dict[str, float], shared_prefix: int = 0) -> float:
    """Linear + causal attention FLOPs of the real tokens of these sequences, the first
    `shared_prefix` tokens (common to all of them) counted once: what the scores need."""
    def tokens(first: int, last: int) -> float:  # tokens first..last-1; token i attends to i+1 keys
        return (fm["linear_flop_per_token"] * (last - first) +
                fm["attention_flop_per_token_per_key"] * (last * (last + 1) - first * (first + 1)) / 2)

    p = min([shared_prefix, *lengths]) if lengths else 0
    return (tokens(0, p) if lengths else 0.0) + sum(tokens(p, n) for n in lengths)


def shared_prefix_length(ids: Sequence[Sequence[int]]) -> int:
    """Tokens at the start of every sequence that are the same in all of them."""
    if not ids:
        return 0
    first = list(ids[0])
    n = min(len(x) for x in ids)
    for x in ids[1:]:
        x = list(x)
        while n and x[:n] != first[:n]:
            n -= 1
    return n


# --------------------------------------------------------------------------------------------
# Child side: one engine configuration per process


def _proc_status(key: str) -> Optional[int]:
    """A /proc/self/status field in bytes (VmHWM, VmRSS)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _peak_rss() -> int:
    hwm = _proc_status("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _warmed(rss_after_load: Optional[int]) -> Dict[str, Optional[int]]:
    """Call after the warm-up: the RSS now is the resident model (weights paged in: transformers
    maps a bf16 checkpoint and touches it only in the first forward) plus the runtime; then resets the
    peak counter, so the VmHWM read at the end is the timed runs' own peak."""
    out = {"rss_after_load": rss_after_load, "rss_after_warmup": _proc_status("VmRSS"),
           "peak_rss_before_timing": _proc_status("VmHWM")}
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        out["peak_reset"] = 1
    except OSError:  # not Linux, or not allowed: the final peak then includes loading
        out["peak_reset"] = 0
    return out


def _system_busy_seconds() -> Optional[float]:
    """CPU seconds all processes spent busy since boot (/proc/stat), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _ids_digest(ids: Sequence[Sequence[int]]) -> str:
    return hashlib.sha256(json.dumps([list(map(int, x)) for x in ids]).encode()).hexdigest()


class _Timer:
    """Times repeated runs and the CPU other processes used meanwhile."""

    def __init__(self) -> None:
        self.times: List[float] = []
        self.other_cpu: List[Optional[float]] = []

    def run(self, fn):
        sys0, own0 = _system_busy_seconds(), _own_cpu_seconds()
        t0 = time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t0
        sys1, own1 = _system_busy_seconds(), _own_cpu_seconds()
        self.times.append(wall)
        if sys0 is None or sys1 is None:
            self.other_cpu.append(None)
        else:
            self.other_cpu.append(max(0.0, (sys1 - sys0) - (own1 - own0)) / wall)
        return out


def _openblas_core() -> Optional[str]:
    """The kernel set of the OpenBLAS crossrank links (openblas_get_corename), or None."""
    import ctypes

    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as f:
            paths = sorted({line.split()[-1] for line in f if "/libopenblas" in line})
    except OSError:
        return None
    for path in paths:
        try:
            fn = ctypes.CDLL(path).openblas_get_corename
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_char_p
        name = fn()
        return name.decode() if name else None
    return None


def _warm_then_time(spec: Dict[str, Any], run: Any, docs: List[str], warmup: List[str],
                    rss_loaded: Optional[int]) -> Tuple[Any, "_Timer", Dict[str, Optional[int]]]:
    """Warm-up calls of run(documents, batch_size) on `warmup`, then --repeats timed calls on
    `docs`: the last call's result, the timer and the memory figures."""
    bs = spec["batch_size"]
    for _ in range(spec["warmup_calls"]):
        run(warmup, min(bs, len(warmup)))
    memory = _warmed(rss_loaded)
    timer = _Timer()
    out = None
    for _ in range(spec["repeats"]):
        out = timer.run(lambda: run(docs, bs))
    return out, timer, memory


def child_crossrank(spec: Dict[str, Any], query: str, docs: List[str], warmup: List[str]) -> Dict[str, Any]:
    import numpy as np

    from crossrank import CrossEncoder

    t0 = time.perf_counter()
    model = CrossEncoder(spec["checkpoint"], template="qwen3-reranker", threads=spec["threads"],
                         dtype=spec.get("crossrank_dtype", "float32"))
    load_s = time.perf_counter() - t0
    rss_loaded = _proc_status("VmRSS")
    enc = model.tokenize(query, docs)
    # Raw log-odds (logit_yes - logit_no) from the timed call; P(yes) is their sigmoid, which is
    # what the default activation computes. The activation is negligible next to the forward.
    for _ in range(spec["warmup_calls"]):
        model.score(query, warmup, activation_fn="identity")
    memory = _warmed(rss_loaded)
    timer = _Timer()
    raw = None
    if spec.get("reuse", True):
        def call():
            return model.score(query, docs, activation_fn="identity")
    else:
        def call():  # tokenization included, as in score(); no shared-prefix reuse
            return model.forward_ids(model.tokenize(query, docs).input_ids)[:, 0]
    for _ in range(spec["repeats"]):
        raw = timer.run(call)
    raw = np.asarray(raw, dtype=np.float64)
    return {
        "load_s": load_s, "times_s": timer.times, "other_cpu": timer.other_cpu,
        "raw": raw.tolist(), "scores": (1.0 / (1.0 + np.exp(-raw))).tolist(),
        "lengths": enc.num_tokens, "ids_sha256": _ids_digest(enc.input_ids),
        "shared_prefix": shared_prefix_length(enc.input_ids),
        **memory, "weight_bytes": int(model._engine.weight_bytes), "batch_size": "default (32)",
        "gemm": os.environ.get("CROSSRANK_GEMM", "panels"),
        "openblas_core": _openblas_core(), "openblas_env": {k: os.environ.get(k) for k in OPENBLAS_VARS},
    }


def _torch_weight_bytes(model: Any) -> int:
    """Bytes of a torch module's parameters and buffers (tied weights once)."""
    tensors = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    return int(sum(t.numel() * t.element_size() for t in tensors.values()))


def child_transformers(spec: Dict[str, Any], query: str, docs: List[str], warmup: List[str]) -> Dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(spec["threads"])
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[spec["dtype"]]
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(spec["checkpoint"], padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(spec["checkpoint"], dtype=dtype).eval()
    load_s = time.perf_counter() - t0
    rss_loaded = _proc_status("VmRSS")
    token_false_id = tokenizer.convert_tokens_to_ids("no")
    token_true_id = tokenizer.convert_tokens_to_ids("yes")
    prefix_tokens = tokenizer.encode(QWEN3_PREFIX, add_special_tokens=False)
    suffix_tokens = tokenizer.encode(QWEN3_SUFFIX, add_special_tokens=False)
    max_length = QWEN3_MAX_LENGTH
    model_kwargs = {} if spec["hf_full_logits"] else {"logits_to_keep": 1}

    # The model card's functions.
    def format_instruction(instruction, query, doc):
        if instruction is None:
            instruction = QWEN3_DEFAULT_INSTRUCTION
        return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"

    def process_inputs(pairs):
        inputs = tokenizer(pairs, padding=False, truncation="longest_first", return_attention_mask=False,
                           max_length=max_length - len(prefix_tokens) - len(suffix_tokens))
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = prefix_tokens + ele + suffix_tokens
        unpadded = [list(ids) for ids in inputs["input_ids"]]
        inputs = tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=max_length)
        for key in inputs:
            inputs[key] = inputs[key].to(model.device)
        return inputs, unpadded

    @torch.no_grad()
    def compute_logits(inputs):
        batch_scores = model(**inputs, **model_kwargs).logits[:, -1, :]
        true_vector = batch_scores[:, token_true_id]
        false_vector = batch_scores[:, token_false_id]
        raw = (true_vector - false_vector).float().tolist()
        batch_scores = torch.stack([false_vector, true_vector], dim=1)
        batch_scores = torch.nn.functional.log_softmax(batch_scores, dim=1)
        return batch_scores[:, 1].exp().float().tolist(), raw

    def run(documents, batch_size):
        pairs = [format_instruction(None, query, d) for d in documents]
        scores, raw, ids, padded = [], [], [], 0
        for start in range(0, len(pairs), batch_size):
            inputs, unpadded = process_inputs(pairs[start:start + batch_size])
            s, r = compute_logits(inputs)
            scores += s
            raw += r
            ids += unpadded
            padded += int(inputs["input_ids"].numel())
        return scores, raw, ids, padded

    bs = spec["batch_size"]
    out, timer, memory = _warm_then_time(spec, run, docs, warmup, rss_loaded)
    scores, raw, ids, padded = out
    return {
        "load_s": load_s, "times_s": timer.times, "other_cpu": timer.other_cpu,
        "raw": raw, "scores": scores, "lengths": [len(x) for x in ids], "ids_sha256": _ids_digest(ids),
        "shared_prefix": shared_prefix_length(ids),
        **memory, "weight_bytes": _torch_weight_bytes(model), "batch_size": bs, "padded_tokens": padded,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "torch_threads": torch.get_num_threads(),
        "logits_to_keep": model_kwargs.get("logits_to_keep", "all"),
    }


def child_st(spec: Dict[str, Any], query: str, docs: List[str], warmup: List[str]) -> Dict[str, Any]:
    """sentence-transformers' CrossEncoder on the package write_st_package wrote: rank() with the
    package's default prompt, raw scores (identity activation; P(yes) is their sigmoid)."""
    import sentence_transformers
    import torch
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(spec["threads"])
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[spec["dtype"]]
    t0 = time.perf_counter()
    model = CrossEncoder(spec["st_package"], device="cpu", model_kwargs={"dtype": dtype})
    load_s = time.perf_counter() - t0
    rss_loaded = _proc_status("VmRSS")
    identity = torch.nn.Identity()

    def run(documents, batch_size):
        ranked = model.rank(query, documents, batch_size=batch_size, activation_fn=identity, show_progress_bar=False)
        raw = [0.0] * len(documents)
        for r in ranked:
            raw[r["corpus_id"]] = float(r["score"])
        return raw

    bs = spec["batch_size"]
    raw, timer, memory = _warm_then_time(spec, run, docs, warmup, rss_loaded)
    # The token ids ST fed the model (outside the timing), for the same-ids check.
    ids: List[List[int]] = []
    prompt = model.prompts.get(model.default_prompt_name) if model.default_prompt_name else None
    for start in range(0, len(docs), 8):
        features = model[0].preprocess([(query, d) for d in docs[start:start + 8]], prompt=prompt)
        for row, mask in zip(features["input_ids"].tolist(), features["attention_mask"].tolist()):
            ids.append([t for t, m in zip(row, mask) if m])
    raw_arr = [float(x) for x in raw]
    return {
        "load_s": load_s, "times_s": timer.times, "other_cpu": timer.other_cpu,
        "raw": raw_arr, "scores": [1.0 / (1.0 + math.exp(-x)) for x in raw_arr],
        "lengths": [len(x) for x in ids], "ids_sha256": _ids_digest(ids),
        "shared_prefix": shared_prefix_length(ids),
        **memory, "weight_bytes": _torch_weight_bytes(model), "batch_size": bs,
        "modules": [type(m).__name__ for m in model], "prompt": prompt,
        "model_dtype": str(model.model.dtype),
        "attn_implementation": getattr(model.model.config, "_attn_implementation", None),
        "torch_threads": torch.get_num_threads(), "sentence_transformers_version": sentence_transformers.__version__,
    }


def child_peak(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Measured float32 GEMM peak (best of numpy's BLAS and torch's) at the benchmark's thread count."""
    import numpy as np

    n = 2048
    flop = 2.0 * n ** 3
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)

    def best(fn, reps=5):
        fn()
        t = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        return flop / min(t) / 1e9

    out = {"numpy_sgemm_gflops": best(lambda: a @ b)}
    try:
        import torch

        torch.set_num_threads(spec["threads"])
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        out["torch_sgemm_gflops"] = best(lambda: ta @ tb)
    except ImportError:
        pass
    out["peak_gflops"] = max(v for k, v in out.items())
    out["matrix"] = n
    try:  # register-only loops: the instruction peaks the GEMMs are measured against
        from crossrank import _core

        out["fma_f32_loop_gflops"] = _core._bench_peak("fma_f32", threads=spec["threads"])
        out["dpbf16_loop_gflops"] = _core._bench_peak("dpbf16", threads=spec["threads"])
        out["vnni_loop_gops"] = _core._bench_peak("vnni", threads=spec["threads"])
    except (ImportError, RuntimeError):
        pass
    return out


def child_main(spec_file: str, out_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text(encoding="utf-8"))
    if spec["engine"] == "peak":
        result = child_peak(spec)
    else:
        workload = json.loads(Path(spec["workload"]).read_text(encoding="utf-8"))
        query, docs, warmup = workload["query"], workload["documents"], workload["warmup_documents"]
        if spec["engine"].startswith("crossrank"):
            result = child_crossrank(spec, query, docs, warmup)
        elif spec["engine"].startswith("st-"):
            result = child_st(spec, query, docs, warmup)
        else:
            result = child_transformers(spec, query, docs, warmup)
        # VmHWM was reset after the warm-up: what it holds now is the timed runs' peak
        result["peak_rss_scoring"] = _peak_rss()
    result["peak_rss"] = max(_peak_rss(), result.get("peak_rss_before_timing") or 0)
    Path(out_file).write_text(json.dumps(result), encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Parent side


def machine_info(threads: int) -> Dict[str, Any]:
    import crossrank

    info: Dict[str, Any] = {"threads": threads, "cpu_count": os.cpu_count(),
                            **{k: os.environ.get(k) for k in OPENBLAS_VARS},
                            "crossrank_cpu_info": crossrank.cpu_info(), "crossrank_version": crossrank.__version__,
                            "python": platform.python_version(), "platform": platform.platform()}
    try:
        info["affinity"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemTotal:"):
                info["mem_total_bytes"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        info["loadavg_at_start"] = Path("/proc/loadavg").read_text(encoding="ascii").split()[:3]
    except OSError:
        pass
    for mod in ("numpy", "torch", "transformers", "tokenizers", "sentence_transformers"):
        try:
            info[f"{mod}_version"] = __import__(mod).__version__
        except ImportError:
            info[f"{mod}_version"] = None
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True)
        info["git_commit"] = rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def run_child(spec: Dict[str, Any], tmp: Path, tag: str) -> Dict[str, Any]:
    spec_file, out_file = tmp / f"{tag}.spec.json", tmp / f"{tag}.out.json"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    env = dict(os.environ)
    env.pop("CROSSRANK_GEMM", None)
    env.update(spec.get("env", {}))
    for key in spec.get("env_unset", ()):
        env.pop(key, None)
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if spec["engine"] == "peak":
        env["OPENBLAS_NUM_THREADS"] = str(spec["threads"])
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(spec_file), str(out_file)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or not out_file.is_file():
        tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
        return {"error": f"exit code {proc.returncode}", "log_tail": tail, "process_s": elapsed}
    result = json.loads(out_file.read_text(encoding="utf-8"))
    result["process_s"] = elapsed
    return result


def _fmt(v: Optional[float], spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _print_table(head: List[str], rows: List[List[str]], left: int = 2) -> None:
    """Columns: the first ``left`` left-aligned, the rest right-aligned. A row shorter than the head
    (a failed run: name, batch, message) ends with its last cell as is."""
    widths = [max([len(h)] + [len(row[i]) for row in rows if len(row) == len(head) or i < len(row) - 1])
              for i, h in enumerate(head)]
    line = "  ".join(h.ljust(w) if i < left else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths)))
    print(line)
    print("-" * len(line))
    for row in rows:
        cells = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        if len(row) < len(head):
            cells[-1] = row[-1]
        print("  ".join(cells))


def _mib(v: Optional[float]) -> str:
    return "-" if v is None else f"{v / 2**20:.0f}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--child":
        child_main(argv[1], argv[2])
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=MODES, default="throughput",
                   help="throughput (default): 1 query x --docs documents of 150-400 tokens; latency: 1 query x 1 "
                        "document of ~300 tokens, --repeats calls, p50/p90; long4k/long8k: 1 query x --docs "
                        "documents filling prompts of 4,096/8,192 tokens")
    p.add_argument("--docs", type=int, default=None,
                   help="documents scored against the query (default 64; long modes 2; latency: always 1)")
    p.add_argument("--threads", type=int, default=None, help="compute threads for every engine (default: all CPUs)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per engine after the warm-up (default 1; latency: timed calls, default 20)")
    p.add_argument("--hf-batch-sizes", default="1,8,16,64",
                   help="transformers / sentence-transformers batch sizes to try in throughput mode (default "
                        "1,8,16,64; the other modes run them at batch 1)")
    p.add_argument("--engines", default=",".join(ENGINES), help=f"comma list, a subset of {','.join(ENGINES)}")
    p.add_argument("--warmup-docs", type=int, default=2, help="documents in the warm-up call (default 2)")
    p.add_argument("--scaling", action="store_true",
                   help="also run the crossrank engines at 1 thread and print the speedup of --threads over 1")
    p.add_argument("--hf-full-logits", action="store_true",
                   help="run the model card's forward verbatim (LM head over every position)")
    p.add_argument("--no-peak", action="store_true", help="skip the float32 GEMM peak measurement")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: throughput 8 documents and one batch size; latency 5 calls; long modes 1 document")
    args = p.parse_args(argv)

    mode = args.mode
    if mode == "latency" and args.docs not in (None, 1):
        p.error("--mode latency scores 1 query x 1 document; --docs does not apply")
    if args.quick:
        if mode == "throughput":
            args.docs, args.hf_batch_sizes = 8, "8"
        elif mode == "latency":
            args.repeats = args.repeats or 5
        else:
            args.docs = args.docs or 1
    n_docs = args.docs or {"throughput": 64, "latency": 1}.get(mode, 2)
    repeats = args.repeats or (20 if mode == "latency" else 1)
    threads = args.threads or len(os.sched_getaffinity(0))
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        p.error(f"unknown engine(s) {unknown}; choose from {list(ENGINES)}")
    batch_sizes = sorted({int(b) for b in args.hf_batch_sizes.split(",") if b.strip()})
    if n_docs < 1 or repeats < 1 or threads < 1 or not batch_sizes or min(batch_sizes) < 1:
        p.error("--docs, --repeats, --threads and the batch sizes must be positive")
    if args.scaling and threads == 1:
        p.error("--scaling compares --threads with 1 thread; --threads is 1")
    if mode == "throughput":
        batch_sizes = sorted({min(b, n_docs) for b in batch_sizes})  # a batch larger than the workload is one batch
    else:
        batch_sizes = [1]  # latency: one pair per call; long documents: one pair per forward, as a user would

    started = _dt.datetime.now()
    checkpoint = ensure_checkpoint()
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    fm = flop_model(config)
    warmup_calls = 1
    if mode == "throughput":
        query, docs, doc_tokens = make_workload(n_docs)
        warmup_docs = docs[: max(1, min(args.warmup_docs, len(docs)))]
    elif mode == "latency":
        query, docs, doc_tokens = make_workload(1, doc_tokens=LATENCY_DOC_TOKENS)
        warmup_docs, warmup_calls = docs, 2
    else:
        query, docs, doc_tokens = make_long_workload(n_docs, LONG_PROMPT_TOKENS[mode])
        # a short document: warms threads and allocators without a long forward before the timing
        warmup_docs = make_workload(1)[1]
    info = machine_info(threads)
    print(f"CPU: {info.get('cpu_model')}, {threads} threads, crossrank kernels {info['crossrank_cpu_info']['isa']}, "
          f"load average {' '.join(info.get('loadavg_at_start', []))}")
    print("OpenBLAS environment: " + ", ".join(f"{k}={info[k] if info[k] is not None else '(unset)'}" for k in OPENBLAS_VARS)
          + ("; crossrank-f32-openblas-unset runs without them" if "crossrank-f32-openblas-unset" in engines else ""))
    if mode == "latency":
        desc = f"1 query x 1 document of {doc_tokens[0]} tokens, {repeats} timed calls per engine (batch 1)"
    else:
        span = str(doc_tokens[0]) if len(set(doc_tokens)) == 1 else f"{min(doc_tokens)}-{max(doc_tokens)}"
        desc = (f"1 query x {len(docs)} document{'s' if len(docs) > 1 else ''}, {span} document tokens"
                + (f" (mean {sum(doc_tokens) / len(doc_tokens):.0f})" if len(docs) > 1 else ""))
        if mode != "throughput":
            desc += f", prompts of up to {LONG_PROMPT_TOKENS[mode]} tokens, transformers/ST at batch 1"
    print(f"Mode {mode}. Workload: {desc}; model: Qwen3-Reranker-0.6B shape, RANDOM weights")

    runs: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_rerank-") as tmpdir:
        tmp = Path(tmpdir)
        workload_file = tmp / "workload.json"
        workload_file.write_text(json.dumps({"query": query, "documents": docs, "warmup_documents": warmup_docs}),
                                 encoding="utf-8")
        st_package, st_files = None, None
        if any(e.startswith("st-") for e in engines):
            st_package = tmp / "st-package"
            st_files = write_st_package(checkpoint, st_package)
        base = {"checkpoint": str(checkpoint), "workload": str(workload_file), "threads": threads, "mode": mode,
                "repeats": repeats, "warmup_calls": warmup_calls, "warmup_docs": len(warmup_docs),
                "hf_full_logits": args.hf_full_logits}
        peak = None
        if not args.no_peak:
            print("measuring the float32 GEMM peak ...", flush=True)
            peak = run_child({"engine": "peak", "threads": threads}, tmp, "peak")
            if "error" in peak:
                print(f"  failed: {peak['error']}")
                peak = None
        configs: List[Dict[str, Any]] = []
        for engine in engines:
            if engine == "crossrank-f32":
                configs.append(dict(base, engine=engine))
            elif engine == "crossrank-int8":
                configs.append(dict(base, engine=engine, crossrank_dtype="int8"))
            elif engine.startswith("crossrank-bf16"):
                configs.append(dict(base, engine=engine, crossrank_dtype="bfloat16",
                                    reuse=not engine.endswith("noreuse")))
            elif engine == "crossrank-f32-openblas":
                configs.append(dict(base, engine=engine, env={"CROSSRANK_GEMM": "openblas"}))
            elif engine == "crossrank-f32-openblas-unset":
                configs.append(dict(base, engine=engine, env={"CROSSRANK_GEMM": "openblas"},
                                    env_unset=list(OPENBLAS_VARS)))
            else:
                dtype = "float32" if engine.endswith("-f32") else "bfloat16"
                extra = {"st_package": str(st_package)} if engine.startswith("st-") else {}
                for bs in batch_sizes:
                    configs.append(dict(base, engine=engine, dtype=dtype, batch_size=bs, **extra))
        if args.scaling:  # each crossrank configuration again at 1 thread, right after it (same machine load)
            configs = [x for c in configs for x in
                       ([c, dict(c, threads=1, scaling=True)] if c["engine"].startswith("crossrank") else [c])]
        for k, spec in enumerate(configs):
            label = spec["engine"] + (f" (batch {spec['batch_size']})" if "batch_size" in spec else "") + \
                (" (1 thread)" if spec.get("scaling") else "")
            print(f"[{k + 1}/{len(configs)}] {label} ...", end="", flush=True)
            res = run_child(spec, tmp, f"run{k}")
            res["engine"] = spec["engine"]
            res["threads"] = spec["threads"]
            res["config"] = {key: v for key, v in spec.items() if key not in ("workload", "checkpoint", "st_package")}
            if "error" in res:
                print(f" FAILED ({res['error']})\n{res['log_tail']}")
            elif mode == "latency":
                t = sorted(res["times_s"])
                print(f" p50 {1e3 * t[len(t) // 2]:.0f} ms (load {res['load_s']:.1f} s, process {res['process_s']:.0f} s)",
                      flush=True)
            else:
                best = min(res["times_s"])
                print(f" {best:.1f} s (load {res['load_s']:.1f} s, process {res['process_s']:.0f} s)", flush=True)
            runs.append(res)

    # ---- summarise
    import numpy as np

    ok = [r for r in runs if "error" not in r]
    main_runs = [r for r in ok if not r["config"].get("scaling")]
    lengths = next((r["lengths"] for r in ok if r["engine"].startswith("crossrank")), None)
    if lengths is None and ok:
        lengths = ok[0]["lengths"]
    n_tokens = sum(lengths) if lengths else 0
    shared_prefix = next((r.get("shared_prefix", 0) for r in ok if r["engine"].startswith("crossrank")), 0)
    # Useful FLOPs count the prompt prefix the pairs share once (what the scores need); the
    # per-pair count (an engine without reuse computes it every time) is kept in the JSON.
    flops = useful_flops(lengths, fm, shared_prefix) if lengths else 0.0
    flops_per_pair_prefix = useful_flops(lengths, fm) if lengths else 0.0
    peak_gflops = peak["peak_gflops"] if peak else None
    bf16_peak = peak.get("dpbf16_loop_gflops") if peak else None
    for r in ok:
        times = r["times_s"]
        if mode == "latency":
            # one call per timed run: the median call stands for the engine
            r["p50_ms"] = 1e3 * float(np.percentile(times, 50))
            r["p90_ms"] = 1e3 * float(np.percentile(times, 90))
            r["min_ms"] = 1e3 * min(times)
            r["best_s"] = r["p50_ms"] / 1e3
            busy = [v for v in r["other_cpu"] if v is not None]
            r["other_cpu_best"] = sum(busy) / len(busy) if busy else None
        else:
            r["best_s"] = min(times)
            r["other_cpu_best"] = r["other_cpu"][times.index(r["best_s"])]
        t = r["best_s"]
        r["pairs_per_s"] = len(docs) / t
        r["tokens_per_s"] = n_tokens / t
        r["gflops"] = flops / t / 1e9
        r["gflops_prefix_per_pair"] = flops_per_pair_prefix / t / 1e9
        r["pct_peak"] = 100.0 * r["gflops"] / peak_gflops if peak_gflops else None
        r["pct_bf16_peak"] = 100.0 * r["gflops"] / bf16_peak if bf16_peak else None
        if r.get("rss_after_warmup") and r.get("peak_rss_scoring") and r.get("peak_reset"):
            r["scoring_rss_over_loaded"] = r["peak_rss_scoring"] - r["rss_after_warmup"]
    best_by_engine: Dict[str, Dict[str, Any]] = {}
    for r in main_runs:
        cur = best_by_engine.get(r["engine"])
        if cur is None or r["best_s"] < cur["best_s"]:
            best_by_engine[r["engine"]] = r
    for r in ok:
        for name, key in ((REFERENCE, "vs_transformers_f32"), (OURS, "vs_crossrank_f32")):
            ref = best_by_engine.get(name)
            r[key] = r["pairs_per_s"] / ref["pairs_per_s"] if ref else None

    # ---- thread scaling: the same configuration at `threads` and at 1
    scaling: Dict[str, Dict[str, Any]] = {}
    for r1 in (r for r in ok if r["config"].get("scaling")):
        rn = best_by_engine.get(r1["engine"])
        if rn is not None:
            scaling[r1["engine"]] = {"threads": [1, threads], "time_s": [r1["best_s"], rn["best_s"]],
                                     "pairs_per_s": [r1["pairs_per_s"], rn["pairs_per_s"]],
                                     "other_cpu": [r1["other_cpu_best"], rn["other_cpu_best"]],
                                     "speedup": r1["best_s"] / rn["best_s"],
                                     "efficiency": r1["best_s"] / rn["best_s"] / threads}

    # ---- checks: same token ids everywhere, scores agree
    checks: Dict[str, Any] = {}
    digests = {r["ids_sha256"] for r in ok}
    checks["same_token_ids"] = len(digests) <= 1

    def max_diff(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, float]:
        return {"max_abs_diff_p_yes": float(np.max(np.abs(np.subtract(a["scores"], b["scores"])))),
                "max_abs_diff_log_odds": float(np.max(np.abs(np.subtract(a["raw"], b["raw"]))))}

    ours = best_by_engine.get(OURS)
    for r in ok:
        if ours is not None and r is not ours:
            r["agreement_vs_crossrank_f32"] = max_diff(r, ours)
    ref_runs = [r for r in main_runs if r["engine"] == REFERENCE]
    if ours is not None and ref_runs:
        per_bs = {str(r["batch_size"]): max_diff(ours, r) for r in ref_runs}
        checks["crossrank_f32_vs_transformers_f32"] = {
            "max_abs_diff_p_yes": max(v["max_abs_diff_p_yes"] for v in per_bs.values()),
            "max_abs_diff_log_odds": max(v["max_abs_diff_log_odds"] for v in per_bs.values()),
            "per_batch_size": per_bs,
        }
    # sentence-transformers against the recipe (same dtype, and float32) and crossrank float32: the raw
    # yes-no logit of every pair. Against the recipe at the same batch size (same padding; ST orders a
    # batch by length, the recipe by input) the difference is the pipeline's alone; across batch sizes
    # it also holds the rounding of different matrix shapes (in bf16 one logit step is 0.125 near 20).
    st_agree: Dict[str, Dict[str, Any]] = {}
    keys = ("max_abs_diff_log_odds", "max_abs_diff_p_yes")
    for st_engine in ("st-f32", "st-bf16"):
        st_runs = [r for r in main_runs if r["engine"] == st_engine]
        if not st_runs:
            continue
        refs = dict.fromkeys(["transformers-" + st_engine.split("-")[1], REFERENCE, OURS])
        for ref in refs:
            ref_runs = [r for r in main_runs if r["engine"] == ref]
            if not ref_runs:
                continue
            diffs = [max_diff(a, b) for a in st_runs for b in ref_runs]
            entry: Dict[str, Any] = {k: max(d[k] for d in diffs) for k in keys}
            same = [max_diff(a, b) for a in st_runs for b in ref_runs if a["batch_size"] == b["batch_size"]]
            if same:
                entry["same_batch_size"] = {k: max(d[k] for d in same) for k in keys}
            st_agree.setdefault(st_engine, {})[ref] = entry
    if st_agree:
        checks["sentence_transformers"] = st_agree
    raw_all = np.asarray(ours["raw"]) if ours else None

    # ---- table
    rows = []
    order = {e: i for i, e in enumerate(ENGINES)}
    for r in sorted(runs, key=lambda r: (order[r["engine"]], r["config"].get("scaling", False),
                                         r["config"].get("batch_size", 0))):
        if r["config"].get("scaling"):
            continue  # printed with the thread scaling below
        bs = r["config"].get("batch_size", "-") if r["engine"].startswith(BATCHED) else "32"
        marked = "error" not in r and best_by_engine.get(r["engine"]) is r and r["engine"].startswith(BATCHED) \
            and len(batch_sizes) > 1
        name = r["engine"] + (" *" if marked else "")
        if "error" in r:
            rows.append([name, str(bs), "failed: " + r["error"]])  # shorter than the head: printed as is
            continue
        ratios = [_fmt(r["vs_transformers_f32"], ".2f"), _fmt(r["vs_crossrank_f32"], ".2f")]
        tail = ratios + [_fmt(r["other_cpu_best"], ".2f"), f"{r['load_s']:.1f}"]
        if mode == "throughput":
            rows.append([name, str(bs), _fmt(r["pairs_per_s"], ".2f"), _fmt(r["tokens_per_s"], ".0f"),
                         _fmt(r["gflops"], ".1f"), _fmt(r["pct_peak"], ".0f"), _mib(r["peak_rss"])] + tail)
        elif mode == "latency":
            rows.append([name, str(bs), f"{r['p50_ms']:.0f}", f"{r['p90_ms']:.0f}", f"{r['min_ms']:.0f}",
                         _fmt(r["tokens_per_s"], ".0f"), _fmt(r["gflops"], ".1f"), _mib(r["peak_rss"])] + tail)
        else:
            rows.append([name, str(bs), _fmt(r["tokens_per_s"], ".0f"), f"{r['best_s'] / len(docs):.1f}",
                         _fmt(r["gflops"], ".1f"), _mib(r["peak_rss"]), _mib(r.get("rss_after_warmup")),
                         _mib(r.get("scoring_rss_over_loaded")), _mib(r.get("weight_bytes"))] + tail)
    tail_head = ["vs HF f32", "vs cr f32", "other CPU", "load s"]
    print()
    if mode == "throughput":
        head = ["engine", "batch", "pairs/s", "tokens/s", "GFLOP/s", "%sgemm", "RSS MiB"] + tail_head
        print(f"{len(docs)} pairs, {n_tokens} tokens ({n_tokens / len(docs):.0f}/pair), "
              f"{flops / 1e12:.2f} TFLOP useful, {threads} threads, best of {repeats} run(s) after 1 warm-up")
    elif mode == "latency":
        head = ["engine", "batch", "p50 ms", "p90 ms", "min ms", "tokens/s", "GFLOP/s", "RSS MiB"] + tail_head
        print(f"1 pair of {n_tokens} tokens per call, {flops / 1e9:.0f} GFLOP useful, {threads} threads, "
              f"{repeats} timed calls after {warmup_calls} warm-up calls; tokens/s and GFLOP/s at the p50")
    else:
        head = ["engine", "batch", "tokens/s", "s/pair", "GFLOP/s", "peak MiB", "loaded MiB", "+scoring MiB",
                "weights MiB"] + tail_head
        print(f"{len(docs)} pair{'s' if len(docs) > 1 else ''}, {n_tokens} tokens ({n_tokens / len(docs):.0f}/pair), "
              f"{flops / 1e12:.2f} TFLOP useful, {threads} threads, best of {repeats} run(s) after 1 short warm-up")
    _print_table(head, rows)
    notes = []
    if len(batch_sizes) > 1 and any(e.startswith(BATCHED) for e in engines):
        notes.append("* best transformers / sentence-transformers batch size (the ratios use it).")
    notes.append("vs = speed ratio (pairs/s" + (", from the p50" if mode == "latency" else "") + ").")
    if mode.startswith("long"):
        notes.append("peak = peak RSS of the engine's process; loaded = RSS after loading and the short warm-up "
                     "(libraries, resident weights, runtime); +scoring = peak RSS of the timed runs minus loaded "
                     "(peak counter reset after the warm-up); weights = the model's weight bytes.")
    else:
        notes.append("RSS = peak RSS of the engine's process.")
    notes.append("other CPU = CPUs busy with other processes during the timed run" +
                 (" (mean over the calls)." if mode == "latency" else "."))
    print(" ".join(notes))
    if scaling:
        print(f"\nThread scaling (crossrank, the same workload at 1 and {threads} threads):")
        unit = "p50 ms" if mode == "latency" else "pairs/s"
        srows = []
        for e in sorted(scaling, key=order.get):
            v = scaling[e]
            if mode == "latency":
                vals = [f"{1e3 * v['time_s'][0]:.0f}", f"{1e3 * v['time_s'][1]:.0f}"]
            else:
                vals = [f"{v['pairs_per_s'][0]:.2f}", f"{v['pairs_per_s'][1]:.2f}"]
            srows.append([e] + vals + [f"{v['speedup']:.2f}x", f"{100 * v['efficiency']:.0f}%",
                                       " / ".join(_fmt(x, ".2f") for x in v["other_cpu"])])
        _print_table(["engine", f"1 thread {unit}", f"{threads} threads {unit}", "speedup", "per thread",
                      "other CPU"], srows, left=1)
    if peak and peak.get("dpbf16_loop_gflops"):
        print(f"Instruction peaks measured here (register-only loops, same threads): float32 FMA "
              f"{peak['fma_f32_loop_gflops']:.0f} GFLOP/s, bf16 vdpbf16ps {peak['dpbf16_loop_gflops']:.0f} GFLOP/s.")
        for r in main_runs:
            if r["engine"].startswith("crossrank-bf16") and r is best_by_engine.get(r["engine"]):
                print(f"{r['engine']}: {r['gflops']:.0f} useful GFLOP/s = {r['pct_bf16_peak']:.0f}% of the bf16 peak "
                      f"(the {shared_prefix}-token shared prefix counted once; "
                      f"{r['gflops_prefix_per_pair']:.0f} GFLOP/s counting it for every pair)")
    if peak:
        print(f"%sgemm: of the best float32 GEMM measured here (2048^3, same threads), {peak['peak_gflops']:.1f} GFLOP/s "
              f"(numpy {peak['numpy_sgemm_gflops']:.1f}, torch {peak.get('torch_sgemm_gflops', float('nan')):.1f}).")
    agree = checks.get("crossrank_f32_vs_transformers_f32")
    print(f"Token ids identical across engines: {'yes' if checks['same_token_ids'] else 'NO'}")
    for r in main_runs:
        if r["engine"].startswith("crossrank-f32-openblas") and r is best_by_engine.get(r["engine"]):
            env_desc = ", ".join(f"{k}={v}" for k, v in r["openblas_env"].items() if v is not None) or "both unset"
            print(f"{r['engine']}: OpenBLAS kernels {r.get('openblas_core') or 'unknown'} ({env_desc})")
    if agree:
        print(f"crossrank f32 vs transformers f32 (every batch size): max |dP(yes)| = "
              f"{agree['max_abs_diff_p_yes']:.2e}, max |d log-odds| = {agree['max_abs_diff_log_odds']:.2e}")
    for st_engine, refs in st_agree.items():
        parts = []
        for ref, v in refs.items():
            same = v.get("same_batch_size")
            parts.append(f"{ref}: max |d| = {v['max_abs_diff_log_odds']:.2e}"
                         + (f" (same batch size: {same['max_abs_diff_log_odds']:.2e})" if same else ""))
        print(f"{st_engine} raw logit(yes) - logit(no) vs " + "; ".join(parts))
    for r in main_runs:
        a = r.get("agreement_vs_crossrank_f32")
        if a and r["engine"] != REFERENCE and not r["engine"].startswith("st-") and r is best_by_engine.get(r["engine"]):
            print(f"{r['engine']} vs crossrank f32: max |dP(yes)| = {a['max_abs_diff_p_yes']:.2e}, "
                  f"max |d log-odds| = {a['max_abs_diff_log_odds']:.2e}")
    if raw_all is not None:
        print(f"(random weights: log-odds range {raw_all.min():.2f} .. {raw_all.max():.2f}; "
              f"scores carry no relevance information)")
    busy = [r["other_cpu_best"] for r in ok if r.get("other_cpu_best") is not None]
    if busy and max(busy) > 0.25:
        print(f"WARNING: other processes used up to {max(busy):.2f} CPUs during the timed runs; "
              f"the numbers are pessimistic and the ratios are noisy.")

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    suffix = "" if mode == "throughput" else f"-{mode}"
    out = RESULTS_DIR / f"bench_rerank{suffix}-{started.strftime('%Y%m%d-%H%M%S')}.json"
    record = {
        "started": started.isoformat(timespec="seconds"),
        "command": [sys.executable, *sys.argv],
        "mode": mode,
        "args": vars(args), "machine": info,
        "model": {"shape": "Qwen3-Reranker-0.6B", "weights": "random", "seed": CHECKPOINT_SEED,
                  "checkpoint": str(checkpoint), "config": config, "flops": fm},
        "st_package_files": st_files,
        "workload": {"mode": mode, "query": query, "documents": len(docs), "document_tokens": doc_tokens,
                     "prompt_tokens": lengths, "total_tokens": n_tokens, "useful_flop": flops,
                     "shared_prefix_tokens": shared_prefix, "useful_flop_prefix_per_pair": flops_per_pair_prefix,
                     "seed": WORKLOAD_SEED, "repeats": repeats, "warmup_calls": warmup_calls,
                     "warmup_documents": len(warmup_docs), "batch_sizes": batch_sizes,
                     "prompt_token_budget": LONG_PROMPT_TOKENS.get(mode)},
        "peak": peak, "checks": checks, "scaling": scaling or None,
        "best": {e: {k: r.get(k) for k in ("pairs_per_s", "tokens_per_s", "gflops", "gflops_prefix_per_pair",
                                           "pct_peak", "pct_bf16_peak",
                                            "p50_ms", "p90_ms", "min_ms", "peak_rss", "rss_after_load",
                                            "rss_after_warmup",
                                            "peak_rss_scoring", "scoring_rss_over_loaded", "weight_bytes",
                                            "vs_transformers_f32", "vs_crossrank_f32", "batch_size", "best_s",
                                            "threads")}
                 for e, r in best_by_engine.items()},
        "runs": runs,
    }
    out.write_text(json.dumps(record, indent=2), encoding="utf-8")
    print(f"\nwrote {out.relative_to(REPO)}")
    failed = len(runs) - len(ok)
    return 1 if failed or not checks["same_token_ids"] else 0


if __name__ == "__main__":
    sys.exit(main())
