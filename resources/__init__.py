"""ConfigurableResources: where artifacts live, where drops land, where training runs, how data is validated."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Imported on first use (PEP 562): `ftops lineage` and `ftops models` read resources.paths only and must not
# pay for pandas, GX and the training stack at start-up. Add a resource here and to __all__.
_EXPORTS = {
    "ArtifactIOManager": "resources.artifact_store",
    "ArtifactStore": "resources.artifact_store",
    "DvcResource": "resources.dvc",
    "GreatExpectationsResource": "resources.validation",
    "ModelGates": "resources.gates",
    "ModelRegistry": "resources.registry",
    "RawDrops": "resources.drops",
    "RetrainPolicy": "resources.drops",
    "TaskResource": "resources.task",
    "TrainingCompute": "resources.compute",
    "ftops_home": "resources.paths",
}

__all__ = ["ArtifactIOManager", "ArtifactStore", "DvcResource", "GreatExpectationsResource", "ModelGates",
           "ModelRegistry", "RawDrops", "RetrainPolicy", "TaskResource", "TrainingCompute", "ftops_home"]

if TYPE_CHECKING:
    from resources.artifact_store import ArtifactIOManager, ArtifactStore
    from resources.compute import TrainingCompute
    from resources.drops import RawDrops, RetrainPolicy
    from resources.dvc import DvcResource
    from resources.gates import ModelGates
    from resources.paths import ftops_home
    from resources.registry import ModelRegistry
    from resources.task import TaskResource
    from resources.validation import GreatExpectationsResource


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'resources' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
