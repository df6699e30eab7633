"""ConfigurableResources: where artifacts live, where drops land, where training runs, how data is validated."""

from resources.artifact_store import ArtifactIOManager, ArtifactStore
from resources.compute import TrainingCompute
from resources.drops import RawDrops
from resources.dvc import DvcResource
from resources.gates import ModelGates
from resources.paths import ftops_home
from resources.validation import GreatExpectationsResource

__all__ = ["ArtifactIOManager", "ArtifactStore", "DvcResource", "GreatExpectationsResource", "ModelGates", "RawDrops",
           "TrainingCompute", "ftops_home"]
