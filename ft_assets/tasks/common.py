"""What a fine-tuning task is: its metrics, its primary metric, its prompts and probes.

One small file per task (``text_to_sql.py``, ``math.py``, ...) builds a :class:`Task`;
a recipe names one and may override any field. Evaluation, the consistency
probes, the split's system prompts and the model cards take the task as a
parameter, so nothing outside a task's own file knows what the task is about.
No Dagster here.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

GENERIC_PROBES: tuple[tuple[dict, ...], ...] = (
    ({"role": "user", "content": "Say hello in one word."},),
    ({"role": "user", "content": "What is 2 + 3?"},),
)


@dataclass(frozen=True)
class Task:
    """Everything the platform needs to know about a task to train, check, evaluate and describe a model for it."""

    name: str
    # metric name -> {"scorer": registry name or "package.module:function", **scorer options}
    metrics: dict[str, dict]
    primary_metric: str
    system_prompt: str = ""  # the system turn of rows that carry none
    system_prompts: dict[str, str] = field(default_factory=dict)  # per db_id (a text-to-SQL schema, say)
    probes: tuple[tuple[dict, ...], ...] = GENERIC_PROBES  # chat conversations for the serving/logit checks
    probe_max_new_tokens: int = 64
    intended_use: str = "Research and evaluation of fine-tuning on this task."
    limitations: str = "Small model fine-tuned on a narrow task: check the eval report before relying on it."
    # {"path": rows with prompt + reference, "scorer": ..., "tolerance": 0.05, "max_examples": 50, "system_prompt": ""}
    forgetting: dict | None = None
    # Builds what the scorers need (a database, say) into a work folder: metric name -> extra options.
    setup: Callable[[Path], dict[str, dict]] | None = None

    def __post_init__(self) -> None:
        if not self.metrics:
            raise ValueError(f"task {self.name!r} has no metrics: give it at least one scorer")
        if self.primary_metric not in self.metrics:
            raise ValueError(f"task {self.name!r}: primary_metric {self.primary_metric!r} is none of its metrics "
                             f"{sorted(self.metrics)}: pick one of them or add it under task.metrics")
        for metric, spec in self.metrics.items():
            if not isinstance(spec, dict) or not spec.get("scorer"):
                raise ValueError(f"task {self.name!r}: metric {metric!r} needs a 'scorer' (a scorer name or "
                                 "'package.module:function')")
        if self.forgetting is not None and not self.forgetting.get("path"):
            raise ValueError(f"task {self.name!r}: forgetting needs a 'path' to a file of prompts with references")

    def system_prompt_for(self, row: dict) -> str:
        """The system turn for one record: its database's schema, else its own system prompt, else the task's."""
        return self.system_prompts.get(row.get("db_id") or "", "") or row.get("system") or self.system_prompt

    def prepare(self, workdir: Path) -> dict[str, dict]:
        """The metric specs with every option resolved (``setup`` may build files into ``workdir``)."""
        extra = self.setup(Path(workdir)) if self.setup else {}
        return {name: {**spec, **{k: v for k, v in extra.get(name, {}).items() if k not in spec}}
                for name, spec in self.metrics.items()}

    def describe(self) -> dict:
        """JSON-safe summary for cards, reports and lineage."""
        return {"name": self.name, "primary_metric": self.primary_metric, "metrics": self.metrics,
                "forgetting": self.forgetting, "intended_use": self.intended_use, "limitations": self.limitations}


BUILTIN_TASKS = {
    "text_to_sql": "ft_assets.tasks.text_to_sql:TASK",
    "math": "ft_assets.tasks.math:TASK",
    "chat": "ft_assets.tasks.chat:TASK",
    "classification": "ft_assets.tasks.classification:TASK",
    "generic": "ft_assets.tasks.chat:GENERIC",
}


def import_object(path: str):
    """``package.module:attribute`` -> the attribute, with an error that says what is wrong."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{path!r} is not an import path: write it as 'package.module:name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} (from {path!r}): {exc}") from exc
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"{module_name!r} has no {attribute!r} (from {path!r})") from None


def load_task(name: str, **overrides) -> Task:
    """A built-in task by name (or any ``Task`` by import path), with recipe fields overriding its own."""
    path = BUILTIN_TASKS.get(name, name if ":" in name else None)
    if path is None:
        raise ValueError(f"unknown task {name!r}: use one of {sorted(BUILTIN_TASKS)} or 'package.module:TASK'")
    task = import_object(path)
    if not isinstance(task, Task):
        raise ValueError(f"{path!r} is not a Task")
    fields = {f.name for f in dataclasses.fields(Task)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"task {name!r}: unknown field(s) {unknown}; a task has {sorted(fields - {'setup'})}")
    overrides = {k: v for k, v in overrides.items() if v not in (None, "", {}, [])}
    if "probes" in overrides:
        overrides["probes"] = tuple(tuple(p) for p in overrides["probes"])
    if "metrics" in overrides and "primary_metric" not in overrides and task.primary_metric not in overrides["metrics"]:
        overrides["primary_metric"] = next(iter(overrides["metrics"]))
    return dataclasses.replace(task, **overrides)
