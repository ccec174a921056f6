"""The demo model: a ResNet-20 trained on the demo digits, so the demo quantizes real accuracy.

Trained once (about a minute on two CPU cores), cached in ``models/demo/`` with a manifest, and
reused by every later run. The training split is fixed and disjoint from the evaluation split.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from utils.artifacts import (
    atomic_path,
    build_manifest,
    manifest_path_for,
    sha256_file,
    write_json_atomic,
    write_saved,
)
from utils.config import DataConfig, SgdRecipe, resolve_path
from utils.manifest_schema import verified_cache

log = logging.getLogger(__name__)

DEMO_EPOCHS = 12
DEMO_SEED = 0


def demo_weights_path(models_dir: str | Path = "models") -> Path:
    return resolve_path(models_dir) / "demo" / "resnet20_digits.pth"


def train_demo_model(path: Path, epochs: int = DEMO_EPOCHS, seed: int = DEMO_SEED) -> Path:
    """Train ResNet-20 on the demo training split with the suite's one recipe and save it atomically."""
    from utils.architectures.cifar_resnet import cifar_resnet
    from utils.data import load_demo
    from utils.training import evaluate_top1, train_classifier

    torch.manual_seed(seed)
    splits = load_demo(DataConfig())
    model = cifar_resnet("resnet20", 10)
    recipe = SgdRecipe(lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=64, seed=seed)
    history = train_classifier(model, splits.train, recipe, epochs)
    accuracy = evaluate_top1(model, splits.evaluation)
    log.info("demo ResNet-20 trained: FP32 top-1 %.2f%% on the demo evaluation split", 100 * accuracy)
    with atomic_path(path) as tmp:
        write_saved(tmp, torch.save, model.state_dict())
    write_json_atomic(manifest_path_for(path), build_manifest(
        name="demo-resnet20", toolchain="training", kind="state_dict", precision="fp32",
        settings={"epochs": epochs, "seed": seed, "optimizer": "SGD momentum, cosine decay per step",
                  "lr": recipe.lr, "batch_size": recipe.batch_size, "top1": accuracy},
        source_weights=None, calibration_ids=None, extra={"history": history, "sha256": sha256_file(path)}))
    return path


def demo_weights(models_dir: str | Path = "models") -> Path:
    """The cached demo weights, trained on first use."""
    path = demo_weights_path(models_dir)
    if path.is_file() and not verified_cache(path, "the cached demo weights",
                                             f"delete {path} to train the demo model again"):
        log.warning("cached demo weights %s carry no sha256 (an older cache): training them again", path)
        train_demo_model(path)
    if not path.is_file():
        log.info("no cached demo model at %s: training it now (about a minute)", path)
        train_demo_model(path)
    return path
