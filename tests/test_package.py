"""The package (pyproject.toml): `pip install -e .` gives the `mls` command without copying the top-level
packages into site-packages; a regular install is refused with the reason."""
from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import REPO

from utils.errors import SuiteError


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A bare venv that sees this interpreter's packages (pip, setuptools, torch...) through a .pth, so the
    install needs no network; only the suite itself is installed into it."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    site = next(root.glob("lib/python*/site-packages"))
    (site / "shared.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root


def test_editable_install_gives_mls_and_copies_no_package(venv):
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    result = subprocess.run([*pip, "-e", str(REPO)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    site = next(venv.glob("lib/python*/site-packages"))
    assert not any((site / name).exists() for name in ("utils", "evaluation", "quantization", "resnet"))
    helped = subprocess.run([str(venv / "bin" / "mls"), "--help"], capture_output=True, text=True, timeout=60,
                            cwd=venv)
    assert helped.returncode == 0 and "mls compare" in helped.stdout
    wrong = subprocess.run([str(venv / "bin" / "mls"), "quantize"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and wrong.stderr.strip().count("\n") == 0
    assert "needs a toolchain first" in wrong.stderr


def test_regular_install_is_refused(venv, tmp_path):
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "wheel", "-q", "--no-deps",
                             "--no-build-isolation", "-w", str(tmp_path), str(REPO)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "installs only in editable mode" in result.stderr + result.stdout
    assert not list(tmp_path.glob("*.whl"))


def test_every_subcommand_names_an_entry_point():
    from resnet import mls

    for argv in ([name] for name in mls.COMMANDS):
        entry, rest = mls.dispatch(argv)
        assert callable(entry) and rest == []
    for command, table in (("quantize", mls.QUANTIZE), ("evaluate", mls.EVALUATE)):
        for toolchain in table:
            entry, rest = mls.dispatch([command, toolchain, "--help"])
            assert callable(entry) and rest[-1] == "--help"
    assert mls.dispatch(["quantize", "ort"])[1] == ["--engine", "ort"]
    with pytest.raises(SuiteError, match="needs a toolchain first"):
        mls.dispatch(["evaluate"])
