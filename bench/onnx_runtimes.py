"""FP32 ONNX vs INT8 Q/DQ ONNX (ModelOpt, ORT quantize_static) on ONNX Runtime and OpenVINO.

ResNet-50 with random weights (speed only), calibrated on real images from ../shared/assets when
present. For each runtime, FP32 and every INT8 file are timed side by side in one process,
interleaved, at each batch size; medians. Prints a Markdown table (docs/benchmarks.md).

    .venv/bin/python bench/onnx_runtimes.py [--arch resnet50] [--batch-sizes 1,16] [--rounds 20]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.common import speed_config  # noqa: E402
from evaluation.pipelines.loop import open_runners  # noqa: E402
from quantization.workflow import prepare, run_toolchain  # noqa: E402
from utils.benchmark import interleaved_latency  # noqa: E402
from utils.cli import csv_list, quiet_known_warnings, setup_logging  # noqa: E402
from utils.config import replace_section  # noqa: E402
from utils.data import sample_batch  # noqa: E402
from utils.hardware import hardware_summary  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--batch-sizes", type=csv_list(int), default=[1, 16])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--runtimes", type=csv_list(), default=["onnxruntime", "openvino"])
    args = parser.parse_args()
    quiet_known_warnings()
    setup_logging()
    cfg = speed_config(args.arch)
    prepared = prepare(cfg)
    artifacts = {}
    for toolchain, method in (("modelopt", "max"), ("ort", "minmax")):
        variant = replace_section(cfg, toolchain, calibration_method=method)  # each toolchain's own section
        fp32, int8, *_ = run_toolchain(toolchain, variant, prepared)
        artifacts["FP32 ONNX"] = fp32
        artifacts[f"{toolchain} INT8 ({int8.path.stem.split('_', 1)[1]})"] = int8
    hw = hardware_summary()
    print(f"\n# {args.arch}, CPU: {hw['cpu']} ({hw['cpu_count']} cores), VNNI/AMX: {hw['int8_dot_product']}")
    print("| artifact | runtime | batch | FP32 p50 ms | INT8 p50 ms | speedup |")
    print("|---|---|---|---|---|---|")
    for runtime in args.runtimes:
        runners = open_runners({name: (artifact, runtime) for name, artifact in artifacts.items()})
        for batch_size in args.batch_sizes:
            batch = sample_batch(prepared.splits, batch_size).numpy()
            stats = interleaved_latency({k: r.timed_call(batch) for k, r in runners.items()}, batch_size,
                                        warmup=3, rounds=args.rounds)
            base = stats["FP32 ONNX"].summary()["p50_ms"]
            for name, stat in stats.items():
                if name == "FP32 ONNX":
                    continue
                p50 = stat.summary()["p50_ms"]
                print(f"| {name} | {runtime} | {batch_size} | {base:.1f} | {p50:.1f} | {base / p50:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
