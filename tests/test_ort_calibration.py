"""ORT's quantize_static in two halves (quantization/ORT/ort_calibration.py): the same file, ranges once per run.

- Given ORT's own ranges, ``write_qdq`` writes what ``quantize_static`` writes (every node, every
  initializer equal), for each calibration method.
- MinMax's optimised calibration session moves the ranges by float rounding only; Entropy and
  Percentile run ORT's own session: their ranges are ORT's.
- The ranges are computed once per model and images; batch by batch, in a fraction of the memory.
"""
from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

STEP = 16


def _tiny_onnx(path: Path, channels: int = 32, size: int = 48) -> None:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, channels, 3, padding=1), torch.nn.BatchNorm2d(channels),
                                torch.nn.ReLU(), torch.nn.Conv2d(channels, channels, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(channels, 10)).eval()
    torch.onnx.export(model, (torch.randn(1, 3, size, size),), str(path), input_names=["input"], output_names=["logits"],
                      opset_version=17, dynamo=False, dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def _at_opset(path: Path, opset: int) -> None:
    """Raise the exported (opset 17) file at ``path`` to ``opset``, in place."""
    from onnx import version_converter

    if opset != 17:
        onnx.save(version_converter.convert_version(onnx.load(str(path)), opset), str(path))


def _feed(n: int, size: int = 48, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"input": rng.standard_normal((n, 3, size, size)).astype(np.float32)}


class _StridedReader:
    """quantize_static's strided protocol (``__len__``/``set_range``) over batches of STEP images."""

    def __init__(self, feed: dict[str, np.ndarray]):
        from quantization.ORT.ort_calibration import feed_batches

        self._batches = list(feed_batches(feed, STEP))
        self.set_range(0, len(self._batches))

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._iter = iter(self._batches[start_index:end_index])

    def get_next(self):
        return next(self._iter, None)


def _orts_own_ranges(model_path: Path, feed, method: str, tmp: Path):
    """ORT's calibrator as quantize_static runs it (its own session, graph optimisations off), batch by batch."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    from quantization.ORT.ort_calibration import _OneBatch, default_op_types, feed_batches

    calibrator = create_calibrator(model_path, default_op_types(), augmented_model_path=str(tmp / "aug.onnx"),
                                   calibrate_method=getattr(CalibrationMethod, method))
    for batch in feed_batches(feed, STEP):
        calibrator.collect_data(_OneBatch(batch))
    return calibrator.compute_data()


def _tensors(path: Path) -> tuple[list, dict[str, np.ndarray]]:
    model = onnx.load(str(path))
    nodes = [(n.op_type, list(n.input), list(n.output)) for n in model.graph.node]
    return nodes, {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}


@pytest.mark.parametrize("method", ["MinMax", "Entropy", "Percentile"])
def test_write_qdq_with_orts_ranges_writes_what_quantize_static_writes(method, tmp_path):
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from quantization.ORT.ort_calibration import default_op_types, load_for_quantization, write_qdq

    fp32, feed = tmp_path / "fp32.onnx", _feed(64)
    _tiny_onnx(fp32)
    quantize_static(str(fp32), str(tmp_path / "static.onnx"), _StridedReader(feed), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, method), extra_options={"CalibStridedMinMax": 1})
    model, calibrate_from = load_for_quantization(fp32, QuantType.QInt8, tmp_path)
    ranges = _orts_own_ranges(calibrate_from, feed, method, tmp_path)
    write_qdq(model, ranges, tmp_path / "split.onnx", per_channel=True, reduce_range=False,
              activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=[],
              op_types=default_op_types())
    static_nodes, static_inits = _tensors(tmp_path / "static.onnx")
    split_nodes, split_inits = _tensors(tmp_path / "split.onnx")
    assert split_nodes == static_nodes and any(op == "QuantizeLinear" for op, *_ in split_nodes)
    assert split_inits.keys() == static_inits.keys()
    for name, value in static_inits.items():
        assert np.array_equal(split_inits[name], value), name


def _bounds(ranges) -> dict[str, tuple[float, float]]:
    return {name: tuple(float(np.asarray(v).reshape(-1)[0]) for v in ranges[name].range_value) for name in ranges}


@pytest.mark.parametrize("method", ["MinMax", "Percentile", "Entropy"])
def test_calibrated_ranges_are_orts_own(method, tmp_path):
    """MinMax's optimised session moves its ranges by float rounding only; the histogram methods run ORT's
    own session, so theirs are ORT's exactly."""
    from quantization.ORT.ort_calibration import calibrated_ranges, default_op_types

    fp32, feed = tmp_path / "fp32.onnx", _feed(64)
    _tiny_onnx(fp32)
    own = _bounds(_orts_own_ranges(fp32, feed, method, tmp_path))
    fast = _bounds(calibrated_ranges(fp32, feed, STEP, method, default_op_types()).ranges)
    assert fast.keys() == own.keys() and len(own) >= 5
    if method != "MinMax":
        assert fast == own
    for name, (low, high) in own.items():
        tolerance = 1e-5 * max(high - low, 1e-6)  # fused kernels round differently
        assert fast[name] == pytest.approx((low, high), abs=tolerance), name


def test_input_sums_come_from_the_minmax_session_and_leave_its_ranges_alone(tmp_path):
    """The fast bias correction's sums ride in the MinMax session: the ranges are those of the session without
    them, and each Conv/Gemm input's sum over the images is numpy's over the same inputs."""
    import onnx
    import onnxruntime as ort

    from quantization.ORT.ort_calibration import calibrated_ranges, default_op_types
    from quantization.transforms.onnx_bias_correction import correctable_nodes

    fp32, feed = tmp_path / "fp32.onnx", _feed(32)
    _tiny_onnx(fp32)
    plain = calibrated_ranges(fp32, feed, STEP, "MinMax", default_op_types())
    summed = calibrated_ranges(fp32, feed, STEP, "MinMax", default_op_types(), input_sums=True)
    assert _bounds(summed.ranges) == _bounds(plain.ranges) and plain.input_sums is None
    nodes = correctable_nodes(onnx.load(str(fp32)))
    assert set(summed.input_sums) == set(nodes) and summed.samples == 32
    model = onnx.load(str(fp32))
    inputs = {node.input[0] for node in nodes.values()}
    model.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in inputs)
    values = dict(zip([o.name for o in model.graph.output],
                      ort.InferenceSession(model.SerializeToString()).run(None, feed), strict=True))
    for name, node in nodes.items():
        expected = values[node.input[0]].astype(np.float64).sum(axis=0, keepdims=True)
        assert np.allclose(summed.input_sums[name], expected, rtol=1e-4, atol=1e-4), name
    with pytest.raises(ValueError, match="MinMax session only"):
        calibrated_ranges(fp32, feed, STEP, "Percentile", default_op_types(), input_sums=True)


def test_ranges_are_computed_once_per_model_and_images(tmp_path, monkeypatch):
    import onnxruntime.quantization.calibrate as calibrate
    from onnxruntime.quantization.calibrate import TensorData

    from quantization.ORT.ort_calibration import calibrated_ranges, default_op_types

    fp32 = tmp_path / "fp32.onnx"
    _tiny_onnx(fp32)
    first = calibrated_ranges(fp32, _feed(32), STEP, "MinMax", default_op_types()).ranges

    def no_calibration(*args, **kwargs):
        raise AssertionError("calibrated again")

    monkeypatch.setattr(calibrate, "create_calibrator", no_calibration)
    again = calibrated_ranges(fp32, _feed(32), STEP, "MinMax", default_op_types()).ranges
    assert _bounds(again) == _bounds(first)
    name = next(iter(again))
    again[name] = TensorData(lowest=np.float32(-1e9), highest=np.float32(1e9))  # the quantizer edits ranges: copies
    assert _bounds(calibrated_ranges(fp32, _feed(32), STEP, "MinMax", default_op_types()).ranges)[name] == _bounds(first)[name]
    for other in ({"feed": _feed(32, seed=1)}, {"method": "Percentile"}, {"step": 8}):
        args = {"feed": _feed(32), "step": STEP, "method": "MinMax", **other}
        with pytest.raises(AssertionError, match="calibrated again"):
            calibrated_ranges(fp32, args["feed"], args["step"], args["method"], default_op_types())


def _peak_rss_child(fp32: str, out: str, split: bool, n: int, queue) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    from quantization.ORT.ort_calibration import calibrated_ranges, default_op_types
    from utils.benchmark import peak_rss_bytes

    feed = _feed(n, size=64)
    before = peak_rss_bytes()
    if split:
        calibrated_ranges(Path(fp32), feed, STEP, "Percentile", default_op_types())
    else:  # quantize_static left alone: every output of every image, then the histograms
        quantize_static(fp32, out, _StridedReader(feed), quant_format=QuantFormat.QDQ,
                        calibrate_method=CalibrationMethod.Percentile)
    queue.put(peak_rss_bytes() - before)


def test_histogram_calibration_holds_one_batch_of_outputs(tmp_path):
    """Peak RSS growth of Percentile calibration on 128 images (~0.6 MB of outputs per image): quantize_static
    alone holds them all (and a stacked copy); batch by batch holds one batch of 16."""
    fp32 = tmp_path / "fp32.onnx"
    _tiny_onnx(fp32, channels=48, size=64)
    context = multiprocessing.get_context("spawn")
    growth = {}
    for split in (False, True):
        queue = context.Queue()
        child = context.Process(target=_peak_rss_child, args=(str(fp32), str(tmp_path / f"{split}.onnx"), split, 128,
                                                              queue))
        child.start()
        growth[split] = queue.get(timeout=600)
        child.join()
    print({k: f"{v / 2**20:.0f} MiB" for k, v in growth.items()})
    assert growth[True] < 0.5 * growth[False]


@pytest.mark.parametrize("method", ["MinMax", "Entropy"])
def test_modelopt_max_calibration_gets_the_same_optimised_cpu_session(method, tmp_path):
    """ModelOpt's own session factory (every optimisation off), wrapped as ModelOpt's quantize installs it: a
    MinMax calibrator on the CPU gets ORT's optimised session, whose ranges are ORT's within float rounding;
    a histogram calibrator keeps ModelOpt's session."""
    pytest.importorskip("modelopt.onnx.quantization")
    import onnxruntime as ort
    from modelopt.onnx.quantization import ort_patching
    from onnxruntime.quantization.calibrate import HistogramCalibrater, MinMaxCalibrater

    from quantization.ModelOpt.calibration_session import optimised_for_cpu_max
    from quantization.ORT.ort_calibration import _OneBatch, default_op_types, feed_batches

    fp32, feed = tmp_path / "fp32.onnx", _feed(64)
    _tiny_onnx(fp32)
    kind = MinMaxCalibrater if method == "MinMax" else HistogramCalibrater
    calibrator = kind(str(fp32), default_op_types(), augmented_model_path=str(tmp_path / "mo_aug.onnx"))
    calibrator.augment_graph()
    optimised_for_cpu_max(ort_patching._create_inference_session_with_ep_config)(
        calibrator, execution_providers=["CPUExecutionProvider"])
    level = calibrator.infer_session.get_session_options().graph_optimization_level
    if method != "MinMax":
        assert level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return
    assert level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for batch in feed_batches(feed, STEP):
        calibrator.collect_data(_OneBatch(batch))
    wrapped = _bounds(calibrator.compute_data())
    own = _bounds(_orts_own_ranges(fp32, feed, method, tmp_path))
    assert wrapped.keys() == own.keys() and len(own) >= 5
    for name, (low, high) in own.items():
        assert wrapped[name] == pytest.approx((low, high), abs=1e-5 * max(high - low, 1e-6)), name


def test_the_onnx_fold_leaves_float_layers_alone(tmp_path):
    """A layer left in float has no rounding error: excluded by name or op type, or (ModelOpt's output, weights
    read from the calibration graph) without a DequantizeLinear on its weight, its bias is not touched."""
    import copy

    import onnx

    from quantization.ORT.ort_calibration import calibrated_ranges, default_op_types
    from quantization.transforms.onnx_bias_correction import correctable_nodes, fold_shifts
    from quantization.transforms.weight_scheme import WeightScheme

    fp32 = tmp_path / "fp32.onnx"
    _tiny_onnx(fp32)
    calibration = calibrated_ranges(fp32, _feed(32), STEP, "MinMax", default_op_types(), input_sums=True)
    model = onnx.load(str(fp32))
    names = list(correctable_nodes(model))
    scheme = WeightScheme(per_channel=True, qmin=-127, qmax=127, divisor=127.0)
    fold = lambda **kwargs: fold_shifts(copy.deepcopy(model), calibration.input_sums, calibration.samples,  # noqa: E731
                                        scheme, **kwargs)
    assert fold() == len(names) == 3  # two convs and the head
    assert fold(skip={names[0]}) == 2
    assert fold(skip_op_types={"Conv"}) == 1
    assert fold(weights_from=model) == 0  # no weight behind a DequantizeLinear: nothing was quantized


@pytest.mark.parametrize("opset", [17, 19])
def test_spatial_reductions_give_the_all_axes_ranges_exactly(opset, tmp_path):
    """The calibration session reduces 4-D tensors over the spatial axes in the graph and finishes in numpy
    (quantization/ORT/calibration_reductions.py): every output the calibrator sees equals, bit for bit, what the
    same optimised session gives on ORT's all-axes graph, with the axes as an attribute (opset 17) and as an
    input (opset 19, ModelOpt's)."""
    import onnxruntime as ort
    from onnxruntime.quantization.calibrate import MinMaxCalibrater

    from quantization.ORT.calibration_reductions import reduce_spatial_axes_only
    from quantization.ORT.ort_calibration import default_op_types, minmax_session

    fp32, feed = tmp_path / "fp32.onnx", _feed(8)
    _tiny_onnx(fp32)
    _at_opset(fp32, opset)
    calibrator = MinMaxCalibrater(str(fp32), default_op_types(), augmented_model_path=str(tmp_path / "aug.onnx"))
    calibrator.augment_graph()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    reference = ort.InferenceSession(str(tmp_path / "aug.onnx"), options, providers=["CPUExecutionProvider"])
    rewritten = onnx.load(str(tmp_path / "aug.onnx"))
    assert len(reduce_spatial_axes_only(onnx.load(str(tmp_path / "aug.onnx")))) >= 8  # 4-D tensors: 4 at least, 2 each
    session = minmax_session(rewritten, tmp_path / "scratch.onnx")
    assert [o.name for o in session.get_outputs()] == [o.name for o in reference.get_outputs()]
    for got, expected in zip(session.run(None, feed), reference.run(None, feed), strict=True):
        assert got.shape == expected.shape and got.dtype == expected.dtype and np.array_equal(got, expected)


def test_dropped_reductions_take_both_halves_and_leave_the_other_ranges(tmp_path):
    """drop_reductions (calibration_reductions.py) removes a tensor's ReduceMin and ReduceMax together, so the
    calibrator's min/max pairs stay aligned, and the ranges it keeps are the full graph's (within float
    rounding: with the dropped outputs gone ONNX Runtime may fuse a Conv with its Relu)."""
    from onnxruntime.quantization.calibrate import MinMaxCalibrater

    from quantization.ORT.calibration_reductions import calibrated_tensors, drop_reductions
    from quantization.ORT.ort_calibration import default_op_types, minmax_session

    fp32, feed = tmp_path / "fp32.onnx", _feed(8)
    _tiny_onnx(fp32)
    calibrator = MinMaxCalibrater(str(fp32), default_op_types(), augmented_model_path=str(tmp_path / "aug.onnx"))
    calibrator.augment_graph()
    full = onnx.load(str(tmp_path / "aug.onnx"))
    tensors = calibrated_tensors(full)
    conv_outputs = {t for t in tensors if t.endswith("Conv_output_0")}
    assert len(tensors) >= 5 and conv_outputs
    pruned = onnx.load(str(tmp_path / "aug.onnx"))
    assert drop_reductions(pruned, conv_outputs | {"not_a_tensor"}) == conv_outputs
    assert calibrated_tensors(pruned) == tensors - conv_outputs
    names = [o.name for o in pruned.graph.output]
    model_outputs = len(full.graph.output) - 2 * len(tensors)
    added = names[model_outputs:]
    assert len(added) == 2 * len(tensors - conv_outputs)
    assert all(a.endswith("_ReduceMin") and b == a[:-len("Min")] + "Max" for a, b in zip(added[::2], added[1::2], strict=True))
    assert not {n.output[0] for n in pruned.graph.node} & {f"{t}_Reduce{k}" for t in conv_outputs for k in ("Min", "Max")}
    got = dict(zip(names, minmax_session(pruned, tmp_path / "a.onnx").run(None, feed), strict=True))
    full_names = [o.name for o in full.graph.output]
    expected = dict(zip(full_names, minmax_session(full, tmp_path / "b.onnx").run(None, feed), strict=True))
    for name in added:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("opset", [17, 19])
def test_a_pointwise_conv_gets_the_shift_of_its_whole_input_from_the_input_mean(opset, tmp_path, monkeypatch):
    """A 1x1 Conv at stride 1 without padding sums only its input's spatial mean (onnx_bias_correction.py):
    one number per channel instead of a map, and the same shift as the summed map gives, grouped or not. A
    padded or strided conv keeps the map. ReduceMean's axes: an attribute at opset 17, an input at 19
    (ModelOpt's)."""
    import torch

    from quantization.ORT.ort_calibration import minmax_session
    from quantization.transforms import onnx_bias_correction as bc
    from quantization.transforms.weight_scheme import WeightScheme

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 1),
                                torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 1, groups=4), torch.nn.ReLU(),
                                torch.nn.Conv2d(32, 16, 1, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 8, 1, stride=2)).eval()
    fp32 = tmp_path / "fp32.onnx"
    torch.onnx.export(model, (torch.randn(1, 3, 20, 20),), str(fp32), input_names=["input"], opset_version=17,
                      dynamo=False, dynamic_axes={"input": {0: "batch"}})
    _at_opset(fp32, opset)
    feed = _feed(12, size=20)
    scheme = WeightScheme(per_channel=True)

    def sums(pointwise: bool) -> tuple[dict, dict, Any]:
        graph = onnx.load(str(fp32))
        with monkeypatch.context() as patched:
            if not pointwise:
                patched.setattr(bc, "_pointwise", lambda node, inits: False)
            outputs = bc.add_input_sums(graph, bc.correctable_nodes(graph))
        session = bc.SummingSession(minmax_session(graph, tmp_path / "s.onnx"), outputs, graph)
        for start in (0, 5):
            session.run(None, {"input": feed["input"][start:start + 7 if start else 5]})
        return session.sums, bc.correctable_nodes(graph), graph

    means, nodes, graph = sums(True)
    maps, _, _ = sums(False)
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in graph.graph.initializer}
    assert len(nodes) == 5
    reduced = {name for name, summed in means.items() if summed.shape[2:] == (1, 1)}
    assert len(reduced) == 2  # the two 1x1 stride-1 unpadded convs; the 3x3, the padded and the strided 1x1: maps
    for name, node in nodes.items():
        got = bc._shift(node, weights[node.input[1]], means[name], 12, scheme)
        expected = bc._shift(node, weights[node.input[1]], maps[name], 12, scheme)
        assert np.abs(expected).max() > 0
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max(), err_msg=name)


class _Calibrator:
    """What ranges_modelopt_reads reads of ModelOpt's calibrator: the node names it calibrates, its Q/DQ groups."""

    def __init__(self, names: list[str], groups: dict | None = None):
        self.op_types_to_calibrate, self.group_qdq_tensors = names, groups


def test_modelopt_reads_the_inputs_of_the_nodes_it_quantizes_a_clip_through_them_and_its_groups():
    """Conv -> Clip -> Conv, and a Concat: the Clip's input (the first conv's output) is read only where another
    quantized node reads it; every member of a Q/DQ group is read; a selection naming no node reads everything."""
    pytest.importorskip("modelopt.onnx.quantization")
    from onnx import TensorProto, helper

    from quantization.ModelOpt.calibration_session import ranges_modelopt_reads

    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1"),
             helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"], name="clip"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             helper.make_node("Concat", ["c2", "r1"], ["cat"], name="concat", axis=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("cat", TensorProto.FLOAT, None)])
    model = helper.make_model(graph)
    assert ranges_modelopt_reads(model, _Calibrator(["conv1", "clip", "conv2"])) == {"x", "w1", "r1", "w2"}
    assert ranges_modelopt_reads(model, _Calibrator(["conv1", "clip", "conv2"], {"c2": ["c2", "c1"]})) == \
        {"x", "w1", "r1", "w2", "c2", "c1"}
    assert ranges_modelopt_reads(model, _Calibrator(["conv1", "concat"])) == {"x", "w1", "c2", "r1"}
    assert ranges_modelopt_reads(model, _Calibrator(["Conv", "Relu"])) is None  # op types: ORT's own selection


def test_a_tensor_with_one_reduction_left_keeps_it(tmp_path):
    """drop_reductions takes a tensor's two reductions or none: with its ReduceMax gone already, its ReduceMin
    stays (dropping it would shift every min/max pair after it)."""
    from onnxruntime.quantization.calibrate import MinMaxCalibrater

    from quantization.ORT.calibration_reductions import _orts_reductions, drop_reductions

    fp32 = tmp_path / "fp32.onnx"
    _tiny_onnx(fp32)
    calibrator = MinMaxCalibrater(str(fp32), ["Conv"], augmented_model_path=str(tmp_path / "aug.onnx"))
    calibrator.augment_graph()
    model = onnx.load(str(tmp_path / "aug.onnx"))
    half, other = sorted({node.input[0] for node in _orts_reductions(model).values()})[:2]
    graph = model.graph
    maximum = f"{half}_ReduceMax"
    for index in reversed(range(len(graph.node))):
        if maximum in graph.node[index].output:
            del graph.node[index]
    for index in reversed(range(len(graph.output))):
        if graph.output[index].name == maximum:
            del graph.output[index]
    assert drop_reductions(model, {half, other}) == {other}
    assert f"{half}_ReduceMin" in {o.name for o in graph.output}
