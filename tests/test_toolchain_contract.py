"""The toolchain contract, checked for every registered toolchain (NNCF's template-test pattern): its flags
parse into its own sections, it writes an INT8 artifact with a valid manifest, and the runtime its manifest
recommends runs that artifact. A toolchain whose package is missing here is skipped with the reason."""
import argparse
import importlib.util

import numpy as np
import pytest

from quantization.registry import TOOLCHAINS, add_toolchain_flags, quantizer_class, sections_of

NAMES = list(TOOLCHAINS)


def _available(name: str) -> None:
    reason = quantizer_class(name).unavailable_reason()
    if reason:
        pytest.skip(f"toolchain {name} cannot run here: {reason}")


@pytest.mark.parametrize("name", NAMES)
def test_its_flags_parse_into_its_own_sections(name):
    from quantization.run_config import RunConfig, config_from_args

    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=None)
    add_toolchain_flags(parser, [name])
    own = {section.name for section in sections_of([name])}
    dests = {a.dest for a in parser._actions if a.option_strings and a.dest not in ("help", "config")}
    assert dests and {d.split(".")[0] for d in dests} <= own  # every flag writes into a section it reads
    assert quantizer_class(name).section in own
    assert config_from_args(parser.parse_args([])) == RunConfig()  # no flag given: the defaults
    for action in parser._actions:  # each choice flag takes each of its choices into its config key
        if action.choices and action.option_strings:
            section, key = action.dest.split(".")
            for value in action.choices:
                cfg = config_from_args(parser.parse_args([action.option_strings[0], value]))
                assert str(getattr(getattr(cfg, section), key)) == value


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from quantization.run_config import load_config
    from quantization.workflow import prepare

    cfg = load_config(None, {"calibration.size": 32, "models_dir": str(tmp_path_factory.mktemp("models")),
                             "torch.qat_steps": 2, "torch.qat_batch_size": 8, "torch.qat_freeze_bn_after": 1,
                             "torch.qat_freeze_observers_after": 1})
    return cfg, prepare(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_it_writes_a_valid_artifact_that_its_recommended_runtime_runs(name, demo):
    from evaluation.pipelines.loop import open_runner
    from quantization.workflow import run_toolchain
    from utils.artifacts import load_artifact

    _available(name)
    cfg, prepared = demo
    fp32, int8, *_ = run_toolchain(name, cfg, prepared)
    again = load_artifact(int8.path)  # checks the file against its manifest's sha256
    manifest = again.manifest
    assert (again.precision, again.kind, again.toolchain) == ("int8", int8.kind, int8.toolchain)
    assert manifest["sha256"] and manifest["settings"] and manifest["arch"] == prepared.model.arch
    ids = manifest.get("calibration_sample_ids") or []  # dynamic: none; QAT: the images it trained on
    assert manifest["calibration_sample_count"] == len(ids) and manifest["target"]
    assert not set(ids) & set(prepared.splits.evaluation_ids)  # never an evaluation image
    runtime = manifest["recommended_runtime"]
    assert runtime == quantizer_class(name).runtimes[0]
    batch = np.stack([prepared.splits.evaluation[i][0].numpy() for i in range(4)]).astype(np.float32)
    logits = open_runner(again, runtime).predict(batch)
    reference = open_runner(load_artifact(fp32.path), runtime).predict(batch)
    assert logits.shape == reference.shape == (4, prepared.model.num_classes)
    assert np.isfinite(logits).all()


@pytest.mark.parametrize("name", NAMES)
def test_its_library_modules_exist(name):
    """bench/quantize_time.py imports these before its clock: a name that is not a module would fail there."""
    _available(name)
    assert all(importlib.util.find_spec(module) is not None for module in quantizer_class(name).library_modules)
