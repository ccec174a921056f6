"""Inputs checked at the door, before any work: arrays and images that would otherwise make a broken INT8
model or a confident wrong report with exit code 0 (issue #30).

Measured on the demo before these checks: one NaN in ``--calibration-data`` collapsed 20 of 22 activation
scales (INT8 top-1 17.2 % against FP32 84.4 %), raw uint8 pixels gave 17.2 %, a CIFAR npz of float pixels in
[0, 1] was divided by 255 again (FP32 = INT8 = 9.4 %), negative labels wrapped around in the confusion
matrix, surplus images beyond the labels were dropped without a word, and a 16-bit PNG was clipped to white.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from utils.errors import SuiteError

log = logging.getLogger(__name__)

#: how far outside the normalised pixel range [(0 - mean) / std, (1 - mean) / std] a calibration value may lie,
#: as a fraction of that range (resampling filters overshoot a little; raw 0..255 pixels are 100x outside)
RANGE_SLACK = 0.1


def array_digests(images: np.ndarray, chars: int) -> list[str]:
    """A short sha256 of each image's bytes (first axis): the same image array gives the same digest."""
    images = np.ascontiguousarray(images)
    return [hashlib.sha256(image.tobytes()).hexdigest()[:chars] for image in images]


def pixel_range(preprocess: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the lowest and highest value a normalised pixel of ``preprocess`` can take."""
    mean = np.asarray(preprocess["mean"], dtype=np.float64)
    std = np.asarray(preprocess["std"], dtype=np.float64)
    return (0.0 - mean) / std, (1.0 - mean) / std


def check_calibration_arrays(path: Path, feed: dict[str, np.ndarray], input_shape: Sequence[int],
                             preprocess: dict[str, Any]) -> None:
    """Every ``--calibration-data`` array is what the model takes, preprocessed as the dataset is: float32,
    finite, N x C x H x W with the model's C, H, W, and values in the normalised pixel range."""
    for name, array in feed.items():
        where = f"--calibration-data {path} ['{name}']"
        if array.dtype != np.float32:
            hint = (": raw 0..255 pixels? store them preprocessed (scaled to [0, 1] and normalised) as float32"
                    if np.issubdtype(array.dtype, np.integer) else "")
            raise SuiteError(f"{where} is {array.dtype}, not float32{hint}")
        if array.ndim != 1 + len(input_shape) or tuple(array.shape[1:]) != tuple(input_shape):
            raise SuiteError(f"{where} has shape {list(array.shape)}: the model takes N x "
                             f"{' x '.join(str(d) for d in input_shape)} (N images, channels first)")
        if len(array) == 0:
            raise SuiteError(f"{where} holds no images")
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise SuiteError(f"{where} holds {bad} NaN or infinite values: one collapses the activation scales")
        low, high = pixel_range(preprocess)
        slack = RANGE_SLACK * (high - low)
        channels = array.reshape(len(array), array.shape[1], -1).transpose(1, 0, 2).reshape(array.shape[1], -1)
        seen_low, seen_high = channels.min(axis=1), channels.max(axis=1)
        outside = (seen_low < low - slack) | (seen_high > high + slack)
        if outside.any():
            c = int(np.flatnonzero(outside)[0])
            raise SuiteError(f"{where}: channel {c} spans [{seen_low[c]:.3g}, {seen_high[c]:.3g}], outside the "
                             f"normalised pixel range [{low[c]:.3g}, {high[c]:.3g}] of mean {preprocess['mean']} and "
                             f"std {preprocess['std']}: raw or differently normalised pixels?")


def check_pixels(x: np.ndarray, where: str, image_shape: tuple[int, ...]) -> np.ndarray:
    """Images as float32 in [0, 1], N x H x W x C: uint8 0..255 is scaled once, floats already in [0, 1] are
    kept as they are (never divided by 255 twice), anything else is refused."""
    if x.ndim != 1 + len(image_shape) or tuple(x.shape[1:]) != tuple(image_shape):
        raise SuiteError(f"{where}: images of shape {list(x.shape[1:])}, expected {list(image_shape)} (N x H x W x C)")
    if x.dtype == np.uint8:
        scaled = x.astype(np.float32)
        scaled /= 255.0  # in place: 50,000 CIFAR images are 600 MB as float32
        return scaled
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0:
            raise SuiteError(f"{where}: float pixels must be finite and in [0, 1] (got [{np.nanmin(x):.3g}, "
                             f"{np.nanmax(x):.3g}]); store uint8 0..255 or floats in [0, 1]")
        return x.astype(np.float32)
    raise SuiteError(f"{where}: pixels are {x.dtype}; store uint8 0..255 or floats in [0, 1]")


def check_labels(labels: Any, count: int, num_classes: int, where: str) -> np.ndarray:
    """One integer label per image, each a class index in [0, ``num_classes``), as int64."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise SuiteError(f"{where}: labels must be one integer per image (got shape {list(y.shape)})")
    if len(y) != count:
        raise SuiteError(f"{where}: {count} images but {len(y)} labels (one label per image)")
    if not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all()
                                                   and np.array_equal(y, np.round(y)))):
        raise SuiteError(f"{where}: labels must be integers (got {y.dtype})")
    y = y.astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        bad = int(y[(y < 0) | (y >= num_classes)][0])
        raise SuiteError(f"{where}: label {bad} is not a class index in [0, {num_classes - 1}]")
    return y


def to_color(image: Any, color: str) -> Any:
    """``image`` (PIL) in ``color`` mode with its real 8-bit values: a 16-bit grey PNG (modes I;16*, I) is scaled
    from 0..65535 instead of clipped at 255 (which turned it white); 32-bit float images are refused."""
    from PIL import Image

    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image, dtype=np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise SuiteError(f"{getattr(image, 'filename', 'image')}: {image.mode} pixel values outside 0..65535")
        image = Image.fromarray(np.round(values / 257.0).astype(np.uint8), "L")  # 65535 / 257 = 255 exactly
    elif image.mode == "F":
        raise SuiteError(f"{getattr(image, 'filename', 'image')}: 32-bit float images are not supported")
    return image.convert(color)


def check_weights(state: dict[str, Any], path: Path) -> None:
    """Weights the suite can calibrate: every floating tensor finite, every BatchNorm variance non-negative (a NaN
    weight or a negative variance ended in a torch error or a NaN model only after the FP32 reference was
    written)."""
    import torch

    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            continue
        if not torch.isfinite(tensor).all():
            raise SuiteError(f"weights {Path(path).name}: {key} holds NaN or infinite values")
        if key.endswith("running_var") and (tensor < 0).any():
            raise SuiteError(f"weights {Path(path).name}: {key} holds a negative BatchNorm variance")
