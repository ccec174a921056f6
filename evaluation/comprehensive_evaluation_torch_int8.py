"""Entry point: FP32 vs INT8 (PyTorch toolchain) on the same data and runtime. See --help."""
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run from anywhere: import from the repo root

from evaluation.cli import evaluation_main  # noqa: E402
from quantization.Torch.cli import MODE_TOOLCHAINS, toolchain_for_mode  # noqa: E402
from quantization.Torch.config import add_mode_arg  # noqa: E402
from utils.cli import run_cli  # noqa: E402


def main(argv=None) -> int:
    return evaluation_main(argv, prog="comprehensive_evaluation_torch_int8.py",
                           description="FP32 vs INT8 with the PyTorch toolchain (FX / PT2E / dynamic): "
                                       "accuracy, agreement, latency, throughput, size, memory.",
                           folder="torch", toolchains=tuple(MODE_TOOLCHAINS.values()), script_args=add_mode_arg,
                           toolchain_for=lambda cfg: toolchain_for_mode(cfg.torch.mode))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
