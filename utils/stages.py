"""Per-stage wall-clock times of one quantize call (export, prepare, calibrate, statistics, convert, save).

A single ``quantize_seconds`` cannot say which stage to make faster; each Quantizer wraps its stages
in ``timer.stage(name)`` and stores ``timer.seconds`` in the artifact manifest as
``quantize_seconds_by_stage``, which bench/quantize_time.py turns into a table.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from utils.signals import raise_if_swallowed

log = logging.getLogger(__name__)


class StageTimer:
    """Seconds per named stage; a stage entered twice adds up. A stage that ends normally although a termination
    signal arrived during it (a library swallowed the interrupt) raises it (utils.signals.raise_if_swallowed)."""

    def __init__(self, label: str):
        self.label = label
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[name] = round(self.seconds.get(name, 0.0) + elapsed, 3)
            log.info("%s: %s %.2f s", self.label, name, elapsed)
        raise_if_swallowed()

    def total(self) -> float:
        return round(sum(self.seconds.values()), 2)
