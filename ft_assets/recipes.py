"""Recipes: one YAML file is one complete fine-tune (data, base model, method, compute, task, gates).

A recipe is read, overridden (``--set training.max_steps=2``), checked and turned into the Dagster
run config of its job here; ``ft_assets/jobs.py`` makes each one a job and validates that config
against the job's schema. The checks here are the ones Dagster's schema cannot make: a base model
that is not there, a combination that cannot run, a task the recipe's data cannot serve. Every
message says what to change. No Dagster here.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from ft_assets.training.launch import compute_run_config

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
DEMO_RECIPE = "text-to-sql-demo"

# recipe section -> where it goes in the run config
OP_SECTIONS = {"base_model": "base_model", "training": "sft_adapter", "dpo": "dpo_adapter", "eval": "eval_report",
               "merge": "merged_model", "quantize": "quantized_model", "hpo": "hpo_study", "grpo": "grpo_adapter"}
RESOURCE_SECTIONS = {"compute": "training_compute", "task": "task", "gates": "model_gates"}
DATA_OPS = {"clean": "clean_records", "dedup": "deduped_records", "split": "sft_dataset"}
DATA_KEYS = {"drops", "pattern", "field_map", "demo_if_empty", "demo_records", *DATA_OPS}
TOP_KEYS = {"name", "description", "data", "policy", *OP_SECTIONS, *RESOURCE_SECTIONS}
PATH_KEYS = ("gguf_path", "name_or_path", "path", "db_folder", "hostfile", "deepspeed_config_path")


class RecipeError(ValueError):
    """A recipe that cannot run as written; the message says what to change."""


@dataclass(frozen=True)
class Recipe:
    name: str  # the file's stem, e.g. "gsm8k-math"
    path: Path
    doc: dict

    @property
    def job_name(self) -> str:
        """Dagster job names are identifiers: ``gsm8k-math`` -> ``gsm8k_math``."""
        return re.sub(r"\W", "_", self.name)

    @property
    def description(self) -> str:
        return str(self.doc.get("description", "")).strip()

    @property
    def drop_key_prefix(self) -> str:
        """Drops of a recipe's own folder get partition keys ``<job>@<file stem>``, so two recipes never mix;
        the embedded default's drops folder (the drop sensor's) keeps plain keys."""
        return f"{self.job_name}@" if self.doc.get("data", {}).get("drops") else ""


def recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file by path, or by name in ``recipes/`` (``gsm8k-math`` or ``gsm8k-math.yaml``)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path.resolve()
    for candidate in (RECIPES_DIR / f"{name_or_path}.yaml", RECIPES_DIR / str(name_or_path)):
        if candidate.is_file():
            return candidate
    raise RecipeError(f"no recipe {str(name_or_path)!r}: give a YAML path or one of {available_recipes()}")


def available_recipes(folder: Path = RECIPES_DIR) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def parse_override(text: str) -> tuple[list[str], object]:
    """``training.max_steps=2`` -> (["training", "max_steps"], 2); the value is read as YAML; ``key=`` unsets."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {text!r}: write it as section.key=value, e.g. training.max_steps=2")
    return key.strip().split("."), yaml.safe_load(value) if value.strip() else ""


def apply_overrides(doc: dict, overrides: list[str]) -> dict:
    doc = copy.deepcopy(doc)
    for text in overrides:
        keys, value = parse_override(text)
        node = doc
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise RecipeError(f"--set {text!r}: {key!r} is a value, not a section")
            node = child
        if value == "":  # `--set key=`: unset, back to the default
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return doc


def load_recipe(name_or_path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read a recipe, apply ``--set`` overrides, resolve its paths; structural errors raise RecipeError."""
    path = recipe_path(name_or_path)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections ({sorted(TOP_KEYS)})")
    doc = apply_overrides(doc, list(overrides))
    unknown = sorted(set(doc) - TOP_KEYS)
    if unknown:
        raise RecipeError(f"{path.name}: unknown section(s) {unknown}; a recipe has {sorted(TOP_KEYS)}")
    data = doc.setdefault("data", {}) or {}
    unknown = sorted(set(data) - DATA_KEYS)
    if unknown:
        raise RecipeError(f"{path.name}: unknown data key(s) {unknown}; data has {sorted(DATA_KEYS)}")
    for section in [*OP_SECTIONS, *RESOURCE_SECTIONS]:
        if not isinstance(doc.get(section, {}), dict):
            raise RecipeError(f"{path.name}: section {section!r} must be a mapping of settings")
    if doc.get("policy", "sft") not in ("sft", "dpo", "grpo", "best"):
        raise RecipeError(f"{path.name}: policy {doc['policy']!r}: use sft, dpo, grpo or best")
    return Recipe(name=path.stem, path=path, doc=_resolve_paths(doc, path.parent))


def _expand_vars(value: str) -> str:
    """``$VAR`` / ``${VAR}`` from the environment; ``FTOPS_HOME`` defaults to the embedded one (``./.ftops``)."""
    from resources.paths import ftops_home

    env = {"FTOPS_HOME": str(ftops_home()), **os.environ}
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m[1] or m[2], m[0]), value)


def _resolve(value: str, base: Path) -> str:
    expanded = os.path.expanduser(_expand_vars(value))
    looks_like_path = expanded.startswith((".", "/", "~")) or os.sep in expanded and Path(base, expanded).exists()
    return str((base / expanded).resolve()) if looks_like_path and not Path(expanded).is_absolute() else expanded


def _resolve_paths(node, base: Path):
    """Relative paths in a recipe are relative to the recipe file; ``$VARS`` and ``~`` expand."""
    if isinstance(node, dict):
        return {k: (_resolve(v, base) if k in PATH_KEYS + ("drops",) and isinstance(v, str) and v
                    else _resolve_paths(v, base)) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_paths(v, base) for v in node]
    return node


def run_config(recipe: Recipe, drops_dir: str, asset_names: set[str] | None = None) -> dict:
    """The recipe as a Dagster run config; ``drops_dir`` is the embedded drops folder for recipes without one.

    ``asset_names``: the assets the job has; sections of assets it lacks are left out.
    """
    doc = recipe.doc
    data = doc.get("data", {})
    drops = data.get("drops") or drops_dir
    pattern = data.get("pattern", "*")
    if Path(drops).is_file():  # one file: its folder, that file's name as the pattern
        drops, pattern = str(Path(drops).parent), Path(drops).name
    ops: dict = {op: {"config": dict(doc[section])} for section, op in OP_SECTIONS.items() if doc.get(section)}
    for section, op in DATA_OPS.items():
        if data.get(section):
            ops[op] = {"config": dict(data[section])}
    if "hpo_study" in ops:  # trials train with the recipe's own settings, except the searched ones
        ops["hpo_study"]["config"].setdefault("training", {k: v for k, v in doc.get("training", {}).items()
                                                           if k != "hyperparameters_from_study"})
    prefix = recipe.drop_key_prefix
    if prefix:
        ops.setdefault("clean_records", {"config": {}})["config"].setdefault("drops", [f"{prefix}*"])
    if "grpo" in doc:  # a grpo section (even `grpo: {}`) switches GRPO on; without one the asset records "not trained"
        ops.setdefault("grpo_adapter", {"config": {}})["config"].setdefault("enabled", True)
    if "policy" in doc:
        ops["policy"] = {"config": {"policy": doc["policy"]}}
    raw_drops = {"path": drops, "pattern": pattern, "key_prefix": prefix,
                 "demo_if_empty": bool(data.get("demo_if_empty", not data.get("drops")))}
    if data.get("field_map"):
        raw_drops["field_map"] = data["field_map"]
    if data.get("demo_records"):
        raw_drops["demo_records"] = data["demo_records"]
    resources = {"raw_drops": {"config": raw_drops}}
    for section, key in RESOURCE_SECTIONS.items():
        if doc.get(section):
            resources[key] = {"config": compute_run_config(doc[section]) if section == "compute"
                              else dict(doc[section])}
    if asset_names is not None:
        ops = {op: value for op, value in ops.items() if op in asset_names}
    return {"ops": ops, "resources": resources}
