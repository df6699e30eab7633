"""Immutable, content-addressed artifact directories, published atomically.

An artifact is written into a hidden staging directory, hashed, and renamed to
``<root>/<asset>/<hash>``. A rename is atomic on one filesystem, so a reader
sees either no directory or a complete one; a crash leaves only a
``.staging-*`` directory, which never looks like a version. Publishing the same
content twice reuses the existing directory: versions are never overwritten.
"""

from __future__ import annotations

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
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


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
