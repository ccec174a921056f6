"""ModelOpt's default path (max calibration on the CPU) runs in this process: what it patches in
onnxruntime.quantization is put back afterwards (quantization/ModelOpt/ort_patches.py), so an ORT toolchain run
after it in the same process writes exactly what it writes in a process that never ran ModelOpt."""
from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
from onnxruntime.quantization import calibrate
from onnxruntime.quantization.base_quantizer import BaseQuantizer
from onnxruntime.quantization.calibrate import CalibraterBase, MinMaxCalibrater
from onnxruntime.quantization.registry import QDQRegistry

from quantization.ModelOpt.ort_patches import restored_onnxruntime_quantization
from quantization.registry import quantizer_class
from quantization.run_config import RunConfig
from quantization.workflow import prepare, run_toolchain
from tests.conftest import REPO


def test_every_patch_made_inside_the_block_is_undone():
    collect, create, adjust = MinMaxCalibrater.collect_data, calibrate.create_calibrator, BaseQuantizer.adjust_tensor_ranges
    init, registry = CalibraterBase.__init__, dict(QDQRegistry)
    with restored_onnxruntime_quantization():
        CalibraterBase.__init__ = lambda self, *a, **k: None
        QDQRegistry["BatchNormalization"] = object  # ModelOpt edits the op registries in place
        del QDQRegistry["Conv"]
        MinMaxCalibrater.collect_data = lambda self, reader: None  # what ModelOpt's patch_ort_modules does
        calibrate.create_calibrator = lambda *a, **k: None
        BaseQuantizer.adjust_tensor_ranges = lambda self: None
        CalibraterBase.added_by_a_patch = True
        calibrate.added_by_a_patch = True
    assert MinMaxCalibrater.collect_data is collect and calibrate.create_calibrator is create
    assert BaseQuantizer.adjust_tensor_ranges is adjust
    assert not hasattr(CalibraterBase, "added_by_a_patch") and not hasattr(calibrate, "added_by_a_patch")
    assert QDQRegistry == registry and CalibraterBase.__init__ is init


def test_the_patches_are_undone_when_the_block_raises():
    collect = MinMaxCalibrater.collect_data
    with pytest.raises(RuntimeError), restored_onnxruntime_quantization():
        MinMaxCalibrater.collect_data = lambda self, reader: None
        raise RuntimeError("ModelOpt failed half way")
    assert MinMaxCalibrater.collect_data is collect


def _no_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ModelOpt run must take the in-process path: a spawned child fails it."""
    import quantization.ModelOpt.modelopt_quantizer as modelopt_quantizer

    def refuse(*args, **kwargs):
        raise AssertionError("ModelOpt ran in a child: the in-process path was not taken")

    monkeypatch.setattr(modelopt_quantizer, "run_in_spawned_child", refuse)


_ORT_RUN = """
import sys
from tests.test_modelopt_in_process import quantize
print(quantize(sys.argv[1], ["ort"]))
"""


def quantize(models_dir: str, toolchains: list[str], arch: str | None = None) -> str:
    """Run ``toolchains`` in turn on the demo model, or ``arch`` on the demo images (32 calibration images,
    ModelOpt calibrating on the CPU even on a GPU host: the in-process path); the last one's artifact path."""
    import torch

    cfg = RunConfig()
    cfg.models_dir, cfg.calibration.size, cfg.modelopt.calibration_eps = models_dir, 32, ["cpu"]
    if arch:
        cfg.model.arch = arch
        torch.manual_seed(0)  # its random initialisation: the same weights in every call
    prepared = prepare(cfg)
    path = ""
    for toolchain in toolchains:
        _, int8, *_ = run_toolchain(toolchain, copy.deepcopy(cfg), prepared)
        path = str(int8.path)
    return path


@pytest.mark.slow
def test_an_ort_run_after_modelopt_in_the_same_process_writes_what_a_fresh_process_writes(tmp_path, monkeypatch):
    if reason := quantizer_class("modelopt").unavailable_reason():
        pytest.skip(reason)
    _no_child(monkeypatch)
    after_modelopt = quantize(str(tmp_path / "same_process"), ["modelopt", "ort"])
    done = subprocess.run([sys.executable, "-c", _ORT_RUN, str(tmp_path / "fresh")], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    fresh = done.stdout.strip().splitlines()[-1]
    same, alone = onnx.load(after_modelopt), onnx.load(fresh)
    assert [n.op_type for n in same.graph.node] == [n.op_type for n in alone.graph.node]
    assert {i.name: i.raw_data for i in same.graph.initializer} == {i.name: i.raw_data for i in alone.graph.initializer}


@pytest.mark.slow
def test_modelopt_in_this_process_writes_what_its_child_writes(tmp_path, monkeypatch):
    """Same session, same code, other process: the artifact is byte for byte the child's."""
    if reason := quantizer_class("modelopt").unavailable_reason():
        pytest.skip(reason)
    with monkeypatch.context() as patched:
        _no_child(patched)
        here = onnx.load(quantize(str(tmp_path / "here"), ["modelopt"]))
    _call_modelopt_with(monkeypatch, in_process=False)
    child = onnx.load(quantize(str(tmp_path / "child"), ["modelopt"]))
    assert [n.op_type for n in here.graph.node] == [n.op_type for n in child.graph.node]
    assert {i.name: i.raw_data for i in here.graph.initializer} == {i.name: i.raw_data for i in child.graph.initializer}


def _call_modelopt_with(monkeypatch: pytest.MonkeyPatch, **fixed: bool) -> None:
    """Every ``run_modelopt_quantize`` call with ``in_process`` / ``every_range`` set as ``fixed`` says."""
    import quantization.ModelOpt.modelopt_quantizer as modelopt_quantizer

    run = modelopt_quantizer.run_modelopt_quantize

    def call(scratch, correction=None, in_process=False, every_range=False, **kwargs):
        chosen = {"in_process": in_process, "every_range": every_range, **fixed}
        return run(scratch, correction, chosen["in_process"], chosen["every_range"], **kwargs)

    monkeypatch.setattr(modelopt_quantizer, "run_modelopt_quantize", call)


def _every_range(monkeypatch: pytest.MonkeyPatch) -> None:
    """ModelOpt's calibration session gathers every range ORT's calibrator adds, as before it dropped any."""
    _call_modelopt_with(monkeypatch, every_range=True)


def _runs(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records ``every_range`` of each ModelOpt call the quantizer makes."""
    from quantization.ModelOpt.modelopt_quantizer import ModelOptQuantizer

    run, seen = ModelOptQuantizer._run_modelopt, []

    def recording(self, *args, **kwargs):
        seen.append(kwargs.get("every_range", False))
        return run(self, *args, **kwargs)

    monkeypatch.setattr(ModelOptQuantizer, "_run_modelopt", recording)
    return seen


def _same_file(path: str, other: str) -> None:
    """Same nodes; the same initializers, within float rounding for float ones (a range or an input sum read
    after a fused kernel may differ in its last bit: the head's bias moved by 7e-9 on EfficientNet-Lite0)."""
    model, reference = onnx.load(path), onnx.load(other)
    assert [(n.op_type, list(n.input)) for n in model.graph.node] == \
        [(n.op_type, list(n.input)) for n in reference.graph.node]
    ours = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    theirs = {i.name: onnx.numpy_helper.to_array(i) for i in reference.graph.initializer}
    assert ours.keys() == theirs.keys()
    for name, value in ours.items():
        if value.dtype.kind == "f":
            np.testing.assert_allclose(value, theirs[name], rtol=1e-5, atol=1e-7, err_msg=name)
        else:
            assert np.array_equal(value, theirs[name]), name


@pytest.mark.slow
@pytest.mark.parametrize("arch", [None, "mobilenet_v3_small"])
def test_modelopt_calibrates_only_the_ranges_it_reads_and_writes_the_same_file(arch, tmp_path, monkeypatch):
    """The session drops the ranges ModelOpt's Q/DQ placement never reads (calibration_session.py): the demo
    model and MobileNet-V3 (Hardswish, squeeze-excite Mul) come out as with every range gathered."""
    if reason := quantizer_class("modelopt").unavailable_reason():
        pytest.skip(reason)
    from quantization.ORT import calibration_reductions

    _no_child(monkeypatch)
    drop, dropped = calibration_reductions.drop_reductions, []
    monkeypatch.setattr(calibration_reductions, "drop_reductions",
                        lambda model, tensors: dropped.append(drop(model, tensors)) or dropped[-1])
    runs = _runs(monkeypatch)
    pruned = quantize(str(tmp_path / "pruned"), ["modelopt"], arch)
    assert len(dropped) == 1 and dropped[0], "no range was dropped"
    assert runs == [False], "the calibration with ranges dropped failed and was run again"
    with monkeypatch.context() as patched:
        _every_range(patched)
        full = quantize(str(tmp_path / "full"), ["modelopt"], arch)
    assert len(dropped) == 1
    _same_file(pruned, full)


@pytest.mark.slow
def test_a_dropped_range_modelopt_asks_for_means_calibrating_again_with_every_range(tmp_path, monkeypatch):
    """Drop every range: ORT's quantizer asks for one and stops; the suite calibrates again with every range, on a
    fresh copy of the FP32 file, and writes what the full calibration writes."""
    if reason := quantizer_class("modelopt").unavailable_reason():
        pytest.skip(reason)
    import quantization.ModelOpt.calibration_session as calibration_session

    _no_child(monkeypatch)
    with monkeypatch.context() as patched:
        patched.setattr(calibration_session, "ranges_modelopt_reads", lambda model, calibrator: set())
        runs = _runs(patched)
        retried = quantize(str(tmp_path / "retried"), ["modelopt"])
    assert runs == [False, True]  # ranges dropped, ModelOpt stopped; then every range
    with monkeypatch.context() as patched:
        _every_range(patched)
        full = quantize(str(tmp_path / "full"), ["modelopt"])
    _same_file(retried, full)
