"""Pre-flight validation of data files outside Dagster: the same stages and suites as the pipeline."""

from __future__ import annotations

from pathlib import Path

from ft_assets.data.clean import CleanConfig, clean_records
from ft_assets.data.dedup import exact_dedup, example_keys, near_dedup
from ft_assets.data.ingest import SUPPORTED_SUFFIXES, ingest_drops
from ft_assets.data.records import reason_counts


def expand_paths(paths: list[str]) -> list[Path]:
    """Files as given, and the supported files inside any directory, in name order."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUPPORTED_SUFFIXES))
        else:
            files.append(path)
    return files


def preflight(paths: list[str], clean_config: CleanConfig | None = None, near_threshold: float = 0.8,
              min_rows: int = 50) -> dict:
    """Ingest, clean, dedup and validate; a JSON-able summary whose ``success`` is the gates' verdict."""
    from data_checks.gx_suites import deduped_records_suite, prepare_records, validate_frame

    files = expand_paths(paths)
    missing = [str(p) for p in files if not p.is_file()]
    ingest = ingest_drops([p for p in files if p.is_file()])
    cleaned = clean_records(ingest.records, clean_config)
    exact = exact_dedup(cleaned.records)
    near = near_dedup(exact.records, threshold=near_threshold) if len(exact.records) else exact
    kept = prepare_records(near.records)
    kept["dedup_key"] = example_keys(kept)
    suite = validate_frame(kept, "preflight", deduped_records_suite(min_rows))
    quarantine_reasons = reason_counts(ingest.quarantine)
    for reason, n in reason_counts(cleaned.quarantine).items():
        quarantine_reasons[reason] = quarantine_reasons.get(reason, 0) + n
    rows_in = len(ingest.records) + len(ingest.quarantine)
    return {
        "success": suite.success and not missing,
        "files": [str(p) for p in files],
        "missing_files": missing,
        "rows_in": rows_in,
        "kept": len(near.records),
        "quarantined": len(ingest.quarantine) + len(cleaned.quarantine),
        "quarantined_by_reason": quarantine_reasons,
        "duplicates": {"exact": len(exact.duplicates), "near": len(near.duplicates) if near is not exact else 0},
        "pii_redacted": cleaned.pii_counts,
        "expectations": [{"expectation": o.expectation, "kwargs": {k: str(v) for k, v in o.kwargs.items()},
                          "success": o.success, "unexpected_count": o.unexpected_count,
                          "unexpected_examples": [str(x)[:120] for x in o.unexpected_examples[:3]]}
                         for o in suite.outcomes],
    }
