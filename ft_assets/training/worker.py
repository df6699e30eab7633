"""The training worker: ``python -m ft_assets.training.worker``.

Launched by the training assets through Dagster Pipes (directly, or under the
``deepspeed`` / ``torchrun`` launcher), it streams every logged step (loss,
learning rate, grad norm, tokens/s, peak memory) back into the run and reports
the final summary. ``params["task"]`` picks the trainer: ``sft`` (default), ``dpo`` or
``grpo``. Run by hand it takes a JSON params file:
``python -m ft_assets.training.worker params.json``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable

from ft_assets.training.core import is_main_process

# task name -> "module:function"; each function takes (params: dict, on_log) and returns a summary dict.
TASKS = {
    "sft": "ft_assets.training.sft:run_task",
    "dpo": "ft_assets.training.dpo:run_task",
    "grpo": "ft_assets.training.grpo:run_task",
}


def task_function(task: str) -> Callable[[dict, Callable[[dict], None]], dict]:
    if task not in TASKS:
        raise ValueError(f"unknown training task {task!r}; known: {sorted(TASKS)}")
    module, name = TASKS[task].split(":")
    return getattr(importlib.import_module(module), name)


def read_params(argv: list[str]) -> dict:
    """The params: from the file among the arguments (launchers add flags such as ``--local_rank=0``), else
    read-only from the Pipes context (a pod's non-zero ranks), without opening Pipes' message channel."""
    files = [a for a in argv if not a.startswith("--")]
    if files:
        return json.loads(open(files[-1]).read())
    from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, PipesDefaultContextLoader, PipesEnvVarParamsLoader

    if DAGSTER_PIPES_CONTEXT_ENV_VAR not in os.environ:
        raise SystemExit("usage: python -m ft_assets.training.worker PARAMS.json")
    with PipesDefaultContextLoader().load_context(PipesEnvVarParamsLoader().load_context_params()) as data:
        return data["extras"]["params"]


def main() -> None:
    from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

    if DAGSTER_PIPES_CONTEXT_ENV_VAR not in os.environ or not is_main_process():
        # By hand, or a non-zero rank of a distributed launch: the params file is argv[1], and
        # only rank 0 talks to Dagster (the launcher gives every rank the same command line).
        params = read_params(sys.argv[1:])
        run = task_function(params.get("task", "sft"))
        summary = run(params, lambda r: print(json.dumps(r), flush=True) if is_main_process() else None)
        if is_main_process():
            print(json.dumps(summary, default=str))
        return
    with open_dagster_pipes() as pipes:
        params = pipes.get_extra("params")
        max_steps = params.get("max_steps", "?")

        def stream(record: dict) -> None:
            if "eval_loss" in record and "loss" not in record:  # an evaluation during training
                pipes.log.info(f"step {record['step']}/{max_steps} eval_loss {record['eval_loss']:.4f}")
                pipes.report_custom_message({"kind": "eval_step", **record})
                return
            pipes.log.info(
                f"step {record['step']}/{max_steps} loss {record['loss']:.4f} "
                f"lr {record.get('learning_rate', 0.0):.2e} grad_norm {record.get('grad_norm', 0.0):.3f} "
                f"tokens/s {record.get('tokens_per_s', 0.0)} peak_mem_mb {record.get('peak_memory_mb', 0)}"
                + "".join(f" {k} {record[k]:.4f}" for k in ("reward", "kl") if k in record)  # GRPO's
            )
            pipes.report_custom_message({"kind": "train_step", **record})

        summary = task_function(params.get("task", "sft"))(params, stream)
        pipes.report_custom_message({"kind": "train_summary", **summary})


if __name__ == "__main__":
    main()
