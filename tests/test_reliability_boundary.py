"""Issue #30's traceback family: the CLI boundary (utils.cli.run_cli) turns any exception into one line.

Each escaping type is raised for real (Pillow opening a 30000x30000 header, a non-UTF-8 file read, a name the
OS refuses as too long), not constructed, and fed to run_cli: bad input keeps exit code 2, anything else is an
internal error, exit code 1, naming its type and the -v hint; -v adds the traceback.
"""
from __future__ import annotations

import logging
import os
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from utils.cli import run_cli

REPO = Path(__file__).resolve().parents[1]


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's calling card), 1 KB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _bomb(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(30000, 30000))
    Image.open(path)


def _non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "labels.tsv"
    path.write_bytes(b"caf\xe9.jpg\t3\n")  # Latin-1
    path.read_text(encoding="utf-8")


def _non_utf8_name(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.jpg")  # how Python spells a Latin-1 file name: a lone surrogate
    name.encode("utf-8")


def _name_too_long(tmp_path: Path) -> None:
    (tmp_path / ("x" * 300)).write_bytes(b"")


def _out_of_memory(tmp_path: Path) -> None:
    raise MemoryError()


def _disk_full(tmp_path: Path) -> None:
    import errno

    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "m.onnx"))


def _bug_key(tmp_path: Path) -> None:
    {}["calibration_sample_ids"]


def _bug_type(tmp_path: Path) -> None:
    len(None)


def _bug_attribute(tmp_path: Path) -> None:
    None.get("sha256")


def _bug_value(tmp_path: Path) -> None:
    import numpy as np

    np.zeros((2, 3)).reshape(4, 4)


BAD_INPUT = {_bomb: "decompression-bomb limit", _non_utf8_file: "not valid UTF-8", _non_utf8_name: "cannot be encoded",
             _name_too_long: "file name too long", _out_of_memory: "out of memory", _disk_full: "no space left"}
INTERNAL = {_bug_key: "KeyError", _bug_type: "TypeError", _bug_attribute: "AttributeError", _bug_value: "ValueError"}


def _run(raiser, tmp_path: Path, capsys, verbose: bool = False) -> tuple[int, list[str]]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    try:
        code = run_cli(lambda argv: raiser(tmp_path))
    finally:
        root.setLevel(level)
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("raiser", list(BAD_INPUT), ids=lambda f: f.__name__.strip("_"))
def test_escaping_bad_input_is_one_line_exit_2(raiser, tmp_path, capsys):
    code, lines = _run(raiser, tmp_path, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: ") and BAD_INPUT[raiser] in lines[0], lines


@pytest.mark.parametrize("raiser", list(INTERNAL), ids=lambda f: f.__name__.strip("_"))
def test_anything_else_is_an_internal_error_exit_1_naming_its_type(raiser, tmp_path, capsys):
    code, lines = _run(raiser, tmp_path, capsys)
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: internal error: {INTERNAL[raiser]}") and "-v" in lines[0], lines


def test_verbose_adds_the_traceback_above_the_same_line(tmp_path, capsys):
    quiet = _run(_bug_value, tmp_path, capsys)[1]
    loud = _run(_bug_value, tmp_path, capsys, verbose=True)[1]
    assert "Traceback (most recent call last):" in loud and loud[-1] == quiet[-1]
    assert any("reshape" in line for line in loud)


# The signal tests run in a child Python: a SIGTERM sent to the pytest process itself, after earlier tests
# have loaded OpenVINO, ONNX Runtime, torch and Ray with their native threads, killed the whole test run with a
# segmentation fault in CI (it passed alone). The child holds only run_cli, as a user's `mls` process would.
_SIGNAL_IN_RUN = """
import os, signal, sys
from utils.cli import run_cli
from utils import signals
from utils.stages import StageTimer
signum = int(sys.argv[1])
before = {s: signal.getsignal(s) for s in signals.TERMINATION_SIGNALS}
def main(argv):
    if sys.argv[2] == "swallowed":  # C++ running Python (torch's traceback symbolisation) dropped the interrupt
        with StageTimer("run").stage("calibrate"):
            try:
                os.kill(os.getpid(), signum)
            except KeyboardInterrupt:
                pass
        print("artifact written")
        return 0
    try:
        os.kill(os.getpid(), signum)
        raise AssertionError("the signal did not interrupt the run")
    except KeyboardInterrupt as exc:
        if sys.argv[2] == "library":  # a library turned the interrupt into an error of its own
            raise AttributeError("module 'sympy' has no attribute 'logic'") from exc
        raise
code = run_cli(main)
assert {s: signal.getsignal(s) for s in before} == before, "the handlers were not put back"
sys.exit(code)
"""


def _signal_in_run(signum: int, how: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _SIGNAL_IN_RUN, str(int(signum)), how], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_ends_the_run_with_128_plus_its_number(signum, code):
    """SIGHUP and SIGTERM sent to the process inside run_cli: the shell's codes, one line, and the handlers are
    put back afterwards."""
    done = _signal_in_run(signum, "plain")
    assert done.returncode == code, done.stderr
    assert done.stderr.strip().splitlines() == [f"terminated by {signal.Signals(signum).name}"]


def test_a_file_name_that_is_not_utf8_cannot_break_the_error_line(tmp_path, capsys):
    """The line itself holds the undecodable name: printed with a backslash escape, not a second traceback."""
    from utils.errors import SuiteError

    name = os.fsdecode(b"caf\xe9.jpg")

    def main(argv):
        raise SuiteError(f"cannot read image {name}")

    assert run_cli(main) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: cannot read image caf\\udce9.jpg"]


def test_a_signal_a_library_turned_into_another_exception_still_ends_the_run_as_stopped():
    """Seen in a real FX run: SIGTERM landed in an import inside torch, which surfaced as an AttributeError and
    then as the suite's own "FX cannot trace" line with exit code 2. The signal decides the outcome."""
    done = _signal_in_run(signal.SIGTERM, "library")
    assert done.returncode == 143, done.stderr
    assert done.stderr.strip().splitlines() == ["terminated by SIGTERM"]


def test_a_signal_a_library_swallowed_stops_the_run_at_the_end_of_the_stage():
    """Seen in a real FX run: SIGTERM landed in an import that C++ code inside torch ran, which dropped the
    interrupt, and the stopped run wrote its artifact with exit code 0. The stage that swallowed it re-raises it."""
    done = _signal_in_run(signal.SIGTERM, "swallowed")
    assert done.returncode == 143, done.stderr
    assert "artifact written" not in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "terminated by SIGTERM"
