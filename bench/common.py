"""What the benchmark scripts share: where the real images are and the speed-run configuration."""
from __future__ import annotations

from pathlib import Path

from utils.config import RunConfig

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets" / "imagenet-val-1300"


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
