"""ONNX Runtime calibration one batch at a time, so histogram calibration runs in bounded memory.

Left alone, ``quantize_static``'s Entropy and Percentile calibrators keep every intermediate output
of every calibration image before building any histogram (300 EfficientNet-Lite0 images went past
24 GB). With ``extra_options={"CalibStridedMinMax": k}`` (onnxruntime >= 1.20; despite the name it
applies to every calibrator) ``quantize_static`` calls ``collect_data`` once per ``k`` units of the
reader (here: batches), after ``set_range``; each call builds or merges the histograms
(``HistogramCollector.merge_histogram``) and drops the outputs, so memory holds one batch of
outputs. MinMax merges its per-call ranges the same way.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from quantization.onnx_quantizer import calibration_step

STRIDE_BATCHES = 1  # batches per collect_data call


class StridedFeedReader:
    """ORT's CalibrationDataReader protocol over the named calibration arrays, in equal batches
    (:func:`calibration_step`), with the ``__len__``/``set_range`` that strided calibration needs."""

    def __init__(self, feed: dict[str, np.ndarray], batch_size: int, histogram: bool = True):
        n = len(next(iter(feed.values())))
        step = calibration_step(n, batch_size, histogram)
        self._batches = [{k: v[start:start + step] for k, v in feed.items()} for start in range(0, n, step)]
        self.set_range(0, len(self._batches))

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._iter = iter(self._batches[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self.set_range(0, len(self._batches))


def strided_options() -> dict[str, Any]:
    """The ``extra_options`` of ``quantize_static`` that make it calibrate batch by batch."""
    return {"CalibStridedMinMax": STRIDE_BATCHES}
