"""The one batched pass and the one runner factory of evaluation/pipelines/loop.py."""
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from evaluation.pipelines.loop import ImageBatches, collect_logits, open_runner
from utils.artifacts import Artifact
from utils.errors import SuiteError


def test_collect_logits_runs_every_call_on_every_batch_in_order():
    images = torch.arange(10 * 2, dtype=torch.float32).reshape(10, 2)
    batches = ImageBatches(DataLoader(TensorDataset(images, torch.arange(10) % 3), batch_size=4))
    seen: list[int] = []

    def double(batch: np.ndarray) -> np.ndarray:
        seen.append(len(batch))
        return 2 * batch

    out = collect_logits({"same": lambda b: b, "double": double}, batches)
    assert seen == [4, 4, 2]  # batched as the loader batches, each batch once per call
    assert np.array_equal(out["same"], images.numpy()) and np.array_equal(out["double"], 2 * images.numpy())
    assert np.array_equal(batches.labels, (torch.arange(10) % 3).numpy())
    # not only images: a call on token batches (MiniLM) goes through the same loop
    tokens = [{"ids": np.array([[1, 2]])}, {"ids": np.array([[3, 4]])}]
    assert collect_logits({"sum": lambda b: b["ids"].sum(1)}, tokens)["sum"].tolist() == [3, 7]


def test_open_runner_refuses_in_one_line(tmp_path: Path):
    artifact = Artifact(tmp_path / "m.onnx", "onnx", "ort", "fp32")
    with pytest.raises(SuiteError, match="unknown runtime 'nope'"):
        open_runner(artifact, "nope")
    with pytest.raises(SuiteError, match="runtime torch does not run onnx artifacts"):
        open_runner(artifact, "torch")
