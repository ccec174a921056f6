"""Issue #30, points 4 and 5: inputs checked at the door, before any work, so that no broken INT8 model and no
confident wrong report comes out of bad calibration arrays, wrongly encoded datasets or configs."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_script
from tests.test_reliability_boundary import png_header
from utils.errors import SuiteError


@pytest.fixture
def demo_cfg(tmp_cfg):
    tmp_cfg.model.arch, tmp_cfg.model.num_classes, tmp_cfg.calibration.size = "resnet20", 10, 16
    return tmp_cfg


def _evaluation_images(cfg) -> np.ndarray:
    from utils.data import load_splits

    splits = load_splits(cfg.data, cfg.calibration)
    return splits.evaluation.images[:8].numpy()


def _calibration_arrays(case: str, cfg) -> dict[str, np.ndarray]:
    good = _evaluation_images(cfg) * 0.5  # in the normalised range, and not an evaluation image
    if case == "nan":
        good[0, 0, 0, 0] = np.nan
    elif case == "inf":
        good[3, 1, 5, 5] = np.inf
    elif case == "uint8 pixels":
        return {"input": np.random.default_rng(0).integers(0, 256, good.shape, dtype=np.uint8)}
    elif case == "0..255 as float":
        return {"input": np.random.default_rng(0).uniform(0, 255, good.shape).astype(np.float32)}
    elif case == "float64":
        return {"input": good.astype(np.float64)}
    elif case == "one channel":
        return {"input": good[:, :1]}
    elif case == "channels last":
        return {"input": np.ascontiguousarray(good.transpose(0, 2, 3, 1))}
    elif case == "evaluation images":
        return {"input": _evaluation_images(cfg)}
    elif case == "wrong name":
        return {"images": good}
    return {"input": good}


CALIBRATION_CASES = {"nan": "1 NaN or infinite values", "inf": "1 NaN or infinite values",
                     "uint8 pixels": "is uint8, not float32: raw 0..255 pixels?", "float64": "is float64, not float32",
                     "0..255 as float": "outside the normalised pixel range", "one channel": "the model takes N x 3 x 32 x 32",
                     "channels last": "the model takes N x 3 x 32 x 32",
                     "evaluation images": "8 calibration images have the content of evaluation images",
                     "wrong name": "do not match the model's inputs ['input']"}


@pytest.mark.parametrize("case", CALIBRATION_CASES)
def test_calibration_arrays_are_checked_before_any_work(tmp_path, demo_cfg, case):
    from quantization.workflow import prepare

    data = tmp_path / "calib.npz"
    np.savez(data, **_calibration_arrays(case, demo_cfg))
    demo_cfg.onnx.calibration_data = str(data)
    with pytest.raises(SuiteError, match=CALIBRATION_CASES[case].replace("[", r"\[").replace("]", r"\]")):
        prepare(demo_cfg)
    assert not Path(demo_cfg.models_dir).exists()


def test_good_calibration_arrays_and_allowed_overlap_pass(tmp_path, demo_cfg):
    from quantization.workflow import prepare

    data = tmp_path / "calib.npz"
    for case, allow in (("good", False), ("evaluation images", True)):
        np.savez(data, **_calibration_arrays(case, demo_cfg))
        demo_cfg.onnx.calibration_data, demo_cfg.data.allow_overlap = str(data), allow
        prepare(demo_cfg)


@pytest.mark.slow
def test_a_nan_in_calibration_data_is_one_line_exit_2_through_the_cli(tmp_path, demo_cfg):
    """The issue's case: one NaN used to collapse 20 of 22 activation scales and exit 0."""
    data = tmp_path / "nan.npz"
    np.savez(data, **_calibration_arrays("nan", demo_cfg))
    models = tmp_path / "m"
    result = run_script("quantization/ModelOpt/ModelOpt_PTQ.py", "--arch", "resnet20", "--num-classes", "10",
                        "--calibration-data", str(data), "--calib-size", "16", "--models-dir", str(models))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "NaN or infinite" in result.stderr.strip().splitlines()[-1]
    assert not models.exists()  # refused before the FP32 export


# ------------------------------------------------------------------------------ CIFAR arrays
def _cifar(root: Path, x_test, y_test, x_train=None, y_train=None) -> Path:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    x_train = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8) if x_train is None else x_train
    np.savez(root / "test.npz", x=x_test, y=y_test)
    np.savez(root / "train.npz", x=x_train, y=np.arange(len(x_train)) % 10 if y_train is None else y_train)
    return root


def _splits(root: Path):
    from utils.config import CalibrationConfig, DataConfig
    from utils.data import load_splits

    return load_splits(DataConfig(dataset="cifar10", root=str(root)), CalibrationConfig(size=4))


def test_cifar_float_pixels_in_0_1_are_not_divided_by_255_again(tmp_path):
    """The issue's case: float32 pixels in [0, 1] were divided by 255 again (FP32 = INT8 = 9.4 %)."""
    x = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    as_uint8 = _splits(_cifar(tmp_path / "u8", x, np.arange(20) % 10)).evaluation.images
    as_float = _splits(_cifar(tmp_path / "f32", x.astype(np.float32) / 255, np.arange(20) % 10)).evaluation.images
    assert as_float.std() > 0.5 and np.allclose(as_float.numpy(), as_uint8.numpy(), atol=1e-5)


@pytest.mark.parametrize("x, y, message", [
    (None, np.r_[-1, np.arange(19) % 10], "label -1 is not a class index in [0, 9]"),
    (None, np.r_[10, np.arange(19) % 10], "label 10 is not a class index in [0, 9]"),
    (None, np.arange(15) % 10, "20 images but 15 labels"),
    (None, np.arange(20) % 10 + 0.5, "labels must be integers"),
    (np.full((20, 32, 32, 3), 7.0, np.float32), None, "float pixels must be finite and in [0, 1]"),
    (np.zeros((20, 3, 32, 32), np.uint8), None, "expected [32, 32, 3]"),
])
def test_wrongly_encoded_cifar_arrays_are_refused_before_any_work(tmp_path, x, y, message):
    x = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8) if x is None else x
    root = _cifar(tmp_path, x, np.arange(20) % 10 if y is None else y)
    with pytest.raises(SuiteError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _splits(root)


# ------------------------------------------------------------------------------ image files
def test_a_16_bit_png_is_scaled_not_clipped_to_white(tmp_path):
    from PIL import Image

    from utils.data import FileImageDataset, file_tensor, stretch_preprocess

    values = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472
    Image.fromarray(values).save(tmp_path / "deep.png")
    Image.fromarray(np.round(values / 257).astype(np.uint8)).save(tmp_path / "eight.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    pre = stretch_preprocess("RGB", 32, (0.5,) * 3, (0.5,) * 3)
    deep, eight = file_tensor(tmp_path / "deep.png", pre), file_tensor(tmp_path / "eight.png", pre)
    assert np.allclose(deep.numpy(), eight.numpy()) and deep.mean() < 0.5  # clipped, it was white: all 1.0
    dataset = FileImageDataset([tmp_path / "deep.png"], [0], lambda image: np.asarray(image))
    assert dataset[0][0].max() == 255 and dataset[0][0].min() == 0


def test_a_decompression_bomb_is_one_line_naming_the_file(tmp_path):
    from utils.data import FileImageDataset

    (tmp_path / "bomb.png").write_bytes(png_header(30000, 30000))
    dataset = FileImageDataset([tmp_path / "bomb.png"], [0], lambda image: image)
    with pytest.raises(SuiteError, match=r"cannot read image .*bomb\.png: .*decompression bomb"):
        dataset[0]


@pytest.mark.parametrize("content, message", [(b"a.png\t-1\n", "class index -1 is negative"),
                                              (b"caf\xe9.png\t1\n", "is not UTF-8 text")])
def test_labels_tsv_with_a_negative_label_or_latin1_bytes_is_one_line(tmp_path, content, message):
    from utils.data import list_image_folder

    (tmp_path / "images").mkdir()
    (tmp_path / "labels.tsv").write_bytes(content)
    with pytest.raises(SuiteError, match=message):
        list_image_folder(tmp_path)


# ------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("overrides, key", [({"data.mean": [math.nan, 0.5, 0.5]}, "data.mean"),
                                            ({"torch.percentile": math.inf}, "torch.percentile"),
                                            ({"tensorrt.workspace_gib": -math.inf}, "tensorrt.workspace_gib")])
def test_config_values_must_be_finite(overrides, key):
    from quantization.run_config import load_config

    with pytest.raises(SuiteError, match=f"config key '{key}' must be a finite number"):
        load_config(None, overrides)


def test_yaml_nan_inf_duplicate_keys_huge_seeds_and_latin1_are_one_line(tmp_path):
    from quantization.run_config import load_config

    cases = {"data:\n  std: [.nan, 0.2, 0.2]\n": "must be a finite number",
             "benchmark:\n  warmup: .inf\n": "'benchmark.warmup' must be",
             "calibration:\n  size: 64\ncalibration:\n  seed: 3\n": "duplicate key 'calibration'",
             "calibration:\n  size: 64\n  size: 8\n": "duplicate key 'size'",
             "calibration:\n  seed: 100000000000000000000\n": "must be below 2\\*\\*32"}
    for text, message in cases.items():
        path = tmp_path / "c.yaml"
        path.write_text(text)
        with pytest.raises(SuiteError, match=message):
            load_config(path)
    path.write_bytes(b"model:\n  arch: caf\xe9\n")
    with pytest.raises(SuiteError, match="is not UTF-8 text"):
        load_config(path)


@pytest.mark.parametrize("overrides, message", [({"torch.percentile": 150.0}, "'torch.percentile' must be at most 100"),
                                                ({"ort.exclude_nodes": ["conv(("]}, "'conv\\(\\(' is not a regex"),
                                                ({"modelopt.exclude_nodes": ["["]}, "is not a regex")])
def test_values_refused_only_after_the_fp32_export_are_refused_with_the_config(overrides, message):
    from quantization.run_config import load_config

    with pytest.raises(SuiteError, match=message):
        load_config(None, overrides)


@pytest.mark.parametrize("damage, message", [("nan", "conv1.weight holds NaN or infinite values"),
                                             ("negative variance", "bn1.running_var holds a negative BatchNorm variance")])
def test_weights_that_cannot_make_a_model_are_refused_when_loaded(tmp_path, damage, message):
    from utils.models import build_architecture, load_weights

    state = build_architecture("resnet20", 10).state_dict()
    if damage == "nan":
        state["conv1.weight"][0, 0, 0, 0] = float("nan")
    else:
        state["bn1.running_var"][3] = -1.0
    with pytest.raises(SuiteError, match=message):
        load_weights(build_architecture("resnet20", 10), state, "resnet20", tmp_path / "w.pth")


# ------------------------------------------------------------------------------ flags that were ignored
def test_flags_the_dataset_ignored_are_refused(tmp_path):
    from utils.config import CalibrationConfig, DataConfig
    from utils.data import load_splits

    root = _cifar(tmp_path / "c", np.zeros((20, 32, 32, 3), np.uint8) + np.arange(20, dtype=np.uint8)[:, None, None, None],
                  np.arange(20) % 10)
    with pytest.raises(SuiteError, match="--image-size and --resize apply to --dataset imagenet and demo only"):
        load_splits(DataConfig(dataset="cifar10", root=str(root), image_size=64), CalibrationConfig(size=4))
    with pytest.raises(SuiteError, match="--calib-root applies to --dataset imagenet only"):
        load_splits(DataConfig(dataset="demo", calib_root=str(root)), CalibrationConfig(size=4))


@pytest.mark.parametrize("case, message", [("size 0", "--image-size and --resize must be positive"),
                                           ("inside", "is inside --input-dir"),
                                           ("same stem", "share the name 'x0'")])
def test_calib_images_refuses_what_it_would_get_wrong(tmp_path, case, message):
    from PIL import Image

    from resnet.calib_images import main

    source = tmp_path / "src"
    (source / "a").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (20, 20), (60 * i, 0, 0)).save(source / "a" / f"x{i}.png")
    if case == "same stem":
        Image.new("RGB", (20, 20), (0, 0, 90)).save(source / "a" / "x0.jpg")
    out = source / "calib" if case == "inside" else tmp_path / "calib"
    args = ["--input-dir", str(source), "--output-dir", str(out), "--num-images", "3" if case != "same stem" else "4",
            "--image-size", "0" if case == "size 0" else "16"]
    with pytest.raises(SuiteError, match=message):
        main(args)
    assert not out.exists()


def test_an_onnx_for_other_images_is_refused_before_any_work(tmp_path, demo_cfg):
    """--onnx of a model taking 3 x 16 x 16 images with the demo's 3 x 32 x 32 ones: was an ONNX Runtime
    InvalidArgument traceback in the middle of calibration."""
    import torch

    from quantization.workflow import prepare

    path = tmp_path / "small.onnx"
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 10)).eval()
    torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(path), input_names=["input"], dynamo=False)
    demo_cfg.onnx.onnx_path = str(path)
    with pytest.raises(SuiteError, match=r"--onnx small\.onnx takes input of N x 3 x 16 x 16, but the dataset's "
                                         r"images are 3 x 32 x 32"):
        prepare(demo_cfg)
    assert not Path(demo_cfg.models_dir).exists()
