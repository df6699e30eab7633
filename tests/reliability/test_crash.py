"""Crash at a stage: the process running the materialization is SIGKILLed while the stage is writing (its staging
directory exists, or it holds the DVC repository's lock): ingest, clean, the DVC push, and on a scratch model's
graph merge, quantize and eval. Afterwards no artifact directory looks complete that is not, every LATEST pointer
names a whole version, the registry has no row or alias pointing at a missing version, the DVC repository is not
left locked, and the next materialization succeeds and reads the upstream versions Dagster recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus
from filelock import FileLock, Timeout

from ft_assets.data.text_to_sql import write_demo_drops
from ft_assets.lineage.artifacts import CARD_NAME, LATEST_NAME, VERSION_CHARS, content_hash
from ft_assets.lineage.registry import Registry
from tests.reliability.conftest import SMALL_CONFIG, dagster_home
from tests.test_pipeline import run_graph

REPO = Path(__file__).resolve().parents[2]
# The child: the same graph and resources as everywhere (build_defs(build_resources(root)), the lenient model gates
# of the scratch-model tests), on a persistent instance, materializing ``STAGES`` (comma-separated; ingest = every
# drop's raw_records partition) with a small scratch-model run config.
CHILD = textwrap.dedent("""
    import json, sys
    from dagster import AssetKey, DagsterInstance
    from ft_assets.automation.ingest import ingest_present_drops
    from ft_assets.definitions import build_defs
    from resources.factory import build_resources
    from tests.test_pipeline import LENIENT_GATES
    root, stages, ops = sys.argv[1], sys.argv[2].split(","), json.loads(sys.argv[3])
    defs = build_defs(build_resources(root, model_gates=LENIENT_GATES))
    instance = DagsterInstance.get()
    if stages == ["ingest"]:
        ok = all(r.success for r in ingest_present_drops(defs, instance))
    else:
        ok = defs.resolve_job_def("end_to_end").execute_in_process(
            instance=instance, asset_selection=[AssetKey(s) for s in stages], raise_on_error=False,
            run_config={"ops": {k: v for k, v in ops.items() if k in stages}}).success
    sys.exit(0 if ok else 1)
""")


# The scratch model's graph, kept short: the SFT adapter is the policy (no ranking), one quantization method.
MODEL_OPS = {**SMALL_CONFIG["ops"], "policy": {"config": {"policy": "sft"}},
             "quantized_model": {"config": {"methods": ["bnb-int8"]}}}


def _child(root: Path, stage: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(root), stage, json.dumps(MODEL_OPS)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _run_to_end(root: Path, stage: str, env: dict) -> None:
    child = _child(root, stage, env)
    out, _ = child.communicate(timeout=300)
    assert child.returncode == 0, out.decode()[-4000:]


def _kill_when(child: subprocess.Popen, condition, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            pytest.fail(f"the run ended (rc {child.returncode}) before {what}: "
                        f"{child.stdout.read().decode()[-3000:]}")
        if condition():
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            return
        time.sleep(0.005)
    child.kill()
    pytest.fail(f"no {what} within {timeout:.0f}s")


def _staging(asset_dir: Path):
    """True once a staging directory appears that was not there before (an earlier killed run's may remain)."""
    before = set(asset_dir.glob(".staging-*"))
    return lambda: bool(set(asset_dir.glob(".staging-*")) - before)


def _dvc_locked(repo_dir: Path):
    def held() -> bool:
        try:
            with FileLock(str(repo_dir) + ".lock", timeout=0):
                return False
        except Timeout:
            return True
    return held


def assert_store_consistent(artifacts: Path) -> None:
    """Every visible version directory is whole (its name is its content hash, its card is there); every LATEST
    pointer names one of them."""
    for asset_dir in (p for p in artifacts.iterdir() if p.is_dir()):
        for version in (p for p in asset_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            assert (version / CARD_NAME).is_file(), f"{version} has no card: it looks published but is not whole"
            assert content_hash(version)[:VERSION_CHARS] == version.name, f"{version} content differs from its name"
        pointer = asset_dir / LATEST_NAME
        if pointer.exists():
            assert (asset_dir / pointer.read_text().strip() / CARD_NAME).is_file(), f"{pointer} names no version"


def assert_registry_consistent(path: Path) -> None:
    """Every registered model version's artifact is whole and every alias names a registered version."""
    if not path.exists():
        return
    with Registry(path) as registry:
        versions = {v.id: v for v in registry.versions()}
        for v in versions.values():
            here = Path(v.path)
            assert here.exists(), f"registry row {v.id} points at a missing artifact {here}"
            version_dir = next((d for d in (here, *here.parents) if d.name == v.version), None)
            assert version_dir is not None and (version_dir / CARD_NAME).is_file(), f"{v.id}: {here} is not whole"
        for alias, model in registry.aliases().items():
            assert model in versions, f"alias {alias} names {model}, which is not registered"


def _flat_versions(value) -> list[str]:
    return [v for x in value.values() for v in (_flat_versions(x) if isinstance(x, dict) else [x])]


@pytest.mark.parametrize("stage, upstream, watch", [
    ("ingest", None, "staging"),
    ("clean_records", "ingest", "staging"),
    ("clean_records", "ingest", "dvc"),
])
def test_sigkill_during_stage_leaves_nothing_half_done(tmp_path, stage, upstream, watch):
    root = tmp_path / "ftops"
    write_demo_drops(root / "drops", n_records=3000, n_drops=2)
    home = dagster_home(tmp_path / "dagster_home")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    if upstream:
        _run_to_end(root, upstream, env)
    asset = "raw_records" if stage == "ingest" else stage
    child = _child(root, stage, env)
    condition = _dvc_locked(root / "dvc") if watch == "dvc" else _staging(root / "artifacts" / asset)
    _kill_when(child, condition, f"{asset} {'holding the DVC lock' if watch == 'dvc' else 'staging'}")

    assert_store_consistent(root / "artifacts")
    with DagsterInstance.from_config(str(home)) as instance:
        stuck = instance.get_runs()[0]
        # Dead in process: nothing of it may claim success; run monitoring (dagster.yaml) fails launched runs.
        assert stuck.status != DagsterRunStatus.SUCCESS
        assert instance.run_monitoring_enabled
    assert not _dvc_locked(root / "dvc")(), "the DVC repository is still locked after the kill"

    _run_to_end(root, stage, env)  # the next materialization succeeds
    assert_store_consistent(root / "artifacts")
    with DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(AssetKey(asset))
        meta = event.asset_materialization.metadata
        assert (Path(meta["path"].value) / CARD_NAME).is_file()
        if upstream == "ingest":  # it read the raw_records versions the ingest run recorded, not others
            recorded = {k: v for k, v in meta["input_versions"].value.items()}
            assert recorded and all((root / "artifacts" / "raw_records" / v / CARD_NAME).is_file()
                                    for v in _flat_versions(recorded))


MODEL_CHAIN = ["merged_model", "quantized_model", "eval_report"]
REGISTRY_STAGES = ["model_cards", "registered_models"]


@pytest.fixture(scope="module")
def scratch_graph(tmp_path_factory) -> tuple[Path, Path]:
    """A scratch model's graph up to its policy, materialized once on a persistent instance; the crash cases build
    merge, quantize, eval and the registry on it, in that order."""
    tmp = tmp_path_factory.mktemp("crash_graph")
    home = dagster_home(tmp / "dagster_home")
    upstream = ["raw_records", "clean_records", "deduped_records", "sft_dataset", "preference_dataset",
                "base_model", "sft_adapter", "dpo_adapter", "grpo_adapter", "policy"]
    with DagsterInstance.from_config(str(home)) as instance:
        result, _ = run_graph(tmp / "ftops", {"ops": MODEL_OPS}, n_records=200, instance=instance,
                              asset_selection=[AssetKey(a) for a in upstream])
        assert result.success
    return tmp / "ftops", home


def _latest(home: Path, asset: str) -> str | None:
    """The run that recorded the asset's latest materialization."""
    with DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(AssetKey(asset))
    return event and event.run_id


@pytest.mark.parametrize("stage", MODEL_CHAIN)
def test_sigkill_during_model_stage_leaves_nothing_half_done(scratch_graph, stage):
    root, home = scratch_graph
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    # The stage after whatever of its upstream in the chain is not there yet (when a case runs alone).
    missing = [a for a in MODEL_CHAIN[:MODEL_CHAIN.index(stage)] if _latest(home, a) is None]
    before = _latest(home, stage)
    child = _child(root, ",".join([*missing, stage]), env)
    _kill_when(child, _staging(root / "artifacts" / stage), f"{stage} staging")

    assert_store_consistent(root / "artifacts")
    assert_registry_consistent(root / "registry.sqlite")
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_runs(limit=1)[0].status != DagsterRunStatus.SUCCESS
    assert _latest(home, stage) == before, "a killed, unpublished stage was recorded as materialized"

    # The next materialization succeeds; after eval, the registry takes the evaluated versions.
    _run_to_end(root, ",".join([stage, *(REGISTRY_STAGES if stage == "eval_report" else [])]), env)
    assert_store_consistent(root / "artifacts")
    assert_registry_consistent(root / "registry.sqlite")
    with DagsterInstance.from_config(str(home)) as instance:
        meta = instance.get_latest_materialization_event(AssetKey(stage)).asset_materialization.metadata
        assert (Path(meta["path"].value) / CARD_NAME).is_file()
        # It read the upstream versions Dagster recorded, each one whole.
        for name, version in meta["input_versions"].value.items():
            recorded = instance.get_latest_materialization_event(AssetKey(name)).asset_materialization.metadata
            assert recorded["version"].value == version, f"{stage} read {name} {version}, not the recorded one"
            assert (root / "artifacts" / name / version / CARD_NAME).is_file(), f"{name} {version} is not whole"
    if stage == "eval_report":
        with Registry(root / "registry.sqlite") as registry:
            assert registry.versions(), "nothing was registered after the eval rerun"


def test_reuse_index_entry_torn_by_a_kill_reads_as_absent(tmp_path):
    """The reuse index (config hash -> version) is written by rename, and an entry torn by a kill mid-write (as the
    plain write it replaced could leave) reads as "not trained yet" instead of failing the next run."""
    from resources import ArtifactStore

    store = ArtifactStore(root=str(tmp_path))
    with store.stage("sft_adapter") as staging:
        (staging / "weights").write_text("w")
        artifact = store.publish(staging, {"config": {}})
    store.remember("sft_adapter", "k1", artifact)
    assert store.lookup("sft_adapter", "k1").version == artifact.version
    assert [p.name for p in (tmp_path / "sft_adapter" / ".keys").iterdir()] == ["k1"]  # no temporary left
    (tmp_path / "sft_adapter" / ".keys" / "k1").write_text('{"version": "' + artifact.version[:3])
    assert store.lookup("sft_adapter", "k1") is None
