"""The one calibration feed of every Torch mode: the seeded sample through a prepared module."""
from __future__ import annotations

import torch
from tqdm import tqdm

from utils.console import progress_disabled
from utils.data import CalibrationSet


def calibrate(module: torch.nn.Module, calibration: CalibrationSet, batch_size: int, desc: str) -> None:
    """Run the calibration sample through a prepared module (observers record the ranges): the one
    calibration feed of every Torch mode (FX, eager, PT2E). no_grad, not inference_mode: PT2E's observers
    must stay ordinary tensors for convert_pt2e and the export after it."""
    with torch.no_grad():
        for images in tqdm(calibration.batches(batch_size), desc=desc, unit="batch",
                           total=calibration.batch_count(batch_size), disable=progress_disabled()):
            module(images)
