"""The ``ftops`` command line."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from resources.paths import ftops_home

DAGSTER_YAML = """\
# Embedded default: run, event and schedule storage on SQLite in this folder.
telemetry:
  enabled: false
"""


def ensure_dagster_home() -> Path:
    """``$DAGSTER_HOME`` or ``.ftops/dagster_home``, created with a dagster.yaml on first use."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(ftops_home() / "dagster_home"))).resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text(DAGSTER_YAML)
    return home


def run_end_to_end(run_config: dict | None = None):
    """Materialize the whole graph in one run on the instance in ``$DAGSTER_HOME``."""
    from dagster import DagsterInstance

    from ft_assets.definitions import defs

    ensure_dagster_home()
    with DagsterInstance.get() as instance:
        job = defs.resolve_job_def("end_to_end")
        return job.execute_in_process(instance=instance, run_config=run_config or {}, raise_on_error=False)


def cmd_demo(args: argparse.Namespace) -> int:
    import yaml

    from ft_assets.lineage.artifacts import latest
    from resources.paths import default_artifact_root

    run_config = yaml.safe_load(Path(args.config).read_text()) if args.config else {}
    started = time.perf_counter()
    result = run_end_to_end(run_config)
    elapsed = time.perf_counter() - started
    if not result.success:
        failed = [e for e in result.all_events if e.is_failure or e.event_type_value == "ASSET_CHECK_EVALUATION"]
        for event in failed:
            print(event.message, file=sys.stderr)
        print(f"ftops demo: run {result.run_id} failed after {elapsed:.0f}s", file=sys.stderr)
        return 1
    report = latest(Path(default_artifact_root()), "eval_report")
    # Metrics and gates; the failure samples stay in report.md / report.html.
    print((report.path / "report.md").read_text().split("## Failures")[0].rstrip() + "\n")
    print(f"HTML report: {report.path / 'report.html'}")
    print(f"run {result.run_id} succeeded in {elapsed:.0f}s")
    print(report.path / "report.json")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from ft_assets.data.text_to_sql import write_demo_drops

    for path in write_demo_drops(Path(args.out_dir), n_records=args.records, n_drops=args.drops, seed=args.seed):
        print(path)
    return 0


def cmd_fetch_base_model(args: argparse.Namespace) -> int:
    from ft_assets.models.smollm2 import fetch_gguf
    from resources.paths import default_gguf_path

    print(fetch_gguf(Path(args.out or default_gguf_path())))
    return 0


def cmd_data_checkout(args: argparse.Namespace) -> int:
    import shutil

    from ft_assets.lineage.dvc_store import DvcDatasetStore
    from resources.paths import default_dvc_remote, default_dvc_repo

    store = DvcDatasetStore(Path(default_dvc_repo()), default_dvc_remote())
    try:
        restored = store.checkout(args.asset, args.version)
    except KeyError as exc:
        print(f"ftops data checkout: {exc.args[0]}", file=sys.stderr)
        return 2
    if args.to:
        shutil.copytree(restored, args.to, dirs_exist_ok=True)
        restored = Path(args.to)
    print(restored)
    return 0


def cmd_data_validate(args: argparse.Namespace) -> int:
    """Exit 0 when every gate passes, 1 when one fails, 2 when the check itself could not run."""
    import json
    import traceback

    from ft_assets.data.preflight import preflight

    try:
        summary = preflight(args.paths, near_threshold=args.near_threshold, min_rows=args.min_rows)
    except Exception as exc:  # a pre-flight tool reports, it does not crash
        print(json.dumps({"success": False, "error": f"{type(exc).__name__}: {exc}",
                          "traceback": traceback.format_exc(limit=3)}, indent=2))
        return 2
    print(json.dumps(summary, indent=2, default=str))
    return 0 if summary["success"] else 1


def cmd_data_versions(args: argparse.Namespace) -> int:
    from ft_assets.lineage.dvc_store import DvcDatasetStore
    from resources.paths import default_dvc_remote, default_dvc_repo

    for version in DvcDatasetStore(Path(default_dvc_repo()), default_dvc_remote()).versions(args.asset):
        print(version)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    print(ensure_dagster_home())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ftops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="materialize the whole asset graph on the embedded default")
    demo.add_argument("--config", help="a Dagster run config YAML (ops: {asset: {config: ...}})")
    demo.set_defaults(func=cmd_demo)
    gen = sub.add_parser("generate-demo-data", help="write the deterministic text-to-SQL demo drops")
    gen.add_argument("out_dir")
    gen.add_argument("--records", type=int, default=500)
    gen.add_argument("--drops", type=int, default=3)
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(func=cmd_generate)
    fetch = sub.add_parser("fetch-base-model", help="download the demo's SmolLM2-135M-Instruct GGUF (install step)")
    fetch.add_argument("--out", help="where to write the .gguf file (default: $FTOPS_BASE_GGUF)")
    fetch.set_defaults(func=cmd_fetch_base_model)
    data = sub.add_parser("data", help="dataset versions (DVC)").add_subparsers(dest="data_command", required=True)
    checkout = data.add_parser("checkout", help="restore a DVC-tracked version of a dataset asset")
    checkout.add_argument("asset", choices=["clean_records", "deduped_records", "sft_dataset"])
    checkout.add_argument("version", help="DVC md5 (the asset's data version) or a unique prefix")
    checkout.add_argument("--to", help="also copy the restored files to this folder")
    checkout.set_defaults(func=cmd_data_checkout)
    validate = data.add_parser("validate", help="pre-flight: ingest, clean, dedup and the GX suites on files; "
                                                "prints a JSON summary, exits 1 if a gate fails")
    validate.add_argument("paths", nargs="+", help="files or folders (.jsonl, .json, .csv, .parquet, .jsonl.gz)")
    validate.add_argument("--near-threshold", type=float, default=0.8)
    validate.add_argument("--min-rows", type=int, default=50)
    validate.set_defaults(func=cmd_data_validate)
    versions = data.add_parser("versions", help="list the DVC-tracked versions of a dataset asset")
    versions.add_argument("asset")
    versions.set_defaults(func=cmd_data_versions)
    init = sub.add_parser("init", help="create the embedded Dagster instance folder; prints $DAGSTER_HOME")
    init.set_defaults(func=cmd_init)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
