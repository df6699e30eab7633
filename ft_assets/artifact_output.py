"""How every asset hands its published artifact to Dagster: path, version, inputs, sizes."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

from dagster import AssetExecutionContext, DataVersion, MetadataValue, Output

from ft_assets.lineage.artifacts import Artifact
from ft_assets.secrets import scrub


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
    """The lineage card written beside an artifact, without any credential the configuration carries."""
    return scrub({
        "asset": context.asset_key.to_user_string(),
        "run_id": context.run.run_id,
        "inputs": {name: {"version": a.version, "path": str(a.path)} for name, a in inputs.items()},
        "config": config or {},
        "code_version": code_version(),
        **extra,
    })


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
            **scrub_metadata(metadata),
        },
    )


def scrub_metadata(metadata: dict) -> dict:
    """Metadata values (plain or ``MetadataValue``) with credentials redacted from their text and JSON."""
    out = {}
    for key, value in metadata.items():
        if isinstance(value, (str, dict, list)):
            value = scrub(value)
        elif isinstance(value, MetadataValue):
            # Text-bearing metadata kinds keep their one field in ``value``; rebuild the same kind around it.
            rebuild = {"text": MetadataValue.text, "md": MetadataValue.md, "url": MetadataValue.url,
                       "path": MetadataValue.path, "json": MetadataValue.json}
            kind = _metadata_kind(value)
            if kind in rebuild:
                value = rebuild[kind](scrub(value.value))
        out[key] = value
    return out


def _metadata_kind(value: MetadataValue) -> str:
    name = type(value).__name__
    return {"TextMetadataValue": "text", "MarkdownMetadataValue": "md", "UrlMetadataValue": "url",
            "PathMetadataValue": "path", "JsonMetadataValue": "json"}.get(name, "")
