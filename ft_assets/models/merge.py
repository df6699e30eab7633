"""Merge a LoRA adapter into a full-precision copy of its base model."""

from __future__ import annotations

from pathlib import Path


def is_full_model(trained_dir: Path) -> bool:
    """A full fine-tune saves a whole model where LoRA/QLoRA/DoRA save an adapter."""
    return not (Path(trained_dir) / "adapter_config.json").exists()


def load_trained(base_dir: Path, trained_dir: Path):
    """The trained model as training left it: base + adapter (unmerged), or the fully fine-tuned model."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if is_full_model(trained_dir):
        return AutoModelForCausalLM.from_pretrained(trained_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), trained_dir)


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path, dtype: str = "float32") -> dict:
    import torch
    from transformers import AutoTokenizer

    # Always merge into full-precision weights, never into a quantized base (QLoRA's adapter included).
    trained = load_trained(base_dir, adapter_dir)
    merged = trained if is_full_model(adapter_dir) else trained.merge_and_unload()
    merged = merged.to(getattr(torch, dtype))
    merged.save_pretrained(out_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(adapter_dir if (Path(adapter_dir) / "tokenizer_config.json").exists()
                                  else base_dir).save_pretrained(out_dir)
    return {"dtype": dtype, "parameters": merged.num_parameters()}


def verify_merge(base_dir: Path, adapter_dir: Path, merged_dir: Path, probes, max_new_tokens: int = 64) -> dict:
    """Logits of the merged model against base + adapter on the task's probes, and its EOS / template behaviour."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ft_assets.models.consistency import logit_agreement, serving_check

    reference = load_trained(base_dir, adapter_dir).eval()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    training_template = AutoTokenizer.from_pretrained(adapter_dir).chat_template
    return {"merge_check": logit_agreement(reference, merged, tokenizer, probes),
            "serving_check": serving_check(merged, tokenizer, training_template, probes, max_new_tokens)}
