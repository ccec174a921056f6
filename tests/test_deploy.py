"""resnet.deploy: an artifact the suite wrote classifies image files, preprocessed from its manifest."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import run_script

from evaluation.deploy import demo_sample
from quantization.workflow import prepare, run_toolchain
from resnet.deploy import main as deploy_main
from utils.config import DataConfig
from utils.data import file_tensor, load_demo
from utils.packages import has_module

LINE = re.compile(r"^(?P<image>\S+): (?P<top>.+) \| (?P<ms>[0-9.]+) ms")


def predictions(out: str) -> dict[str, list[tuple[str, float]]]:
    found = {}
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            top = [(c.rsplit(" ", 1)[0], float(c.rsplit(" ", 1)[1].rstrip("%"))) for c in m["top"].split(", ")]
            found[Path(m["image"]).name] = top
    return found


def test_a_demo_image_file_is_preprocessed_like_the_evaluation_split(tmp_path: Path):
    path, label = demo_sample(tmp_path, position=3)
    splits = load_demo(DataConfig())
    image, target = splits.evaluation[3]
    assert str(int(target)) == label
    x = file_tensor(path, splits.preprocess)
    assert x.shape == (1, 3, 32, 32)
    assert torch.allclose(x[0], image, atol=0.02)  # only the PNG's 8-bit rounding differs


@pytest.fixture(scope="module")
def demo_artifacts(tmp_path_factory):
    from quantization.run_config import RunConfig

    cfg = RunConfig()
    cfg.models_dir = str(tmp_path_factory.mktemp("models"))
    prepared = prepare(cfg)
    return {tc: run_toolchain(tc, cfg, prepared)[1] for tc in ("torch_fx", "ort")}


def runtimes_for(kind: str) -> list[str]:
    if kind == "torchscript":
        return ["torch"]
    return ["onnxruntime"] + (["openvino"] if has_module("openvino") else [])


@pytest.mark.slow
@pytest.mark.parametrize("toolchain", ["torch_fx", "ort"])
def test_deploy_classifies_a_folder_on_every_runtime(demo_artifacts, toolchain, tmp_path: Path, capsys):
    images = tmp_path / "digits"
    labels = dict(demo_sample(images, position=i) for i in range(4))
    artifact = demo_artifacts[toolchain]
    for runtime in runtimes_for(artifact.kind):
        capsys.readouterr()
        assert deploy_main([str(artifact.path), str(images), "--runtime", runtime, "--repeats", "2"]) == 0
        out = capsys.readouterr().out
        found = predictions(out)
        assert set(found) == {p.name for p in labels}, out
        for path, label in labels.items():
            top = found[path.name]
            assert len(top) == 5 and top[0][0] == label, (runtime, out)  # the demo model knows these digits
            assert abs(sum(p for _, p in top) - 100) < 1.0 and top[0][1] > 50


@pytest.mark.slow
def test_deploy_bad_input(demo_artifacts, tmp_path: Path, capsys):
    artifact = demo_artifacts["torch_fx"]
    (tmp_path / "not_an_image.png").write_text("hello")
    assert deploy_main([str(artifact.path), str(tmp_path / "not_an_image.png")]) == 2
    assert "not a readable image" in capsys.readouterr().err
    assert deploy_main([str(artifact.path), "--runtime", "onnxruntime"]) == 2
    assert "does not run torchscript" in capsys.readouterr().err
    assert deploy_main([str(tmp_path / "missing.onnx")]) == 2
    assert "artifact not found" in capsys.readouterr().err


@pytest.mark.slow
def test_deploy_from_a_fresh_checkout_needs_no_arguments():
    result = run_script("-m", "resnet.deploy", "--repeats", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    found = predictions(result.stdout)
    (name, top), = found.items()
    assert top[0][0] == re.search(r"label(\d+)", name)[1]
