"""ModelOpt's default path (max calibration on the CPU) runs in this process: what it patches in
onnxruntime.quantization is put back afterwards (quantization/ModelOpt/ort_patches.py), so an ORT toolchain run
after it in the same process writes exactly what it writes in a process that never ran ModelOpt."""
from __future__ import annotations

import copy
import subprocess
import sys

import onnx
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


def quantize(models_dir: str, toolchains: list[str]) -> str:
    """Run ``toolchains`` in turn on the demo model (32 calibration images, ModelOpt calibrating on the CPU even
    on a GPU host: the in-process path); the last one's artifact path."""
    cfg = RunConfig()
    cfg.models_dir, cfg.calibration.size, cfg.modelopt.calibration_eps = models_dir, 32, ["cpu"]
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
    import quantization.ModelOpt.modelopt_quantizer as modelopt_quantizer

    with monkeypatch.context() as patched:
        _no_child(patched)
        here = onnx.load(quantize(str(tmp_path / "here"), ["modelopt"]))
    run = modelopt_quantizer.run_modelopt_quantize
    monkeypatch.setattr(modelopt_quantizer, "run_modelopt_quantize",
                        lambda scratch, correction=None, in_process=False, **kwargs: run(scratch, correction, False,
                                                                                           **kwargs))
    child = onnx.load(quantize(str(tmp_path / "child"), ["modelopt"]))
    assert [n.op_type for n in here.graph.node] == [n.op_type for n in child.graph.node]
    assert {i.name: i.raw_data for i in here.graph.initializer} == {i.name: i.raw_data for i in child.graph.initializer}
