"""The training worker: ``python -m ft_assets.training.worker``.

Launched by the ``sft_adapter`` asset through Dagster Pipes, it streams every
logged step (loss, learning rate, grad norm, tokens/s) back into the run and
reports the final summary. Run by hand it takes a JSON params file:
``python -m ft_assets.training.worker params.json``.
"""

from __future__ import annotations

import json
import os
import sys

from ft_assets.training.sft import SFTParams, train_sft


def main() -> None:
    from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

    if DAGSTER_PIPES_CONTEXT_ENV_VAR not in os.environ:
        params = SFTParams.from_dict(json.loads(open(sys.argv[1]).read()))
        print(json.dumps(train_sft(params, on_log=lambda r: print(json.dumps(r), flush=True)), default=str))
        return
    with open_dagster_pipes() as pipes:
        params = SFTParams.from_dict(pipes.get_extra("params"))

        def stream(record: dict) -> None:
            pipes.log.info(
                f"step {record['step']}/{params.max_steps} loss {record['loss']:.4f} "
                f"lr {record['learning_rate']:.2e} grad_norm {record['grad_norm']:.3f} "
                f"tokens/s {record['tokens_per_s']}"
            )
            pipes.report_custom_message({"kind": "train_step", **record})

        summary = train_sft(params, on_log=stream)
        pipes.report_custom_message({"kind": "train_summary", **summary})


if __name__ == "__main__":
    main()
