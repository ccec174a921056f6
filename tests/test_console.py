"""The console of a run whose output is not a terminal (a CI log, a pipe): the banner first, no progress-bar
frames, no library chatter (ModelOpt's "Failed to get GPU count") -- that goes to the run log -- and the last
lines name the INT8 artifacts, the recommendation and the report."""
from __future__ import annotations

import pytest
from conftest import run_script

from utils import console


@pytest.mark.parametrize("quiet", [False, True])
def test_demo_run_piped_is_clean_and_ends_with_what_to_ship(tmp_path, quiet):
    pytest.importorskip("modelopt.onnx.quantization", reason="ModelOpt (requirements/base.txt) is not installed")
    result = run_script("-m", "resnet.run", "--toolchains", "modelopt,ort", "--runtimes", "onnxruntime",
                        "--limit", "60", "--calib-size", "32", "--rounds", "1", "--warmup", "0",
                        "--bench-batch-sizes", "1", "--models-dir", str(tmp_path / "models"),
                        "--results-dir", str(tmp_path / "results"), "--run-name", "piped",
                        *(["-q"] if quiet else []))
    assert result.returncode == 0, result.stderr[-3000:]
    both = result.stdout + result.stderr
    assert "%|" not in both and "\r" not in both  # no tqdm frames on either stream
    assert "Failed to get GPU count" not in both
    log = tmp_path / "results" / "piped.log"
    assert log.is_file()
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == f"report: {tmp_path / 'results' / 'piped' / 'report.md'}"
    assert lines[-2].startswith("recommendation: ")
    assert any(line.startswith("artifact: ") and "modelopt" in line for line in lines)
    assert lines[0].startswith("model:") != quiet  # the banner, unless -q
    if quiet:
        assert " INFO " not in result.stderr


def test_progress_bars_follow_quiet():
    console.setup_console(quiet=True)
    assert console.progress_disabled() is True
    console.setup_console()
    assert console.progress_disabled() is None  # tqdm: drawn only on a terminal


def test_banner_lines_align():
    lines = console.banner_lines([("model", "demo"), ("toolchains", "ort")])
    assert lines == ["model:      demo", "toolchains: ort"]
