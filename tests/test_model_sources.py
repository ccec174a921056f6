"""Model sources (utils/model_sources.py): the user's own callable, TorchScript, torch.export, timm and ONNX
models, each on a tiny model and a fresh models/ folder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_script
from torch import nn

from quantization.workflow import prepare, run_toolchain
from utils.artifacts import sha256_file
from utils.config import replace_section
from utils.errors import SuiteError
from utils.model_sources import parse_source, source_preprocessing

TINY = '''import torch.nn as nn


def build():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10))
'''
QUICK = ["--limit", "32", "--calib-size", "16", "--rounds", "1", "--warmup", "0", "--bench-batch-sizes", "1",
         "--runtimes", "onnxruntime"]


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10)).eval()


def quantize_ort(tmp_cfg, arch: str, weights: str | None = None):
    cfg = replace_section(replace_section(tmp_cfg, "model", arch=arch, weights=weights), "calibration", size=16)
    prepared = prepare(cfg)
    return prepared, run_toolchain("ort", cfg, prepared)


def test_parse_source_kinds():
    kinds = {spec: parse_source(spec).kind for spec in
             ["resnet20", "torchvision:resnet18", "timm:resnet10t", "pkg.mod:build", "m.pt", "m.pt2", "m.onnx"]}
    assert kinds == {"resnet20": "registry", "torchvision:resnet18": "torchvision", "timm:resnet10t": "timm",
                     "pkg.mod:build": "callable", "m.pt": "torchscript", "m.pt2": "export", "m.onnx": "onnx"}
    for bad in ["torchvision:", "a b:c", "dir/model.bin"]:
        with pytest.raises(SuiteError):
            parse_source(bad)


def test_callable_from_the_current_folder(tmp_cfg, tmp_path, monkeypatch):
    (tmp_path / "my_tiny_net.py").write_text(TINY)
    monkeypatch.chdir(tmp_path)
    prepared, (fp32, int8, *_) = quantize_ort(tmp_cfg, "my_tiny_net:build")
    assert prepared.model.num_classes == 10 and prepared.model.arch == "my_tiny_net.build"
    assert int8.path.is_file() and int8.path.name.startswith("my_tiny_net.build-")
    assert not (Path(tmp_cfg.models_dir) / "demo").exists()


def test_callable_weights_load_strictly(tmp_cfg, tmp_path, monkeypatch):
    (tmp_path / "my_tiny_net2.py").write_text(TINY)
    monkeypatch.chdir(tmp_path)
    torch.save(tiny().state_dict(), tmp_path / "w.pth")
    prepared, _ = quantize_ort(tmp_cfg, "my_tiny_net2:build", str(tmp_path / "w.pth"))
    assert torch.equal(prepared.model.module[0].weight, tiny()[0].weight)
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(SuiteError, match="do not match"):
        quantize_ort(tmp_cfg, "my_tiny_net2:build", str(tmp_path / "wrong.pth"))


def test_torchscript_file(tmp_cfg, tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.trace(tiny(), torch.zeros(1, 3, 32, 32)), path)
    prepared, (fp32, int8, *_) = quantize_ort(tmp_cfg, str(path))
    assert int8.manifest["source_weights_sha256"] == sha256_file(path)
    assert int8.path.name.startswith("scripted-")
    # ORT MinMax corrects on the exported ONNX graph (its calibration session's input sums): no trace needed
    assert int8.manifest["bias_correction"] == "applied (fast)"
    # the separate PyTorch pass (ORT Entropy calibrates in ORT's own session) needs an FX trace: not applied, with
    # the reason, and the run goes on
    cfg = replace_section(tmp_cfg, "ort", calibration_method="entropy")
    int8 = quantize_ort(cfg, str(path))[1][1]
    assert int8.manifest["bias_correction"].startswith("not applied: the transforms cannot trace")


def test_torch_export_file(tmp_cfg, tmp_path):
    path = tmp_path / "exported.pt2"
    program = torch.export.export(tiny(), (torch.zeros(2, 3, 32, 32),),
                                  dynamic_shapes={"input": {0: torch.export.Dim("batch")}})
    torch.export.save(program, path)
    prepared, (fp32, int8, *_) = quantize_ort(tmp_cfg, str(path))
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    # Same graph and weights, two module objects: kernels may pick different blockings (float sums in another
    # order), so equal within float32 rounding, not bit for bit.
    torch.testing.assert_close(prepared.model.module(x), program.module()(x), rtol=1e-4, atol=1e-5)
    assert int8.manifest["source_weights_sha256"] == sha256_file(path)


def test_timm_model_with_safetensors_and_its_preprocessing(tmp_cfg, tmp_path):
    timm = pytest.importorskip("timm", reason="timm is not installed (pip install -e '.[timm]')")
    from safetensors.torch import save_file

    model = timm.create_model("resnet10t", pretrained=False, num_classes=10)
    save_file(model.state_dict(), str(tmp_path / "r10t.safetensors"))
    prepared, (fp32, int8, *_) = quantize_ort(tmp_cfg, "timm:resnet10t", str(tmp_path / "r10t.safetensors"))
    assert int8.path.is_file() and prepared.model.num_classes == 10
    pre = source_preprocessing(parse_source("timm:resnet10t"))  # timm's own data config
    assert pre["interpolation"] == "bicubic" and pre["image_size"] == 176


def write_onnx(path: Path) -> None:
    torch.onnx.export(tiny(), (torch.zeros(1, 3, 32, 32),), str(path), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "b"}, "logits": {0: "b"}}, dynamo=False)


def test_onnx_source_is_named_and_hashed_and_skips_pytorch_toolchains(tmp_path):
    model = tmp_path / "my_net.onnx"
    write_onnx(model)
    result = run_script("-m", "resnet.run", "--arch", str(model), "--toolchains", "torch_fx,ort", *QUICK,
                        "--models-dir", str(tmp_path / "models"), "--results-dir", str(tmp_path / "results"),
                        "--run-name", "own")
    assert result.returncode == 0, result.stderr[-2000:]
    skipped = [line for line in result.stderr.splitlines() if "torch_fx skipped" in line]
    assert len(skipped) == 1 and "needs a PyTorch model" in skipped[0]
    manifests = list((tmp_path / "models").rglob("*.manifest.json"))
    assert manifests and all(p.name.startswith("my_net-") for p in manifests)
    int8 = json.loads(manifests[0].read_text())
    assert int8["source_weights_sha256"] == sha256_file(model) and int8["arch"] == "my_net"
    assert not (tmp_path / "models" / "demo").exists()
    report = json.loads((tmp_path / "results" / "own" / "report.json").read_text())
    assert all(row["artifact"].startswith("my_net") for row in report["rows"])


@pytest.mark.parametrize("content", [None, b"not an onnx file"])
def test_missing_or_bad_onnx_is_one_line_before_any_work(tmp_path, content):
    model = tmp_path / "absent.onnx"
    if content is not None:
        model.write_bytes(content)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "resnet.run", "--arch", str(model), "--models-dir", str(tmp_path / "m"),
                             "--results-dir", str(tmp_path / "r")], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60)
    assert time.perf_counter() - start < 10
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert ("not found" if content is None else "not a valid ONNX model") in result.stderr
    assert not (tmp_path / "m").exists() and not (tmp_path / "r").exists()  # nothing written, no run log
