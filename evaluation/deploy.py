"""Single-image deployment: load one artifact the suite wrote, classify image files, time each one.

What a user does after quantizing: point at the artifact (TorchScript, ExportedProgram, ONNX on
ONNX Runtime or OpenVINO, OpenVINO IR, TensorRT plan) and an image or a folder. Preprocessing and
class names come from the artifact's manifest, so the image is prepared exactly as the artifact
was calibrated and evaluated; nothing about the dataset has to be given again.
"""
from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.pipelines import loop
from evaluation.pipelines.base import Runner
from utils.artifacts import Artifact, atomic_path
from utils.config import DataConfig
from utils.data import IMAGE_SUFFIXES, file_tensor, load_demo
from utils.errors import SuiteError

log = logging.getLogger(__name__)

# the runtime an artifact kind runs on when neither the user nor its manifest names one (older artifacts)
DEFAULT_RUNTIME = {"torchscript": "torch", "exported_program": "torch_compile", "onnx": "onnxruntime",
                   "onnx_qdq": "onnxruntime", "openvino_ir": "openvino", "trt_plan": "tensorrt"}


@dataclass
class Prediction:
    image: Path
    top: list[tuple[str, float]]  # (class name, probability), most likely first
    latency_ms: float  # median of the timed repeats
    first_ms: float  # the first call, warm-up included


def open_runner(artifact: Artifact, runtime: str | None = None, threads: int | None = None) -> Runner:
    """The runner for ``artifact`` on ``runtime`` (default: the natural one for its kind)."""
    # the artifact's own recommendation (its toolchain class, recorded in the manifest), else its kind's runtime
    runtime = runtime or artifact.manifest.get("recommended_runtime") or DEFAULT_RUNTIME[artifact.kind]
    return loop.open_runner(artifact, runtime, threads)


def image_files(target: Path) -> list[Path]:
    """``target`` itself, or every image under the folder ``target`` (sorted)."""
    if target.is_file():
        return [target]
    if target.is_dir():
        files = sorted(p for p in target.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SuiteError(f"{target}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return files
    raise SuiteError(f"image not found: {target}")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def class_name(names: list[str] | None, index: int) -> str:
    return names[index] if names and index < len(names) else str(index)


def classify(runner: Runner, images: list[Path], top: int = 5, repeats: int = 10) -> list[Prediction]:
    """Top-``top`` classes of each image; latency is the median of ``repeats`` calls after the first."""
    manifest = runner.artifact.manifest
    pre, names = manifest.get("preprocess"), manifest.get("class_names")
    if not pre:
        raise SuiteError(f"{runner.artifact.path.name}: its manifest records no preprocessing (written by an older "
                         "version of the suite); re-run its quantization script")
    results = []
    for path in images:
        batch = file_tensor(path, pre).numpy()
        call = runner.timed_call(batch)
        first = call()
        times = [call() for _ in range(repeats)]
        probs = softmax(runner.predict(batch)[0].astype(np.float64))
        order = np.argsort(-probs)[:top]
        results.append(Prediction(path, [(class_name(names, int(i)), float(probs[i])) for i in order],
                                  statistics.median(times) if times else first, first))
    return results


def demo_sample(folder: Path, position: int = 0) -> tuple[Path, str]:
    """Demo evaluation image ``position`` (its original 8x8 digit) as a PNG in ``folder``, and its label.

    Going through a file keeps the default on the same path as a user's own image."""
    from PIL import Image
    from sklearn.datasets import load_digits

    splits = load_demo(DataConfig())
    index = int(splits.evaluation_ids[position].split("/")[1])
    digits = load_digits()
    label = int(digits.target[index])
    path = folder / f"demo_digit{index}_label{label}.png"
    pixels = np.rint(digits.images[index] / 16.0 * 255).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(pixels, mode="L").save(tmp, format="PNG")
    return path, splits.class_names[label]
