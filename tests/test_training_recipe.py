"""resnet.train: the CIFAR-stem ResNet-18 recipe trains, checkpoints each epoch, and resumes exactly.

Runs on a tiny CIFAR-10-layout ``.npz`` pair the test writes (so it needs no shared assets).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from resnet.train import main as train_main


def write_cifar_npz(root: Path, n_train: int = 96, n_test: int = 32) -> Path:
    """Ten classes told apart by a coloured square's position: learnable, yet real image data."""
    rng = np.random.default_rng(0)

    def images(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 10, n)
        x = rng.integers(0, 60, (n, 32, 32, 3), dtype=np.uint8)
        for i, label in enumerate(y):
            r, c = divmod(int(label), 5)
            x[i, 4 + 12 * r: 14 + 12 * r, 1 + 6 * c: 6 + 6 * c, label % 3] = 255
        return x, y

    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train_small.npz", n_train), ("test_small.npz", n_test)):
        x, y = images(n)
        np.savez(root / name, x=x, y=y)
    return root


def train_args(data: Path, models: Path, epochs: int) -> list[str]:
    return ["--dataset", "cifar10", "--data-root", str(data), "--models-dir", str(models), "--epochs", str(epochs),
            "--limit", "64", "--train-batch-size", "32"]


@pytest.mark.slow
def test_recipe_trains_writes_a_manifest_and_resumes_exactly(tmp_path: Path, monkeypatch, capsys):
    data = write_cifar_npz(tmp_path / "cifar")
    assert train_main(train_args(data, tmp_path / "straight", 2)) == 0
    straight = tmp_path / "straight" / "training" / "resnet18_cifar_cifar10_limit64" / "resnet18_cifar_cifar10.pth"
    manifest = json.loads(straight.with_name(straight.name + ".manifest.json").read_text())
    assert manifest["arch"] == "resnet18_cifar" and manifest["settings"]["train_images"] == 64
    assert [h["epoch"] for h in manifest["history"]] == [1, 2]
    assert manifest["settings"]["lr"] == 0.01 and manifest["settings"]["weight_decay"] == 5e-4
    assert (straight.parent / "last.ckpt").is_file()

    # the same run, interrupted during epoch 2, then started again: it resumes after epoch 1
    import utils.training as training

    real_run_steps, calls = training.run_steps, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run_steps(*args, **kwargs)

    monkeypatch.setattr(training, "run_steps", interrupted)
    assert train_main(train_args(data, tmp_path / "resumed", 2)) == 130
    run = tmp_path / "resumed" / "training" / "resnet18_cifar_cifar10_limit64"
    assert torch.load(run / "last.ckpt", weights_only=True)["epoch"] == 1
    assert not (run / "resnet18_cifar_cifar10.pth").exists()  # no half-finished weights
    monkeypatch.setattr(training, "run_steps", real_run_steps)
    assert train_main(train_args(data, tmp_path / "resumed", 2)) == 0
    a = torch.load(straight, weights_only=True)
    b = torch.load(run / "resnet18_cifar_cifar10.pth", weights_only=True)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    resumed = json.loads((run / "resnet18_cifar_cifar10.pth.manifest.json").read_text())
    assert resumed["history"] == manifest["history"]

    # resuming under other settings is refused with one line, not silently mixed
    capsys.readouterr()
    assert train_main(train_args(data, tmp_path / "resumed", 3)) == 2
    assert "other settings" in capsys.readouterr().err


@pytest.mark.parametrize("bad, message", [(["--epochs", "0"], "training.epochs' must be positive"),
                                          (["--limit", "8"], "fewer than one batch")])
def test_recipe_bad_input(tmp_path: Path, capsys, bad, message):
    data = write_cifar_npz(tmp_path / "cifar", n_train=40, n_test=10)
    assert train_main([*train_args(data, tmp_path / "m", 1), *bad]) == 2
    assert message in capsys.readouterr().err
