"""The report's one answer: what to ship, on which runtime, in which precision, at what cost in accuracy.

The rule, per measured batch size: the fastest (artifact, runtime, precision) row whose top-1 drop against true
FP32 on the same runtime stays within the accuracy budget (``--max-drop``, 1.0 pp when not given), over every
runtime and precision. A true-FP32 row is within any budget by definition, so a float row wins where it is
fastest, and the answer says so. A reference runtime (exact Q/DQ math, float kernels) is never a deployment
choice, and a row with no true-FP32 row on its runtime to measure its drop against cannot be vouched for.
Ties in p50 go to the smaller drop, then to the higher precision (fewer conversions to ship), then by name.
"""
from __future__ import annotations

from typing import Any

from utils.stats import METHOD, resolution_pp, resolves_budget

#: the accuracy budget when --max-drop is not given (pp of top-1 against true FP32 on the same runtime)
DEFAULT_BUDGET_PP = 1.0
#: tie-break between rows of equal p50: the higher precision first
PRECISION_RANK = {"fp32": 0, "bf16": 1, "fp16": 2, "int8": 3}


def deployable(row: dict[str, Any]) -> bool:
    return not row.get("is_reference")


def drop_of(row: dict[str, Any]) -> float | None:
    """Top-1 drop against true FP32 on the row's runtime: 0 for a true-FP32 row itself."""
    if row["precision"] == "fp32" and row["artifact_precision"] == "fp32":
        return 0.0
    return row["top1_drop_pp"]


def within_budget(row: dict[str, Any], budget_pp: float) -> bool:
    drop = drop_of(row)
    return drop is not None and drop <= budget_pp


def _p50(row: dict[str, Any], batch: str) -> float:
    return row["latency"][batch]["p50_ms"]


def _order(row: dict[str, Any], batch: str) -> tuple[Any, ...]:
    return (_p50(row, batch), drop_of(row) or 0.0, PRECISION_RANK.get(row["precision"], 9), row["artifact"],
            row["runtime"])


def _brief(row: dict[str, Any] | None, batch: str) -> dict[str, Any] | None:
    if row is None:
        return None
    lat = row["latency"][batch]
    return {"artifact": row["artifact"], "runtime": row["runtime"], "precision": row["precision"],
            "ran_in": row.get("ran_in"), "toolchain": row.get("toolchain"), "p50_ms": lat["p50_ms"],
            "p90_ms": lat.get("p90_ms"), "p99_ms": lat.get("p99_ms"), "top1": row["top1"], "top1_drop_pp": drop_of(row),
            "top1_drop_ci95_pp": row.get("top1_drop_ci95_pp"), "path": row.get("path")}


def _fastest(rows: list[dict[str, Any]], batch: str) -> dict[str, Any] | None:
    return min(rows, key=lambda r: _order(r, batch), default=None)


def choose(rows: list[dict[str, Any]], batch: str, budget_pp: float) -> dict[str, Any] | None:
    """The recommendation at one batch size, with the fastest true-FP32, BF16 and INT8 rows beside it."""
    measured = [r for r in rows if deployable(r) and batch in r["latency"]]
    eligible = [r for r in measured if within_budget(r, budget_pp)]
    best = _fastest(eligible, batch)
    if best is None:
        return None
    fp32 = _fastest([r for r in measured if r["precision"] == "fp32" and r["artifact_precision"] == "fp32"], batch)
    bf16 = _fastest([r for r in measured if r["precision"] == "bf16"], batch)
    int8 = _fastest([r for r in eligible if r["precision"] == "int8"], batch)
    faster_over_budget = [_brief(r, batch) for r in sorted(measured, key=lambda r: _order(r, batch))
                          if _p50(r, batch) < _p50(best, batch) and not within_budget(r, budget_pp)]
    choice = _brief(best, batch)
    others = {"true_fp32": fp32, "bf16": bf16, "int8_within_budget": int8}
    return {"batch_size": int(batch), "choice": choice, "float_wins": best["precision"] != "int8",
            "fastest": {name: _brief(row, batch) for name, row in others.items()},
            # how many times faster the choice is than each (1.0 where it is that row itself)
            "speedup_vs": {name: (_p50(row, batch) / choice["p50_ms"] if row and choice["p50_ms"] else None)
                           for name, row in others.items()},
            "faster_but_over_budget": faster_over_budget}


def recommend(rows: list[dict[str, Any]], batch_sizes: list[int], budget_pp: float | None,
              images: int) -> dict[str, Any]:
    """Per batch size :func:`choose`, plus whether the evaluation set can resolve the budget at all."""
    budget = DEFAULT_BUDGET_PP if budget_pp is None else float(budget_pp)
    by_batch = {str(b): choose(rows, str(b), budget) for b in batch_sizes}
    notes = []
    for b, entry in by_batch.items():
        if entry and entry["choice"]["precision"] != "fp32" and not resolves_budget(
                images, entry["choice"]["top1_drop_ci95_pp"], budget):
            notes.append(f"batch {b}: {images} evaluation images (one image = {resolution_pp(images):.2f} pp) cannot "
                         f"resolve a {budget:g} pp budget: the drop's interval is too wide to tell; evaluate on more "
                         "images before trusting it")
    return {"budget_pp": budget, "rule": "fastest row (p50) whose top-1 drop vs true FP32 on the same runtime is within "
            "the budget, over every runtime and precision; reference runtimes excluded",
            "interval_method": METHOD, "evaluation_images": images, "by_batch": by_batch, "warnings": notes}


LABELS = {"true_fp32": "the fastest true FP32", "bf16": "the fastest BF16", "int8_within_budget": "the fastest INT8"}


def _fmt_ci(ci: list[float] | None) -> str:
    return f"95 % CI {ci[0]:+.2f} to {ci[1]:+.2f} pp" if ci else "no interval"


def _where(row: dict[str, Any]) -> str:
    return f"{row['artifact']} on {row['runtime']} in {row['precision']}"


def sentences(rec: dict[str, Any]) -> list[str]:
    """The recommendation in plain words, one sentence per batch size (report.md's first section, the console's
    last lines)."""
    lines = []
    for b, entry in rec["by_batch"].items():
        if entry is None:
            lines.append(f"Batch {b}: no row is within the {rec['budget_pp']:g} pp budget (or none was timed).")
            continue
        c = entry["choice"]
        text = f"Batch {b}: ship **{_where(c)}** ({c['p50_ms']:.2f} ms p50"
        if c["precision"] == "fp32":
            text += "; true FP32, no accuracy cost)"
        else:
            text += (f"; top-1 drop {c['top1_drop_pp']:+.2f} pp vs true FP32 on {c['runtime']}, "
                     f"{_fmt_ci(c['top1_drop_ci95_pp'])}; budget {rec['budget_pp']:g} pp)")
        for name, label in LABELS.items():
            other, ratio = entry["fastest"][name], entry["speedup_vs"][name]
            if other and ratio and _where(other) != _where(c):
                text += f"; {ratio:.2f}x as fast as {label} ({_where(other)}, {other['p50_ms']:.2f} ms)"
        if entry["float_wins"]:
            text += ". A float row is the fastest within budget here: INT8 does not pay off on this CPU and runtime set"
        lines.append(text + ".")
    return lines
