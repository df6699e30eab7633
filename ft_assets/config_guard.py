"""A run's config checked whole before any step runs: Dagster's schema (types, unknown keys, missing values), then
every op's own ``Config`` (pydantic: zero or negative sizes and rates, fractions outside 0..1, unknown methods).

Dagster's config schema knows types, not bounds: a ``Field(gt=0)`` is only enforced when the step that owns it
builds its config, after every upstream step has run. ``config_problems`` checks them all up front; ``ftops run``
calls it before ingesting anything, and ``guarded_executor`` (the recipe jobs' executor) calls it when a run
launched from the launchpad, a sensor or the daemon starts, before it executes any step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from dagster import (
    Config,
    DagsterInvalidConfigError,
    ExecutorDefinition,
    JobDefinition,
    multi_or_in_process_executor,
    validate_run_config,
)
from dagster._core.definitions.op_definition import OpDefinition
from dagster._core.executor.base import Executor
from pydantic import ValidationError

GUARD_NOTE = "(each run's config checked whole first: ft_assets.config_guard)"


class RunConfigError(ValueError):
    """The run config cannot work; the message lists each field and what to change."""


def op_config_classes(job: JobDefinition) -> dict[str, type[Config]]:
    """``node name -> Config class`` of every op (asset, check) in the job that takes a pythonic config."""
    out: dict[str, type[Config]] = {}
    for node in job.graph.nodes:
        definition = node.definition
        fn = definition.compute_fn if isinstance(definition, OpDefinition) else None
        if fn is not None and hasattr(fn, "has_config_arg") and fn.has_config_arg():
            cls = fn.get_config_arg().annotation
            if isinstance(cls, type) and issubclass(cls, Config):
                out[node.name] = cls
    return out


def value_problems(job: JobDefinition, run_config: Mapping) -> list[tuple[str, str, str]]:
    """``(op, field, what is wrong)`` for each value an op's ``Config`` refuses; ``run_config`` already fits the
    schema (``validate_run_config``)."""
    resolved = validate_run_config(job, dict(run_config))
    out = []
    for op, cls in op_config_classes(job).items():
        values = ((resolved.get("ops") or {}).get(op) or {}).get("config") or {}
        try:
            cls(**values)
        except ValidationError as exc:
            for error in exc.errors():
                field = ".".join(str(part) for part in error["loc"]) or "(config)"
                given = error.get("input")
                message = str(error["msg"]).removeprefix("Value error, ")
                out.append((op, field, message + ("" if isinstance(given, dict) else f" (got {given!r})")))
    return out


def config_problems(job: JobDefinition, run_config: Mapping) -> list[str]:
    """Every problem of ``run_config`` for ``job``, each naming the field and what to change; [] when it can run."""
    try:
        return [f"ops.{op}.config.{field}: {message}: change it in the run config"
                for op, field, message in value_problems(job, run_config)]
    except DagsterInvalidConfigError as exc:
        return [error.message for error in exc.errors]


def check_run_config(job: JobDefinition, run_config: Mapping) -> None:
    problems = config_problems(job, run_config)
    if problems:
        raise RunConfigError(f"run config of job {job.name} cannot run (nothing was executed):\n"
                             + "\n".join(f"  - {p}" for p in problems))


class _GuardedExecutor(Executor):
    """Checks the run's config, then hands the plan to the executor it wraps."""

    def __init__(self, inner: Executor):
        self._inner = inner

    def execute(self, plan_context, execution_plan) -> Iterator:
        check_run_config(plan_context.job.get_definition(), plan_context.run_config)
        yield from self._inner.execute(plan_context, execution_plan)

    @property
    def retries(self):
        return self._inner.retries

    @property
    def step_dependency_config(self):
        return self._inner.step_dependency_config


def guarded_executor(inner: ExecutorDefinition = multi_or_in_process_executor) -> ExecutorDefinition:
    """``inner`` (same name, config and requirements) with the run's config checked before any step starts."""
    return ExecutorDefinition(
        name=inner.name, config_schema=inner.config_schema, requirements=inner.get_requirements,
        executor_creation_fn=lambda init_context: _GuardedExecutor(inner.executor_creation_fn(init_context)),
        description=f"{inner.description or inner.name} {GUARD_NOTE}")
