"""Reports: one row per (artifact, runtime) pair, written as JSON, Markdown and CSV.

The report is built from the measured results only; every figure in ``report.md`` and
``metrics.csv`` is the number in ``report.json``, so tests can check one against the other.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from utils.artifacts import write_json_atomic, write_text_atomic
from utils.metrics import predictions_digest

SLOWER_WARNING = "INT8 is slower than FP32 on"


def result_row(result: Any) -> dict[str, Any]:
    """Flatten one PairResult into the report's row (plain JSON types only)."""
    artifact, metrics, comp = result.artifact, result.metrics, result.comparison
    settings = artifact.manifest.get("settings", {})
    row: dict[str, Any] = {
        "artifact": artifact.name,
        "toolchain": artifact.toolchain,
        "precision": artifact.precision,
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
    """Plain-language warnings: INT8 slower than FP32, or losing too much accuracy, on a runtime."""
    notes = []
    for row in rows:
        if row["precision"] != "int8" or row.get("is_reference"):
            continue  # a reference runtime's latency is float math plus Q/DQ, never an INT8 speed
        for batch, speedup in row["speedup"].items():
            if speedup < 1.0:
                better = [r for r in rows if r["artifact"] == row["artifact"] and r["runtime"] != row["runtime"]
                          and not r.get("is_reference") and r["speedup"].get(batch, 0) > 1.0]
                hint = f"; it runs faster than FP32 on {better[0]['runtime']}" if better else ""
                notes.append(f"{row['artifact']}: {SLOWER_WARNING} {row['runtime']} at batch {batch} "
                             f"({speedup:.2f}x){hint}")
        if row["top1_drop_pp"] is not None and row["top1_drop_pp"] > max_drop_pp:
            notes.append(f"{row['artifact']}: loses {row['top1_drop_pp']:.2f} pp top-1 on {row['runtime']} "
                         f"(more than {max_drop_pp:g} pp)")
    return notes


def fastest_int8(rows: list[dict[str, Any]], batch: str) -> dict[str, Any] | None:
    int8 = [r for r in rows if r["precision"] == "int8" and batch in r["latency"] and not r.get("is_reference")]
    return min(int8, key=lambda r: r["latency"][batch]["p50_ms"], default=None)


def _fmt(value: Any, spec: str = ".2f", scale: float = 1.0, empty: str = "-") -> str:
    if value is None:
        return empty
    return format(value * scale, spec)


def markdown(report: dict[str, Any]) -> str:
    rows, batches = report["rows"], [str(b) for b in report["batch_sizes"]]
    out = io.StringIO()
    out.write(f"# {report['title']}\n\n")
    for key, value in report["context"].items():
        out.write(f"- **{key}**: {value}\n")
    out.write("\n## Results per (artifact, runtime)\n\n")
    head = ["artifact", "runtime", "prec", "mode", "calib", "gran.", "transforms", "top-1 %", "top-5 %", "drop pp", "agree %"]
    for b in batches:
        head += [f"p50 b{b} ms", f"p99 b{b} ms", f"img/s b{b}", f"speedup b{b}"]
    head += ["size MB", "compr.", "peak RSS MB", "quant. s"]
    out.write("| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n")
    for r in rows:
        cells = [r["artifact"], r["runtime"], r["precision"], r["mode"] or "-", r["calibration"] or "-",
                 r["granularity"] or "-", r.get("transforms") or "-", _fmt(r["top1"], scale=100), _fmt(r["top5"], scale=100),
                 _fmt(r["top1_drop_pp"]), _fmt(r["agreement"], scale=100)]
        for b in batches:
            lat = r["latency"].get(b, {})
            cells += [_fmt(lat.get("p50_ms")), _fmt(lat.get("p99_ms")), _fmt(lat.get("throughput_ips"), ".1f"),
                      _fmt(r["speedup"].get(b))]
        cells += [_fmt(r["size_bytes"], scale=1e-6), _fmt(r["compression_ratio"]),
                  _fmt(r["peak_rss_bytes"], ".1f", scale=2**-20), _fmt(r["quantize_seconds"], ".1f")]
        out.write("| " + " | ".join(cells) + " |\n")
    for b in batches:
        best = report["fastest_int8"].get(b)
        if best:
            out.write(f"\nFastest INT8 at batch {b}: **{best['artifact']}** on **{best['runtime']}** "
                      f"({best['p50_ms']:.2f} ms p50, {_fmt(best['speedup'])}x vs FP32 on the same runtime).\n")
    out.write(kernel_checks_markdown(report.get("int8_checks", [])))
    for tuning in report.get("tuning", []):
        out.write(tuning_markdown(tuning))
    if report["warnings"]:
        out.write("\n## Warnings\n\n" + "".join(f"- {w}\n" for w in report["warnings"]))
    if report["skipped"]:
        out.write("\n## Skipped\n\n" + "".join(f"- {s['what']}: {s['reason']}\n" for s in report["skipped"]))
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


CSV_FIELDS = ["artifact", "toolchain", "precision", "runtime", "device", "mode", "calibration", "granularity", "transforms",
              "target", "samples", "top1", "top5", "precision_macro", "recall_macro", "f1_macro", "top1_drop_pp",
              "agreement", "reference_top1", "kernel_error_pp", "agreement_with_reference", "size_bytes",
              "compression_ratio", "peak_rss_bytes", "quantize_seconds"]


def csv_text(report: dict[str, Any]) -> str:
    out = io.StringIO()
    batches = [str(b) for b in report["batch_sizes"]]
    fields = CSV_FIELDS + [f"{k}_b{b}" for b in batches for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms",
                                                                  "std_ms", "throughput_ips", "speedup")]
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    for r in report["rows"]:
        line = {k: r[k] for k in CSV_FIELDS}
        for b in batches:
            lat = r["latency"].get(b, {})
            for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "throughput_ips"):
                line[f"{k}_b{b}"] = lat.get(k)
            line[f"speedup_b{b}"] = r["speedup"].get(b)
        writer.writerow(line)
    return out.getvalue()


def build_report(title: str, results: list[Any], skipped: list[Any], context: dict[str, Any],
                 batch_sizes: list[int], max_drop_pp: float = 1.0) -> dict[str, Any]:
    rows = [result_row(r) for r in results]
    fastest = {}
    for b in (str(b) for b in batch_sizes):
        best = fastest_int8(rows, b)
        if best:
            fastest[b] = {"artifact": best["artifact"], "runtime": best["runtime"],
                          "p50_ms": best["latency"][b]["p50_ms"], "speedup": best["speedup"].get(b)}
    return {
        "title": title,
        "context": context,
        "batch_sizes": batch_sizes,
        "rows": rows,
        "fastest_int8": fastest,
        "warnings": warnings_for(rows, max_drop_pp),
        "skipped": [{"what": s.what, "reason": s.reason} for s in skipped],
        "confusion_matrices": {f"{r.artifact.name} @ {r.runtime}": r.metrics["confusion_matrix"].tolist()
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
