"""Retrain on new data by itself: ``dagster dev`` (webserver + daemon), a new drop, a new model version.

The real thing end to end: the drop sensor registers the drop as a raw_records partition and requests its
ingest run, the automation sensor cascades to a new merged model and eval report, and a drop that fails a
gate produces no new model version. A tiny scratch base model (materialized before the server starts, so
the automation finds it) keeps training to seconds. Run with ``-s`` to see the timings.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from dagster import AssetCheckKey, AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter, materialize

from ft_assets.cli import DAGSTER_YAML
from ft_assets.data.text_to_sql import generate_clean_pairs
from ft_assets.models.assets import base_model
from resources import ArtifactIOManager, ArtifactStore
from tests.dagster_dev import dagster_dev

ACTIVE = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


def wait_for(what: str, predicate, timeout: float, dev, poll: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if dev.process.poll() is not None:
            raise RuntimeError(f"dagster dev exited while waiting for {what}:\n{dev.log_tail()}")
        time.sleep(poll)
    raise TimeoutError(f"no {what} after {timeout:.0f}s:\n{dev.log_tail(6000)}")


def latest(instance: DagsterInstance, name: str):
    event = instance.get_latest_materialization_event(AssetKey(name))
    return None if event is None else event


def drops_in_lineage(path: Path) -> dict[str, dict]:
    """Every ``drops`` entry reachable from an artifact's card through its inputs' cards."""
    found, todo, seen = {}, [path], set()
    while todo:
        current = todo.pop()
        if current in seen or not (current / "card.json").is_file():
            continue
        seen.add(current)
        card = json.loads((current / "card.json").read_text())
        found.update(card.get("drops") or {})
        todo += [Path(i["path"]) for i in (card.get("inputs") or {}).values()]
    return found


def good_drop(path: Path, n: int, seed: int) -> str:
    text = "".join(json.dumps({"question": q, "sql": s}) + "\n" for q, s in generate_clean_pairs(n, seed=seed))
    path.write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


def gate_failing_drop(path: Path, n: int) -> None:
    """Chat rows with two user turns in a row: they pass cleaning and dedup, and fail the sft_dataset gate."""
    rows = [{"messages": [{"role": "user", "content": f"List employees hired in year {1990 + i}"},
                          {"role": "user", "content": "Answer with SQL only, please"},
                          {"role": "assistant", "content": f"SELECT name FROM employees WHERE hired = {1990 + i};"}]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_new_drop_retrains_by_itself_and_a_bad_drop_does_not(tmp_path):
    home = tmp_path / "ftops_home"
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        assert materialize([base_model], instance=instance,
                           resources={"io_manager": ArtifactIOManager(),
                                      "artifact_store": ArtifactStore(root=str(home / "artifacts"))},
                           run_config={"ops": {"base_model": {"config": {"source": "scratch"}}}}).success
    drops = home / "drops"
    drops.mkdir()
    started = time.monotonic()
    with dagster_dev(tmp_path, target=("-m", "tests.daemon_workspace")) as dev, dev.instance() as instance:
        ready = time.monotonic()
        written = time.time()
        sha = good_drop(drops / "fresh-001.jsonl", 200, seed=11)

        def ingest_run():
            records = instance.get_run_records(RunsFilter(tags={"dagster/partition": "fresh-001"}))
            return records[-1] if records else None

        ingest = wait_for("ingest run for the new drop", ingest_run, 90, dev)
        assert ingest.dagster_run.tags["dagster/run_key"] == f"fresh-001:{sha[:16]}"
        raw = wait_for("raw_records[fresh-001]", lambda: latest(instance, "raw_records"), 120, dev)
        merged = wait_for("merged_model", lambda: latest(instance, "merged_model"), 420, dev, poll=2)
        report = wait_for("eval_report", lambda: latest(instance, "eval_report"), 240, dev, poll=2)
        timings = {
            "dagster_dev_ready_s": ready - started,
            "drop_written_to_run_requested_s": ingest.create_timestamp.timestamp() - written,
            "drop_written_to_raw_ingested_s": raw.timestamp - written,
            "drop_written_to_merged_model_s": merged.timestamp - written,
            "drop_written_to_eval_report_s": report.timestamp - written,
        }
        # The new model version's lineage names the drop and its content hash.
        lineage = drops_in_lineage(Path(report.asset_materialization.metadata["path"].value))
        assert lineage["fresh-001"]["sha256"] == sha
        assert merged.run_id == report.run_id  # one run from clean_records to the eval report
        assert len({r.dagster_run.run_id for r in instance.get_run_records(RunsFilter(tags={
            "dagster/partition": "fresh-001"}))}) == 1  # the drop triggered once

        # A drop that fails a gate: its data flows to the gate and stops there.
        bad_written = time.time()
        gate_failing_drop(drops / "bad-002.jsonl", 80)
        gate = AssetCheckKey(AssetKey("sft_dataset"), "sft_dataset_gate")

        def gate_failed():
            history = instance.event_log_storage.get_asset_check_execution_history(gate, limit=1)
            return history and history[0].create_timestamp > bad_written and history[0].event is not None \
                and history[0].event.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION" \
                and not history[0].event.dagster_event.event_specific_data.passed
        wait_for("a failing sft_dataset_gate after the bad drop", gate_failed, 300, dev, poll=2)
        timings["bad_drop_written_to_gate_failed_s"] = time.time() - bad_written
        wait_for("all runs to finish", lambda: not instance.get_runs(RunsFilter(statuses=ACTIVE)), 120, dev)
        time.sleep(4 * 3)  # a few more sensor ticks: nothing else may start
        assert not instance.get_runs(RunsFilter(statuses=ACTIVE))
        for name, before in (("merged_model", merged), ("eval_report", report)):
            now = latest(instance, name)
            assert (now.run_id, now.timestamp) == (before.run_id, before.timestamp), f"{name} moved past a gate"
        assert "bad-002" in drops_in_lineage(Path(latest(instance, "sft_dataset").asset_materialization
                                                  .metadata["path"].value))
    print("\ndaemon e2e timings: " + json.dumps({k: round(v, 1) for k, v in timings.items()}))
