"""Issue #30, point 1: output names are names. ``--run-name ~/victim`` once deleted the victim folder; now every
name that becomes a path component is refused in one line before any work, and the suite replaces only
folders that carry its own completeness marker."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_script
from utils.artifacts import staged_folder
from utils.errors import SuiteError
from utils.names import COMPLETE_MARKER, check_output_name, check_replaceable, fit_name

EVALUATE = "evaluation/comprehensive_evaluation_torch_int8.py"


def _victim(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "important.txt").write_text("keep")
    return folder


@pytest.mark.parametrize("name", ["~/victim", "../../victim", ".."])
def test_the_issues_run_names_are_refused_before_any_work_and_delete_nothing(tmp_path, name):
    """The reproduction of #30 point 1, with a real victim folder: `~/victim` as the shell expands it (an
    absolute path), `../../victim` (from results/torch/ to the victim beside results/), and `..`."""
    base = tmp_path / "work"
    victim = _victim(base / "victim")
    results, models = base / "results", base / "models"
    run_name = str(victim) if name.startswith("~") else name
    result = run_script(EVALUATE, "--arch", "resnet20", "--num-classes", "10", "--calib-size", "16",
                        "--models-dir", str(models), "--results-dir", str(results), "--run-name", run_name)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--run-name" in errors[0] and "plain name" in errors[0], result.stderr[-2000:]
    assert (victim / "important.txt").read_text() == "keep"
    assert sorted(p.name for p in base.iterdir()) == ["victim"]  # no models, no results, no .tmp-* anywhere


@pytest.mark.parametrize("name", ["", " ", ".", "..", "a/b", "/abs", "a\\b", "x" * 250, "nul\0byte"])
def test_every_kind_of_bad_name_is_one_line(name):
    with pytest.raises(SuiteError, match="--run-name"):
        check_output_name(name, "--run-name")
    assert check_output_name("run-2024.01_a", "--run-name") == "run-2024.01_a"


def test_a_run_name_from_yaml_is_checked_like_the_flag(tmp_path):
    from quantization.run_config import load_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text("run_name: ../../victim\n")
    with pytest.raises(SuiteError, match="--run-name '../../victim' must be a plain name"):
        load_config(recipe)
    with pytest.raises(SuiteError, match="--recipe"):
        from utils.config import load_recipe

        load_recipe("../../configs/demo")


def test_a_folder_the_suite_did_not_write_is_never_replaced(tmp_path):
    victim = _victim(tmp_path / "results" / "run")
    with pytest.raises(SuiteError, match=f"was not written by this suite \\(no {COMPLETE_MARKER} marker\\)"):
        check_replaceable(victim, "--run-name folder")
    with pytest.raises(SuiteError, match="was not written by this suite"):  # the commit checks again, under the lock
        with staged_folder(victim) as staging:
            (staging / "report.json").write_text("{}")
    assert sorted(p.name for p in victim.iterdir()) == ["important.txt"]
    assert sorted(p.name for p in victim.parent.iterdir()) == ["run"]  # the staging folder is gone too


def test_a_folder_the_suite_wrote_is_replaced_whole(tmp_path):
    final = tmp_path / "results" / "run"
    for run in (1, 2):
        with staged_folder(final) as staging:
            (staging / "report.json").write_text(f'{{"run": {run}}}')
        assert (final / COMPLETE_MARKER).is_file() and (final / "report.json").read_text() == f'{{"run": {run}}}'
    check_replaceable(final, "--run-name folder")
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty", "--run-name folder")  # nothing to lose
    link = tmp_path / "results" / "link"
    link.symlink_to(_victim(tmp_path / "elsewhere"))
    with pytest.raises(SuiteError, match="is not a folder the suite wrote"):
        check_replaceable(link, "--run-name folder")


def test_long_derived_names_fit_a_file_name_and_stay_distinct():
    long_a, long_b = "w" * 300 + "a", "w" * 300 + "b"
    assert fit_name("short") == "short"
    assert len(fit_name(long_a)) <= 120 and fit_name(long_a) != fit_name(long_b)


def test_a_name_too_long_for_the_manifests_temporary_is_one_line_and_leaves_nothing(tmp_path):
    """The artifact's temporary fits NAME_MAX, the manifest's (14 bytes longer) does not: the first one used to
    stay behind as a 0-byte .tmp-* file, and ENAMETOOLONG was a traceback."""
    from utils.artifacts import write_artifact

    final = tmp_path / ("m" * 232 + ".pt")
    with pytest.raises(SuiteError, match="cannot write .*file name too long"):
        write_artifact(final, lambda tmp: tmp.write_bytes(b"x"), {"name": "m", "kind": "torchscript", "toolchain": "t",
                       "precision": "int8"}, toolchain="t", kind="torchscript", precision="int8")
    assert [p.name for p in tmp_path.iterdir()] == [f".{final.name}.lock"]
