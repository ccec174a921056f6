"""``python -m resnet.run calib-images``: write a calibration image folder, as the original suite did.

A seeded pick balanced across classes (round-robin over shuffled per-class lists), resized and
centre-cropped exactly as evaluation does, saved losslessly (PNG) in class sub-folders, so the folder
works as ``--calib-root``. Images that are also in ``--eval-dir`` are refused unless ``--allow-overlap``.
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils import cli
from utils.artifacts import staged_folder, write_json_atomic
from utils.config import DataConfig
from utils.console import progress_disabled
from utils.data import file_digests, list_image_folder
from utils.errors import SuiteError
from utils.input_checks import to_color

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m resnet.run calib-images", description=__doc__)
    parser.add_argument("--input-dir", required=True, help="ImageNet-style folder to pick from")
    parser.add_argument("--output-dir", required=True, help="where the calibration folder is written")
    parser.add_argument("--num-images", type=int, default=300, help="images to pick (default: 300)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pick (default: 0)")
    parser.add_argument("--eval-dir", default=None, help="evaluation folder: its images may not be picked")
    parser.add_argument("--allow-overlap", action="store_true", help="allow images that are also in --eval-dir")
    parser.add_argument("--image-size", type=int, default=224, help="centre-crop size (default: 224)")
    parser.add_argument("--resize", type=int, default=None, help="resize before the crop (default: size*256/224)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def balanced_pick(labels: Sequence[int], n: int, seed: int) -> list[int]:
    """Indices of ``n`` items, as even across classes as the data allows, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    per_class: dict[int, list[int]] = {}
    for index in rng.permutation(len(labels)):
        per_class.setdefault(int(labels[index]), []).append(int(index))
    order = [per_class[c] for c in sorted(per_class)]
    picked: list[int] = []
    depth = 0
    while len(picked) < n and any(depth < len(q) for q in order):
        for queue in order:
            if depth < len(queue) and len(picked) < n:
                picked.append(queue[depth])
        depth += 1
    return picked


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    source = Path(args.input_dir)
    if not source.is_dir():
        raise SuiteError(f"input folder not found: {source}")
    files, labels, _ = list_image_folder(source)
    if not files:
        raise SuiteError(f"{source}: no images found")
    if args.num_images <= 0 or args.num_images > len(files):
        raise SuiteError(f"--num-images {args.num_images} must be between 1 and the {len(files)} images of {source}")
    if args.image_size <= 0 or (args.resize is not None and args.resize <= 0):
        raise SuiteError(f"--image-size and --resize must be positive (got {args.image_size}, {args.resize})")
    out = Path(args.output_dir)
    if out.resolve().is_relative_to(source.resolve()):  # it would become a fake class of the next pick
        raise SuiteError(f"--output-dir {out} is inside --input-dir {source}: pick a folder outside it")
    picked = balanced_pick(labels, args.num_images, args.seed)
    names = [(labels[i], files[i].stem) for i in picked]
    if len(set(names)) < len(names):  # one PNG per (class, stem): a second one would overwrite the first
        label, stem = next(n for n in names if names.count(n) > 1)
        raise SuiteError(f"two picked images of class {label} share the name {stem!r} (e.g. {stem}.jpg and {stem}.png): "
                         "rename one, they would be saved as the same PNG")
    if args.eval_dir:
        eval_dir = Path(args.eval_dir)
        if not eval_dir.is_dir():
            raise SuiteError(f"--eval-dir {eval_dir}: folder not found")
        eval_files = list_image_folder(eval_dir)[0]
        eval_stems, eval_digests = {p.stem for p in eval_files}, set(file_digests(eval_files))
        picked_files = [files[i] for i in picked]  # by name, and by content (a renamed copy is the same image)
        overlap = sorted(f.name for f, digest in zip(picked_files, file_digests(picked_files), strict=True)
                         if f.stem in eval_stems or digest in eval_digests)
        if overlap and not args.allow_overlap:
            raise SuiteError(f"{len(overlap)} picked images are also evaluation images (e.g. {overlap[0]}): "
                             "never calibrate on what you evaluate (--allow-overlap to force)")
    from PIL import Image
    from torchvision import transforms

    from utils.data import image_transform

    steps = image_transform(DataConfig(image_size=args.image_size, resize=args.resize)).transforms
    geometric = transforms.Compose(steps[:2])  # Resize + CenterCrop; ToTensor/Normalize happen at load time
    if out.exists() and any(out.iterdir()):
        raise SuiteError(f"--output-dir {out} exists and is not empty (pick a new folder)")
    with staged_folder(out) as staging:  # the whole folder appears at once, or not at all
        for i in tqdm(picked, desc="writing calibration images", unit="img", disable=progress_disabled()):
            folder = staging / f"{labels[i]:04d}"
            folder.mkdir(exist_ok=True)
            try:
                with Image.open(files[i]) as image:
                    picture = geometric(to_color(image, "RGB"))
            except (OSError, Image.DecompressionBombError) as exc:
                raise SuiteError(f"cannot read image {files[i]}: {exc}") from exc
            picture.save(folder / (files[i].stem + ".png"), format="PNG")  # a full disk: staged_folder's one line
        write_json_atomic(staging / "calibration_manifest.json", {
            "source": str(source), "seed": args.seed, "num_images": len(picked),
            "classes": len({labels[i] for i in picked}), "files": [files[i].name for i in picked]})
    print(f"{len(picked)} calibration images from {len({labels[i] for i in picked})} classes in {out}")
    return 0
