"""Answer ``ftops models list`` / ``ftops lineage`` from the registry alone when the Dagster instance has
recorded nothing since the registry last caught up with it.

Importing dagster costs ~1.5 s of CPU and opening its SQLite storages another ~0.6 s (schema checks), so
a reader that always opened the instance could not answer in 2 s on a busy 2-core machine. On the embedded
instance every event lands in ``history/runs/index.db``: its size and mtime (with its WAL and the run
database's) fingerprint what Dagster has recorded. Same fingerprint as at the last sync: nothing to sync.
Any other storage (Postgres, a custom dagster.yaml) has no fingerprint and is always synced.
An audit is stored per model version when computed; a model version's chain never changes afterwards
(aliases and promotions, which do, are read from the registry each time).
"""

from __future__ import annotations

import json
from pathlib import Path

from ft_assets.lineage.registry import Registry, UnknownModel

CUSTOM_STORAGE_KEYS = ("storage:", "run_storage:", "event_log_storage:")


def instance_fingerprint(dagster_home: Path) -> str | None:
    """Size + mtime of the embedded instance's SQLite files; None when the instance is not the embedded one."""
    config = dagster_home / "dagster.yaml"
    if config.is_file() and any(key in config.read_text() for key in CUSTOM_STORAGE_KEYS):
        return None
    index = dagster_home / "history" / "runs" / "index.db"
    if not index.is_file():
        return None
    files = (index, index.with_name("index.db-wal"), dagster_home / "history" / "runs.db")
    return "|".join(f"{f.name}:{f.stat().st_mtime_ns}:{f.stat().st_size}" for f in files if f.exists())


def _key(dagster_home: Path) -> str:
    return f"synced_fingerprint:{dagster_home.resolve()}"


def is_fresh(registry: Registry, dagster_home: Path) -> bool:
    fingerprint = instance_fingerprint(dagster_home)
    return fingerprint is not None and registry.get_meta(_key(dagster_home)) == fingerprint


def mark_synced(registry: Registry, dagster_home: Path, fingerprint: str | None) -> None:
    """Record ``fingerprint``, taken BEFORE the sync read the instance: a write during the sync changes the
    files, so the next reader syncs again rather than missing it."""
    if fingerprint is not None:
        registry.set_meta(_key(dagster_home), fingerprint)


def store_audit(registry: Registry, result: dict) -> None:
    registry.set_meta(f"audit:{result['model']['id']}", json.dumps(result, default=str))


def stored_audit(registry: Registry, ref: str) -> dict | None:
    """The stored audit of ``ref`` (id, alias or prefix) with today's aliases and promotions; None if none."""
    try:
        model = registry.resolve(ref)
    except UnknownModel:  # not registered (yet): the caller asks the instance
        return None
    raw = registry.get_meta(f"audit:{model.id}")
    if raw is None:
        return None
    result = json.loads(raw)
    result["model"] = {**result["model"], **model.as_dict(), "aliases": model.aliases}
    result["promotions"] = [m.as_dict() for m in registry.history(model.id)]
    return result
