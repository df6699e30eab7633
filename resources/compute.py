"""Where training runs: launches the worker process through Dagster Pipes."""

from __future__ import annotations

import os
import sys

from dagster import AssetExecutionContext, ConfigurableResource, PipesClientCompletedInvocation, PipesSubprocessClient

from resources.pipes_messages import WholeLineTempFileMessageReader


class TrainingCompute(ConfigurableResource):
    """Runs ``python -m ft_assets.training.worker`` as a child process on this machine.

    The child streams logs and metrics back through Pipes; if it crashes, the
    step fails with its stderr and the Dagster process lives on.
    """

    python: str = sys.executable
    num_threads: int = 0  # 0: torch's default (all cores)

    def launch(self, context: AssetExecutionContext, params: dict) -> PipesClientCompletedInvocation:
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        if self.num_threads:
            env["OMP_NUM_THREADS"] = str(self.num_threads)
        return PipesSubprocessClient(message_reader=WholeLineTempFileMessageReader()).run(
            context=context,
            command=[self.python, "-m", "ft_assets.training.worker"],
            extras={"params": params},
            env=env,
        )
