"""ModelOpt and ONNX Runtime quantize_static: each setting must reach the Q/DQ artifact."""
import copy
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper as nh
import pytest

from evaluation.pipelines.onnxruntime_kernels import int8_activations_fuse
from quantization.onnx_quantizer import calibration_step
from quantization.registry import quantizer_class
from quantization.run_config import RunConfig
from quantization.workflow import prepare, run_toolchain
from tests.conftest import run_script


@pytest.fixture(scope="module")
def base_cfg(tmp_path_factory) -> RunConfig:
    cfg = RunConfig()
    cfg.models_dir = str(tmp_path_factory.mktemp("models"))
    cfg.calibration.size = 64
    return cfg


@pytest.fixture(scope="module")
def prepared(base_cfg):
    return prepare(base_cfg)


def _quantize(base_cfg, prepared, toolchain: str, **settings):
    """Quantize with ``settings`` in the toolchain's own config section (cfg.modelopt, cfg.ort)."""
    cfg = copy.deepcopy(base_cfg)
    section = getattr(cfg, quantizer_class(toolchain).section)
    for key, value in settings.items():
        setattr(section, key, value)
    fp32, int8, *_ = run_toolchain(toolchain, cfg, prepared)
    return fp32, int8, onnx.load(str(int8.path))


def _inits(model) -> dict:
    return {i.name: nh.to_array(i) for i in model.graph.initializer}


def _producers(model) -> dict:
    return {o: n for n in model.graph.node for o in n.output}


def _input_scale(model) -> float:
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    return float(_inits(model)[q.input[1]])


def _activation_scales(model) -> list[float]:
    inits = _inits(model)
    return [float(inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits and inits[n.input[1]].size == 1]


def _quantized_convs(model) -> set[str]:
    prod = _producers(model)
    return {n.name for n in model.graph.node if n.op_type == "Conv"
            and prod.get(n.input[0]) is not None and prod[n.input[0]].op_type == "DequantizeLinear"}


@pytest.mark.slow
def test_modelopt_calibration_method_and_dtype_reach_the_artifact(base_cfg, prepared):
    fp32, max_art, max_model = _quantize(base_cfg, prepared, "modelopt", calibration_method="max")
    _, ent_art, ent_model = _quantize(base_cfg, prepared, "modelopt", calibration_method="entropy")
    assert max_art.path != ent_art.path
    assert _activation_scales(max_model) != pytest.approx(_activation_scales(ent_model))
    assert max_art.manifest["settings"]["calibration_method"] == "max"
    assert max_art.manifest["settings"]["calibration_eps"] == ["cpu"]  # no GPU here
    # symmetric signed INT8, TensorRT-style
    zps = [_inits(max_model)[n.input[2]] for n in max_model.graph.node
           if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in _inits(max_model)]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)
    has_fp16 = lambda m: any(i.data_type == onnx.TensorProto.FLOAT16 for i in m.graph.initializer)  # noqa: E731
    assert not has_fp16(max_model)
    _, _, fp16_model = _quantize(base_cfg, prepared, "modelopt", high_precision_dtype="fp16")
    assert has_fp16(fp16_model)


@pytest.mark.slow
def test_modelopt_entropy_calibrates_in_the_configured_batches(base_cfg, prepared, caplog):
    """Without calibration_shapes ModelOpt steps image by image; entropy's search then starts at the first image."""
    from quantization.ModelOpt.modelopt_quantizer import calibration_shapes

    assert calibration_shapes({"input": np.zeros((50, 3, 32, 32), np.float32)}, 32) == "input:25x3x32x32"
    assert "step 1 at a time" not in caplog.text
    assert calibration_shapes({"input": np.zeros((257, 3, 32, 32), np.float32)}, 32) == "input:1x3x32x32"
    assert "257 calibration images step 1 at a time" in caplog.text
    cfg = copy.deepcopy(base_cfg)
    cfg.calibration.batch_size = 1
    _, one, one_model = _quantize(cfg, prepared, "modelopt", calibration_method="entropy")
    _, batched, batched_model = _quantize(base_cfg, prepared, "modelopt", calibration_method="entropy")
    assert one.manifest["settings"]["calibration_batch_size"] == 1
    assert batched.manifest["settings"]["calibration_batch_size"] == 32
    assert _activation_scales(one_model) != pytest.approx(_activation_scales(batched_model))


@pytest.mark.slow
def test_modelopt_node_and_op_exclusions_reach_the_artifact(base_cfg, prepared, caplog):
    _, _, full = _quantize(base_cfg, prepared, "modelopt")
    first_conv = sorted(_quantized_convs(full))[0]
    pattern = "^" + first_conv.replace("/", "\\/").replace(".", "\\.") + "$"
    _, art, excluded = _quantize(base_cfg, prepared, "modelopt", exclude_nodes=[pattern, "no_such_node.*"])
    assert art.manifest["settings"]["nodes_excluded"] == [first_conv]
    assert first_conv not in _quantized_convs(excluded)
    assert len(_quantized_convs(excluded)) == len(_quantized_convs(full)) - 1
    assert "matches no node" in caplog.text
    _, _, no_conv = _quantize(base_cfg, prepared, "modelopt", exclude_op_types=["Conv"])
    assert _quantized_convs(no_conv) == set()


def test_ort_op_type_exclusion_reaches_the_artifact(base_cfg, prepared):
    """ORT with Conv excluded keeps every conv weight float (other ops' Q/DQ may still feed a conv input)."""
    def int8_weight_convs(model) -> set[str]:
        prod = _producers(model)
        return {n.name for n in model.graph.node if n.op_type == "Conv"
                and prod.get(n.input[1]) is not None and prod[n.input[1]].op_type == "DequantizeLinear"}

    _, _, full = _quantize(base_cfg, prepared, "ort")
    _, _, no_conv = _quantize(base_cfg, prepared, "ort", exclude_op_types=["Conv"])
    assert int8_weight_convs(full) and int8_weight_convs(no_conv) == set()


@pytest.mark.slow
def test_ort_granularity_activation_type_and_method(base_cfg, prepared):
    _, art, pc = _quantize(base_cfg, prepared, "ort", calibration_method="minmax", granularity="per_channel")
    _, _, pt = _quantize(base_cfg, prepared, "ort", calibration_method="minmax", granularity="per_tensor")
    _, _, s8 = _quantize(base_cfg, prepared, "ort", calibration_method="minmax", activation_type="int8")
    _, _, pct = _quantize(base_cfg, prepared, "ort", calibration_method="percentile")

    def weight_scale_sizes(model):
        prod, inits = _producers(model), _inits(model)
        return [inits[prod[n.input[1]].input[1]].size for n in model.graph.node if n.op_type == "Conv"]

    assert max(weight_scale_sizes(pc)) > 1 and max(weight_scale_sizes(pt)) == 1
    input_zp = lambda m: _inits(m)[next(n for n in m.graph.node if n.op_type == "QuantizeLinear"  # noqa: E731
                                        and n.input[0] == "input").input[2]].dtype
    assert input_zp(pc) == np.uint8 and input_zp(s8) == np.int8
    assert _input_scale(pct) < _input_scale(pc)  # percentile clips the range MinMax keeps
    assert art.manifest["settings"]["activation_type"] == "uint8"


@pytest.mark.slow
def test_ort_histogram_calibrators_take_a_sample_that_is_not_a_multiple_of_the_batch(base_cfg):
    from quantization.ORT.ort_calibration import feed_batches

    cfg = copy.deepcopy(base_cfg)
    cfg.calibration.size = 50  # batch 32: ORT's entropy calibrator once failed on the short last batch
    _, art, _ = _quantize(cfg, prepare(cfg), "ort", calibration_method="entropy")
    assert art.manifest["calibration_sample_count"] == 50
    step = calibration_step(50, 32)
    assert [len(b["input"]) for b in feed_batches({"input": np.zeros((50, 1), np.float32)}, step)] == [25, 25]


@pytest.mark.slow
def test_onnx_int8_accuracy_on_the_demo(base_cfg, prepared):
    from evaluation.pipelines.loop import evaluate_artifacts

    cfg = copy.deepcopy(base_cfg)
    cfg.runtimes = ["onnxruntime"]
    cfg.benchmark.batch_sizes, cfg.benchmark.rounds, cfg.benchmark.warmup = [1], 1, 0
    fp32, mo, *_ = run_toolchain("modelopt", cfg, prepared)
    _, ort_art, *_ = run_toolchain("ort", cfg, prepared)
    results, _ = evaluate_artifacts([fp32, mo, ort_art], prepared.splits, cfg)
    for result in results:
        assert result.metrics["top1"] >= 0.95
        if result.artifact.precision == "int8":
            assert result.comparison["top1_drop_pp"] <= 1.0
    # the report's reason where INT8 runs slower than FP32 on ONNX Runtime (evaluation/pipelines/onnxruntime_kernels)
    notes = {r.artifact.toolchain: r.kernel_note for r in results if r.artifact.precision == "int8"}
    assert notes["ort"] is None  # ONNX Runtime's own placement: every quantized op runs as an integer kernel
    if not int8_activations_fuse():
        assert notes["modelopt"] and "as DequantizeLinear + float kernel" in notes["modelopt"]


SCRIPT = "quantization/ModelOpt/ModelOpt_PTQ.py"


def test_the_ort_toolchain_lives_under_quantization_ort_and_writes_models_ort():
    """One toolchain, one class, one package: the registry's ORT entry is quantization/ORT, its artifacts go to
    models/ort/, it reads cfg.ort; no Quantizer under quantization/ModelOpt is anything but ModelOpt's."""
    import importlib
    import inspect
    import pkgutil

    import quantization.ModelOpt
    from quantization.base import Quantizer
    from quantization.registry import TOOLCHAINS

    assert TOOLCHAINS["ort"].quantizer.startswith("quantization.ORT.ort_quantizer:")
    ort = quantizer_class("ort")
    assert (ort.folder, ort.section) == ("ort", "ort")
    assert Path(inspect.getfile(ort)).parent.name == "ORT"
    for info in pkgutil.iter_modules(quantization.ModelOpt.__path__):
        if info.name == "ModelOpt_PTQ":  # the entry script, not importable as a module
            continue
        module = importlib.import_module(f"quantization.ModelOpt.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Quantizer) and cls.__module__ == module.__name__:
                assert cls.toolchain == "modelopt", cls


@pytest.mark.slow
def test_engine_ort_is_an_alias_that_runs_the_ort_toolchain(tmp_path: Path):
    result = run_script(SCRIPT, "--engine", "ort", "--ort-calibration-method", "percentile", "--calib-size", "16",
                        "--models-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (int8,) = (tmp_path / "ort").glob("*.onnx")
    assert "_ort_qdq_percentile_per_channel_u8s8" in int8.name and str(int8) in result.stdout
    assert not (tmp_path / "modelopt").exists()


def test_not_onnx_is_one_line(tmp_path: Path):
    fake = tmp_path / "model.onnx"
    fake.write_text("this is not a protobuf")
    result = run_script(SCRIPT, "--onnx", str(fake), "--calib-size", "16", "--models-dir", str(tmp_path / "m"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "not a valid ONNX model" in result.stderr.strip().splitlines()[-1]


def test_calibration_input_name_mismatch(tmp_path: Path):
    data = tmp_path / "calib.npz"
    np.savez(data, images=np.zeros((4, 3, 32, 32), np.float32))
    result = run_script(SCRIPT, "--calibration-data", str(data), "--calib-size", "16", "--models-dir", str(tmp_path / "m"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "do not match the model's inputs ['input']" in last
    assert not list((tmp_path / "m").rglob("*modelopt_int8*"))


def test_missing_modelopt_names_the_requirements_file(tmp_path: Path):
    code = ("import sys; sys.modules['modelopt'] = None; sys.argv = ['ModelOpt_PTQ.py', '--calib-size', '16', "
            f"'--models-dir', {str(tmp_path)!r}]; sys.path.insert(0, '.');"
            "from quantization.ModelOpt.cli import main; from utils.cli import run_cli; raise SystemExit(run_cli(main))")
    result = run_script("-c", code)
    assert result.returncode == 2
    assert "needs package nvidia-modelopt[onnx] (pip install -r requirements/base.txt)" in result.stderr


def test_modelopt_help_documents_every_option():
    result = run_script(SCRIPT, "--help")
    for flag in ("--engine", "--calibration-method", "--calibration-eps", "--exclude-nodes", "--exclude-op-types",
                 "--high-precision-dtype", "--modelopt-weight-bits", "--activation-type", "--ort-calibration-method",
                 "--ort-granularity", "--ort-exclude-nodes", "--ort-exclude-op-types", "--ort-weight-bits", "--onnx",
                 "--calibration-data", "--opset"):
        assert flag in result.stdout
    assert "alias that runs the ORT toolchain (quantization/ORT)" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("target, bits", [("x86-vnni", 8), ("x86-avx2", 7)])
def test_onnx_weight_bits_follow_the_target_and_reach_the_artifact(base_cfg, prepared, target, bits):
    """ModelOpt: INT8 weights on disk (no QuantizeLinear of a constant), 7-bit on twice the scale for AVX2;
    ORT: reduce_range for AVX2. Both files at least 3x smaller than FP32, the FP32 ONNX left as it was."""
    from utils.artifacts import sha256_file

    cfg = copy.deepcopy(base_cfg)
    cfg.target = target
    for toolchain in ("modelopt", "ort"):
        fp32, int8, *_ = run_toolchain(toolchain, cfg, prepared)
        settings = int8.manifest["settings"]
        assert settings["weight_bits"] == bits and settings["target"] == target == int8.manifest["target"]
        assert int8.name.endswith("_w7") == (bits == 7)
        model = onnx.load(str(int8.path))
        inits = _inits(model)
        assert not [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in inits]
        weights = [inits[n.input[0]] for n in model.graph.node if n.op_type == "DequantizeLinear"
                   and n.input[0] in inits and inits[n.input[0]].dtype == np.int8]
        assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) == (64 if bits == 7 else 127)
        assert fp32.size_bytes() >= 3 * int8.size_bytes(), (toolchain, fp32.size_bytes(), int8.size_bytes())
        assert sha256_file(fp32.path) == fp32.manifest["sha256"]  # ModelOpt works on a private copy


@pytest.mark.slow
def test_a_corrupt_cached_fp32_onnx_is_exported_again(base_cfg, prepared, tmp_path):
    from utils.artifacts import sha256_file

    cfg = copy.deepcopy(base_cfg)
    cfg.models_dir = str(tmp_path)
    fp32 = run_toolchain("ort", cfg, prepared)[0]
    fp32.path.write_bytes(fp32.path.read_bytes()[:100])  # truncated
    again = run_toolchain("ort", cfg, prepared)[0]
    assert again.path == fp32.path and sha256_file(again.path) == again.manifest["sha256"]


def test_ort_layer_fallback_excludes_in_its_own_section(base_cfg, prepared):
    """with_float_layers writes the ORT section's exclusions (cfg.ort), never ModelOpt's; the layer stays float."""
    from quantization.onnx_quantizer import onnx_node_names
    from quantization.workflow import make_quantizer

    quantizer = make_quantizer("ort", base_cfg)
    convs = {name for name, op in onnx_node_names(quantizer.export_fp32(prepared.model).path) if op == "Conv"}
    layer = next(n for n in quantizer.quantizable_layers(prepared.model) if n in convs)
    twin = quantizer.with_float_layers([layer])
    assert twin.cfg.ort.exclude_nodes and not twin.cfg.modelopt.exclude_nodes
    int8 = twin.quantize(prepared.model_for(twin), prepared.calibration)
    assert int8.path.parent.name == "ort" and int8.manifest["settings"]["nodes_excluded"] == [layer]
    assert layer not in _quantized_convs(onnx.load(str(int8.path)))


@pytest.mark.slow
@pytest.mark.parametrize("toolchain,method", [("ort", "minmax"), ("modelopt", "max")])
def test_range_only_calibration_steps_in_small_batches_with_the_same_ranges(base_cfg, prepared, tmp_path,
                                                                             toolchain, method):
    """A running min/max cannot depend on the batching, so by default it steps in small, cache-friendly batches
    (quantization.base.RANGE_ONLY_BATCH); the ranges must equal those of a 32-image step."""
    from quantization.base import HISTOGRAM_BATCH, RANGE_ONLY_BATCH

    small_cfg, big_cfg = copy.deepcopy(base_cfg), copy.deepcopy(base_cfg)
    small_cfg.models_dir, big_cfg.models_dir = str(tmp_path / "small"), str(tmp_path / "big")
    big_cfg.calibration.batch_size = 32
    _, small, small_model = _quantize(small_cfg, prepared, toolchain, calibration_method=method)
    _, big, big_model = _quantize(big_cfg, prepared, toolchain, calibration_method=method)
    assert small.manifest["settings"]["calibration_batch_size"] == RANGE_ONLY_BATCH
    assert big.manifest["settings"]["calibration_batch_size"] == 32
    assert _activation_scales(small_model) == pytest.approx(_activation_scales(big_model), rel=1e-5)
    histogram = "entropy"  # sized from the first batch: the default stays the larger step
    assert quantizer_class(toolchain)(_with(base_cfg, toolchain, calibration_method=histogram)).calibration_batch_size() \
        == HISTOGRAM_BATCH


def _with(base_cfg, toolchain: str, **settings) -> RunConfig:
    cfg = copy.deepcopy(base_cfg)
    for key, value in settings.items():
        setattr(getattr(cfg, quantizer_class(toolchain).section), key, value)
    return cfg


@pytest.mark.slow
def test_ort_variants_of_a_run_share_one_calibration(base_cfg, prepared, caplog, monkeypatch):
    """Granularity and activation type do not change the activation ranges: the second variant on the same
    FP32 model and images reuses the first one's calibration (quantization/ORT/ort_calibration.py)."""
    import logging

    import quantization.ORT.ort_calibration as ort_calibration

    monkeypatch.setattr(ort_calibration, "_RANGES", {})  # earlier tests calibrated the same model and images
    cfg = copy.deepcopy(base_cfg)
    caplog.set_level(logging.INFO, logger="quantization.ORT.ort_calibration")
    _, first, _ = _quantize(cfg, prepared, "ort", granularity="per_tensor")
    assert "reused" not in caplog.text
    _, second, _ = _quantize(cfg, prepared, "ort", granularity="per_channel", activation_type="int8")
    assert "MinMax ranges of" in caplog.text and "reused" in caplog.text
    assert first.path != second.path and set(second.manifest["quantize_seconds_by_stage"]) >= {
        "prepare", "calibrate", "quantize", "save"}
