"""What a training run shows people: a loss-curve plot, a summary table, the library versions that made it."""

from __future__ import annotations

import io
from importlib import metadata

LIBRARIES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "deepspeed", "bitsandbytes",
             "dagster", "ftops")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def loss_curve_png(steps: list[dict], title: str = "training loss", evals: list[dict] | None = None) -> bytes:
    """Training loss, eval loss (when evaluated during training) and learning rate (second axis) per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3), dpi=90)
    if steps:
        ax.plot([s["step"] for s in steps], [s["loss"] for s in steps], color="tab:blue", label="train loss")
        if evals:
            ax.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], color="tab:green", marker="o",
                    label="eval loss")
            ax.legend(loc="upper right", fontsize=7)
        lr_axis = ax.twinx()
        lr_axis.plot([s["step"] for s in steps], [s.get("learning_rate", 0.0) for s in steps], color="tab:orange",
                     alpha=0.6, label="learning rate")
        lr_axis.set_ylabel("learning rate", color="tab:orange")
    ax.set_xlabel("step")
    ax.set_ylabel("loss", color="tab:blue")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def loss_table(steps: list[dict], max_rows: int = 20) -> str:
    stride = max(1, len(steps) // max_rows)
    rows = steps[::stride] + ([steps[-1]] if steps and (len(steps) - 1) % stride else [])
    lines = ["| step | loss | lr | grad norm | tokens/s | peak MB |", "|---|---|---|---|---|---|"]
    lines += [f"| {s['step']} | {s['loss']:.4f} | {s.get('learning_rate', 0.0):.2e} | {s.get('grad_norm', 0.0):.3f} | "
              f"{s.get('tokens_per_s', '')} | {s.get('peak_memory_mb', '')} |" for s in rows]
    return "\n".join(lines)


SUMMARY_ROWS = ("method", "precision", "precision_reason", "num_threads", "steps",
                "resumed_from_step", "first_loss", "final_loss", "train_loss",
                "examples", "train_tokens", "tokens_per_s", "train_seconds", "peak_memory_mb",
                "trainable_parameters", "world_size", "deepspeed_zero_stage")


def summary_table(summary: dict) -> str:
    lines = ["| | |", "|---|---|"]
    for key in SUMMARY_ROWS:
        if key in summary and summary[key] is not None:
            value = summary[key]
            lines.append(f"| {key.replace('_', ' ')} | {value:.4f} |" if isinstance(value, float)
                         else f"| {key.replace('_', ' ')} | {value} |")
    if summary.get("fsdp"):
        fsdp = summary["fsdp"]
        lines.append(f"| fsdp | FSDP{fsdp['version']}, {fsdp['sharded_modules']} sharded modules, reshard after "
                     f"forward {fsdp['reshard_after_forward']} |")
    if summary.get("kept"):
        lines.append(f"| kept | step {summary['kept']['step']}: {summary['kept']['reason']} |")
    return "\n".join(lines)
