"""The Ray connection of ``--cluster``: where the sharded evaluation and parallel quantization tasks run.

No ``--cluster`` flag means no Ray at all: ray is imported only here, inside functions, so a machine
without requirements/cluster.txt runs the suite as before. Every task records the node it ran on and
that node's CPU target class, because INT8 accuracy belongs to (artifact, runtime, CPU ISA): figures
of two ISA classes are never merged into one (see :func:`one_isa_class`).
"""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils.errors import SuiteError, missing_package

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
#: a fault drill (docs/cluster.md): set on the driver, the first evaluation shard attempt that finds this marker
#: file absent creates it and kills its own worker process, so a real worker death and Ray's retry can be
#: watched on any cluster
FAULT_DRILL_ENV = "MLS_CLUSTER_FAULT_DRILL"


def import_ray() -> Any:
    """Ray, or one line naming the requirements file that installs it."""
    try:
        import ray
    except ImportError as exc:
        raise missing_package("--cluster", "ray", "requirements/cluster.txt") from exc
    return ray


@dataclass
class Cluster:
    """An open Ray connection; ``owned`` when this process started it (and so shuts it down)."""

    address: str
    workers: int
    owned: bool

    def close(self) -> None:
        if self.owned:
            import_ray().shutdown()


def connect(address: str, workers: int = 2) -> Cluster:
    """``local``: a Ray instance on this machine with ``workers`` CPUs; ``auto``: the cluster this node belongs
    to (``ray start`` / ``ray up`` / KubeRay); ``ray://HOST:PORT``: a remote cluster through Ray Client.

    A process that is already connected (a test's cluster, a notebook) keeps its connection. Workers import
    the project from the driver's checkout path, which every node must therefore have (docs/cluster.md)."""
    if workers < 1:
        raise SuiteError(f"--workers must be at least 1, got {workers}")
    if address not in ("local", "auto") and not address.startswith("ray://"):
        raise SuiteError(f"--cluster must be local, auto or ray://HOST:PORT, got '{address}'")
    ray = import_ray()
    if ray.is_initialized():
        return Cluster(address, workers, owned=False)
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False,
                              "runtime_env": {"env_vars": _worker_env()}}
    if address == "local":
        kwargs["num_cpus"] = workers
    else:
        kwargs.pop("include_dashboard")  # a setting of the head node, not of a client
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise SuiteError(f"--cluster {address}: cannot connect ({str(exc).splitlines()[0]})") from exc
    log.info("cluster %s: %s CPUs", address, ray.cluster_resources().get("CPU"))
    return Cluster(address, workers, owned=True)


def _worker_env() -> dict[str, str]:
    """What a worker needs to import the project the driver runs."""
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}


def gather(refs: list[Any], what: str) -> list[Any]:
    """``ray.get`` in submission order; a task's SuiteError comes back as itself (one line at the boundary), a
    task whose worker died more often than its retries allow as one line naming what it was doing."""
    ray = import_ray()
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, SuiteError):
            raise exc.cause from None
        raise
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as exc:
        raise SuiteError(f"{what}: a cluster worker died on every attempt ({type(exc).__name__})") from exc


def node_facts() -> dict[str, Any]:
    """The node a task runs on: Ray node id, hostname, and the CPU target class of its ISA."""
    from utils.targets import resolve_target

    ray = import_ray()
    node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    return {"node_id": node_id, "hostname": socket.gethostname(), "isa_class": resolve_target("auto").name,
            "pid": os.getpid()}


def one_isa_class(records: list[dict[str, Any]], what: str) -> str:
    """The ISA class every record ran on; refused when they differ: an INT8 figure is never merged across
    CPU classes (their u8 x s8 kernels differ, see utils/targets.py)."""
    classes = sorted({r["isa_class"] for r in records})
    if len(classes) != 1:
        hosts = ", ".join(sorted({f"{r['hostname']}={r['isa_class']}" for r in records}))
        raise SuiteError(f"{what} ran on nodes of different CPU classes ({hosts}): figures of different ISA classes "
                         "are never merged; run on nodes of one class (docs/cluster.md)")
    return classes[0]


def check_readable(path: Path | None, what: str) -> None:
    """Every node must read ``path`` (data, models): one line naming the first node that cannot, up front."""
    if path is None:
        return
    ray = import_ray()

    @ray.remote(num_cpus=0)
    def probe(p: str) -> tuple[str, bool]:
        return socket.gethostname(), os.access(p, os.R_OK)

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = [probe.options(scheduling_strategy=_on_node(n["NodeID"])).remote(str(path)) for n in nodes]
    for host, ok in ray.get(refs):
        if not ok:
            raise SuiteError(f"{what} {path} is not readable on cluster node {host}: every node needs it at "
                             "the same path (a shared file system, docs/cluster.md)")


def _on_node(node_id: str) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
