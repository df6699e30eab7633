"""Model cards: Markdown and JSON that say where a model came from, how good it is and what it is for."""

from __future__ import annotations

import json
from pathlib import Path

from ft_assets.secrets import scrub

INTENDED_USE = (
    "Translating English questions about the schema in the system prompt into one SQLite query. "
    "Research and internal tooling; review generated SQL before running it on data that matters."
)
LIMITATIONS = (
    "Trained on a small, template-generated text-to-SQL set over one schema: it does not generalize to other "
    "schemas or free-form questions, and it can emit valid-looking SQL that answers a different question. "
    "Quantized variants trade accuracy for size; see their metrics."
)


def build_card(*, name: str, variant: str, base_model: dict, data_versions: dict, training: dict,
               method: str, metrics: dict | None, gates: list[dict], artifacts: dict, task: str = "",
               primary_metric: str = "", intended_use: str = "", limitations: str = "",
               adapter: str = "") -> dict:
    """A model card; ``intended_use``/``limitations`` are the task's (the demo's text when none is given)."""
    return {
        "model": name, "variant": variant, "method": method, "task": task, "primary_metric": primary_metric,
        "adapter": adapter, "base_model": base_model, "data_versions": data_versions, "training": training,
        "metrics": metrics, "gates": gates, "gates_passed": all(g["passed"] for g in gates) if gates else None,
        "artifacts": artifacts, "intended_use": intended_use or INTENDED_USE, "limitations": limitations or LIMITATIONS,
    }


def card_markdown(card: dict) -> str:
    base = card.get("base_model") or {}
    training = card.get("training") or {}
    lines = [
        f"# {card['model']} ({card['variant']})", "",
        f"Method: {card['method']}", "",
        *([f"Task: {card['task']} (primary metric: {card.get('primary_metric')})", ""] if card.get("task") else []),
        *([f"Adapter: {card['adapter']}", ""] if card.get("adapter") else []),
        "## Provenance",
        f"- base model: `{base.get('model_id')}` revision `{base.get('revision')}` ({base.get('source')})",
        *[f"- {name}: `{version}`" for name, version in (card.get("data_versions") or {}).items()],
        *[f"- {name}: `{value}`" for name, value in (card.get("artifacts") or {}).items()],
        "", "## Training",
        *[f"- {k}: {v}" for k, v in training.items() if not isinstance(v, (dict, list))],
        "", "## Metrics (held-out split)",
    ]
    metrics = card.get("metrics")
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        primary = card.get("primary_metric")
        lines += [f"| {k}{' (primary)' if k == primary else ''} | {v:.4f} |" if isinstance(v, float)
                  else f"| {k} | {v} |" for k, v in metrics.items()]
    else:
        lines.append("Not evaluated yet: see the `model_cards` asset for the evaluated card.")
    lines += ["", "## Gates"]
    if card.get("gates"):
        lines += ["| gate | passed | value | threshold |", "|---|---|---|---|"]
        lines += [f"| {g['name']} | {'yes' if g['passed'] else 'NO'} | {g['value']} | {g['threshold']} |"
                  for g in card["gates"]]
    else:
        lines.append("None recorded yet.")
    lines += ["", "## Intended use", card["intended_use"], "", "## Limitations", card["limitations"], ""]
    return "\n".join(lines)


def write_card(directory: Path, card: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    card = scrub(card)  # training facts and artifact paths come from configuration that may carry credentials
    (directory / "model_card.json").write_text(json.dumps(card, indent=2, default=str))
    (directory / "MODEL_CARD.md").write_text(card_markdown(card))
