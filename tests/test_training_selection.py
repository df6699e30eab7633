"""Eval during training: eval loss streamed every N steps, the best checkpoint kept (not the last), patience stops
the run, the card says which step and why, and a resumed run keeps the same choice."""

from __future__ import annotations

import json
import shutil

import torch
from safetensors.torch import load_file

from ft_assets.training.selection import evaluations_since_best
from ft_assets.training.sft import SFTParams, train_sft
from tests.test_training import _write_train


def _write_unlearned_eval(path, n=16):
    """Held-out rows whose replies are prose unlike the SQL the model trains on: their loss rises with training, so
    the best evaluation is an early one."""
    rows = [{"prompt": [{"role": "user", "content": f"question {i}"}],
             "completion": [{"role": "assistant", "content": "the quick brown fox jumps over the lazy dog " * 2}]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _params(scratch_model_dir, tmp_path, out: str, **overrides) -> SFTParams:
    settings = {"max_steps": 16, "per_device_train_batch_size": 8, "learning_rate": 1e-2, "eval_steps": 2,
                "early_stopping_patience": 2, "checkpoint_dir": str(tmp_path / "ckpt"), "save_steps": 2,
                "precision": "fp32", **overrides}
    return SFTParams(base_model_dir=str(scratch_model_dir), train_path=str(tmp_path / "train.jsonl"),
                     eval_path=str(tmp_path / "eval.jsonl"), output_dir=str(tmp_path / out), **settings)


def test_best_checkpoint_is_kept_and_patience_stops_the_run(scratch_model_dir, tmp_path):
    _write_train(tmp_path / "train.jsonl", n=32)
    _write_unlearned_eval(tmp_path / "eval.jsonl")
    logged: list[dict] = []
    summary = train_sft(_params(scratch_model_dir, tmp_path, "out"), on_log=logged.append)
    evals = [r for r in logged if "eval_loss" in r]
    assert [e["step"] for e in evals] == list(range(2, summary["steps"] + 1, 2))  # streamed with the training loss
    kept = summary["kept"]
    assert kept["keep"] == "best" and kept["step"] == kept["best_step"] < summary["steps"]
    assert kept["eval_loss"] == min(e["eval_loss"] for e in evals)
    assert kept["early_stopped"] and summary["steps"] < 16 and "stopped early" in kept["reason"]
    assert "best eval loss" in kept["reason"]
    # The saved adapter is the kept checkpoint's, not the last step's.
    saved = load_file(tmp_path / "out" / "adapter_model.safetensors")
    best = load_file(tmp_path / "ckpt" / f"checkpoint-{kept['step']}" / "adapter_model.safetensors")
    last = load_file(tmp_path / "ckpt" / f"checkpoint-{summary['steps']}" / "adapter_model.safetensors")
    assert all(torch.equal(saved[k], best[k]) for k in best)
    assert not all(torch.equal(saved[k], last[k]) for k in last)
    history = json.loads((tmp_path / "out" / "eval_history.json").read_text())
    assert [h["step"] for h in history] == [e["step"] for e in evals]

    # Resume after a crash between the last two checkpoints: same selection, same end.
    shutil.rmtree(tmp_path / "ckpt" / f"checkpoint-{summary['steps']}")
    resumed = train_sft(_params(scratch_model_dir, tmp_path, "out2"))
    assert resumed["resumed"] and resumed["kept"]["step"] == kept["step"]
    assert [h["step"] for h in json.loads((tmp_path / "out2" / "eval_history.json").read_text())] == \
        [e["step"] for e in evals]


def test_keep_last_keeps_the_last_step(scratch_model_dir, tmp_path):
    _write_train(tmp_path / "train.jsonl", n=32)
    _write_unlearned_eval(tmp_path / "eval.jsonl")
    summary = train_sft(_params(scratch_model_dir, tmp_path, "out", keep="last", early_stopping_patience=0,
                                max_steps=4, checkpoint_dir=""))
    assert summary["steps"] == 4 and summary["kept"]["step"] == 4 and summary["kept"]["reason"] == \
        "last step (keep=last)"


def test_patience_counts_evaluations_since_the_best():
    log = [{"loss": 3.0}, {"eval_loss": 2.0}, {"eval_loss": 1.5}, {"eval_loss": 1.7}, {"eval_loss": 1.6}]
    assert evaluations_since_best(log) == 2
    assert evaluations_since_best(log[:3]) == 0 and evaluations_since_best([]) == 0
