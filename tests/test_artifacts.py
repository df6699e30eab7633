"""Artifacts: staged, content-hashed, atomically published, never overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ft_assets.lineage.artifacts import CARD_NAME, LATEST_NAME, content_hash, latest, publish, staged_artifact


def _publish(root: Path, files: dict[str, str], card: dict | None = None, asset: str = "clean_records"):
    with staged_artifact(root, asset) as staging:
        for rel, text in files.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_text(text)
        return publish(staging, card or {})


def _visible(asset_dir: Path) -> list[str]:
    return sorted(p.name for p in asset_dir.iterdir() if p.name != LATEST_NAME and not p.name.startswith("."))


def test_publish_renames_staging_into_asset_version_dir(tmp_path):
    with staged_artifact(tmp_path, "clean_records") as staging:
        assert staging.parent == tmp_path / "clean_records"
        assert staging.name.startswith(".")
        (staging / "data.jsonl").write_text("row\n")
        artifact = publish(staging, {"rows": 1})
    assert not staging.exists()
    assert artifact.path == tmp_path / "clean_records" / artifact.version
    assert (artifact.path / "data.jsonl").read_text() == "row\n"
    assert _visible(tmp_path / "clean_records") == [artifact.version]
    assert not any(p.name.startswith(".staging") for p in (tmp_path / "clean_records").iterdir())


def test_card_records_caller_fields_and_version(tmp_path):
    artifact = _publish(tmp_path, {"a.txt": "x"}, {"rows": 3, "config": {"k": 1}})
    card = artifact.card()
    assert card["rows"] == 3 and card["config"] == {"k": 1}
    assert card["version"] == artifact.version
    assert "published_at" in card
    assert json.loads((artifact.path / CARD_NAME).read_text()) == card


def test_version_depends_on_content_only(tmp_path):
    a = _publish(tmp_path / "r1", {"a.txt": "x", "sub/b.bin": "y"}, {"run": 1})
    b = _publish(tmp_path / "r2", {"a.txt": "x", "sub/b.bin": "y"}, {"run": 2})  # different card, same content
    changed = _publish(tmp_path / "r3", {"a.txt": "x", "sub/b.bin": "z"})
    renamed = _publish(tmp_path / "r4", {"a.txt": "x", "sub/c.bin": "y"})
    assert a.version == b.version
    assert len({a.version, changed.version, renamed.version}) == 3


def test_card_is_excluded_from_content_hash(tmp_path):
    (tmp_path / "data.txt").write_text("x")
    before = content_hash(tmp_path)
    (tmp_path / CARD_NAME).write_text('{"anything": 1}')
    assert content_hash(tmp_path) == before


def test_hash_does_not_confuse_file_boundaries(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    (one / "a").write_text("xy")
    (two / "a").write_text("x")
    (two / "b").write_text("y")
    assert content_hash(one) != content_hash(two)


def test_same_content_published_twice_reuses_version_and_keeps_first_card(tmp_path):
    first = _publish(tmp_path, {"data.txt": "same"}, {"run": "first"})
    first_card = (first.path / CARD_NAME).read_text()
    second = _publish(tmp_path, {"data.txt": "same"}, {"run": "second"})
    assert second.version == first.version and second.path == first.path
    assert (first.path / CARD_NAME).read_text() == first_card
    assert second.card()["run"] == "first"
    assert _visible(tmp_path / "clean_records") == [first.version]
    assert not any(p.name.startswith(".staging") for p in (tmp_path / "clean_records").iterdir())


def test_failing_body_removes_staging_and_publishes_nothing(tmp_path):
    seen: list[Path] = []
    with pytest.raises(RuntimeError, match="boom"):
        with staged_artifact(tmp_path, "clean_records") as staging:
            seen.append(staging)
            (staging / "half.txt").write_text("partial")
            raise RuntimeError("boom")
    assert not seen[0].exists()
    assert list((tmp_path / "clean_records").iterdir()) == []
    assert latest(tmp_path, "clean_records") is None


def test_failure_after_earlier_publish_leaves_previous_version_latest(tmp_path):
    good = _publish(tmp_path, {"data.txt": "v1"})
    with pytest.raises(ValueError):
        with staged_artifact(tmp_path, "clean_records") as staging:
            (staging / "data.txt").write_text("v2")
            raise ValueError("crash before publish")
    assert latest(tmp_path, "clean_records") == good
    assert _visible(tmp_path / "clean_records") == [good.version]


def test_latest_pointer_follows_the_newest_publish(tmp_path):
    v1 = _publish(tmp_path, {"data.txt": "v1"})
    v2 = _publish(tmp_path, {"data.txt": "v2"})
    assert (tmp_path / "clean_records" / LATEST_NAME).read_text().strip() == v2.version
    assert latest(tmp_path, "clean_records") == v2
    assert v1.path.is_dir()  # older versions are kept
    v1_again = _publish(tmp_path, {"data.txt": "v1"})
    assert latest(tmp_path, "clean_records") == v1_again == v1


def test_latest_is_none_for_unknown_asset(tmp_path):
    assert latest(tmp_path, "never_published") is None


def test_assets_are_versioned_independently(tmp_path):
    a = _publish(tmp_path, {"data.txt": "a"}, asset="raw_records")
    b = _publish(tmp_path, {"data.txt": "b"}, asset="clean_records")
    assert latest(tmp_path, "raw_records") == a and latest(tmp_path, "clean_records") == b
    assert a.path.parent.name == "raw_records"
