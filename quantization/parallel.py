"""The toolchains and sweep variants of a run as parallel Ray tasks (``--cluster``).

The prepared model and calibration sample are shipped once (``ray.put``) and every task runs the same
``run_toolchain`` a single process runs, so an artifact is the same bytes wherever it was built (the
tests compare the manifests' sha256). The artifacts land in the driver's models folder, which every node
must share (docs/cluster.md); the per-name write lock keeps two tasks writing the same FP32 reference safe.
"""
from __future__ import annotations

import logging
from functools import cache
from typing import Any

from quantization.run_config import RunConfig
from quantization.workflow import Prepared, run_toolchain
from utils.artifacts import Artifact
from utils.cluster import gather, import_ray
from utils.errors import ToolchainUnavailable

log = logging.getLogger(__name__)


@cache
def _remote() -> Any:
    ray = import_ray()

    @ray.remote(max_retries=1, retry_exceptions=False)
    def build(name: str, cfg: RunConfig, prepared: Prepared) -> tuple[list[Artifact] | ToolchainUnavailable, dict]:
        from utils.cluster import node_facts

        try:
            return run_toolchain(name, cfg, prepared), node_facts()
        except ToolchainUnavailable as exc:  # a toolchain missing on that node: skipped, as on one machine
            return exc, node_facts()

    return build


def quantize_on_cluster(jobs: list[tuple[str, RunConfig]], prepared: Prepared) -> list[tuple[Any, dict]]:
    """``run_toolchain`` of every (toolchain, variant config) job, in job order: (artifacts or the
    ToolchainUnavailable that stopped it, the node it ran on)."""
    ray = import_ray()
    build = _remote()
    shared = ray.put(prepared)
    refs = [build.remote(name, cfg, shared) for name, cfg in jobs]
    log.info("quantizing %d toolchain variants on the cluster", len(refs))
    return gather(refs, "quantization on the cluster")
