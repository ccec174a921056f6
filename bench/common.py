"""What the benchmark scripts share: where the real images are and the speed-run configuration."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from quantization.run_config import RunConfig
from utils.artifacts import Artifact
from utils.errors import missing_package
from utils.packages import has_module

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets" / "imagenet-val-1300"


def efficientnet_prepared():
    """The real-weights EfficientNet-Lite0 run of configs/imagenet_efficientnet_lite0.yaml: (cfg, prepared)."""
    from quantization.run_config import load_config
    from quantization.workflow import prepare
    from utils.config import resolve_path

    if not ASSETS.is_dir():
        raise SystemExit(f"needs {ASSETS} (the real EfficientNet-Lite0 evaluation images)")
    cfg = load_config(resolve_path("configs/imagenet_efficientnet_lite0.yaml"))
    return cfg, prepare(cfg)


def speed_config(arch: str, images: int = 32) -> RunConfig:
    """Random weights (speed only), calibrated on ``images`` real images when ../shared is there."""
    cfg = RunConfig()
    cfg.model.arch = arch
    cfg.calibration.size = images
    if ASSETS.is_dir():
        cfg.data.dataset, cfg.data.root, cfg.data.limit = "imagenet", str(ASSETS), images
    else:
        cfg.data.image_size = 224
    return cfg


def require_nncf() -> None:
    """The NNCF peer rows need nncf, which base.txt does not install; say so before any work."""
    if not has_module("nncf"):
        raise SystemExit(f"{missing_package('the NNCF peer', 'nncf', 'bench/requirements.txt')}; or --no-nncf")


def nncf_artifact(fp32_onnx: Artifact, calibration: np.ndarray, out: Path, **options) -> Artifact:
    """The peer: OpenVINO NNCF ``nncf.quantize`` (its defaults: fast bias correction on) of the same FP32
    ONNX on the same calibration images, as an OpenVINO IR."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32_onnx.path))
    dataset = nncf.Dataset([calibration[i:i + 1] for i in range(len(calibration))])
    quantized = nncf.quantize(model, dataset, subset_size=len(calibration), **options)
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(out))
    return Artifact(out, "openvino_ir", "nncf", "int8", {"name": "NNCF INT8 (OpenVINO IR)",
                                                         "input_shape": fp32_onnx.manifest["input_shape"]})
