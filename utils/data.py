"""Datasets, the evaluation split, and the seeded calibration sample.

Every toolchain calibrates on :func:`calibration_batches` of the same :class:`DataSplits`, and every
runtime is evaluated on the same evaluation split. Calibration images are always disjoint from the
evaluation images: they come from a training split (demo, CIFAR-10), a separate folder, or the head
of a seeded permutation whose tail is evaluated (ImageNet-style folder).

Registry:
- ``demo``: scikit-learn's 1,797 labelled 8x8 digits (ships inside the package, works offline),
  upscaled to 3x32x32; a seeded 60/40 train/test split.
- ``imagenet``: class folders (``root/<wnid>/*.JPEG``) or ``root/images`` + ``root/labels.tsv``
  (``file<TAB>class index``); Resize(256) + CenterCrop(224) + ImageNet mean/std by default.
- ``cifar10``: the python batches layout (``data_batch_1..5``, ``test_batch``) or the ``.npz`` pair
  ``test*.npz`` / ``train*.npz`` with ``x`` (NHWC uint8) and ``y``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from utils.artifacts import ids_sha256
from utils.config import CalibrationConfig, DataConfig
from utils.console import progress_disabled
from utils.errors import SuiteError, missing_package
from utils.input_checks import array_digests, check_labels, check_pixels, to_color

log = logging.getLogger(__name__)

DIGEST_CHARS = 16  # 64 bits of sha256 per image: no accidental collision in any dataset this suite reads
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm"}
DEMO_SPLIT_SEED = 20240601  # fixed: the demo model's cache depends on its training split
DEMO_TEST_FRACTION = 0.4


@dataclass
class DataSplits:
    """What a run needs from a dataset: a calibration pool, an evaluation set, and their ids."""

    name: str
    calibration_pool: Dataset
    evaluation: Dataset
    calibration_pool_ids: list[str]
    evaluation_ids: list[str]
    num_classes: int
    class_names: list[str]
    input_shape: tuple[int, int, int]
    train: Dataset | None = None  # where the dataset has a training split (demo, cifar10)
    preprocess: dict = field(default_factory=dict)  # how an image file becomes an input (see file_tensor)
    subset: str | None = None  # how the evaluation images were picked when not all are used (--limit)


class TensorDataset(Dataset):
    """Preprocessed images held in memory (small datasets: demo, CIFAR-10)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


class FileImageDataset(Dataset):
    """Image files decoded on access, so a 50,000-image folder never sits in memory."""

    def __init__(self, files: Sequence[Path], labels: Sequence[int], transform: Callable):
        self.files, self.labels, self.transform = list(files), list(labels), transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image, UnidentifiedImageError

        path = self.files[index]
        try:
            with Image.open(path) as image:
                tensor = self.transform(to_color(image, "RGB"))
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
            raise SuiteError(f"cannot read image {path}: {exc}") from exc
        return tensor, self.labels[index]


class SubsetDataset(Dataset):
    def __init__(self, base: Dataset, indices: Sequence[int]):
        self.base, self.indices = base, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.base[self.indices[index]]

    @property
    def labels(self) -> list[int]:
        base = dataset_labels(self.base)
        return [base[i] for i in self.indices]


def dataset_labels(dataset: Dataset) -> list[int]:
    """Every label of ``dataset`` without decoding an image (the suite's datasets all hold their labels)."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        raise SuiteError(f"{type(dataset).__name__} does not expose its labels")
    return [int(v) for v in labels]


def stratified_indices(labels: Sequence[int], count: int, seed: int) -> list[int]:
    """A seeded, class-stratified pick of ``count`` indices (sorted).

    Each class gets its share of ``count`` in proportion to its size (largest remainders round), drawn
    at random within the class: datasets stored sorted by class (the CIFAR-10 npz files) give every
    class its place instead of the first one or two."""
    labels = np.asarray(labels)
    if count >= len(labels):
        return list(range(len(labels)))
    rng = np.random.default_rng(seed)
    classes, sizes = np.unique(labels, return_counts=True)
    exact = sizes * count / len(labels)
    quota = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quota), kind="stable")[: count - quota.sum()]:
        quota[i] += 1
    picks: list[int] = []
    for cls, take in zip(classes, quota, strict=True):
        members = np.flatnonzero(labels == cls)
        picks.extend(rng.choice(members, take, replace=False).tolist())
    return sorted(int(i) for i in picks)


def _normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


# ------------------------------------------------------------------------------ preprocessing
def stretch_preprocess(color: str, size: int, mean: Sequence[float], std: Sequence[float]) -> dict:
    """Small-image datasets: the whole picture scaled to size x size (bilinear), then normalised."""
    return {"mode": "stretch", "color": color, "size": size, "mean": list(mean), "std": list(std)}


def file_tensor(path: Path, pre: dict) -> torch.Tensor:
    """An image file as a 1xCxHxW input, preprocessed as the dataset ``pre`` describes (a manifest's
    ``preprocess``), so a deployed artifact sees what it was calibrated and evaluated on."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = to_color(image, pre["color"])
            if pre["mode"] == "resize_crop":
                return resize_crop_transform(pre)(image).unsqueeze(0)
            pixels = np.asarray(image, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise SuiteError(f"{path}: not a readable image ({exc})") from exc
    x = torch.from_numpy(pixels)
    x = (x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)).unsqueeze(0)
    x = torch.nn.functional.interpolate(x, size=(pre["size"], pre["size"]), mode="bilinear", align_corners=False,
                                        antialias=x.shape[-1] > pre["size"])
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return _normalize(x, pre["mean"], pre["std"])


# ---------------------------------------------------------------------------------------- demo
def load_demo(cfg: DataConfig) -> DataSplits:
    """scikit-learn's digits: real labelled images that ship with the package (no download)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise missing_package("the demo dataset", "scikit-learn") from exc
    if cfg.calib_root:  # was ignored without a word
        raise SuiteError("--calib-root applies to --dataset imagenet only (the demo calibrates on its training split)")
    digits = load_digits()
    size = cfg.image_size or 32
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = _normalize(images.repeat(1, 3, 1, 1), cfg.mean or (0.5,) * 3, cfg.std or (0.5,) * 3)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    perm = np.random.default_rng(DEMO_SPLIT_SEED).permutation(len(labels))
    n_test = int(round(len(labels) * DEMO_TEST_FRACTION))
    test_idx, train_idx = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    train = TensorDataset(images[train_idx], labels[train_idx])
    test = TensorDataset(images[test_idx], labels[test_idx])
    return DataSplits(
        name="demo", calibration_pool=train, evaluation=test,
        calibration_pool_ids=[f"digits/{i}" for i in train_idx],
        evaluation_ids=[f"digits/{i}" for i in test_idx],
        num_classes=10, class_names=[str(i) for i in range(10)], input_shape=(3, size, size), train=train,
        preprocess=stretch_preprocess("L", size, cfg.mean or (0.5,) * 3, cfg.std or (0.5,) * 3),
    )


# ------------------------------------------------------------------------------------ cifar10
class _CifarUnpickler(pickle.Unpickler):
    """CIFAR-10 python batches hold dicts, lists, bytes, ints and numpy arrays only: any other global in the
    stream (``os.system`` in a crafted ``__reduce__``) is refused before it can run."""

    SAFE_GLOBALS = frozenset({("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                              ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                              ("numpy", "ndarray"), ("numpy", "dtype")})

    def find_class(self, module: str, name: str):
        if (module, name) in self.SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load global {module}.{name} (CIFAR-10 batches hold arrays, bytes, "
                                     "lists and dicts only; a crafted file can run code)")


def _read_cifar_batches(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    def unpickle(path: Path) -> dict:
        with open(path, "rb") as handle:
            try:
                return _CifarUnpickler(handle, encoding="bytes").load()
            except pickle.UnpicklingError as exc:
                raise SuiteError(f"{path}: {exc}") from exc

    train_files = sorted(root.glob("data_batch_*"))
    test_file = root / "test_batch"
    if not train_files or not test_file.is_file():
        raise SuiteError(f"{root}: no CIFAR-10 python batches (data_batch_1..5, test_batch) found")
    try:
        train = [unpickle(p) for p in train_files]
        test = unpickle(test_file)
    except (pickle.UnpicklingError, EOFError, OSError) as exc:
        raise SuiteError(f"{root}: unreadable CIFAR-10 batch: {exc}") from exc
    x_train = np.concatenate([b[b"data"] for b in train]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    y_train = np.concatenate([np.asarray(b[b"labels"]) for b in train])
    x_test = test[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    y_test = np.asarray(test[b"labels"])
    meta = root / "batches.meta"
    names = [n.decode() for n in unpickle(meta)[b"label_names"]] if meta.is_file() else [str(i) for i in range(10)]
    return x_train, y_train, x_test, y_test, names


def _read_cifar_npz(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    tests, trains = sorted(root.glob("test*.npz")), sorted(root.glob("train*.npz"))
    if not tests or not trains:
        raise SuiteError(f"{root}: no CIFAR-10 data (python batches, or test*.npz + train*.npz)")
    try:
        with np.load(tests[0], allow_pickle=False) as test, np.load(trains[0], allow_pickle=False) as train:
            names = [str(c) for c in test["classes"]] if "classes" in test.files else [str(i) for i in range(10)]
            return train["x"], train["y"], test["x"], test["y"], names
    except (OSError, KeyError, ValueError) as exc:
        raise SuiteError(f"{root}: unreadable CIFAR-10 npz: {exc}") from exc


def load_cifar10(cfg: DataConfig) -> DataSplits:
    root = _existing_dir(cfg.root, "cifar10")
    if cfg.calib_root:
        raise SuiteError("--calib-root applies to --dataset imagenet only (CIFAR-10 calibrates on its training "
                         "split)")
    if cfg.image_size not in (None, 32) or cfg.resize is not None:  # were ignored without a word
        raise SuiteError("--image-size and --resize apply to --dataset imagenet and demo only (CIFAR-10 images are "
                         "32 x 32 as stored)")
    reader = _read_cifar_batches if (root / "test_batch").exists() else _read_cifar_npz
    x_train, y_train, x_test, y_test, names = reader(root)
    # at the door: one integer label in range per image, pixels uint8 or floats in [0, 1] (scaled once)
    y_train = check_labels(y_train, len(x_train), len(names), f"{root} training split")
    y_test = check_labels(y_test, len(x_test), len(names), f"{root} test split")
    x_train = check_pixels(x_train, f"{root} training split", (32, 32, 3))
    x_test = check_pixels(x_test, f"{root} test split", (32, 32, 3))
    if x_train.shape == x_test.shape and np.array_equal(x_train, x_test):
        raise SuiteError(f"{root}: the training and test files hold the same images: calibration would see "
                         "every evaluated image")

    def to_tensor(x: np.ndarray) -> torch.Tensor:
        images = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
        return _normalize(images, cfg.mean or IMAGENET_MEAN, cfg.std or IMAGENET_STD)

    train = TensorDataset(to_tensor(x_train), torch.from_numpy(y_train))
    test = TensorDataset(to_tensor(x_test), torch.from_numpy(y_test))
    return DataSplits(
        name="cifar10", calibration_pool=train, evaluation=test,
        calibration_pool_ids=[f"train/{i}" for i in range(len(train))],
        evaluation_ids=[f"test/{i}" for i in range(len(test))],
        num_classes=10, class_names=names, input_shape=(3, 32, 32), train=train,
        preprocess=stretch_preprocess("RGB", 32, cfg.mean or IMAGENET_MEAN, cfg.std or IMAGENET_STD),
    )


# ----------------------------------------------------------------------------------- imagenet
def imagenet_preprocess(cfg: DataConfig) -> dict:
    crop = cfg.image_size or 224
    return {"mode": "resize_crop", "color": "RGB", "resize": cfg.resize or int(round(crop * 256 / 224)),
            "crop": crop, "mean": list(cfg.mean or IMAGENET_MEAN), "std": list(cfg.std or IMAGENET_STD),
            "interpolation": cfg.interpolation or "bilinear"}


def resize_crop_transform(pre: dict) -> Callable:
    from torchvision import transforms

    mode = transforms.InterpolationMode(pre.get("interpolation", "bilinear"))
    return transforms.Compose([transforms.Resize(pre["resize"], interpolation=mode), transforms.CenterCrop(pre["crop"]),
                               transforms.ToTensor(), transforms.Normalize(pre["mean"], pre["std"])])


def image_transform(cfg: DataConfig) -> Callable:
    """The standard evaluation transform; calibration uses the very same one."""
    return resize_crop_transform(imagenet_preprocess(cfg))


def list_image_folder(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """Files and labels of an ImageNet-style folder: ``labels.tsv`` layout or class sub-folders."""
    labels_tsv = root / "labels.tsv"
    if labels_tsv.is_file():
        image_dir = root / "images" if (root / "images").is_dir() else root
        files, labels = [], []
        for line_no, line in enumerate(_utf8_lines(labels_tsv), 1):
            if not line.strip():
                continue
            try:
                name, label = line.split("\t")
                labels.append(int(label))
            except ValueError as exc:
                raise SuiteError(f"{labels_tsv}:{line_no}: expected 'file<TAB>class index'") from exc
            if labels[-1] < 0:
                raise SuiteError(f"{labels_tsv}:{line_no}: class index {labels[-1]} is negative")
            files.append(image_dir / name)
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise SuiteError(f"{labels_tsv} names {len(missing)} missing files, e.g. {missing[0]}")
        words = root / "synset_words.txt"
        names = ([w.split(" ", 1)[-1] for w in _utf8_lines(words)]
                 if words.is_file() else [str(i) for i in range(max(labels, default=-1) + 1)])
        return files, labels, names
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    files, labels = [], []
    for index, cls in enumerate(classes):
        for path in sorted((root / cls).rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                files.append(path)
                labels.append(index)
    return files, labels, classes


def _utf8_lines(path: Path) -> list[str]:
    try:
        return path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise SuiteError(f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from exc


def _existing_dir(root: str | None, dataset: str) -> Path:
    if not root:
        raise SuiteError(f"dataset '{dataset}' needs --data-root")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise SuiteError(f"dataset folder not found: {path}")
    return path


def load_imagenet(cfg: DataConfig, calibration: CalibrationConfig) -> DataSplits:
    root = _existing_dir(cfg.root, "imagenet")
    files, labels, names = list_image_folder(root)
    if not files:
        raise SuiteError(f"{root}: no images found (expected class folders or images/ + labels.tsv)")
    transform = image_transform(cfg)
    crop = cfg.image_size or 224
    num_classes = max(len(names), max(labels) + 1)
    if cfg.calib_root:
        calib_root = _existing_dir(cfg.calib_root, "imagenet calibration")
        c_files, c_labels, _ = list_image_folder(calib_root)
        if not c_files:
            raise SuiteError(f"{calib_root}: no calibration images found")
        overlap = {p.stem for p in c_files} & {p.stem for p in files}  # calib-images re-saves as PNG
        if overlap:
            message = (f"{len(overlap)} calibration images are also evaluation images (e.g. {sorted(overlap)[0]})")
            if not cfg.allow_overlap:
                raise SuiteError(f"{message}: never calibrate on what you evaluate (--allow-overlap to force)")
            log.warning("%s: accuracy figures will be optimistic (--allow-overlap)", message)
        pool = FileImageDataset(c_files, c_labels, transform)
        return DataSplits(
            name="imagenet", calibration_pool=pool, evaluation=FileImageDataset(files, labels, transform),
            calibration_pool_ids=[str(p.name) for p in c_files], evaluation_ids=[p.name for p in files],
            num_classes=num_classes, class_names=names, input_shape=(3, crop, crop), preprocess=imagenet_preprocess(cfg),
        )
    # One folder: the head of a seeded permutation calibrates, the tail is evaluated.
    n_calib = calibration.size
    if n_calib >= len(files):
        raise SuiteError(f"calibration size {n_calib} leaves no evaluation images in {root} "
                         f"({len(files)} images); lower --calib-size or pass --calib-root")
    perm = np.random.default_rng(calibration.seed).permutation(len(files))
    calib_idx, eval_idx = perm[:n_calib], perm[n_calib:]
    pick = lambda idx: ([files[i] for i in idx], [labels[i] for i in idx])  # noqa: E731
    c_files, c_labels = pick(calib_idx)
    e_files, e_labels = pick(eval_idx)
    return DataSplits(
        name="imagenet", calibration_pool=FileImageDataset(c_files, c_labels, transform),
        evaluation=FileImageDataset(e_files, e_labels, transform),
        calibration_pool_ids=[p.name for p in c_files], evaluation_ids=[p.name for p in e_files],
        num_classes=num_classes, class_names=names, input_shape=(3, crop, crop), preprocess=imagenet_preprocess(cfg),
    )


DATASETS = ("demo", "imagenet", "cifar10")


def load_splits(cfg: DataConfig, calibration: CalibrationConfig) -> DataSplits:
    """The calibration pool and evaluation set of ``cfg.dataset``; bad input raises SuiteError."""
    if cfg.dataset == "demo":
        splits = load_demo(cfg)
    elif cfg.dataset == "cifar10":
        splits = load_cifar10(cfg)
    elif cfg.dataset == "imagenet":
        splits = load_imagenet(cfg, calibration)
    else:
        raise SuiteError(f"unknown dataset '{cfg.dataset}' (known: {', '.join(DATASETS)})")
    if len(splits.evaluation) == 0:
        raise SuiteError(f"dataset '{cfg.dataset}' has no evaluation images")
    if cfg.limit is not None:
        if cfg.limit <= 0:
            raise SuiteError("--limit must be positive")
        keep = stratified_indices(dataset_labels(splits.evaluation), cfg.limit, calibration.seed)
        splits.evaluation = SubsetDataset(splits.evaluation, keep)
        splits.evaluation_ids = [splits.evaluation_ids[i] for i in keep]
        splits.subset = f"seeded class-stratified subset of {len(keep)} (--limit, seed {calibration.seed})"
    return splits


def file_digests(paths: Sequence[Path]) -> list[str]:
    """A short sha256 of each file's bytes: a renamed copy of an image has the same digest."""
    digests = []
    for path in paths:
        try:
            digests.append(hashlib.sha256(Path(path).read_bytes()).hexdigest()[:DIGEST_CHARS])
        except OSError as exc:
            raise SuiteError(f"cannot read image {path}: {exc.strerror}") from exc
    return digests


def dataset_digests(dataset: Dataset) -> list[str]:
    """The content digest of every image of ``dataset``, in order, without decoding a file: file bytes for
    image folders, the stored array bytes for in-memory sets (CIFAR-10, the demo set)."""
    if isinstance(dataset, SubsetDataset):
        if isinstance(dataset.base, FileImageDataset):
            return file_digests([dataset.base.files[i] for i in dataset.indices])
        base = dataset_digests(dataset.base)
        return [base[i] for i in dataset.indices]
    if isinstance(dataset, FileImageDataset):
        return file_digests(dataset.files)
    if isinstance(dataset, TensorDataset):
        return array_digests(dataset.images.contiguous().numpy(), DIGEST_CHARS)
    raise SuiteError(f"{type(dataset).__name__}: no content digests for this kind of dataset")


@dataclass
class CalibrationSet:
    """The seeded calibration sample: the images plus the ids recorded in every manifest.

    It holds no batch size: each toolchain steps through it in ``Quantizer.calibration_batch_size()``
    (the config's ``calibration.batch_size``, or the toolchain's default for its method), the one place
    that number is read.

    ``digests`` (content hashes, taken before decoding) and ``evaluation_overlap`` (how many of them are
    also evaluation images; 0 unless --allow-overlap let them through) go into each artifact's manifest,
    so a report says what the artifact was calibrated on, not what today's command line says."""

    dataset: Dataset
    ids: list[str]
    seed: int | None = None
    digests: list[str] = field(default_factory=list)
    evaluation_overlap: int = 0
    overlap_allowed: bool = False  # --allow-overlap was given: the report never calls this sample disjoint
    _array: np.ndarray | None = field(default=None, repr=False, compare=False)

    def facts(self) -> dict:
        """What a manifest records about this sample (utils.report reads it back)."""
        return {"size": len(self.ids), "seed": self.seed, "ids_sha256": ids_sha256(self.ids),
                "digests": list(self.digests), "evaluation_overlap": self.evaluation_overlap,
                "overlap_allowed": self.overlap_allowed,
                "disjoint_from_evaluation": self.evaluation_overlap == 0 and not self.overlap_allowed}

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """``batch_size`` images at a time (--calib-batch-size, independent of the evaluation batch size).

        A decoded sample is sliced in place: no per-image indexing and collation."""
        if isinstance(self.dataset, TensorDataset):
            yield from self.dataset.images.split(batch_size)
            return
        for images, _ in DataLoader(self.dataset, batch_size=batch_size, shuffle=False):
            yield images

    def batch_count(self, batch_size: int) -> int:
        return -(-len(self.dataset) // batch_size)

    def as_array(self) -> np.ndarray:
        """All calibration images as one NCHW float32 array (what ONNX calibrators take).

        Built once per sample and shared by every ONNX toolchain and sweep variant of the run: the
        calibrators only read it."""
        if self._array is None:
            self._array = torch.cat(list(self.batches(256))).numpy().astype(np.float32, copy=False)
        return self._array

    def decoded(self) -> CalibrationSet:
        """The same sample with every image decoded once, up front.

        A bad image then fails before any artifact is written (a corrupt JPEG used to leave a fresh FP32
        reference behind), and every toolchain and variant of a run reuses the tensors instead of
        decoding the files again."""
        if isinstance(self.dataset, TensorDataset):
            return self
        from tqdm import tqdm

        items = [self.dataset[i] for i in tqdm(range(len(self.dataset)), desc="decoding calibration images",
                                               unit="img", disable=len(self.dataset) < 500 or progress_disabled())]
        images = torch.stack([image for image, _ in items])
        labels = torch.tensor([int(label) for _, label in items], dtype=torch.int64)
        return dataclasses.replace(self, dataset=TensorDataset(images, labels))


def calibration_set(splits: DataSplits, calibration: CalibrationConfig) -> CalibrationSet:
    """A seeded sample of ``calibration.size`` images from the calibration pool."""
    pool = len(splits.calibration_pool)
    if calibration.size <= 0:
        raise SuiteError("calibration size must be positive")
    if calibration.size > pool:
        raise SuiteError(f"calibration size {calibration.size} is larger than the {pool} calibration "
                         f"images of dataset '{splits.name}'")
    if calibration.size == pool:
        indices = np.arange(pool)
    else:
        indices = np.sort(np.random.default_rng(calibration.seed).choice(pool, calibration.size, replace=False))
    return CalibrationSet(SubsetDataset(splits.calibration_pool, indices.tolist()),
                          [splits.calibration_pool_ids[i] for i in indices], seed=calibration.seed)


def check_disjoint_content(calibration: CalibrationSet, splits: DataSplits, allow_overlap: bool) -> CalibrationSet:
    """Refuse a calibration sample holding an evaluation image under any name (a renamed copy, a duplicate
    across CIFAR files), compared by content digest; ``--allow-overlap`` lets it through, recorded.

    Cheap: file bytes are hashed, never decoded (1,300 ImageNet JPEGs: well under a second)."""
    digests = dataset_digests(calibration.dataset)
    evaluation = dict(zip(dataset_digests(splits.evaluation), splits.evaluation_ids, strict=True))
    shared = [(cid, evaluation[d]) for cid, d in zip(calibration.ids, digests, strict=True) if d in evaluation]
    if shared:
        message = (f"{len(shared)} calibration images have the content of evaluation images (e.g. {shared[0][0]} "
                   f"= {shared[0][1]})")
        if not allow_overlap:
            raise SuiteError(f"{message}: never calibrate on what you evaluate (--allow-overlap to force)")
        log.warning("%s: accuracy figures will be optimistic (--allow-overlap)", message)
    return dataclasses.replace(calibration, digests=digests, evaluation_overlap=len(shared),
                               overlap_allowed=allow_overlap)


def evaluation_loader(splits: DataSplits, batch_size: int, positions: Sequence[int] | None = None) -> DataLoader:
    """The evaluation images in order, all of them or those at ``positions`` (a cluster shard's id range)."""
    dataset = splits.evaluation if positions is None else SubsetDataset(splits.evaluation, positions)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


def sample_batch(splits: DataSplits, batch_size: int) -> torch.Tensor:
    """A real batch of evaluation images for latency runs (repeated if the set is smaller)."""
    n = len(splits.evaluation)
    return torch.stack([splits.evaluation[i % n][0] for i in range(batch_size)])
