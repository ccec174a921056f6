"""Entry point: FP32 ONNX vs INT8 Q/DQ ONNX (ModelOpt; --engine ort: ORT) on ONNX Runtime and OpenVINO. See --help."""
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run from anywhere: import from the repo root

from evaluation.cli import evaluation_main  # noqa: E402
from quantization.ModelOpt.cli import ENGINES, add_engine_arg, engine_of  # noqa: E402
from utils.cli import run_cli  # noqa: E402


def main(argv=None) -> int:
    return evaluation_main(argv, prog="comprehensive_evaluation_modelopt_int8.py",
                           description="FP32 ONNX vs INT8 Q/DQ ONNX (ModelOpt, or with --engine ort the ORT "
                                       "toolchain's quantize_static) on every runtime that runs them (ONNX Runtime, "
                                       "OpenVINO): accuracy, agreement, latency, throughput, size, memory.",
                           folder=engine_of(argv), toolchains=ENGINES, script_args=add_engine_arg,  # results/<toolchain>/
                           toolchain_for=lambda cfg: engine_of(argv))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
