"""The GGUF conversion cache: a second instance gets the same safetensors without dequantizing again."""

from __future__ import annotations

from pathlib import Path

from ft_assets.lineage.artifacts import content_hash
from ft_assets.models.base import CONVERSION_INFO, from_gguf


def test_second_conversion_comes_from_the_cache(tmp_path: Path, demo_gguf: Path, monkeypatch):
    cache = tmp_path / "cache"
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    first = from_gguf(demo_gguf, first_dir, cache)
    assert first["conversion"] == "dequantized"
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert (entry / CONVERSION_INFO).is_file() and first["revision"][len("sha256:"):].startswith(entry.name[:32])

    import ft_assets.models.base as base

    def no_dequantizing(*args, **kwargs):
        raise AssertionError("a cached GGUF was dequantized again")

    monkeypatch.setattr(base, "_convert_gguf", no_dequantizing)
    second = from_gguf(demo_gguf, second_dir, cache)
    assert second["conversion"] == f"cache {entry}"
    assert {k: v for k, v in second.items() if k != "conversion"} == \
        {k: v for k, v in first.items() if k != "conversion"}
    assert content_hash(second_dir) == content_hash(first_dir)  # same bytes: same base_model version
