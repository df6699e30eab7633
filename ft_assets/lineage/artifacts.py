"""Immutable, content-addressed artifact directories, published atomically.

An artifact is written into a hidden staging directory, hashed, and renamed to
``<root>/<asset>/<hash>``. A rename is atomic on one filesystem, so a reader
sees either no directory or a complete one; a crash leaves only a
``.staging-*`` directory, which never looks like a version. Publishing the same
content twice reuses the existing directory: versions are never overwritten.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

CARD_NAME = "card.json"
LATEST_NAME = "LATEST"
VERSION_CHARS = 16


@dataclass(frozen=True)
class Artifact:
    """A published artifact: where it is and which content version it holds."""

    path: Path
    version: str

    def card(self) -> dict:
        card_path = self.path / CARD_NAME
        return json.loads(card_path.read_text()) if card_path.exists() else {}


def content_hash(directory: Path) -> str:
    """sha256 over relative paths and bytes of every file except the card."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel == CARD_NAME:
            continue
        digest.update(rel.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextmanager
def staged_artifact(root: Path, asset_name: str) -> Iterator[Path]:
    """A fresh staging directory under the asset's folder; removed if the body raises."""
    asset_dir = Path(root) / asset_name
    asset_dir.mkdir(parents=True, exist_ok=True)
    staging = asset_dir / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        yield staging
    except BaseException as exc:
        staged = _tree_bytes(staging)
        shutil.rmtree(staging, ignore_errors=True)
        if _is_disk_full(exc):
            free = shutil.disk_usage(asset_dir).free
            raise DiskFullError(
                f"no space left on the device holding {asset_dir} while writing {asset_name}: it needs more than "
                f"{staged:,} bytes (written before the disk filled, now removed) and {free:,} bytes are free; free "
                "space there or point the artifact root elsewhere, then rerun") from exc
        raise


class DiskFullError(OSError):
    """A stage ran out of disk; nothing of it was published."""


def _is_disk_full(exc: BaseException) -> bool:
    # Libraries wrap ENOSPC (pyarrow raises OSError without errno, torch a RuntimeError): follow the chain.
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if getattr(exc, "errno", None) == errno.ENOSPC or "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _tree_bytes(directory: Path) -> int:
    try:
        return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    except OSError:
        return 0


def publish(staging: Path, card: dict) -> Artifact:
    """Hash the staged content, write its card and rename it into place."""
    version = content_hash(staging)[:VERSION_CHARS]
    final = staging.parent / version
    card = {**card, "version": version, "published_at": datetime.now(UTC).isoformat()}
    (staging / CARD_NAME).write_text(json.dumps(card, indent=2, sort_keys=True, default=str))
    try:
        os.rename(staging, final)
    except OSError:
        if not (final / CARD_NAME).exists():
            raise
        # Same content already published: keep the existing version untouched.
        shutil.rmtree(staging, ignore_errors=True)
    _write_atomic(staging.parent / LATEST_NAME, version + "\n")
    return Artifact(final, version)


def latest(root: Path, asset_name: str) -> Artifact | None:
    pointer = Path(root) / asset_name / LATEST_NAME
    if not pointer.exists():
        return None
    version = pointer.read_text().strip()
    return Artifact(pointer.parent / version, version)
