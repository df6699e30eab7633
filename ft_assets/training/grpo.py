"""RL with a verifiable reward: trl's GRPOTrainer on top of the SFT adapter, the task's own scorer as the reward.
A plain function, no Dagster; runs inside the worker process (``worker.py`` maps ``task="grpo"`` here).

The reward is one metric of the task (``reward_metric``; empty: its primary metric), scored by the same scorer
``eval_report`` uses (``ft_assets.evaluation.scorers``): the numeric answer for math, SQL execution match on the
task's prepared database for text-to-SQL, or a user's ``package.module:function``. Each completion's reward is
that scorer's per-example value against the row's reference (the last reply of an ``sft_dataset`` row), so what
RL optimises is exactly what evaluation measures. Every scored rollout is kept in ``rollouts.jsonl`` beside the
adapter, so anyone can re-score them.

The policy starts as the SFT adapter, loaded trainable on the base (as ``dpo.py`` does). With ``beta > 0`` trl
copies it into a frozen ``ref`` adapter and the KL term pulls towards the SFT policy; only the trained adapter is
saved, in the SFT adapter's shape, so merging, evaluation and the policy choice take it like the others.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ft_assets.training import core
from ft_assets.training.core import TrainingConfigError, setting

# GRPO's own per-step metrics streamed with the loss (trl 1.16's names).
GRPO_METRICS = ("reward", "reward_std", "kl", "entropy", "frac_reward_zero_std", "completions/mean_length",
                "completions/clipped_ratio", "clip_ratio/region_mean")
LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo", "cispo", "sapo")
SCALE_REWARDS = ("group", "batch", "none")
ROLLOUTS_FILE = "rollouts.jsonl"


@dataclass(kw_only=True)
class GRPOSettings:
    """The GRPO recipe's settings, declared once: ``grpo_adapter``'s config is derived from these fields. The
    defaults run a short demo pass (4 steps of 2 prompts x 4 sampled completions)."""

    max_steps: int = 4
    per_device_train_batch_size: int = setting(8, "completions per device per step (prompts x num_generations)")
    num_generations: int = setting(4, "completions sampled per prompt; their rewards are compared within the group")
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-5
    beta: float = setting(0.04, "KL coefficient towards the SFT policy; 0: no reference, no KL")
    loss_type: str = setting("dapo", "trl GRPO loss: grpo, dapo, dr_grpo, bnpo, cispo, sapo")
    scale_rewards: str = setting("group", "advantage scaling: group, batch or none (Dr. GRPO)")
    epsilon: float = setting(0.2, "clipping range of the policy ratio")
    temperature: float = setting(1.0, "sampling temperature of the rollouts")
    max_completion_length: int = setting(128, "tokens sampled per completion")
    reward_metric: str = setting("", "the task metric whose per-example score is the reward; empty: the primary")
    max_prompts: int = setting(0, "prompts taken from the train split; 0: all")
    gradient_checkpointing: bool = False
    seed: int = 0
    # Only for a fresh LoRA (no SFT adapter); with one, its own config is kept.
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: list[str] = setting([], "fresh LoRA only: module names; empty: every linear layer")


@dataclass(kw_only=True)
class GRPOParams(core.RunParams, GRPOSettings):
    """Settings plus plumbing: the SFT adapter and the reward's metric spec (scorer and resolved options)."""

    sft_adapter_dir: str = ""  # the SFT adapter (or fully fine-tuned model); "" trains a fresh LoRA on the base
    reward_spec: dict = field(default_factory=dict)  # {"scorer": ..., **options}, from Task.prepare


def settings_problems(settings: dict, metrics: dict | None = None, world_size: int = 1) -> list[str]:
    """What is wrong with GRPO settings (a recipe's ``grpo`` section or the asset config), each saying what to
    change; ``metrics``: the task's metric names, to check ``reward_metric`` against."""
    defaults = vars(GRPOSettings())
    # A value of the wrong type is the config schema's to report; it is checked here as its default.
    s = {**defaults, **{k: v for k, v in settings.items() if k in defaults and _same_kind(v, defaults[k])}}
    problems = []
    for name in ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "max_completion_length"):
        if s[name] < 1:
            problems.append(f"grpo.{name} must be >= 1, got {s[name]}")
    if s["num_generations"] < 2:
        problems.append(f"grpo.num_generations must be >= 2 (advantages compare completions of one prompt), "
                        f"got {s['num_generations']}")
    per_step = s["per_device_train_batch_size"] * world_size * s["gradient_accumulation_steps"]
    if s["num_generations"] >= 2 and per_step >= 1 and per_step % s["num_generations"]:
        problems.append(f"grpo: {per_step} completions per step (batch x ranks x accumulation) is not a multiple of "
                        f"num_generations={s['num_generations']}: make per_device_train_batch_size a multiple of it")
    if s["learning_rate"] <= 0:
        problems.append(f"grpo.learning_rate must be > 0, got {s['learning_rate']}")
    if s["beta"] < 0:
        problems.append(f"grpo.beta must be >= 0 (0 turns the KL term off), got {s['beta']}")
    if s["temperature"] <= 0:
        problems.append(f"grpo.temperature must be > 0 (GRPO needs sampled, differing completions), "
                        f"got {s['temperature']}")
    if not 0 < s["epsilon"] < 1:
        problems.append(f"grpo.epsilon must be in (0, 1), got {s['epsilon']}")
    if s["loss_type"] not in LOSS_TYPES:
        problems.append(f"grpo.loss_type {s['loss_type']!r}: use one of {', '.join(LOSS_TYPES)}")
    if s["scale_rewards"] not in SCALE_REWARDS:
        problems.append(f"grpo.scale_rewards {s['scale_rewards']!r}: use one of {', '.join(SCALE_REWARDS)}")
    if s["max_prompts"] < 0:
        problems.append(f"grpo.max_prompts must be >= 0 (0: all), got {s['max_prompts']}")
    if metrics is not None and s["reward_metric"] and s["reward_metric"] not in metrics:
        problems.append(f"grpo.reward_metric {s['reward_metric']!r} is none of the task's metrics "
                        f"{sorted(metrics)}: name one of them (or leave it empty for the primary metric)")
    return problems


def _same_kind(value, default) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def reward_metric_of(reward_metric: str, primary_metric: str) -> str:
    return reward_metric or primary_metric


def read_prompts(path: str | Path, max_prompts: int = 0) -> list[dict]:
    """Prompts and references of an ``sft_dataset`` split: the conversation before the reply, the reply's text."""
    rows = []
    for n, row in enumerate(core.read_jsonl(path), start=1):
        if not isinstance(row.get("prompt"), list) or not row.get("completion"):
            raise TrainingConfigError(f"{path}:{n}: not an sft_dataset row (conversational prompt + completion)")
        rows.append({"prompt": row["prompt"], "reference": row["completion"][-1]["content"],
                     "record_id": str(row.get("record_id", n)), "db_id": row.get("db_id") or ""})
        if max_prompts and len(rows) >= max_prompts:
            break
    return rows


def validate_grpo(params: GRPOParams, world_size: int = 1) -> dict:
    """Fail before any compute when the run cannot work, saying what to change; returns what it found, including
    the reward the references themselves earn (the ceiling; 0 means the reward cannot be earned on this data)."""
    from ft_assets.evaluation.scorers import score

    problems = settings_problems({k: getattr(params, k) for k in vars(GRPOSettings())}, world_size=world_size)
    if params.precision not in core.PRECISIONS:
        problems.append(f"precision must be auto, bf16, fp16 or fp32, got {params.precision!r}")
    if not params.reward_spec.get("scorer"):
        problems.append("no reward: reward_spec names no scorer (the asset fills it from the task's metric)")
    if problems:
        raise TrainingConfigError("; ".join(problems))
    sft = Path(params.sft_adapter_dir) if params.sft_adapter_dir else None
    if sft and not ((sft / "adapter_config.json").is_file() or (sft / "config.json").is_file()):
        raise TrainingConfigError(f"no LoRA adapter (adapter_config.json) or model (config.json) in {sft}")
    if not (Path(params.base_model_dir) / "config.json").is_file():
        raise TrainingConfigError(f"no model (config.json) in base_model_dir {params.base_model_dir}")
    rows = read_prompts(params.train_path, params.max_prompts)
    prompts_per_step = params.per_device_train_batch_size * world_size * params.gradient_accumulation_steps \
        // params.num_generations
    if len(rows) < prompts_per_step:
        raise TrainingConfigError(f"{len(rows)} prompts are too few for one step of {prompts_per_step} prompts: "
                                  "lower per_device_train_batch_size or raise max_prompts")
    sample = rows[:32]
    references = [r["reference"] for r in sample]
    try:  # the scorer against the references themselves: a reference it cannot read fails here, not mid-run
        ceiling = score(params.reward_spec, references, references, sample).value
    except ValueError as exc:
        raise TrainingConfigError(f"the reward's scorer cannot score this data: {exc}") from exc
    return {"prompts": len(rows), "prompts_per_step": prompts_per_step, "reward_of_references": ceiling}


def task_reward(metric: str, spec: dict, rollouts: list[dict]) -> Callable[..., list[float]]:
    """A trl reward function that is the metric's scorer, per completion; every call's rollouts are recorded."""
    from ft_assets.evaluation.scorers import score

    def reward(prompts, completions, reference, record_id, db_id, trainer_state=None, **_) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        rows = [{"record_id": r, "db_id": d} for r, d in zip(record_id, db_id, strict=True)]
        result = score(spec, texts, list(reference), rows)
        if len(result.per_example) != len(texts):
            raise ValueError(f"reward metric {metric!r}: its scorer gave no per-completion values; a reward needs "
                             "one per completion (return a Score with per_example, or a list)")
        step = (trainer_state.global_step if trainer_state is not None else 0) + 1  # the step this batch trains
        extracted = result.extracted if len(result.extracted) == len(texts) else [""] * len(texts)
        rollouts.extend({"step": step, **r, "completion": t, "reference": ref,
                         "extracted": e, "reward": v}
                        for r, t, ref, e, v in zip(rows, texts, reference, extracted, result.per_example, strict=True))
        return [float(v) for v in result.per_example]

    reward.__name__ = metric  # trl logs it as rewards/<metric>/mean
    return reward


def _load_policy(params: GRPOParams):
    """(model, peft_config or None, what the reference is): the SFT adapter trainable on the base, else a fresh
    LoRA on the (fully fine-tuned SFT, or base) model."""
    from peft import PeftModel

    sft = Path(params.sft_adapter_dir) if params.sft_adapter_dir else None
    full_sft = sft is not None and not (sft / "adapter_config.json").is_file()
    model = core.load_causal_lm(sft if full_sft else params.base_model_dir, "fp32")
    if sft and not full_sft:
        return PeftModel.from_pretrained(model, str(sft), is_trainable=True), None, "sft_adapter"
    lora = core.lora_config(params.lora_r, params.lora_alpha, params.lora_dropout, params.target_modules)
    return model, lora, "sft_model" if full_sft else "base_model"


def curve_facts(history: list[dict]) -> dict:
    """Reward and KL figures of a run: first/last, the mean of the first and last quarter of steps, the gain."""
    rewards = [h["reward"] for h in history if h.get("reward") is not None]
    kls = [h["kl"] for h in history if h.get("kl") is not None]
    if not rewards:
        return {}
    quarter = max(1, len(rewards) // 4)
    early, late = sum(rewards[:quarter]) / quarter, sum(rewards[-quarter:]) / quarter
    return {"first_reward": rewards[0], "final_reward": rewards[-1], "early_mean_reward": round(early, 4),
            "late_mean_reward": round(late, 4), "reward_gain": round(late - early, 4),
            "final_kl": kls[-1] if kls else None, "max_kl": max(kls) if kls else None}


def train_grpo(params: GRPOParams, on_log: Callable[[dict], None] = lambda _: None) -> dict:
    """Train with GRPO; save the adapter, tokenizer and scored rollouts to ``output_dir``; return a summary."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    core.set_threads(params.num_threads)
    facts = validate_grpo(params, world_size=core.world_size())
    rows = read_prompts(params.train_path, params.max_prompts)
    tokenizer = core.load_tokenizer(params.base_model_dir)
    model, peft_config, reference = _load_policy(params)
    precision = core.choose_precision(params.precision)
    callback = core.step_metrics_callback(on_log, extra_keys=GRPO_METRICS)
    out = Path(params.output_dir)
    args = GRPOConfig(
        **core.common_arguments(
            params, output_dir=str(out / "trainer"), precision=precision[0], max_steps=params.max_steps,
            batch_size=params.per_device_train_batch_size,
            gradient_accumulation_steps=params.gradient_accumulation_steps, learning_rate=params.learning_rate,
            seed=params.seed, gradient_checkpointing=params.gradient_checkpointing),
        num_generations=params.num_generations, max_completion_length=params.max_completion_length,
        beta=params.beta, loss_type=params.loss_type, scale_rewards=params.scale_rewards, epsilon=params.epsilon,
        temperature=params.temperature,
    )
    rollouts: list[dict] = []
    metric = params.reward_metric or params.reward_spec["scorer"].rpartition(":")[2]
    trainer = GRPOTrainer(model=model, reward_funcs=task_reward(metric, params.reward_spec, rollouts), args=args,
                          train_dataset=Dataset.from_list(rows), processing_class=tokenizer, peft_config=peft_config,
                          callbacks=[callback])
    result = trainer.train()
    summary = core.base_summary(trainer, result, callback, callback.history, precision, params)
    if not trainer.is_world_process_zero():  # under a multi-rank launch, one writer
        return {}
    # Only the trained adapter: a frozen "ref" copy trl added is the SFT adapter, already an artifact.
    trainer.model.save_pretrained(out, selected_adapters=["default"])
    tokenizer.save_pretrained(out)
    shutil.rmtree(out / "trainer", ignore_errors=True)
    with (out / ROLLOUTS_FILE).open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rollouts)
    summary.update({
        **curve_facts(callback.history), "reward_metric": metric, "reward_scorer": params.reward_spec.get("scorer"),
        "reward_of_references": facts["reward_of_references"], "prompts": len(rows), "rollouts": len(rollouts),
        "reference": reference if params.beta > 0 else "none (beta 0)", "bf16": bool(args.bf16),
        "params": core.params_for_summary(params),
    })
    core.write_summary(out, callback.history, summary)
    return summary


def reward_curve_png(steps: list[dict], title: str = "GRPO reward") -> bytes:
    """Mean reward per step (with its spread within the batch) and the KL to the reference on a second axis."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3), dpi=90)
    xs = [s["step"] for s in steps if "reward" in s]
    ys = [s["reward"] for s in steps if "reward" in s]
    spread = [s.get("reward_std", 0.0) for s in steps if "reward" in s]
    ax.plot(xs, ys, color="tab:blue", marker=".", label="reward")
    ax.fill_between(xs, [y - d for y, d in zip(ys, spread, strict=True)],
                    [y + d for y, d in zip(ys, spread, strict=True)], color="tab:blue", alpha=0.15)
    if any("kl" in s for s in steps):
        kl_axis = ax.twinx()
        kl_axis.plot([s["step"] for s in steps if "kl" in s], [s["kl"] for s in steps if "kl" in s],
                     color="tab:red", alpha=0.7)
        kl_axis.set_ylabel("KL to reference", color="tab:red")
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward", color="tab:blue")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def reward_table(steps: list[dict], max_rows: int = 20) -> str:
    stride = max(1, len(steps) // max_rows)
    rows = steps[::stride] + ([steps[-1]] if steps and (len(steps) - 1) % stride else [])
    nan = float("nan")
    lines = ["| step | reward | reward std | KL | loss | completion tokens | grad norm |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {s['step']} | {s.get('reward', nan):.4f} | {s.get('reward_std', nan):.4f} | {s.get('kl', nan):.4f} | "
              f"{s['loss']:.4f} | {s.get('completions/mean_length', nan):.1f} | {s.get('grad_norm', 0.0):.3f} |"
              for s in rows]
    return "\n".join(lines)


def run_task(params: dict, on_log: Callable[[dict], None]) -> dict:
    """The worker's entry point for ``task="grpo"``."""
    return train_grpo(GRPOParams.from_dict(params), on_log=on_log)
