"""Pre-flight validation of data files outside Dagster: the pipeline's own stage functions and suites."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ft_assets.data.clean import CleanConfig
from ft_assets.data.dedup import example_keys
from ft_assets.data.ingest import SUPPORTED_SUFFIXES, IngestLimits
from ft_assets.data.pipeline import clean_stage, dedup_stage, ingest_stage
from ft_assets.data.records import example_rows, reason_counts, reason_examples


def expand_paths(paths: list[str]) -> tuple[list[Path], list[Path]]:
    """(files, roots): files as given and the supported files inside any directory, in name order; the roots
    (each directory given, each given file's folder) are where those files may resolve to."""
    files: list[Path] = []
    roots: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            roots.append(path)
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUPPORTED_SUFFIXES))
        else:
            roots.append(path.parent)
            files.append(path)
    return files, roots


def duplicate_examples(duplicates: pd.DataFrame, kept: pd.DataFrame, n: int = 3) -> dict[str, list[dict]]:
    prompts = dict(zip(kept["record_id"], kept["prompt"], strict=True))
    out: dict[str, list[dict]] = {}
    for method, group in duplicates.groupby("method", sort=False):
        out[str(method)] = [{"record_id": r["record_id"], "duplicate_of": r["duplicate_of"],
                             "similarity": float(r["similarity"]), "prompt": str(r["prompt"])[:120],
                             "kept_prompt": str(prompts.get(r["duplicate_of"], ""))[:120]}
                            for r in group.head(n).to_dict("records")]
    return out


def preflight(paths: list[str], clean_config: CleanConfig | None = None, near_threshold: float = 0.8,
              min_rows: int = 50, field_map: dict[str, str] | None = None, limits: IngestLimits | None = None) -> dict:
    """Ingest, clean, dedup and validate; a JSON-able summary whose ``success`` is the gates' verdict.

    The same stage functions as the assets (``ft_assets.data.pipeline``), so the counts agree with a run.
    """
    from ft_assets.data.suites import deduped_records_suite, prepare_records, validate_frame

    files, roots = expand_paths(paths)
    missing = [str(p) for p in files if not p.is_file()]
    ingest = ingest_stage([p for p in files if p.is_file()], field_map=field_map, limits=limits, roots=roots)
    cleaned = clean_stage(ingest.records, clean_config)
    dedup = dedup_stage(cleaned.records, threshold=near_threshold)
    kept = prepare_records(dedup.records)
    kept["dedup_key"] = example_keys(kept)
    suite = validate_frame(kept, "preflight", deduped_records_suite(min_rows))
    quarantine = pd.concat([ingest.quarantine, cleaned.quarantine], ignore_index=True)
    return {
        "success": suite.success and not missing,
        "files": [str(p) for p in files],
        "missing_files": missing,
        "rows_in": ingest.rows_seen,
        "kept": len(dedup.records),
        "quarantined": len(quarantine),
        "quarantined_by_reason": reason_counts(quarantine),
        "quarantine_examples": reason_examples(quarantine),
        "duplicates": {"exact": dedup.exact, "near": dedup.near},
        "duplicate_examples": duplicate_examples(dedup.duplicates, dedup.records),
        "fields_used": ingest.fields_used,
        "pii_redacted": cleaned.pii_counts,
        "expectations": [{"expectation": o.expectation, "kwargs": {k: str(v) for k, v in o.kwargs.items()},
                          "success": o.success, "unexpected_count": o.unexpected_count,
                          "observed_value": o.observed_value if not o.success else None,
                          "unexpected_examples": [str(x)[:120] for x in o.unexpected_examples[:3]],
                          "example_rows": example_rows(kept, o.unexpected_record_ids)}
                         for o in suite.outcomes],
    }
