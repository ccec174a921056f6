"""The evaluate half of a run: artifacts -> every runtime that runs them -> one report folder."""
from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path
from typing import Any

from evaluation.pipelines.loop import evaluate_artifacts
from utils.artifacts import Artifact
from utils.config import RunConfig, resolve_path
from utils.data import DataSplits
from utils.hardware import hardware_summary
from utils.plots import write_plots
from utils.report import build_report, write_report

log = logging.getLogger(__name__)


def run_folder(cfg: RunConfig, toolchain: str | None) -> Path:
    name = cfg.run_name or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = resolve_path(cfg.results_dir)
    return base / toolchain / name if toolchain else base / name


def evaluate_and_report(title: str, artifacts: list[Artifact], splits: DataSplits, cfg: RunConfig,
                        out_dir: Path, skipped: list[Any] | None = None,
                        context: dict[str, Any] | None = None, tuning: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Evaluate every (artifact, runtime) pair, write report.json/.md, metrics.csv and plots."""
    results, runtime_skips = evaluate_artifacts(artifacts, splits, cfg)
    hw = hardware_summary()
    info = {
        "model": cfg.model.arch,
        "weights": cfg.model.weights or ("demo model (trained on the demo set)" if cfg.model.arch == "demo" else "random"),
        "dataset": f"{splits.name} ({len(splits.evaluation)} evaluation images)",
        "calibration": f"{cfg.calibration.size} images, seed {cfg.calibration.seed}, disjoint from evaluation",
        "cpu": f"{hw['cpu']} ({hw['cpu_count']} cores); ISA: "
               + ", ".join(k for k, v in hw["isa"].items() if v) + f"; int8 dot product (VNNI/AMX): {hw['int8_dot_product']}",
        "gpu": hw["cuda"].get("name", "none"),
        "latency method": f"{cfg.benchmark.warmup} warm-up calls, {cfg.benchmark.rounds} interleaved rounds, "
                          "p50 is the median; speedup = FP32 p50 / INT8 p50 on the same runtime",
        **(context or {}),
    }
    report = build_report(title, results, list(skipped or []) + runtime_skips, info, cfg.benchmark.batch_sizes)
    report["tuning"] = tuning or []
    paths = write_report(out_dir, report)
    write_plots(report, out_dir, splits.class_names)
    log.info("report written to %s", paths["md"])
    return report
