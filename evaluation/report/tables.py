"""The report: one row per (artifact, runtime, precision), the recommendation first, written as JSON, Markdown, CSV.

The report is built once, from the measured results only; report.md and metrics.csv are rendered from one column
table (:func:`columns`), so every figure in them is the number in ``report.json`` and tests can check one against
the other.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.pipelines.base import pair_label
from evaluation.report.recommend import recommend, sentences
from utils.artifacts import write_json_atomic, write_text_atomic
from utils.metrics import predictions_digest

#: a latency whose p99 is more than this many times its p50 gets a warning
TAIL_RATIO = 3.0
TAIL = f"p99 > {TAIL_RATIO:g}x p50"


def result_row(result: Any) -> dict[str, Any]:
    """Flatten one PairResult into the report's row (plain JSON types only)."""
    artifact, metrics, comp = result.artifact, result.metrics, result.comparison
    settings = artifact.manifest.get("settings", {})
    row: dict[str, Any] = {
        "artifact": artifact.name,
        "toolchain": artifact.toolchain,
        "precision": result.precision,
        "artifact_precision": artifact.precision,
        "ran_in": result.ran_in,
        "runtime": result.runtime,
        "device": result.device,
        "is_reference": result.reference,
        "mode": settings.get("mode") or settings.get("quantize_mode"),
        "calibration": settings.get("observer") or settings.get("calibration_method"),
        "granularity": settings.get("granularity"),
        "transforms": "+".join(artifact.manifest.get("transforms") or []) or None,
        "target": artifact.manifest.get("target"),
        "samples": metrics["samples"],
        "top1": metrics["top1"],
        "top5": metrics["top5"],
        "precision_macro": metrics["precision_macro"],
        "recall_macro": metrics["recall_macro"],
        "f1_macro": metrics["f1_macro"],
        "top1_drop_pp": comp.get("top1_drop_pp"),
        "top1_drop_ci95_pp": comp.get("top1_drop_ci95_pp"),
        "agreement": comp.get("agreement"),
        "reference_top1": comp.get("reference_top1"),
        "kernel_error_pp": comp.get("kernel_error_pp"),
        "agreement_with_reference": comp.get("agreement_with_reference"),
        "predictions_sha256": predictions_digest(result.predictions),
        "size_bytes": artifact.size_bytes(),
        "compression_ratio": comp.get("compression_ratio"),
        "peak_rss_bytes": result.peak_rss_bytes,
        "quantize_seconds": artifact.manifest.get("quantize_seconds"),
        "latency": {str(b): s for b, s in result.latency.items()},
        "speedup": {str(b): s for b, s in comp.get("speedup", {}).items()},
        "path": str(artifact.path),
        "kernel_note": result.kernel_note,
    }
    return row


def _joined(values_by_artifact: dict[str, str]) -> str:
    """One value if every artifact agrees, else each value with the artifacts it belongs to."""
    groups: dict[str, list[str]] = {}
    for name, value in values_by_artifact.items():
        groups.setdefault(value, []).append(name)
    if len(groups) <= 1:
        return next(iter(groups), "-")
    return "; ".join(f"{value} ({', '.join(names)})" for value, names in groups.items())


def calibration_fact(manifest: dict[str, Any]) -> str:
    """What an INT8 artifact was calibrated on, as its manifest records it (never today's command line)."""
    facts = manifest.get("calibration") or {}
    count = manifest.get("calibration_sample_count", 0)
    if not facts:
        return f"{count} samples (seed and disjointness not recorded in the manifest)"
    overlap = ("calibration overlaps evaluation (--allow-overlap)" if facts.get("overlap_allowed")
               or not facts.get("disjoint_from_evaluation") else "disjoint from evaluation (by id and content)")
    return f"{facts['size']} images, seed {facts.get('seed')}, ids sha256 {facts['ids_sha256'][:12]}, {overlap}"


def weights_fact(manifest: dict[str, Any]) -> str:
    path, sha = manifest.get("source_weights"), manifest.get("source_weights_sha256")
    return f"{path} (sha256 {sha[:12]})" if path and sha else "random initialisation"


def provenance(artifacts: list[Any]) -> dict[str, str]:
    """Weights, calibration, target and transforms of the measured artifacts, read from their manifests."""
    int8 = [a for a in artifacts if a.precision == "int8"]
    facts = {"weights": _joined({a.name: weights_fact(a.manifest) for a in artifacts})}
    if int8:
        facts["calibration"] = _joined({a.name: calibration_fact(a.manifest) for a in int8})
        facts["target"] = _joined({a.name: str(a.manifest.get("target") or "not recorded") for a in int8})
        facts["transforms"] = _joined({a.name: "+".join(a.manifest.get("transforms") or []) or "none" for a in int8})
    return facts


def warnings_for(rows: list[dict[str, Any]], max_drop_pp: float) -> list[str]:
    """Plain-language warnings: a reduced precision slower than true FP32 (with the runtime's reason where it gives
    one: ``kernel_note``) or losing too much accuracy on a runtime, and latencies whose tail is far from their median
    (p99 > 3x p50: another process, a page-in, a recompile)."""
    notes = []
    for row in rows:
        tails = [f"{lat['p99_ms'] / lat['p50_ms']:.1f} at batch {batch}" for batch, lat in row["latency"].items()
                 if lat.get("p99_ms") and lat["p99_ms"] > TAIL_RATIO * lat["p50_ms"]]
        if tails:
            notes.append(f"{row_label(row)}: p99 / p50 = {', '.join(tails)} ({TAIL}): a noisy measurement; rerun "
                         "with more --rounds and nothing else running")
        if row["precision"] == "fp32" or row.get("is_reference"):
            continue  # a reference runtime's latency is float math plus Q/DQ, never an INT8 speed
        slower = {batch: speedup for batch, speedup in row["speedup"].items() if speedup < 1.0}
        for batch, speedup in slower.items():
            better = [r for r in rows if r["artifact"] == row["artifact"] and r["precision"] == row["precision"]
                      and r["runtime"] != row["runtime"] and not r.get("is_reference")
                      and r["speedup"].get(batch, 0) > 1.0]
            hint = f"; it runs faster than FP32 on {better[0]['runtime']}" if better else ""
            notes.append(f"{row_label(row)}: {row['precision'].upper()} is slower than true FP32 on "
                         f"{row['runtime']} at batch {batch} ({speedup:.2f}x){hint}")
        if slower and row.get("kernel_note"):
            notes.append(f"{row_label(row)}: why it is slower: {row['kernel_note']}")
        if row["top1_drop_pp"] is not None and row["top1_drop_pp"] > max_drop_pp:
            notes.append(f"{row_label(row)}: loses {row['top1_drop_pp']:.2f} pp top-1 vs true FP32 "
                         f"(more than the {max_drop_pp:g} pp budget)")
    return notes


def row_label(row: dict[str, Any]) -> str:
    suffix = "" if row["precision"] == row["artifact_precision"] else f" [{row['precision']}]"
    return f"{row['artifact']} @ {row['runtime']}{suffix}"


def _fmt(value: Any, spec: str = ".2f", scale: float = 1.0, empty: str = "-") -> str:
    if value is None:
        return empty
    return format(value * scale, spec)


def _ci(value: list[float] | None) -> str:
    return f"[{value[0]:+.2f}, {value[1]:+.2f}]" if value else "-"


@dataclass(frozen=True)
class Column:
    """One column of the results table: the same value goes to report.md (formatted) and metrics.csv (raw).
    A new metric is its computation (in the row) plus one line in :func:`columns`."""

    csv: str | None  # the metrics.csv header (None: Markdown only)
    header: str | None  # the report.md header (None: CSV only)
    value: Callable[[dict[str, Any]], Any]
    text: Callable[[Any], str] = lambda v: "-" if v is None else str(v)


def _key(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda r: r.get(name)


def _lat(batch: str, name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda r: r["latency"].get(batch, {}).get(name)


def _num(spec: str = ".2f", scale: float = 1.0) -> Callable[[Any], str]:
    return lambda v: _fmt(v, spec, scale)


def columns(batches: list[str]) -> list[Column]:
    cols = [
        Column("artifact", "artifact", _key("artifact")),
        Column("toolchain", None, _key("toolchain")),
        Column("runtime", "runtime", _key("runtime")),
        Column("precision", "prec", _key("precision")),
        Column("ran_in", "ran in", _key("ran_in")),
        Column("device", None, _key("device")),
        Column("mode", "mode", _key("mode")),
        Column("calibration", "calib", _key("calibration")),
        Column("granularity", "gran.", _key("granularity")),
        Column("transforms", "transforms", _key("transforms")),
        Column("target", None, _key("target")),
        Column("samples", None, _key("samples")),
        Column("top1", "top-1 %", _key("top1"), _num(scale=100)),
        Column("top5", "top-5 %", _key("top5"), _num(scale=100)),
        Column("precision_macro", None, _key("precision_macro")),
        Column("recall_macro", None, _key("recall_macro")),
        Column("f1_macro", None, _key("f1_macro")),
        Column("top1_drop_pp", "drop pp", _key("top1_drop_pp"), _num()),
        Column(None, "drop 95 % CI", _key("top1_drop_ci95_pp"), _ci),
        Column("top1_drop_ci95_low_pp", None, lambda r: (r["top1_drop_ci95_pp"] or [None, None])[0]),
        Column("top1_drop_ci95_high_pp", None, lambda r: (r["top1_drop_ci95_pp"] or [None, None])[1]),
        Column("agreement", "agree %", _key("agreement"), _num(scale=100)),
        Column("reference_top1", None, _key("reference_top1")),
        Column("kernel_error_pp", None, _key("kernel_error_pp")),
        Column("agreement_with_reference", None, _key("agreement_with_reference")),
    ]
    for b in batches:
        cols += [Column(f"p50_ms_b{b}", f"p50 b{b} ms", _lat(b, "p50_ms"), _num()),
                 Column(f"p90_ms_b{b}", f"p90 b{b} ms", _lat(b, "p90_ms"), _num()),
                 Column(f"p99_ms_b{b}", f"p99 b{b} ms", _lat(b, "p99_ms"), _num()),
                 Column(f"mean_ms_b{b}", None, _lat(b, "mean_ms")),
                 Column(f"std_ms_b{b}", None, _lat(b, "std_ms")),
                 Column(f"throughput_ips_b{b}", f"img/s b{b}", _lat(b, "throughput_ips"), _num(".1f")),
                 Column(f"speedup_b{b}", f"vs FP32 b{b}", lambda r, b=b: r["speedup"].get(b), _num())]
    cols += [Column("size_bytes", "size MB", _key("size_bytes"), _num(scale=1e-6)),
             Column("compression_ratio", "compr.", _key("compression_ratio"), _num()),
             Column("peak_rss_bytes", "load RSS MB", _key("peak_rss_bytes"), _num(".1f", 2**-20)),
             Column("quantize_seconds", "quant. s", _key("quantize_seconds"), _num(".1f"))]
    return cols


def markdown(report: dict[str, Any]) -> str:
    rows, batches = report["rows"], [str(b) for b in report["batch_sizes"]]
    out = io.StringIO()
    out.write(f"# {report['title']}\n\n")
    out.write(recommendation_markdown(report["recommendation"]))
    out.write("\n## Context\n\n")
    for key, value in report["context"].items():
        out.write(f"- **{key}**: {value}\n")
    shown = [c for c in columns(batches) if c.header]
    out.write("\n## Results per (artifact, runtime, precision)\n\n"
              "fp32 is true FP32 (the runtime told not to compute in BF16/TF32; `ran in` is what it reports). Drops, "
              "agreement and `vs FP32` (FP32 p50 / row p50) are against true FP32 on the same runtime; "
              f"drop intervals: {report['recommendation']['interval_method']}. `load RSS` is the resident-memory growth "
              "of loading the row in this process (first-load effects included), not a model's footprint.\n\n")
    out.write("| " + " | ".join(c.header for c in shown) + " |\n|" + "---|" * len(shown) + "\n")
    for r in rows:
        out.write("| " + " | ".join(c.text(c.value(r)) for c in shown) + " |\n")
    out.write(kernel_checks_markdown(report.get("int8_checks", [])))
    for tuning in report.get("tuning", []):
        out.write(tuning_markdown(tuning))
    if report["warnings"]:
        out.write("\n## Warnings\n\n" + "".join(f"- {w}\n" for w in report["warnings"]))
    if report["skipped"]:
        out.write("\n## Skipped\n\n" + "".join(f"- {s['what']}: {s['reason']}\n" for s in report["skipped"]))
    return out.getvalue()


def recommendation_markdown(rec: dict[str, Any]) -> str:
    out = io.StringIO()
    out.write("## Recommendation\n\n")
    for line in sentences(rec):
        out.write(f"- {line}\n")
    out.write(f"\nRule: {rec['rule']}; budget {rec['budget_pp']:g} pp (--max-drop). Drop intervals: "
              f"{rec['interval_method']}, on {rec['evaluation_images']} evaluation images.\n")
    for note in rec["warnings"]:
        out.write(f"\n**Warning:** {note}.\n")
    return out.getvalue()


def kernel_checks_markdown(checks: list[dict[str, Any]]) -> str:
    """Per INT8 artifact: its target, the static saturation verdict, and quantization vs kernel error."""
    if not checks:
        return ""
    out = io.StringIO()
    out.write("\n## INT8 artifacts: target, saturation check, quantization vs kernel error\n\n"
              "Static check: worst-case u8 x s8 pair sums of the stored weights against 16-bit lanes "
              "(utils/targets.py, evaluation/saturation_check.py). Reference: the same file on "
              "onnxruntime_reference (exact Q/DQ math, no integer kernels; the closest CPU estimate of "
              "TensorRT). Kernel error = reference top-1 - runtime top-1.\n\n"
              "| artifact | built for | static check (its target) | static check (this CPU) | reference top-1 % "
              "| runtime | top-1 % | kernel error pp | agree w/ reference % |\n|---|---|---|---|---|---|---|---|---|\n")
    for c in checks:
        runs = c["runtimes"] or [{"runtime": "-", "top1": None, "kernel_error_pp": None, "agreement_with_reference": None}]
        for i, r in enumerate(runs):
            lead = [c["artifact"], c["target"] or "-", c["verdict_target"]["summary"], c["verdict_here"]["summary"],
                    _fmt(c["reference_top1"], scale=100)] if i == 0 else ["", "", "", "", ""]
            name = f"{r['runtime']} (recommended)" if r.get("recommended") else r["runtime"]
            out.write("| " + " | ".join(lead + [name, _fmt(r["top1"], scale=100), _fmt(r["kernel_error_pp"]),
                                                _fmt(r["agreement_with_reference"], scale=100)]) + " |\n")
    return out.getvalue()


def tuning_markdown(t: dict[str, Any]) -> str:
    out = io.StringIO()
    out.write(f"\n## Accuracy recovery: {t['toolchain']} (measured on {t['runtime']}, {t['heldout']})\n\n")
    out.write(f"FP32 top-1 {100 * t['fp32_top1']:.2f} %, full INT8 {100 * t['full_int8_top1']:.2f} % "
              f"(logit SQNR {t['full_int8_sqnr_db']:.1f} dB) on the held-out slice.\n")
    if t["ranking"]:
        out.write("\nPer-layer sensitivity (each layer kept in float alone; most sensitive first):\n\n"
                  "| rank | layer | SQNR gain dB | top-1 gain pp |\n|---|---|---|---|\n")
        for i, r in enumerate(t["ranking"][:15], 1):
            out.write(f"| {i} | {r['layer']} | {r['sqnr_gain_db']:+.2f} | {r['top1_gain_pp']:+.2f} |\n")
    fb = t.get("fallback")
    if fb:
        verdict = "reached" if fb["reached"] else "NOT reached"
        out.write(f"\nFallback to a {fb['target_drop_pp']:g} pp drop (budget {fb['budget']} layers): {verdict}; "
                  f"kept in float: {', '.join(fb['kept_float']) or 'none'}"
                  f"{' (artifact ' + t['artifact'] + ' in the table above)' if t.get('artifact') else ''}.\n\n"
                  "| float layers | held-out top-1 % | drop pp |\n|---|---|---|\n")
        for h in fb["history"]:
            out.write(f"| {h['float_layers']}{' (+' + h['layer'] + ')' if h.get('layer') else ''} | "
                      f"{100 * h['top1']:.2f} | {h['drop_pp']:.2f} |\n")
    return out.getvalue()


def csv_text(report: dict[str, Any]) -> str:
    out = io.StringIO()
    cols = [c for c in columns([str(b) for b in report["batch_sizes"]]) if c.csv]
    writer = csv.writer(out)
    writer.writerow([c.csv for c in cols])
    for r in report["rows"]:
        writer.writerow(["" if (v := c.value(r)) is None else v for c in cols])
    return out.getvalue()


def build_report(title: str, results: list[Any], skipped: list[Any], context: dict[str, Any],
                 batch_sizes: list[int], max_drop_pp: float | None = None) -> dict[str, Any]:
    """The one report of a run, built once from the loop's results (rows) and context (manifests' provenance)."""
    rows = [result_row(r) for r in results]
    images = max((r["samples"] for r in rows), default=0)
    rec = recommend(rows, batch_sizes, max_drop_pp, images)
    return {
        "title": title,
        "recommendation": rec,
        "context": context,
        "batch_sizes": batch_sizes,
        "rows": rows,
        "warnings": warnings_for(rows, rec["budget_pp"]),  # the recommendation's own are in its section
        "skipped": [{"what": s.what, "reason": s.reason} for s in skipped],
        "confusion_matrices": {pair_label(r.artifact, r.runtime, r.precision): r.metrics["confusion_matrix"].tolist()
                               for r in results},
    }


def write_report(out_dir: Path, report: dict[str, Any]) -> dict[str, Path]:
    """report.json, report.md, metrics.csv (each written atomically) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md", "csv": out_dir / "metrics.csv"}
    write_json_atomic(paths["json"], report)
    write_text_atomic(paths["md"], markdown(report))
    write_text_atomic(paths["csv"], csv_text(report))
    return paths


def load_report(path: Path) -> dict[str, Any]:
    """A finished run's report; a file inside a ``.tmp-*`` staging folder belongs to an interrupted run."""
    from utils.errors import SuiteError

    path = Path(path)
    if any(part.startswith(".tmp-") for part in path.parent.parts):
        raise SuiteError(f"{path} is in an incomplete results folder (its run was interrupted); run it again")
    return json.loads(path.read_text(encoding="utf-8"))
