"""Which drops are new, settled and worth a retrain: the drop sensor's decisions, with no Dagster in them.

A drop is one file in the drop location. Each tick the sensor lists the location and calls ``advance``:

1. **Debounce.** A file counts only once its size and modification time have not changed for
   ``settle_seconds`` and across two ticks, so a file still being written never triggers early.
2. **Content hash.** A settled file is hashed once (sha256 over its bytes). A drop whose hash was already
   requested, or is already ingested (``known``), is skipped: the same drop never triggers twice.
3. **Minimum and cooldown.** New drops wait in ``pending`` until together they hold ``min_new_rows`` rows and
   ``min_new_bytes`` bytes and ``cooldown_seconds`` have passed since the last trigger; then they are released
   together. ``max_wait_seconds`` (if set) releases a pending drop that has waited that long anyway, so a lone
   small drop is not forgotten.

The state is the sensor's cursor (JSON), so a daemon restart forgets nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

from ft_assets.data.ingest import drop_format

# Run tag carrying the content hash the sensor saw, so the ingest run can tell if the file changed since.
DROP_SHA256_TAG = "ftops/drop_sha256"
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_KEY_CHARS = 120


def partition_key_for(file_name: str) -> str:
    """The drop id (file name without its format suffix), made safe as a Dagster partition key."""
    _, drop_id, _ = drop_format(Path(file_name))
    key = _KEY_UNSAFE.sub("_", drop_id).strip("_")[:MAX_KEY_CHARS]
    if not key:
        raise ValueError(f"cannot derive a drop id from file name {file_name!r}")
    return key


@dataclass(frozen=True)
class DropListing:
    """One file seen in the drop location: its partition key, where it is, and its size/mtime fingerprint."""

    key: str
    uri: str
    size: int
    mtime: float
    etag: str = ""  # object stores: changes with the content even when mtime has coarse resolution

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    def fingerprint(self) -> list:
        return [self.size, self.mtime, self.etag]


@dataclass(frozen=True)
class DropDigest:
    sha256: str
    bytes: int
    rows: int  # an estimate for the minimum-data threshold, not the ingested count


def digest_stream(stream: BinaryIO, name: str) -> DropDigest:
    """sha256 and size of the bytes as stored, plus an estimated row count, in one or two streaming passes."""
    digest = hashlib.sha256()
    size = 0
    buffer = io.BytesIO()
    fmt, _, gzipped = drop_format(Path(name))
    keep = fmt in ("json", "parquet") or gzipped  # formats whose rows need the whole file to count
    lines = 0
    tail = b""
    for block in iter(lambda: stream.read(1 << 20), b""):
        digest.update(block)
        size += len(block)
        if keep:
            buffer.write(block)
        else:
            lines += sum(1 for line in (tail + block).split(b"\n")[:-1] if line.strip())
            tail = (tail + block).rsplit(b"\n", 1)[-1]
    if not keep:
        lines += 1 if tail.strip() else 0
    rows = _count_rows(fmt, gzipped, buffer.getvalue()) if keep else lines
    if fmt == "csv" and not keep:
        rows = max(rows - 1, 0)  # header
    return DropDigest(digest.hexdigest(), size, rows)


def _count_rows(fmt: str | None, gzipped: bool, data: bytes) -> int:
    try:
        if gzipped:
            data = gzip.decompress(data)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
        if fmt == "json":
            parsed = json.loads(data)
            return len(parsed) if isinstance(parsed, list) else 1
        count = sum(1 for line in data.split(b"\n") if line.strip())
        return max(count - 1, 0) if fmt == "csv" else count
    except Exception:  # an unreadable drop still counts as data arriving; ingest quarantines it with a reason
        return 1


@dataclass(frozen=True)
class TriggerPolicy:
    settle_seconds: float = 10.0
    min_new_rows: int = 0
    min_new_bytes: int = 0
    cooldown_seconds: float = 0.0
    max_wait_seconds: float = 0.0  # 0: pending drops below the minimum wait for more data


@dataclass
class WatchState:
    """The sensor cursor."""

    # uri -> {"fp": fingerprint, "since": when this fingerprint was first seen, "ticks": ticks seen unchanged,
    #         "sha256": hash once settled and hashed}
    seen: dict[str, dict] = field(default_factory=dict)
    pending: dict[str, dict] = field(default_factory=dict)  # key -> {"uri", "sha256", "bytes", "rows", "since"}
    requested: dict[str, str] = field(default_factory=dict)  # key -> sha256 of the content last requested
    last_trigger: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> WatchState:
        return cls(**json.loads(text)) if text else cls()


@dataclass
class Decision:
    release: list[dict]  # drops to register and ingest now: {"key", "uri", "sha256", "bytes", "rows"}
    notes: list[str]  # why something did not happen yet, for the sensor's skip reason and log
    state: WatchState


def advance(state: WatchState, listing: list[DropListing], now: float, policy: TriggerPolicy,
            digest: Callable[[DropListing], DropDigest], known: Callable[[str, str], bool]) -> Decision:
    """One sensor tick: debounce, hash, compare with what is known, and release pending drops when due."""
    state = WatchState.from_json(state.to_json())  # never mutate the caller's state
    notes: list[str] = []
    by_key: dict[str, list[DropListing]] = {}
    for drop in listing:
        by_key.setdefault(drop.key, []).append(drop)
    present = {d.uri for d in listing}
    state.seen = {uri: s for uri, s in state.seen.items() if uri in present}
    for key, entry in list(state.pending.items()):
        if entry["uri"] not in present:
            notes.append(f"{key}: pending drop {entry['uri']} disappeared; forgotten")
            del state.pending[key]
    for key, drops in sorted(by_key.items()):
        if len(drops) > 1:
            notes.append(f"{key}: {len(drops)} files share this drop id ({', '.join(d.name for d in drops)}); "
                         "rename one")
            continue
        drop = drops[0]
        seen = state.seen.get(drop.uri)
        if seen is None or seen["fp"] != drop.fingerprint():
            state.seen[drop.uri] = {"fp": drop.fingerprint(), "since": now, "ticks": 1, "sha256": None}
            notes.append(f"{key}: new or changed, waiting for it to settle")
            continue
        if seen["sha256"] is not None:
            continue  # settled and already handled at this fingerprint
        seen["ticks"] += 1
        if now - seen["since"] < policy.settle_seconds:
            notes.append(f"{key}: unchanged for {now - seen['since']:.0f}s of {policy.settle_seconds:.0f}s")
            continue
        info = digest(drop)
        seen["sha256"] = info.sha256
        if state.requested.get(key) == info.sha256 or known(key, info.sha256):
            state.requested[key] = info.sha256
            notes.append(f"{key}: content {info.sha256[:12]} already ingested")
            continue
        state.pending[key] = {"uri": drop.uri, "sha256": info.sha256, "bytes": info.bytes, "rows": info.rows,
                              "since": now}
    release = _due(state, now, policy, notes)
    for entry in release:
        state.requested[entry["key"]] = entry["sha256"]
        del state.pending[entry["key"]]
    if release:
        state.last_trigger = now
    return Decision(release, notes, state)


def _due(state: WatchState, now: float, policy: TriggerPolicy, notes: list[str]) -> list[dict]:
    if not state.pending:
        return []
    rows = sum(e["rows"] for e in state.pending.values())
    size = sum(e["bytes"] for e in state.pending.values())
    oldest = min(e["since"] for e in state.pending.values())
    if state.last_trigger is not None and now - state.last_trigger < policy.cooldown_seconds:
        notes.append(f"cooldown: {len(state.pending)} pending drop(s) wait "
                     f"{policy.cooldown_seconds - (now - state.last_trigger):.0f}s more")
        return []
    enough = rows >= policy.min_new_rows and size >= policy.min_new_bytes
    waited = policy.max_wait_seconds > 0 and now - oldest >= policy.max_wait_seconds
    if not (enough or waited):
        notes.append(f"{len(state.pending)} pending drop(s) hold {rows} rows / {size} bytes; need "
                     f"{policy.min_new_rows} rows and {policy.min_new_bytes} bytes")
        return []
    return [{"key": k, **{f: e[f] for f in ("uri", "sha256", "bytes", "rows")}}
            for k, e in sorted(state.pending.items())]
