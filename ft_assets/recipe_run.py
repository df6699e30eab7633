"""``ftops run RECIPE``: check a recipe before any compute, ingest its drops, run its job on the local instance."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from ft_assets.recipes import OP_SECTIONS, RESOURCE_SECTIONS, Recipe, RecipeError, load_recipe, run_config

# run-config path -> the recipe section a user edits
_SECTION_OF = {**{f"root:ops:{op}:config": s for s, op in OP_SECTIONS.items()},
               **{f"root:resources:{key}:config": s for s, key in RESOURCE_SECTIONS.items()},
               "root:ops:clean_records:config": "data.clean", "root:ops:deduped_records:config": "data.dedup",
               "root:ops:sft_dataset:config": "data.split", "root:resources:raw_drops:config": "data",
               "root:ops:policy:config": "policy"}
# op -> the recipe section that configures it
_RECIPE_KEY = {path.split(":")[2]: section for path, section in _SECTION_OF.items() if path.startswith("root:ops:")}


def _top_level_keys(expected: str) -> list[str]:
    """Field names at the outer level of Dagster's ``Expected: "{ a?: ... b: ... }"`` text."""
    keys, depth = [], 0
    for match in re.finditer(r"[{}]|(\w+)\??:", expected):
        if match[0] == "{":
            depth += 1
        elif match[0] == "}":
            depth -= 1
        elif depth == 1:
            keys.append(match[1])
    return keys


def explain_config_errors(errors) -> list[str]:
    """Dagster's config errors, said in the recipe's words (its section names, what is allowed)."""
    messages = []
    for error in errors:
        text = error.message
        for path, section in sorted(_SECTION_OF.items(), key=lambda kv: -len(kv[0])):
            if path in text:
                text = text.replace(f"at path {path}:", f"at recipe setting {section}.")
                text = text.replace(f"at path {path}", f"in recipe section {section!r}").replace(path, section)
        text, _, expected = text.partition(' Expected: "')
        allowed = _top_level_keys(expected)
        messages.append(text + (f" (allowed: {', '.join(sorted(allowed))})" if allowed else ""))
    return messages


def _asset_names(job) -> set[str]:
    return {key.to_user_string() for key in job.asset_layer.executable_asset_keys}


def check(recipe: Recipe, job) -> list[str]:
    """Every problem before compute: the job's config schema, then base model, combinations, data and task."""
    from dagster import DagsterInvalidConfigError

    from ft_assets.config_guard import value_problems
    from ft_assets.recipe_checks import recipe_problems
    from resources.paths import default_drops_dir, default_gguf_path

    problems = []
    try:  # types and unknown keys (Dagster's schema), then bounds (each op's Config): sizes, rates, fractions
        problems += [f"{_RECIPE_KEY.get(op, f'ops.{op}')}.{field}: {message}: change it in the recipe or with "
                     f"--set {_RECIPE_KEY.get(op, f'ops.{op}')}.{field}=..."
                     for op, field, message in value_problems(job, run_config(recipe, default_drops_dir(),
                                                                              _asset_names(job)))]
    except DagsterInvalidConfigError as exc:
        problems += explain_config_errors(exc.errors)
    return problems + recipe_problems(recipe, default_drops_dir(), default_gguf_path())


def run_recipe(recipe: Recipe, check_only: bool = False):
    """Ingest the recipe's drops (one raw_records partition each), then run its job; None when check_only."""
    from dagster import DagsterInstance

    from ft_assets.automation.ingest import ingest_present_drops
    from ft_assets.cli import ensure_dagster_home
    from ft_assets.definitions import defs
    from resources import RawDrops
    from resources.paths import default_drops_dir

    job_names = {j.name for j in defs.resolve_all_job_defs()}
    job = defs.resolve_job_def(recipe.job_name if recipe.job_name in job_names else "end_to_end")
    problems = check(recipe, job)
    if problems:
        raise RecipeError(f"recipe {recipe.path.name} cannot run:\n" + "\n".join(f"  - {p}" for p in problems))
    if check_only:
        return None
    config = run_config(recipe, default_drops_dir(), _asset_names(job))
    ensure_dagster_home()
    with DagsterInstance.get() as instance:
        raw_drops = RawDrops(**config["resources"]["raw_drops"]["config"])
        failed = [r for r in ingest_present_drops(defs, instance, raw_drops) if not r.success]
        if failed:
            return failed[0]
        return job.execute_in_process(instance=instance, run_config=config, raise_on_error=False,
                                      tags={"ftops/recipe": recipe.name})


def report_path(result) -> Path | None:
    """The eval report this run wrote (not whatever is newest on disk)."""
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization  # a DagsterEvent, not an EventLogEntry
        if materialization.asset_key.to_user_string() == "eval_report":
            value = materialization.metadata.get("report_json")
            return Path(value.value) if value is not None else None
    return None


def cmd_run(recipe_name: str, overrides: list[str], check_only: bool = False) -> int:
    started = time.perf_counter()
    try:
        recipe = load_recipe(recipe_name, overrides)
        result = run_recipe(recipe, check_only)
    except RecipeError as exc:
        print(f"ftops run: {exc}", file=sys.stderr)
        return 2
    if result is None:
        print(f"recipe {recipe.path.name}: ok (job {recipe.job_name})")
        return 0
    elapsed = time.perf_counter() - started
    if not result.success:
        for event in result.all_events:
            if event.event_type_value == "ASSET_CHECK_EVALUATION" and not event.event_specific_data.passed:
                check = event.event_specific_data
                print(f"gate {check.check_name} on {check.asset_key.to_user_string()} failed: "
                      f"{check.description}", file=sys.stderr)
            elif event.is_failure:
                print(event.message, file=sys.stderr)
        print(f"ftops run {recipe.name}: run {result.run_id} failed after {elapsed:.0f}s", file=sys.stderr)
        return 1
    report = report_path(result)
    if report is not None:
        # Metrics and gates; the failure samples stay in report.md / report.html.
        print((report.parent / "report.md").read_text().split("## Failures")[0].rstrip() + "\n")
        print(f"HTML report: {report.parent / 'report.html'}")
    print(f"ftops run {recipe.name}: run {result.run_id} succeeded in {elapsed:.0f}s")
    if report is not None:
        print(report)
    return 0
