from pathlib import Path

import pytest
import torch

from utils.config import ModelConfig
from utils.errors import SuiteError
from utils.models import build_architecture, load_model


def test_cifar_resnet_checkpoint_wrapper_and_prefix(tmp_path: Path):
    reference = build_architecture("resnet20", 10)
    path = tmp_path / "ckpt.th"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}, "best_prec1": 90.0}, path)
    loaded = load_model(ModelConfig(arch="resnet20", weights=str(path)))
    x = torch.randn(2, 3, 32, 32)
    reference.eval()
    assert torch.equal(loaded.module(x), reference(x))
    assert loaded.num_classes == 10 and loaded.input_shape == (3, 32, 32)


def test_num_classes_replaces_the_torchvision_head(tmp_path: Path):
    finetuned = build_architecture("resnet18", 10)
    path = tmp_path / "r18_10.pth"
    torch.save(finetuned.state_dict(), path)
    loaded = load_model(ModelConfig(arch="resnet18", weights=str(path), num_classes=10))
    assert loaded.module.fc.out_features == 10
    inferred = load_model(ModelConfig(arch="resnet18", weights=str(path)))
    assert inferred.num_classes == 10


def test_architecture_mismatch_is_one_line(tmp_path: Path):
    path = tmp_path / "r20.pth"
    torch.save(build_architecture("resnet20", 10).state_dict(), path)
    with pytest.raises(SuiteError, match="do not match architecture resnet32") as info:
        load_model(ModelConfig(arch="resnet32", weights=str(path)))
    assert "\n" not in str(info.value)
    with pytest.raises(SuiteError, match="shape mismatches"):
        load_model(ModelConfig(arch="resnet20", weights=str(path), num_classes=100))


def test_missing_corrupt_and_unsafe_weights(tmp_path: Path):
    with pytest.raises(SuiteError, match="not found"):
        load_model(ModelConfig(arch="resnet20", weights=str(tmp_path / "nope.pth")))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(SuiteError, match="not a readable PyTorch weights file"):
        load_model(ModelConfig(arch="resnet20", weights=str(corrupt)))
    pickled = tmp_path / "module.pth"
    torch.save(build_architecture("resnet20", 10), pickled)  # a whole pickled module, not tensors
    with pytest.raises(SuiteError, match="weights_only"):
        load_model(ModelConfig(arch="resnet20", weights=str(pickled)))
    trusted = load_model(ModelConfig(arch="resnet20", weights=str(pickled), allow_unsafe_load=True))
    assert trusted.num_classes == 10


def test_unknown_architecture():
    with pytest.raises(SuiteError, match="unknown architecture"):
        build_architecture("resnet_does_not_exist", 10)


def test_torchvision_registry_covers_classifiers():
    for arch in ("resnet50", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny"):
        assert build_architecture(arch, 7)(torch.randn(1, 3, 64, 64)).shape == (1, 7)


def test_same_padding_convs_become_plain_convs_with_the_same_function():
    import copy

    import torch

    from utils.models import build_architecture, plain_same_padding_convs
    from utils.packages import has_module

    if not has_module("efficientnet_lite_pytorch"):
        pytest.skip("needs efficientnet-lite-pytorch (requirements/extras.txt)")
    model = build_architecture("efficientnet_lite0", 10).eval()
    plain = copy.deepcopy(model)
    assert plain_same_padding_convs(plain) == 49
    assert all(type(m) is torch.nn.Conv2d for m in plain.modules() if isinstance(m, torch.nn.Conv2d))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(plain(x), model(x), atol=1e-6)


def test_random_bytes_after_a_pickle_magic_are_never_offered_to_unpickle(tmp_path):
    """A file starting with 0x80 is not a checkpoint: the error must not suggest --allow-unsafe-load."""
    import numpy as np

    from utils.errors import SuiteError
    from utils.models import read_state_dict

    path = tmp_path / "x.pth"
    path.write_bytes(b"\x80\x02" + np.random.default_rng(0).bytes(4096))
    for unsafe in (False, True):
        with pytest.raises(SuiteError, match="not a readable PyTorch weights file") as info:
            read_state_dict(path, unsafe)
        assert "allow-unsafe-load" not in str(info.value) and "weights_only" not in str(info.value)


@pytest.mark.slow
def test_the_same_padding_rewrite_is_recorded_in_the_manifest_not_in_the_name(tmp_path):
    from quantization.registry import quantizer_class
    from quantization.run_config import RunConfig
    from utils.artifacts import load_artifact
    from utils.models import SAME_PADDING_CONVS
    from utils.packages import has_module

    assert load_model(ModelConfig(arch="resnet20")).graph_rewrites == []  # nothing to rewrite: nothing recorded
    if not has_module("efficientnet_lite_pytorch"):
        pytest.skip("needs efficientnet-lite-pytorch (requirements/extras.txt)")
    model = load_model(ModelConfig(arch="efficientnet_lite0"), 10)
    assert model.graph_rewrites == [SAME_PADDING_CONVS] and model.transforms == []
    cfg = RunConfig()
    cfg.models_dir = str(tmp_path)
    fp32 = quantizer_class("torch_fx")(cfg).export_fp32(model)
    assert load_artifact(fp32.path).manifest["graph_rewrites"] == [SAME_PADDING_CONVS]
    assert fp32.path.name == f"efficientnet_lite0-{model.weights_path.stem if model.weights_path else 'random'}_fp32.pt"
