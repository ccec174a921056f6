"""The Python API (quantization.api.quantize, evaluation.api.compare): the README's example, run as written in a
fresh process on a DataLoader, finds an artifact and a report; bad inputs are one SuiteError."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO

from quantization.api import as_tensors
from utils.errors import SuiteError

MARKER = "<!-- api-example: tests/test_api.py runs this block -->"


def readme_api_example() -> str:
    text = (REPO / "README.md").read_text()
    assert MARKER in text, "the README's Python API example lost its marker"
    block = text.split(MARKER, 1)[1].split("```python", 1)[1].split("```", 1)[0]
    return block


def test_readme_api_example_runs_as_written(tmp_path):
    result = subprocess.run([sys.executable, "-c", readme_api_example()], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    artifact, report = Path(lines[0]), Path(lines[1])
    manifest = json.loads(artifact.with_name(artifact.name + ".manifest.json").read_text())
    made = [artifact, Path(manifest["fp32_onnx"]), Path(manifest["source_weights"])]
    try:
        assert artifact.is_file() and artifact.with_name(artifact.name + ".manifest.json").is_file()
        assert report.name == "report.md" and report.is_file() and (report.parent / "report.json").is_file()
        assert any(line.startswith("Batch ") for line in lines[2:])  # the recommendation sentences
    finally:  # the example writes under the repository's models/ and results/, as the CLI does
        shutil.rmtree(report.parent, ignore_errors=True)
        for path in made:
            for file in (path, path.with_name(path.name + ".manifest.json")):
                file.unlink(missing_ok=True)


def test_calibration_forms_agree():
    images, labels = torch.randn(8, 3, 4, 4), torch.arange(8)
    batches = [(images[:4], labels[:4]), (images[4:], labels[4:])]
    from_batches = as_tensors(batches, "calibration")
    from_array = as_tensors(images.numpy(), "calibration")
    assert torch.equal(from_batches[0], images) and torch.equal(from_batches[1], labels)
    assert torch.equal(from_array[0], images) and (from_array[1] == -1).all()


@pytest.mark.parametrize("bad", [np.zeros((3, 4, 4)), [], np.full((1, 3, 2, 2), np.nan), 7])
def test_bad_calibration_is_one_error(bad):
    with pytest.raises(SuiteError):
        as_tensors(bad, "calibration")
