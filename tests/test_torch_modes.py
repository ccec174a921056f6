"""The Torch modes beyond FX: eager PTQ, dynamic PTQ and QAT, end to end through the shared loop and report.

The CIFAR-10 tests use the pretrained ResNet-20 of ../shared/assets on a slice of its test images
(skipped with the reason when the assets are absent); the dynamic test runs on the demo set.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantization.Torch.cli import MODE_TOOLCHAINS
from quantization.Torch.cli import build_parser as torch_ptq_parser
from resnet.run import main as run_main
from tests.conftest import REPO, asset, run_script

SLICE = 1000  # CIFAR-10 test images evaluated


def test_every_mode_documents_every_option():
    result = run_script(str(REPO / "quantization/Torch/torch_PTQ.py"), "--mode", "qat", "--help")
    assert result.returncode == 0
    parser = torch_ptq_parser()
    for action in parser._actions:
        if action.option_strings:
            assert action.help, f"{action.option_strings} has no help"
            assert any(s in result.stdout for s in action.option_strings), action.option_strings
    for mode in ("eager", "dynamic", "qat"):
        assert mode in MODE_TOOLCHAINS and f"  {mode} " in result.stdout  # each mode explained in the description
    for flag in ("--qat-engine", "--qat-steps", "--qat-lr", "--qat-batch-size", "--qat-freeze-bn-after",
                 "--qat-freeze-observers-after", "--granularity", "--observer"):
        assert flag in result.stdout


def _report(results: Path) -> dict:
    (report,) = results.rglob("report.json")
    return json.loads(report.read_text())


def _cifar_args(tmp_path: Path) -> list[str]:
    root = asset("cifar10")
    return ["--config", str(REPO / "configs/cifar10_resnet20.yaml"), "--data-root", str(root),
            "--weights", str(root / "resnet20-12fca82f.th"), "--limit", str(SLICE), "--calib-size", "256",
            "--runtimes", "torch", "--bench-batch-sizes", "1", "--rounds", "3", "--warmup", "1",
            "--models-dir", str(tmp_path / "models"), "--results-dir", str(tmp_path / "results"), "--run-name", "t"]


@pytest.mark.slow
@pytest.mark.assets
def test_eager_ptq_beside_fx_in_one_report(tmp_path: Path):
    assert run_main(["--toolchains", "torch_fx,torch_eager", "--observer", "minmax", *_cifar_args(tmp_path)]) == 0
    rows = {r["toolchain"]: r for r in _report(tmp_path / "results")["rows"] if r["precision"] == "int8"}
    assert set(rows) == {"torch_fx", "torch_eager"}
    eager = rows["torch_eager"]
    assert eager["mode"].startswith("eager") and eager["runtime"] == "torch"
    assert eager["top1_drop_pp"] <= 1.0 and eager["agreement"] >= 0.95
    # same model, same data, same qconfig: eager and FX land on nearly the same predictions
    assert abs(eager["top1"] - rows["torch_fx"]["top1"]) <= 0.01
    manifest = json.loads(Path(eager["path"] + ".manifest.json").read_text())
    assert manifest["settings"]["mode"] == "eager" and manifest["calibration_sample_count"] == 256


@pytest.mark.slow
@pytest.mark.assets
def test_qat_from_per_tensor_end_to_end(tmp_path: Path):
    args = ["--toolchains", "torch_qat", "--granularity", "per_tensor", "--observer", "minmax",
            "--qat-steps", "40", "--qat-freeze-bn-after", "25", "--qat-freeze-observers-after", "30"]
    assert run_main([*args, *_cifar_args(tmp_path)]) == 0
    (row,) = [r for r in _report(tmp_path / "results")["rows"] if r["precision"] == "int8"]
    assert row["toolchain"] == "torch_qat"
    manifest = json.loads(Path(row["path"] + ".manifest.json").read_text())
    settings = manifest["settings"]
    assert settings["qat_steps"] == 40 and settings["qat_freeze_bn_after"] == 25
    assert manifest["bias_correction"].startswith("not applied: QAT fine-tunes")  # the default skips QAT, says why
    assert all(i.startswith("train/") for i in manifest["calibration_sample_ids"])  # trained on training images
    assert row["top1_drop_pp"] <= 1.0  # fine-tuned on CIFAR-10 training images: no loss against FP32


@pytest.mark.slow
def test_dynamic_ptq_end_to_end_on_the_demo(tmp_path: Path):
    args = ["--toolchains", "torch_dynamic", "--runtimes", "torch", "--bench-batch-sizes", "1", "--rounds", "3",
            "--models-dir", str(tmp_path / "models"), "--results-dir", str(tmp_path / "results"), "--run-name", "t"]
    assert run_main(args) == 0
    (row,) = [r for r in _report(tmp_path / "results")["rows"] if r["precision"] == "int8"]
    assert row["toolchain"] == "torch_dynamic" and row["top1_drop_pp"] <= 1.0
    manifest = json.loads(Path(row["path"] + ".manifest.json").read_text())
    assert manifest["settings"]["activation_bits"] in (7, 8) and manifest["calibration_sample_count"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["eager", "dynamic", "qat"])
def test_torch_ptq_mode_writes_an_artifact_with_a_manifest(mode: str, tmp_path: Path):
    from quantization.Torch.cli import main as torch_ptq

    extra = ["--qat-steps", "4", "--qat-freeze-bn-after", "2", "--qat-freeze-observers-after", "3"] if mode == "qat" else []
    assert torch_ptq(["--mode", mode, "--calib-size", "64", "--models-dir", str(tmp_path), *extra]) == 0
    manifests = [json.loads(p.read_text()) for p in tmp_path.rglob("*.manifest.json")]
    assert {m["precision"] for m in manifests} == {"fp32", "int8"}
    assert next(m for m in manifests if m["precision"] == "int8")["settings"]["mode"].startswith(mode)


@pytest.mark.slow
@pytest.mark.parametrize("target, qmax", [("x86-vnni", 127), ("x86-avx2", 63)])
def test_pt2e_artifact_follows_the_target_and_loads_in_a_fresh_process(tmp_path: Path, target: str, qmax: int):
    """X86InductorQuantizer's weights take 7 bits for x86-avx2; the .pt2 must deserialise where the
    quantizer never ran (its quantized_decomposed ops are registered by the loader)."""
    from quantization.Torch.cli import main as torch_ptq
    from tests.conftest import run_script

    assert torch_ptq(["--mode", "pt2e", "--target", target, "--calib-size", "32", "--models-dir", str(tmp_path)]) == 0
    (path,) = [p for p in tmp_path.rglob("*pt2e*.pt2")]
    manifest = json.loads(Path(str(path) + ".manifest.json").read_text())
    assert manifest["target"] == target and manifest["settings"]["weight_bits"] == (7 if qmax == 63 else 8)
    code = ("import sys, torch; from evaluation.pipelines.torch_runner import load_exported_program; "
            f"ep = load_exported_program({str(path)!r}); "
            "w = [t for t in {**ep.state_dict, **ep.constants}.values() if t.dtype == torch.int8 and t.dim() >= 2]; "
            "print(max(int(t.max()) for t in w))")
    result = run_script("-c", code)
    assert result.returncode == 0, result.stderr[-1500:]
    assert int(result.stdout.strip().splitlines()[-1]) == qmax


def _reused_modules():
    """A user's module: one ReLU module called three times; F.relu before an add and before a max pool,
    torch.relu and Tensor.relu before a cat; a linear head."""
    import torch
    from torch import nn

    class ReusedModules(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
            self.c3, self.c4 = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)
            self.act, self.fc = nn.ReLU(), nn.Linear(32, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.act(self.c1(x))
            z = self.act(nn.functional.relu(self.c2(y)) + y)
            z = nn.functional.max_pool2d(nn.functional.relu(self.c3(z)), 2)
            z = torch.cat([torch.relu(self.c4(z)), self.c4(z).relu()], 1)
            return self.fc(self.act(torch.cat([z.mean((2, 3)), z.amax((2, 3))], 1)))

    return ReusedModules()


@pytest.mark.slow
@pytest.mark.parametrize("name, size", [("resnet20", 32), ("resnet18", 64), ("mobilenet_v3_small", 64),
                                        ("mobilenet_v2", 64), ("shufflenet_v2_x0_5", 64),
                                        ("efficientnet_lite0", 224), ("googlenet", 64), ("inception_v3", 299),
                                        ("reused_modules", 16)])
def test_pt2e_non_strict_export_quantizes_as_the_strict_one(name, size):
    """PT2E exports non-strict and records the source metadata itself (pt2e_export.py): against the strict
    export of the same model, the converted graph has the same calls in the same order and bit-identical
    outputs, and the artifact's re-export gives the converted graph's outputs. Without record_sources,
    prepare_pt2e fails on resnet18, efficientnet_lite0 and reused_modules (a module called several times); with
    the functional ReLUs left unnamed, googlenet and inception_v3 get other Q/DQ (a review caught it)."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer

    from quantization.run_config import RunConfig
    from quantization.Torch.pt2e_export import export, graph_to_quantize
    from quantization.Torch.pt2e_quantizer import PT2EQuantizer
    from utils.models import build_architecture

    torch.manual_seed(0)
    model = (_reused_modules() if name == "reused_modules" else build_architecture(name, 10)).eval()
    example, images = torch.randn(2, 3, size, size), torch.randn(8, 3, size, size)
    config = PT2EQuantizer(RunConfig()).quantization_config()
    batch = torch.export.Dim("batch", min=1, max=1024)

    def converted(graph):
        prepared = prepare_pt2e(graph, X86InductorQuantizer().set_global(config))
        with torch.no_grad():
            prepared(images)
        return convert_pt2e(prepared)

    strict = converted(torch.export.export(model, (example,), dynamic_shapes=({0: batch},), strict=True).module())
    ours = converted(graph_to_quantize(model, example))
    calls = lambda g: [str(n.target) for n in g.graph.nodes if n.op == "call_function"]  # noqa: E731
    assert calls(ours) == calls(strict)
    assert sum("quantize_per_tensor" in c for c in calls(ours)) > 2
    with torch.no_grad():
        out = ours(images)
        assert torch.equal(out, strict(images))
        assert torch.equal(export(ours, example).module()(images), out)
