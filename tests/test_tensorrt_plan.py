"""Every TensorRT decision, tested without TensorRT or a GPU (issue 29: defects 2-11, one test or more each).

The pure decisions (quantization/TensorRT/plan.py) are tested directly. Where the question is what the
builder or runner calls, and in what order, ``tests/trt_standin.py`` stands in for the named bindings
(signatures from NVIDIA's pyCore.cpp); those tests check control flow only, never a figure.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from quantization.run_config import RunConfig
from quantization.TensorRT import plan
from tests.conftest import run_script
from tests.trt_standin import make_torch_cuda, make_trt
from utils.errors import SuiteError, ToolchainUnavailable

SCRIPT = "quantization/TensorRT/tensorrt_PTQ_pth2trt_int8.py"


@pytest.fixture
def standin(monkeypatch):
    """Install a ``tensorrt`` stand-in of a given version as if TensorRT and a GPU were here."""
    import quantization.TensorRT.engine_builder as eb
    import quantization.TensorRT.trt_quantizer as tq

    def install(version: str, **kwargs):
        calls: list = []
        monkeypatch.setitem(sys.modules, "tensorrt", make_trt(version, calls, **kwargs))
        monkeypatch.setattr(tq, "tensorrt_unavailable_reason", lambda: None)
        eb.trt_logger.cache_clear()
        return sys.modules["tensorrt"], calls
    yield install
    eb.trt_logger.cache_clear()


def _spec(tmp_path: Path, precision: str, profile: plan.BatchProfile | None = None):
    from quantization.TensorRT.engine_builder import EngineSpec

    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"onnx")
    return EngineSpec(onnx, "input", (3, 8, 8), profile or plan.batch_profile(16, 64), 1.0, precision)


# ---------------------------------------------------------------- defect 2: TensorRT 11 + --calibrator
def test_calibrator_refused_on_tensorrt_11_and_where_tensorrt_is_missing():
    assert "no implicit INT8 calibration (removed in 11)" in plan.implicit_int8_refusal("entropy", "11.1.0", None)
    assert "needs TensorRT on a GPU: no CUDA device" in plan.implicit_int8_refusal("minmax", None, "no CUDA device")
    assert plan.implicit_int8_refusal("entropy", "10.3.0", None) is None
    assert plan.implicit_int8_refusal(None, "11.1.0", None) is None


def test_quantizer_refuses_calibrator_on_tensorrt_11_when_made(standin):
    """Made = before any work (resnet.run lists it as skipped: ToolchainUnavailable, not an AttributeError)."""
    from quantization.TensorRT.trt_quantizer import TensorRTQuantizer

    standin("11.1.0")
    cfg = RunConfig()
    cfg.tensorrt.calibrator = "entropy"
    with pytest.raises(ToolchainUnavailable, match="TensorRT 11.1.0 has no implicit INT8"):
        TensorRTQuantizer(cfg)
    standin("10.3.0")
    assert TensorRTQuantizer(cfg).settings()["mode"] == "legacy implicit (entropy)"


# ---------------------------------------------------------------- defect 3: --max-batch 8
def test_profile_refuses_opt_above_max_and_names_the_fix():
    with pytest.raises(SuiteError, match=r"give --opt-batch 8 with --max-batch 8"):
        plan.batch_profile(16, 8)
    assert plan.batch_profile(8, 8).shapes((3, 4, 4)) == ((1, 3, 4, 4), (8, 3, 4, 4), (8, 3, 4, 4))


def test_build_sets_a_consistent_profile(standin, tmp_path):
    from quantization.TensorRT.engine_builder import build_engine

    _, calls = standin("10.16.0")
    assert build_engine(_spec(tmp_path, "int8", plan.batch_profile(8, 8))) == b"standin-plan"
    assert ("set_shape", "input", (1, 3, 8, 8), (8, 3, 8, 8), (8, 3, 8, 8)) in calls


@pytest.mark.parametrize("flags", [("--max-batch", "8"), ("--calibrator", "entropy")])
def test_script_refuses_before_any_work(tmp_path: Path, flags):
    """Acceptance 2: one line, exit 2, nothing written, and no longer than the script's own --help (which imports
    the same modules and does nothing) plus 3 s; preparing the data and model and ModelOpt's spawned child
    take longer than that (the whole flow ran 12.6 s here, the refusal about 5 s)."""
    start = time.perf_counter()
    run_script(SCRIPT, "--help", timeout=120)
    baseline = time.perf_counter() - start
    start = time.perf_counter()
    result = run_script(SCRIPT, *flags, "--models-dir", str(tmp_path / "models"), timeout=120)
    seconds = time.perf_counter() - start
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-1500:]
    assert len(errors) == 1 and ("--opt-batch" in errors[0] or "--calibrator entropy" in errors[0]), errors
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").rglob("*"))
    assert seconds < baseline + 3, f"{seconds:.1f} s vs --help {baseline:.1f} s: work happened before the refusal"


# ---------------------------------------------------------------- defect 4: Q/DQ verdicts
def _conv_then_float_gemm(path: Path) -> Path:
    """x -> Q/DQ -> Conv (INT8 weights) -> Flatten -> Gemm with float weights (what ModelOpt leaves)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.int8(rng.integers(-100, 100, (8, 4, 3, 3))), "w_q"),
             numpy_helper.from_array(np.full(8, 0.05, np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(8, np.int8), "w_zp"),
             numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(0, np.int8), "x_zp"),
             numpy_helper.from_array(rng.normal(size=(32, 512)).astype(np.float32), "fc_w")]
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w_dq"], name="w_dq", axis=0),
             helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="x_q"),
             helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="x_dq"),
             helper.make_node("Conv", ["x_dq", "w_dq"], ["c"], name="conv0", pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["c"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc_w"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), path)
    return path


def test_a_float_gemm_left_by_the_quantizer_is_a_note_not_an_error(tmp_path: Path):
    from quantization.TensorRT.qdq_check import require_valid_qdq

    report = require_valid_qdq(_conv_then_float_gemm(tmp_path / "m.onnx"))
    assert report.quantized_layers == ["conv0"] and report.float_layers == ["fc"]
    assert any("fc: Gemm runs in high precision" in n for n in report.notes)


# ---------------------------------------------------------------- defect 5: calibration batches
def test_calibration_plan_feeds_equal_opt_sized_batches_covering_the_sample():
    p = plan.calibration_plan(300, 16)
    assert p.step == 15 and {b - a for a, b in p.batches} == {15} and p.batches[-1][1] == 300
    assert p.profile == plan.BatchProfile(15, 15, 15)  # the calibration profile's opt is what is fed
    assert plan.calibration_plan(256, 16).step == 16


def test_legacy_calibrator_batch_size_and_calibration_profile_follow_the_plan(standin, tmp_path):
    from quantization.TensorRT.engine_builder import build_engine, make_legacy_calibrator

    _, calls = standin("10.3.0")
    steps = plan.calibration_plan(300, 16)
    calibrator = make_legacy_calibrator("entropy", lambda: iter(()), steps, tmp_path / "c.cache")
    assert calibrator.get_batch_size() == 15
    build_engine(_spec(tmp_path, "int8"), calibrator=calibrator, calibration=steps)
    assert ("set_calibration_profile",) in calls
    assert ("set_shape", "input", (15, 3, 8, 8), (15, 3, 8, 8), (15, 3, 8, 8)) in calls
    assert ("set_flag", "INT8") in calls


# ---------------------------------------------------------------- runner: defects 6, 7, 9 and the context
def _runner(standin, **kwargs):
    from evaluation.pipelines.tensorrt_runner import TensorRTRunner
    from utils.artifacts import Artifact

    trt, calls = standin("10.16.0", **kwargs)
    torch = make_torch_cuda(calls)
    runner = TensorRTRunner.__new__(TensorRTRunner)
    runner.artifact, runner.threads = Artifact(Path("m.plan"), "trt_plan", "tensorrt", "int8", {}), None
    runner.attach(trt.Engine(), trt, torch, torch.cuda.Stream("trt"))
    return runner, calls


def test_timing_interval_holds_only_the_enqueue(standin):
    runner, calls = _runner(standin)
    call = runner.timed_call(np.zeros((4, 3, 8, 8), np.float32))
    calls.clear()
    call()
    names = [c[0] for c in calls]
    assert names == ["start.record", "execute_async_v3", "end.record", "end.synchronize"], names
    assert calls[0][1] == calls[2][1] == "trt"  # both events on the runner's stream


def test_binding_happens_before_timing_once(standin):
    runner, calls = _runner(standin)
    runner.timed_call(np.zeros((4, 3, 8, 8), np.float32))
    names = [c[0] for c in calls]
    assert "set_input_shape" in names and names.count("set_tensor_address") == 2
    assert "start.record" not in names and "execute_async_v3" not in names


def test_a_timed_call_rebinds_its_own_batch_outside_the_interval(standin):
    runner, calls = _runner(standin)
    first = runner.timed_call(np.zeros((1, 3, 8, 8), np.float32))
    runner.timed_call(np.zeros((16, 3, 8, 8), np.float32))  # the context now holds batch 16
    calls.clear()
    first()
    names = [c[0] for c in calls]
    assert ("set_input_shape", "input", (1, 3, 8, 8)) in calls
    assert names.index("set_input_shape") < names.index("start.record")
    assert names[names.index("start.record"):] == ["start.record", "execute_async_v3", "end.record", "end.synchronize"]


def test_batch_above_the_profile_is_one_clear_line(standin):
    runner, _ = _runner(standin, max_batch=8)
    with pytest.raises(SuiteError, match=r"batch 16 is outside the engine's profile \(max batch 8\)"):
        runner.predict(np.zeros((16, 3, 8, 8), np.float32))


def test_input_conversion_runs_on_the_enqueue_stream(standin):
    runner, calls = _runner(standin)
    runner.run_device(runner._torch.from_numpy(np.zeros((2, 3, 8, 8), np.float32)))
    assert ("wait_stream", "trt", "torch-default") in calls
    to = next(c for c in calls if c[0] == "to")
    assert to[2] == "trt"  # issued while the runner's stream was current
    assert calls.index(to) < next(i for i, c in enumerate(calls) if c[0] == "execute_async_v3")


def test_no_execution_context_is_one_clear_line(standin):
    with pytest.raises(SuiteError, match="could not create an execution context"):
        _runner(standin, context_ok=False)


def test_one_tensorrt_logger_per_process(standin, tmp_path):
    from evaluation.pipelines.tensorrt_runner import deserialize
    from quantization.TensorRT.engine_builder import build_engine, trt_logger

    trt, calls = standin("10.16.0")
    trt.Runtime = lambda logger: type("R", (), {"deserialize_cuda_engine": lambda self, data: object()})()
    build_engine(_spec(tmp_path, "int8"))
    build_engine(_spec(tmp_path, "fp32"))
    deserialize(b"x", "m.plan")
    assert [c for c in calls if c[0] == "Logger"] == [("Logger", "WARNING")] and trt_logger() is trt_logger()


# ---------------------------------------------------------------- defect 8: --cluster
def test_cluster_builds_and_evaluates_tensorrt_on_the_driver(monkeypatch):
    from evaluation.cluster import sharded
    from evaluation.pipelines import loop
    from evaluation.pipelines.tensorrt_runner import TensorRTRunner
    from quantization.TensorRT.trt_quantizer import TensorRTQuantizer

    assert TensorRTQuantizer.driver_only and TensorRTRunner.driver_only
    seen = []
    monkeypatch.setattr(loop, "local_accuracy", lambda *args: seen.append(args) or ({}, np.zeros(0)))
    monkeypatch.setattr(sharded, "import_ray", lambda: pytest.fail("a driver-only runtime went to Ray"))
    accuracy = sharded.ShardedAccuracy.__new__(sharded.ShardedAccuracy)
    accuracy.splits = splits = object()
    runner = TensorRTRunner.__new__(TensorRTRunner)
    accuracy("tensorrt", [runner], splits, 32)
    assert seen == [("tensorrt", [runner], splits, 32)]


# ---------------------------------------------------------------- defect 10: TF32
def test_fp32_reference_engine_clears_tf32(standin, tmp_path):
    from quantization.TensorRT.engine_builder import build_engine

    _, calls = standin("11.1.0")
    build_engine(_spec(tmp_path, "fp32"))
    assert ("clear_flag", "TF32") in calls and ("create_network", 0) in calls  # 11: strongly typed always
    calls.clear()
    build_engine(_spec(tmp_path, "int8"))
    assert ("clear_flag", "TF32") not in calls
    _, calls = standin("10.16.0")
    build_engine(_spec(tmp_path, "int8"))
    assert ("create_network", 1 << 1) in calls  # 10: STRONGLY_TYPED (= 1) asked for


# ---------------------------------------------------------------- defect 11: the smaller ones
def test_tensorrt_requirement_is_bounded_below_11():
    from packaging.requirements import Requirement

    lines = [line for line in (Path(__file__).parents[1] / "requirements/tensorrt.txt").read_text().splitlines()
             if line.startswith("tensorrt")]
    spec = Requirement(lines[0]).specifier
    assert "10.3.0" in spec and "10.16.1" in spec and "11.0.0" not in spec


def test_modelopt_never_puts_the_tensorrt_ep_first_by_default(monkeypatch):
    from quantization.ModelOpt import modelopt_quantizer as mq

    monkeypatch.setattr(mq, "has_cuda_gpu", lambda: True)
    monkeypatch.setattr(mq, "has_module", lambda name: True, raising=False)  # TensorRT installed too
    assert mq.default_calibration_eps() == ["cuda:0", "cpu"]


def test_legacy_engine_builds_from_the_onnx_its_name_says(monkeypatch):
    from quantization.TensorRT.trt_quantizer import TensorRTQuantizer
    from utils.artifacts import Artifact

    quantizer = TensorRTQuantizer(RunConfig())
    own = Artifact(Path("demo-random_fp32_opset17_cle.onnx"), "onnx", "onnx", "fp32", {})
    monkeypatch.setattr(quantizer.qdq, "source_onnx", lambda model: own)
    monkeypatch.setattr(quantizer.qdq, "export_fp32", lambda model: pytest.fail("the untransformed export"))
    assert quantizer.legacy_source_onnx(object()) == own.path


def test_calibration_cache_key_changes_with_sample_and_onnx():
    key = plan.calibration_cache_name("m_calib", "entropy", "a" * 64, "b" * 64, 15)
    assert key != plan.calibration_cache_name("m_calib", "entropy", "a" * 64, "c" * 64, 15)  # other sample
    assert key != plan.calibration_cache_name("m_calib", "entropy", "d" * 64, "b" * 64, 15)  # other ONNX
    assert key != plan.calibration_cache_name("m_calib", "entropy", "a" * 64, "b" * 64, 16)  # other step


@pytest.mark.parametrize("argv, message", [
    (["--precisions", "fp32,bf16"], "--precisions bf16: unknown"),
    (["--opset", "26"], "--opset 26: TensorRT 10.x's ONNX parser takes opsets up to 20"),
    (["--adopt-engine", "x.plan"], "--adopt-engine needs --qdq-onnx"),
])
def test_bad_tensorrt_flags_are_one_line_before_any_work(tmp_path, capsys, argv, message):
    from quantization.TensorRT.cli import main
    from utils.cli import run_cli

    assert run_cli(main, [*argv, "--models-dir", str(tmp_path / "m")]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.rglob("*.onnx"))


def test_opset_bound_per_major():
    assert plan.opset_refusal(17, None) is None and plan.opset_refusal(25, "11.1.0") is None
    assert plan.opset_refusal(26, "11.1.0") and plan.opset_refusal(21, "10.3.0")


def test_trt_ptq_help_names_its_own_command(capsys):
    from resnet.run import main

    with pytest.raises(SystemExit) as exit_:
        main(["trt-ptq", "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage: python -m resnet.run trt-ptq")


# ---------------------------------------------------------------- the other-machine path
def _qdq_with_manifest(tmp_path: Path):
    from utils.artifacts import build_manifest, write_artifact

    source = _conv_then_float_gemm(tmp_path / "src.onnx")
    manifest = build_manifest(name="demo qdq", toolchain="tensorrt", kind="onnx_qdq", precision="int8",
                              settings={"nodes_excluded": []}, source_weights=None, calibration_ids=["a", "b"],
                              extra={"arch": "demo", "input_shape": [4, 8, 8], "num_classes": 10})
    final = tmp_path / "models" / "tensorrt" / "demo-random_modelopt_int8_max_fp16.onnx"
    return write_artifact(final, lambda tmp: tmp.write_bytes(source.read_bytes()), manifest, toolchain="tensorrt",
                          kind="onnx_qdq", precision="int8")


def test_qdq_onnx_checks_the_file_then_says_what_is_missing_without_modelopt(tmp_path: Path):
    from utils.hardware import tensorrt_unavailable_reason

    if tensorrt_unavailable_reason() is None:
        pytest.skip("TensorRT is available here: the missing-TensorRT path cannot be shown")
    qdq = _qdq_with_manifest(tmp_path)
    result = run_script(SCRIPT, "--qdq-onnx", str(qdq.path), "--models-dir", str(tmp_path / "models"), timeout=120)
    assert result.returncode == 2 and "Q/DQ ONNX:" in result.stdout and "1 INT8 layers" in result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith("error: TensorRT engine build cannot run here")
    assert not (tmp_path / "models" / "onnx").exists() and not list(tmp_path.rglob("*.plan"))


def test_adopted_engine_gets_the_manifest_artifact_needs(tmp_path: Path):
    from quantization.TensorRT.cli import main
    from utils.artifacts import load_artifact

    qdq = _qdq_with_manifest(tmp_path)
    engine = tmp_path / "from_trtexec.plan"
    engine.write_bytes(b"bytes trtexec wrote")
    assert main(["--qdq-onnx", str(qdq.path), "--adopt-engine", str(engine),
                 "--models-dir", str(tmp_path / "models")]) == 0
    adopted = load_artifact(tmp_path / "models" / "tensorrt" / "demo-random_modelopt_int8_max_fp16_adopted.plan")
    m = adopted.manifest
    assert (adopted.kind, adopted.precision, m["arch"], m["input_shape"]) == ("trt_plan", "int8", "demo", [4, 8, 8])
    assert m["calibration_sample_ids"] == ["a", "b"] and m["settings"]["adopted_from"] == str(engine)
    assert m["settings"]["source_onnx_sha256"] == qdq.manifest["sha256"]
    assert json.loads(adopted.manifest_path.read_text())["sha256"] == m["sha256"]


def test_gpu_check_says_what_is_missing_in_one_line(tmp_path: Path):
    from utils.hardware import tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT is available here: run make test-gpu itself")
    result = run_script("-m", "quantization.TensorRT.gpu_check", "--models-dir", str(tmp_path / "m"),
                        "--results-dir", str(tmp_path / "r"), timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: make test-gpu needs an NVIDIA GPU with TensorRT: {reason}"]
    assert not (tmp_path / "m").exists() and not (tmp_path / "r").exists()


def test_a_machine_without_modelopt_can_build_from_a_qdq_onnx_and_evaluate(monkeypatch):
    """A Jetson has TensorRT but no ModelOpt: the toolchain is available there for --qdq-onnx and --artifact."""
    import quantization.TensorRT.trt_quantizer as tq
    from quantization.ModelOpt.modelopt_quantizer import ModelOptQuantizer

    monkeypatch.setattr(tq, "tensorrt_unavailable_reason", lambda: None)
    monkeypatch.setattr(ModelOptQuantizer, "unavailable_reason", classmethod(lambda cls: "needs nvidia-modelopt"))
    assert tq.TensorRTQuantizer.unavailable_reason() is None


def test_the_script_runs_modelopt_once(monkeypatch, tmp_path):
    """The Q/DQ step ran twice on a GPU host (once for the printout, once inside quantize): control flow only."""
    from types import SimpleNamespace

    from quantization.TensorRT import cli
    from quantization.TensorRT.qdq_check import QdqReport
    from quantization.TensorRT.trt_quantizer import TensorRTQuantizer

    qdq = SimpleNamespace(path=tmp_path / "q.onnx", manifest={})
    runs, built = [], []
    monkeypatch.setattr(cli, "prepare", lambda cfg: SimpleNamespace(model="m", calibration="c",
                                                                    model_for=lambda q: "m"))
    monkeypatch.setattr(TensorRTQuantizer, "qdq_onnx", lambda self, m, c: runs.append(1) or (qdq, QdqReport()))
    monkeypatch.setattr(TensorRTQuantizer, "int8_engine", lambda self, m, q: built.append(q) or SimpleNamespace(
        precision="int8", path="i.plan"))
    monkeypatch.setattr(TensorRTQuantizer, "export_fp32", lambda self, m: SimpleNamespace(precision="fp32", path="f"))
    monkeypatch.setattr(TensorRTQuantizer, "extra_artifacts", lambda self, m: [])
    assert cli.main(["--models-dir", str(tmp_path / "m")]) == 0
    assert runs == [1] and built == [qdq]


def test_modelopt_gemv_left_float_passes_the_check(tmp_path: Path):
    """The issue's CPU reproduction through ModelOpt itself: a calibration step of 1 makes each classifier Gemm
    a GEMV that ModelOpt leaves float (MobileNetV3-Small, random weights, 1000 classes: K and N above 16). The
    check used to stop the toolchain there; TensorRT runs such nodes in fp16 (about 35 s here)."""
    from quantization.TensorRT.trt_quantizer import TensorRTQuantizer
    from quantization.workflow import prepare
    from tests.conftest import asset

    cfg = RunConfig()
    cfg.model.arch, cfg.models_dir = "mobilenet_v3_small", str(tmp_path / "models")
    cfg.data.dataset, cfg.data.root, cfg.data.limit = "imagenet", str(asset("imagenet-val-1300")), 32
    cfg.calibration.size, cfg.calibration.batch_size = 16, 1
    prepared = prepare(cfg)
    quantizer = TensorRTQuantizer(cfg)
    _, report = quantizer.qdq_onnx(prepared.model_for(quantizer), prepared.calibration)
    gemms = [n for n in report.float_layers if n.endswith("Gemm")]
    assert report.ok and report.quantized_layers and gemms, report.float_layers
    assert all(any(f"{g}: Gemm runs in high precision" in note for note in report.notes) for g in gemms)
