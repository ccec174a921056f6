"""Entry point: FP32 torch vs TensorRT FP32 / FP16 / INT8 engines on the same data. See --help."""
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run from anywhere: import from the repo root

from evaluation.cli import evaluation_main  # noqa: E402
from utils.cli import run_cli  # noqa: E402


def main(argv=None) -> int:
    return evaluation_main(argv, prog="comprehensive_evaluation_tensorrt_int8.py",
                           description="TensorRT FP32, FP16 and INT8 (explicit Q/DQ) engines compared on the "
                                       "tensorrt runtime: accuracy, agreement, latency, throughput, size, memory. "
                                       "Needs an NVIDIA GPU with TensorRT.",
                           folder="tensorrt", toolchains=("tensorrt",),
                           toolchain_for=lambda cfg: "tensorrt")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
