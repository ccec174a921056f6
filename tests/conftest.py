"""Shared fixtures: the real assets in ../shared/assets (skipped with a reason when absent)."""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("MLS_ASSETS", REPO.parent / "shared" / "assets"))
sys.path.insert(0, str(REPO))

from utils.cli import quiet_known_warnings  # noqa: E402

quiet_known_warnings()
warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")


def asset(*parts: str) -> Path:
    path = ASSETS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real asset {path} is absent (../shared/assets is not beside this checkout)")
    return path


@pytest.fixture
def imagenet_assets() -> Path:
    return asset("imagenet-val-1300")


@pytest.fixture
def cifar_assets() -> Path:
    return asset("cifar10")


def resnet20_per_tensor_minmax_cfg(models_dir: Path, calibration_size: int, limit: int | None = None):
    """The pretrained CIFAR-10 ResNet-20 with FX per-tensor minmax: the sensitivity/fallback tests' setup
    (per-tensor minmax makes some layers clearly sensitive)."""
    from quantization.run_config import RunConfig

    root = asset("cifar10")
    cfg = RunConfig()
    cfg.model.arch, cfg.model.weights = "resnet20", str(root / "resnet20-12fca82f.th")
    cfg.data.dataset, cfg.data.root, cfg.data.limit = "cifar10", str(root), limit
    cfg.calibration.size = calibration_size
    cfg.torch.granularity, cfg.torch.observer = "per_tensor", "minmax"
    cfg.models_dir = str(models_dir)
    return cfg

@pytest.fixture
def tmp_cfg(tmp_path):
    """A RunConfig writing models and results under tmp_path, light benchmark settings."""
    from quantization.run_config import RunConfig

    cfg = RunConfig()
    cfg.models_dir = str(tmp_path / "models")
    cfg.results_dir = str(tmp_path / "results")
    cfg.benchmark.rounds = 3
    cfg.benchmark.warmup = 1
    cfg.benchmark.batch_sizes = [1, 4]
    return cfg


def run_script(*args: str, cwd: Path = REPO, timeout: int = 600):
    """Run a repo entry point in a subprocess, as a user would."""
    import subprocess

    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
