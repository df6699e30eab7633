"""FSDP2 through accelerate under torchrun, on 2 CPU ranks over gloo: LoRA through the asset (Pipes streaming,
checkpoints), a full fine-tune through the worker; both results load and moved; refusals say what to change."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from ft_assets.training.sft import SFTParams
from ft_assets.training.validate import TrainingConfigError, validate_sft
from resources import TrainingCompute
from resources.compute import FsdpLauncher
from tests.test_training import _write_train
from tests.test_training_asset import _latest, _materialize, instance_with_inputs  # noqa: F401


def test_lora_with_fsdp_on_two_cpu_ranks_through_the_asset(instance_with_inputs, scratch_model_dir):  # noqa: F811
    instance, tmp_path = instance_with_inputs
    compute = TrainingCompute(launcher=FsdpLauncher(processes_per_node=2, master_port=29583), num_threads=1,
                              precision="fp32", mlflow_tracking_uri="")
    started = time.perf_counter()
    result = _materialize(instance, tmp_path, compute, max_steps=4, per_device_train_batch_size=4, save_steps=2)
    elapsed = time.perf_counter() - started
    assert result.success
    mat = _latest(instance)
    assert mat.metadata["world_size"].value == 2
    fsdp = mat.metadata["summary"].value
    assert "FSDP2" in fsdp  # the trainer really sharded (accelerate's plugin, fully_shard modules), not DDP
    steps = mat.metadata["loss_history"].value
    assert [s["step"] for s in steps] == [1, 2, 3, 4]  # streamed from rank 0 through Pipes
    out = Path(mat.metadata["path"].value)
    lora_b = [w for name, w in load_file(out / "adapter_model.safetensors").items() if "lora_B" in name]
    assert lora_b and all(torch.count_nonzero(w) > 0 for w in lora_b)  # B starts at zero: every one moved
    from ft_assets.models.merge import load_trained

    assert load_trained(scratch_model_dir, out).peft_config["default"].r == 16
    print(f"\nFSDP2 LoRA, 2 CPU ranks: {elapsed:.1f}s wall, {mat.metadata['tokens_per_s'].value} tokens/s, "
          f"peak {mat.metadata['peak_memory_mb'].value} MB")


def test_full_fine_tune_with_fsdp_on_two_cpu_ranks(scratch_model_dir, tmp_path):
    train = _write_train(tmp_path / "train.jsonl", n=16)
    params = {"task": "sft", "method": "full", "base_model_dir": str(scratch_model_dir), "train_path": str(train),
              "output_dir": str(tmp_path / "out"), "max_steps": 3, "per_device_train_batch_size": 4,
              "learning_rate": 5e-3, "precision": "fp32", "num_threads": 1,
              "fsdp": FsdpLauncher().fsdp()}
    (tmp_path / "params.json").write_text(json.dumps(params))
    command = FsdpLauncher(processes_per_node=2, master_port=29584).command(sys.executable,
                                                                           str(tmp_path / "params.json"))
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=400)
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["fsdp"]["version"] == 2 and summary["fsdp"]["sharded_modules"] > 1
    assert summary["final_loss"] < summary["first_loss"]
    base = AutoModelForCausalLM.from_pretrained(scratch_model_dir)
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "out")  # one full state dict: loads like any model
    changed = [n for (n, a), (_, b) in zip(base.named_parameters(), trained.named_parameters(), strict=True)
               if not torch.equal(a, b)]
    assert len(changed) > len(list(base.parameters())) // 2
    print(f"\nFSDP2 full fine-tune, 2 CPU ranks: {elapsed:.1f}s wall, {summary['tokens_per_s']} tokens/s, "
          f"peak {summary['peak_memory_mb']} MB, {summary['fsdp']['sharded_modules']} sharded modules")


def test_fsdp_refusals_say_what_to_change(scratch_model_dir, tmp_path):
    train = _write_train(tmp_path / "train.jsonl", n=16)
    params = SFTParams(base_model_dir=str(scratch_model_dir), train_path=str(train), output_dir="", method="qlora",
                       fsdp={"sharding": "full_shard"})
    with pytest.raises(TrainingConfigError, match="use the deepspeed launcher with zero_stage 2 for QLoRA"):
        validate_sft(params)
    params.method, params.deepspeed = "lora", {"zero_optimization": {"stage": 2}}
    with pytest.raises(TrainingConfigError, match="pick one launcher"):
        validate_sft(params)
    if not torch.cuda.is_available():
        from ft_assets.training.launch import ComputeConfigError

        with pytest.raises(ComputeConfigError, match="set cpu_offload false"):
            TrainingCompute(launcher=FsdpLauncher(cpu_offload=True)).validate()
