"""`ftops demo` end to end, timed step by step, optionally beside an older commit and as on the AVX2-only class.

Usage: python bench/demo_time.py [--baseline REF] [--precision auto|fp32] [--emulate-avx2] [--work DIR]

Runs the installed `ftops demo` in a fresh FTOPS_HOME (the GGUF from FTOPS_BASE_GGUF or ./.ftops/models; the
conversion cache as `make model` left it), reads each step's start and end from the run's own Dagster event log
and prints, as its last line, a JSON object: the command's wall time, the run's, seconds per step, every
variant's exact match, the CPU's flags and its fp32 matmul rate under the same conditions. With --baseline REF,
that commit runs first the same way (a detached git worktree, its code first on PYTHONPATH) and the JSON adds
the ratio current / baseline, so two versions compare on one machine in one run.

--emulate-avx2 pins every process to one core, caps torch, oneDNN and MKL at AVX2 kernels (bitsandbytes then
takes its non-AVX-512 int8 path too) and forces fp32: the nearest this kind of machine gets to the 2-vCPU
AVX2-only EPYC class. It is faster than that class (see bench/README.md for the calibration against a real
measurement of the same commit), so it estimates; it does not replace a run there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
MATMUL_PROBE = ("import sys; sys.path.insert(0, {bench!r}); from train_overhead import matmul_flops_per_s; "
                "import torch; print(matmul_flops_per_s('fp32', torch.get_num_threads()) / 1e9)")


def cpu_flags() -> dict:
    flags = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return {f: f in flags for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")}


def _prefix(emulate: bool) -> list[str]:
    return ["taskset", "-c", str(min(os.sched_getaffinity(0)))] if emulate else []


def _env(home: Path, gguf: Path, code: Path, emulate: bool) -> dict[str, str]:
    env = {**os.environ, "FTOPS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
           "FTOPS_BASE_GGUF": str(gguf), "GX_ANALYTICS_ENABLED": "false",
           "PYTHONPATH": os.pathsep.join(p for p in (str(code), os.environ.get("PYTHONPATH", "")) if p)}
    return {**env, **AVX2_ENV} if emulate else env


def matmul_gflops(emulate: bool) -> float:
    env = {**os.environ, **AVX2_ENV} if emulate else dict(os.environ)
    out = subprocess.run([*_prefix(emulate), sys.executable, "-c", MATMUL_PROBE.format(bench=str(REPO / "bench"))],
                         env=env, capture_output=True, text=True, check=True)
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


def step_seconds(dagster_home: Path) -> tuple[str, float, dict[str, float]]:
    """The newest run's id, its duration and each step's, from the instance's event log."""
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        run = instance.get_runs(limit=1)[0]
        stats = instance.get_run_stats(run.run_id)
        steps = {s.step_key: round(s.end_time - s.start_time, 2)
                 for s in instance.get_run_step_stats(run.run_id) if s.start_time and s.end_time}
    return run.run_id, round(stats.end_time - stats.start_time, 1), dict(sorted(steps.items(), key=lambda kv: -kv[1]))


def run_demo(name: str, code: Path, work: Path, gguf: Path, precision: str, emulate: bool) -> dict:
    home = work / name
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    overrides = [] if precision == "auto" else ["--set", f"compute.precision={precision}"]
    ftops = Path(sys.executable).with_name("ftops")
    command = [*_prefix(emulate), str(ftops), "demo", *overrides]
    print(f"{name}: {' '.join(command)} (code {code}, home {home})", flush=True)
    started = time.perf_counter()
    with (work / f"{name}.log").open("w") as log:
        done = subprocess.run(command, cwd=code, env=_env(home, gguf, code, emulate), stdout=subprocess.PIPE,
                              stderr=log, text=True)
    wall = round(time.perf_counter() - started, 1)
    if done.returncode != 0:
        raise SystemExit(f"{name}: ftops demo exited {done.returncode}; see {work / f'{name}.log'}")
    report = json.loads(Path(done.stdout.strip().splitlines()[-1]).read_text())
    run_id, run_seconds, steps = step_seconds(home / "dagster_home")
    result = {"command_wall_s": wall, "run_s": run_seconds, "run_id": run_id,
              "exact_match": {m: round(v["exact_match"], 3) for m, v in report["models"].items()
                              if "exact_match" in v},
              "step_s": {k: v for k, v in steps.items() if v >= 0.5}}
    print(f"{name}: command {wall} s, run {run_seconds} s; steps {result['step_s']}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="", help="a git commit to run first the same way, for a ratio")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--emulate-avx2", action="store_true", help="one core, AVX2 kernels, fp32")
    parser.add_argument("--work", default="", help="folder for the runs' homes and logs")
    args = parser.parse_args()
    precision = "fp32" if args.emulate_avx2 else args.precision
    work = Path(args.work or tempfile.mkdtemp(prefix="ftops-demo-time-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    gguf = Path(os.environ.get("FTOPS_BASE_GGUF", REPO / ".ftops" / "models" / GGUF_NAME))
    if not gguf.is_file():
        raise SystemExit(f"{gguf} is missing: run `make model` first (or set FTOPS_BASE_GGUF)")
    out = {"bench": "demo_time", "cpus": len(os.sched_getaffinity(0)), "cpu_flags": cpu_flags(),
           "emulate_avx2": args.emulate_avx2, "precision": precision, "loadavg_1m_before": os.getloadavg()[0],
           "fp32_matmul_gflops": matmul_gflops(args.emulate_avx2)}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    out["commit"] = commit.stdout.strip()
    if args.baseline:
        tree = work / "baseline-code"
        subprocess.run(["git", "worktree", "add", "--force", "--detach", str(tree), args.baseline], cwd=REPO,
                       check=True, capture_output=True)
        try:
            out["baseline"] = {"ref": args.baseline,
                               **run_demo("baseline", tree, work, gguf, precision, args.emulate_avx2)}
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)
    out["current"] = run_demo("current", REPO, work, gguf, precision, args.emulate_avx2)
    if args.baseline:
        out["ratio_run_current_over_baseline"] = round(out["current"]["run_s"] / out["baseline"]["run_s"], 3)
    out["loadavg_1m_after"] = os.getloadavg()[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
