"""Calibration sweep mapping, per-layer sensitivity and accuracy-aware fallback."""
import hashlib

import numpy as np
import pytest

from evaluation.accuracy_recovery import heldout_slice, recover, sqnr_db
from quantization.run_config import RunConfig
from quantization.sweep import sweep_configs
from quantization.workflow import make_quantizer, prepare
from tests.conftest import resnet20_per_tensor_minmax_cfg


def test_sweep_maps_each_toolchain_and_lists_the_rest():
    cfg = RunConfig()
    cfg.tuning.calibrations = ["minmax", "entropy", "mse", "percentile"]
    cfg.tuning.granularities = ["per_tensor", "per_channel"]
    fx, fx_skipped = sweep_configs("torch_fx", cfg)
    assert {(c.torch.observer, c.torch.granularity) for c in fx} == {
        (o, g) for o in ("minmax", "histogram", "percentile") for g in ("per_tensor", "per_channel")}
    assert any("entropy" in label and "KL" in why for label, why in fx_skipped)
    mo, mo_skipped = sweep_configs("modelopt", cfg)
    assert {c.modelopt.calibration_method for c in mo} == {"max", "entropy"}
    assert len(mo_skipped) == 4 + 2  # percentile, mse x 2 granularities; per_tensor x minmax, entropy
    ort, _ = sweep_configs("ort", cfg)
    assert len(ort) == 6
    plain, none = sweep_configs("torch_fx", RunConfig())
    assert len(plain) == 1 and not none


def test_sqnr():
    import numpy as np

    ref = np.ones((4, 10))
    assert sqnr_db(ref, ref) == float("inf")
    assert sqnr_db(ref, ref * 1.1) == pytest.approx(20.0)


def test_heldout_slice_never_uses_evaluation_or_calibration_images():
    cfg = RunConfig()
    cfg.calibration.size = 100
    prepared = prepare(cfg)
    data = heldout_slice(prepared.splits, prepared.calibration.ids, 200)
    assert len(data.labels) == 200 and "outside the calibration sample" in data.source

    def digests(dataset):  # image contents: a held-out image equal to one of these would be a leak
        return {hashlib.sha256(dataset[i][0].numpy().astype(np.float32).tobytes()).hexdigest()
                for i in range(len(dataset))}

    held = {hashlib.sha256(image.tobytes()).hexdigest() for image in data.images}
    assert len(held) == 200  # distinct images, so the checks below compare 200 images, not one
    assert not held & digests(prepared.splits.evaluation)
    assert not held & digests(prepared.calibration.dataset)


@pytest.mark.slow
@pytest.mark.assets
def test_fallback_on_a_cifar_resnet_per_tensor_minmax(tmp_path):
    cfg = resnet20_per_tensor_minmax_cfg(tmp_path, calibration_size=128)
    prepared = prepare(cfg)
    quantizer = make_quantizer("torch_fx", cfg)
    fp32 = quantizer.export_fp32(prepared.model)
    result = recover("torch_fx", quantizer, prepared, fp32, sensitivity=True, max_drop=0.5, budget=4, heldout_size=300)
    layers = quantizer.quantizable_layers(prepared.model)
    assert sorted(r["layer"] for r in result.ranking) == sorted(layers) and len(layers) == 20
    fb = result.fallback
    assert fb["kept_float"] == [r["layer"] for r in result.ranking[:len(fb["kept_float"])]]
    assert fb["reached"] or len(fb["kept_float"]) == 4
    if fb["kept_float"]:
        assert result.artifact.manifest["settings"]["float_layers"] == fb["kept_float"]
        assert result.artifact.path.parent == tmp_path / "torch"
        assert fb["history"][-1]["drop_pp"] < fb["history"][0]["drop_pp"]
    written = sorted(p.name for p in (tmp_path / "torch").glob("*.pt"))
    assert len(written) == (2 if fb["kept_float"] else 1), written  # FP32 (+ the fallback); trials stay in scratch
