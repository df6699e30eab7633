"""The LoRA SFT function and the worker entry point, on a tiny scratch model."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from safetensors.torch import load_file

from ft_assets.data.split import to_chat_example
from ft_assets.data.text_to_sql import generate_clean_pairs
from ft_assets.training.sft import SFTParams, train_sft


def _write_train(path, n=32):
    rows = [to_chat_example({"record_id": f"r{i}", "db_id": "company", "prompt": q, "completion": s})
            for i, (q, s) in enumerate(generate_clean_pairs(n, seed=3))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_train_sft_learns_and_streams_metrics(scratch_model_dir, tmp_path):
    train = _write_train(tmp_path / "train.jsonl")
    logged = []
    params = SFTParams(base_model_dir=str(scratch_model_dir), train_path=str(train), output_dir=str(tmp_path / "out"),
                       max_steps=6, per_device_train_batch_size=8, learning_rate=5e-3)
    summary = train_sft(params, on_log=logged.append)
    assert [r["step"] for r in logged] == list(range(1, 7))
    assert all(r["loss"] > 0 and r["tokens_per_s"] > 0 for r in logged)
    assert summary["steps"] == 6 and summary["examples"] == 32
    # Every row starts with the task's system prompt: each of the 6 training batches ran it once.
    sharing = summary["prompt_prefix"]
    assert sharing["shared_prefix"] == sharing["forward_passes"] == 6 and sharing["mean_prefix_tokens"] >= 8
    assert summary["final_loss"] < summary["first_loss"]
    weights = load_file(tmp_path / "out" / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    # LoRA B starts at zero: non-zero B means training really updated the adapter.
    assert lora_b and any(torch.count_nonzero(w) > 0 for w in lora_b)
    assert not (tmp_path / "out" / "trainer").exists()


def test_worker_runs_standalone_from_a_params_file(scratch_model_dir, tmp_path):
    train = _write_train(tmp_path / "train.jsonl", n=16)
    params = {"base_model_dir": str(scratch_model_dir), "train_path": str(train), "output_dir": str(tmp_path / "out"),
              "max_steps": 2, "per_device_train_batch_size": 4}
    (tmp_path / "params.json").write_text(json.dumps(params))
    done = subprocess.run([sys.executable, "-m", "ft_assets.training.worker", str(tmp_path / "params.json")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2
    assert (tmp_path / "out" / "adapter_config.json").exists()
