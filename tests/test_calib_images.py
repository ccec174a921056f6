import json
from pathlib import Path

import pytest
from PIL import Image

from resnet.calib_images import balanced_pick
from tests.conftest import run_script


def test_balanced_pick_is_seeded_and_even():
    labels = [0] * 50 + [1] * 30 + [2] * 5
    pick = balanced_pick(labels, 15, seed=3)
    assert pick == balanced_pick(labels, 15, seed=3) and pick != balanced_pick(labels, 15, seed=4)
    counts = [sum(labels[i] == c for i in pick) for c in range(3)]
    assert counts == [5, 5, 5] and len(set(pick)) == 15


def _folder(root: Path, per_class: int) -> Path:
    for c in range(3):
        (root / f"n{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (300, 260), (c * 80, i, 0)).save(root / f"n{c}" / f"img_{c}_{i}.JPEG")
    return root


def test_calib_images_writes_a_usable_folder(tmp_path: Path):
    source = _folder(tmp_path / "train", 4)
    out = tmp_path / "calib"
    result = run_script("-m", "resnet.run", "calib-images", "--input-dir", str(source), "--output-dir", str(out),
                        "--num-images", "6", "--seed", "1")
    assert result.returncode == 0, result.stderr[-1500:]
    written = sorted(out.rglob("*.png"))
    assert len(written) == 6 and {p.parent.name for p in written} == {"0000", "0001", "0002"}
    with Image.open(written[0]) as image:
        assert image.size == (224, 224)
    assert json.loads((out / "calibration_manifest.json").read_text())["num_images"] == 6


@pytest.mark.slow
def test_overlap_with_the_evaluation_set_is_refused(tmp_path: Path):
    source = _folder(tmp_path / "val", 4)
    result = run_script("-m", "resnet.run", "calib-images", "--input-dir", str(source), "--output-dir",
                        str(tmp_path / "c"), "--num-images", "3", "--eval-dir", str(source))
    assert result.returncode == 2 and "never calibrate on what you evaluate" in result.stderr
    assert not (tmp_path / "c").exists()
    forced = run_script("-m", "resnet.run", "calib-images", "--input-dir", str(source), "--output-dir",
                        str(tmp_path / "c"), "--num-images", "3", "--eval-dir", str(source), "--allow-overlap")
    assert forced.returncode == 0
    evaluation = run_script("quantization/Torch/torch_PTQ.py", "--dataset", "imagenet", "--data-root", str(source),
                            "--calib-root", str(tmp_path / "c"), "--arch", "resnet18", "--models-dir", str(tmp_path / "m"),
                            "--calib-size", "3")
    assert evaluation.returncode == 2 and "also evaluation images" in evaluation.stderr


def test_a_failed_pick_leaves_no_half_folder(tmp_path):
    import pytest

    from resnet.calib_images import main
    from utils.errors import SuiteError

    source = tmp_path / "src"
    for cls in ("a", "b"):
        (source / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (30, 30), (i * 50, 0, 0)).save(source / cls / f"{cls}{i}.png")
    (source / "b" / "b9.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "calib"
    with pytest.raises(SuiteError, match="cannot read image"):
        main(["--input-dir", str(source), "--output-dir", str(out), "--num-images", "9", "--image-size", "16"])
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["src"]
