"""The ``ftops`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from resources.paths import ftops_home

DAGSTER_YAML = """\
# Embedded default: run, event and schedule storage on SQLite in this folder.
telemetry:
  enabled: false
# Training assets sit in the "training" pool: one training at a time, so two never share a GPU box.
concurrency:
  pools:
    default_limit: 1
# A run whose worker process died (killed, OOM, machine lost) is marked failed by the daemon instead of being
# left "started" forever; its steps' partial artifacts were never published (staging directories only).
run_monitoring:
  enabled: true
  start_timeout_seconds: 300
  poll_interval_seconds: 30
  max_resume_run_attempts: 0
"""


def ensure_dagster_home() -> Path:
    """``$DAGSTER_HOME`` or ``.ftops/dagster_home``, created with a dagster.yaml on first use."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(ftops_home() / "dagster_home"))).resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text(DAGSTER_YAML)
    return home


def cmd_run(args: argparse.Namespace) -> int:
    from ft_assets.recipe_run import cmd_run as run

    return run(args.recipe, args.set or [], check_only=args.check)


def cmd_demo(args: argparse.Namespace) -> int:
    from ft_assets.recipe_run import cmd_run as run
    from ft_assets.recipes import DEMO_RECIPE

    return run(DEMO_RECIPE, args.set or [])


def cmd_recipes(args: argparse.Namespace) -> int:
    from ft_assets.recipes import available_recipes, load_recipe

    for name in available_recipes():
        recipe = load_recipe(name)
        print(f"{name:32} job {recipe.job_name:30} {recipe.description}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from ft_assets.data.text_to_sql import write_demo_drops

    for path in write_demo_drops(Path(args.out_dir), n_records=args.records, n_drops=args.drops, seed=args.seed):
        print(path)
    return 0


def cmd_fetch_base_model(args: argparse.Namespace) -> int:
    """Fetch the GGUF and, unless --no-convert, dequantize it once into the machine's conversion cache: an install
    step, so no instance's first ``base_model`` pays it (22-46 s on 2 cores)."""
    from ft_assets.models.base import default_conversion_cache, fill_conversion_cache
    from ft_assets.models.smollm2 import fetch_gguf
    from resources.paths import default_gguf_path

    gguf = fetch_gguf(Path(args.out or default_gguf_path()))
    print(gguf)
    if not args.no_convert:
        entry, converted = fill_conversion_cache(gguf, default_conversion_cache())
        print(f"conversion cache: {entry} ({'dequantized now' if converted else 'already there'})", file=sys.stderr)
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

    from ft_assets.data.clean import CleanConfig
    from ft_assets.data.ingest import IngestLimits
    from ft_assets.data.preflight import preflight

    try:
        field_map = dict(pair.split("=", 1) for pair in args.field_map.split(",") if pair) if args.field_map else None
        limits = IngestLimits(max_drop_bytes=args.max_drop_bytes, max_rows=args.max_rows)
        summary = preflight(args.paths, CleanConfig(keep_newlines=args.keep_newlines),
                            near_threshold=args.near_threshold, min_rows=args.min_rows, field_map=field_map,
                            limits=limits)
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


def _open_registry(fast: bool = False):
    """The registry, with every evaluated model version registered, and the Dagster instance.

    ``fast``: when the embedded instance recorded nothing since the last sync, the instance is None and
    Dagster is not even imported (see ft_assets/lineage/freshness.py).
    """
    from ft_assets.lineage.freshness import instance_fingerprint, is_fresh, mark_synced
    from ft_assets.lineage.registry import Registry
    from resources.paths import default_registry_path

    home = ensure_dagster_home()
    registry = Registry(default_registry_path())
    if fast and is_fresh(registry, home):
        return registry, None
    from dagster import DagsterInstance

    from ft_assets.lineage.audit import sync

    fingerprint = instance_fingerprint(home)
    instance = DagsterInstance.get()
    sync(registry, instance)
    mark_synced(registry, home, fingerprint)
    return registry, instance


def _actor() -> str:
    import getpass

    return os.environ.get("FTOPS_USER") or getpass.getuser()


def cmd_models_list(args: argparse.Namespace) -> int:
    import json

    registry, _ = _open_registry(fast=True)
    models = registry.versions()
    if args.json:
        print(json.dumps({"models": [m.as_dict() for m in models], "aliases": registry.aliases()}, indent=2))
        return 0
    rows = [("id", "variant", "created", "aliases", "exact_match", "exec_acc", "gates")]
    for m in models:
        gates = {None: "not evaluated", True: "passed"}.get(
            m.gates_passed, "FAILED: " + ",".join(g["name"] for g in m.failed_gates))
        rows.append((m.id, m.variant, (m.created_at or "")[:19], ",".join(m.aliases) or "-",
                     f"{m.metrics.get('exact_match', float('nan')):.3f}",
                     f"{m.metrics.get('execution_accuracy', float('nan')):.3f}", gates))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def _move_alias(args: argparse.Namespace, alias: str) -> int:
    import json

    from dagster import AssetObservation

    from ft_assets.lineage.registry import PromotionRefused, UnknownModel

    registry, instance = _open_registry()
    try:
        move = registry.set_alias(alias, args.model, actor=_actor(), reason=args.reason, source="cli")
    except (PromotionRefused, UnknownModel, ValueError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        print(json.dumps({"moved": False, "error": message}) if args.json else f"ftops models: {message}",
              file=sys.stdout if args.json else sys.stderr)
        return 1
    if move is not None:
        # Dagster's own record of the move, beside the in-run ones on registered_models.
        instance.report_runless_asset_event(AssetObservation(
            asset_key="registered_models", description=f"{alias} -> {move.to_id}",
            metadata={k: v or "" for k, v in move.as_dict().items()}))
    target = registry.resolve(alias).id
    if args.json:
        print(json.dumps({"moved": move is not None, "alias": alias, "model": target,
                          "move": move.as_dict() if move else None}))
    else:
        print(f"{alias} -> {target}" + ("" if move else " (already there)"))
    return 0


def cmd_models_alias(args: argparse.Namespace) -> int:
    return _move_alias(args, args.alias)


def cmd_models_promote(args: argparse.Namespace) -> int:
    from ft_assets.lineage.registry import PRODUCTION

    return _move_alias(args, PRODUCTION)


def cmd_models_history(args: argparse.Namespace) -> int:
    import json

    registry, _ = _open_registry()
    moves = registry.history(alias=args.alias)
    if args.json:
        print(json.dumps([m.as_dict() for m in moves], indent=2))
    for m in [] if args.json else moves:
        print(f"{m.at}  {m.alias}: {m.from_id or '-'} -> {m.to_id}  by {m.actor} ({m.source})"
              + (f"  {m.reason}" if m.reason else ""))
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    """Exit 0 when the chain is complete and verified, 1 when records and cards disagree, 2 when not found."""
    import json

    from ft_assets.lineage.audit import audit, render, trained_on
    from ft_assets.lineage.freshness import stored_audit
    from ft_assets.lineage.registry import UnknownModel

    if bool(args.model) == bool(args.dataset):
        print("ftops lineage: give a model version, or --dataset VERSION", file=sys.stderr)
        return 2
    registry, instance = _open_registry(fast=True)
    if args.dataset:
        result = trained_on(registry, instance, args.dataset, synced=True)
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            for m in result["models"]:
                matched = ", ".join(f"{h['kind']}={h['value']}" for h in m["matched"])
                print(f"{m['id']}  {m['variant']}  {(m['created_at'] or '')[:19]}  "
                      f"aliases: {','.join(m['aliases']) or '-'}  matched {matched}")
            if not result["models"]:
                print(f"no registered model version was trained on {args.dataset}", file=sys.stderr)
        return 0 if result["models"] else 2
    result = stored_audit(registry, args.model) if not args.refresh else None
    if result is None and instance is None:  # not audited yet, or asked to look again: ask the instance
        registry.close()
        registry, instance = _open_registry()
    try:
        result = result or audit(registry, instance, args.model, synced=True)
    except UnknownModel as exc:
        print(f"ftops lineage: {exc.args[0]}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str) if args.json else render(result))
    return 0 if result["verified"] else 1


def cmd_init(args: argparse.Namespace) -> int:
    print(ensure_dagster_home())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ftops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the demo recipe (recipes/text-to-sql-demo.yaml) on the embedded default")
    demo.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a recipe setting")
    demo.set_defaults(func=cmd_demo)
    run = sub.add_parser("run", help="check a recipe, ingest its drops and materialize its job on the local instance")
    run.add_argument("recipe", help="a recipe name in recipes/ (see `ftops recipes`) or a path to a recipe YAML")
    run.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                     help="override a recipe setting, e.g. --set training.max_steps=10 (repeatable; values are YAML)")
    run.add_argument("--check", action="store_true", help="only check the recipe (no compute); exit 2 on a problem")
    run.set_defaults(func=cmd_run)
    recipes = sub.add_parser("recipes", help="list the recipes in recipes/ with their job names")
    recipes.set_defaults(func=cmd_recipes)
    gen = sub.add_parser("generate-demo-data", help="write the deterministic text-to-SQL demo drops")
    gen.add_argument("out_dir")
    gen.add_argument("--records", type=int, default=500)
    gen.add_argument("--drops", type=int, default=3)
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(func=cmd_generate)
    fetch = sub.add_parser("fetch-base-model", help="download the demo's SmolLM2-135M-Instruct GGUF (install step)")
    fetch.add_argument("--out", help="where to write the .gguf file (default: $FTOPS_BASE_GGUF)")
    fetch.add_argument("--no-convert", action="store_true",
                       help="skip dequantizing it into the conversion cache (base_model then does it once)")
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
    validate.add_argument("--field-map", default="", help="canonical=source, e.g. prompt=question,completion=query")
    validate.add_argument("--keep-newlines", action="store_true", help="keep line breaks (code, worked answers)")
    validate.add_argument("--max-drop-bytes", type=int, default=2 * 1024**3, help="decompressed bytes per file")
    # The pre-flight holds what it checks in memory (the assets stream, up to 2,000,000 rows a file): 100,000
    # rows keep it under ~1.5 GiB; past that the rest of a file is refused with a row naming the limit.
    validate.add_argument("--max-rows", type=int, default=100_000,
                          help="rows per file checked here (held in memory; the pipeline itself streams)")
    validate.set_defaults(func=cmd_data_validate)
    versions = data.add_parser("versions", help="list the DVC-tracked versions of a dataset asset")
    versions.add_argument("asset")
    versions.set_defaults(func=cmd_data_versions)
    models = sub.add_parser("models", help="the model registry: versions, aliases, promotion").add_subparsers(
        dest="models_command", required=True)
    listing = models.add_parser("list", help="every registered model version with its aliases, metrics and gates")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_models_list)
    alias = models.add_parser("alias", help="point an alias at a model version (production is gate-checked)")
    alias.add_argument("model", help="model id, alias or unique prefix")
    alias.add_argument("alias")
    promote = models.add_parser("promote", help="move 'production' to a model version whose gates passed")
    promote.add_argument("model", help="model id, alias or unique prefix")
    for command, func in ((alias, cmd_models_alias), (promote, cmd_models_promote)):
        command.add_argument("--reason", help="why; recorded with the move")
        command.add_argument("--json", action="store_true")
        command.set_defaults(func=func)
    history = models.add_parser("history", help="every alias move: who, when, from, to, why")
    history.add_argument("--alias")
    history.add_argument("--json", action="store_true")
    history.set_defaults(func=cmd_models_history)
    lineage = sub.add_parser("lineage", help="audit a model version: data, config, code, base model, gates, "
                                             "promotions; or --dataset VERSION for the models trained on it")
    lineage.add_argument("model", nargs="?", help="model id, alias or unique prefix (e.g. production)")
    lineage.add_argument("--dataset", help="sft_dataset/clean/deduped version, DVC md5, drop id or drop sha256")
    lineage.add_argument("--json", action="store_true")
    lineage.add_argument("--refresh", action="store_true",
                         help="audit again from the Dagster instance and the cards on disk, not the stored audit")
    lineage.set_defaults(func=cmd_lineage)
    from ft_assets.serving.cli import add_serve_parser

    add_serve_parser(sub)
    init = sub.add_parser("init", help="create the embedded Dagster instance folder; prints $DAGSTER_HOME")
    init.set_defaults(func=cmd_init)
    args = parser.parse_args(argv)
    code = args.func(args)
    if argv is None and args.command in ("lineage", "models"):
        # Run as the `ftops` program: tearing down the imported Dagster/SQLAlchemy modules takes ~0.5 s, a
        # quarter of `ftops lineage`'s budget. These commands have committed and closed what they wrote.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
