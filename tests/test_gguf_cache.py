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


def test_the_install_step_fills_the_cache_so_no_instance_converts(tmp_path: Path, demo_gguf: Path, monkeypatch):
    """`make model` runs `ftops fetch-base-model`: with the GGUF already there it fetches nothing and dequantizes
    once into the machine's cache; base_model in any instance then copies it."""
    import ft_assets.models.base as base
    from ft_assets.cli import main

    cache = tmp_path / "cache"
    monkeypatch.setenv("FTOPS_CONVERSION_CACHE", str(cache))
    assert main(["fetch-base-model", "--out", str(demo_gguf)]) == 0
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]

    def no_dequantizing(*args, **kwargs):
        raise AssertionError("the install step left the cache cold")

    monkeypatch.setattr(base, "_convert_gguf", no_dequantizing)
    out = tmp_path / "instance"
    out.mkdir()
    assert from_gguf(demo_gguf, out, base.default_conversion_cache())["conversion"] == f"cache {entry}"
    assert (out / "config.json").is_file()
