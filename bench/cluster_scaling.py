"""Wall time of a full ``python -m resnet.run`` report in one process and on a local Ray cluster of 1 and 2
workers, and Ray's per-task overhead (what a shard or variant costs before it does any work).

    python -m bench.cluster_scaling                  # EfficientNet-Lite0 on ../shared (minutes per run)
    python -m bench.cluster_scaling --tiny           # the demo model on 64 images: proves the script works

Each run is a fresh process (the cluster starts and stops inside it, as a user's run does), so the wall
times include Ray's start. On a shared machine the figures are noisy: repeat with --repeat. Each run's
report stays in --results-dir, and every cluster row says whether its top-1/top-5 and predictions digests
equal the one-process run's.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from utils.cli import ArgumentParser

REPO = Path(__file__).resolve().parents[1]
FULL = ["--config", "configs/imagenet_efficientnet_lite0.yaml"]
TINY = ["--limit", "64", "--calib-size", "32", "--rounds", "1", "--warmup", "0", "--bench-batch-sizes", "1"]


def timed_run(args: list[str], out: Path, results: Path, name: str) -> float:
    command = [sys.executable, "-m", "resnet.run", *args, "--models-dir", str(out / name / "models"),
               "--results-dir", str(results), "--run-name", name]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{name} failed: {done.stderr.strip().splitlines()[-1]}")
    return wall


def _figures(report: dict) -> list[tuple]:
    return sorted((r["artifact"], r["runtime"], r["top1"], r["top5"], r.get("predictions_sha256")) for r in report["rows"])


def _same_figures(results: Path, name: str, baseline: str) -> bool:
    """Whether a run's accuracy figures and predictions equal the one-process run's (the cluster must not change them)."""
    read = lambda run: json.loads((results / run / "report.json").read_text())  # noqa: E731
    return _figures(read(name)) == _figures(read(baseline))


def task_overhead(tasks: int = 50) -> dict[str, float]:
    """Round trip of a no-op task on a fresh local cluster: one at a time, and all at once."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        noop = ray.remote(lambda: None)
        ray.get(noop.remote())  # a worker started
        start = time.perf_counter()
        for _ in range(tasks):
            ray.get(noop.remote())
        serial = (time.perf_counter() - start) / tasks
        start = time.perf_counter()
        ray.get([noop.remote() for _ in range(tasks)])
        batched = (time.perf_counter() - start) / tasks
    finally:
        ray.shutdown()
    return {"serial_ms_per_task": 1000 * serial, "batched_ms_per_task": 1000 * batched}


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m bench.cluster_scaling", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the demo model on 64 images instead of EfficientNet")
    parser.add_argument("--toolchains", default="torch_fx,modelopt,ort")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--results-dir", default="results/bench/cluster_scaling",
                        help="each run's report goes here (its artifacts go to a temporary folder)")
    args = parser.parse_args(argv)
    results = (REPO / args.results_dir).resolve()
    base = [*(TINY if args.tiny else FULL), "--toolchains", args.toolchains]
    rows = []
    with tempfile.TemporaryDirectory(prefix="mls-cluster-bench-") as tmp:
        for repeat in range(args.repeat):
            for label, extra in (("one process", []), ("local, 1 worker", ["--cluster", "local", "--workers", "1"]),
                                 ("local, 2 workers", ["--cluster", "local", "--workers", "2"])):
                name = f"{label.replace(' ', '_').replace(',', '')}-{repeat}"
                wall = timed_run(base + extra, Path(tmp), results, name)
                rows.append({"run": label, "repeat": repeat, "wall_s": round(wall, 2),
                             "same_figures_as_one_process":
                             _same_figures(results, name, f"one_process-{repeat}") if extra else None})
                print(f"{label:<18} wall {wall:8.2f} s")
    overhead = task_overhead()
    print(f"per-task overhead: {overhead['serial_ms_per_task']:.2f} ms one at a time, "
          f"{overhead['batched_ms_per_task']:.2f} ms batched")
    print(json.dumps({"model": "demo" if args.tiny else "efficientnet_lite0", "rows": rows, "overhead": overhead}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
