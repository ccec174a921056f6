"""One schema for every manifest the suite reads back, checked before any of its values is used.

A manifest is what makes an artifact trustworthy: its sha256 ties the file to what produced it. It used to be
checked only where the key was present, so deleting ``"sha256"`` let an FP32 TorchScript copied over an INT8
artifact be reported as INT8 (issue #30); and a key missing or of the wrong JSON type ended in a KeyError or
AttributeError traceback far from the file. Here a manifest is valid JSON in UTF-8, a mapping, with every
required key of its type and every optional key the suite reads of its type, and a sha256 that is 64 hex
digits and matches the file: otherwise one line naming the manifest and the key. There is no switch to skip it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from utils.errors import SuiteError

SHA256 = re.compile(r"[0-9a-f]{64}")
PRECISIONS = ("fp32", "fp16", "int8")


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and SHA256.fullmatch(value) is not None


def _is_list_of(kind: type | tuple[type, ...]) -> Any:
    return lambda value: isinstance(value, list) and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)


def _optional(check: Any) -> Any:
    return lambda value: value is None or check(value)


def _is(kind: type | tuple[type, ...]) -> Any:
    return lambda value: isinstance(value, kind) and not isinstance(value, bool)


#: key -> (what it must be, in words; the check)
REQUIRED = {
    "name": ("a string", _is(str)),
    "toolchain": ("a string", _is(str)),
    "kind": ("a string", _is(str)),
    "precision": (f"one of {', '.join(PRECISIONS)}", lambda v: v in PRECISIONS),
    "sha256": ("the artifact's sha256 (64 hex digits)", _is_sha256),
}
OPTIONAL = {  # every other key the suite reads; absent is fine, present must be of its type
    "settings": ("a mapping", _is(dict)),
    "size_bytes": ("an integer", _is(int)),
    "source_weights": ("a string or null", _optional(_is(str))),
    "source_weights_sha256": ("a sha256 or null", _optional(_is_sha256)),
    "calibration_sample_count": ("an integer", _is(int)),
    "calibration_sample_ids": ("a list of strings", _is_list_of(str)),
    "calibration": ("a mapping", _is(dict)),
    "arch": ("a string", _is(str)),
    "num_classes": ("an integer", _is(int)),
    "input_shape": ("a list of integers", _is_list_of(int)),
    "transforms": ("a list of strings", _is_list_of(str)),
    "graph_rewrites": ("a list", _is(list)),
    "class_names": ("a list of strings", _is_list_of(str)),
    "preprocess": ("a mapping", _is(dict)),
    "target": ("a string or null", _optional(_is(str))),
    "target_requested": ("a string or null", _optional(_is(str))),
    "recommended_runtime": ("a string or null", _optional(_is(str))),
    "quantize_seconds": ("a number", _is((int, float))),
    "quantize_seconds_by_stage": ("a mapping", _is(dict)),
    "hardware": ("a mapping", _is(dict)),
    "package_versions": ("a mapping", _is(dict)),
}
CALIBRATION = {  # the manifest's "calibration" facts (utils.data.CalibrationSet.facts), read by the report
    "size": ("an integer", _is(int)),
    "ids_sha256": ("a sha256", _is_sha256),
    "digests": ("a list of strings", _is_list_of(str)),
    "evaluation_overlap": ("an integer", _is(int)),
}


def read_manifest(path: Path) -> dict[str, Any]:
    """The JSON mapping in ``path``, or one line: missing, unreadable, not UTF-8, not JSON, not a mapping."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError as exc:
        raise SuiteError(f"manifest {path} not found") from exc
    except UnicodeDecodeError as exc:
        raise SuiteError(f"manifest {path} is not UTF-8 text (byte {exc.start}); re-run its quantization script") from exc
    except OSError as exc:
        raise SuiteError(f"manifest {path} cannot be read: {exc.strerror}") from exc
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SuiteError(f"manifest {path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise SuiteError(f"manifest {path} must hold a JSON object, not {type(manifest).__name__}")
    return manifest


def validate_manifest(manifest: dict[str, Any], where: Path, kinds: tuple[str, ...]) -> dict[str, Any]:
    """``manifest`` if every key the suite reads has its type and ``kind`` is one of ``kinds``, else one line."""
    for key, (meaning, check) in REQUIRED.items():
        if key not in manifest:
            raise SuiteError(f"manifest {where} has no '{key}' ({meaning}): the artifact cannot be trusted; re-run "
                             "its quantization script")
        if not check(manifest[key]):
            raise SuiteError(f"manifest {where}: '{key}' must be {meaning} (got {manifest[key]!r:.80})")
    if manifest["kind"] not in kinds:
        raise SuiteError(f"manifest {where} names an unknown artifact kind {manifest['kind']!r}")
    for key, (meaning, check) in OPTIONAL.items():
        if key in manifest and not check(manifest[key]):
            raise SuiteError(f"manifest {where}: '{key}' must be {meaning} (got {manifest[key]!r:.80})")
    for key, (meaning, check) in CALIBRATION.items():
        facts = manifest.get("calibration") or {}
        if key in facts and not check(facts[key]):
            raise SuiteError(f"manifest {where}: 'calibration.{key}' must be {meaning} (got {facts[key]!r:.80})")
    return manifest


def verify_sha256(path: Path, manifest: dict[str, Any], sha256: str | None) -> None:
    """One line if the file's ``sha256`` is not the manifest's (changed, corrupt, half of another run's pair)."""
    if sha256 != manifest.get("sha256"):
        raise SuiteError(f"{path} does not match its manifest's sha256 (changed, corrupt, or half of another "
                         "run's pair); re-run its quantization script")


def verified_cache(path: Path, what: str, remedy: str) -> bool:
    """Whether a cached file the suite wrote (the demo model's weights) can be used: True where its manifest
    names its sha256 and the file matches; False where there is no manifest or no sha256 in it (a cache from
    before there was one: the caller builds it again); one line where it does not match (swapped weights once
    took the demo's FP32 top-1 from 99.0 to 10.9 % without a word)."""
    from utils.artifacts import manifest_path_for, sha256_file

    mpath = manifest_path_for(path)
    if not mpath.is_file():
        return False
    manifest = read_manifest(mpath)
    if "sha256" not in manifest:
        return False
    if not _is_sha256(manifest["sha256"]) or sha256_file(path) != manifest["sha256"]:
        raise SuiteError(f"{what} {path} do not match their manifest's sha256 (changed after the suite wrote "
                         f"them); {remedy}")
    return True
