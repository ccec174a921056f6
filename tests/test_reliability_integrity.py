"""Issue #30, point 3: integrity that cannot be switched off.

A manifest without a valid sha256 makes its artifact invalid; every manifest is checked against one schema
(a missing key, a wrong JSON type, non-UTF-8 bytes: one line); the cached demo weights are verified; a given
``--onnx`` is recorded by its own sha256, not by the ``--weights`` it may not come from.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from utils.artifacts import load_artifact, manifest_path_for, sha256_file, write_artifact
from utils.errors import SuiteError


def _int8_artifact(folder: Path, payload: bytes = b"INT8" * 100) -> Path:
    final = folder / "m_int8.pt"
    write_artifact(final, lambda tmp: tmp.write_bytes(payload), {"name": "m", "kind": "torchscript",
                   "toolchain": "torch_fx", "precision": "int8", "settings": {}, "input_shape": [3, 8, 8],
                   "calibration_sample_ids": ["a"]}, toolchain="torch_fx", kind="torchscript", precision="int8")
    return final


def _edit_manifest(final: Path, change) -> None:
    path = manifest_path_for(final)
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_an_fp32_file_over_an_int8_artifact_with_its_sha256_deleted_is_refused(tmp_path):
    """The issue's case: delete the manifest's sha256 and copy another model over the artifact; it used to be
    reported as INT8 (compression 1.00x), exit 0."""
    final = _int8_artifact(tmp_path)
    _edit_manifest(final, lambda m: m.pop("sha256"))
    final.write_bytes(b"FP32" * 400)
    with pytest.raises(SuiteError, match=r"m_int8\.pt\.manifest\.json has no 'sha256' .*cannot be trusted"):
        load_artifact(final)


SCHEMA_BREAKS = {
    "sha256 not hex": (lambda m: m.update(sha256="abc"), r"'sha256' must be the artifact's sha256"),
    "no kind": (lambda m: m.pop("kind"), r"has no 'kind'"),
    "kind a list": (lambda m: m.update(kind=["onnx"]), r"'kind' must be a string"),
    "toolchain a number": (lambda m: m.update(toolchain=3), r"'toolchain' must be a string"),
    "unknown precision": (lambda m: m.update(precision="int4"), r"'precision' must be one of fp32, fp16, int8"),
    "ids a string": (lambda m: m.update(calibration_sample_ids="a,b"), r"'calibration_sample_ids' must be a list"),
    "shape a mapping": (lambda m: m.update(input_shape={"c": 3}), r"'input_shape' must be a list of integers"),
    "settings a list": (lambda m: m.update(settings=[]), r"'settings' must be a mapping"),
    "digests a number": (lambda m: m.update(calibration={"digests": 5}), r"'calibration.digests' must be a list"),
    "weights sha short": (lambda m: m.update(source_weights_sha256="12ab"), r"'source_weights_sha256' must be"),
}


@pytest.mark.parametrize("case", SCHEMA_BREAKS)
def test_every_manifest_is_checked_against_one_schema(tmp_path, case):
    change, message = SCHEMA_BREAKS[case]
    final = _int8_artifact(tmp_path)
    _edit_manifest(final, change)
    with pytest.raises(SuiteError, match=message):
        load_artifact(final)


@pytest.mark.parametrize("content, message", [(b'{"name": "caf\xe9"}', "is not UTF-8 text"),
                                              (b"[1, 2]", "must hold a JSON object, not list"),
                                              (b"{nope", "is not valid JSON")])
def test_a_manifest_that_is_not_a_utf8_json_object_is_one_line(tmp_path, content, message):
    final = _int8_artifact(tmp_path)
    manifest_path_for(final).write_bytes(content)
    with pytest.raises(SuiteError, match=message):
        load_artifact(final)


def test_the_cached_demo_weights_are_verified_on_load(tmp_path):
    from utils.artifacts import atomic_path, build_manifest, write_json_atomic, write_saved
    from utils.demo_model import demo_weights, demo_weights_path
    from utils.manifest_schema import verified_cache

    path = demo_weights_path(tmp_path)
    path.parent.mkdir(parents=True)
    with atomic_path(path) as tmp:  # a small stand-in for the trained cache, written as train_demo_model does
        write_saved(tmp, torch.save, {"w": torch.ones(3)})
    assert not verified_cache(path, "the cached demo weights", "delete it")  # no manifest: rebuilt by the caller
    write_json_atomic(manifest_path_for(path), build_manifest(
        name="demo-resnet20", toolchain="training", kind="state_dict", precision="fp32", settings={},
        source_weights=None, calibration_ids=None, extra={"sha256": sha256_file(path)}))
    assert demo_weights(tmp_path) == path
    with atomic_path(path) as tmp:  # swapped weights
        write_saved(tmp, torch.save, {"w": torch.zeros(3)})
    with pytest.raises(SuiteError, match=r"the cached demo weights .* do not match their manifest's sha256 .*"
                                         r"delete .* to train the demo model again"):
        demo_weights(tmp_path)


@pytest.mark.slow
def test_an_onnx_of_another_model_is_recorded_by_its_own_sha256(tmp_path, tmp_cfg):
    """``--onnx`` of a model without our manifest, beside ``--weights`` of another: the INT8 manifest's source is
    the ONNX file and its sha256, and a ``--calibration-data`` file is recorded by its own too."""
    import numpy as np

    from quantization.registry import quantizer_class
    from quantization.workflow import prepare, run_toolchain
    from utils.models import build_architecture

    if quantizer_class("ort").unavailable_reason():
        pytest.skip(quantizer_class("ort").unavailable_reason())
    weights = tmp_path / "w.pth"
    torch.save(build_architecture("resnet20", 10).state_dict(), weights)
    tmp_cfg.model.arch, tmp_cfg.model.weights, tmp_cfg.calibration.size = "resnet20", str(weights), 16
    prepared = prepare(tmp_cfg)
    own, *_ = run_toolchain("ort", tmp_cfg, prepared)  # an FP32 ONNX, copied without its manifest
    other = tmp_path / "other.onnx"
    shutil.copyfile(own.path, other)
    calibration = tmp_path / "calib.npz"
    np.savez(calibration, input=prepared.calibration.as_array()[:8])
    tmp_cfg.onnx.onnx_path, tmp_cfg.onnx.calibration_data = str(other), str(calibration)
    fp32, int8, *_ = run_toolchain("ort", tmp_cfg, prepared)
    for artifact in (fp32, int8):
        assert artifact.manifest["source_weights"] == str(other)
        assert artifact.manifest["source_weights_sha256"] == sha256_file(other) != sha256_file(weights)
    assert load_artifact(int8.path).manifest["calibration_data_sha256"] == sha256_file(calibration)
