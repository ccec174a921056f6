from pathlib import Path

import pytest

from utils.artifacts import load_artifact, manifest_path_for, write_artifact
from utils.errors import SuiteError


def test_failed_writer_leaves_nothing(tmp_path: Path):
    final = tmp_path / "m.onnx"

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_artifact(final, broken, {"name": "x"}, toolchain="t", kind="onnx", precision="int8")
    assert list(tmp_path.iterdir()) == []


def test_manifest_beside_artifact_round_trips(tmp_path: Path):
    final = tmp_path / "m.bin"
    art = write_artifact(final, lambda tmp: tmp.write_bytes(b"12345"), {"name": "x", "kind": "onnx",
                         "toolchain": "t", "precision": "int8"}, toolchain="t", kind="onnx", precision="int8")
    assert manifest_path_for(final).is_file()
    back = load_artifact(final)
    assert back.manifest["sha256"] == art.manifest["sha256"] and back.manifest["size_bytes"] == 5
    manifest_path_for(final).unlink()
    with pytest.raises(SuiteError, match="no manifest"):
        load_artifact(final)


def test_artifacts_get_the_mode_of_any_new_file(tmp_path):
    import os

    from utils.artifacts import write_text_atomic

    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.json", "{}")
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644  # mkstemp alone gives 0600
    finally:
        os.umask(old)
