"""The recipe's task as a resource: which task, its metrics and gates' primary metric, its forgetting set."""

from __future__ import annotations

from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

from ft_assets.tasks.common import Task, load_task


class TaskResource(ConfigurableResource):
    """The task every model of this run is trained, checked and evaluated for (a recipe's ``task:`` section)."""

    name: str = Field("text_to_sql", description="a built-in task (text_to_sql, math, chat, classification, "
                                                 "generic) or 'package.module:TASK'")
    primary_metric: str = Field("", description="the metric the gates, report and registry rank by; "
                                                "empty: the task's own")
    metrics: dict[str, Any] = Field({}, description="metric name -> {scorer: name or package.module:function, "
                                                    "...options}; empty: the task's own")
    system_prompt: str = Field("", description="system turn for rows without one; empty: the task's own")
    forgetting: dict[str, Any] = Field({}, description="general-ability set: {path, scorer, tolerance, "
                                                       "max_examples}; empty: none")

    def task(self) -> Task:
        return load_task(self.name, primary_metric=self.primary_metric, metrics=self.metrics,
                         system_prompt=self.system_prompt, forgetting=self.forgetting or None)
