"""Where the tests find the files the repository carries (assets/): the Qwen3 tokenizer and the
seed models' config.json shapes. CROSSRANK_ASSETS overrides the folder (same layout)."""
import os
from pathlib import Path

ASSETS = Path(os.environ.get("CROSSRANK_ASSETS", Path(__file__).resolve().parents[1] / "assets"))
QWEN3_TOKENIZER_DIR = ASSETS / "tokenizers" / "qwen3"
MODEL_CONFIGS_DIR = ASSETS / "model-configs"
