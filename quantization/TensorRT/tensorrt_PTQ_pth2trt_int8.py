"""Entry point: .pth -> Q/DQ ONNX -> explicitly quantized INT8 TensorRT engine. See --help."""
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[2])  # run from anywhere: import from the repo root

from quantization.TensorRT.cli import main  # noqa: E402
from utils.cli import run_cli  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
