import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from utils.config import CalibrationConfig, DataConfig
from utils.data import calibration_set, load_splits
from utils.errors import SuiteError


def test_demo_split_is_disjoint_and_calibration_seeded():
    splits = load_splits(DataConfig(), CalibrationConfig())
    assert len(splits.evaluation) + len(splits.calibration_pool) == 1797
    assert not set(splits.calibration_pool_ids) & set(splits.evaluation_ids)
    a = calibration_set(splits, CalibrationConfig(size=50, seed=1))
    b = calibration_set(splits, CalibrationConfig(size=50, seed=1))
    c = calibration_set(splits, CalibrationConfig(size=50, seed=2))
    assert a.ids == b.ids and a.ids != c.ids and len(a.ids) == 50
    assert a.as_array().shape == (50, 3, 32, 32)


def test_calibration_larger_than_pool_is_refused():
    splits = load_splits(DataConfig(), CalibrationConfig())
    with pytest.raises(SuiteError, match="larger than"):
        calibration_set(splits, CalibrationConfig(size=100_000))


def _write_images(folder: Path, n: int, color: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img_{color}_{i}.png"
        Image.new("RGB", (40, 30), (color, i * 10 % 255, 0)).save(path)
        paths.append(path)
    return paths


def test_imagenet_class_folders_split_head_calibrates(tmp_path: Path):
    _write_images(tmp_path / "n01" , 6, 10)
    _write_images(tmp_path / "n02", 6, 200)
    cfg = DataConfig(dataset="imagenet", root=str(tmp_path), image_size=24, resize=28)
    splits = load_splits(cfg, CalibrationConfig(size=4, seed=0))
    assert len(splits.calibration_pool) == 4 and len(splits.evaluation) == 8
    assert not set(splits.calibration_pool_ids) & set(splits.evaluation_ids)
    image, label = splits.evaluation[0]
    assert tuple(image.shape) == (3, 24, 24) and label in (0, 1)
    assert splits.class_names == ["n01", "n02"]


def test_imagenet_labels_tsv_layout_follows_row_order(tmp_path: Path):
    paths = _write_images(tmp_path / "images", 5, 50)
    (tmp_path / "labels.tsv").write_text("".join(f"{p.name}\t{i % 3}\n" for i, p in enumerate(paths)))
    splits = load_splits(DataConfig(dataset="imagenet", root=str(tmp_path), image_size=16),
                         CalibrationConfig(size=2, seed=0))
    perm = np.random.default_rng(0).permutation(5)
    assert splits.calibration_pool_ids == [paths[i].name for i in perm[:2]]
    assert splits.evaluation_ids == [paths[i].name for i in perm[2:]]


def test_empty_or_missing_folder_and_corrupt_image(tmp_path: Path):
    with pytest.raises(SuiteError, match="no images"):
        load_splits(DataConfig(dataset="imagenet", root=str(tmp_path)), CalibrationConfig(size=1))
    with pytest.raises(SuiteError, match="not found"):
        load_splits(DataConfig(dataset="imagenet", root=str(tmp_path / "nope")), CalibrationConfig(size=1))
    bad = tmp_path / "c" / "bad.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"not a jpeg")
    from utils.data import FileImageDataset, image_transform

    with pytest.raises(SuiteError, match="cannot read image .*bad.jpg"):
        FileImageDataset([bad], [0], image_transform(DataConfig()))[0]


def test_calibration_size_leaving_no_evaluation_images(tmp_path: Path):
    _write_images(tmp_path / "a", 3, 1)
    with pytest.raises(SuiteError, match="leaves no evaluation images"):
        load_splits(DataConfig(dataset="imagenet", root=str(tmp_path)), CalibrationConfig(size=3))


def test_cifar10_python_batches(tmp_path: Path):
    rng = np.random.default_rng(0)
    for name, n in (("data_batch_1", 20), ("data_batch_2", 20), ("test_batch", 10)):
        batch = {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        with open(tmp_path / name, "wb") as handle:
            pickle.dump(batch, handle)
    with open(tmp_path / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, handle)
    splits = load_splits(DataConfig(dataset="cifar10", root=str(tmp_path)), CalibrationConfig(size=8))
    assert len(splits.calibration_pool) == 40 and len(splits.evaluation) == 10
    assert splits.class_names[3] == "c3"
    assert tuple(splits.evaluation[0][0].shape) == (3, 32, 32)


@pytest.mark.assets
def test_cifar10_npz_of_the_shared_assets(cifar_assets: Path):
    splits = load_splits(DataConfig(dataset="cifar10", root=str(cifar_assets), limit=100), CalibrationConfig(size=16))
    assert len(splits.evaluation) == 100 and len(splits.calibration_pool) == 5000


class _Payload:
    """A CIFAR batch as an attacker would write it: unpickling runs ``touch`` through __reduce__."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_cifar_batch_with_code_in_it_is_refused_and_never_runs(tmp_path: Path):
    marker = tmp_path / "payload-ran"
    root = tmp_path / "cifar"
    root.mkdir()
    good = {b"data": np.zeros((10, 3072), np.uint8), b"labels": list(range(10))}
    for name in ("data_batch_1", "test_batch"):
        with open(root / name, "wb") as handle:
            pickle.dump(good if name == "data_batch_1" else {**good, b"labels": _Payload(marker)}, handle)
    with pytest.raises(SuiteError, match="refused to load global (posix|os).system"):
        load_splits(DataConfig(dataset="cifar10", root=str(root)), CalibrationConfig(size=4))
    assert not marker.exists()


@pytest.mark.assets
def test_limit_takes_a_seeded_class_stratified_subset(cifar_assets: Path):
    """The shared npz files are sorted by class: the first 1,000 test images are all class 0."""
    splits = load_splits(DataConfig(dataset="cifar10", root=str(cifar_assets), limit=1000), CalibrationConfig(seed=0))
    labels = [int(splits.evaluation[i][1]) for i in range(len(splits.evaluation))]
    assert len(labels) == 1000 and np.bincount(labels, minlength=10).tolist() == [100] * 10
    again = load_splits(DataConfig(dataset="cifar10", root=str(cifar_assets), limit=1000), CalibrationConfig(seed=0))
    other = load_splits(DataConfig(dataset="cifar10", root=str(cifar_assets), limit=1000), CalibrationConfig(seed=1))
    assert again.evaluation_ids == splits.evaluation_ids != other.evaluation_ids
    assert "stratified" in splits.subset
