"""FP32 vs INT8 latency of the PyTorch toolchain on ResNet-18 and ResNet-50 (random weights: speed only).

FX INT8 (TorchScript) against FP32 TorchScript on the torch runtime, and PT2E INT8 against the FP32
ExportedProgram, both compiled by Inductor. Each pair is timed side by side in one process,
interleaved; medians. Calibration uses real images from ../shared/assets when present.

    .venv/bin/python bench/torch_latency.py [--archs resnet18,resnet50] [--batch-sizes 1,16] [--rounds 30]
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
from utils.data import sample_batch  # noqa: E402
from utils.hardware import hardware_summary  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", type=csv_list(), default=["resnet18", "resnet50"])
    parser.add_argument("--batch-sizes", type=csv_list(int), default=[1, 16])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--toolchains", type=csv_list(), default=["torch_fx", "torch_pt2e"])
    args = parser.parse_args()
    quiet_known_warnings()
    setup_logging()
    hw = hardware_summary()
    print(f"# CPU: {hw['cpu']} ({hw['cpu_count']} cores), VNNI/AMX: {hw['int8_dot_product']}")
    print("| model | toolchain | runtime | batch | FP32 p50 ms | INT8 p50 ms | speedup |")
    print("|---|---|---|---|---|---|---|")
    for arch in args.archs:
        cfg = speed_config(arch)
        prepared = prepare(cfg)
        for toolchain in args.toolchains:
            fp32, int8, *_ = run_toolchain(toolchain, cfg, prepared)
            runtime = "torch_compile" if toolchain == "torch_pt2e" else "torch"
            runners = open_runners({"fp32": (fp32, runtime), "int8": (int8, runtime)})
            for batch_size in args.batch_sizes:
                batch = sample_batch(prepared.splits, batch_size).numpy()
                stats = interleaved_latency({k: r.timed_call(batch) for k, r in runners.items()}, batch_size,
                                            warmup=5, rounds=args.rounds)
                f, q = stats["fp32"].summary()["p50_ms"], stats["int8"].summary()["p50_ms"]
                print(f"| {arch} | {toolchain} | {runtime} | {batch_size} | {f:.1f} | {q:.1f} | {f / q:.2f}x |",
                      flush=True)


if __name__ == "__main__":
    main()
