"""--cluster on a real local Ray cluster (started once for the module): the same figures and artifacts as
one process, and a worker killed mid-evaluation retried without changing them."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from tests.conftest import run_script

pytestmark = pytest.mark.cluster

ray = pytest.importorskip("ray", reason="ray is not installed (pip install -r requirements/cluster.txt)")

SMALL = ["--limit", "96", "--calib-size", "32", "--batch-size", "16", "--rounds", "1", "--warmup", "0",
         "--bench-batch-sizes", "1", "--runtimes", "torch,onnxruntime"]
#: what is measured, not computed: timings, memory, where the files are, and the cluster's own section
MEASURED_ROW_KEYS = {"latency", "speedup", "peak_rss_bytes", "quantize_seconds", "path"}
MEASURED_KEYS = {"recommendation", "cluster"}


@pytest.fixture(scope="module")
def cluster():
    from utils.cluster import connect

    connection = connect("local", workers=2)  # ray.init(num_cpus=2, include_dashboard=False)
    yield connection
    ray.shutdown()


def _run(out: Path, name: str, *extra: str, toolchains: str = "torch_fx,ort") -> dict:
    from resnet.run import run_all

    assert run_all(["--toolchains", toolchains, *SMALL, "--models-dir", str(out / name / "models"),
                    "--results-dir", str(out / "results"), "--run-name", name, *extra]) == 0
    return json.loads((out / "results" / name / "report.json").read_text())


#: a TorchScript archive's size also depends on the process's history: its class names carry a process-wide
#: counter (``___torch_mangle_N``), and these tests run both reports in one process
TORCHSCRIPT_SIZE_KEYS = {"size_bytes", "compression_ratio"}


def _computed(report: dict) -> dict:
    kept = {k: v for k, v in report.items() if k not in MEASURED_KEYS}
    kept["rows"] = [{k: v for k, v in row.items() if k not in MEASURED_ROW_KEYS
                     and not (row["path"].endswith(".pt") and k in TORCHSCRIPT_SIZE_KEYS)} for row in report["rows"]]
    kept["warnings"] = [w for w in report["warnings"]  # from the timings
                        if "slower than true FP32" not in w and "a noisy measurement" not in w]
    return kept


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory) -> tuple[Path, dict, dict]:
    out = tmp_path_factory.mktemp("cluster")
    single = _run(out, "single")
    sharded = _run(out, "sharded", "--cluster", "local", "--workers", "2")
    return out, single, sharded


@pytest.mark.slow
def test_sharded_report_equals_the_single_process_one(runs):
    _, single, sharded = runs
    assert "cluster" not in single
    assert _computed(sharded) == _computed(single)
    placement = sharded["cluster"]
    assert placement["latency_measured_on"]["how"].startswith("the driver process alone")
    assert len(placement["pairs"]) == len(sharded["rows"])
    for pair in placement["pairs"]:
        assert len(pair["shards"]) == 2 and sum(s["images"] for s in pair["shards"]) == 96
        assert {s["isa_class"] for s in pair["shards"]} == {pair["isa_class"]}
        assert pair["retries"] == 0
    assert {s["pid"] for p in placement["pairs"] for s in p["shards"]} != {placement["latency_measured_on"]["pid"]}


@pytest.mark.slow
@pytest.mark.assets
def test_sharded_cifar_resnet20_report_equals_the_single_process_one(cluster, tmp_path):
    """The same on real weights and images: the pretrained CIFAR-10 ResNet-20 (shared assets), 2 workers;
    every figure, each row's predictions digest (image by image) and the ONNX artifacts' sha256."""
    from tests.conftest import asset

    root = asset("cifar10")
    real = ["--arch", "resnet20", "--weights", str(root / "resnet20-12fca82f.th"), "--dataset", "cifar10",
            "--data-root", str(root)]
    single = _run(tmp_path, "single", *real)
    sharded = _run(tmp_path, "sharded", *real, "--cluster", "local", "--workers", "2")
    assert _computed(sharded) == _computed(single)
    assert min(r["top1"] for r in single["rows"]) > 0.8  # the real model, not an untrained one
    assert all(len(r["predictions_sha256"]) == 64 for r in single["rows"])
    manifests = [_manifests(tmp_path / run / "models") for run in ("single", "sharded")]
    onnx = [name for name in manifests[0] if name.endswith(".onnx.manifest.json")]
    assert onnx and all(manifests[1][n]["sha256"] == manifests[0][n]["sha256"] for n in onnx)


def _manifests(folder: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in folder.rglob("*.manifest.json")}


def _tensors(path: Path) -> list[bytes]:
    """A TorchScript archive's tensor storages (weights, scales, zero points) in order. Its other bytes never
    repeat: torch.jit.save draws ``.data/serialization_id`` at random, and class names carry a process-wide
    counter, so two saves of one module differ in sha256 on one machine too."""
    with zipfile.ZipFile(path) as archive:
        return [archive.read(n) for n in sorted(archive.namelist()) if "/constants/" in n or "/data/" in n]


@pytest.mark.slow
def test_artifacts_are_the_single_process_bytes(runs):
    out, _, _ = runs
    single, sharded = _manifests(out / "single" / "models"), _manifests(out / "sharded" / "models")
    # FP32 and INT8 of FX and of ORT (ORT quantizes the reference FP32 ONNX: its bias correction is made on the graph)
    assert single.keys() == sharded.keys() and len(single) == 4
    for name, manifest in single.items():
        if name.endswith(".onnx.manifest.json"):  # built in Ray workers
            assert sharded[name]["sha256"] == manifest["sha256"], name
        else:  # TorchScript: built on the driver (TorchScriptQuantizer.driver_only)
            artifact = name.removesuffix(".manifest.json")
            found = [sorted(out.glob(f"{run}/models/**/{artifact}"))[0] for run in ("single", "sharded")]
            assert _tensors(found[0]) == _tensors(found[1]) and _tensors(found[0]), name


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_changes_no_figure(runs, monkeypatch):
    from utils.cluster import FAULT_DRILL_ENV

    out, single, _ = runs
    marker = out / "drill-marker"
    monkeypatch.setenv(FAULT_DRILL_ENV, str(marker))
    drilled = _run(out, "drilled", "--cluster", "local", "--workers", "2", toolchains="ort")
    assert marker.exists()  # one shard attempt really died: os._exit in its worker process
    assert sum(drilled["cluster"]["retries"].values()) == 1
    retried = [s for p in drilled["cluster"]["pairs"] for s in p["shards"] if s["attempts"] == 2]
    assert len(retried) == 1
    figures = {(r["artifact"], r["runtime"]): (r["top1"], r["top5"], r["f1_macro"], r["samples"])
               for r in single["rows"]}
    assert len(drilled["rows"]) == 2
    for row in drilled["rows"]:
        assert (row["top1"], row["top5"], row["f1_macro"], row["samples"]) == figures[(row["artifact"], row["runtime"])]
    assert drilled["confusion_matrices"] == {k: v for k, v in single["confusion_matrices"].items()
                                             if k in drilled["confusion_matrices"]}


@pytest.mark.parametrize("args, message", [
    (["--workers", "2"], "--workers needs --cluster"),
    (["--cluster", "nowhere:1"], "--cluster must be local, auto or ray://HOST:PORT"),
])
def test_bad_cluster_flags_are_one_line(tmp_path, args, message):
    result = run_script("-m", "resnet.run", *args, "--models-dir", str(tmp_path / "m"),
                        "--results-dir", str(tmp_path / "r"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]


def test_missing_ray_names_the_requirements_file(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"
            "from resnet.run import main; from utils.cli import run_cli\n"
            f"raise SystemExit(run_cli(main, ['--cluster', 'local', '--models-dir', '{tmp_path}/m', "
            f"'--results-dir', '{tmp_path}/r']))")
    result = run_script("-c", code)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --cluster needs package ray (pip install -r requirements/cluster.txt)"


@pytest.mark.slow
@pytest.mark.assets
def test_sensitivity_ranking_on_the_cluster_equals_one_process(cluster, tmp_path):
    from evaluation.accuracy_recovery import recover
    from evaluation.cluster.sensitivity import cluster_trial_map
    from quantization.workflow import make_quantizer, prepare
    from tests.conftest import resnet20_per_tensor_minmax_cfg

    cfg = resnet20_per_tensor_minmax_cfg(tmp_path, calibration_size=32, limit=100)
    prepared = prepare(cfg)
    quantizer = make_quantizer("torch_fx", cfg)
    fp32 = quantizer.export_fp32(prepared.model)
    results = [recover("torch_fx", quantizer, prepared, fp32, sensitivity=True, max_drop=None, budget=0,
                       heldout_size=100, trial_map=trial_map) for trial_map in (None, cluster_trial_map)]
    single, sharded = (r.to_dict() for r in results)
    assert len(single["ranking"]) == 20
    assert sharded == single  # top-1 and SQNR of every trial, and so the ranking
