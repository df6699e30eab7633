"""How the training worker is started: DeepSpeed configs, launcher command lines, a Kubernetes pod spec.

Plain functions over plain data, so each can be checked without starting anything; the
``TrainingCompute`` resource picks one and hands it to Dagster Pipes.
"""

from __future__ import annotations

import json
from pathlib import Path

LAUNCHERS = ("process", "deepspeed", "torchrun", "kubernetes")
WORKER_MODULE = "ft_assets.training.worker"


class ComputeConfigError(ValueError):
    """The compute settings cannot work; the message says what to change."""


def deepspeed_config(zero_stage: int = 2, offload_optimizer: bool = False, offload_params: bool = False,
                     precision: str = "auto") -> dict:
    """A DeepSpeed config for the Hugging Face integration; ``auto`` fields are filled from the trainer's args."""
    if zero_stage not in (0, 1, 2, 3):
        raise ComputeConfigError(f"zero_stage must be 0, 1, 2 or 3, not {zero_stage}")
    if offload_params and zero_stage != 3:
        raise ComputeConfigError("offload_params needs ZeRO stage 3 (only stage 3 partitions parameters): "
                                 "set zero_stage=3 or offload_params=false")
    if offload_optimizer and zero_stage == 0:
        raise ComputeConfigError("offload_optimizer needs ZeRO stage 1, 2 or 3: raise zero_stage")
    zero: dict = {"stage": zero_stage}
    if zero_stage >= 2:
        zero.update(overlap_comm=False, contiguous_gradients=True, reduce_scatter=True)
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": "auto",
        "zero_optimization": zero,
        # "auto": the trainer fills these from its own bf16/fp16 flags, so the two never disagree.
        "bf16": {"enabled": "auto" if precision == "auto" else precision == "bf16"},
        "fp16": {"enabled": "auto" if precision == "auto" else precision == "fp16"},
    }


def read_deepspeed_json(path: str | Path) -> dict:
    """A user's DeepSpeed JSON file, refused with the parse error's line and column if it is not valid."""
    file = Path(path)
    if not file.is_file():
        raise ComputeConfigError(f"DeepSpeed config {file} does not exist: fix deepspeed_config_path")
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ComputeConfigError(f"DeepSpeed config {file} is not valid JSON (line {err.lineno}, column "
                                 f"{err.colno}: {err.msg}): fix the file or clear deepspeed_config_path") from err
    if not isinstance(config, dict):
        raise ComputeConfigError(f"DeepSpeed config {file} must be a JSON object, not {type(config).__name__}")
    stage = config.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ComputeConfigError(f"DeepSpeed config {file}: zero_optimization.stage must be 0-3, not {stage!r}")
    return config


def read_hostfile(path: str | Path) -> list[tuple[str, int]]:
    """``(host, slots)`` pairs from an MPI-style hostfile (``worker-0 slots=8``)."""
    file = Path(path)
    if not file.is_file():
        raise ComputeConfigError(f"hostfile {file} does not exist: fix hostfile or clear it for one node")
    hosts = []
    for line_no, line in enumerate(file.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        slots = [p for p in parts[1:] if p.startswith("slots=")]
        try:
            hosts.append((parts[0], int(slots[0].split("=", 1)[1]) if slots else 1))
        except ValueError as err:
            raise ComputeConfigError(f"hostfile {file} line {line_no}: {line!r} is not 'host slots=N'") from err
    if not hosts:
        raise ComputeConfigError(f"hostfile {file} names no hosts")
    return hosts


def launch_command(launcher: str, python: str, params_file: str, processes_per_node: int = 1, num_nodes: int = 1,
                   hostfile: str = "", master_addr: str = "127.0.0.1", master_port: int = 29500,
                   node_rank: int = 0) -> list[str]:
    """The command line that starts the worker on this machine (or, for DeepSpeed + hostfile, on every host)."""
    if launcher not in LAUNCHERS:
        raise ComputeConfigError(f"unknown launcher {launcher!r}; choose one of {', '.join(LAUNCHERS)}")
    if launcher in ("process", "kubernetes"):
        return [python, "-m", WORKER_MODULE, params_file]
    if launcher == "deepspeed":
        bin_dir = Path(python).parent
        command = [str(bin_dir / "deepspeed") if (bin_dir / "deepspeed").exists() else "deepspeed"]
        if hostfile:
            command += ["--hostfile", hostfile, "--num_nodes", str(num_nodes)]
        command += ["--num_gpus", str(processes_per_node), "--master_addr", master_addr,
                    "--master_port", str(master_port)]
        return [*command, "--module", WORKER_MODULE, params_file]
    command = [python, "-m", "torch.distributed.run", "--nproc_per_node", str(processes_per_node),
               "--nnodes", str(num_nodes)]
    if num_nodes > 1:
        command += ["--node_rank", str(node_rank), "--master_addr", master_addr, "--master_port", str(master_port)]
    else:
        command += ["--master_port", str(master_port)]
    return [*command, "-m", WORKER_MODULE, params_file]


def k8s_pod_spec(image: str, gpus: int, cpu: str, memory: str, node_selector: dict[str, str] | None = None,
                 service_account: str = "", volume_claim: str = "", mount_path: str = "",
                 shm_size: str = "16Gi") -> dict:
    """The pod spec for a training Job on Kubernetes: GPU limits, shared memory for NCCL, the artifact volume."""
    if not image:
        raise ComputeConfigError("the kubernetes launcher needs image (an image with ftops installed)")
    limits = {"cpu": cpu, "memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}]
    volumes: list[dict] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}}]
    if volume_claim:
        if not mount_path:
            raise ComputeConfigError("the kubernetes launcher's volume_claim needs mount_path (where artifacts "
                                     "are mounted)")
        mounts.append({"name": "artifacts", "mountPath": mount_path})
        volumes.append({"name": "artifacts", "persistentVolumeClaim": {"claimName": volume_claim}})
    spec: dict = {
        "restartPolicy": "Never",
        "containers": [{"name": "dagster-pipes-execution", "image": image,
                        "resources": {"requests": dict(limits), "limits": limits}, "volumeMounts": mounts}],
        "volumes": volumes,
    }
    if gpus:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if service_account:
        spec["serviceAccountName"] = service_account
    return spec


# Fields of the training_compute resource itself; every other key belongs to the chosen launcher.
COMPUTE_BASE_FIELDS = ("python", "num_threads", "precision", "mlflow_tracking_uri", "mlflow_experiment",
                       "mlflow_ui_url")


def compute_run_config(flat: dict) -> dict:
    """The ``training_compute`` resource config from the flat shape of recipes and older run configs
    (``{launcher: deepspeed, zero_stage: 2, precision: bf16}``) to the nested one the resource takes
    (``{launcher: {deepspeed: {zero_stage: 2}}, precision: bf16}``); a nested config passes unchanged.
    Kubernetes' old ``k8s_`` prefixes are dropped (``k8s_gpus`` -> ``gpus``)."""
    launcher = flat.get("launcher", "process")
    if isinstance(launcher, dict):
        return dict(flat)
    if launcher not in (*LAUNCHERS, "fsdp"):
        raise ComputeConfigError(f"unknown launcher {launcher!r}; choose one of {', '.join((*LAUNCHERS, 'fsdp'))}")
    base = {k: v for k, v in flat.items() if k in COMPUTE_BASE_FIELDS}
    own = {k.removeprefix("k8s_"): v for k, v in flat.items() if k not in COMPUTE_BASE_FIELDS and k != "launcher"}
    return {**base, "launcher": {launcher: own}}
