"""Training loops the suite needs: the CIFAR-10 recipe (resnet.train), the demo model, QAT fine-tuning.

One optimizer recipe (SGD with momentum, weight decay, cosine decay over all steps) and one step loop,
so every trained artifact in the suite is trained the same way; checkpoints are written atomically
each epoch and a run resumes from the newest one.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from utils.artifacts import atomic_path, write_saved
from utils.config import SgdRecipe
from utils.console import progress_disabled
from utils.errors import SuiteError

log = logging.getLogger(__name__)


def recipe_settings(recipe: SgdRecipe) -> dict:
    """Only the SGD fields: a checkpoint's signature must not change with fields that do not alter the
    schedule (a TrainingConfig also carries limit, resume, ...)."""
    return {f.name: getattr(recipe, f.name) for f in fields(SgdRecipe)}


def optimizer_and_schedule(model: nn.Module, recipe: SgdRecipe, total_steps: int):
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    return optimizer, scheduler


def random_shift(images: torch.Tensor, pixels: int = 2) -> torch.Tensor:
    """Cheap augmentation: roll the batch by up to ``pixels`` in each direction."""
    shift = torch.randint(-pixels, pixels + 1, (2,))
    return torch.roll(images, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))


def batches_forever(dataset: Dataset, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled batches, reshuffled each pass, reproducible from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield from DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator)


def run_steps(model: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], optimizer, scheduler,
              steps: int, *, desc: str, augment: bool = True,
              on_step: Callable[[int], None] | None = None) -> float:
    """``steps`` SGD steps of cross-entropy; returns the mean loss. ``on_step(i)`` runs before step i."""
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    total = 0.0
    for step in tqdm(range(steps), desc=desc, unit="step", disable=progress_disabled()):
        if on_step is not None:
            on_step(step)
        images, labels = next(batches)
        if augment:
            images = random_shift(images)
        optimizer.zero_grad()
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += float(loss.detach())
    return total / max(steps, 1)


def evaluate_top1(model: nn.Module, dataset: Dataset, batch_size: int = 256) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in DataLoader(dataset, batch_size=batch_size):
            correct += int((model(images).argmax(1) == labels).sum())
    return correct / max(len(dataset), 1)


def train_classifier(model: nn.Module, train: Dataset, recipe: SgdRecipe, epochs: int,
                     checkpoint_dir: Path | None = None, resume: bool = True, augment: bool = True) -> list[dict]:
    """Train ``model`` for ``epochs`` (checkpoint each epoch; resume from the newest); returns the history.

    A checkpoint records the recipe, epoch count and training-set size it was made with; resuming
    with different ones would silently change the schedule, so it is refused instead.
    """
    torch.manual_seed(recipe.seed)
    steps_per_epoch = len(train) // recipe.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"training set of {len(train)} images is smaller than one batch of {recipe.batch_size}")
    optimizer, scheduler = optimizer_and_schedule(model, recipe, epochs * steps_per_epoch)
    history: list[dict] = []
    start = 0
    signature = {**recipe_settings(recipe), "epochs": epochs, "train_size": len(train), "augment": augment}
    latest = checkpoint_dir / "last.ckpt" if checkpoint_dir else None
    if resume and latest is not None and latest.is_file():
        try:  # our own checkpoint: tensors only
            state = torch.load(latest, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError... for a damaged file
            raise SuiteError(f"checkpoint {latest} is unreadable ({type(exc).__name__}); delete it to start "
                             "fresh, or train without resuming") from exc
        if not isinstance(state, dict) or state.get("signature") != signature:
            made = state.get("signature") if isinstance(state, dict) else "not a checkpoint of this suite"
            raise SuiteError(f"checkpoint {latest} was made with other settings ({made}); "
                             "delete it or train without resuming")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])  # the augmentation draws continue as if never interrupted
        start, history = int(state["epoch"]), list(state["history"])
        log.info("resumed from %s after epoch %d", latest, start)
    for epoch in range(start, epochs):
        generator = torch.Generator().manual_seed(recipe.seed + epoch)
        loader = iter(DataLoader(train, batch_size=recipe.batch_size, shuffle=True, drop_last=True, generator=generator))
        loss = run_steps(model, loader, optimizer, scheduler, steps_per_epoch,
                         desc=f"epoch {epoch + 1}/{epochs}", augment=augment)
        history.append({"epoch": epoch + 1, "loss": round(loss, 5), "lr": scheduler.get_last_lr()[0]})
        if latest is not None:
            with atomic_path(latest) as tmp:
                write_saved(tmp, torch.save, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                              "scheduler": scheduler.state_dict(), "epoch": epoch + 1,
                                              "history": history, "signature": signature,
                                              "rng": torch.get_rng_state()})
        log.info("epoch %d/%d: loss %.4f", epoch + 1, epochs, loss)
    model.eval()
    return history
