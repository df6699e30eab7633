"""What Dagster's config schema cannot see in a recipe: a missing base model, a combination that cannot run,
a field the data does not have, a task the data cannot serve. Each problem says what to change. No Dagster here.
"""

from __future__ import annotations

import re
from pathlib import Path

from ft_assets.recipes import Recipe, run_config
from ft_assets.tasks.common import Task, load_task
from ft_assets.training.grpo import settings_problems as grpo_settings_problems

SAMPLE_ROWS = 400
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def base_model_problems(section: dict, default_gguf: str) -> list[str]:
    source = section.get("source", "gguf")
    if source == "gguf":
        path = section.get("gguf_path") or default_gguf
        if not Path(path).is_file():
            return [f"base_model.gguf_path: no GGUF file at {path}: run `make model` (the demo's SmolLM2), set "
                    "base_model.gguf_path, or use base_model.source: pretrained / scratch"]
        return []
    if source == "pretrained":
        name = section.get("name_or_path", "")
        if not name:
            return ["base_model.name_or_path is empty: give a local model directory or a hub id in the local cache"]
        if Path(name).is_dir():
            return [] if (Path(name) / "config.json").is_file() else [
                f"base_model.name_or_path: {name} has no config.json: point it at a saved transformers model"]
        if Path(name).is_absolute() or name.startswith("."):
            return [f"base_model.name_or_path: no directory at {name}"]
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json", revision=section.get("revision")), str):
            return [f"base_model.name_or_path: {name!r} is neither a local directory nor in the local Hugging Face "
                    "cache (nothing is downloaded at run time): download it once where the hub is reachable "
                    f"(`huggingface-cli download {name}`) or point name_or_path at a local directory"]
        return []
    return [] if source == "scratch" else [f"base_model.source {source!r}: use gguf, pretrained or scratch"]


def combination_problems(doc: dict) -> list[str]:
    training, compute = doc.get("training", {}), doc.get("compute", {})
    method, launcher = training.get("method", "lora"), compute.get("launcher", "process")
    processes, nodes = int(compute.get("processes_per_node", 1)), int(compute.get("num_nodes", 1))
    problems = []
    if launcher == "process" and (processes > 1 or nodes > 1):
        problems.append(f"compute: launcher process runs one rank, but processes_per_node={processes} and "
                        f"num_nodes={nodes}: use launcher deepspeed or torchrun (or kubernetes), or set both to 1")
    if method == "qlora" and launcher == "deepspeed" and int(compute.get("zero_stage", 2)) == 3:
        problems.append("training.method qlora with ZeRO-3: ZeRO-3 partitions parameters and the 4-bit base "
                        "weights cannot be partitioned here: use compute.zero_stage 2, or training.method lora/full")
    if nodes > 1 and launcher == "deepspeed":
        hostfile = compute.get("hostfile", "")
        if not hostfile:
            problems.append(f"compute.num_nodes={nodes} under DeepSpeed needs compute.hostfile ('node slots=N' lines)")
        elif not Path(hostfile).is_file():
            problems.append(f"compute.hostfile: no file at {hostfile}: write one ('node-0 slots=8' per line) and "
                            "pass it with --set compute.hostfile=PATH")
    if compute.get("precision") in ("bf16", "fp16") and launcher != "kubernetes":
        import torch

        if not torch.cuda.is_available():
            problems.append(f"compute.precision {compute['precision']} needs a CUDA GPU and none is here: run this "
                            "recipe on a GPU box, or set compute.precision auto")
    if doc.get("policy") == "dpo" and doc.get("dpo", {}).get("max_steps") == 0:
        problems.append("policy dpo but dpo.max_steps is 0: train DPO or choose policy sft")
    if doc.get("policy") == "grpo" and "grpo" not in doc:
        problems.append("policy grpo but the recipe has no grpo section: add one (`grpo: {}` takes the defaults) "
                        "or choose policy sft")
    return problems


def task_of(doc: dict) -> Task:
    section = dict(doc.get("task", {}))
    name = section.pop("name", "text_to_sql")
    return load_task(name, **{k: v for k, v in section.items()})


def _sample_rows(recipe: Recipe, drops_dir: str) -> tuple[list[dict], list[str]]:
    """Up to SAMPLE_ROWS ingested rows of the recipe's drops (through its field map), and any problem."""
    from ft_assets.data.ingest import FieldMapError, ingest_drops

    raw = run_config(recipe, drops_dir)["resources"]["raw_drops"]["config"]
    folder = Path(raw["path"])
    if not folder.exists() and raw["demo_if_empty"]:
        return [], []  # the demo drops are written there first
    if not folder.exists():
        return [], [f"data.drops: {folder} does not exist: create it and put the drop files there, or set "
                    "data.drops to where they are"]
    files = sorted(p for p in folder.glob(raw["pattern"]) if p.is_file() and not p.name.startswith("."))
    if not files:
        return [], ([] if raw["demo_if_empty"] else [f"data.drops: no drop file matches {raw['pattern']!r} in "
                                                      f"{folder}: add your data there (JSONL, JSON, CSV, Parquet)"])
    small = [p for p in files if p.stat().st_size < 64 * 2**20][:4]
    try:
        result = ingest_drops(small, field_map=raw.get("field_map") or None)
    except FieldMapError as exc:
        return [], [f"data.field_map: {exc}"]
    rows = result.records.head(SAMPLE_ROWS).to_dict("records")
    if small and not rows:
        reasons = result.quarantine["reason"].value_counts().head(3).to_dict() if len(result.quarantine) else {}
        return [], [f"data: no usable row in {', '.join(p.name for p in small)} (quarantined: {reasons}): "
                    "set data.field_map to the columns that hold the prompt and the answer"]
    return rows, []


def task_data_problems(task: Task, rows: list[dict]) -> list[str]:
    """Can the task's scorers score this data at all?"""
    if not rows:
        return []
    problems = []
    references = [str(r.get("completion", "")) for r in rows]
    for metric, spec in task.metrics.items():
        scorer = spec["scorer"]
        if scorer == "numeric_match":
            share = sum(bool(_NUMBER.search(ref)) for ref in references) / len(references)
            if share < 0.8:
                problems.append(f"task {task.name}: metric {metric} scores the final number, but only {share:.0%} "
                                "of the sampled answers hold a number: map data.field_map.completion to the answer "
                                "column, or use another task (generic, chat)")
        elif scorer == "sql_execution":
            missing = sorted({str(r.get("db_id") or "") for r in rows} - set(task.system_prompts))
            folder = spec.get("db_folder")
            if folder:
                missing = [d for d in missing if not (Path(folder, f"{d}.sqlite").is_file()
                                                      or Path(folder, d, f"{d}.sqlite").is_file())]
            if missing:
                problems.append(f"task {task.name}: metric {metric} runs SQL against each row's database, but "
                                f"there is none for db_id {missing[:5]}: set task.metrics.{metric}.db_folder to a "
                                "folder of <db_id>.sqlite files (and map data.field_map.db_id), or drop the metric")
        elif scorer in ("label_accuracy", "macro_f1"):
            labels = spec.get("labels")
            distinct = sorted(set(references))
            if labels:
                unknown = [ref for ref in distinct if ref not in labels]
                if unknown:
                    problems.append(f"task {task.name}: answers {unknown[:5]} are not in task.metrics.{metric}."
                                    "labels: add them to the label set or fix data.field_map.completion")
            elif len(distinct) > 50:
                problems.append(f"task {task.name}: metric {metric} needs a label set, and the data has "
                                f"{len(distinct)} distinct answers: map data.field_map.completion to the label "
                                f"column and list the labels under task.metrics.{metric}.labels")
        elif scorer in ("json_valid", "json_schema"):
            import json

            bad = 0
            for ref in references:
                try:
                    json.loads(ref)
                except ValueError:
                    bad += 1
            if bad > len(references) // 5:
                problems.append(f"task {task.name}: metric {metric} expects JSON answers, but {bad} of "
                                f"{len(references)} sampled answers are not JSON")
    return problems


def recipe_problems(recipe: Recipe, drops_dir: str, default_gguf: str, sample_data: bool = True) -> list[str]:
    """Every problem of the recipe that shows before any compute; [] when it can run."""
    doc = recipe.doc
    problems = base_model_problems(doc.get("base_model", {}), default_gguf) + combination_problems(doc)
    try:
        task = task_of(doc)
    except ValueError as exc:
        return problems + [f"task: {exc}"]
    if "grpo" in doc:  # the reward is one of the task's metrics
        problems += grpo_settings_problems(doc.get("grpo") or {}, task.metrics)
    if "hpo" in doc:  # the search space and trial length, refused before any trial trains
        from ft_assets.training.hpo import hpo_problems

        problems += hpo_problems(doc.get("hpo") or {}, doc.get("training") or {})
    if sample_data:
        rows, data_problems = _sample_rows(recipe, drops_dir)
        problems += data_problems + task_data_problems(task, rows)
    return problems
