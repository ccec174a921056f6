"""Latency and memory, measured the same way for every runtime.

Speedups are only meaningful side by side: :func:`interleaved_latency` warms every model up, then
runs them in rounds, one call each per round in a rotating order, so drift in clock speed, caches or
other load hits FP32 and INT8 alike. Figures are medians and percentiles of those rounds.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from utils.console import progress_disabled


@dataclass
class LatencyStats:
    batch_size: int
    samples_ms: list[float]

    def summary(self) -> dict[str, Any]:
        ms = np.asarray(self.samples_ms)
        p50 = float(np.percentile(ms, 50))
        return {
            "batch_size": self.batch_size,
            "rounds": int(ms.size),
            "mean_ms": float(ms.mean()),
            "std_ms": float(ms.std()),
            "p50_ms": p50,
            "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)),
            "throughput_ips": self.batch_size / (p50 / 1000.0) if p50 > 0 else float("inf"),
        }


def interleaved_latency(models: dict[str, Callable[[], Any]], batch_size: int, warmup: int = 5,
                        rounds: int = 30, desc: str = "latency") -> dict[str, LatencyStats]:
    """Time each zero-argument callable ``rounds`` times, interleaved, after ``warmup`` calls each.

    A callable that returns a float is self-timed (milliseconds, e.g. measured with CUDA events);
    any other return value means the wall-clock time of the call is taken.
    """
    names = list(models)
    for name in names:
        for _ in range(warmup):
            models[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in tqdm(range(rounds), desc=desc, unit="round", leave=False, disable=progress_disabled()):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            start = time.perf_counter()
            measured = models[name]()
            elapsed = (time.perf_counter() - start) * 1000.0
            samples[name].append(measured if isinstance(measured, float) else elapsed)
    return {name: LatencyStats(batch_size, samples[name]) for name in names}


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import psutil

        return psutil.Process().memory_info().rss


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (Linux VmHWM). Not ``ru_maxrss``: a spawned child
    inherits its parent's peak there (it survives exec), so a small child reads as large as its parent."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every millisecond on a thread.

    All runners share one process, so this is the memory a model adds while it is loaded and run,
    which is what a deployment pays for it.
    """

    def __init__(self, interval_s: float = 0.001):
        self.interval_s = interval_s
        self.baseline = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss_bytes())
            time.sleep(self.interval_s)

    def __enter__(self) -> "PeakRSS":
        self.baseline = self.peak = current_rss_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, current_rss_bytes())

    @property
    def increase_bytes(self) -> int:
        return max(0, self.peak - self.baseline)
