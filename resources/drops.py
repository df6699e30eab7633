"""Where raw data drops land (a local folder or an object-store prefix) and when new ones trigger a retrain."""

from __future__ import annotations

import fnmatch
import os
import uuid
from datetime import datetime
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from ft_assets.automation.drops import DropDigest, DropListing, TriggerPolicy, digest_stream, partition_key_for
from ft_assets.data.ingest import SUPPORTED_SUFFIXES, IngestLimits, outside_roots
from ft_assets.data.text_to_sql import write_demo_drops


def _timestamp(value: object) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


class RawDrops(ConfigurableResource):
    """Drop files (JSONL, JSON, CSV, Parquet, gzipped JSONL/JSON/CSV) in one folder or object-store prefix.

    ``path`` is a local folder or any fsspec URL (``s3://bucket/prefix`` with s3fs installed,
    ``gs://...``, ``memory://...``); ``storage_options`` go to fsspec (endpoint, credentials profile).
    Remote drops are copied into ``cache_dir`` before ingestion. In the embedded default an empty local
    folder gets the demo drops (``ensure_demo_drops``).
    """

    path: str
    demo_if_empty: bool = True
    demo_records: int = 500
    storage_options: dict[str, str] = Field(default_factory=dict)
    cache_dir: str = Field("", description="where remote drops are copied before ingest (default: beside the "
                                           "artifacts, $FTOPS_HOME/drops_cache)")
    field_map: dict[str, str] = Field(default_factory=dict, description=(
        "canonical field -> source column, e.g. {'prompt': 'question', 'completion': 'query', 'db_id': 'db_id'}; "
        "empty: detect the usual field names"))
    max_record_bytes: int = Field(1_000_000, gt=0, description="one row larger than this is quarantined")
    max_drop_bytes: int = Field(2 * 1024**3, gt=0, description="bytes read from one drop after decompression; "
                                                              "past it the rest is refused (gzip bombs)")
    max_rows: int = Field(2_000_000, gt=0, description="rows read from one drop; past it the rest is refused")
    max_columns: int = Field(1_000, gt=0, description="a wider CSV or Parquet file is refused")
    max_document_bytes: int = Field(256 * 1024**2, gt=0, description="a .json drop (parsed whole) larger than "
                                                                    "this is refused; use JSON Lines")

    def limits(self) -> IngestLimits:
        return IngestLimits(self.max_record_bytes, self.max_drop_bytes, self.max_rows, self.max_columns,
                            self.max_document_bytes)

    def _local_root(self) -> Path:
        return Path(self.path.removeprefix("file://"))

    def _escapes(self, uri: str) -> bool:
        """A local entry (a symlink) that resolves outside the drop folder: never listed, never read."""
        return self.is_local and outside_roots(Path(uri), [self._local_root()]) is not None
    pattern: str = Field("*", description="which files of the location are drops (a glob on the file name)")
    key_prefix: str = Field("", description="prepended to every drop id, so a recipe's drops never mix with "
                                            "another's on one instance")

    def _fs(self):
        import fsspec

        return fsspec.core.url_to_fs(self.path, **self.storage_options)

    @property
    def is_local(self) -> bool:
        return "://" not in self.path or self.path.startswith("file://")

    def ensure_demo_drops(self) -> list[Path]:
        """Write the demo drops into an empty local folder (when ``demo_if_empty``); returns what it wrote."""
        if not (self.demo_if_empty and self.is_local) or self.scan():
            return []
        return write_demo_drops(Path(self.path.removeprefix("file://")), n_records=self.demo_records)

    def scan(self) -> list[DropListing]:
        """Every drop file directly in the location, in name order, with its size/mtime fingerprint."""
        fs, root = self._fs()
        if not fs.exists(root):
            return []
        drops = []
        for info in fs.ls(root, detail=True):
            name = info["name"].rstrip("/").rsplit("/", 1)[-1]
            if name.startswith(".") or not name.lower().endswith(SUPPORTED_SUFFIXES):
                continue
            if info.get("islink"):
                # A symlink is a drop only when it resolves to a file inside the drop folder.
                if not Path(info["name"]).is_file() or self._escapes(info["name"]):
                    continue
            elif info.get("type") != "file":
                continue
            if not fnmatch.fnmatch(name, self.pattern):
                continue
            mtime = info.get("mtime") or info.get("LastModified") or info.get("updated") or info.get("created")
            uri = info["name"] if self.is_local else fs.unstrip_protocol(info["name"])
            etag = str(info.get("ETag") or info.get("etag") or "")
            drops.append(DropListing(key=self.key_prefix + partition_key_for(name), uri=uri,
                                     size=int(info.get("size") or 0), mtime=_timestamp(mtime), etag=etag))
        return sorted(drops, key=lambda d: d.name)

    def find(self, key: str) -> DropListing:
        """The one drop file whose drop id is ``key``."""
        matches = [d for d in self.scan() if d.key == key]
        if not matches:
            raise FileNotFoundError(f"drop {key!r} is registered but no file with that drop id is in {self.path}")
        if len(matches) > 1:
            raise ValueError(f"drop {key!r} is ambiguous: {', '.join(d.name for d in matches)} share that drop id; "
                             "rename one")
        return matches[0]

    def digest(self, drop: DropListing) -> DropDigest:
        fs, _ = self._fs()
        with fs.open(drop.uri, "rb") as stream:
            return digest_stream(stream, drop.name)

    def fetch(self, drop: DropListing) -> Path:
        """A local path holding the drop's bytes: the file itself, or a copy of a remote object (atomic)."""
        if self.is_local:
            local = Path(drop.uri.removeprefix("file://"))
            if reason := outside_roots(local, [self._local_root()]):
                raise PermissionError(reason)
            return local
        from resources.paths import ftops_home

        target = Path(self.cache_dir or ftops_home() / "drops_cache") / drop.key / drop.name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
        fs, _ = self._fs()
        fs.get(drop.uri, str(tmp))
        os.replace(tmp, target)
        return target


class RetrainPolicy(ConfigurableResource):
    """When new drops start a retrain: debounce, minimum new data, cooldown (see ft_assets/automation/drops.py)."""

    settle_seconds: float = Field(10.0, description="a file must keep its size and mtime this long (and across "
                                                    "two sensor ticks) before it counts")
    min_new_rows: int = Field(100, description="pending drops wait until together they hold this many rows")
    min_new_bytes: int = Field(0, description="... and this many bytes")
    cooldown_seconds: float = Field(600.0, description="at least this long between two releases of new drops")
    max_wait_seconds: float = Field(3600.0, description="release a pending drop after this long even if below the "
                                                        "minimum (0: wait for more data forever)")

    def policy(self) -> TriggerPolicy:
        return TriggerPolicy(self.settle_seconds, self.min_new_rows, self.min_new_bytes, self.cooldown_seconds,
                             self.max_wait_seconds)
