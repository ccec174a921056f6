"""Quantize + evaluate on a slice of the demo set, and check the report against what was computed."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_script

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("e2e")
    result = run_script("-m", "resnet.run", "--toolchains", "torch_fx,modelopt,ort", "--limit", "150",
                        "--calib-size", "64", "--rounds", "3", "--warmup", "1", "--bench-batch-sizes", "1,8",
                        "--models-dir", str(out / "models"), "--results-dir", str(out / "results"),
                        "--run-name", "e2e")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _report(run: Path) -> dict:
    return json.loads((run / "results" / "e2e" / "report.json").read_text())


def test_every_toolchain_and_runtime_pair_is_reported(demo_run: Path):
    rows = _report(demo_run)["rows"]
    pairs = {(r["toolchain"], r["runtime"]) for r in rows}
    assert ("torch_fx", "torch") in pairs and ("torch", "torch") in pairs
    assert ("modelopt", "onnxruntime") in pairs and ("modelopt", "openvino") in pairs
    assert ("ort", "onnxruntime") in pairs and ("onnx", "onnxruntime") in pairs
    for row in rows:
        assert row["samples"] == 150
    skipped = " ".join(s["what"] + s["reason"] for s in _report(demo_run)["skipped"])
    assert "tensorrt" not in skipped  # not requested here


def test_int8_within_one_point_of_fp32_on_the_demo(demo_run: Path):
    for row in _report(demo_run)["rows"]:
        assert row["top1"] >= 0.95, row["artifact"]
        if row["precision"] == "int8":
            assert row["top1_drop_pp"] <= 1.0, (row["artifact"], row["runtime"], row["top1_drop_pp"])


def test_report_numbers_are_the_computed_ones(demo_run: Path):
    """Re-run the INT8 TorchScript artifact here and compare with the report's accuracy."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from evaluation.pipelines.torch_runner import TorchRunner
    from utils.artifacts import load_artifact
    from utils.config import CalibrationConfig, DataConfig
    from utils.data import load_splits

    report = _report(demo_run)
    splits = load_splits(DataConfig(limit=150), CalibrationConfig())
    x = np.stack([splits.evaluation[i][0].numpy() for i in range(150)])
    y = np.array([splits.evaluation[i][1] for i in range(150)])
    by_key = {(r["toolchain"], r["runtime"]): r for r in report["rows"] if r["precision"] == r["artifact_precision"]}
    for toolchain in ("torch_fx", "torch"):
        row = by_key[(toolchain, "torch")]
        preds = TorchRunner(load_artifact(Path(row["path"]))).predict(x).argmax(1)
        assert row["top1"] == pytest.approx(float(np.mean(preds == y)))
    fp32, int8 = by_key[("torch", "torch")], by_key[("torch_fx", "torch")]
    assert int8["top1_drop_pp"] == pytest.approx(100 * (fp32["top1"] - int8["top1"]))
    for b in ("1", "8"):
        assert int8["speedup"][b] == pytest.approx(fp32["latency"][b]["p50_ms"] / int8["latency"][b]["p50_ms"])
    assert int8["size_bytes"] == Path(int8["path"]).stat().st_size
    assert int8["compression_ratio"] == pytest.approx(fp32["size_bytes"] / int8["size_bytes"])


def test_markdown_and_csv_carry_the_json_figures(demo_run: Path):
    folder = demo_run / "results" / "e2e"
    report = _report(demo_run)
    md = (folder / "report.md").read_text()
    with open(folder / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(report["rows"])
    for row, csv_row in zip(report["rows"], rows, strict=True):
        assert f"| {row['artifact']} | {row['runtime']} |" in md
        assert f"{100 * row['top1']:.2f}" in md
        assert float(csv_row["top1"]) == pytest.approx(row["top1"])
        assert float(csv_row["p50_ms_b8"]) == pytest.approx(row["latency"]["8"]["p50_ms"])
    for b in ("1", "8"):
        choice = report["recommendation"]["by_batch"][b]["choice"]
        assert f"Batch {b}: ship **{choice['artifact']} on {choice['runtime']} in {choice['precision']}**" in md
    assert md.index("## Recommendation") < md.index("## Results")
    for name in ("pareto_b1.png", "pareto_b8.png", "drops.png", "per_class.png"):
        assert (folder / name).stat().st_size > 1000
    assert not (folder / "memory.png").exists() and not (folder / "confusion").exists()


def test_manifests_record_calibration_and_hardware(demo_run: Path):
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to read this CPU's flags from independently")
    cpuinfo_flags = {flag for line in cpuinfo.read_text().splitlines() if line.startswith("flags")
                     for flag in line.split(":", 1)[1].split()}
    for row in _report(demo_run)["rows"]:
        manifest = json.loads(Path(row["path"] + ".manifest.json").read_text())
        assert manifest["hardware"]["isa"]["avx2"] == ("avx2" in cpuinfo_flags)  # what this CPU says, not any bool
        assert manifest["package_versions"]["torch"].startswith("2.")
        if row["precision"] == "int8":
            assert manifest["calibration_sample_count"] == 64
            assert len(set(manifest["calibration_sample_ids"])) == 64


def test_a_rerun_with_the_same_config_gives_the_same_accuracy(demo_run: Path):
    result = run_script("-m", "resnet.run", "--toolchains", "torch_fx,modelopt,ort", "--limit", "150",
                        "--calib-size", "64", "--rounds", "1", "--warmup", "0", "--bench-batch-sizes", "1",
                        "--models-dir", str(demo_run / "models2"), "--results-dir", str(demo_run / "results"),
                        "--run-name", "rerun")
    assert result.returncode == 0, result.stderr[-3000:]
    first = {(r["artifact"], r["runtime"], r["precision"]): r for r in _report(demo_run)["rows"]}
    second = json.loads((demo_run / "results" / "rerun" / "report.json").read_text())["rows"]
    assert len(second) == len(first)
    for row in second:
        twin = first[(row["artifact"], row["runtime"], row["precision"])]
        assert (row["top1"], row["top5"], row["f1_macro"]) == (twin["top1"], twin["top5"], twin["f1_macro"])


def test_the_recommendation_is_the_fastest_row_within_budget(demo_run: Path):
    """report.json's recommendation, checked against its own rows: the chosen row exists, is within the budget,
    and no deployable row within the budget is faster; true FP32 and BF16 comparisons are the rows' ratios."""
    report = _report(demo_run)
    rec = report["recommendation"]
    assert rec["budget_pp"] == 1.0 and "bootstrap" in rec["interval_method"] and rec["evaluation_images"] == 150
    rows = [r for r in report["rows"] if not r["is_reference"]]
    for b in ("1", "8"):
        entry = rec["by_batch"][b]
        choice = entry["choice"]
        twin = next(r for r in rows if (r["artifact"], r["runtime"], r["precision"])
                    == (choice["artifact"], choice["runtime"], choice["precision"]))
        assert choice["p50_ms"] == twin["latency"][b]["p50_ms"]
        within = [r for r in rows if r["precision"] == "fp32" or (r["top1_drop_pp"] is not None
                                                                  and r["top1_drop_pp"] <= 1.0)]
        assert choice["p50_ms"] == min(r["latency"][b]["p50_ms"] for r in within)
        fp32 = min((r for r in rows if r["precision"] == "fp32"), key=lambda r: r["latency"][b]["p50_ms"])
        assert entry["speedup_vs"]["true_fp32"] == pytest.approx(fp32["latency"][b]["p50_ms"] / choice["p50_ms"])
        assert entry["float_wins"] == (choice["precision"] != "int8")
        if choice["precision"] != "fp32":
            low, high = choice["top1_drop_ci95_pp"]
            assert low <= choice["top1_drop_pp"] <= high
    for row in rows:  # every FP32 row says what it ran in, read back from its runtime
        if row["precision"] == "fp32" and row["runtime"] == "openvino":
            assert row["ran_in"] == "f32"
        if row["precision"] == "bf16":
            assert "bf16" in row["ran_in"]
