"""Eval during training and which weights are kept: the best checkpoint by eval loss (or the last), early stopping
by patience, and the record of what was kept and why. Plain functions over transformers' trainer state, no Dagster.

The trainer state (``log_history``, ``best_model_checkpoint``) is saved in every checkpoint, so a resumed run
continues the same selection and the same patience count.
"""

from __future__ import annotations

from ft_assets.training.core import checkpoint_step


def selection_arguments(eval_steps: int, keep: str) -> dict:
    """TrainingArguments overrides: evaluate every ``eval_steps``; for ``keep="best"`` also save at each
    evaluation and load the best (lowest eval loss) checkpoint when training ends. ``{}`` without evaluation."""
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', not {keep!r}")
    if not eval_steps:
        return {}
    args: dict = {"eval_strategy": "steps", "eval_steps": eval_steps}
    if keep == "best":
        # Every evaluated step must have weights to go back to: save exactly at the evaluations.
        args.update(save_strategy="steps", save_steps=eval_steps, load_best_model_at_end=True,
                    metric_for_best_model="eval_loss", greater_is_better=False)
    return args


def evaluations_since_best(log_history: list[dict]) -> int:
    """How many evaluations came after the one with the lowest eval loss (0: the latest is the best)."""
    losses = [e["eval_loss"] for e in log_history if "eval_loss" in e]
    if not losses:
        return 0
    best = min(range(len(losses)), key=losses.__getitem__)  # the first of equal losses
    return len(losses) - 1 - best


def selection_callbacks(patience: int) -> list:
    """``[PatienceStop]`` ending training after ``patience`` evaluations without a lower eval loss; ``[]`` for 0.
    Counted from the trainer state's log, so it works for ``keep="last"`` too and survives a resume."""
    if patience <= 0:
        return []
    from transformers import TrainerCallback

    class PatienceStop(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if evaluations_since_best(state.log_history) >= patience:
                control.should_training_stop = True

    return [PatienceStop()]


def kept_checkpoint(trainer, keep: str, evaluating: bool, patience: int = 0) -> dict:
    """Which step's weights were saved, and why: for the summary and the model card."""
    state = trainer.state
    evals = [(e["step"], float(e["eval_loss"])) for e in state.log_history if "eval_loss" in e]
    record: dict = {"step": int(state.global_step), "keep": keep if evaluating else "last", "evaluations": len(evals),
                    "early_stopped": bool(evaluating and state.global_step < trainer.args.max_steps)}
    if not evaluating:
        return {**record, "reason": "last step (no evaluation during training)"}
    best_step, best_loss = min(evals, key=lambda e: e[1]) if evals else (None, None)
    record.update(best_step=best_step, best_eval_loss=best_loss)
    if keep == "best" and state.best_model_checkpoint:
        record["step"] = checkpoint_step(state.best_model_checkpoint)
        record["eval_loss"] = float(state.best_metric)
        reason = f"best eval loss {state.best_metric:.4f} of {len(evals)} evaluations (keep=best)"
    else:
        last = [loss for step, loss in evals if step == state.global_step]
        record["eval_loss"] = last[0] if last else None
        reason = "last step (keep=last)" if keep == "last" else "last step (no evaluation reached a checkpoint)"
    if record["early_stopped"]:
        reason += (f"; stopped early at step {state.global_step} of {trainer.args.max_steps}: {patience} "
                   "evaluations without a lower eval loss")
    return {**record, "reason": reason}
