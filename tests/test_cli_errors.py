"""Bad input: one line on stderr, exit code 2, no traceback, no partial artifact."""
from pathlib import Path

import pytest
import torch

from tests.conftest import run_script
from utils.models import build_architecture

PTQ = "quantization/Torch/torch_PTQ.py"


def _assert_clean_failure(result, models_dir: Path, message: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    leftovers = [p for p in models_dir.rglob("*") if p.is_file() and (".tmp" in p.name or "_fx_" in p.name)]
    assert leftovers == []


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


def _ptq(models_dir: Path, *args: str):
    return run_script(PTQ, "--models-dir", str(models_dir), "--calib-size", "16", *args)


def test_missing_weights_file(tmp_path: Path, models_dir: Path):
    result = _ptq(models_dir, "--arch", "resnet20", "--weights", str(tmp_path / "missing.pth"))
    _assert_clean_failure(result, models_dir, "weights file not found")


def test_corrupt_weights_file(tmp_path: Path, models_dir: Path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    result = _ptq(models_dir, "--arch", "resnet20", "--weights", str(bad))
    _assert_clean_failure(result, models_dir, "not a readable PyTorch weights file")


def test_architecture_that_does_not_match_the_weights(tmp_path: Path, models_dir: Path):
    path = tmp_path / "r20.pth"
    torch.save(build_architecture("resnet20", 10).state_dict(), path)
    result = _ptq(models_dir, "--arch", "resnet44", "--weights", str(path))
    _assert_clean_failure(result, models_dir, "do not match architecture resnet44")


def test_empty_dataset_folder(tmp_path: Path, models_dir: Path):
    (tmp_path / "empty").mkdir()
    result = _ptq(models_dir, "--dataset", "imagenet", "--data-root", str(tmp_path / "empty"), "--arch", "resnet18")
    _assert_clean_failure(result, models_dir, "no images found")


def test_unreadable_dataset_images(tmp_path: Path, models_dir: Path):
    folder = tmp_path / "data" / "n0"
    folder.mkdir(parents=True)
    for i in range(20):
        (folder / f"{i}.jpg").write_bytes(f"not an image {i}".encode())  # distinct: equal bytes are an overlap
    result = _ptq(models_dir, "--dataset", "imagenet", "--data-root", str(tmp_path / "data"), "--arch", "resnet18",
                  "--image-size", "32")
    _assert_clean_failure(result, models_dir, "cannot read image")


def test_calibration_larger_than_the_dataset(models_dir: Path):
    result = run_script(PTQ, "--models-dir", str(models_dir), "--calib-size", "5000")
    _assert_clean_failure(result, models_dir, "larger than the")


def test_help_documents_every_option():
    for script in (PTQ, "evaluation/comprehensive_evaluation_torch_int8.py"):
        result = run_script(script, "--help")
        assert result.returncode == 0
        for flag in ("--config", "--arch", "--weights", "--num-classes", "--dataset", "--data-root", "--calib-size",
                     "--calib-seed", "--mode", "--backend", "--granularity", "--observer", "--reduce-range"):
            assert flag in result.stdout, f"{script} --help lacks {flag}"


@pytest.mark.parametrize("script, flag, value, key", [
    (PTQ, "--calib-size", "0", "calibration.size"), (PTQ, "--batch-size", "0", "data.batch_size"),
    (PTQ, "--num-classes", "-3", "model.num_classes"),
    ("evaluation/comprehensive_evaluation_torch_int8.py", "--bench-batch-sizes", "0", "benchmark.batch_sizes")])
def test_non_positive_numbers_are_one_line_before_any_work(models_dir: Path, script: str, flag: str, value: str,
                                                           key: str):
    result = run_script(script, "--models-dir", str(models_dir), flag, value)
    _assert_clean_failure(result, models_dir, f"config key '{key}' must be positive")
    assert not models_dir.exists()  # nothing written: the config is checked before the FP32 export


@pytest.mark.slow
def test_evaluating_an_artifact_of_another_model_is_refused(tmp_path: Path, models_dir: Path):
    """A resnet20 INT8 artifact compared with a resnet32 FP32 model once reported 'drop 34.38 pp'."""
    assert _ptq(models_dir, "--arch", "resnet20", "--dataset", "demo", "--num-classes", "10").returncode == 0
    (artifact,) = [p for p in models_dir.rglob("*_fx_*.pt")]
    result = run_script("evaluation/comprehensive_evaluation_torch_int8.py", "--arch", "resnet32",
                        "--num-classes", "10", "--artifact", str(artifact), "--models-dir", str(models_dir),
                        "--results-dir", str(tmp_path / "results"), "--calib-size", "16")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "made from architecture resnet20, not resnet32" in last and "--allow-model-mismatch" in last
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("args", [["--observer", "kl"], ["--no-such-flag"], ["--calib-size", "many"]])
def test_usage_errors_are_one_line_pointing_to_help(models_dir: Path, args: list[str]):
    result = run_script(PTQ, "--models-dir", str(models_dir), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--help" in lines[0], result.stderr


def test_verbose_shows_the_cause_of_an_error(models_dir: Path, tmp_path: Path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"\x80\x02" + bytes(64))
    quiet = _ptq(models_dir, "--arch", "resnet20", "--weights", str(weights))
    loud = _ptq(models_dir, "--arch", "resnet20", "--weights", str(weights), "-v")
    assert quiet.returncode == loud.returncode == 2
    assert "Traceback" not in quiet.stderr and "Traceback" in loud.stderr
    assert loud.stderr.strip().splitlines()[-1] == quiet.stderr.strip().splitlines()[-1]
    # -v keeps the cause chain: the original exception, not only the SuiteError that wraps it
    assert "UnpicklingError" in loud.stderr and "direct cause of the following exception" in loud.stderr
    assert "UnpicklingError" not in quiet.stderr
    assert [line for line in quiet.stderr.splitlines() if line.startswith("error:")] == \
        [quiet.stderr.strip().splitlines()[-1]]


def test_a_corrupt_calibration_image_fails_before_anything_is_written(tmp_path: Path, models_dir: Path):
    from PIL import Image

    root = tmp_path / "imgs"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (40, 40), (40 * i, 10, 200)).save(root / cls / f"{i}.png")
    calib = tmp_path / "calib"
    (calib / "a").mkdir(parents=True)
    (calib / "b").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(calib / "a" / "ok.png")
    (calib / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    result = run_script(PTQ, "--models-dir", str(models_dir), "--arch", "resnet18", "--dataset", "imagenet",
                        "--data-root", str(root), "--calib-root", str(calib), "--calib-size", "2",
                        "--image-size", "32", "--resize", "36")
    _assert_clean_failure(result, models_dir, "cannot read image")
    assert not models_dir.exists() or not [p for p in models_dir.rglob("*") if p.is_file()]


def test_a_file_where_an_output_folder_belongs_is_one_line_before_any_work(tmp_path: Path):
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    models = tmp_path / "models"
    result = run_script("-m", "resnet.run", "--toolchains", "torch_fx", "--models-dir", str(models),
                        "--results-dir", str(blocker / "run"), "--calib-size", "16")
    _assert_clean_failure(result, models, f"--results-dir {blocker / 'run'}: {blocker} is a file, not a folder")
    assert not models.exists()  # refused before the FP32 export, not after the evaluation


@pytest.mark.parametrize("args, message", [
    (["--toolchains", "nope"], "unknown toolchain 'nope'"),
    (["--runtimes", "onnxruntime,nope"], "unknown runtime 'nope'"),
    (["--dataset", "cifar10", "--data-root", "CIFAR", "--calib-root", "CIFAR"], "--calib-root applies to --dataset "
                                                                             "imagenet only")])
def test_unknown_names_and_ignored_options_are_one_line_before_any_work(tmp_path: Path, args, message):
    import numpy as np

    cifar = tmp_path / "cifar"
    cifar.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("test.npz", 10), ("train.npz", 20)):
        np.savez(cifar / name, x=rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8), y=np.arange(n) % 10)
    models = tmp_path / "models"
    args = [str(cifar) if a == "CIFAR" else a for a in args]
    result = run_script("-m", "resnet.run", *args, "--models-dir", str(models), "--results-dir",
                        str(tmp_path / "r"), "--calib-size", "8")
    _assert_clean_failure(result, models, message)
    assert not models.exists()


def test_cifar_train_equal_to_test_and_an_artifact_folder_are_refused(tmp_path: Path):
    import numpy as np

    from utils.artifacts import load_artifact
    from utils.config import CalibrationConfig, DataConfig
    from utils.data import load_splits
    from utils.errors import SuiteError

    x = np.random.default_rng(0).integers(0, 255, (20, 32, 32, 3), dtype=np.uint8)
    for name in ("test.npz", "train.npz"):
        np.savez(tmp_path / name, x=x, y=np.arange(20) % 10)
    with pytest.raises(SuiteError, match="hold the same images"):
        load_splits(DataConfig(dataset="cifar10", root=str(tmp_path)), CalibrationConfig(size=4))
    with pytest.raises(SuiteError, match="is a folder, not an artifact file"):
        load_artifact(tmp_path)
