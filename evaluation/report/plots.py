"""PNG plots of a report, drawn from report.json's rows (matplotlib, Agg, DejaVu Sans: on every machine)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.report.tables import row_label

log = logging.getLogger(__name__)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.family": "DejaVu Sans", "font.size": 9})
    return plt


def _save(fig: Any, path: Path) -> Path:
    from utils.artifacts import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


#: marker and colour per row precision: float baselines stand out from INT8
STYLE = {"fp32": ("s", "#4C72B0"), "bf16": ("^", "#55A868"), "fp16": ("^", "#8172B2"), "int8": ("o", "#DD8452")}


def _deployable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if not r.get("is_reference")]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower latency, higher top-1), fastest first."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def pareto(rows: list[dict[str, Any]], batch: str, chosen: dict[str, Any] | None, path: Path) -> Path | None:
    """Top-1 against p50 latency (log axis) for every deployable (artifact, runtime, precision) row at one batch
    size: the float baselines marked, the Pareto front drawn, the recommended row starred."""
    points = [r for r in _deployable(rows) if batch in r["latency"]]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    xy = [(r["latency"][batch]["p50_ms"], 100 * r["top1"]) for r in points]
    for i, (row, (x, y)) in enumerate(zip(points, xy, strict=True), 1):
        marker, color = STYLE.get(row["precision"], ("o", "grey"))
        ax.scatter(x, y, marker=marker, color=color, s=55, zorder=3,
                   label=f"{i}: {row['artifact']} @ {row['runtime']} [{row['precision']}]")
        ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    front = pareto_front(xy)
    ax.plot([xy[i][0] for i in front], [xy[i][1] for i in front], color="black", lw=1, ls="--", zorder=2,
            label="Pareto front (nothing both faster and more accurate)")
    if chosen:
        ax.scatter(chosen["p50_ms"], 100 * chosen["top1"], marker="*", s=320, facecolor="none", edgecolor="red",
                   lw=1.5, zorder=4, label="recommended")
    ax.set_xscale("log")
    ax.set_xlabel(f"p50 latency at batch {batch} (ms, log scale; left is faster)")
    ax.set_ylabel("top-1 % (up is better)")
    ax.set_title(f"Latency vs accuracy, batch {batch} (square: true FP32, triangle: BF16/FP16, circle: INT8)")
    ax.grid(alpha=0.3, which="both")
    ax.margins(x=0.15, y=0.15)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=7, ncol=1, frameon=False)
    path = _save(fig, path)
    plt.close(fig)
    return path


def drops(rows: list[dict[str, Any]], budget_pp: float, path: Path) -> Path | None:
    """Top-1 drop vs true FP32 on the same runtime, in pp with its 95 % interval, for every reduced-precision row;
    the budget drawn as a line. A 0-100 % bar chart would draw every row the same height."""
    points = [r for r in _deployable(rows) if r["precision"] != "fp32" and r["top1_drop_pp"] is not None]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.38 * len(points) + 1.2)))
    for i, row in enumerate(points):
        drop, ci = row["top1_drop_pp"], row.get("top1_drop_ci95_pp")
        marker, color = STYLE.get(row["precision"], ("o", "grey"))
        err = [[drop - ci[0]], [ci[1] - drop]] if ci else None
        ax.errorbar(drop, i, xerr=err, fmt=marker, color=color, capsize=3, ms=6)
    ax.set_yticks(range(len(points)), [f"{r['artifact']} @ {r['runtime']} [{r['precision']}]" for r in points],
                  fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.axvline(budget_pp, color="red", lw=1, ls="--", label=f"budget {budget_pp:g} pp")
    ax.set_xlabel("top-1 drop vs true FP32 on the same runtime (pp; right is worse), 95 % interval")
    ax.set_title("Accuracy cost of each reduced-precision row")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    path = _save(fig, path)
    plt.close(fig)
    return path


def per_class_change(report: dict[str, Any], class_names: list[str], path: Path, shown: int = 25) -> Path | None:
    """Per-class top-1 of each INT8 row minus true FP32 on its runtime, for the classes that moved most: where the
    INT8 error concentrates (one chart instead of a confusion heatmap per row)."""
    matrices = report["confusion_matrices"]
    series = {}
    for row in _deployable(report["rows"]):
        base = next((r for r in report["rows"] if r["runtime"] == row["runtime"] and r["precision"] == "fp32"
                     and r["artifact_precision"] == "fp32"), None)
        if row["precision"] != "int8" or base is None:
            continue
        series[f"{row['artifact']} @ {row['runtime']}"] = (_recall(matrices[row_label(row)]) - _recall(matrices[row_label(base)]))
    if not series:
        return None
    changes = np.nan_to_num(np.vstack(list(series.values())))  # a class with no evaluation image did not move
    moved = np.abs(changes).max(axis=0)
    order = np.argsort(-moved, kind="stable")[:shown]
    order = order[moved[order] > 0]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * max(len(order), 8) + 2), 4.5))
    width = 0.8 / len(series)
    for k, (name, change) in enumerate(series.items()):
        ax.bar(np.arange(len(order)) + k * width - 0.4 + width / 2, 100 * change[order], width, label=name)
    names = [class_names[i] if i < len(class_names) else str(i) for i in order]
    ax.set_xticks(range(len(order)), [n[:14] for n in names], rotation=60, ha="right", fontsize=7)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylabel("INT8 - FP32 per-class top-1 (pp)")
    ax.set_title(f"Per-class change, the {len(order)} classes that moved most (same runtime, same images)"
                 if len(order) else "Per-class change: no class moved")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), frameon=False)
    path = _save(fig, path)
    plt.close(fig)
    return path


def _recall(matrix: list[list[int]]) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    totals = m.sum(axis=1)
    return np.divide(np.diag(m), totals, out=np.full(len(m), np.nan), where=totals > 0)


def sensitivity(ranking: list[dict[str, Any]], toolchain: str, path: Path) -> Path:
    """Logit SQNR gain of keeping each layer in float alone, most sensitive first."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(ranking)), 4.5))
    ax.bar(range(len(ranking)), [r["sqnr_gain_db"] for r in ranking], color="#DD8452")
    ax.set_xticks(range(len(ranking)), [r["layer"] for r in ranking], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("logit SQNR gain when kept float (dB)")
    ax.set_title(f"Layer sensitivity ({toolchain})")
    ax.grid(axis="y", alpha=0.3)
    path = _save(fig, path)
    plt.close(fig)
    return path


def write_plots(report: dict[str, Any], out_dir: Path, class_names: list[str]) -> list[Path]:
    """pareto_b{N}.png per batch size, drops.png, per_class.png, and one sensitivity plot per tuned toolchain.
    No memory plot: load memory is measured in one shared process, where first-load effects dominate it."""
    rows = report["rows"]
    written: list[Path] = []
    if not rows:
        return written
    rec = report["recommendation"]
    for b in (str(b) for b in report["batch_sizes"]):
        entry = rec["by_batch"].get(b)
        written.append(pareto(rows, b, entry["choice"] if entry else None, out_dir / f"pareto_b{b}.png"))
    written.append(drops(rows, rec["budget_pp"], out_dir / "drops.png"))
    written.append(per_class_change(report, class_names, out_dir / "per_class.png"))
    for tuning in report.get("tuning", []):
        ranking = tuning["ranking"][:20]
        if ranking:
            written.append(sensitivity(ranking, tuning["toolchain"], out_dir / f"sensitivity_{tuning['toolchain']}.png"))
    return [p for p in written if p is not None]
