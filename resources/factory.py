"""The one place resources are built: ``definitions.py``, the tests, the daemon workspace and the benches all call
``build_resources``. A deployment is a named resource set (``embedded`` or ``production``), as in Dagster's
``project_fully_featured`` example; ``FTOPS_DEPLOYMENT`` picks one for ``definitions.py``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEPLOYMENTS = ("embedded", "production")


def build_resources(root: str | Path | None = None, deployment: str | None = None, **overrides: Any) -> dict:
    """Every resource the graph needs, rooted at ``root`` (default: ``$FTOPS_HOME``'s artifact root).

    ``embedded``: artifacts, drops, DVC repo + remote and the registry under one folder, demo drops when the drops
    folder is empty. ``production``: the same resources read their locations from the environment
    (``FTOPS_ARTIFACT_ROOT``, ``FTOPS_DROPS_DIR``, ``FTOPS_DVC_REMOTE``, ``FTOPS_REGISTRY``), never writes demo data,
    and leaves promotion to people. Keyword overrides replace single resources (``training_compute=...``).
    """
    from resources import (
        ArtifactIOManager,
        ArtifactStore,
        DvcResource,
        GreatExpectationsResource,
        ModelGates,
        ModelRegistry,
        RawDrops,
        RetrainPolicy,
        TaskResource,
        TrainingCompute,
    )
    from resources.paths import (
        default_artifact_root,
        default_drops_dir,
        default_dvc_remote,
        default_dvc_repo,
        default_registry_path,
    )

    deployment = deployment or os.environ.get("FTOPS_DEPLOYMENT", "embedded")
    if deployment not in DEPLOYMENTS:
        raise ValueError(f"FTOPS_DEPLOYMENT={deployment!r}: use one of {DEPLOYMENTS}")
    if root is None:
        artifacts, drops = default_artifact_root(), default_drops_dir()
        dvc_repo, dvc_remote, registry = default_dvc_repo(), default_dvc_remote(), default_registry_path()
    else:
        root = Path(root)
        artifacts, drops = str(root / "artifacts"), str(root / "drops")
        dvc_repo, dvc_remote, registry = str(root / "dvc"), str(root / "dvc_remote"), str(root / "registry.sqlite")
    production = deployment == "production"
    resources = {
        "io_manager": ArtifactIOManager(),
        "artifact_store": ArtifactStore(root=artifacts),
        "raw_drops": RawDrops(path=drops, demo_if_empty=not production and root is None),
        "retrain_policy": RetrainPolicy(),
        "training_compute": TrainingCompute(),
        "task": TaskResource(),
        "gx": GreatExpectationsResource(),
        "model_gates": ModelGates(),
        "model_registry": ModelRegistry(path=registry, **({"auto_promote": False} if production else {})),
        "dvc": DvcResource(repo_dir=dvc_repo, remote_url=dvc_remote),
    }
    unknown = sorted(set(overrides) - set(resources))
    if unknown:
        raise ValueError(f"unknown resource(s) {unknown}: the graph's resources are {sorted(resources)}")
    resources.update(overrides)
    return resources
