"""Config-time checks for a training run: everything that can be known wrong before any compute is spent.

Each failure raises ``TrainingConfigError`` with what to change. Nothing here loads weights: the model is built
on the meta device from its config to read its module names.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ft_assets.training.core import METHODS, PRECISIONS, TrainingConfigError, zero_stage
from ft_assets.training.sft import SFTParams

__all__ = ["TrainingConfigError", "validate_sft", "qlora_unavailable_reason", "linear_module_names"]


def linear_module_names(base_model_dir: str | Path) -> list[str]:
    """Distinct short names of the model's Linear layers except the output head (what "all-linear" targets)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base_model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    head = model.get_output_embeddings()
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and module is not head}
    return sorted(names)


def linear_shapes(base_model_dir: str | Path) -> tuple[tuple[int, int], ...]:
    """Distinct ``(in_features, out_features)`` of the layers LoRA would wrap."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base_model_dir))
    head = model.get_output_embeddings()
    return tuple(sorted({(m.in_features, m.out_features) for m in model.modules()
                         if isinstance(m, torch.nn.Linear) and m is not head}))


@lru_cache(maxsize=8)
def qlora_unavailable_reason(shapes: tuple[tuple[int, int], ...]) -> str | None:
    """Why 4-bit NF4 training cannot run here, found by a forward and backward pass through 4-bit layers of
    the model's own shapes; ``None`` if it can."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        import bitsandbytes as bnb
    except ImportError as err:
        return f"bitsandbytes cannot be imported ({err}); pip install bitsandbytes"
    try:
        for in_features, out_features in shapes:
            layer = bnb.nn.Linear4bit(in_features, out_features, bias=False, quant_type="nf4",
                                      compute_dtype=torch.float32).to(device)
            x = torch.randn(2, in_features, device=device, requires_grad=True)
            layer(x).sum().backward()
    except Exception as err:  # noqa: BLE001 - any failure of the probe means QLoRA cannot run here
        return (f"bitsandbytes 4-bit failed on {device} for a {in_features}x{out_features} layer: "
                f"{type(err).__name__}: {err}")
    return None


def count_rows(path: str | Path) -> int:
    with Path(path).open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def validate_sft(params: SFTParams, world_size: int = 1) -> dict:
    """Raise ``TrainingConfigError`` for a config that cannot train; return facts worth recording."""
    if params.method not in METHODS:
        raise TrainingConfigError(f"unknown method {params.method!r}: set method to one of {', '.join(METHODS)}")
    if params.precision not in PRECISIONS:
        raise TrainingConfigError(f"unknown precision {params.precision!r}: use one of {', '.join(PRECISIONS)}")
    for name in ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "max_length"):
        if getattr(params, name) < 1:
            raise TrainingConfigError(f"{name} must be at least 1, not {getattr(params, name)}")
    base = Path(params.base_model_dir)
    if not (base / "config.json").is_file():
        raise TrainingConfigError(f"base model not found: {base} has no config.json; materialize base_model or "
                                  "point base_model_dir at a saved Hugging Face model directory")
    train = Path(params.train_path)
    if not train.is_file():
        raise TrainingConfigError(f"training data not found at {train}: materialize sft_dataset first")
    rows = count_rows(train)
    per_step = params.per_device_train_batch_size * params.gradient_accumulation_steps * world_size
    if rows < per_step:
        raise TrainingConfigError(
            f"dataset too small for one step: {rows} training examples, one optimizer step takes {per_step} "
            f"(per_device_train_batch_size {params.per_device_train_batch_size} x gradient_accumulation_steps "
            f"{params.gradient_accumulation_steps} x {world_size} ranks); lower the batch size or add data")
    facts: dict = {"train_rows": rows, "examples_per_step": per_step}
    if params.method != "full":
        linear = linear_module_names(base)
        facts["linear_modules"] = linear
        if params.target_modules and params.target_modules != "all-linear":
            targets = [params.target_modules] if isinstance(params.target_modules, str) else params.target_modules
            missing = [t for t in targets if t not in linear]
            if missing:
                raise TrainingConfigError(f"LoRA target modules {missing} match no module of this model: use "
                                          f"'all-linear' or names from {linear}")
    if params.method == "qlora":
        reason = qlora_unavailable_reason(linear_shapes(base))
        if reason:
            raise TrainingConfigError(f"QLoRA cannot run here: {reason}; use method 'lora' (or 'dora') instead")
        if params.deepspeed and zero_stage(params.deepspeed) == 3:
            raise TrainingConfigError("QLoRA with ZeRO-3 is not supported here: use zero_stage 2 with QLoRA")
    if params.fsdp and params.method == "qlora":
        raise TrainingConfigError("QLoRA's 4-bit (bitsandbytes) weights cannot be sharded by FSDP here: use the "
                                  "deepspeed launcher with zero_stage 2 for QLoRA, or method 'lora' with fsdp")
    if params.fsdp and params.deepspeed:
        raise TrainingConfigError("FSDP and DeepSpeed both shard the model: pick one launcher (fsdp or deepspeed)")
    if params.packing and params.max_length < 32:
        raise TrainingConfigError("packing needs max_length of at least 32 tokens")
    return facts

