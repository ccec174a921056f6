"""Zero Pads folded into the Conv that follows them in the FP32 ONNX export (quantization/onnx_pad_fold.py)."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from quantization.onnx_export import EXPORT_PASSES, export_onnx
from quantization.onnx_pad_fold import fold_pads_into_convs


def _same_padding_net(pad: nn.Module) -> nn.Module:
    """EfficientNet's stride-2 'SAME' depthwise block: ZeroPad2d(0, 1, 0, 1) + conv with padding 0."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU6(), pad, nn.Conv2d(8, 8, 3, stride=2, groups=8),
                         nn.ReLU6(), nn.Conv2d(8, 4, 1))


def _export(module: nn.Module, path):
    return export_onnx(module.eval(), (3, 16, 16), path, name="n", opset=17, source_weights=None, extra={})


def _run(path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def test_a_zero_pad_becomes_the_convs_asymmetric_pads_with_the_same_output(tmp_path):
    net = _same_padding_net(nn.ZeroPad2d((0, 1, 0, 1)))
    artifact = _export(net, tmp_path / "n.onnx")
    model = onnx.load(str(artifact.path))
    assert not [n for n in model.graph.node if n.op_type == "Pad"]
    depthwise = [n for n in model.graph.node if n.op_type == "Conv"][1]
    assert list(next(a for a in depthwise.attribute if a.name == "pads").ints) == [0, 0, 1, 1]  # t, l, b, r
    assert not [n for n in model.graph.node if n.op_type in ("ConstantOfShape", "Slice")]  # its pads subgraph went
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(_run(artifact.path, x), net(torch.from_numpy(x)).numpy(), atol=1e-5)
    assert artifact.manifest["settings"]["export_passes"] == list(EXPORT_PASSES)


@pytest.mark.parametrize("pad", [nn.ConstantPad2d((0, 1, 0, 1), 0.5), nn.ReflectionPad2d((0, 1, 0, 1))])
def test_a_pad_that_is_not_zero_padding_stays(tmp_path, pad):
    model = onnx.load(str(_export(_same_padding_net(pad), tmp_path / "n.onnx").path))
    assert [n for n in model.graph.node if n.op_type == "Pad"]
    assert fold_pads_into_convs(model) == 0


def test_a_cached_export_from_before_the_pass_is_exported_again(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights")  # reuse needs a source file to match
    net = _same_padding_net(nn.ZeroPad2d((0, 1, 0, 1)))
    path = tmp_path / "n.onnx"
    artifact = export_onnx(net, (3, 16, 16), path, name="n", opset=17, source_weights=weights, extra={})
    manifest_path = path.with_name(path.name + ".manifest.json")
    manifest = json.loads(manifest_path.read_text())
    del manifest["settings"]["export_passes"]  # what an export of an earlier version recorded
    manifest_path.write_text(json.dumps(manifest))
    again = export_onnx(_same_padding_net(nn.ZeroPad2d((0, 1, 0, 1))), (3, 16, 16), path, name="n", opset=17,
                        source_weights=weights, extra={})
    assert again.manifest["settings"]["export_passes"] == list(EXPORT_PASSES) and artifact.path == again.path
