"""The accuracy pass of every (artifact, runtime) pair, split by evaluation image ids over Ray tasks.

Each task opens its runner once, runs the shared batched pass (``collect_logits``) on its shard and returns
the logits; the driver puts them back in id order and scores them with the one metrics code, exactly as
the single-process loop does. Shards start on batch boundaries, so every runner sees the same batches as
in one process, and the figures are equal on the same CPU class. Latency is not measured here: it stays
on the driver (one process, interleaved), so a cluster never mixes nodes into one timing.
"""
from __future__ import annotations

import logging
import os
from functools import cache
from typing import Any

import numpy as np

from evaluation.pipelines.base import Runner
from utils.cluster import FAULT_DRILL_ENV, Cluster, gather, import_ray, node_facts, one_isa_class
from utils.data import DataSplits

log = logging.getLogger(__name__)

#: retries of a shard whose worker process died (node lost, OOM kill, segfault in a runtime); an exception
#: raised by the task itself (a SuiteError, a bug) is not retried: it would fail again the same way
SHARD_MAX_RETRIES = 3


def shard_ranges(count: int, batch_size: int, shards: int) -> list[tuple[int, int]]:
    """[start, stop) index ranges covering ``count`` images, cut only on batch boundaries."""
    batches = -(-count // batch_size)
    groups = [g for g in np.array_split(np.arange(batches), min(shards, batches)) if len(g)]
    return [(int(g[0]) * batch_size, min(count, (int(g[-1]) + 1) * batch_size)) for g in groups]


@cache
def _remote() -> tuple[Any, Any]:
    """The Ray task and actor, defined on first use so that importing this module needs no ray."""
    ray = import_ray()

    @ray.remote(num_cpus=0)
    class AttemptLog:
        """Counts the attempts of each shard (a retried task starts again here): the report's retries."""

        def __init__(self) -> None:
            self.attempts: dict[str, int] = {}

        def begin(self, key: str) -> int:
            self.attempts[key] = self.attempts.get(key, 0) + 1
            return self.attempts[key]

        def counts(self) -> dict[str, int]:
            return dict(self.attempts)

    @ray.remote(max_retries=SHARD_MAX_RETRIES, retry_exceptions=False)
    def shard_pass(artifact: Any, runtime: str, precision: str, threads: int | None, splits: DataSplits, start: int,
                   stop: int, batch_size: int, attempts: Any, key: str, drill: str | None) -> dict[str, Any]:
        from evaluation.pipelines.loop import ImageBatches, collect_logits, open_runner
        from utils.data import evaluation_loader

        attempt = ray.get(attempts.begin.remote(key))
        if drill and _first_to_create(drill, f"{key} attempt {attempt} pid {os.getpid()}\n"):
            os._exit(1)  # the fault drill: a real process death, of one attempt in the whole run
        runner = open_runner(artifact, runtime, threads, precision)
        batches = ImageBatches(evaluation_loader(splits, batch_size, range(start, stop)))
        logits = collect_logits({key: runner.predict}, batches)[key]
        return {"logits": logits, "labels": batches.labels, "node": node_facts(), "attempt": attempt}

    return shard_pass, AttemptLog


def _first_to_create(path: str, text: str) -> bool:
    """Create ``path`` unless it exists, atomically: of concurrent callers, exactly one gets True."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return True


class ShardedAccuracy:
    """An accuracy pass (evaluation/pipelines/loop.py: ``AccuracyPass``) over the cluster's workers."""

    def __init__(self, cluster: Cluster, splits: DataSplits, threads: int | None = None):
        ray = import_ray()
        self.cluster, self.threads = cluster, threads
        self.splits = splits
        self._splits_ref = ray.put(splits)  # shipped once for every shard of every pair
        self.pairs: list[dict[str, Any]] = []

    def __call__(self, runtime: str, runners: list[Runner], splits: DataSplits,
                 batch_size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        if splits is not self.splits:
            raise ValueError("ShardedAccuracy was built for another evaluation split")
        driver_only = next((r.driver_only for r in runners if getattr(r, "driver_only", None)), None)
        if driver_only:  # e.g. TensorRT: its runners, already open here on the driver's GPU, do the whole pass
            from evaluation.pipelines import loop

            log.info("accuracy on %s runs on the driver: %s", runtime, driver_only)
            return loop.local_accuracy(runtime, runners, splits, batch_size)
        ray = import_ray()
        shard_pass, attempt_log = _remote()
        attempts = attempt_log.remote()
        drill = os.environ.get(FAULT_DRILL_ENV) or None
        ranges = shard_ranges(len(splits.evaluation), batch_size, self.cluster.workers)
        refs = {r.key: [shard_pass.remote(r.artifact, runtime, r.precision, self.threads, self._splits_ref, a, b,
                                          batch_size, attempts, f"{r.key}|{a}", drill)
                        for a, b in ranges] for r in runners}
        log.info("accuracy on %s: %d pairs x %d shards on the cluster", runtime, len(runners), len(ranges))
        logits: dict[str, np.ndarray] = {}
        labels: np.ndarray | None = None
        counts: dict[str, int] | None = None
        for runner in runners:
            parts = gather(refs[runner.key], f"accuracy of {runner.artifact.name} on {runtime}")  # shard (id) order
            logits[runner.key] = np.concatenate([p["logits"] for p in parts])
            shard_labels = np.concatenate([p["labels"] for p in parts])
            if labels is None:
                labels = shard_labels
            elif not np.array_equal(labels, shard_labels):
                raise RuntimeError("shards returned the evaluation labels in another order")
            counts = counts if counts is not None else ray.get(attempts.counts.remote())
            self._record(runner, runtime, ranges, parts, counts)
        ray.kill(attempts)
        assert labels is not None
        return logits, labels

    def _record(self, runner: Runner, runtime: str, ranges: list[tuple[int, int]], parts: list[dict[str, Any]],
                counts: dict[str, int]) -> None:
        ids = self.splits.evaluation_ids
        shards = [{"images": b - a, "first_id": ids[a], "last_id": ids[b - 1], **part["node"],
                   "attempts": counts.get(f"{runner.key}|{a}", part["attempt"])}
                  for (a, b), part in zip(ranges, parts, strict=True)]
        pair = runner.label
        self.pairs.append({"pair": pair, "isa_class": one_isa_class(shards, f"accuracy of {pair}"),
                           "retries": sum(s["attempts"] - 1 for s in shards), "shards": shards})

    def placement(self) -> dict[str, Any]:
        """The report's ``cluster`` section: where every figure was measured."""
        isa = one_isa_class([s for p in self.pairs for s in p["shards"]], "the run's accuracy passes")
        driver = node_facts()
        return {"address": self.cluster.address, "workers": self.cluster.workers,
                "accuracy": f"sharded by evaluation image id over Ray tasks, all on CPU class {isa}",
                "latency_measured_on": {**driver, "how": "the driver process alone, interleaved, as without --cluster"},
                "retries": {p["pair"]: p["retries"] for p in self.pairs}, "pairs": self.pairs}
