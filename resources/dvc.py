"""DVC: every dataset version content-addressed and pushed to a remote."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from ft_assets.lineage.dvc_store import DvcDatasetStore


class DvcResource(ConfigurableResource):
    """A DVC repository (initialized on first use) and its remote: a local folder, or s3://... by configuration."""

    repo_dir: str
    remote_url: str = Field(description="any DVC remote URL: a local path, s3://bucket/prefix, gs://, ...")
    enabled: bool = True

    def store(self) -> DvcDatasetStore:
        return DvcDatasetStore(Path(self.repo_dir), self.remote_url)

    def track(self, asset_name: str, artifact_dir: Path) -> str | None:
        return self.store().track(asset_name, artifact_dir) if self.enabled else None
