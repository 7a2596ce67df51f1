"""The benchmark's workload: the model shapes it runs, their random-weight checkpoints, the pairs
(one query and English documents built deterministically from a sentence bank) and the FLOP count
every engine is credited with.

Model shapes are the configs the repository carries (assets/model-configs), the tokenizer is
assets/tokenizers/qwen3; checkpoints are written once by crossrank's own streaming writer
(``write_random_checkpoint``, bf16 on disk) into the cache directory: ``--cache-dir``, else
``$XDG_CACHE_HOME/crossrank-bench``, else ``benchmarks/.cache`` (git-ignored).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"
MODEL_CONFIG_DIR = ASSETS / "model-configs"
TOKENIZER_DIR = ASSETS / "tokenizers" / "qwen3"
RESULTS_DIR = REPO / "benchmarks" / "results"
DEFAULT_CACHE_DIR = REPO / "benchmarks" / ".cache"
# The Qwen3-Reranker shapes --model chooses from (all share the Qwen3 tokenizer and the card's recipe).
MODELS = {"0.6B": "Qwen3-Reranker-0.6B", "4B": "Qwen3-Reranker-4B", "8B": "Qwen3-Reranker-8B"}
CONFIG_FILE = MODEL_CONFIG_DIR / (MODELS["0.6B"] + ".json")  # the default shape
CHECKPOINT_SEED = 0
WORKLOAD_SEED = 1234
DOC_TOKENS = (150, 400)
LATENCY_DOC_TOKENS = (290, 310)  # latency mode: one document of ~300 tokens
LONG_PROMPT_TOKENS = {"long4k": 4096, "long8k": 8192, "memory": 8192}  # the document fills a prompt of this size

# The Qwen3-Reranker model card recipe (RECIPES.md).
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

# --------------------------------------------------------------------------------------------
# Model shapes and their checkpoints


def config_file(model: str) -> Path:
    """The config.json of a --model choice ("0.6B", "4B", "8B")."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    return MODEL_CONFIG_DIR / (MODELS[model] + ".json")


def cache_dir(explicit: Optional[str] = None) -> Path:
    """Where built checkpoints live: ``explicit``, else $XDG_CACHE_HOME/crossrank-bench, else
    benchmarks/.cache."""
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "crossrank-bench" if xdg else DEFAULT_CACHE_DIR


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ensure_checkpoint(model: str = "0.6B", cache: Optional[Path] = None) -> Path:
    """The random-weight bf16 checkpoint of a Qwen3-Reranker shape, built once (streamed: flat
    memory whatever the size) and reused while its config, tokenizer and seed are unchanged."""
    from crossrank.random_checkpoint import write_random_checkpoint

    cfg_file = config_file(model)
    for path in (cfg_file, TOKENIZER_DIR / "tokenizer.json"):
        if not path.is_file():
            sys.exit(f"missing {path}: the benchmark needs the repository's model configs and tokenizer (assets/)")
    config = json.loads(cfg_file.read_text(encoding="utf-8"))
    stamp = {"config_sha256": _file_digest(cfg_file), "tokenizer_sha256": _file_digest(TOKENIZER_DIR / "tokenizer.json"),
             "seed": CHECKPOINT_SEED, "dtype": "bfloat16"}
    out = (cache or cache_dir()) / f"qwen3-reranker-{model.lower()}-random-bf16"
    stamp_file = out / "bench-stamp.json"
    if (out / "model.safetensors").is_file() and stamp_file.is_file():
        if json.loads(stamp_file.read_text(encoding="utf-8")) == stamp:
            return out
    print(f"building a random-weight checkpoint of the {MODELS[model]} shape in {out} ...", flush=True)
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    stamp_file.unlink(missing_ok=True)
    write_random_checkpoint(out, config, TOKENIZER_DIR, seed=CHECKPOINT_SEED, dtype="bfloat16")
    stamp_file.write_text(json.dumps(stamp, indent=2), encoding="utf-8")
    size = (out / "model.safetensors").stat().st_size
    print(f"  done in {time.perf_counter() - t0:.1f} s ({size / 2**30:.1f} GiB)", flush=True)
    return out


# --------------------------------------------------------------------------------------------
# FLOPs

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
