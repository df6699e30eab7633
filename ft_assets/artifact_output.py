"""How every asset hands its published artifact to Dagster: path, version, inputs, sizes."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

from dagster import AssetExecutionContext, DataVersion, MetadataValue, Output

from ft_assets.lineage.artifacts import Artifact


@lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of the code that ran (with ``-dirty`` if uncommitted changes exist)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def card(context: AssetExecutionContext, inputs: dict[str, Artifact], config: dict | None = None, **extra) -> dict:
    """The lineage card written beside an artifact."""
    return {
        "asset": context.asset_key.to_user_string(),
        "run_id": context.run.run_id,
        "inputs": {name: {"version": a.version, "path": str(a.path)} for name, a in inputs.items()},
        "config": config or {},
        "code_version": code_version(),
        **extra,
    }


def artifact_output(artifact: Artifact, inputs: dict[str, Artifact], data_version: str | None = None,
                    **metadata) -> Output:
    """An Output whose data version is ``data_version`` (a DVC hash) or else the artifact's content hash."""
    size = sum(p.stat().st_size for p in artifact.path.rglob("*") if p.is_file())
    return Output(
        artifact,
        data_version=DataVersion(data_version or artifact.version),
        metadata={
            "path": MetadataValue.path(str(artifact.path)),
            "version": artifact.version,
            "size_bytes": size,
            "input_versions": MetadataValue.json({name: a.version for name, a in inputs.items()}),
            "code_version": code_version(),
            **metadata,
        },
    )
