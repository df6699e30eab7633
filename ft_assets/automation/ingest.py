"""Ingest every drop present now, one raw_records partition per drop, in process (``ftops demo``, tests)."""

from __future__ import annotations

from dagster import DagsterInstance, Definitions, ExecuteInProcessResult

from ft_assets.automation.drops import DROP_SHA256_TAG
from ft_assets.automation.sensors import ingested_sha256
from ft_assets.data.assets import raw_drops_partitions
from resources import RawDrops


def ingest_present_drops(defs: Definitions, instance: DagsterInstance, raw_drops: RawDrops | None = None,
                         ) -> list[ExecuteInProcessResult]:
    """Register each drop file as a partition and ingest those whose content is not ingested yet.

    The sensor does the same for drops that arrive while the daemon runs; this is the one-shot version.
    ``raw_drops`` (a recipe's drop location) replaces the code location's own for these runs.
    """
    run_config = {"resources": {"raw_drops": {"config": raw_drops.model_dump()}}} if raw_drops else {}
    raw_drops = raw_drops or defs.resources["raw_drops"]
    raw_drops.ensure_demo_drops()
    listing = raw_drops.scan()
    if not listing:
        raise FileNotFoundError(f"no drop files in {raw_drops.path}")
    keys = [d.key for d in listing]
    clashes = sorted({k for k in keys if keys.count(k) > 1})
    if clashes:
        raise ValueError(f"several drop files share the drop id(s) {', '.join(clashes)}: rename them")
    name = raw_drops_partitions.name
    instance.add_dynamic_partitions(name, [k for k in keys if not instance.has_dynamic_partition(name, k)])
    job = defs.resolve_job_def("ingest_drop")
    results = []
    for drop in listing:
        sha = raw_drops.digest(drop).sha256
        if ingested_sha256(instance, drop.key) == sha:
            continue  # same content already ingested: nothing changes downstream
        results.append(job.execute_in_process(instance=instance, partition_key=drop.key, raise_on_error=False,
                                              tags={DROP_SHA256_TAG: sha}, run_config=run_config))
    return results
