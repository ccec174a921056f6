"""PNG plots of a report, drawn from report.json's rows (matplotlib, Agg, DejaVu Sans: on every machine)."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.family": "DejaVu Sans", "font.size": 9})
    return plt


def _label(row: dict[str, Any]) -> str:
    return f"{row['artifact']}\n@ {row['runtime']}"


def _save(fig: Any, path: Path) -> Path:
    from utils.artifacts import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def drop_vs_speedup(rows: list[dict[str, Any]], batch: str, path: Path) -> Path | None:
    """One point per INT8 (artifact, runtime): top-1 drop vs speedup over FP32 on the same runtime."""
    points = [r for r in rows if r["precision"] == "int8" and r["top1_drop_pp"] is not None and batch in r["speedup"]]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, row in enumerate(points, 1):  # numbered points + a legend: labels of close points never overlap
        ax.scatter(row["speedup"][batch], row["top1_drop_pp"], s=50, label=f"{i}: {row['artifact']} @ {row['runtime']}")
        ax.annotate(str(i), (row["speedup"][batch], row["top1_drop_pp"]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=7, ncol=1, frameon=False)
    ax.margins(x=0.2, y=0.2)
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"speedup vs FP32 on the same runtime (batch {batch}, p50)")
    ax.set_ylabel("top-1 drop vs FP32 (pp, lower is better)")
    ax.set_title("INT8: accuracy drop vs speedup")
    ax.grid(alpha=0.3)
    path = _save(fig, path)
    plt.close(fig)
    return path


def bars(rows: list[dict[str, Any]], values: list[float], ylabel: str, title: str, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows)), 4.5))
    colors = ["#4C72B0" if r["precision"] == "fp32" else "#DD8452" for r in rows]
    ax.bar(range(len(rows)), values, color=colors)
    ax.set_xticks(range(len(rows)), [_label(r) for r in rows], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title} (blue: FP32, orange: INT8)")
    ax.grid(axis="y", alpha=0.3)
    path = _save(fig, path)
    plt.close(fig)
    return path


def confusion_heatmap(matrix: np.ndarray, class_names: list[str], title: str, path: Path) -> Path:
    """Row-normalised; classes beyond 20 are summarised as the 20 most confused true classes."""
    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=np.float64)
    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    idx = np.arange(len(matrix))
    if len(matrix) > 20:  # summarise: the classes of the most frequent (true, predicted) confusions
        off = matrix.copy()
        np.fill_diagonal(off, 0)
        chosen: list[int] = []
        for flat in np.argsort(-off, axis=None, kind="stable"):
            if off.flat[flat] == 0 or len(chosen) >= 20:
                break
            for cls in np.unravel_index(flat, off.shape):
                if int(cls) not in chosen and len(chosen) < 20:
                    chosen.append(int(cls))
        idx = np.array(sorted(chosen or range(20)))
        title += f" ({len(idx)} classes of the most frequent confusions)"
    sub = norm[np.ix_(idx, idx)]
    names = [class_names[i] if i < len(class_names) else str(i) for i in idx]
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    image = ax.imshow(sub, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(idx)), [n[:12] for n in names], rotation=90, fontsize=7)
    ax.set_yticks(range(len(idx)), [n[:12] for n in names], fontsize=7)
    if len(idx) <= 12:
        for i in range(len(idx)):
            for j in range(len(idx)):
                if sub[i, j] >= 0.005:
                    ax.text(j, i, f"{sub[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if sub[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    path = _save(fig, path)
    plt.close(fig)
    return path


def write_plots(report: dict[str, Any], out_dir: Path, class_names: list[str]) -> list[Path]:
    rows = report["rows"]
    written: list[Path] = []
    if not rows:
        return written
    batches = [str(b) for b in report["batch_sizes"]]
    main = drop_vs_speedup(rows, batches[-1], out_dir / "plot.png")
    if main:
        written.append(main)
    written.append(bars(rows, [100 * r["top1"] for r in rows], "top-1 %", "Accuracy", out_dir / "accuracy.png"))
    for b in batches:
        written.append(bars(rows, [r["latency"][b]["p50_ms"] for r in rows], "p50 latency (ms)",
                            f"Latency at batch {b}", out_dir / f"latency_b{b}.png"))
    written.append(bars(rows, [r["peak_rss_bytes"] / 2**20 for r in rows], "peak RSS increase (MiB)",
                        "Memory", out_dir / "memory.png"))
    for tuning in report.get("tuning", []):
        ranking = tuning["ranking"][:20]
        if ranking:
            pseudo = [{"artifact": r["layer"], "runtime": tuning["toolchain"], "precision": "int8"} for r in ranking]
            written.append(bars(pseudo, [r["sqnr_gain_db"] for r in ranking], "logit SQNR gain when kept float (dB)",
                                f"Layer sensitivity ({tuning['toolchain']})", out_dir / f"sensitivity_{tuning['toolchain']}.png"))
    conf_dir = out_dir / "confusion"
    for key, matrix in report["confusion_matrices"].items():
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_")
        written.append(confusion_heatmap(np.asarray(matrix), class_names, key, conf_dir / f"{slug}.png"))
    return written
