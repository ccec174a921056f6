"""Output names are names, never paths: the rules for every user-given name that becomes a path component.

``--run-name ~/victim`` or ``../../victim`` used to escape the results folder, and the folder it named was
moved aside and deleted to make room for a report (issue #30). A name is now refused in one line, before
any work, if it is empty, absolute, holds a path separator, is ``.`` or ``..``, or is too long for a file
name once the suite's staging prefix is added. And a folder is replaced only where it carries the suite's
completeness marker (:data:`COMPLETE_MARKER`), written into every folder the suite stages
(:func:`utils.artifacts.staged_folder`): a folder the suite did not write is never removed.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from utils.errors import SuiteError

#: the file the suite writes last into every folder it stages (a results run, a calib-images output)
COMPLETE_MARKER = ".mls-complete"
NAME_MAX_BYTES = 255  # Linux, macOS and Windows file systems
#: what staging adds around a name: ``.tmp-NAME.`` + mkstemp's 8 characters + the longest suffix used
STAGING_OVERHEAD = len(".tmp-") + 1 + 8 + len(".manifest.json")


def check_output_name(name: str, what: str) -> str:
    """``name`` if it is a plain file name the suite may create under its own folder, else one line."""
    if not isinstance(name, str) or not name.strip():
        raise SuiteError(f"{what} must be a plain name, not empty")
    if name in (".", "..") or Path(name).is_absolute() or any(sep and sep in name for sep in (os.sep, os.altsep, "/", "\\")):
        raise SuiteError(f"{what} {name!r} must be a plain name (no path separator, no '..', not absolute): it "
                         "names a folder inside the results folder")
    if "\0" in name:
        raise SuiteError(f"{what} {name!r} must not contain a NUL character")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise SuiteError(f"{what} {name!r} is not valid text (undecodable bytes)") from exc
    if size + STAGING_OVERHEAD > NAME_MAX_BYTES:
        raise SuiteError(f"{what} is {size} bytes long: at most {NAME_MAX_BYTES - STAGING_OVERHEAD} fit in a file name")
    return name


def fit_name(stem: str, limit: int = 120) -> str:
    """``stem`` itself, or where it is longer than ``limit`` characters its head plus a short hash of the whole
    (a long weights file name in an artifact name): every name the suite derives fits a file system's limit
    with room for its staging prefix and suffixes, and two long names stay distinct."""
    if len(stem.encode("utf-8", "surrogateescape")) <= limit:
        return stem
    digest = hashlib.sha256(stem.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    head = stem.encode("utf-8", "surrogateescape")[: limit - 11].decode("utf-8", "ignore")
    return f"{head}-{digest}"


def check_replaceable(folder: Path, what: str) -> None:
    """Refuse, before any work, to replace ``folder`` unless the suite wrote it (its completeness marker) or it
    is empty: the results of a run may replace an earlier run of that name, never a user's folder."""
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_symlink() or not folder.is_dir():
        raise SuiteError(f"{what} {folder} exists and is not a folder the suite wrote: pick another name")
    if (folder / COMPLETE_MARKER).is_file() or not any(folder.iterdir()):
        return
    raise SuiteError(f"{what} {folder} exists and was not written by this suite (no {COMPLETE_MARKER} marker): "
                     "it is never replaced; pick another name or move it away yourself")
