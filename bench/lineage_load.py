"""`ftops lineage` and `ftops models list` on a busy machine: wall time of the real CLI while every core spins.

Usage: python bench/lineage_load.py [--work DIR] [--repeats N] [--busy N]

Builds (once per --work folder) an embedded Dagster instance and registry with registered, promoted model
versions, the way tests/test_lineage.py does (the demo graph on a scratch model, auto-promotion on). Then
starts ``--busy`` busy-loop processes (default: one per core) and runs, as a user would, the installed
``ftops`` program: ``ftops lineage production`` and ``ftops models list``, ``--repeats`` times each, in
fresh processes. Prints each wall time, then a JSON object with median and worst per command, the target
(2 s), each command's CPU seconds (its cost whoever else runs), the load average, and which heavy
modules each command imported.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGET_S = 2.0
COMMANDS = {"lineage": ["lineage", "production"], "models_list": ["models", "list"]}
HEAVY = ("torch", "transformers", "peft", "trl", "great_expectations", "pandas", "dagster")


def build_instance(work: Path) -> None:
    """A registered, promoted model chain in ``work`` (skipped when an earlier run left one there)."""
    if (work / "registry.sqlite").exists() and (work / "built").exists():
        return
    from resources import ModelRegistry
    from tests.test_pipeline import SCRATCH_CONFIG, run_graph
    from tests.test_registry import MODEL_CHAIN, real_instance

    instance = real_instance(work / "dagster_home")
    registry = ModelRegistry(path=str(work / "registry.sqlite"), auto_promote=True)
    config = {"ops": {**SCRATCH_CONFIG["ops"], "policy": {"config": {"policy": "sft"}}}}
    result, _ = run_graph(work, config, instance=instance, asset_selection=MODEL_CHAIN, model_registry=registry)
    if not result.success:
        raise SystemExit("building the model chain failed; see the Dagster output above")
    (work / "built").write_text("ok\n")


def _env(work: Path) -> dict[str, str]:
    return {**os.environ, "DAGSTER_HOME": str(work / "dagster_home"), "FTOPS_REGISTRY": str(work / "registry.sqlite"),
            "FTOPS_USER": "bench", "GX_ANALYTICS_ENABLED": "false"}


def _ftops() -> list[str]:
    script = Path(sys.executable).with_name("ftops")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ft_assets.cli"]


def time_command(work: Path, argv: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the ftops process): CPU time does not depend on who else is running."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([*_ftops(), *argv], env=_env(work), capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"ftops {' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def heavy_imports(work: Path, argv: list[str]) -> list[str]:
    """The heavy top-level packages loaded by running ``argv`` through the CLI's main() in a fresh process."""
    probe = ("import sys, io, contextlib\nfrom ft_assets.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n    main(sys.argv[1:])\n"
             f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe, *argv], env=_env(work), capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    if done.returncode != 0:
        return ["?"]
    lines = done.stdout.strip().splitlines()  # none when nothing heavy was imported: the probe printed ""
    return [m for m in (lines[-1] if lines else "").split(",") if m]


def _spin() -> None:
    while True:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="", help="folder for the instance (reused when it holds one)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--busy", type=int, default=os.cpu_count() or 2, help="busy-loop processes")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="ftops-lineage-load-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    build_instance(work)
    for argv in COMMANDS.values():  # warm the page cache and the registry sync once, unmeasured
        time_command(work, argv)
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    try:
        time.sleep(1.0)  # let the spinners take the cores
        walls: dict[str, list[float]] = {name: [] for name in COMMANDS}
        cpus: dict[str, list[float]] = {name: [] for name in COMMANDS}
        for _ in range(args.repeats):
            for name, argv in COMMANDS.items():
                wall, cpu = time_command(work, argv)
                walls[name].append(wall)
                cpus[name].append(cpu)
                print(f"ftops {' '.join(argv):20} {wall:.2f} s wall, {cpu:.2f} s CPU (busy loops: {args.busy}, "
                      f"load {os.getloadavg()[0]:.1f})", flush=True)
        load = os.getloadavg()
    finally:
        for p in spinners:
            p.terminate()
        for p in spinners:
            p.join()
    summary = {
        "bench": "lineage_load", "cpus": os.cpu_count(), "busy_processes": args.busy, "repeats": args.repeats,
        "loadavg_1m": round(load[0], 2), "target_s": TARGET_S,
        **{f"{name}_median_s": round(statistics.median(w), 3) for name, w in walls.items()},
        **{f"{name}_max_s": round(max(w), 3) for name, w in walls.items()},
        **{f"{name}_cpu_median_s": round(statistics.median(c), 3) for name, c in cpus.items()},
        "heavy_imports": {name: heavy_imports(work, argv) for name, argv in COMMANDS.items()},
    }
    summary["under_target"] = all(summary[f"{name}_median_s"] < TARGET_S for name in COMMANDS)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
