"""Where training runs: a local process, DeepSpeed or torchrun ranks (DDP or FSDP2), a hostfile, or a Kubernetes Job.

``TrainingCompute`` (resource key ``training_compute``) is a small base (interpreter, threads, precision, MLflow)
plus ``launcher``: one config class per launcher, chosen by its ``kind``, so the launchpad shows only the chosen
launcher's fields. Run config shape::

    resources: {training_compute: {config: {launcher: {deepspeed: {processes_per_node: 2, zero_stage: 2}}}}}

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

from dagster import (
    AssetExecutionContext,
    Config,
    ConfigurableResource,
    PipesClientCompletedInvocation,
    PipesSubprocessClient,
)
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


class _Ranks(Config):
    """Ranks on one or more nodes (GPUs, or CPU ranks over gloo without CUDA)."""

    processes_per_node: int = Field(1, description="GPUs per node, or CPU ranks per node without CUDA")
    num_nodes: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    node_rank: int = 0

    def world_size(self) -> int:
        return self.processes_per_node * self.num_nodes

    def validate_ranks(self) -> None:
        if self.processes_per_node < 1 or self.num_nodes < 1:
            raise ComputeConfigError("processes_per_node and num_nodes must be at least 1")

    def command(self, python: str, params_file: str) -> list[str]:
        return launch_command("torchrun", python, params_file, self.processes_per_node, self.num_nodes, "",
                              self.master_addr, self.master_port, self.node_rank)


class ProcessLauncher(Config):
    """One local worker process (the embedded default)."""

    kind: Literal["process"] = "process"

    def world_size(self) -> int:
        return 1

    def validate_ranks(self) -> None:
        return None

    def command(self, python: str, params_file: str) -> list[str]:
        return launch_command("process", python, params_file)


class DeepSpeedLauncher(_Ranks):
    """DeepSpeed ranks with a ZeRO config generated from these fields or read from ``deepspeed_config_path``;
    a ``hostfile`` spreads them over nodes."""

    kind: Literal["deepspeed"] = "deepspeed"
    hostfile: str = Field("", description="MPI-style hostfile ('worker-0 slots=8') for multi-node DeepSpeed")
    zero_stage: int = Field(2, description="DeepSpeed ZeRO stage 0-3")
    offload_optimizer: bool = False
    offload_params: bool = False
    deepspeed_config_path: str = Field("", description="a DeepSpeed JSON used as is instead of the generated one")

    def world_size(self) -> int:
        if self.hostfile:
            return sum(slots for _, slots in read_hostfile(self.hostfile)[: self.num_nodes])
        return super().world_size()

    def validate_ranks(self) -> None:
        super().validate_ranks()
        if self.num_nodes > 1 and not self.hostfile:
            raise ComputeConfigError("multi-node DeepSpeed needs a hostfile: set hostfile or num_nodes=1")
        if self.hostfile:
            hosts = read_hostfile(self.hostfile)
            if len(hosts) < self.num_nodes:
                raise ComputeConfigError(f"hostfile {self.hostfile} lists {len(hosts)} hosts, fewer than "
                                         f"num_nodes={self.num_nodes}")

    def deepspeed(self) -> dict:
        if self.deepspeed_config_path:
            return read_deepspeed_json(self.deepspeed_config_path)
        return deepspeed_config(self.zero_stage, self.offload_optimizer, self.offload_params)

    def command(self, python: str, params_file: str) -> list[str]:
        return launch_command("deepspeed", python, params_file, self.processes_per_node, self.num_nodes,
                              self.hostfile, self.master_addr, self.master_port, self.node_rank)


class TorchrunLauncher(_Ranks):
    """Plain DDP under torchrun: every rank holds the whole model."""

    kind: Literal["torchrun"] = "torchrun"


class FsdpLauncher(_Ranks):
    """FSDP2 (PyTorch's ``fully_shard``, through accelerate) under torchrun: parameters, gradients and
    optimizer state sharded over the ranks; LoRA or full fine-tuning."""

    kind: Literal["fsdp"] = "fsdp"
    sharding: Literal["full_shard", "shard_grad_op"] = Field(
        "full_shard", description="full_shard (ZeRO-3-like: re-shard parameters after forward) or shard_grad_op "
                                  "(ZeRO-2-like: keep them gathered until backward)")
    cpu_offload: bool = Field(False, description="parameters and gradients on CPU between uses (needs CUDA)")

    def fsdp(self) -> dict:
        return {"sharding": self.sharding, "cpu_offload": self.cpu_offload}

    def validate_ranks(self) -> None:
        super().validate_ranks()
        if self.cpu_offload:
            import torch

            if not torch.cuda.is_available():
                raise ComputeConfigError("fsdp cpu_offload moves GPU memory to the host: without CUDA there is "
                                         "nothing to offload; set cpu_offload false")


class KubernetesLauncher(Config):
    """A Kubernetes Job through dagster-k8s' ``PipesK8sClient``; several GPUs run DeepSpeed inside the pod."""

    kind: Literal["kubernetes"] = "kubernetes"
    image: str = Field("", description="an image with ftops installed")
    namespace: str = "default"
    gpus: int = 1
    cpu: str = "8"
    memory: str = "64Gi"
    node_selector: dict[str, str] = {}
    service_account: str = ""
    volume_claim: str = Field("", description="PVC holding the artifact store, mounted at mount_path")
    mount_path: str = ""
    zero_stage: int = Field(2, description="DeepSpeed ZeRO stage for a pod with several GPUs")

    def world_size(self) -> int:
        return max(1, self.gpus)

    def validate_ranks(self) -> None:
        self.pod_spec()

    def deepspeed(self) -> dict | None:
        return deepspeed_config(self.zero_stage) if self.gpus > 1 else None

    def pod_spec(self) -> dict:
        return k8s_pod_spec(self.image, self.gpus, self.cpu, self.memory, self.node_selector, self.service_account,
                            self.volume_claim, self.mount_path)

    def command(self, python: str, params_file: str) -> list[str]:
        if self.gpus > 1:
            # One pod, one rank per GPU: DeepSpeed inside the pod; ranks read params from the Pipes context.
            return launch_command("deepspeed", python, "", self.gpus)[:-1]
        return launch_command("kubernetes", python, params_file)


Launcher = ProcessLauncher | DeepSpeedLauncher | TorchrunLauncher | FsdpLauncher | KubernetesLauncher


class TrainingCompute(ConfigurableResource):
    """Describes where training runs; ``launch`` starts ``python -m ft_assets.training.worker`` there."""

    launcher: Launcher = Field(default_factory=ProcessLauncher, discriminator="kind",
                               description="process, deepspeed, torchrun (DDP), fsdp (FSDP2) or kubernetes")
    python: str = sys.executable
    num_threads: int = Field(0, description="torch threads per rank; 0: torch's default (all cores)")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 on a GPU or CPU with native bf16, fp32 otherwise")
    mlflow_tracking_uri: str = Field(default_factory=default_mlflow_uri,
                                     description="where per-step curves go; '' turns MLflow off")
    mlflow_experiment: str = "ftops"
    mlflow_ui_url: str = Field("http://127.0.0.1:5000", description="an MLflow UI over that store, for links")

    @property
    def kind(self) -> str:
        return self.launcher.kind

    def mlflow_run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.mlflow_ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    @property
    def world_size(self) -> int:
        return self.launcher.world_size()

    def deepspeed(self) -> dict | None:
        """The DeepSpeed config the worker gets (``None`` unless the launcher runs DeepSpeed)."""
        return self.launcher.deepspeed() if hasattr(self.launcher, "deepspeed") else None

    def fsdp(self) -> dict | None:
        """The FSDP settings the worker gets (``None`` unless the launcher is fsdp)."""
        return self.launcher.fsdp() if isinstance(self.launcher, FsdpLauncher) else None

    def fingerprint(self) -> dict:
        """What about where training runs changes its result, and so belongs in the config hash."""
        facts = {"launcher": self.kind, "world_size": self.world_size, "precision": self.precision}
        if self.fsdp():
            facts["fsdp"] = self.fsdp()
        return facts

    def validate(self) -> None:
        """Fail before any compute when the settings cannot work, saying what to change."""
        self.launcher.validate_ranks()
        self.deepspeed()  # parses a user's JSON / checks the ZeRO fields
        if self.precision == "fp16" and self.kind != "kubernetes":
            import torch

            if not torch.cuda.is_available():
                raise ComputeConfigError("fp16 mixed precision needs a CUDA GPU: use precision auto, bf16 or fp32")

    def pod_spec(self) -> dict:
        if not isinstance(self.launcher, KubernetesLauncher):
            raise ComputeConfigError(f"a pod spec needs the kubernetes launcher, not {self.kind}")
        return self.launcher.pod_spec()

    def command(self, params_file: str) -> list[str]:
        return self.launcher.command(self.python, params_file)

    def env(self) -> dict[str, str]:
        env = {"TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
        if self.num_threads:
            env["OMP_NUM_THREADS"] = str(self.num_threads)
        return env

    def worker_params(self, params: dict) -> dict:
        """``params`` extended with what the launcher decides: precision, DeepSpeed config, FSDP settings."""
        from ft_assets.training.core import resolve_precision

        precision = resolve_precision(self.precision) if self.kind != "kubernetes" else self.precision
        return {**params, "precision": precision, "deepspeed": self.deepspeed(), "fsdp": self.fsdp(),
                "num_threads": params.get("num_threads") or self.num_threads}

    def launch(self, context: AssetExecutionContext, params: dict,
               env: dict[str, str] | None = None) -> PipesClientCompletedInvocation:
        """Run the worker with ``params`` (see ``worker_params``) to completion; ``env``: extra environment, for
        what must not be in the logged params (a study's storage URL)."""
        self.validate()
        params = self.worker_params(params)
        if isinstance(self.launcher, KubernetesLauncher):
            from dagster_k8s import PipesK8sClient

            command = self.command("")
            context.log.info(f"launching on Kubernetes ({self.launcher.namespace}): {' '.join(command)}")
            return PipesK8sClient().run(context=context, image=self.launcher.image, command=command,
                                        namespace=self.launcher.namespace, extras={"params": params},
                                        env={**self.env(), **(env or {})}, base_pod_spec=self.pod_spec())
        # Non-zero ranks cannot share rank 0's Pipes channel: they read the same params from this file.
        output_dir = Path(params.get("output_dir") or tempfile.gettempdir())
        params_file = output_dir.parent / f".{output_dir.name}.params.json"
        params_file.write_text(json.dumps(params, default=str))
        command = self.command(str(params_file))
        context.log.info(f"launching: {' '.join(command)}")
        try:
            return PipesSubprocessClient(message_reader=WholeLineTempFileMessageReader()).run(
                context=context, command=command, extras={"params": params},
                env={**os.environ, **self.env(), **(env or {})})
        finally:
            params_file.unlink(missing_ok=True)
