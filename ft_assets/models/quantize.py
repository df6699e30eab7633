"""Quantize a merged model with bitsandbytes and serialize it so it reloads as is."""

from __future__ import annotations

from pathlib import Path


def quantize_bnb_nf4(merged_dir: Path, out_dir: Path, compute_dtype: str = "float32") -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                bnb_4bit_compute_dtype=getattr(torch, compute_dtype))
    device_map = "auto" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(merged_dir, quantization_config=config, device_map=device_map)
    model.save_pretrained(out_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(merged_dir).save_pretrained(out_dir)
    return {"method": "bnb-nf4", "compute_dtype": compute_dtype,
            "memory_footprint_bytes": int(model.get_memory_footprint())}


def dir_size_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())
