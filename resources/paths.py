"""Where the embedded default keeps its state: ``$FTOPS_HOME`` or ``./.ftops``."""

from __future__ import annotations

import os
from pathlib import Path


def ftops_home() -> Path:
    return Path(os.environ.get("FTOPS_HOME", Path.cwd() / ".ftops")).resolve()


def default_artifact_root() -> str:
    return os.environ.get("FTOPS_ARTIFACT_ROOT", str(ftops_home() / "artifacts"))


def default_drops_dir() -> str:
    return os.environ.get("FTOPS_DROPS_DIR", str(ftops_home() / "drops"))


def default_gguf_path() -> str:
    return os.environ.get("FTOPS_BASE_GGUF", str(ftops_home() / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))


def default_dvc_repo() -> str:
    return os.environ.get("FTOPS_DVC_REPO", str(Path(default_artifact_root()) / "dvc"))


def default_dvc_remote() -> str:
    return os.environ.get("FTOPS_DVC_REMOTE", str(Path(default_artifact_root()) / "dvc_remote"))


def default_registry_path() -> str:
    return os.environ.get("FTOPS_REGISTRY", str(ftops_home() / "registry.sqlite"))


def default_mlflow_uri() -> str:
    """MLflow's tracking store: a local SQLite file (MLflow's plain-file store is deprecated) unless configured."""
    return os.environ.get("FTOPS_MLFLOW_URI", f"sqlite:///{ftops_home() / 'mlflow' / 'mlflow.db'}")
