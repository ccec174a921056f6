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
    assert [p.name for p in tmp_path.iterdir()] == [".m.onnx.lock"]  # the name's empty lock file only
    assert (tmp_path / ".m.onnx.lock").stat().st_size == 0


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


def test_concurrent_writers_of_one_name_leave_a_consistent_pair(tmp_path, monkeypatch):
    """Two runs writing the same artifact name; run A is held for 0.1 s between its two renames (the
    commit window) while run B commits. The file on disk must match the manifest beside it (a mixed pair
    fails load_artifact's sha256 check), and no temporary file is left."""
    import os
    import threading
    import time

    import utils.artifacts as artifacts

    real_replace = os.replace

    def slow_replace(src, dst):
        real_replace(src, dst)
        if threading.current_thread().name == "A" and not str(dst).endswith(".manifest.json"):
            time.sleep(0.1)

    monkeypatch.setattr(artifacts.os, "replace", slow_replace)
    final = tmp_path / "m" / "model.onnx"
    errors = []

    def run(payload: bytes, delay: float) -> None:
        def writer(tmp):
            time.sleep(delay)
            tmp.write_bytes(payload)
        try:
            write_artifact(final, writer, {"name": payload[:1].decode(), "kind": "onnx", "toolchain": "t",
                                           "precision": "int8"}, toolchain="t", kind="onnx", precision="int8")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b"A" * 1000, 0.0), name="A"),
               threading.Thread(target=run, args=(b"B" * 2000, 0.03), name="B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    artifact = load_artifact(final)  # raises if the file and its manifest came from different runs
    assert artifact.manifest["name"] == final.read_bytes()[:1].decode()
    assert not errors
    assert not [p for p in final.parent.iterdir() if p.name.startswith(".tmp-")]


def test_a_changed_artifact_no_longer_loads(tmp_path):
    from utils.artifacts import load_artifact, write_artifact
    from utils.errors import SuiteError

    final = tmp_path / "model.pt"
    write_artifact(final, lambda tmp: tmp.write_bytes(b"x" * 10), {"name": "m", "kind": "torchscript",
                   "toolchain": "t", "precision": "int8"}, toolchain="t", kind="torchscript", precision="int8")
    final.write_bytes(b"y" * 10)
    with pytest.raises(SuiteError, match="does not match its manifest's sha256"):
        load_artifact(final)
