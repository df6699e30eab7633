"""The sft_adapter asset on a real Dagster instance: a SIGKILLed worker resumes, DeepSpeed ZeRO-2 on 2 CPU ranks,
metrics in metadata and MLflow, identical inputs reuse the adapter."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from dagster import AssetKey, AssetMaterialization, AssetSpec, DagsterInstance, materialize
from safetensors.torch import load_file

from ft_assets.training.assets import sft_adapter
from resources import ArtifactIOManager, ArtifactStore, TrainingCompute
from resources.compute import DeepSpeedLauncher
from tests.test_training import _write_train


@pytest.fixture()
def instance_with_inputs(scratch_model_dir, tmp_path):
    """A real instance where base_model and sft_dataset are recorded as materialized (path + version)."""
    instance = DagsterInstance.ephemeral()
    dataset = tmp_path / "sft_dataset"
    dataset.mkdir()
    _write_train(dataset / "train.jsonl", n=64)
    for name, path in (("base_model", scratch_model_dir), ("sft_dataset", dataset)):
        instance.report_runless_asset_event(AssetMaterialization(
            asset_key=name, metadata={"path": str(path), "version": f"{name}-v1"}))
    return instance, tmp_path


def _materialize(instance, tmp_path, compute: TrainingCompute, **config):
    return materialize(
        [sft_adapter, AssetSpec("base_model"), AssetSpec("sft_dataset")], instance=instance,
        resources={"artifact_store": ArtifactStore(root=str(tmp_path / "artifacts")), "training_compute": compute,
                   "io_manager": ArtifactIOManager()},
        run_config={"ops": {"sft_adapter": {"config": {"per_device_train_batch_size": 8, "learning_rate": 5e-3,
                                                       **config}}}},
        raise_on_error=False)


def _latest(instance):
    return instance.get_latest_materialization_event(AssetKey("sft_adapter")).asset_materialization


def test_killed_worker_resumes_from_its_last_checkpoint(instance_with_inputs):
    instance, tmp_path = instance_with_inputs
    compute = TrainingCompute(num_threads=1)
    config = {"max_steps": 60, "save_steps": 4}
    killed = {}
    done = threading.Event()

    def kill_after_first_checkpoint():
        while not done.is_set():
            for pid_file in (tmp_path / "artifacts" / "sft_adapter" / ".work").glob("*/checkpoints/worker.pid"):
                checkpoints = list(pid_file.parent.glob("checkpoint-*/trainer_state.json"))
                if checkpoints:
                    killed["after"] = sorted(int(p.parent.name.split("-")[1]) for p in checkpoints)
                    os.kill(int(pid_file.read_text()), signal.SIGKILL)
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_after_first_checkpoint)
    killer.start()
    started = time.perf_counter()
    first = _materialize(instance, tmp_path, compute, **config)
    done.set()
    killer.join()
    killed_s = time.perf_counter() - started
    assert killed, "the worker finished before it could be killed"
    assert not first.success
    assert instance.get_latest_materialization_event(AssetKey("sft_adapter")) is None  # nothing half-published

    second = _materialize(instance, tmp_path, compute, **config)
    assert second.success
    mat = _latest(instance)
    resumed_from = mat.metadata["resumed_from_step"].value
    assert mat.metadata["resumed"].value is True and resumed_from >= killed["after"][0]
    assert resumed_from % 4 == 0 and mat.metadata["steps"].value == 60  # same step count as an unbroken run
    card = json.loads((Path(mat.metadata["path"].value) / "card.json").read_text())
    assert card["training"]["resumed"] is True and card["training"]["resumed_from_step"] == resumed_from
    history = json.loads((Path(mat.metadata["path"].value) / "train_history.json").read_text())
    assert [h["step"] for h in history] == list(range(1, 61))
    assert not list((tmp_path / "artifacts" / "sft_adapter" / ".work").glob("*/checkpoints"))  # cleaned up
    print(f"\nresume: killed after checkpoint {killed['after'][0]} ({killed_s:.1f}s), resumed from step "
          f"{resumed_from}, {mat.metadata['train_seconds'].value}s to finish")

    # Metrics people look at: a loss-curve plot, a summary table, the config hash, seed, library versions, MLflow.
    metadata = mat.metadata
    assert metadata["loss_curve"].value.startswith("![loss curve](data:image/png;base64,")
    assert "| tokens per s |" in metadata["summary"].value and "| resumed from step |" in metadata["summary"].value
    assert len(metadata["config_hash"].value) == 16 and metadata["seed"].value == 0
    assert metadata["library_versions"].value["trl"] and metadata["library_versions"].value["peft"]
    # Every batch starts with the system prompt: each step the resumed worker ran shared it, and says so.
    sharing = metadata["prompt_prefix"].value
    assert sharing["shared_prefix"] == sharing["forward_passes"] == 60 - resumed_from
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=metadata["mlflow_tracking_uri"].value)
    losses = client.get_metric_history(metadata["mlflow_run_id"].value, "loss")
    assert sorted(m.step for m in losses) == list(range(1, 61))  # both attempts, one MLflow run
    assert metadata["mlflow_run"].value.endswith(metadata["mlflow_run_id"].value)

    # Same inputs, config and training code: the adapter is reused, nothing retrains.
    third = _materialize(instance, tmp_path, compute, **config)
    assert third.success
    again = _latest(instance)
    assert again.metadata["reused"].value is True and again.metadata["version"].value == mat.metadata["version"].value


def test_deepspeed_zero2_on_two_cpu_ranks(instance_with_inputs, scratch_model_dir):
    instance, tmp_path = instance_with_inputs
    compute = TrainingCompute(launcher=DeepSpeedLauncher(processes_per_node=2, zero_stage=2, master_port=29561),
                              num_threads=1)
    started = time.perf_counter()
    result = _materialize(instance, tmp_path, compute, max_steps=4, per_device_train_batch_size=4)
    elapsed = time.perf_counter() - started
    assert result.success
    mat = _latest(instance)
    assert mat.metadata["world_size"].value == 2 and mat.metadata["deepspeed_zero_stage"].value == 2
    out = Path(mat.metadata["path"].value)
    weights = load_file(out / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and all(torch.count_nonzero(w) > 0 for w in lora_b)  # B starts at zero: every one moved

    from ft_assets.models.merge import load_trained

    model = load_trained(scratch_model_dir, out)
    assert model.peft_config["default"].r == 16
    print(f"\ndeepspeed ZeRO-2, 2 CPU ranks: {elapsed:.1f}s wall, {mat.metadata['tokens_per_s'].value} tokens/s")
