"""The last lines of a run on the console: each row's top-1, the INT8 artifacts, what to ship, where the report is."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from evaluation.report.recommend import sentences
from evaluation.report.tables import row_label


def summary_lines(report: dict[str, Any], out_dir: Path) -> list[str]:
    lines = []
    for row in report["rows"]:
        drop = "" if row["top1_drop_pp"] is None else f" (drop {row['top1_drop_pp']:+.2f} pp)"
        lines.append(f"{row_label(row):<70} top-1 {100 * row['top1']:6.2f}%{drop}")
    int8 = dict.fromkeys(row["path"] for row in report["rows"] if row.get("artifact_precision") == "int8" and row.get("path"))
    lines += [f"artifact: {path}" for path in int8]
    lines += [f"recommendation: {line.replace('**', '')}" for line in sentences(report["recommendation"])]
    lines.append(f"report: {out_dir / 'report.md'}")
    return lines


def print_summary(report: dict[str, Any], out_dir: Path) -> None:
    print("\n".join(summary_lines(report, out_dir)))
