"""Hyperparameter search over the SFT recipe with Optuna: plain functions, no Dagster.

A study lives in Optuna's RDB storage (a SQLite file under ``$FTOPS_HOME`` by default, Postgres in production),
opened with ``load_if_exists`` so every run adds trials to the same study. Each trial is a short SFT run that
the caller launches (the asset: through the training compute resource); the worker reports each eval loss to
its trial (``trial_callbacks``) and stops when the median pruner says so. A trial whose training crashes is
recorded as FAIL with its error; a trial left RUNNING by a process that died is failed by Optuna's heartbeat
check when the study next runs. The storage URL reaches the worker through ``STORAGE_ENV``, never through its
params, which are logged (MLflow, summaries) and may not carry a password.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

STORAGE_ENV = "FTOPS_HPO_STORAGE"  # production: a Postgres URL; the worker reads the study's storage from it
OBJECTIVE = "eval_loss"  # the lowest eval loss a trial reached (what best-checkpoint selection keeps)
# Searchable SFT settings and their type; anything else would change what the objective measures.
SEARCHABLE = {"learning_rate": float, "lora_r": int, "lora_alpha": int, "lora_dropout": float, "warmup_steps": int,
              "per_device_train_batch_size": int, "gradient_accumulation_steps": int}
LORA_PARAMS = ("lora_r", "lora_alpha", "lora_dropout")
STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")
SAMPLER_STARTUP_TRIALS = 5  # random trials before TPE models the space
HEARTBEAT_S = 60  # a RUNNING trial without a heartbeat for 2x this is failed when the study next runs
# The study settings' defaults (hpo_study's config takes them from here).
DEFAULTS = {"n_trials": 8, "steps_per_trial": 20, "eval_steps": 5, "seed": 0, "pruner_startup_trials": 2,
            "pruner_warmup_steps": 0}
DEFAULT_SPACE = {
    "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
    "lora_r": {"choices": [4, 8, 16]},
    "lora_alpha": {"choices": [8, 16, 32]},
    "warmup_steps": {"low": 0, "high": 4},
    "per_device_train_batch_size": {"choices": [4, 8]},
}


class HpoConfigError(ValueError):
    """The study's config cannot work; the message says what to change."""


class TrialCrashed(RuntimeError):
    """A trial's training failed; the study records it as FAIL and goes on."""


@dataclass
class StudyPlan:
    """A checked study: what to search, how long each trial trains, where the study lives."""

    study_name: str
    storage: str  # may hold a password: never into metadata, cards or logs (see ``redacted``)
    space: dict[str, dict]
    fixed: dict  # SFT settings every trial shares
    n_trials: int
    steps_per_trial: int
    eval_steps: int
    seed: int = 0
    pruner: dict = field(default_factory=lambda: {"n_startup_trials": 2, "n_warmup_steps": 0})

    def trial_settings(self, sampled: dict) -> dict:
        """The SFT settings of one trial: the fixed ones, the sampled ones, a short run scored every eval_steps.
        keep=last and no patience: a trial's score is its best evaluation, no checkpoint needs keeping."""
        return {**self.fixed, **sampled, "max_steps": self.steps_per_trial, "eval_steps": self.eval_steps,
                "keep": "last", "early_stopping_patience": 0}

    def extreme_settings(self) -> dict:
        """The trial that needs the most examples per step and memory: checked before any compute."""
        return self.trial_settings({name: max(_values(spec)) for name, spec in self.space.items()})


# --- config -------------------------------------------------------------------------------------------------

def default_storage() -> str:
    """``$FTOPS_HPO_STORAGE`` (production: Postgres), else a SQLite file beside the embedded instance's state."""
    from resources.paths import ftops_home

    return os.environ.get(STORAGE_ENV) or f"sqlite:///{ftops_home() / 'optuna' / 'studies.db'}"


def redacted(url: str) -> str:
    """The storage URL without its password, for metadata and logs."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def check_storage(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise HpoConfigError(f"hpo.storage {url!r} is not a database URL: use sqlite:///PATH or "
                             "postgresql://USER@HOST/DB (password through $FTOPS_HPO_STORAGE), or leave it empty "
                             "for the embedded SQLite file") from err
    if parsed.get_backend_name() not in STORAGE_SCHEMES:
        raise HpoConfigError(f"hpo.storage: Optuna's RDB storage takes {', '.join(STORAGE_SCHEMES)} URLs, not "
                             f"{parsed.get_backend_name()!r}")
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return url


def _values(spec: dict) -> list:
    return list(spec["choices"]) if "choices" in spec else [spec["low"], spec["high"]]


def _check_value(name: str, value) -> None:
    kind = SEARCHABLE[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise HpoConfigError(f"hpo.search_space.{name}: {value!r} is not a number")
    if kind is int and value != int(value):
        raise HpoConfigError(f"hpo.search_space.{name}: {value} must be a whole number")
    if name == "learning_rate" and not 0 < value < 1:
        raise HpoConfigError(f"hpo.search_space.learning_rate: {value} is outside (0, 1): try 1e-5 to 1e-2")
    if name == "lora_dropout" and not 0 <= value < 1:
        raise HpoConfigError(f"hpo.search_space.lora_dropout: {value} is outside [0, 1)")
    if name == "warmup_steps" and value < 0:
        raise HpoConfigError(f"hpo.search_space.warmup_steps: {value} is negative: use 0 or more warmup steps")
    if name in ("lora_r", "lora_alpha", "per_device_train_batch_size", "gradient_accumulation_steps") and value < 1:
        raise HpoConfigError(f"hpo.search_space.{name}: {value} must be at least 1")


def check_space(space: dict) -> dict[str, dict]:
    """The search space with each entry either ``{choices: [...]}`` or ``{low, high, log?, step?}``, checked."""
    if not space:
        raise HpoConfigError(f"hpo.search_space is empty: search at least one of {sorted(SEARCHABLE)}")
    out = {}
    for name, raw in space.items():
        if name not in SEARCHABLE:
            raise HpoConfigError(f"hpo.search_space: {name!r} cannot be searched; searchable: {sorted(SEARCHABLE)}")
        spec = {k: v for k, v in dict(raw).items() if v is not None and v != [] and not (k == "log" and v is False)}
        kind = SEARCHABLE[name]
        if "choices" in spec:
            if set(spec) - {"choices"}:
                raise HpoConfigError(f"hpo.search_space.{name}: give either choices or low/high, not both")
            for value in spec["choices"]:
                _check_value(name, value)
            choices = [kind(v) for v in spec["choices"]]
            if len(set(choices)) != len(choices):
                raise HpoConfigError(f"hpo.search_space.{name}: choices {choices} repeat a value")
            out[name] = {"choices": choices}
            continue
        if "low" not in spec or "high" not in spec:
            raise HpoConfigError(f"hpo.search_space.{name}: give choices: [...] or a range low: ... high: ...")
        unknown = set(spec) - {"low", "high", "log", "step"}
        if unknown:
            raise HpoConfigError(f"hpo.search_space.{name}: unknown key(s) {sorted(unknown)}; use low, high, log, step")
        low, high = spec["low"], spec["high"]
        _check_value(name, low)
        _check_value(name, high)
        if not low < high:
            raise HpoConfigError(f"hpo.search_space.{name}: low {low} must be below high {high} (one value: "
                                 "set it in the training section instead)")
        if spec.get("log") and low <= 0:
            raise HpoConfigError(f"hpo.search_space.{name}: a log range needs low > 0, not {low}")
        if spec.get("log") and spec.get("step"):
            raise HpoConfigError(f"hpo.search_space.{name}: a range is either log or stepped, not both")
        if "step" in spec and not spec["step"] > 0:
            raise HpoConfigError(f"hpo.search_space.{name}: step must be positive, not {spec['step']}")
        out[name] = {"low": kind(low), "high": kind(high), "log": bool(spec.get("log")),
                     **({"step": kind(spec["step"])} if spec.get("step") else {})}
    return out


def plan_study(config: dict, identity: dict) -> StudyPlan:
    """Check the hpo config (refusing bad values before any compute) and name the study. ``identity``: what makes
    two trials' objectives comparable (base model and data versions); it names the study unless one is given,
    so rerunning on the same inputs continues the same study."""
    from ft_assets.training.sft import SFTSettings

    config = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    for name in ("n_trials", "steps_per_trial", "eval_steps"):
        if int(config.get(name, 1)) < 1:
            raise HpoConfigError(f"hpo.{name} must be at least 1, not {config.get(name)}")
    steps, eval_steps = int(config["steps_per_trial"]), int(config["eval_steps"])
    if eval_steps > steps:
        raise HpoConfigError(f"hpo.eval_steps {eval_steps} > steps_per_trial {steps}: a trial would never be scored; "
                             "lower eval_steps or raise steps_per_trial")
    pruner = {"n_startup_trials": int(config["pruner_startup_trials"]),
              "n_warmup_steps": int(config["pruner_warmup_steps"])}
    if min(pruner.values()) < 0:
        raise HpoConfigError(f"hpo pruner settings must be 0 or more, not {pruner}")
    space = check_space(config.get("search_space") or DEFAULT_SPACE)
    known = {f for f in SFTSettings.__dataclass_fields__}
    fixed = {k: v for k, v in (config.get("training") or {}).items() if k in known}
    if fixed.get("method") == "full" and set(space) & set(LORA_PARAMS):
        raise HpoConfigError(f"hpo.search_space searches {sorted(set(space) & set(LORA_PARAMS))} but training.method "
                             "is full: remove the LoRA settings from the space, or train lora/qlora/dora")
    if "warmup_steps" in space and max(_values(space["warmup_steps"])) >= steps:
        raise HpoConfigError(f"hpo.search_space.warmup_steps reaches {max(_values(space['warmup_steps']))}, not "
                             f"below steps_per_trial {steps}: lower it")
    name = config.get("study_name") or "sft-" + hashlib.sha256(json.dumps(
        {**identity, "steps_per_trial": steps, "eval_steps": eval_steps,
         "fixed": {k: v for k, v in fixed.items() if k not in space}}, sort_keys=True, default=str).encode()
    ).hexdigest()[:12]
    return StudyPlan(study_name=name, storage=check_storage(config.get("storage") or default_storage()),
                     space=space, fixed=fixed, n_trials=int(config["n_trials"]), steps_per_trial=steps,
                     eval_steps=eval_steps, seed=int(config["seed"]), pruner=pruner)


def hpo_problems(section: dict, training: dict) -> list[str]:
    """A recipe's ``hpo`` section checked as ``hpo_study`` will check it: ``[]`` or what to change."""
    try:
        plan_study({**section, "training": section.get("training", training)}, identity={})
    except HpoConfigError as err:
        return [str(err)]
    except (TypeError, ValueError, AttributeError) as err:  # a wrongly shaped value; the schema names it too
        return [f"hpo: {err}"]
    return []


# --- the study ----------------------------------------------------------------------------------------------

def _pruner(settings: dict):
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=settings["n_startup_trials"],
                                       n_warmup_steps=settings["n_warmup_steps"])


def open_study(plan: StudyPlan):
    """The study, created or continued (``load_if_exists``); the sampler's seed moves on with the trial count so
    a continued study does not propose its first trials again."""
    import optuna

    storage = optuna.storages.RDBStorage(plan.storage, heartbeat_interval=HEARTBEAT_S)
    study = optuna.create_study(study_name=plan.study_name, storage=storage, direction="minimize",
                                load_if_exists=True, pruner=_pruner(plan.pruner))
    study.sampler = optuna.samplers.TPESampler(seed=plan.seed + len(study.trials),
                                               n_startup_trials=SAMPLER_STARTUP_TRIALS)
    study.set_user_attr("objective", OBJECTIVE)
    return study


def suggest(trial, space: dict[str, dict]) -> dict:
    out = {}
    for name, spec in space.items():
        if "choices" in spec:
            out[name] = trial.suggest_categorical(name, spec["choices"])
        elif SEARCHABLE[name] is int:
            out[name] = trial.suggest_int(name, spec["low"], spec["high"], step=spec.get("step", 1), log=spec["log"])
        else:
            out[name] = trial.suggest_float(name, spec["low"], spec["high"], step=spec.get("step"), log=spec["log"])
    return out


def run_study(plan: StudyPlan, run_trial: Callable[[int, dict, dict], dict], log: Callable[[str], None] = print):
    """Run ``plan.n_trials`` more trials. ``run_trial(number, settings, worker_hpo)`` trains one (passing
    ``worker_hpo`` to the worker as ``hpo_trial``) and returns the worker's summary; any exception it raises
    fails that trial (recorded with its error) and the study goes on."""
    import optuna

    study = open_study(plan)
    log(f"study {plan.study_name} in {redacted(plan.storage)}: {len(study.trials)} earlier trials, "
        f"{plan.n_trials} more")

    def objective(trial) -> float:
        sampled = suggest(trial, plan.space)
        worker_hpo = {"study_name": plan.study_name, "trial_number": trial.number, "pruner": plan.pruner}
        try:
            summary = run_trial(trial.number, plan.trial_settings(sampled), worker_hpo)
        except Exception as err:  # noqa: BLE001 - any training failure is this trial's, recorded as FAIL
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:2000])
            log(f"trial {trial.number} failed: {type(err).__name__}: {str(err)[:300]}")
            raise TrialCrashed(str(err)) from err
        outcome = summary.get("hpo_trial") or {}
        trial.set_user_attr("steps", int(summary.get("steps", 0)))
        trial.set_user_attr("train_seconds", summary.get("train_seconds"))
        if outcome.get("pruned"):
            trial.set_user_attr("pruned_at_step", outcome.get("pruned_at_step"))
            log(f"trial {trial.number} {sampled} pruned at step {outcome.get('pruned_at_step')}")
            raise optuna.TrialPruned(f"pruned at step {outcome.get('pruned_at_step')}")
        value = (summary.get("kept") or {}).get("best_eval_loss")
        if value is None:
            trial.set_user_attr("error", "the trial finished without an evaluation")
            raise TrialCrashed("no evaluation: is the held-out split empty?")
        log(f"trial {trial.number} {sampled}: best {OBJECTIVE} {value:.4f}")
        return float(value)

    study.optimize(objective, n_trials=plan.n_trials, catch=(TrialCrashed,), gc_after_trial=False)
    return study


# --- the worker's side --------------------------------------------------------------------------------------

def trial_callbacks(hpo_trial: dict | None) -> list:
    """In the worker: ``[ReportToTrial]`` reporting each eval loss to the study's trial and stopping the run when
    the median pruner prunes it (``.outcome`` says so); ``[]`` outside a study. Every rank asks the study, and
    rank 0's answer is broadcast, so all ranks stop at the same step."""
    if not hpo_trial:
        return []
    import optuna
    from transformers import TrainerCallback

    storage = os.environ.get(STORAGE_ENV)
    if not storage:
        raise HpoConfigError(f"a study trial needs the study's storage in ${STORAGE_ENV}; the hpo_study asset sets it")
    study = optuna.load_study(study_name=hpo_trial["study_name"], storage=storage,
                              pruner=_pruner(hpo_trial["pruner"]))
    # The trial was asked for in the Dagster process; Optuna has no public lookup of a trial by number.
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, hpo_trial["trial_number"])
    trial = optuna.trial.Trial(study, trial_id)

    class ReportToTrial(TrainerCallback):
        def __init__(self) -> None:
            self.outcome = {"study_name": hpo_trial["study_name"], "trial_number": hpo_trial["trial_number"],
                            "pruned": False, "reported": 0}

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if not metrics or "eval_loss" not in metrics:
                return
            prune = False
            if state.is_world_process_zero:
                trial.report(float(metrics["eval_loss"]), state.global_step)
                self.outcome["reported"] += 1
                prune = trial.should_prune()
            prune = _rank0_decision(prune, args)
            if prune:
                self.outcome.update(pruned=True, pruned_at_step=int(state.global_step))
                control.should_training_stop = True

    return [ReportToTrial()]


def _rank0_decision(decision: bool, args) -> bool:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return decision
    import torch

    flag = torch.tensor([int(decision)], device=args.device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


# --- the report ---------------------------------------------------------------------------------------------

def trial_rows(study) -> list[dict]:
    """One row per trial: number, state, objective, parameters, steps, pruned step, duration, error."""
    rows = []
    for t in study.trials:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and \
            t.datetime_start else None
        rows.append({"number": t.number, "state": t.state.name, OBJECTIVE: t.value, "params": dict(t.params),
                     "steps": t.user_attrs.get("steps"), "pruned_at_step": t.user_attrs.get("pruned_at_step"),
                     "seconds": round(seconds, 1) if seconds is not None else None,
                     "error": t.user_attrs.get("error", "")})
    return rows


def best_trial(study) -> dict | None:
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        return None
    best = study.best_trial
    return {"number": best.number, OBJECTIVE: best.value, "params": dict(best.params)}


def importances(study) -> dict[str, float]:
    """Parameter importances (Optuna's default fANOVA evaluator); ``{}`` until two complete trials differ."""
    import optuna

    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        return {}
    try:
        return {k: round(float(v), 4) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError):  # e.g. every complete trial has the same parameters
        return {}


def trials_markdown(rows: list[dict]) -> str:
    names = sorted({k for r in rows for k in r["params"]})
    head = ["trial", "state", OBJECTIVE, *names, "steps", "pruned at", "seconds", "error"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["number"], r["state"], _fmt(r[OBJECTIVE]), *(_fmt(r["params"].get(n)) for n in names),
                 _fmt(r["steps"]), _fmt(r["pruned_at_step"]), _fmt(r["seconds"]),
                 str(r["error"])[:80].replace("|", "/").replace("\n", " ")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def objective_png(rows: list[dict]) -> bytes:
    """The objective of each trial (pruned trials at their last reported value) and the best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    colors = {"COMPLETE": "tab:blue", "PRUNED": "tab:orange"}
    for state, color in colors.items():
        points = [(r["number"], r[OBJECTIVE]) for r in rows if r["state"] == state and r[OBJECTIVE] is not None]
        if points:
            ax.scatter(*zip(*points, strict=True), color=color, label=state.lower())
    failed = [r["number"] for r in rows if r["state"] == "FAIL"]
    for number in failed:
        ax.axvline(number, color="tab:red", alpha=0.3, linestyle=":")
    best, line = math.inf, []
    for r in rows:
        if r["state"] == "COMPLETE" and r[OBJECTIVE] is not None:
            best = min(best, r[OBJECTIVE])
        line.append((r["number"], best if best < math.inf else None))
    shown = [(n, b) for n, b in line if b is not None]
    if shown:
        ax.step(*zip(*shown, strict=True), where="post", color="black", label="best so far")
    ax.set_xlabel("trial" + (" (dotted: failed)" if failed else ""))
    ax.set_ylabel(OBJECTIVE)
    ax.legend(loc="best", fontsize=8)
    return _png(fig)


def importance_png(values: dict[str, float]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.5 * max(1, len(values))))
    if values:
        names = list(values)[::-1]
        ax.barh(names, [values[n] for n in names], color="tab:green")
        ax.set_xlabel(f"importance for {OBJECTIVE} (fANOVA)")
    else:
        ax.text(0.5, 0.5, "needs two complete trials with different parameters", ha="center", va="center")
        ax.set_axis_off()
    return _png(fig)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()
