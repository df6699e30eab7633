"""Dataset versions tracked with a real DVC repository and restored from its remote."""

import shutil

import pytest

from ft_assets.lineage.dvc_store import DvcDatasetStore


@pytest.fixture
def store(tmp_path):
    return DvcDatasetStore(tmp_path / "repo", str(tmp_path / "remote"))


def _artifact(path, text):
    path.mkdir(parents=True)
    (path / "records.jsonl").write_text(text)
    (path / "card.json").write_text('{"run_id": "' + text[:3] + '"}')
    return path


def test_versions_are_tracked_pushed_and_restorable(store, tmp_path):
    first = store.track("clean_records", _artifact(tmp_path / "a", "one\n"))
    second = store.track("clean_records", _artifact(tmp_path / "b", "two\n"))
    assert first != second and first.endswith(".dir")
    assert store.versions("clean_records") == sorted([first, second])
    assert any((tmp_path / "remote").rglob("*")), "nothing was pushed to the remote"
    # Lose the local cache: the restore must come from the remote.
    shutil.rmtree(tmp_path / "repo" / ".dvc" / "cache")
    restored = store.checkout("clean_records", first[:8])
    assert (restored / "records.jsonl").read_text() == "one\n"
    assert not (restored / "card.json").exists()  # the card names a run, not the data


def test_same_content_gets_the_same_version(store, tmp_path):
    assert store.track("sft", _artifact(tmp_path / "a", "same\n")) == store.track("sft", _artifact(tmp_path / "b",
                                                                                                 "same\n"))


def test_unknown_version_says_which_exist(store, tmp_path):
    known = store.track("sft", _artifact(tmp_path / "a", "x\n"))
    with pytest.raises(KeyError, match=known):
        store.checkout("sft", "deadbeef")


def test_many_versions_of_one_dataset(store, tmp_path):
    """Retraining tracks version after version of the same dataset; each stays restorable."""
    versions = [store.track("clean_records", _artifact(tmp_path / str(i), f"v{i}\n")) for i in range(4)]
    assert len(set(versions)) == 4 and store.versions("clean_records") == sorted(versions)
    assert (store.checkout("clean_records", versions[1]) / "records.jsonl").read_text() == "v1\n"
