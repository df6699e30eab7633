"""Tasks: what a model is fine-tuned for and how it is scored (one small file per task)."""

from ft_assets.tasks.common import Task, load_task

__all__ = ["Task", "load_task"]
