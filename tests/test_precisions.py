"""Every FP32 row computes in FP32, and says so as its runtime reports it; BF16 rows only where the CPU has BF16."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from utils.artifacts import Artifact
from utils.errors import SuiteError
from utils.hardware import native_bf16_reason


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Artifact:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    path = tmp_path_factory.mktemp("prec") / "tiny.onnx"
    torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), str(path), input_names=["x"], dynamo=False,
                      dynamic_axes={"x": {0: "n"}})
    return Artifact(path, "onnx", "fp32", "fp32", {"input_shape": [3, 16, 16]})


def test_openvino_fp32_rows_are_true_fp32_read_back_from_the_compiled_model(tiny_onnx: Artifact):
    pytest.importorskip("openvino")
    from evaluation.pipelines.openvino_runner import OpenVINORunner

    runner = OpenVINORunner(tiny_onnx)
    assert runner.precision == "fp32" and runner.ran_in == "f32"  # OpenVINO's own answer, not our assumption
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    assert runner.predict(x).shape == (2, 4)


@pytest.mark.skipif(native_bf16_reason() is not None, reason="this CPU has no native BF16 (AMX-BF16/AVX512-BF16)")
def test_bf16_rows_run_in_bf16_where_the_cpu_has_it(tiny_onnx: Artifact):
    pytest.importorskip("openvino")
    from evaluation.pipelines.openvino_runner import OpenVINORunner

    runner = OpenVINORunner(tiny_onnx, precision="bf16")
    assert runner.ran_in == "bf16"
    fp32 = OpenVINORunner(tiny_onnx)
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    a, b = fp32.predict(x), runner.predict(x)
    assert not np.array_equal(a, b) and np.allclose(a, b, atol=0.1)  # BF16 rounding: close, not identical


def test_a_bf16_row_is_refused_where_the_cpu_has_no_bf16(monkeypatch, tiny_onnx: Artifact):
    pytest.importorskip("openvino")
    from evaluation.pipelines.openvino_runner import OpenVINORunner
    from utils import hardware

    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    with pytest.raises(SuiteError, match="cannot run tiny in bf16"):
        OpenVINORunner(tiny_onnx, precision="bf16")


def test_torch_fp32_rows_forbid_implicit_reduced_precision(tmp_path: Path):
    from evaluation.pipelines.torch_runner import TorchRunner

    model = torch.jit.trace(torch.nn.Linear(4, 3).eval(), torch.randn(1, 4))
    path = tmp_path / "lin.pt"
    model.save(str(path))
    torch.set_float32_matmul_precision("medium")  # what another library might have left behind
    try:
        runner = TorchRunner(Artifact(path, "torchscript", "fp32", "fp32", {}))
        assert torch.get_float32_matmul_precision() == "highest"
        assert runner.ran_in == "fp32 (matmul precision highest)"
    finally:
        torch.set_float32_matmul_precision("highest")
    assert torch.backends.mkldnn.conv.fp32_precision == "ieee"  # oneDNN convolutions too, not only matmul


def test_a_torch_fp32_row_leaves_torch_export_working(tmp_path: Path):
    """One `mls compare` process opens FX's FP32 row, then PT2E exports: the precision set for the first must
    not break the second (seen: the generic oneDNN flag left cuDNN's TF32 flags inconsistent, and every later
    torch.export in the process failed)."""
    from evaluation.pipelines.torch_runner import true_fp32

    true_fp32()
    torch._C._get_cudnn_allow_tf32()  # raised "a mix of the legacy and new APIs" after the generic flag
    torch.export.export(torch.nn.Conv2d(3, 4, 3).eval(), (torch.zeros(1, 3, 8, 8),), strict=True)


def test_eval_precisions_are_checked_when_the_config_is_built():
    from quantization.run_config import load_config

    with pytest.raises(SuiteError, match="benchmark.eval_precisions' must be one of fp32, bf16, int8 .got 'fp8'"):
        load_config(overrides={"benchmark.eval_precisions": ["fp32", "fp8"]})
    with pytest.raises(SuiteError, match="fp32 is the baseline"):
        load_config(overrides={"benchmark.eval_precisions": ["int8"]})
