"""The artifact store: the one place that writes, versions and reads artifacts."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    ConfigurableIOManager,
    ConfigurableResource,
    InputContext,
    OutputContext,
)

from ft_assets.lineage.artifacts import Artifact, publish, staged_artifact


class ArtifactStore(ConfigurableResource):
    """Immutable artifact directories under ``root`` (a local path in the embedded default)."""

    root: str

    @contextmanager
    def stage(self, asset_name: str) -> Iterator[Path]:
        with staged_artifact(Path(self.root), asset_name) as staging:
            yield staging

    def publish(self, staging: Path, card: dict) -> Artifact:
        return publish(staging, card)

    def work_dir(self, asset_name: str, key: str) -> Path:
        """A stable working folder for one materialization's inputs + config (checkpoints), never an artifact:
        a second attempt with the same key finds what the first left there."""
        path = Path(self.root) / asset_name / ".work" / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def remember(self, asset_name: str, key: str, artifact: Artifact) -> None:
        """Record that ``key`` (a hash of inputs + config + code) produced ``artifact``."""
        index = Path(self.root) / asset_name / ".keys"
        index.mkdir(parents=True, exist_ok=True)
        # Whole or not at all: a process killed mid-write must not leave a torn entry that breaks the next lookup.
        tmp = index / f".{key}.{os.getpid()}"
        tmp.write_text(json.dumps({"version": artifact.version, "path": str(artifact.path)}))
        os.replace(tmp, index / key)

    def lookup(self, asset_name: str, key: str) -> Artifact | None:
        """The artifact ``key`` produced before, if it still exists."""
        entry = Path(self.root) / asset_name / ".keys" / key
        if not entry.is_file():
            return None
        try:
            data = json.loads(entry.read_text())
        except ValueError:  # torn by a crash before writes were atomic: as if never recorded
            return None
        artifact = Artifact(Path(data["path"]), data["version"])
        return artifact if (artifact.path / "card.json").is_file() else None


class ArtifactIOManager(ConfigurableIOManager):
    """Passes ``Artifact`` handles between assets through Dagster's own records.

    Assets publish their directories themselves (through ``ArtifactStore``);
    this manager stores nothing. A downstream step loads the upstream version
    recorded in the upstream's latest materialization event, never whatever
    happens to be newest on disk.
    """

    def handle_output(self, context: OutputContext, obj: Artifact) -> None:
        if not isinstance(obj, Artifact):
            raise TypeError(f"{context.asset_key.to_user_string()} must return an Artifact, got {type(obj).__name__}")

    def load_input(self, context: InputContext) -> Artifact | dict[str, Artifact]:
        key = context.asset_key
        if context.has_asset_partitions and not context.has_partition_key:
            # An unpartitioned asset reading a partitioned one (clean_records <- raw_records): every partition.
            return _load_partitions(context, key, context.asset_partition_keys)
        if context.has_asset_partitions:
            partition = context.asset_partition_key
            return _load_partitions(context, key, [partition])[partition]
        event = context.instance.get_latest_materialization_event(key)
        if event is None or event.asset_materialization is None:
            raise FileNotFoundError(f"{key.to_user_string()} has never been materialized: materialize it first")
        return _artifact(key.to_user_string(), event.asset_materialization.metadata)


def _artifact(label: str, metadata: Mapping) -> Artifact:
    artifact = Artifact(Path(metadata["path"].value), str(metadata["version"].value))
    if not artifact.path.is_dir():
        raise FileNotFoundError(f"{label} version {artifact.version} is recorded at {artifact.path}, which no "
                                "longer exists")
    return artifact


def _load_partitions(context: InputContext, key: AssetKey, partition_keys: Sequence[str]) -> dict[str, Artifact]:
    """The artifact of each partition's latest materialization, by partition key."""
    wanted = list(partition_keys)
    latest: dict[str, Mapping] = {}
    for partition in wanted:  # one indexed query each: a partition's newest event may be far back in the log
        records = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
        if records and records[0].asset_materialization is not None:
            latest[partition] = records[0].asset_materialization.metadata
    missing = [k for k in wanted if k not in latest]
    if missing:
        raise FileNotFoundError(f"{key.to_user_string()} partitions {', '.join(missing)} are registered but never "
                                "materialized: materialize them (or delete the partitions) first")
    return {k: _artifact(f"{key.to_user_string()}[{k}]", latest[k]) for k in wanted}
