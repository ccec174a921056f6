"""``make test-gpu``: the TensorRT toolchain's first real run, in one command, on a GPU host with TensorRT.

No machine of this project has had a GPU with TensorRT, so nothing of the engine build or the runner has
run (docs/tensorrt.md). This builds the FP32, FP16 and INT8 (Q/DQ) engines of the demo model and of
ResNet-50, evaluates them on the tensorrt runtime with the suite's own evaluation (accuracy, agreement,
latency) and prints the figures; the reports stay in ``results/tensorrt/gpu-check-*``. Without a GPU or
TensorRT it says so in one line and exits 2 before any work.

ResNet-50 has random weights (no ImageNet checkpoint is available to the project): its figures are
latency and FP32-vs-INT8 agreement, not accuracy. It needs the ImageNet images of the shared assets
(``MLS_ASSETS``, default ``../shared/assets``) and is skipped with a line where they are absent.
"""
from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

from utils.config import REPO_ROOT
from utils.errors import ToolchainUnavailable

PROG = "python -m quantization.TensorRT.gpu_check"


def cases(assets: Path) -> dict[str, tuple[list[str], str | None]]:
    """Case name -> (evaluation flags, why it cannot run here or None)."""
    imagenet = assets / "imagenet-val-1300"
    return {
        "demo": (["--config", str(REPO_ROOT / "configs" / "demo.yaml")], None),
        "resnet50": (["--config", str(REPO_ROOT / "configs" / "resnet50_speed.yaml"), "--data-root", str(imagenet)],
                     None if imagenet.is_dir() else f"no ImageNet images at {imagenet} (set MLS_ASSETS)"),
    }


def unavailable() -> str | None:
    """TensorRT and a GPU, and ModelOpt for the Q/DQ and FP16 ONNX files the check builds from."""
    from quantization.ModelOpt.modelopt_quantizer import ModelOptQuantizer
    from quantization.TensorRT.trt_quantizer import TensorRTQuantizer

    return TensorRTQuantizer.unavailable_reason() or ModelOptQuantizer.unavailable_reason()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="demo,resnet50", help="comma-separated: demo, resnet50")
    parser.add_argument("--models-dir", default="models/gpu_check")
    parser.add_argument("--results-dir", default="results")
    args = parser.parse_args(argv)
    reason = unavailable()
    if reason:
        raise ToolchainUnavailable(f"make test-gpu needs an NVIDIA GPU with TensorRT: {reason}")
    from evaluation.comprehensive_evaluation_tensorrt_int8 import main as evaluate

    known = cases(Path(os.environ.get("MLS_ASSETS", REPO_ROOT.parent / "shared" / "assets")))
    for name in args.cases.split(","):
        if name not in known:
            raise ToolchainUnavailable(f"unknown case {name} (known: {', '.join(known)})")
        flags, skip = known[name]
        if skip:
            print(f"{name}: skipped: {skip}")
            continue
        run = f"gpu-check-{name}"
        evaluate([*flags, "--runtimes", "tensorrt", "--models-dir", args.models_dir,
                  "--results-dir", args.results_dir, "--run-name", run])
        report = json.loads((Path(args.results_dir) / "tensorrt" / run / "report.json").read_text())
        for row in report["rows"]:
            p50 = {b: s.get("p50_ms") for b, s in row["latency"].items()}
            drop = "" if row.get("top1_drop_pp") is None else f" drop {row['top1_drop_pp']:+.2f} pp"
            print(f"{name:<9} {row['precision']:<5} {row['artifact']:<48} top-1 {100 * row['top1']:6.2f}%{drop} "
                  f"p50 ms {p50}")
    return 0


if __name__ == "__main__":
    from utils.cli import run_cli

    raise SystemExit(run_cli(main))
