"""GPU paths: run whenever CUDA is present (bf16 picked automatically, QLoRA on CUDA bitsandbytes kernels,
DeepSpeed over NCCL, bench/gpu_train.py); skipped with a reason on CPU-only machines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_training import _write_train

REPO = Path(__file__).resolve().parent.parent
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; none on this machine")


def test_gpu_bench_architectures_are_about_half_a_billion_parameters():
    """Runs everywhere: the bench's model shapes are real architectures at ~0.5B (built on the meta device)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    sys.path.insert(0, str(REPO / "bench"))
    from gpu_train import ARCHS, peak_tflops

    for spec in ARCHS.values():
        spec = dict(spec)
        config = AutoConfig.for_model(spec.pop("model_type"), **spec)
        with torch.device("meta"):
            parameters = AutoModelForCausalLM.from_config(config).num_parameters()
        assert 0.4e9 < parameters < 0.6e9
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0 and peak_tflops("mystery accelerator") is None


@needs_cuda
def test_precision_picks_bf16_on_a_gpu_that_has_it():
    from ft_assets.training.sft import resolve_precision

    assert resolve_precision("auto") == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")


@needs_cuda
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_train_on_gpu_under_deepspeed(scratch_model_dir, tmp_path, method):
    from ft_assets.training.launch import deepspeed_config, launch_command

    train = _write_train(tmp_path / "train.jsonl", n=32)
    params = {"method": method, "base_model_dir": str(scratch_model_dir), "train_path": str(train),
              "output_dir": str(tmp_path / "out"), "max_steps": 3, "per_device_train_batch_size": 8,
              "precision": "auto", "deepspeed": deepspeed_config(2)}
    (tmp_path / "p.json").write_text(json.dumps(params))
    done = subprocess.run(launch_command("deepspeed", sys.executable, str(tmp_path / "p.json"), master_port=29630),
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads([line for line in done.stdout.splitlines() if line.startswith('{"method"')][-1])
    assert summary["steps"] == 3 and summary["deepspeed_zero_stage"] == 2 and summary["peak_memory_mb"] > 0
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()


@needs_cuda
def test_gpu_bench_runs(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_train.py"), "--steps", "3", "--batch", "2"],
                          capture_output=True, text=True, cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["results"]["lora"]["tokens_per_s"] > 0 and result["results"]["qlora"]["peak_memory_mb"] > 0
