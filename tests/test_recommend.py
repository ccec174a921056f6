"""The recommendation chooser on synthetic rows, the paired drop interval, and the precision plan per CPU class."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evaluation.report.recommend import choose, recommend, sentences
from utils.stats import paired_drop_interval, resolves_budget


def row(artifact: str, runtime: str, precision: str, p50: dict[str, float], drop: float | None = None,
        top1: float = 0.8, reference: bool = False, artifact_precision: str | None = None) -> dict[str, Any]:
    artifact_precision = artifact_precision or ("fp32" if precision in ("fp32", "bf16") else precision)
    return {"artifact": artifact, "runtime": runtime, "precision": precision, "artifact_precision": artifact_precision,
            "toolchain": "t", "ran_in": precision, "is_reference": reference, "top1": top1, "top1_drop_pp": drop,
            "top1_drop_ci95_pp": None if drop is None else [drop - 0.3, drop + 0.3], "path": f"{artifact}.x",
            "latency": {b: {"p50_ms": v, "p90_ms": v, "p99_ms": v} for b, v in p50.items()}}


def amx_like_rows() -> list[dict[str, Any]]:
    """The ResNet-50 shape of issue 27: true FP32 slow, BF16 fast, INT8 faster still; a faster INT8 over budget."""
    return [
        row("fp32", "openvino", "fp32", {"1": 41.2, "16": 450.0}),
        row("fp32", "openvino", "bf16", {"1": 8.7, "16": 76.5}, drop=0.1),
        row("fp32", "onnxruntime", "fp32", {"1": 33.7, "16": 421.0}),
        row("modelopt", "openvino", "int8", {"1": 5.4, "16": 44.4}, drop=0.4),
        row("ort", "openvino", "int8", {"1": 5.8, "16": 46.1}, drop=0.2),
        row("bad", "openvino", "int8", {"1": 5.0, "16": 40.0}, drop=3.0),
        row("modelopt", "onnxruntime_reference", "int8", {"1": 1.0, "16": 1.0}, drop=0.1, reference=True),
    ]


def test_within_budget_rule_picks_the_fastest_row_inside_the_budget():
    entry = choose(amx_like_rows(), "1", budget_pp=1.0)
    assert (entry["choice"]["artifact"], entry["choice"]["runtime"], entry["choice"]["precision"]) == \
        ("modelopt", "openvino", "int8")
    assert not entry["float_wins"]
    assert entry["speedup_vs"]["true_fp32"] == pytest.approx(33.7 / 5.4)  # fastest true FP32 is ORT's, any runtime
    assert entry["speedup_vs"]["bf16"] == pytest.approx(8.7 / 5.4)
    assert [r["artifact"] for r in entry["faster_but_over_budget"]] == ["bad"]
    # a looser budget lets the faster, worse row win
    assert choose(amx_like_rows(), "1", budget_pp=3.0)["choice"]["artifact"] == "bad"


def test_a_float_row_wins_where_it_is_fastest_and_the_words_say_so():
    rows = [row("fp32", "openvino", "fp32", {"1": 10.7}), row("fp32", "openvino", "bf16", {"1": 3.1}, drop=0.0),
            row("fx", "torch", "int8", {"1": 4.9}, drop=0.3), row("ort", "openvino", "int8", {"1": 4.2}, drop=0.2)]
    entry = choose(rows, "1", 1.0)
    assert entry["choice"]["precision"] == "bf16" and entry["float_wins"]
    assert entry["speedup_vs"]["int8_within_budget"] == pytest.approx(4.2 / 3.1)
    text = sentences(recommend(rows, [1], 1.0, images=1000))[0]
    assert "fp32 on openvino in bf16" in text and "INT8 does not pay off" in text
    # true FP32 wins when nothing reduced is within budget
    only_fp32 = choose([rows[0], row("fx", "torch", "int8", {"1": 1.0}, drop=5.0)], "1", 1.0)
    assert only_fp32["choice"]["precision"] == "fp32" and only_fp32["choice"]["top1_drop_pp"] == 0.0


def test_ties_go_to_the_smaller_drop_then_the_higher_precision_then_the_name():
    rows = [row("b", "openvino", "int8", {"1": 5.0}, drop=0.5), row("a", "openvino", "int8", {"1": 5.0}, drop=0.2)]
    assert choose(rows, "1", 1.0)["choice"]["artifact"] == "a"
    rows = [row("fp32", "openvino", "fp32", {"1": 5.0}), row("fp32", "openvino", "bf16", {"1": 5.0}, drop=0.0),
            row("q", "openvino", "int8", {"1": 5.0}, drop=0.0)]
    assert choose(rows, "1", 1.0)["choice"]["precision"] == "fp32"
    rows = [row("z", "torch", "int8", {"1": 5.0}, drop=0.1), row("y", "torch", "int8", {"1": 5.0}, drop=0.1)]
    assert choose(rows, "1", 1.0)["choice"]["artifact"] == "y"


def test_the_reference_runtime_and_rows_without_a_baseline_are_never_chosen():
    rows = [row("fp32", "openvino", "fp32", {"1": 40.0}),
            row("q", "onnxruntime_reference", "int8", {"1": 0.1}, drop=0.0, reference=True),
            row("q", "tensorrt", "int8", {"1": 0.2}, drop=None)]  # no FP32 row on its runtime: no drop to vouch for
    entry = choose(rows, "1", 1.0)
    assert entry["choice"]["runtime"] == "openvino"
    assert all(r["runtime"] != "onnxruntime_reference" for r in entry["faster_but_over_budget"])


def test_each_batch_size_gets_its_own_answer():
    rows = [row("fp32", "openvino", "fp32", {"1": 3.0, "16": 80.0}), row("q", "openvino", "int8", {"1": 4.0, "16": 40.0},
                                                                        drop=0.1)]
    rec = recommend(rows, [1, 16], None, images=1000)
    assert rec["budget_pp"] == 1.0  # --max-drop not given
    assert rec["by_batch"]["1"]["choice"]["precision"] == "fp32"
    assert rec["by_batch"]["16"]["choice"]["precision"] == "int8"
    assert rec["by_batch"]["16"]["speedup_vs"]["true_fp32"] == pytest.approx(2.0)


def test_a_set_too_small_for_the_budget_is_warned_about():
    rows = [row("fp32", "openvino", "fp32", {"1": 10.0}), row("q", "openvino", "int8", {"1": 5.0}, drop=0.0)]
    assert recommend(rows, [1], 1.0, images=64)["warnings"]  # one image = 1.56 pp
    assert not recommend(rows, [1], 1.0, images=1000)["warnings"]


def test_paired_interval_is_the_image_bootstrap_of_the_discordant_counts():
    rng = np.random.default_rng(1)
    base = rng.random(1000) < 0.8
    row_ = base.copy()
    flip = rng.choice(1000, 40, replace=False)
    row_[flip[:30]] = False  # 30 images lost ...
    row_[flip[30:]] = True  # ... and up to 10 gained
    drop = 100 * (base.mean() - row_.mean())
    low, high = paired_drop_interval(base, row_)
    assert low < drop < high and high - low < 3.0
    # the multinomial shortcut equals resampling images directly (same distribution: compare the widths)
    idx = rng.integers(0, 1000, size=(3000, 1000))
    direct = 100 * (base[idx].mean(axis=1) - row_[idx].mean(axis=1))
    assert np.percentile(direct, 97.5) - np.percentile(direct, 2.5) == pytest.approx(high - low, rel=0.1)
    assert paired_drop_interval(base, base) == [0.0, 0.0]
    assert paired_drop_interval(base, row_) == paired_drop_interval(base, row_)  # seeded: the same rows, the same
    assert not resolves_budget(64, [0.0, 0.0], 1.0) and resolves_budget(1000, [low, high], 3.0)


@pytest.mark.parametrize("flags, bf16_rows", [({"avx2", "fma", "avx512_vnni", "amx_int8", "amx_bf16", "avx512_bf16"}, True),
                                               ({"avx2", "fma"}, False)])
def test_precision_plan_per_cpu_class(monkeypatch, tmp_path: Path, flags: set[str], bf16_rows: bool):
    """BF16 rows exactly where the CPU has AMX-BF16/AVX512-BF16; elsewhere the reason is in Skipped. Runs on every
    class: the CPU's flags are set, not read."""
    from evaluation.pipelines.loop import default_precisions, plan_pairs
    from utils import hardware
    from utils.artifacts import Artifact

    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
    fp32 = Artifact(path=tmp_path / "m.onnx", kind="onnx", toolchain="fp32", precision="fp32", manifest={})
    int8 = Artifact(path=tmp_path / "m_int8.onnx", kind="onnx_qdq", toolchain="ort", precision="int8", manifest={})
    groups, skipped = plan_pairs([fp32, int8], ["openvino", "onnxruntime"], None)
    assert ("bf16" in default_precisions()) == bf16_rows
    assert sorted(p for a, p in groups["openvino"]) == (["bf16", "fp32", "int8"] if bf16_rows else ["fp32", "int8"])
    assert sorted(p for a, p in groups["onnxruntime"]) == ["fp32", "int8"]
    reasons = {s.what: s.reason for s in skipped}
    if bf16_rows:
        assert "no BF16 convolution kernels" in reasons["bf16 on onnxruntime"]
    else:
        assert "neither AMX-BF16 nor AVX512-BF16" in reasons["bf16 rows"]
    groups, skipped = plan_pairs([fp32, int8], ["openvino"], ["fp32"])
    assert [p for a, p in groups["openvino"]] == ["fp32"] and any(s.what == "int8 rows" for s in skipped)
