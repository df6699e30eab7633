"""Quantize a merged model in several ways and serialize each so it reloads as is.

bitsandbytes NF4 and int8 run on any machine (CPU kernels included). GPTQ
needs CUDA plus GPT-QModel and optimum; where they are missing the variant is
skipped with the reason, never silently.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path

# bitsandbytes' int8 matmul logs a warning on every call that it casts fp32 inputs to fp16.
logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)

METHODS = ("bnb-nf4", "bnb-int8", "gptq")


class QuantizationUnavailable(RuntimeError):
    """This method cannot run on this machine; the message says why."""


def unavailable_reason(method: str) -> str | None:
    import torch

    if method not in METHODS:
        raise ValueError(f"unknown quantization method {method!r}: choose from {', '.join(METHODS)}")
    if method == "gptq":
        if not torch.cuda.is_available():
            return "GPTQ calibration needs a CUDA GPU; none is available"
        missing = [m for m in ("gptqmodel", "optimum") if importlib.util.find_spec(m) is None]
        if missing:
            return f"GPTQ needs {' and '.join(missing)} installed (pip install gptqmodel optimum)"
    return None


def _device_map() -> str:
    import torch

    return "auto" if torch.cuda.is_available() else "cpu"


def quantize(method: str, merged_dir: Path, out_dir: Path, calibration_texts: list[str] | None = None) -> dict:
    """Quantize ``merged_dir`` into ``out_dir``; raises QuantizationUnavailable if it cannot run here."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, GPTQConfig

    reason = unavailable_reason(method)
    if reason:
        raise QuantizationUnavailable(reason)
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    if method == "bnb-nf4":
        compute_dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)
    elif method == "bnb-int8":
        config = BitsAndBytesConfig(load_in_8bit=True)
    else:
        if not calibration_texts:
            raise ValueError("GPTQ needs calibration texts")
        config = GPTQConfig(bits=4, group_size=128, dataset=calibration_texts, tokenizer=tokenizer)
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(merged_dir, quantization_config=config, device_map=_device_map())
    quantize_seconds = time.perf_counter() - started
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return {"method": method, "quantize_seconds": round(quantize_seconds, 2),
            "memory_footprint_bytes": int(model.get_memory_footprint()), "size_bytes": dir_size_bytes(out_dir)}


def quantize_bnb_nf4(merged_dir: Path, out_dir: Path) -> dict:
    return quantize("bnb-nf4", merged_dir, out_dir)


def load_quantized(model_dir: Path):
    """Load a serialized quantized model; returns (model, seconds it took)."""
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, device_map=_device_map())
    return model, round(time.perf_counter() - started, 3)


def dir_size_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())
