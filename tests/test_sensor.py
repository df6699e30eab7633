"""The drop sensor: new drops become partitions + runs once settled, never twice, never too early or too often."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterInstance, Definitions, SensorResult, build_sensor_context

from ft_assets.automation.drops import (
    DROP_SHA256_TAG,
    DropDigest,
    DropListing,
    TriggerPolicy,
    WatchState,
    advance,
    digest_stream,
    partition_key_for,
)
from ft_assets.automation.ingest import ingest_present_drops
from ft_assets.automation.sensors import build_drop_sensor, ingest_drop
from ft_assets.data.assets import raw_records
from resources import ArtifactIOManager, ArtifactStore, RawDrops, RetrainPolicy

SENSOR = build_drop_sensor()


def write_drop(folder: Path, name: str, n: int, start: int = 0) -> Path:
    path = folder / name
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"question": f"How many employees are in department {i}?",
                                        "sql": f"SELECT COUNT(*) FROM employees WHERE dept_id = {i};"}) + "\n"
                            for i in range(start, start + n)))
    return path


def tick(instance: DagsterInstance, drops: Path, cursor: str | None, **policy) -> SensorResult:
    resources = {"raw_drops": RawDrops(path=str(drops), demo_if_empty=False),
                 "retrain_policy": RetrainPolicy(**{"settle_seconds": 0, "min_new_rows": 0, "cooldown_seconds": 0,
                                                    "max_wait_seconds": 0, **policy})}
    context = build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    result = SENSOR(context)
    assert isinstance(result, SensorResult)
    return result


def added_keys(result: SensorResult) -> list[str]:
    return [k for r in result.dynamic_partitions_requests or [] for k in r.partition_keys]


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as inst:
        yield inst


def test_new_drop_becomes_a_partition_and_a_run_once_settled(tmp_path, instance):
    path = write_drop(tmp_path / "drops", "batch 7.jsonl", 5)
    first = tick(instance, tmp_path / "drops", None)
    assert not first.run_requests and "settle" in first.skip_reason.skip_message  # seen once: not yet
    second = tick(instance, tmp_path / "drops", first.cursor)
    assert added_keys(second) == ["batch_7"]
    (request,) = second.run_requests
    sha = digest_stream(path.open("rb"), path.name).sha256
    assert request.partition_key == "batch_7" and request.run_key == f"batch_7:{sha[:16]}"
    assert request.tags[DROP_SHA256_TAG] == sha
    # The same drop on later ticks: nothing, neither a run nor a partition.
    third = tick(instance, tmp_path / "drops", second.cursor)
    assert not third.run_requests and not added_keys(third)


def test_a_file_still_being_written_waits_until_it_stops_changing(tmp_path, instance):
    drops = tmp_path / "drops"
    path = write_drop(drops, "growing.jsonl", 3)
    cursor = tick(instance, drops, None).cursor
    with path.open("a") as handle:  # the writer is not done yet
        handle.write(json.dumps({"question": "How many departments are there?", "sql": "SELECT COUNT(*) FROM"}))
    changed = tick(instance, drops, cursor)
    assert not changed.run_requests and "changed" in changed.skip_reason.skip_message
    with path.open("a") as handle:
        handle.write(" departments;\"}\n")
    cursor = tick(instance, drops, changed.cursor).cursor
    done = tick(instance, drops, cursor)
    (request,) = done.run_requests
    assert request.tags[DROP_SHA256_TAG] == digest_stream(path.open("rb"), path.name).sha256  # the whole file


def test_settle_time_is_respected(tmp_path, instance):
    write_drop(tmp_path / "drops", "a.jsonl", 5)
    cursor = tick(instance, tmp_path / "drops", None, settle_seconds=3600).cursor
    later = tick(instance, tmp_path / "drops", cursor, settle_seconds=3600)
    assert not later.run_requests and "unchanged for" in later.skip_reason.skip_message


def test_small_drops_accumulate_until_the_minimum(tmp_path, instance):
    drops = tmp_path / "drops"
    write_drop(drops, "small-1.jsonl", 30)
    cursor = tick(instance, drops, None, min_new_rows=50).cursor
    waiting = tick(instance, drops, cursor, min_new_rows=50)
    assert not waiting.run_requests and "30 rows" in waiting.skip_reason.skip_message
    write_drop(drops, "small-2.jsonl", 30, start=100)
    cursor = tick(instance, drops, waiting.cursor, min_new_rows=50).cursor
    released = tick(instance, drops, cursor, min_new_rows=50)
    assert sorted(r.partition_key for r in released.run_requests) == ["small-1", "small-2"]
    assert sorted(added_keys(released)) == ["small-1", "small-2"]


def test_cooldown_holds_new_drops_back():
    def digest(drop: DropListing) -> DropDigest:
        return DropDigest(sha256=f"sha-{drop.key}-{drop.size}", bytes=drop.size, rows=drop.size)

    policy = TriggerPolicy(settle_seconds=5, cooldown_seconds=600)
    a = DropListing("a", "/d/a.jsonl", 100, 1.0)
    state = WatchState()
    for now in (0, 10):
        decision = advance(state, [a], now, policy, digest, known=lambda k, s: False)
        state = decision.state
    assert [d["key"] for d in decision.release] == ["a"] and state.last_trigger == 10
    b = DropListing("b", "/d/b.jsonl", 100, 2.0)
    for now in (20, 30, 300):  # b settles at 30, then waits out the cooldown
        decision = advance(state, [a, b], now, policy, digest, known=lambda k, s: False)
        state = decision.state
        assert not decision.release
    assert any("cooldown" in n for n in decision.notes) and "b" in state.pending
    decision = advance(state, [a, b], 611, policy, digest, known=lambda k, s: False)
    assert [d["key"] for d in decision.release] == ["b"]  # a was not released twice
    # max_wait releases a lone small drop below the minimum eventually.
    waiting = TriggerPolicy(settle_seconds=0, min_new_rows=10_000, max_wait_seconds=100)
    state = WatchState()
    released = []
    for now in (0, 1, 50, 102):
        decision = advance(state, [a], now, waiting, digest, known=lambda k, s: False)
        state, released = decision.state, released + decision.release
    assert [d["key"] for d in released] == ["a"]


def test_ingested_drops_are_known_and_changed_content_is_a_new_run(tmp_path, instance):
    """A drop already ingested (by `ftops demo`, say) does not trigger; new bytes under the same name do."""
    drops = tmp_path / "drops"
    path = write_drop(drops, "d1.jsonl", 60)
    defs = Definitions(assets=[raw_records], jobs=[ingest_drop],
                       resources={"io_manager": ArtifactIOManager(),
                                  "artifact_store": ArtifactStore(root=str(tmp_path / "artifacts")),
                                  "raw_drops": RawDrops(path=str(drops), demo_if_empty=False)})
    (result,) = ingest_present_drops(defs, instance)
    assert result.success
    mat = result.asset_materializations_for_node("raw_records")[0]
    assert mat.partition == "d1" and mat.metadata["rows"].value == 60
    card = json.loads((Path(mat.metadata["path"].value) / "card.json").read_text())
    assert card["drops"]["d1"] == {"file": str(path), "bytes": path.stat().st_size,
                                   "sha256": mat.metadata["sha256"].value}
    assert ingest_present_drops(defs, instance) == []  # unchanged: nothing to ingest again
    cursor = tick(instance, drops, None).cursor
    known = tick(instance, drops, cursor)
    assert not known.run_requests and "already ingested" in known.skip_reason.skip_message
    write_drop(drops, "d1.jsonl", 80)  # same name, new content
    cursor = tick(instance, drops, known.cursor).cursor
    changed = tick(instance, drops, cursor)
    (request,) = changed.run_requests
    assert request.partition_key == "d1" and request.run_key.split(":")[1] != mat.metadata["sha256"].value[:16]
    assert not added_keys(changed)  # the partition exists already


def test_two_files_with_one_drop_id_are_refused(tmp_path, instance):
    drops = tmp_path / "drops"
    write_drop(drops, "x.jsonl", 5)
    pd.DataFrame({"question": ["How many employees are there?"], "sql": ["SELECT COUNT(*) FROM employees;"]}).to_csv(
        drops / "x.csv", index=False)
    cursor = tick(instance, drops, None).cursor
    result = tick(instance, drops, cursor)
    assert not result.run_requests and "share this drop id" in result.skip_reason.skip_message


def test_partition_keys_and_row_estimates():
    assert partition_key_for("2024-06 drop (final).jsonl.gz") == "2024-06_drop_final"
    assert partition_key_for("a.b.csv") == "a.b"
    rows = [{"question": f"q{i}", "sql": "SELECT 1;"} for i in range(7)]
    jsonl = "".join(json.dumps(r) + "\n" for r in rows).encode()
    buf = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buf)
    cases = {"a.jsonl": jsonl + b"\n\n", "a.jsonl.gz": gzip.compress(jsonl), "a.json": json.dumps(rows).encode(),
             "a.csv": pd.DataFrame(rows).to_csv(index=False).encode(), "a.parquet": buf.getvalue()}
    for name, data in cases.items():
        info = digest_stream(io.BytesIO(data), name)
        assert info.rows == 7, name
        assert info.bytes == len(data)


def test_object_store_prefix_through_fsspec(tmp_path):
    """An fsspec URL (memory:// here; s3://bucket/prefix with s3fs) lists, hashes and fetches like a folder."""
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/ftops-test-bucket/drops/remote-1.jsonl", b'{"question": "How many rows?", "sql": "SELECT 1;"}\n')
    fs.pipe("/ftops-test-bucket/drops/notes.txt", b"not a drop")
    store = RawDrops(path="memory://ftops-test-bucket/drops", cache_dir=str(tmp_path / "cache"))
    (drop,) = store.scan()
    assert drop.key == "remote-1" and drop.uri.startswith("memory://") and drop.size > 0
    local = store.fetch(drop)
    assert local.read_bytes() == fs.cat(drop.uri) and local.parent.parent == tmp_path / "cache"
    assert store.digest(drop).rows == 1
    assert store.ensure_demo_drops() == []  # never writes demo data into an object store
