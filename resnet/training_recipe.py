"""The training recipe behind ``python -m resnet.train``: a registry architecture on a dataset's
training split, with the suite's one SGD/cosine recipe, a checkpoint each epoch, resume, and a
``.pth`` plus manifest in ``models/`` that every quantization script takes as ``--weights``.

The manifest records what a later user needs to trust the weights: settings, the per-epoch loss,
the training-set size and the FP32 top-1 on the evaluation split (never trained on).
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import torch

from quantization.run_config import RunConfig
from utils.artifacts import atomic_path, build_manifest, manifest_path_for, write_json_atomic, write_saved
from utils.config import resolve_path
from utils.data import SubsetDataset, load_splits
from utils.errors import SuiteError
from utils.models import build_architecture, load_weights, read_state_dict
from utils.training import evaluate_top1, train_classifier

log = logging.getLogger(__name__)


def run_dir(cfg: RunConfig) -> Path:
    """models/training/<arch>_<dataset>[_limitN]/: checkpoints of one recipe, so a rerun resumes."""
    limit = f"_limit{cfg.training.limit}" if cfg.training.limit else ""
    return resolve_path(cfg.models_dir) / "training" / f"{cfg.model.arch}_{cfg.data.dataset}{limit}"


def train_from_config(cfg: RunConfig) -> Path:
    """Train ``cfg.model.arch`` on ``cfg.data``'s training split; returns the written ``.pth``."""
    t = cfg.training
    if t.epochs < 1:
        raise SuiteError(f"--epochs must be at least 1, got {t.epochs}")
    splits = load_splits(cfg.data, cfg.calibration)
    if splits.train is None:
        raise SuiteError(f"dataset {splits.name} has no training split to train on")
    train = splits.train
    if t.limit:
        train = SubsetDataset(train, range(min(t.limit, len(train))))
    if len(train) < t.batch_size:
        raise SuiteError(f"{len(train)} training images is fewer than one batch of {t.batch_size} (--batch-size)")
    torch.manual_seed(t.seed)  # the initialisation is part of the recipe
    model = build_architecture(cfg.model.arch, splits.num_classes)
    if cfg.model.weights:  # fine-tune from given weights
        path = Path(cfg.model.weights)
        load_weights(model, read_state_dict(path, cfg.model.allow_unsafe_load), cfg.model.arch, path)
    folder = run_dir(cfg)
    log.info("training %s on %d %s images for %d epochs (checkpoints in %s)", cfg.model.arch, len(train),
             splits.name, t.epochs, folder)
    history = train_classifier(model, train, t, t.epochs, checkpoint_dir=folder, resume=t.resume,
                               augment=t.augment)
    evaluation = splits.evaluation
    if cfg.data.limit:
        evaluation = SubsetDataset(evaluation, range(min(cfg.data.limit, len(evaluation))))
    top1 = evaluate_top1(model, evaluation)
    log.info("FP32 top-1 %.2f%% on %d evaluation images", 100 * top1, len(evaluation))
    final = folder / f"{cfg.model.arch}_{splits.name}.pth"
    with atomic_path(final) as tmp:
        write_saved(tmp, torch.save, model.state_dict())
    write_json_atomic(manifest_path_for(final), build_manifest(
        name=final.stem, toolchain="training", kind="state_dict", precision="fp32",
        settings={**asdict(t), "optimizer": "SGD momentum, cosine decay per step", "train_images": len(train)},
        source_weights=Path(cfg.model.weights) if cfg.model.weights else None, calibration_ids=None,
        extra={"arch": cfg.model.arch, "dataset": splits.name, "num_classes": splits.num_classes,
               "history": history, "evaluation_images": len(evaluation), "fp32_top1": round(100 * top1, 2)}))
    return final
