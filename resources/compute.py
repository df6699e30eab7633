"""Where training runs: a local process, DeepSpeed or torchrun ranks, a multi-node hostfile, or a Kubernetes Job.

Every launch goes through Dagster Pipes, so the worker's logs and metrics stream into the run and a crash of the
trainer fails the step with its stderr while the Dagster process lives on.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Literal

from dagster import AssetExecutionContext, ConfigurableResource, PipesClientCompletedInvocation, PipesSubprocessClient
from pydantic import Field

from ft_assets.training.launch import (
    ComputeConfigError,
    deepspeed_config,
    k8s_pod_spec,
    launch_command,
    read_deepspeed_json,
    read_hostfile,
)
from resources.paths import default_mlflow_uri
from resources.pipes_messages import WholeLineTempFileMessageReader


class TrainingCompute(ConfigurableResource):
    """Describes where training runs; ``launch`` starts ``python -m ft_assets.training.worker`` there.

    The embedded default is one local process. ``deepspeed`` runs ``processes_per_node`` ranks (GPUs, or CPU
    ranks without CUDA) with a ZeRO config generated from these fields or read from ``deepspeed_config_path``;
    a ``hostfile`` spreads them over nodes. ``torchrun`` is plain DDP. ``kubernetes`` renders a pod that
    requests ``k8s_gpus`` GPUs and runs it through dagster-k8s' ``PipesK8sClient``.
    """

    launcher: Literal["process", "deepspeed", "torchrun", "kubernetes"] = "process"
    python: str = sys.executable
    num_threads: int = Field(0, description="torch threads per rank; 0: torch's default (all cores)")
    processes_per_node: int = Field(1, description="GPUs per node, or CPU ranks per node without CUDA")
    num_nodes: int = 1
    hostfile: str = Field("", description="MPI-style hostfile ('worker-0 slots=8') for multi-node DeepSpeed")
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    node_rank: int = 0
    zero_stage: int = Field(2, description="DeepSpeed ZeRO stage 0-3")
    offload_optimizer: bool = False
    offload_params: bool = False
    deepspeed_config_path: str = Field("", description="a DeepSpeed JSON used as is instead of the generated one")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 on a GPU that supports it, fp32 on CPU")
    mlflow_tracking_uri: str = Field(default_factory=default_mlflow_uri,
                                     description="where per-step curves go; '' turns MLflow off")
    mlflow_experiment: str = "ftops"
    mlflow_ui_url: str = Field("http://127.0.0.1:5000", description="an MLflow UI over that store, for links")
    k8s_image: str = ""
    k8s_namespace: str = "default"
    k8s_gpus: int = 1
    k8s_cpu: str = "8"
    k8s_memory: str = "64Gi"
    k8s_node_selector: dict[str, str] = {}
    k8s_service_account: str = ""
    k8s_volume_claim: str = Field("", description="PVC holding the artifact store, mounted at k8s_mount_path")
    k8s_mount_path: str = ""

    def mlflow_run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.mlflow_ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    @property
    def world_size(self) -> int:
        if self.launcher in ("deepspeed", "torchrun"):
            if self.hostfile:
                return sum(slots for _, slots in read_hostfile(self.hostfile)[: self.num_nodes])
            return self.processes_per_node * self.num_nodes
        return max(1, self.k8s_gpus) if self.launcher == "kubernetes" else 1

    def deepspeed(self) -> dict | None:
        """The DeepSpeed config the worker gets (``None`` unless the launcher is DeepSpeed)."""
        if self.launcher != "deepspeed" and not (self.launcher == "kubernetes" and self.k8s_gpus > 1):
            return None
        if self.deepspeed_config_path:
            return read_deepspeed_json(self.deepspeed_config_path)
        return deepspeed_config(self.zero_stage, self.offload_optimizer, self.offload_params)

    def validate(self) -> None:
        """Fail before any compute when the settings cannot work, saying what to change."""
        if self.processes_per_node < 1 or self.num_nodes < 1:
            raise ComputeConfigError("processes_per_node and num_nodes must be at least 1")
        if self.num_nodes > 1 and self.launcher == "deepspeed" and not self.hostfile:
            raise ComputeConfigError("multi-node DeepSpeed needs a hostfile: set hostfile or num_nodes=1")
        if self.hostfile:
            hosts = read_hostfile(self.hostfile)
            if len(hosts) < self.num_nodes:
                raise ComputeConfigError(f"hostfile {self.hostfile} lists {len(hosts)} hosts, fewer than "
                                         f"num_nodes={self.num_nodes}")
        self.deepspeed()  # parses a user's JSON / checks the ZeRO fields
        if self.launcher == "kubernetes":
            self.pod_spec()
        if self.precision in ("bf16", "fp16") and self.launcher != "kubernetes":
            import torch

            if not torch.cuda.is_available() and self.precision == "fp16":
                raise ComputeConfigError("fp16 mixed precision needs a CUDA GPU: use precision auto, bf16 or fp32")

    def pod_spec(self) -> dict:
        return k8s_pod_spec(self.k8s_image, self.k8s_gpus, self.k8s_cpu, self.k8s_memory, self.k8s_node_selector,
                            self.k8s_service_account, self.k8s_volume_claim, self.k8s_mount_path)

    def command(self, params_file: str) -> list[str]:
        if self.launcher == "kubernetes" and self.k8s_gpus > 1:
            # One pod, one rank per GPU: DeepSpeed inside the pod; ranks read params from the Pipes context.
            return launch_command("deepspeed", self.python, "", self.k8s_gpus)[:-1]
        return launch_command(self.launcher, self.python, params_file, self.processes_per_node, self.num_nodes,
                              self.hostfile, self.master_addr, self.master_port, self.node_rank)

    def env(self) -> dict[str, str]:
        env = {"TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
        if self.num_threads:
            env["OMP_NUM_THREADS"] = str(self.num_threads)
        return env

    def launch(self, context: AssetExecutionContext, params: dict) -> PipesClientCompletedInvocation:
        """Run the worker with ``params`` (extended with the DeepSpeed config and precision) to completion."""
        self.validate()
        from ft_assets.training.sft import resolve_precision

        precision = resolve_precision(self.precision) if self.launcher != "kubernetes" else self.precision
        params = {**params, "precision": precision, "deepspeed": self.deepspeed()}
        if self.launcher == "kubernetes":
            from dagster_k8s import PipesK8sClient

            command = self.command("")
            context.log.info(f"launching on Kubernetes ({self.k8s_namespace}): {' '.join(command)}")
            return PipesK8sClient().run(context=context, image=self.k8s_image, command=command,
                                        namespace=self.k8s_namespace, extras={"params": params}, env=self.env(),
                                        base_pod_spec=self.pod_spec())
        # Non-zero ranks cannot share rank 0's Pipes channel: they read the same params from this file.
        output_dir = Path(params.get("output_dir") or tempfile.gettempdir())
        params_file = output_dir.parent / f".{output_dir.name}.params.json"
        params_file.write_text(json.dumps(params, default=str))
        command = self.command(str(params_file))
        context.log.info(f"launching: {' '.join(command)}")
        try:
            return PipesSubprocessClient(message_reader=WholeLineTempFileMessageReader()).run(
                context=context, command=command, extras={"params": params}, env={**os.environ, **self.env()})
        finally:
            params_file.unlink(missing_ok=True)
