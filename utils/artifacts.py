"""Artifacts, their manifests, and atomic writes.

An artifact is where a Quantizer hands over to a Runner. Its manifest (JSON beside it) records what
produced it (toolchain, settings, calibration sample ids, source weights sha256, CPU/GPU
capabilities, package versions) so that any report can say exactly what it measured. Every file
is written to a temporary name and renamed, so an interrupted or failed run never leaves a
half-written artifact behind.

Every write of a name holds that name's lock (``.NAME.lock``) from its first byte to its rename, so
whoever holds it knows no live writer of the name exists: the ``.tmp-NAME.*`` files a killed run left
are removed then. Bytes reach the disk through Python (:func:`write_bytes`, :func:`write_saved`), never
through a C++ writer that aborts the interpreter when the disk is full; a full disk, a quota, a read-only
or forbidden folder becomes one :class:`SuiteError` line, with the temporaries removed.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO

from utils.errors import SuiteError
from utils.manifest_schema import read_manifest, validate_manifest, verify_sha256
from utils.signals import raise_if_swallowed

log = logging.getLogger(__name__)

ARTIFACT_KINDS = ("torchscript", "exported_program", "onnx", "onnx_qdq", "openvino_ir", "trt_plan")
MANIFEST_SUFFIX = ".manifest.json"
TRACKED_PACKAGES = (
    "torch", "torchvision", "torchao", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu",
    "nvidia-modelopt", "openvino", "tensorrt",
)
#: write failures that are the user's disk or folder, not a bug: one line, no traceback
DISK_ERRNOS = {errno.ENOSPC: "no space left on the device (free some space and run again)",
               errno.EDQUOT: "disk quota exceeded (free some space and run again)",
               errno.EROFS: "read-only file system (pick a writable folder)",
               errno.EACCES: "permission denied (pick a writable folder)",
               errno.EPERM: "operation not permitted (an immutable or protected folder; pick a writable one)",
               errno.ENAMETOOLONG: "file name too long (pick a shorter name or folder)"}


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
def disk_errors(final: Path) -> Iterator[None]:
    """Turn a full disk, a quota, a read-only or forbidden folder while writing ``final`` into one line."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        elsewhere = exc.filename and Path(exc.filename).parent != Path(final).parent  # e.g. a full /tmp
        raise SuiteError(f"cannot write {final}: {DISK_ERRNOS[exc.errno]}"
                         + (f" at {exc.filename}" if elsewhere else "")) from exc


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only if the block succeeds."""
    final = Path(final)
    with disk_errors(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        with _name_lock(final):
            tmp_path = _temp_beside(final, final.suffix)
            try:
                yield tmp_path
                if tmp_path.exists():  # mkstemp makes 0600 files; an artifact gets the mode any new file gets here
                    os.chmod(tmp_path, 0o666 & ~_umask())
                os.replace(tmp_path, final)
            finally:
                tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_folder(final: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``final``; it becomes ``final`` only if the block succeeds.

    A run killed half-way leaves a ``.tmp-NAME.*`` folder (recognisably incomplete, removed by the next
    run of that name), never a ``final`` that looks whole. The folder is committed with the suite's
    completeness marker (utils.names), and an existing ``final`` is replaced only where it carries one (or is
    empty): a folder the suite did not write is never removed."""
    from utils.names import COMPLETE_MARKER, check_replaceable

    final = Path(final)
    with disk_errors(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        with _name_lock(final, folder=True):
            staging = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}.", dir=final.parent))
            try:
                yield staging
                for lock in staging.rglob(".*.lock"):  # nobody else knows this folder: its writers' locks go
                    lock.unlink()
                write_bytes(staging / COMPLETE_MARKER, b"written whole by model-lightweight-suite\n")
                os.chmod(staging, 0o777 & ~_umask())
                check_replaceable(final, "output folder")  # again under the lock: it may have appeared meanwhile
                if final.exists():
                    old = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}.", dir=final.parent))
                    os.replace(final, old / final.name)
                    os.replace(staging, final)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.replace(staging, final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)


def _temp_beside(final: Path, suffix: str) -> Path:
    """A new empty temporary file in ``final``'s folder (same file system: the rename is atomic)."""
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{final.name}.", suffix=suffix, dir=final.parent)
    os.close(fd)
    return Path(tmp)


def stale_temporaries(final: Path) -> list[Path]:
    """The ``.tmp-NAME.*`` files and folders of ``final``'s name: a writer's temporaries are exactly
    ``.tmp-`` + the name + ``.`` + mkstemp's 8 random characters + one of its suffixes (so ``a.pth``'s
    never match ``a.pth.manifest.json``'s or ``a.pt``'s)."""
    suffixes = "|".join(re.escape(x) for x in {final.suffix, MANIFEST_SUFFIX, ""})
    pattern = re.compile(rf"\.tmp-{re.escape(final.name)}\.[a-z0-9_]{{8}}(?:{suffixes})")
    if not final.parent.is_dir():
        return []
    return sorted(p for p in final.parent.iterdir() if pattern.fullmatch(p.name))


@contextlib.contextmanager
def _name_lock(final: Path, *, folder: bool = False) -> Iterator[None]:
    """Hold ``final``'s name lock for a whole write: writers of one name take turns, so two runs never
    leave run A's file beside run B's manifest, and the holder may remove what killed writers left.

    A file's lock is ``.NAME.lock`` beside it; a staged folder (a results run, a calib-images output)
    locks its parent folder itself, so no lock file is left beside a user's folder."""
    import fcntl

    if folder:
        fd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
    else:
        fd = os.open(final.with_name(f".{final.name}.lock"), os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another run that is writing %s", final)
            fcntl.flock(fd, fcntl.LOCK_EX)
        for stale in stale_temporaries(final):  # the lock proves their writer is gone
            log.info("removing %s, left by an interrupted run", stale)
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_bytes(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` with plain OS writes, so a full disk is an ``OSError`` here (see :func:`disk_errors`)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)  # a delayed-allocation file system reports ENOSPC here, not at rename
    finally:
        os.close(fd)


def write_saved(path: Path, save: Callable[[Any, BinaryIO], Any], obj: Any) -> None:
    """``save(obj, file)`` (torch.save, torch.jit.save, torch.export.save) into memory, then to ``path``.

    Handed a path, those savers write from C++: a full disk there aborts the whole interpreter (exit 134)
    and leaves the temporary file. Into a BytesIO they cannot fail on I/O, and the one real write is ours."""
    buffer = io.BytesIO()
    save(obj, buffer)
    write_bytes(path, buffer.getbuffer())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_writable(folder: Path, what: str) -> None:
    """Fail in one line, before any work, where ``folder`` cannot be created or written (a file in the way,
    a read-only mount, an immutable folder). Mode bits prove nothing for root, so a probe file is created
    and removed in the nearest existing folder; nothing else is created here."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise SuiteError(f"{what} {folder}: {probe} is a file, not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".mls-write-probe-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        reason = DISK_ERRNOS.get(exc.errno, exc.strerror)
        raise SuiteError(f"{what} {folder}: {probe} is not writable: {reason}") from exc


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        write_bytes(tmp, text.encode("utf-8"))


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
    bias_correction = manifest.pop("bias_correction", None)
    if calibration_ids and bias_correction is not None:  # a calibrated artifact's recipe, not an FP32 export's
        manifest["bias_correction"] = bias_correction
    facts = manifest.pop("calibration", None) or {}
    if calibration_ids and facts.get("ids_sha256") == ids_sha256(calibration_ids):
        manifest["calibration"] = facts  # seed, content digests, disjointness: only where they describe the ids
    return manifest


def ids_sha256(ids: list[str]) -> str:
    """One hash of a calibration sample's ids, in order (two manifests calibrated on the same sample match)."""
    return hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()


def write_artifact(final: Path, writer: Callable[[Path], None], manifest: dict[str, Any], *,
                   toolchain: str, kind: str, precision: str) -> Artifact:
    """Let ``writer`` fill a temp file beside ``final``; then commit the pair: artifact first, manifest last.

    The manifest (with the artifact's sha256) is the commit marker: readers refuse a file whose manifest
    is missing or names another sha256. The whole write holds the name's lock, so concurrent runs leave
    one consistent pair. A writer that raises leaves nothing behind; a full disk is one line.
    """
    final = Path(final)
    with disk_errors(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        with _name_lock(final):
            temps: list[Path] = []
            try:  # the second temporary can fail (a name too long with its suffix): the first is removed too
                for suffix in (final.suffix, MANIFEST_SUFFIX):
                    temps.append(_temp_beside(final, suffix))
                tmp, manifest_tmp = temps
                writer(tmp)
                manifest = dict(manifest, sha256=sha256_file(tmp), size_bytes=tmp.stat().st_size)
                write_bytes(manifest_tmp, (json.dumps(manifest, indent=2, default=str) + "\n").encode("utf-8"))
                for path in temps:  # mkstemp makes 0600 files; an artifact gets the mode any new file gets here
                    os.chmod(path, 0o666 & ~_umask())
                raise_if_swallowed()  # a stop a library's writer swallowed: no artifact
                os.replace(tmp, final)
                os.replace(manifest_tmp, manifest_path_for(final))
            finally:
                for path in temps:
                    path.unlink(missing_ok=True)
    return Artifact(path=final, kind=kind, toolchain=toolchain, precision=precision, manifest=manifest)


def load_artifact(path: Path) -> Artifact:
    """Read an artifact back from disk through its manifest."""
    path = Path(path)
    if path.is_dir():
        raise SuiteError(f"{path} is a folder, not an artifact file")
    if not path.is_file():
        raise SuiteError(f"artifact not found: {path}")
    mpath = manifest_path_for(path)
    if not mpath.is_file():
        raise SuiteError(f"artifact {path} has no manifest ({mpath.name}); re-run its quantization script")
    manifest = validate_manifest(read_manifest(mpath), mpath, ARTIFACT_KINDS)  # the sha256 is required
    verify_sha256(path, manifest, sha256_file(path))
    return Artifact(path=path, kind=manifest["kind"], toolchain=manifest["toolchain"],
                    precision=manifest["precision"], manifest=manifest)
