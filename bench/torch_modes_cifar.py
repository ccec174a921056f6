"""The Torch modes side by side on the pretrained CIFAR-10 ResNets of ../shared/assets/cifar10:
FP32, FX and eager static PTQ with per-channel and per-tensor weights, and QAT started from the
per-tensor setting, on the CIFAR-10 test images (calibration and QAT: the 5,000 training images).

All PTQ rows use MinMax activation ranges so that the weight granularity is the only difference;
QAT fine-tunes the per-tensor MinMax setting (the one that loses the most) for --qat-steps steps.
The test images are a JPEG (quality 75) copy, the training images too: any fine-tune on them also
adapts the model to JPEG damage, so the same fine-tune without quantization is run as a control.
Latency: every artifact of one model on the torch runtime (TorchScript), interleaved in one
process, medians; speedup = FP32 / INT8 at batch 1 and 64.

    .venv/bin/python bench/torch_modes_cifar.py [--arch resnet20,resnet56] [--limit 2000] [--qat-steps 300]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

from evaluation.pipelines.loop import evaluate_artifacts  # noqa: E402
from quantization.run_config import load_config  # noqa: E402
from quantization.Torch.qat_quantizer import fine_tune  # noqa: E402
from quantization.workflow import prepare, run_toolchain  # noqa: E402
from utils.cli import csv_list, quiet_known_warnings, setup_logging  # noqa: E402
from utils.config import resolve_path, with_overrides  # noqa: E402
from utils.training import evaluate_top1  # noqa: E402

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "assets" / "cifar10"
WEIGHTS = {"resnet20": "resnet20-12fca82f.th", "resnet32": "resnet32-d509ac18.th",
           "resnet44": "resnet44-014dd654.th", "resnet56": "resnet56-4bfd9763.th"}
MINMAX = {"observer": "minmax"}
VARIANTS = [  # (column, toolchain, torch overrides)
    ("FX per-channel", "torch_fx", {**MINMAX, "granularity": "per_channel"}),
    ("FX per-tensor", "torch_fx", {**MINMAX, "granularity": "per_tensor"}),
    ("eager per-channel", "torch_eager", {**MINMAX, "granularity": "per_channel"}),
    ("eager per-tensor", "torch_eager", {**MINMAX, "granularity": "per_tensor"}),
    ("QAT (FX, from per-tensor)", "torch_qat", {**MINMAX, "granularity": "per_tensor", "qat_engine": "fx"}),
]


def parse_cifar_bench_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """A CIFAR bench's start: its arguments, the known warnings quiet, logging on, and one line if the assets
    are absent."""
    args = parser.parse_args()
    quiet_known_warnings()
    setup_logging()
    if not CIFAR.is_dir():
        raise SystemExit(f"needs {CIFAR} (the pretrained CIFAR-10 ResNets and their images)")
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=csv_list(), default=sorted(WEIGHTS))
    parser.add_argument("--limit", type=int, default=None, help="first N test images (default: all 10,000)")
    parser.add_argument("--qat-steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", default="results/bench/torch_modes_cifar.json")
    args = parse_cifar_bench_args(parser)
    rows = []
    for arch in args.arch:
        cfg = load_config(resolve_path("configs/cifar10_resnet20.yaml"), {
            "model.arch": arch, "model.weights": str(CIFAR / WEIGHTS[arch]), "data.root": str(CIFAR),
            "data.limit": args.limit, "benchmark.batch_sizes": [1, 64], "benchmark.rounds": args.rounds,
            "torch.qat_steps": args.qat_steps})
        cfg.runtimes = ["torch"]
        prepared = prepare(cfg)
        artifacts, column_of = {}, {}
        for column, toolchain, overrides in VARIANTS:
            fp32, int8, *_ = run_toolchain(toolchain, with_overrides(cfg, {"torch": overrides}), prepared)
            artifacts.setdefault(str(fp32.path), fp32)
            artifacts[str(int8.path)] = int8
            column_of[str(int8.path)] = column
        results, _ = evaluate_artifacts(list(artifacts.values()), prepared.splits, cfg)
        control = fine_tune(copy.deepcopy(prepared.model.module), prepared.splits.calibration_pool, cfg.torch,
                            cfg.calibration.seed, desc="FP32 fine-tune (control)")
        fp32_result = next(r for r in results if r.artifact.precision == "fp32")
        row = {"arch": arch, "images": len(prepared.splits.evaluation), "FP32": 100 * fp32_result.metrics["top1"],
               "fp32_p50_ms": {b: s["p50_ms"] for b, s in fp32_result.latency.items()},
               "FP32 fine-tuned (QAT recipe, no quantization)": 100 * evaluate_top1(control, prepared.splits.evaluation)}
        for r in results:
            if str(r.artifact.path) in column_of:
                row[column_of[str(r.artifact.path)]] = {
                    "top1": 100 * r.metrics["top1"], "drop_pp": r.comparison["top1_drop_pp"],
                    "agreement": r.comparison["agreement"], "speedup": r.comparison["speedup"],
                    "p50_ms": {b: s["p50_ms"] for b, s in r.latency.items()}, "artifact": r.artifact.path.name}
        rows.append(row)
    columns = [c for c, _, _ in VARIANTS]
    print("\nTop-1 % on the CIFAR-10 test images (drop vs FP32 in pp); speedup FP32/INT8 at batch 1 / 64 (torch)\n")
    control = "FP32 fine-tuned (QAT recipe, no quantization)"
    print("| model | FP32 | " + " | ".join(columns) + f" | {control} |")
    print("|---|---|" + "---|" * (len(columns) + 1))
    for row in rows:
        cells = [f"{row[c]['top1']:.2f} ({-row[c]['drop_pp']:+.2f}) {row[c]['speedup'][1]:.2f}x/{row[c]['speedup'][64]:.2f}x"
                 for c in columns]
        print(f"| {row['arch']} ({row['images']} imgs) | {row['FP32']:.2f} | " + " | ".join(cells)
              + f" | {row[control]:.2f} |")
    print("\nAgreement with FP32 top-1 predictions (%): " + "; ".join(
        f"{row['arch']}: " + ", ".join(f"{c} {100 * row[c]['agreement']:.2f}" for c in columns) for row in rows))
    out = resolve_path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"qat_steps": args.qat_steps, "rows": rows}, indent=2, default=str), encoding="utf-8")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
