"""Shared fixtures: a tiny scratch model built once per session, paths to shared data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests' training curves go to a throwaway MLflow store, not the demo's.
os.environ.setdefault("FTOPS_MLFLOW_URI", f"sqlite:///{tempfile.mkdtemp(prefix='ftops-mlflow-')}/mlflow.db")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def scratch_model_dir(tmp_path_factory) -> Path:
    from ft_assets.data.text_to_sql import SCHEMA_SUMMARY, generate_clean_pairs
    from ft_assets.models.base import ScratchSpec, from_scratch

    corpus = [SCHEMA_SUMMARY] + [f"{q} {s}" for q, s in generate_clean_pairs(400, seed=1)]
    out = tmp_path_factory.mktemp("scratch_model")
    from_scratch(ScratchSpec(hidden_size=64, num_hidden_layers=2, vocab_size=400, corpus=corpus), out)
    return out


@pytest.fixture(scope="session")
def demo_gguf() -> Path:
    from resources.paths import default_gguf_path

    path = Path(os.environ.get("FTOPS_BASE_GGUF", default_gguf_path()))
    if not path.is_file():
        # `make test` fetches it; a bare `pytest` run without it skips the real-model tests.
        pytest.skip(f"SmolLM2 GGUF not found at {path}: run `make model`")
    return path
