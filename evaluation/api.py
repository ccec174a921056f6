"""The Python API of the evaluate half: ``compare(artifacts, data, runtimes=...) -> Report``.

The same loop and report as the scripts (evaluation.pipelines.workflow.evaluate_and_report): every artifact on
every runtime that runs it, each INT8 row against the true-FP32 row of its reference, report.md/json, metrics.csv
and plots in one results folder::

    from evaluation.api import compare
    report = compare([int8], loader)          # int8: quantization.api.quantize's artifact (or a path)
    print(report.recommendation, report.path)

``data`` is a DataLoader, an iterable of ``(images, labels)`` batches or a pair of arrays (images, labels),
preprocessed as the model expects; labels are needed (accuracy is the point of the comparison).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.pipelines.workflow import evaluate_and_report, run_folder
from evaluation.report.recommend import sentences
from quantization.api import REFERENCE_KEY, as_tensors
from quantization.run_config import RunConfig
from utils.artifacts import Artifact, load_artifact
from utils.config import with_overrides
from utils.data import DataSplits, TensorDataset
from utils.errors import SuiteError


@dataclass(frozen=True)
class Report:
    """A written comparison: its folder, report.md, the recommendation sentences and the full report dict."""

    folder: Path
    path: Path
    recommendation: list[str]
    data: dict[str, Any]


def with_references(artifacts: list[Artifact | str | Path]) -> list[Artifact]:
    """The artifacts (paths loaded and checked against their manifests), each INT8 one's FP32 reference added
    where it is known (quantize()'s, or an ONNX toolchain's recorded fp32_onnx) and not given already."""
    loaded = [a if isinstance(a, Artifact) else load_artifact(Path(a)) for a in artifacts]
    paths = {str(a.path) for a in loaded}
    result: list[Artifact] = []
    for artifact in loaded:
        reference = artifact.manifest.get(REFERENCE_KEY) or artifact.manifest.get("fp32_onnx")
        if artifact.precision != "fp32" and reference and reference not in paths:
            result.append(load_artifact(Path(reference)))
            paths.add(reference)
        result.append(artifact)
    return result


def compare(artifacts: list[Artifact | str | Path], data: Any, runtimes: list[str] | None = None, *,
            results_dir: str | Path = "results", run_name: str | None = None,
            settings: dict[str, Any] | None = None) -> Report:
    """Evaluate ``artifacts`` on ``data`` with every runtime of ``runtimes`` (None: each installed one that runs
    them) and write one report; ``settings`` as in a YAML recipe (``{"benchmark": {"rounds": 3}}``)."""
    if not artifacts:
        raise SuiteError("compare: no artifacts")
    if isinstance(data, tuple) and len(data) == 2 and not isinstance(data[0], tuple):
        data = [data]  # (images, labels) arrays: one batch
    images, labels = as_tensors(data, "data")
    if (labels < 0).any():
        raise SuiteError("data: labels are needed to compare accuracy (give (images, labels) batches)")
    chosen = with_references(artifacts)
    first = chosen[-1].manifest
    cfg = with_overrides(RunConfig(), {"results_dir": str(results_dir), "run_name": run_name, "runtimes": runtimes,
                                       "model": {"arch": str(first.get("arch") or chosen[-1].name)},
                                       **(settings or {})})
    num_classes = int(first.get("num_classes") or int(labels.max()) + 1)
    names = list(first.get("class_names") or [str(i) for i in range(num_classes)])
    ids = [f"data[{i}]" for i in range(len(images))]
    dataset = TensorDataset(images, labels)
    splits = DataSplits("api", dataset, dataset, [], ids, num_classes, names, tuple(images.shape[1:]),
                        preprocess=dict(first.get("preprocess") or {}))
    out_dir = run_folder(cfg, None)
    report = evaluate_and_report("INT8 comparison", chosen, splits, cfg, out_dir,
                                 context={"toolchains": ", ".join(sorted({a.toolchain for a in chosen}))})
    lines = [line.replace("**", "") for line in sentences(report["recommendation"])]
    return Report(out_dir, out_dir / "report.md", lines, report)
