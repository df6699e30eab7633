"""Config-time refusals, launch commands and the label-mask gate: everything decided before compute is spent."""

from __future__ import annotations

import json
import sys

import pytest
from transformers import AutoTokenizer

from ft_assets.training.launch import (
    ComputeConfigError,
    deepspeed_config,
    k8s_pod_spec,
    launch_command,
    read_deepspeed_json,
    read_hostfile,
)
from ft_assets.training.masking import IGNORE_INDEX, check_chat_examples, check_label_mask, tokenize_prompt_completion
from ft_assets.training.sft import SFTParams
from ft_assets.training.validate import TrainingConfigError, qlora_unavailable_reason, validate_sft
from resources import TrainingCompute
from resources.compute import DeepSpeedLauncher, KubernetesLauncher
from tests.test_training import _write_train


@pytest.fixture()
def train_file(tmp_path):
    return _write_train(tmp_path / "train.jsonl", n=16)


def _params(model_dir, train_file, **overrides) -> SFTParams:
    return SFTParams(base_model_dir=str(model_dir), train_path=str(train_file), output_dir="", **overrides)


# --- the label-mask gate -------------------------------------------------------------------------------------------

def test_mask_gate_passes_on_the_chat_template_and_eos(scratch_model_dir, train_file):
    tokenizer = AutoTokenizer.from_pretrained(scratch_model_dir)
    rows = [json.loads(line) for line in train_file.read_text().splitlines()]
    report = check_chat_examples(tokenizer, rows, max_length=256)
    assert report.passed, report.summary()
    assert 0 < report.min_trained_share <= report.max_trained_share < 1


def test_mask_gate_catches_unmasked_prompt_missing_eos_and_truncation(scratch_model_dir, train_file):
    tokenizer = AutoTokenizer.from_pretrained(scratch_model_dir)
    row = json.loads(train_file.read_text().splitlines()[0])
    reply = row["completion"][-1]["content"]
    ids, labels = tokenize_prompt_completion(tokenizer, row["prompt"], row["completion"])

    unmasked = check_label_mask(tokenizer, [ids], [list(ids)], [reply])
    assert not unmasked.passed and "prompt is not masked" in unmasked.problems[0].reason

    # The template ends turns with <|im_end|>; a tokenizer whose EOS is another token never learns to stop.
    tokenizer.eos_token = "<|im_start|>"
    no_eos = check_label_mask(tokenizer, [ids], [labels], [reply])
    assert not no_eos.passed and "EOS" in no_eos.problems[0].reason

    tokenizer = AutoTokenizer.from_pretrained(scratch_model_dir)
    short = check_chat_examples(tokenizer, [row], max_length=8)  # the prompt alone fills max_length
    assert not short.passed and "no token is trained" in short.problems[0].reason

    cut = check_chat_examples(tokenizer, [row], max_length=len(ids) - 3)  # max_length cuts the reply
    assert not cut.passed and "cut off at max_length" in cut.problems[0].reason

    shifted = [IGNORE_INDEX] * (len(labels) - 1) + [labels[-1]]  # only the last token trained
    assert not check_label_mask(tokenizer, [ids], [shifted], [reply]).passed


# --- config-time refusals --------------------------------------------------------------------------------------------

def test_validation_accepts_the_defaults(scratch_model_dir, train_file):
    facts = validate_sft(_params(scratch_model_dir, train_file, per_device_train_batch_size=8))
    assert facts["train_rows"] == 16
    assert {"q_proj", "v_proj", "down_proj"} <= set(facts["linear_modules"])


@pytest.mark.parametrize(("overrides", "message"), [
    ({"method": "lokr"}, "unknown method 'lokr'"),
    ({"target_modules": ["query_key_value"]}, "match no module"),
    ({"per_device_train_batch_size": 8, "gradient_accumulation_steps": 4}, "dataset too small for one step"),
    ({"max_steps": 0}, "max_steps must be at least 1"),
])
def test_validation_refuses_bad_configs_with_what_to_change(scratch_model_dir, train_file, overrides, message):
    with pytest.raises(TrainingConfigError, match=message):
        validate_sft(_params(scratch_model_dir, train_file, **overrides))


def test_validation_refuses_a_missing_base_model(tmp_path, train_file):
    with pytest.raises(TrainingConfigError, match="base model not found"):
        validate_sft(_params(tmp_path / "nowhere", train_file))


def test_dataset_too_small_counts_every_rank(scratch_model_dir, train_file):
    validate_sft(_params(scratch_model_dir, train_file, per_device_train_batch_size=8), world_size=2)
    with pytest.raises(TrainingConfigError, match="x 4 ranks"):
        validate_sft(_params(scratch_model_dir, train_file, per_device_train_batch_size=8), world_size=4)


def test_qlora_refused_where_bitsandbytes_cannot_run(scratch_model_dir, train_file, monkeypatch):
    qlora_unavailable_reason.cache_clear()
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # what a machine without it looks like to `import`
    with pytest.raises(TrainingConfigError, match="QLoRA cannot run here: bitsandbytes cannot be imported"):
        validate_sft(_params(scratch_model_dir, train_file, method="qlora"))
    qlora_unavailable_reason.cache_clear()


def test_qlora_accepted_where_bitsandbytes_runs(scratch_model_dir, train_file):
    qlora_unavailable_reason.cache_clear()
    validate_sft(_params(scratch_model_dir, train_file, method="qlora"))


def test_deepspeed_json_that_does_not_parse_is_refused(tmp_path):
    bad = tmp_path / "ds.json"
    bad.write_text('{"zero_optimization": {"stage": 2,}}')
    with pytest.raises(ComputeConfigError, match=r"not valid JSON \(line 1"):
        TrainingCompute(launcher=DeepSpeedLauncher(deepspeed_config_path=str(bad))).validate()
    bad.write_text('{"zero_optimization": {"stage": 5}}')
    with pytest.raises(ComputeConfigError, match="stage must be 0-3"):
        read_deepspeed_json(bad)
    with pytest.raises(ComputeConfigError, match="does not exist"):
        TrainingCompute(launcher=DeepSpeedLauncher(deepspeed_config_path=str(tmp_path / "none.json"))).validate()


def test_unknown_method_in_run_config_fails_before_the_run_starts(tmp_path):
    from dagster import AssetSpec, DagsterInvalidConfigError, materialize

    from ft_assets.training.assets import sft_adapter
    from resources import ArtifactStore

    with pytest.raises(DagsterInvalidConfigError, match="lokr"):
        materialize([sft_adapter, AssetSpec("base_model"), AssetSpec("sft_dataset")],
                    run_config={"ops": {"sft_adapter": {"config": {"method": "lokr"}}}},
                    resources={"artifact_store": ArtifactStore(root=str(tmp_path)),
                               "training_compute": TrainingCompute()})


# --- where training runs ---------------------------------------------------------------------------------------------

def test_deepspeed_config_from_fields():
    zero2 = deepspeed_config(2)
    assert zero2["zero_optimization"]["stage"] == 2 and zero2["train_micro_batch_size_per_gpu"] == "auto"
    assert zero2["bf16"] == {"enabled": "auto"}  # the trainer's own precision decides
    zero3 = deepspeed_config(3, offload_optimizer=True, offload_params=True)
    assert zero3["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert zero3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    with pytest.raises(ComputeConfigError, match="offload_params needs ZeRO stage 3"):
        deepspeed_config(2, offload_params=True)


def test_launch_commands(tmp_path):
    python = sys.executable
    assert launch_command("process", python, "p.json") == [python, "-m", "ft_assets.training.worker", "p.json"]
    ds = launch_command("deepspeed", python, "p.json", processes_per_node=8, hostfile="hosts", num_nodes=2)
    assert ds[0].endswith("deepspeed") and ds[ds.index("--hostfile") + 1] == "hosts"
    assert ds[ds.index("--num_gpus") + 1] == "8" and ds[-3:] == ["--module", "ft_assets.training.worker", "p.json"]
    tr = launch_command("torchrun", python, "p.json", processes_per_node=4, num_nodes=2, master_addr="10.0.0.1",
                        node_rank=1)
    assert tr[:3] == [python, "-m", "torch.distributed.run"]
    assert tr[tr.index("--node_rank") + 1] == "1" and tr[tr.index("--master_addr") + 1] == "10.0.0.1"
    with pytest.raises(ComputeConfigError, match="unknown launcher"):
        launch_command("slurm", python, "p.json")

    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# two boxes\nworker-0 slots=8\nworker-1 slots=8\n")
    assert read_hostfile(hostfile) == [("worker-0", 8), ("worker-1", 8)]
    compute = TrainingCompute(launcher=DeepSpeedLauncher(hostfile=str(hostfile), num_nodes=2))
    compute.validate()
    assert compute.world_size == 16
    with pytest.raises(ComputeConfigError, match="fewer than num_nodes=3"):
        TrainingCompute(launcher=DeepSpeedLauncher(hostfile=str(hostfile), num_nodes=3)).validate()
    with pytest.raises(ComputeConfigError, match="needs a hostfile"):
        TrainingCompute(launcher=DeepSpeedLauncher(num_nodes=2)).validate()


def test_kubernetes_pod_requests_gpus_and_renders_through_dagster_k8s():
    from dagster_k8s.pipes import build_pod_body

    compute = TrainingCompute(launcher=KubernetesLauncher(image="registry/ftops:1", gpus=4, volume_claim="artifacts",
                                                          mount_path="/artifacts", node_selector={"gpu": "h100"}))
    compute.validate()
    pod = build_pod_body(pod_name="ftops-train", image=compute.launcher.image, command=compute.command(""),
                         env_vars={"DAGSTER_PIPES_CONTEXT": "x"}, base_pod_meta=None,
                         base_pod_spec=compute.pod_spec())
    container = pod.spec.containers[0]
    assert container.resources.limits["nvidia.com/gpu"] == "4"
    assert container.image == "registry/ftops:1"
    assert container.command[0].endswith("deepspeed") and "--num_gpus" in container.command
    assert {m.mount_path for m in container.volume_mounts} == {"/dev/shm", "/artifacts"}
    assert pod.spec.node_selector == {"gpu": "h100"} and pod.spec.restart_policy == "Never"
    with pytest.raises(ComputeConfigError, match="needs image"):
        k8s_pod_spec("", 1, "8", "64Gi")


def test_training_assets_share_one_pool_limited_to_one_on_the_embedded_instance(tmp_path):
    from dagster import DagsterInstance

    from ft_assets.cli import DAGSTER_YAML
    from ft_assets.training.assets import sft_adapter

    (tmp_path / "dagster.yaml").write_text(DAGSTER_YAML)
    instance = DagsterInstance.from_config(str(tmp_path))
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    assert sft_adapter.node_def.pool == "training"
