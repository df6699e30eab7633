"""Where raw data drops land."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource

from ft_assets.data.ingest import SUPPORTED_SUFFIXES
from ft_assets.data.text_to_sql import write_demo_drops


class RawDrops(ConfigurableResource):
    """A folder of drop files (JSONL, JSON, CSV, Parquet, gzipped JSONL/JSON/CSV).

    In the embedded default an empty folder gets the demo drops.
    """

    path: str
    demo_if_empty: bool = True
    demo_records: int = 500

    def list_drops(self) -> tuple[list[Path], bool]:
        """The drop files in name order, and whether the demo generator just wrote them."""
        folder = Path(self.path)
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(SUPPORTED_SUFFIXES)) \
            if folder.is_dir() else []
        if files or not self.demo_if_empty:
            return files, False
        return write_demo_drops(folder, n_records=self.demo_records), True
