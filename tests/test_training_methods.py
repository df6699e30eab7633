"""LoRA, QLoRA, DoRA and full fine-tuning for real on the scratch model; packing and gradient checkpointing."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from ft_assets.models.merge import is_full_model, load_trained, merge_adapter
from ft_assets.training.sft import SFTParams, resolve_precision, train_sft
from tests.test_training import _write_train

LINEAR = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def _train(scratch_model_dir, tmp_path, **overrides) -> tuple[dict, list[dict]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    train = _write_train(tmp_path / "train.jsonl", n=32)
    logged: list[dict] = []
    settings = {"max_steps": 4, "per_device_train_batch_size": 8, "learning_rate": 5e-3, **overrides}
    params = SFTParams(base_model_dir=str(scratch_model_dir), train_path=str(train), output_dir=str(tmp_path / "out"),
                       **settings)
    return train_sft(params, on_log=logged.append), logged


@pytest.mark.parametrize("method", ["lora", "dora", "qlora"])
def test_adapter_methods_train_every_linear_layer(scratch_model_dir, tmp_path, method):
    summary, logged = _train(scratch_model_dir, tmp_path, method=method)
    out = tmp_path / "out"
    adapter = json.loads((out / "adapter_config.json").read_text())
    # "all-linear": every projection of every layer, not the output head
    assert {name.rsplit(".", 1)[-1] for name in adapter["target_modules"]} == LINEAR
    assert len(adapter["target_modules"]) == 2 * len(LINEAR)  # two layers
    assert adapter["use_dora"] is (method == "dora")
    weights = load_file(out / "adapter_model.safetensors")
    assert any("lora_B" in k and torch.count_nonzero(w) > 0 for k, w in weights.items())
    if method == "dora":
        assert any("lora_magnitude_vector" in k for k in weights)
    assert summary["method"] == method and summary["steps"] == 4
    assert summary["precision"] == resolve_precision("auto")  # bf16 only where the CPU/GPU has it natively
    assert summary["label_mask"]["examples_checked"] == 32 and 0 < summary["label_mask"]["mean_trained_share"] < 1
    assert all(r["peak_memory_mb"] > 0 and r["tokens_per_s"] > 0 for r in logged)
    # The adapter trained on a 4-bit base merges into the full-precision base like any other.
    merged = merge_adapter(scratch_model_dir, out, tmp_path / "merged")
    assert merged["parameters"] > 0 and (tmp_path / "merged" / "model.safetensors").exists()


def test_full_fine_tune_saves_a_whole_model_that_differs_from_the_base(scratch_model_dir, tmp_path):
    summary, _ = _train(scratch_model_dir, tmp_path, method="full")
    out = tmp_path / "out"
    assert is_full_model(out) and (out / "model.safetensors").exists()
    base = AutoModelForCausalLM.from_pretrained(scratch_model_dir)
    trained = load_trained(scratch_model_dir, out)
    assert summary["trainable_parameters"] == sum(p.numel() for p in base.parameters())
    changed = [n for (n, a), (_, b) in zip(base.named_parameters(), trained.named_parameters(), strict=True)
               if not torch.equal(a, b)]
    assert len(changed) > len(list(base.parameters())) // 2


def test_packing_and_gradient_checkpointing_train(scratch_model_dir, tmp_path):
    summary, logged = _train(scratch_model_dir, tmp_path, packing=True, gradient_checkpointing=True)
    assert summary["steps"] == 4 and summary["label_mask"]["examples_checked"] == 32
    # Packed rows hold several examples each: more tokens per step than the padded, unpacked batches.
    unpacked, _ = _train(scratch_model_dir, tmp_path / "plain")
    assert summary["train_tokens"] > unpacked["train_tokens"]


def test_resume_continues_from_the_last_checkpoint(scratch_model_dir, tmp_path):
    """The in-process half of resume: a checkpoint left by an earlier attempt is picked up, to the same end step."""
    first, _ = _train(scratch_model_dir, tmp_path / "a", checkpoint_dir=str(tmp_path / "ckpt"), save_steps=2,
                      max_steps=4)
    assert first["resumed"] is False
    checkpoints = sorted(p.name for p in (tmp_path / "ckpt").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2", "checkpoint-4"]
    # Drop the last checkpoint, as if the worker died between step 2 and step 4.
    import shutil

    shutil.rmtree(tmp_path / "ckpt" / "checkpoint-4")
    second, logged = _train(scratch_model_dir, tmp_path / "b", checkpoint_dir=str(tmp_path / "ckpt"), save_steps=2,
                            max_steps=4)
    assert second["resumed"] is True and second["resumed_from_step"] == 2 and second["steps"] == 4
    assert [r["step"] for r in logged] == [3, 4]
    history = json.loads((tmp_path / "b" / "out" / "train_history.json").read_text())
    assert [h["step"] for h in history] == [1, 2, 3, 4]  # the curve covers both attempts
