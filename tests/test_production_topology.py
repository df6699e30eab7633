"""The production topology, for real on one machine: Postgres, a code server, a webserver and a daemon.

A real PostgreSQL server (tests/postgres_server.py) holds the instance, configured by deploy/dagster.yaml as
shipped; ``dagster code-server start``, ``dagster-webserver`` and ``dagster-daemon run`` are separate processes
that find each other through deploy/workspace.yaml (host and port pointed at loopback). Then:

1. the recipe's drop is ingested as ``ftops run`` does it (a raw_records partition, in this process, on the
   Postgres instance); an external client (dagster-graphql's ``DagsterGraphQLClient``) launches the demo
   recipe's job on a scratch model; the run's process is killed mid-training (after a checkpoint); the run is
   marked failed, the daemon's run retries launch a retry from the failure, training resumes from the
   checkpoint and the retry succeeds;
2. ``ftops models list`` and ``ftops lineage`` answer from the Postgres-backed instance;
3. a new drop retrains by itself: the operator starts the sensors (``dagster sensor start``), a drop lands in
   ``FTOPS_DROPS_DIR``, the daemon's drop sensor requests its ingest run, the automation sensor the retrain,
   and ``ftops models list`` / ``ftops lineage`` show a new model version built from that drop.

The sensors ship RUNNING (ft_assets/definitions.py). Here they are paused with ``dagster sensor stop`` before
the daemon starts, as an operator pauses automation while moving data in: a running automation sensor would
answer the drops ingested for step 1 with a second full retrain racing the client's run on two cores. The
stored state (in Postgres) overrides the code's default until ``dagster sensor start`` turns them on for step 3.

Run with ``-s`` to see the timings. Skips without Debian's postgresql unless FTOPS_REQUIRE_POSTGRES is set.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter

from ft_assets.automation.ingest import ingest_present_drops
from ft_assets.recipes import load_recipe, run_config
from resources import RawDrops
from tests.dagster_dev import LOCATIONS_QUERY, free_port
from tests.postgres_server import postgres_bin, postgres_server
from tests.test_daemon_e2e import good_drop

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RECIPE = "text-to-sql-demo"
# A scratch model, a short run that checkpoints early (the kill lands after one and the retry must resume, not
# restart), one small eval, one quantization method, the SFT adapter as the policy, gates a scratch model passes.
RECIPE_OVERRIDES = ["base_model.source=scratch", "training.max_steps=16", "training.save_steps=4",
                    "training.per_device_train_batch_size=4", "dpo.max_steps=2", "task.forgetting=",
                    "eval.max_examples=6", "eval.max_new_tokens=16", "quantize.methods=[bnb-int8]", "policy=sft",
                    "gates.min_exact_match_gain=0", "gates.max_runaway_rate=1",
                    "gates.quantized_exact_match_tolerance=1", "data.demo_records=200"]
# The retrain in step 3 runs with the assets' default config (automation passes no run config): the small demo
# drops above and the new drop keep its data, and so its evaluation, small.
NEW_DROP, NEW_DROP_ROWS = "fresh-001", 100
SENSORS = ("new_drops", "retrain_automation")
SENSORS_QUERY = """
query Sensors($selector: RepositorySelector!) {
  sensorsOrError(repositorySelector: $selector) {
    __typename
    ... on Sensors { results { name sensorState { status ticks(limit: 1) { status timestamp } } } }
    ... on PythonError { message }
  }
}"""

pytestmark = pytest.mark.skipif(postgres_bin() is None and not os.environ.get("FTOPS_REQUIRE_POSTGRES"),
                                reason="Debian's postgresql is not installed (make postgres)")


class Stack:
    """Three long-running Dagster processes, each in its own process group, logs under one folder."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.env, self.processes = root, env, {}

    def start(self, name: str, command: list[str]) -> None:
        with open(self.root / f"{name}.log", "wb") as log:
            self.processes[name] = subprocess.Popen(command, cwd=REPO, env=self.env, stdout=log,
                                                    stderr=subprocess.STDOUT, start_new_session=True)

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.logs()}")

    def logs(self, chars: int = 2500) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}"
                         for p in sorted(self.root.glob("*.log")))

    def stop(self) -> None:
        for process in self.processes.values():  # Ctrl+C each, then kill what is left of each group
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=10)


def wait_for(what: str, predicate, timeout: float, stack: Stack, poll: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        stack.check_alive()
        time.sleep(poll)
    raise TimeoutError(f"no {what} after {timeout:.0f}s:\n{stack.logs()}")


def location_loaded(client) -> bool:
    try:
        entries = client._execute(LOCATIONS_QUERY)["workspaceOrError"]["locationEntries"]
    except Exception:  # not answering yet
        return False
    errors = [e["locationOrLoadError"] for e in entries
              if (e["locationOrLoadError"] or {}).get("__typename") == "PythonError"]
    if errors:
        raise RuntimeError(f"code location failed to load: {errors[0]['message']}")
    return bool(entries) and all(e["loadStatus"] == "LOADED" for e in entries)


def ftops(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ftops"), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)


def dagster(env: dict[str, str], *args: str) -> str:
    """The ``dagster`` CLI as an operator runs it (against the instance and the workspace's code server)."""
    done = subprocess.run([str(BIN / "dagster"), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, f"dagster {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def sensor_states(client) -> dict[str, dict]:
    """Each sensor's status and latest tick, as the webserver (and so the UI) reports them."""
    answer = client._execute(SENSORS_QUERY, {"selector": {"repositoryLocationName": "ftops",
                                                          "repositoryName": "__repository__"}})["sensorsOrError"]
    assert answer["__typename"] == "Sensors", answer
    return {s["name"]: {"status": s["sensorState"]["status"],
                        "tick": (s["sensorState"]["ticks"] or [None])[0]} for s in answer["results"]}


def audited(env: dict[str, str], model_id: str) -> dict:
    """``ftops lineage --json`` for one model version; fails naming the audit's problems unless it verifies."""
    audit = ftops(env, "lineage", model_id, "--json")
    try:
        chain = json.loads(audit.stdout)
    except ValueError:
        raise AssertionError(f"ftops lineage {model_id}: {audit.stdout[-3000:]}{audit.stderr}") from None
    assert audit.returncode == 0 and chain["verified"] is True, (model_id, chain.get("problems"))
    return chain


def run_worker_pid(instance: DagsterInstance, run_id: str) -> int | None:
    for record in instance.all_logs(run_id):
        message = record.message or ""
        if message.startswith("Started process for run (pid: "):
            return int(message.split("pid: ")[1].rstrip(")."))
    return None


def kill_tree(pid: int) -> None:
    """SIGKILL the run worker and what it started (the training worker): a lost node, an OOM kill."""
    parent = psutil.Process(pid)
    for process in [*parent.children(recursive=True), parent]:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def test_production_topology(tmp_path, monkeypatch):
    timings = {}
    with postgres_server() as pg:
        home, dagster_home = tmp_path / "ftops_home", tmp_path / "dagster_home"
        dagster_home.mkdir(parents=True)
        shutil.copy(REPO / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")  # as shipped
        code_port, web_port = free_port(), free_port()
        workspace = yaml.safe_load((REPO / "deploy" / "workspace.yaml").read_text())
        workspace["load_from"][0]["grpc_server"].update(host="127.0.0.1", port=code_port)
        (tmp_path / "workspace.yaml").write_text(yaml.safe_dump(workspace))
        env = {**pg.env(), "DAGSTER_HOME": str(dagster_home), "FTOPS_HOME": str(home),
               "FTOPS_DEPLOYMENT": "production", "FTOPS_ARTIFACT_ROOT": str(home / "artifacts"),
               "FTOPS_DROPS_DIR": str(home / "drops"), "FTOPS_REGISTRY": str(home / "registry.sqlite"),
               "FTOPS_DVC_REPO": str(home / "dvc"), "FTOPS_DVC_REMOTE": str(home / "dvc_remote"),
               "GX_ANALYTICS_ENABLED": "false", "DAGSTER_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1"}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        full_env = {**os.environ, **env}
        # The recipe's own drops folder, outside the watched one; empty, so the demo drops are written there.
        recipe_drops = tmp_path / "recipe_drops"
        recipe_drops.mkdir()
        recipe = load_recipe(RECIPE, [*RECIPE_OVERRIDES, f"data.drops={recipe_drops}"])
        config = run_config(recipe, str(home / "drops"))

        with DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            from tests.topology_workspace import defs

            raw_drops = RawDrops(**config["resources"]["raw_drops"]["config"])
            ingested = ingest_present_drops(defs, instance, raw_drops)
            assert ingested and all(r.success for r in ingested)
            drop_keys = [d.key for d in raw_drops.scan()]

            from dagster_graphql import DagsterGraphQLClient

            stack = Stack(tmp_path, full_env)
            started = time.monotonic()
            try:
                stack.start("code-server", [str(BIN / "dagster"), "code-server", "start", "-h", "127.0.0.1",
                                            "-p", str(code_port), "-m", "tests.topology_workspace", "-d", str(REPO),
                                            "--location-name", "ftops"])
                # As compose does: webserver and daemon start once the code server answers its health check.
                wait_for("the code server's health check", lambda: subprocess.run(
                    [str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(code_port)],
                    capture_output=True, env=full_env).returncode == 0, 240, stack, 2)
                workspace_args = ["-w", str(tmp_path / "workspace.yaml")]
                stack.start("webserver", [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port),
                                          *workspace_args])
                for name in SENSORS:  # paused before the daemon's first tick (see the module docstring)
                    dagster(full_env, "sensor", "stop", name, *workspace_args)
                stack.start("daemon", [str(BIN / "dagster-daemon"), "run", *workspace_args])
                client = DagsterGraphQLClient("127.0.0.1", port_number=web_port, timeout=60)
                wait_for("the code location loaded in the webserver", lambda: location_loaded(client), 240, stack)
                timings["stack_ready_s"] = time.monotonic() - started
                assert {n: s["status"] for n, s in sensor_states(client).items()} == dict.fromkeys(SENSORS, "STOPPED")

                # 1. The recipe's job from an external client; its run worker killed mid-training.
                launched = time.time()
                run_id = client.submit_job_execution(recipe.job_name, run_config=config)
                checkpoints = home / "artifacts" / "sft_adapter" / ".work"
                wait_for("a training checkpoint", lambda: list(checkpoints.glob("*/checkpoints/checkpoint-*")),
                         420, stack, 0.5)
                pid = run_worker_pid(instance, run_id)
                assert pid is not None and psutil.pid_exists(pid)
                kill_tree(pid)
                killed = time.time()
                wait_for("the killed run marked failed", lambda: client.get_run_status(run_id)
                         == DagsterRunStatus.FAILURE, 120, stack, 0.5)
                timings["kill_to_marked_failed_s"] = time.time() - killed

                def retry():
                    runs = instance.get_runs(RunsFilter(tags={"dagster/parent_run_id": run_id}))
                    return runs[0] if runs else None

                retry_run = wait_for("a retry of the killed run", retry, 120, stack)
                assert retry_run.tags.get("dagster/retry_number") == "1"
                wait_for("the retry to finish", lambda: client.get_run_status(retry_run.run_id)
                         in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE), 600, stack, 2)
                assert client.get_run_status(retry_run.run_id) == DagsterRunStatus.SUCCESS, stack.logs()
                timings["launch_to_success_with_kill_and_retry_s"] = time.time() - launched
                adapter = instance.get_latest_materialization_event(AssetKey("sft_adapter"))
                assert adapter.run_id == retry_run.run_id
                metadata = adapter.asset_materialization.metadata
                assert metadata["resumed"].value is True  # from the checkpoint the killed run left
                assert metadata["resumed_from_step"].value > 0
                registered = instance.get_latest_materialization_event(AssetKey("registered_models"))
                assert registered is not None and registered.run_id == retry_run.run_id

                # 2. The registry and the audit trail answer from the Postgres-backed instance.
                listed = ftops(full_env, "models", "list", "--json")
                assert listed.returncode == 0, listed.stderr
                first_models = json.loads(listed.stdout)["models"]
                assert first_models and {m["run_id"] for m in first_models} == {retry_run.run_id}, listed.stdout
                newest = max(first_models, key=lambda m: m["created_at"] or "")
                chain = audited(full_env, newest["id"])
                assert chain["evaluation"]["run_id"] == retry_run.run_id
                assert all(key in json.dumps(chain["raw_drops"]) for key in drop_keys), (drop_keys, chain["raw_drops"])

                # 3. A new drop retrains by itself once the operator starts the sensors.
                sensors_started = time.time()
                dagster(full_env, "sensor", "start", "--start-all", *workspace_args)
                # The automation sensor's first evaluation is its baseline: a data version that changed before
                # it could not count as a change. Drop the file once both sensors have ticked.
                wait_for("a first tick of both sensors", lambda: all(
                    s["status"] == "RUNNING" and s["tick"] and s["tick"]["timestamp"] >= sensors_started
                    for s in sensor_states(client).values()), 120, stack)
                timings["sensors_started_to_first_ticks_s"] = time.time() - sensors_started
                (home / "drops").mkdir(parents=True, exist_ok=True)
                written = time.time()
                sha = good_drop(home / "drops" / f"{NEW_DROP}.jsonl", NEW_DROP_ROWS, seed=11)

                def ingest_run():
                    records = instance.get_run_records(RunsFilter(tags={"dagster/partition": NEW_DROP}))
                    return records[0] if records else None

                ingest = wait_for("the drop sensor's ingest run", ingest_run, 120, stack)
                assert ingest.dagster_run.tags["dagster/sensor_name"] == "new_drops"
                assert ingest.dagster_run.tags["dagster/run_key"] == f"{NEW_DROP}:{sha[:16]}"

                def new_version():
                    event = instance.get_latest_materialization_event(AssetKey("registered_models"))
                    return event if event is not None and event.run_id != retry_run.run_id else None

                registered = wait_for("a new registered model version", new_version, 1200, stack, 2)
                timings["drop_written_to_ingest_run_s"] = ingest.create_timestamp.timestamp() - written
                timings["drop_written_to_new_model_version_s"] = registered.timestamp - written
                wait_for("the retrain run to finish", lambda: client.get_run_status(registered.run_id)
                         in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE), 120, stack)
                assert client.get_run_status(registered.run_id) == DagsterRunStatus.SUCCESS, stack.logs()
                retrain = instance.get_run_by_id(registered.run_id)
                assert retrain.tags.get("dagster/sensor_name") == "retrain_automation", retrain.tags
                assert retrain.run_id != ingest.dagster_run.run_id

                listed = ftops(full_env, "models", "list", "--json")
                assert listed.returncode == 0, listed.stderr
                models = json.loads(listed.stdout)["models"]
                assert {m["id"] for m in first_models} < {m["id"] for m in models}  # kept, and more
                retrained = [m for m in models if m["run_id"] == retrain.run_id]
                assert retrained, listed.stdout
                chain = audited(full_env, retrained[0]["id"])
                assert chain["evaluation"]["run_id"] == retrain.run_id
                drops = {d["id"]: d for d in chain["raw_drops"]}
                assert drops[NEW_DROP]["sha256"] == sha, chain["raw_drops"]
                assert set(drop_keys) <= set(drops)  # trained on the earlier drops and the new one

            finally:
                stack.stop()
                print("\nproduction topology timings: " + json.dumps({k: round(v, 1) for k, v in timings.items()}))
