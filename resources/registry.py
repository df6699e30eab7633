"""The model registry resource: where the registry lives and whether a run may promote by itself."""

from __future__ import annotations

import os

from dagster import ConfigurableResource
from pydantic import Field

from ft_assets.lineage.registry import Registry
from resources.paths import default_registry_path


class ModelRegistry(ConfigurableResource):
    """A SQLite model registry (``$FTOPS_HOME/registry.sqlite`` by default)."""

    path: str = Field(default_factory=default_registry_path)
    auto_promote: bool = Field(default_factory=lambda: os.environ.get("FTOPS_AUTO_PROMOTE", "") == "1",
                               description="move 'production' to the run's new merged model when its gates passed")
    promote_variant: str = Field("merged", description="the variant 'candidate' (and auto-promotion) points at")

    def open(self) -> Registry:
        return Registry(self.path)
