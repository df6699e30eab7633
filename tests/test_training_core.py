"""The training core: precision by what the CPU can do, configs declared once, the code hash, the compute shape."""

import pytest

from ft_assets.training import core
from ft_assets.training.launch import ComputeConfigError, compute_run_config

AMD_AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


@pytest.mark.parametrize(("cpuinfo", "expected", "flags"), [
    (AMD_AVX2, "fp32", []), (SAPPHIRE, "bf16", ["amx_bf16", "avx512_bf16"]), (GRAVITON3, "bf16", ["bf16"])])
def test_auto_precision_on_cpu_is_bf16_only_with_native_bf16(tmp_path, cpuinfo, expected, flags):
    info = tmp_path / "cpuinfo"
    info.write_text(cpuinfo)
    assert core.cpu_native_bf16_flags(info) == flags
    precision, why = core.choose_precision("auto", cuda=False, cpuinfo=info)
    assert precision == expected
    assert ("no native bf16" in why) is (expected == "fp32")
    assert core.choose_precision("fp32", cuda=False, cpuinfo=info) == ("fp32", "set in the config")
    with pytest.raises(core.TrainingConfigError, match="unknown precision 'int8'"):
        core.choose_precision("int8")


def test_unreadable_cpuinfo_means_fp32(tmp_path):
    assert core.choose_precision("auto", cuda=False, cpuinfo=tmp_path / "missing")[0] == "fp32"


def test_asset_configs_are_derived_from_the_recipe_settings():
    from dataclasses import fields

    from ft_assets.training.assets import SftAdapterConfig
    from ft_assets.training.dpo import DPOParams, DPOSettings
    from ft_assets.training.dpo_assets import DpoAdapterConfig
    from ft_assets.training.sft import SFTParams, SFTSettings

    sft_defaults = SftAdapterConfig().model_dump()
    for f in fields(SFTSettings):
        assert sft_defaults[f.name] == getattr(SFTParams(base_model_dir="", train_path="", output_dir=""), f.name)
    assert DpoAdapterConfig().max_steps == DPOParams(base_model_dir="", train_path="", output_dir="").max_steps == 4
    assert set(DpoAdapterConfig.model_fields) - {"reuse_identical", "enabled"} <= {f.name for f in fields(DPOSettings)}
    assert SftAdapterConfig.model_fields["eval_steps"].description.startswith("eval loss on the held-out split")


def test_code_version_hashes_every_file_of_the_training_package(tmp_path):
    package = tmp_path / "training"
    package.mkdir()
    (package / "a.py").write_text("x = 1\n")
    before = core.training_code_version(package)
    (package / "new_trainer.py").write_text("y = 2\n")  # a file no list names still counts
    assert core.training_code_version(package) != before
    assert len(core.training_code_version()) == 12


def test_flat_compute_configs_become_the_nested_launcher_shape():
    assert compute_run_config({"launcher": "deepspeed", "zero_stage": 2, "precision": "bf16"}) == {
        "precision": "bf16", "launcher": {"deepspeed": {"zero_stage": 2}}}
    assert compute_run_config({"launcher": "kubernetes", "k8s_gpus": 4}) == {"launcher": {"kubernetes": {"gpus": 4}}}
    nested = {"launcher": {"fsdp": {"processes_per_node": 2}}}
    assert compute_run_config(nested) == nested
    with pytest.raises(ComputeConfigError, match="unknown launcher 'slurm'"):
        compute_run_config({"launcher": "slurm"})


def test_each_launcher_shows_only_its_own_fields_and_run_config_picks_one(tmp_path):
    from dagster import AssetExecutionContext, asset, materialize

    from resources import TrainingCompute
    from resources.compute import DeepSpeedLauncher, FsdpLauncher, KubernetesLauncher, ProcessLauncher

    assert "zero_stage" not in FsdpLauncher.model_fields and "image" not in DeepSpeedLauncher.model_fields
    assert set(ProcessLauncher.model_fields) == {"kind"}
    assert "gpus" in KubernetesLauncher.model_fields and "k8s_gpus" not in TrainingCompute.model_fields

    @asset
    def where(context: AssetExecutionContext, training_compute: TrainingCompute) -> dict:
        return {**training_compute.fingerprint(), "zero": training_compute.deepspeed()["zero_optimization"]["stage"]}

    config = {"resources": {"training_compute": {"config": compute_run_config(
        {"launcher": "deepspeed", "processes_per_node": 2, "zero_stage": 3, "mlflow_tracking_uri": ""})}}}
    result = materialize([where], resources={"training_compute": TrainingCompute()}, run_config=config)
    assert result.output_for_node("where") == {"launcher": "deepspeed", "world_size": 2, "precision": "auto",
                                               "zero": 3}


def test_label_mask_check_reads_max_length_from_sft_adapters_config():
    from ft_assets.training.checks import training_max_length
    from ft_assets.training.sft import SFTSettings

    assert training_max_length({"ops": {"sft_adapter": {"config": {"max_length": 1024}}}}) == 1024
    assert training_max_length({}) == SFTSettings().max_length == 256
    assert training_max_length({"ops": {"sft_adapter": {"config": {"method": "full"}}}}) == 256


def test_local_base_model_revision_is_a_hash_of_its_weights(scratch_model_dir, tmp_path):
    import shutil

    from ft_assets.models.base import from_pretrained_dir, weights_sha256

    info = from_pretrained_dir(str(scratch_model_dir), tmp_path / "copy")
    assert info["revision"] == "sha256:" + weights_sha256(scratch_model_dir) and info["revision"] != "local"
    changed = tmp_path / "changed"
    shutil.copytree(scratch_model_dir, changed)
    with (changed / "model.safetensors").open("ab") as handle:
        handle.write(b"\0")  # different bytes, different revision
    assert weights_sha256(changed) != weights_sha256(scratch_model_dir)
