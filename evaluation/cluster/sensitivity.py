"""The sensitivity trials of evaluation/accuracy_recovery.py (one layer kept in float each) as Ray tasks.

The trials are independent, so they run in parallel; the results come back in layer order and the ranking
is made on the driver by the same sort, so it equals the single-process one. Each task writes its trial
artifact into a scratch folder of its own node and discards it. The --max-drop fallback steps depend on
each other and stay on the driver.
"""
from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.accuracy_recovery import HeldOut, Trial, run_trial
from quantization.base import Quantizer
from quantization.workflow import Prepared
from utils.cluster import gather, import_ray


@cache
def _remote() -> Any:
    ray = import_ray()

    @ray.remote(max_retries=3, retry_exceptions=False)
    def trial_task(quantizer: Quantizer, prepared: Prepared, runtime: str, data: HeldOut, reference: np.ndarray,
                   layers: list[str]) -> Trial:
        with tempfile.TemporaryDirectory(prefix="mls-sensitivity-") as scratch:
            return run_trial(quantizer, prepared, runtime, data, reference, layers, Path(scratch))[0]

    return trial_task


def cluster_trial_map(quantizer: Quantizer, prepared: Prepared, runtime: str, data: HeldOut,
                      reference: np.ndarray, layer_sets: list[list[str]]) -> list[Trial]:
    """accuracy_recovery.TrialMap over the cluster: everything shared is shipped once."""
    ray = import_ray()
    task = _remote()
    shared = [ray.put(v) for v in (quantizer, prepared, data, reference)]
    refs = [task.remote(shared[0], shared[1], runtime, shared[2], shared[3], layers) for layers in layer_sets]
    return gather(refs, f"sensitivity trials of {type(quantizer).__name__}")
