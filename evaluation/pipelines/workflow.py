"""The evaluate half of a run: artifacts -> every runtime that runs them -> one report folder."""
from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path
from typing import Any

from evaluation.pipelines.base import runner_class
from evaluation.pipelines.loop import AccuracyPass, PairResult, default_precisions, evaluate_artifacts, local_accuracy
from evaluation.report import build_report, provenance, write_plots, write_report
from evaluation.saturation_check import check_artifact
from quantization.run_config import RunConfig
from utils.artifacts import Artifact, staged_folder
from utils.config import resolve_path
from utils.data import DataSplits
from utils.hardware import hardware_summary
from utils.names import check_replaceable
from utils.targets import TARGETS, resolve_target

log = logging.getLogger(__name__)


def run_folder(cfg: RunConfig, toolchain: str | None) -> Path:
    """The run's results folder; refused (before any work, where the caller asks first) if it exists and the
    suite did not write it."""
    name = cfg.run_name or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = resolve_path(cfg.results_dir)
    folder = base / toolchain / name if toolchain else base / name
    check_replaceable(folder, "--run-name folder")
    return folder


def int8_checks(results: list[PairResult]) -> tuple[list[dict[str, Any]], list[str]]:
    """Per INT8 artifact: the target it was built for, the static saturation verdict for that target and for
    this machine's CPU, its reference accuracy and each runtime's kernel error; plus a warning wherever an
    artifact ran on CPU kernels of this machine that it can saturate."""
    here = resolve_target("auto")
    checks, warnings = [], []
    seen: dict[str, dict[str, Any]] = {}
    for result in results:
        artifact = result.artifact
        if artifact.precision != "int8":
            continue
        key = str(artifact.path)
        if key not in seen:
            target = TARGETS.get(artifact.manifest.get("target") or "", here)
            verdicts = check_artifact(artifact, [here, target])
            verdict_here, verdict_target = verdicts[here.name], verdicts[target.name]
            seen[key] = {"artifact": artifact.name, "toolchain": artifact.toolchain,
                         "target": artifact.manifest.get("target"), "this_cpu": here.name,
                         "recommended_runtime": artifact.manifest.get("recommended_runtime"),
                         "verdict_target": verdict_target.to_dict(), "verdict_here": verdict_here.to_dict(),
                         "reference_top1": None, "runtimes": []}
            checks.append(seen[key])
        entry = seen[key]
        runner = runner_class(result.runtime)
        if runner.reference:
            entry["reference_top1"] = result.metrics["top1"]
            continue
        entry["runtimes"].append({"runtime": result.runtime, "top1": result.metrics["top1"],
                                  "recommended": result.runtime == entry["recommended_runtime"],
                                  "kernel_error_pp": result.comparison.get("kernel_error_pp"),
                                  "agreement_with_reference": result.comparison.get("agreement_with_reference")})
        verdict = entry["verdict_here"]
        if runner.cpu_kernels and verdict["checked"] and not verdict["safe"]:
            warnings.append(f"{artifact.name} on {result.runtime}: {verdict['summary']} (this CPU); built for "
                            f"{entry['target'] or 'an unknown target'}: rebuild with --target {here.name} for this CPU")
    return checks, warnings


def evaluate_and_report(title: str, artifacts: list[Artifact], splits: DataSplits, cfg: RunConfig,
                        out_dir: Path, skipped: list[Any] | None = None,
                        context: dict[str, Any] | None = None, tuning: list[dict[str, Any]] | None = None,
                        accuracy: AccuracyPass = local_accuracy) -> dict[str, Any]:
    """Evaluate every (artifact, runtime) pair, write report.json/.md, metrics.csv and plots.

    ``accuracy`` is where the accuracy passes run (evaluation/cluster/sharded.py: over a Ray cluster); one with
    a ``placement()`` adds the report's ``cluster`` section (which node ran which shard, retries)."""
    results, runtime_skips = evaluate_artifacts(artifacts, splits, cfg, accuracy)
    hw = hardware_summary()
    facts = provenance(artifacts)  # what each artifact's manifest says it was made from, not this command line
    info = {
        "model": cfg.model.arch,
        "weights": facts["weights"],
        "dataset": f"{splits.name} ({len(splits.evaluation)} evaluation images"
                   + (f", {splits.subset})" if splits.subset else ")"),
        "calibration": facts.get("calibration", "none (no INT8 artifact)"),
        "transforms": facts.get("transforms", "none"),
        "cpu": f"{hw['cpu']} ({hw['cpu_count']} cores); ISA: "
               + ", ".join(k for k, v in hw["isa"].items() if v) + f"; int8 dot product (VNNI/AMX): {hw['int8_dot_product']}"
               + f"; target class of this CPU: {resolve_target('auto').name} (every figure here was measured on it)",
        "target": f"{facts.get('target', '-')} (what the INT8 artifacts were built for, from their manifests)",
        "precisions": ", ".join(cfg.benchmark.eval_precisions or default_precisions())
                      + (" (--eval-precisions)" if cfg.benchmark.eval_precisions else
                         " (every precision this CPU runs natively; fp32 is true FP32 on every runtime)"),
        "gpu": hw["cuda"].get("name", "none"),
        "latency method": f"{cfg.benchmark.warmup} warm-up calls, {cfg.benchmark.rounds} interleaved rounds, "
                          "p50 is the median; vs FP32 = true-FP32 p50 / row p50 on the same runtime",
        **(context or {}),
    }
    report = build_report(title, results, list(skipped or []) + runtime_skips, info, cfg.benchmark.batch_sizes,
                          cfg.tuning.max_drop)
    report["int8_checks"], saturation_warnings = int8_checks(results)
    report["warnings"].extend(saturation_warnings)
    report["tuning"] = tuning or []
    if hasattr(accuracy, "placement"):
        report["cluster"] = accuracy.placement()
    with staged_folder(out_dir) as staging:  # a run killed mid-plot leaves a .tmp-NAME.* folder, never out_dir
        write_report(staging, report)
        write_plots(report, staging, splits.class_names)
    log.info("report written to %s", out_dir / "report.md")
    return report
