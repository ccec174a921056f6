"""Artifacts, their manifests, and atomic writes.

An artifact is where a Quantizer hands over to a Runner. Its manifest (JSON beside it) records what
produced it (toolchain, settings, calibration sample ids, source weights sha256, CPU/GPU
capabilities, package versions) so that any report can say exactly what it measured. Every file
is written to a temporary name and renamed, so an interrupted or failed run never leaves a
half-written artifact behind.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ARTIFACT_KINDS = ("torchscript", "exported_program", "onnx", "onnx_qdq", "openvino_ir", "trt_plan")
MANIFEST_SUFFIX = ".manifest.json"
TRACKED_PACKAGES = (
    "torch", "torchvision", "torchao", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu",
    "nvidia-modelopt", "openvino", "tensorrt",
)


@dataclass
class Artifact:
    """A model file plus what produced it. ``precision`` is 'fp32', 'fp16' or 'int8'."""

    path: Path
    kind: str
    toolchain: str
    precision: str
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.path.stem)

    @property
    def manifest_path(self) -> Path:
        return manifest_path_for(self.path)

    def size_bytes(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0


def manifest_path_for(path: Path) -> Path:
    return path.with_name(path.name + MANIFEST_SUFFIX)


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _temp_beside(final, final.suffix)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files; an artifact gets the mode any new file gets here
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _temp_beside(final: Path, suffix: str) -> Path:
    """A new empty temporary file in ``final``'s folder (same file system: the rename is atomic)."""
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{final.stem}.", suffix=suffix, dir=final.parent)
    os.close(fd)
    return Path(tmp)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_writable(folder: Path, what: str) -> None:
    """Fail in one line, before any work, where ``folder`` cannot be created or written (a file in the way,
    a read-only folder); nothing is created here."""
    from utils.errors import SuiteError

    folder = Path(folder)
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise SuiteError(f"{what} {folder}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SuiteError(f"{what} {folder}: {probe} is not writable")


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path: Path | None) -> str | None:
    if path is None or not Path(path).is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def build_manifest(*, name: str, toolchain: str, kind: str, precision: str, settings: dict[str, Any],
                   source_weights: Path | None, calibration_ids: list[str] | None,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest every artifact carries; hardware and versions are read here, not passed in."""
    from utils.hardware import hardware_summary

    manifest = {
        "name": name,
        "toolchain": toolchain,
        "kind": kind,
        "precision": precision,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "settings": settings,
        "source_weights": str(source_weights) if source_weights else None,
        "source_weights_sha256": sha256_file(source_weights),
        "calibration_sample_count": len(calibration_ids) if calibration_ids is not None else 0,
        "calibration_sample_ids": calibration_ids or [],
        "hardware": hardware_summary(),
        "package_versions": package_versions(),
    }
    if extra:
        manifest.update(extra)
    return manifest


@contextlib.contextmanager
def _pair_lock(final: Path) -> Iterator[None]:
    """Serialise the commit of one artifact name across processes (two runs writing the same name must
    never leave run A's file beside run B's manifest)."""
    import fcntl

    with open(final.with_name(f".{final.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_artifact(final: Path, writer: Callable[[Path], None], manifest: dict[str, Any], *,
                   toolchain: str, kind: str, precision: str) -> Artifact:
    """Let ``writer`` fill a temp file beside ``final``; then commit the pair: artifact first, manifest last.

    The manifest (with the artifact's sha256) is the commit marker: readers refuse a file whose manifest
    is missing or names another sha256. Both renames happen under a per-name lock, so concurrent runs
    leave one consistent pair. A writer that raises leaves nothing behind.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    temps = [_temp_beside(final, suffix) for suffix in (final.suffix, MANIFEST_SUFFIX)]
    tmp, manifest_tmp = temps
    try:
        writer(tmp)
        manifest = dict(manifest, sha256=sha256_file(tmp), size_bytes=tmp.stat().st_size)
        manifest_tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
        for path in temps:  # mkstemp makes 0600 files; an artifact gets the mode any new file gets here
            os.chmod(path, 0o666 & ~_umask())
        with _pair_lock(final):
            os.replace(tmp, final)
            os.replace(manifest_tmp, manifest_path_for(final))
    finally:
        for path in temps:
            path.unlink(missing_ok=True)
    return Artifact(path=final, kind=kind, toolchain=toolchain, precision=precision, manifest=manifest)


def load_artifact(path: Path) -> Artifact:
    """Read an artifact back from disk through its manifest."""
    from utils.errors import SuiteError

    path = Path(path)
    if path.is_dir():
        raise SuiteError(f"{path} is a folder, not an artifact file")
    if not path.is_file():
        raise SuiteError(f"artifact not found: {path}")
    mpath = manifest_path_for(path)
    if not mpath.is_file():
        raise SuiteError(f"artifact {path} has no manifest ({mpath.name}); re-run its quantization script")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SuiteError(f"manifest {mpath} is not valid JSON: {exc}") from exc
    if manifest.get("kind") not in ARTIFACT_KINDS:
        raise SuiteError(f"manifest {mpath} names an unknown artifact kind {manifest.get('kind')!r}")
    if manifest.get("sha256") and sha256_file(path) != manifest["sha256"]:
        raise SuiteError(f"{path} does not match its manifest's sha256 (changed, corrupt, or half of another "
                         "run's pair); re-run its quantization script")
    return Artifact(path=path, kind=manifest["kind"], toolchain=manifest["toolchain"],
                    precision=manifest["precision"], manifest=manifest)
