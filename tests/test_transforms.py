"""The model -> model transforms: BN folding, cross-layer equalization, bias correction."""
import copy

import onnx
import pytest
import torch
from torch import nn

from quantization.transforms import apply_transforms
from quantization.transforms.bias_correction import correct_bias, mean_outputs, weight_quantized
from quantization.transforms.bn_fold import fold_batchnorm
from quantization.transforms.cle import equalize_chains
from quantization.transforms.weight_scheme import WeightScheme, fake_quantize_weight
from quantization.workflow import make_quantizer, prepare, run_toolchain
from utils.config import ModelConfig
from utils.errors import SuiteError
from utils.models import load_model

PER_TENSOR_7BIT = WeightScheme(per_channel=False, qmin=-64, qmax=63, divisor=63.5)


def _model(arch: str, classes: int) -> nn.Module:
    torch.manual_seed(0)
    module = load_model(ModelConfig(arch=arch), classes).module.eval()
    for m in module.modules():  # non-trivial BN statistics, as a trained model has
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.2, 3)
            m.weight.data.uniform_(0.1, 3)
            m.bias.data.uniform_(-1, 1)
    return module


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("arch,shape,classes", [("resnet20", (3, 32, 32), 10), ("resnet18", (3, 64, 64), 10),
                                                ("mobilenet_v2", (3, 64, 64), 10)])
def test_cle_keeps_fp32_outputs_and_equalizes_ranges(arch, shape, classes):
    model = _model(arch, classes)
    x = torch.randn(4, *shape)
    with torch.no_grad():
        reference = model(x)
    equalized = copy.deepcopy(model)
    chains = equalize_chains(equalized)
    assert chains, "no conv -> ReLU -> conv pair found"
    with torch.no_grad():
        assert _rel_err(equalized(x), reference) < 1e-4
    modules = dict(equalized.named_modules())
    for chain in chains:
        first, second = modules[chain.first], modules[chain.second]
        r1 = first.weight.abs().reshape(first.out_channels, -1).amax(1)
        w2 = second.weight.abs()
        r2 = (w2.transpose(0, 1).reshape(second.in_channels, -1) if second.groups == 1
              else w2.reshape(second.out_channels, -1)).amax(1)
        assert torch.allclose(r1, r2, rtol=1e-3), f"{chain.first} -> {chain.second} not equalized"


def test_cle_through_relu6_skips_by_default_and_replaces_on_request():
    model = _model("mobilenet_v2", 10)
    skipped = copy.deepcopy(model)
    exact = equalize_chains(skipped)
    assert all(c.activation_kind != "relu6" for c in exact)
    assert any(isinstance(m, nn.ReLU6) for m in skipped.modules())
    replaced = copy.deepcopy(model)
    chains = equalize_chains(replaced, relu6="relu")
    assert len(chains) > len(exact)
    modules = dict(replaced.named_modules())
    assert all(isinstance(modules[c.activation], nn.ReLU) for c in chains if c.activation)
    with pytest.raises(SuiteError, match="cle-relu6"):
        equalize_chains(copy.deepcopy(model), relu6="clip")


def test_bn_fold_is_exact_and_keeps_structure():
    model = _model("resnet20", 10)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
    folded = copy.deepcopy(model)
    count = fold_batchnorm(folded)
    assert count == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert [type(m) for m in folded.modules()] == [type(m) for m in model.modules()]
    with torch.no_grad():
        assert _rel_err(folded(x), reference) < 1e-5
    bn = folded.bn1
    assert torch.all(bn.weight == 1) and torch.all(bn.running_mean == 0)


def test_fake_quantize_weight_grids():
    w = torch.tensor([[1.0, -0.5, 0.25], [0.003, 0.02, -0.03]])
    per_channel = fake_quantize_weight(w, WeightScheme(per_channel=True, qmin=-127, qmax=127, divisor=127.0))
    assert torch.allclose(per_channel[:, 0].abs().max(), torch.tensor(1.0))
    assert torch.allclose(per_channel[1], w[1], atol=0.03 / 127)
    per_tensor = fake_quantize_weight(w, WeightScheme(per_channel=False, qmin=-127, qmax=127, divisor=127.0))
    assert per_tensor[1, 0] == 0  # 0.003 is below half a step of the tensor-wide grid (1/127)


@pytest.mark.parametrize("method", ["fast", "sequential"])
def test_bias_correction_reduces_the_mean_output_shift_on_held_out_batches(method):
    prepared = prepare(_demo_cfg())
    model = copy.deepcopy(prepared.model.module).eval()
    fold_batchnorm(model)
    held_out = [images for images, _ in _evaluation_batches(prepared)]
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    reference = mean_outputs(model, held_out, layers)

    def relative_shift(candidate: nn.Module) -> dict[str, float]:
        """Per layer: |mean FP32 output - mean output with INT8-rounded weights| / |mean FP32 output|."""
        quantized = mean_outputs(weight_quantized(candidate, PER_TENSOR_7BIT), held_out, layers)
        return {n: float((reference[n] - quantized[n]).abs().mean() / reference[n].abs().mean()) for n in layers}

    before = relative_shift(model)
    corrected = copy.deepcopy(model)
    correct_bias(corrected, prepared.calibration.batches(32), PER_TENSOR_7BIT, method)
    after = relative_shift(corrected)
    improved = sum(after[n] < before[n] for n in layers)
    assert improved >= 0.8 * len(layers), f"only {improved}/{len(layers)} layers improved"
    assert sum(after.values()) < 0.5 * sum(before.values())


def test_fast_bias_correction_is_the_exact_mean_rounding_error_on_fp32_inputs():
    """The fast pass sums inputs and convolves once: it must equal, per layer, the mean over every sample and
    output position of (Q(W) - W) x computed the long way on each batch (padding, strides, groups and the
    linear head included), whatever the batching."""
    from torchvision.models import mobilenet_v3_small

    from quantization.transforms.bias_correction import LAYERS, _rounding_shifts

    torch.manual_seed(0)
    model = mobilenet_v3_small(num_classes=10).eval()  # depthwise, stride 2, 5x5 kernels, a linear head
    fold_batchnorm(model)
    images = torch.randn(20, 3, 64, 64)
    layers = [n for n, m in model.named_modules() if isinstance(m, LAYERS)]
    sums, counts = {}, {}

    def hook(name):
        def run(module, inputs):
            error = fake_quantize_weight(module.weight, PER_TENSOR_7BIT) - module.weight
            if isinstance(module, nn.Linear):
                y = (inputs[0] @ error.T).reshape(-1, error.shape[0])
                sums[name], counts[name] = sums.get(name, 0) + y.sum(0), counts.get(name, 0) + y.shape[0]
            else:
                y = module._conv_forward(inputs[0], error, None)
                sums[name] = sums.get(name, 0) + y.sum(dim=(0, 2, 3))
                counts[name] = counts.get(name, 0) + y.numel() // y.shape[1]
        return run

    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in layers]
    with torch.inference_mode():
        for batch in images.split(16):
            model(batch)
    for handle in handles:
        handle.remove()
    fast = _rounding_shifts(model, images.split(3), layers, PER_TENSOR_7BIT)
    assert set(fast) == set(layers)
    for name in layers:
        expected = sums[name] / counts[name]
        assert torch.allclose(fast[name], expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max())), name


def _demo_cfg():
    from quantization.run_config import RunConfig

    cfg = RunConfig()
    cfg.calibration.size = 128
    cfg.data.limit = 256
    return cfg


def _evaluation_batches(prepared):
    from utils.data import evaluation_loader

    return evaluation_loader(prepared.splits, 64)


def test_transforms_are_recorded_and_leave_the_fp32_reference_alone(tmp_cfg):
    tmp_cfg.calibration.size = 64
    tmp_cfg.data.limit = 64
    tmp_cfg.transforms.cle = tmp_cfg.transforms.bias_correction = True
    prepared = prepare(tmp_cfg)
    fp32, int8 = run_toolchain("ort", tmp_cfg, prepared)[:2]
    assert int8.manifest["transforms"] == ["cle", "bias_correction"]
    assert int8.path.name.endswith("_cle_bc.onnx")
    assert fp32.manifest["transforms"] == []
    assert int8.manifest["fp32_onnx"] != str(fp32.path)  # quantized from the transformed model's export
    assert prepared.model.transforms == []  # the loaded model itself is never modified


def test_bias_correction_is_on_by_default_and_off_with_the_flag(tmp_cfg):
    """NNCF-style default: every calibrated artifact says whether the correction reached it; the flag turns it off,
    and the corrected biases are in the file (not only in the manifest)."""
    import argparse

    from quantization.run_config import config_from_args, load_config
    from utils.cli import add_config_arg, add_transform_args

    assert load_config().transforms.bias_correction is True
    tmp_cfg.calibration.size = tmp_cfg.data.limit = 64
    prepared = prepare(tmp_cfg)
    fp32, on = run_toolchain("ort", tmp_cfg, prepared)[:2]
    tmp_cfg.transforms.bias_correction = False
    off = run_toolchain("ort", tmp_cfg, prepared)[1]
    assert (on.manifest["bias_correction"], off.manifest["bias_correction"]) == ("applied (fast)", "off")
    assert on.path.name.endswith("_bc.onnx") and not off.path.name.endswith("_bc.onnx")
    assert "bias_correction" not in fp32.manifest  # an FP32 export has no calibration recipe

    def biases(path) -> dict[str, bytes]:
        graph = onnx.load(str(path)).graph
        return {t.name: t.raw_data for t in graph.initializer if "bias" in t.name}
    assert biases(on.path) != biases(off.path)

    parser = argparse.ArgumentParser()
    add_config_arg(parser)
    add_transform_args(parser)
    assert config_from_args(parser.parse_args(["--no-bias-correction"])).transforms.bias_correction is False
    assert config_from_args(parser.parse_args([])).transforms.bias_correction is True


def test_an_onnx_source_is_quantized_as_it_is_and_says_so(tmp_cfg, tmp_path):
    """Bias correction runs on the PyTorch model: with an ONNX file as the source it cannot apply, and the
    manifest says why instead of failing the run; --cle, asked for by name, is refused in one line."""
    tmp_cfg.calibration.size = tmp_cfg.data.limit = 64
    prepared = prepare(tmp_cfg)
    source = run_toolchain("ort", tmp_cfg, prepared)[0].path
    tmp_cfg.onnx.onnx_path = str(source)
    int8 = run_toolchain("ort", tmp_cfg, prepare(tmp_cfg))[1]
    assert int8.manifest["transforms"] == [] and not int8.path.name.endswith("_bc.onnx")
    assert int8.manifest["bias_correction"].startswith("not applied: the source is an ONNX file")
    tmp_cfg.transforms.cle = True
    with pytest.raises(SuiteError, match="--cle works on the PyTorch model"):
        run_toolchain("ort", tmp_cfg, prepare(tmp_cfg))


def _op_counts(path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _torchscript_kinds(path) -> dict[str, int]:
    """Operator counts of a TorchScript graph. prim::Constant is left out: TorchScript shares one constant
    between equal values, so two layers that happen to get the same scale change the count, not the graph."""
    counts: dict[str, int] = {}
    for node in torch.jit.load(str(path)).inlined_graph.nodes():
        if node.kind() != "prim::Constant":
            counts[node.kind()] = counts.get(node.kind(), 0) + 1
    return counts


@pytest.mark.slow
def test_transformed_artifacts_keep_the_plain_artifact_structure(tmp_cfg):
    """Same operators, same count: the transforms cost no INT8 latency."""
    tmp_cfg.calibration.size = 64
    tmp_cfg.data.limit = 64
    tmp_cfg.transforms.bias_correction = False
    prepared = prepare(tmp_cfg)
    variant = copy.deepcopy(tmp_cfg)
    variant.transforms.cle = variant.transforms.bias_correction = True
    for toolchain, counts in (("ort", _op_counts), ("modelopt", _op_counts), ("torch_fx", _torchscript_kinds)):
        plain = run_toolchain(toolchain, tmp_cfg, prepared)[1]
        transformed = run_toolchain(toolchain, variant, prepared)[1]
        assert counts(transformed.path) == counts(plain.path), toolchain


def test_each_toolchain_states_its_weight_grid(tmp_cfg):
    tmp_cfg.torch.granularity, tmp_cfg.torch.weight_bits = "per_tensor", "7"
    assert make_quantizer("torch_fx", tmp_cfg).weight_scheme() == PER_TENSOR_7BIT
    tmp_cfg.ort.granularity = "per_tensor"
    tmp_cfg.target = "x86-vnni"
    assert make_quantizer("ort", tmp_cfg).weight_scheme().per_channel is False
    assert make_quantizer("modelopt", tmp_cfg).weight_scheme() == WeightScheme(True, -127, 127, 127.0)
    tmp_cfg.torch.weight_bits = "auto"
    tmp_cfg.torch.backend = "x86"
    tmp_cfg.target = "x86-vnni"
    scheme = make_quantizer("torch_fx", tmp_cfg).weight_scheme()
    assert scheme.depthwise_range == (-64, 63)  # FX's depthwise convs on FBGEMM get 7-bit weights
    depthwise, dense = torch.nn.Conv2d(8, 8, 3, groups=8), torch.nn.Conv2d(8, 8, 3)
    assert scheme.for_module(depthwise).qmax == 63 and scheme.for_module(depthwise).divisor == 63.5
    assert scheme.for_module(dense) == scheme
    tmp_cfg.target = "x86-avx2"  # every weight 7-bit on AVX2, in every toolchain
    assert make_quantizer("torch_fx", tmp_cfg).weight_scheme().qmax == 63
    assert make_quantizer("ort", tmp_cfg).weight_scheme().qmax == 64
    assert make_quantizer("modelopt", tmp_cfg).weight_scheme() == WeightScheme(True, -64, 64, 63.5)
    assert make_quantizer("torch_pt2e", tmp_cfg).weight_scheme().qmax == 63


def test_apply_transforms_without_request_is_identity(tmp_cfg):
    tmp_cfg.transforms.bias_correction = False
    prepared = prepare(tmp_cfg)
    assert apply_transforms(prepared.model, tmp_cfg.transforms, prepared.calibration, WeightScheme()) is prepared.model


@pytest.mark.parametrize("qmin,qmax,bits", [(-128, 127, 8), (-127, 127, 8), (-64, 64, 7), (-64, 63, 7)])
def test_the_weight_scheme_names_its_bits_as_the_manifests_do(qmin, qmax, bits):
    """The log line of bias correction: ModelOpt/ORT's restricted 8-bit range once read "7-bit"."""
    assert WeightScheme(qmin=qmin, qmax=qmax).describe().startswith(f"{bits}-bit ")



def test_fx_gathers_the_fast_correction_in_its_calibration_pass_with_the_separate_pass_biases(tmp_cfg):
    """FX sums the layers' inputs while its observers calibrate (no pass of its own): the corrected biases must be
    those of the separate pass on the same images, through torch.ao's fusion and the stride-2 'SAME' depthwise
    rewrite (only the subsampled outputs count), and differ from the uncorrected ones."""
    from utils.stages import StageTimer

    tmp_cfg.model.arch = "efficientnet_lite0"
    tmp_cfg.torch.backend = "x86"  # the backend FX rewrites stride-2 depthwise convs for (depthwise_fast_path)
    tmp_cfg.calibration.size = tmp_cfg.data.limit = 32
    prepared = prepare(tmp_cfg)

    def biases(gathers: bool, correct: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
        tmp_cfg.transforms.bias_correction = correct
        quantizer = make_quantizer("torch_fx", tmp_cfg)
        quantizer.gathers_bias_statistics = lambda: gathers
        model = prepared.model_for(quantizer)
        assert model.bias_correction_pending is (gathers and correct)
        assert model.transforms == (["bias_correction"] if correct else [])
        quantizer.timer = StageTimer("torch_fx")
        module, _ = quantizer._quantized_module(model, prepared.calibration)
        return {n: m.bias().detach().clone() for n, m in module.named_modules()
                if callable(getattr(m, "bias", None)) and m.bias() is not None}, quantizer.timer.seconds

    gathered, stages = biases(True)
    separate, _ = biases(False)
    uncorrected, _ = biases(False, correct=False)
    assert "bias correction" in stages
    assert set(gathered) == set(separate) == set(uncorrected) and len(gathered) > 40
    moved = 0
    for name in gathered:
        assert torch.allclose(gathered[name], separate[name], rtol=1e-4, atol=1e-5), (
            name, (gathered[name] - separate[name]).abs().max())
        moved += not torch.allclose(gathered[name], uncorrected[name], rtol=1e-4, atol=1e-5)
    assert moved > 0.8 * len(gathered)


def _onnx_biases(model) -> dict:
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    return {n.name: numpy_helper.to_array(inits[n.input[2]]) for n in model.graph.node
            if n.op_type in ("Conv", "Gemm") and len(n.input) > 2 and n.input[2] in inits}


def _assert_same_shifts(gathered: dict, separate: dict, plain: dict, float_layers: frozenset = frozenset()) -> None:
    """Each layer's gathered shift is the separate pass's; a layer the toolchain left in float keeps its bias
    (the separate PyTorch pass, not knowing, corrects every layer)."""
    import numpy as np

    assert set(gathered) == set(separate) == set(plain) and len(gathered) >= 10
    for name in float_layers:
        assert np.array_equal(gathered.pop(name), plain[name]), name
    for name in gathered:
        shift, expected = gathered[name] - plain[name], separate[name] - plain[name]
        assert np.abs(expected).max() > 0, name
        assert np.allclose(shift, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max()), name


def _three_ways(tmp_cfg, toolchain: str, after) -> list:
    """Quantize with the correction gathered in the toolchain's calibration, by the separate PyTorch pass, and
    off; ``after(int8)`` of each, checking the manifests on the way."""
    tmp_cfg.calibration.size = tmp_cfg.data.limit = 64
    prepared = prepare(tmp_cfg)
    seen = []
    for gathers, correct in ((True, True), (False, True), (False, False)):
        tmp_cfg.transforms.bias_correction = correct
        quantizer = make_quantizer(toolchain, tmp_cfg)
        assert quantizer.gathers_bias_statistics()  # the default on this machine (CPU, MinMax / max)
        quantizer.gathers_bias_statistics = lambda gathers=gathers: gathers
        model = prepared.model_for(quantizer)
        assert model.bias_correction_pending is (gathers and correct)
        int8 = quantizer.quantize(model, prepared.calibration)
        assert int8.manifest["bias_correction"] == ("applied (fast)" if correct else "off")
        seen.append(after(int8))
    return seen


def test_ort_minmax_gathers_the_fast_correction_in_its_calibration_session_with_the_separate_pass_biases(
        tmp_cfg, monkeypatch):
    """ORT's MinMax session sums each Conv/Gemm input (quantization/transforms/onnx_bias_correction.py) and the
    correction is folded into the ONNX graph before Q/DQ: each layer's bias shift must be the one the separate
    PyTorch pass folds (padding, strides, groups and the head included), into the graph ORT quantizes."""
    import quantization.ORT.ort_quantizer as ort_quantizer

    biases: list[dict] = []
    write_qdq = ort_quantizer.write_qdq

    def spy(model, *args, **kwargs):
        biases.append(_onnx_biases(model))
        return write_qdq(model, *args, **kwargs)

    monkeypatch.setattr(ort_quantizer, "write_qdq", spy)
    stages = _three_ways(tmp_cfg, "ort", lambda int8: "bias correction" in int8.manifest["quantize_seconds_by_stage"])
    assert stages == [True, False, False]
    _assert_same_shifts(*biases)


def test_modelopt_max_gathers_the_fast_correction_in_its_calibration_session_with_the_separate_pass_biases(tmp_cfg):
    """ModelOpt's max calibration runs in the suite's CPU session, which sums each Conv/Gemm input; the suite
    folds the correction into the float biases of ModelOpt's Q/DQ output (its weights already behind Q/DQ, read
    from the calibration graph): the same shifts as the separate PyTorch pass, in the artifact itself."""
    pytest.importorskip("modelopt.onnx.quantization", reason="needs nvidia-modelopt[onnx]")
    tmp_cfg.modelopt.calibration_eps = ["cpu"]  # a GPU machine calibrates on CUDA by default, in ModelOpt's session

    def biases_and_float_layers(int8) -> tuple[dict, set]:
        model = onnx.load(str(int8.path))
        dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        return _onnx_biases(model), {n.name for n in model.graph.node
                                     if n.op_type in ("Conv", "Gemm") and n.input[1] not in dequantized}

    (gathered, float_layers), (separate, _), (plain, _) = _three_ways(tmp_cfg, "modelopt", biases_and_float_layers)
    assert float_layers == {"/linear/Gemm"}  # ModelOpt leaves the demo model's head in float
    _assert_same_shifts(gathered, separate, plain, frozenset(float_layers))


def test_pt2e_gathers_the_fast_correction_through_its_observers_with_the_separate_pass_biases(tmp_cfg):
    """PT2E's graph has no conv modules: counting identities sum each conv/linear input (one input may feed
    several layers) and the correction lands in the graph's own bias tensors before convert_pt2e, with the shifts
    of the separate pass."""
    pytest.importorskip("torchao.quantization.pt2e", reason="needs torchao")
    from quantization.Torch.pt2e_input_sums import LAYER_OPS, _tensor
    from utils.stages import StageTimer

    tmp_cfg.calibration.size = tmp_cfg.data.limit = 32
    prepared = prepare(tmp_cfg)
    seen = []
    for gathers, correct in ((True, True), (False, True), (False, False)):
        tmp_cfg.transforms.bias_correction = correct
        quantizer = make_quantizer("torch_pt2e", tmp_cfg)
        assert quantizer.gathers_bias_statistics()
        quantizer.gathers_bias_statistics = lambda gathers=gathers: gathers
        model = prepared.model_for(quantizer)
        assert model.bias_correction_pending is (gathers and correct)
        timer = StageTimer("torch_pt2e")
        graph = quantizer.converted_module(model, prepared.calibration, timer)
        assert ("bias correction" in timer.seconds) is (gathers and correct)
        assert not [n for n in graph.graph.nodes if "bias_correction_sum" in str(n.target)]  # counting nodes removed
        assert not [n for n, _ in graph.named_modules() if "bias_correction_sum" in n]
        seen.append({n.name: _tensor(graph, n.args[2]).detach().clone() for n in graph.graph.nodes
                     if n.op == "call_function" and n.target in LAYER_OPS})
    gathered, separate, plain = seen
    assert set(gathered) == set(separate) == set(plain) and len(gathered) >= 10
    for name in gathered:
        shift, expected = gathered[name] - plain[name], separate[name] - plain[name]
        assert expected.abs().max() > 0, name
        assert torch.allclose(shift, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max())), name


def test_pt2e_observer_follows_the_setting_and_reaches_the_manifest(tmp_cfg):
    """minmax by default (as FX), every other --observer of FX on request, as torchao observer classes."""
    pytest.importorskip("torchao.quantization.pt2e", reason="needs torchao")
    from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver

    quantizer = make_quantizer("torch_pt2e", tmp_cfg)
    assert quantizer.settings()["observer"] == "minmax"
    for observer, expected, exact in (("minmax", MinMaxObserver, True),
                                      ("moving_average_minmax", MovingAverageMinMaxObserver, True),
                                      ("histogram", HistogramObserver, False), ("torchao_histogram", HistogramObserver, True),
                                      ("percentile", HistogramObserver, False)):
        tmp_cfg.torch.observer = observer
        quantizer = make_quantizer("torch_pt2e", tmp_cfg)
        made = quantizer.quantization_config().input_activation.observer_or_fake_quant_ctr()
        assert isinstance(made, expected) and (type(made) is expected) is exact, (observer, type(made))
        assert quantizer.settings()["observer"] == observer
        assert quantizer.ranges_depend_on_batching() is (observer in ("moving_average_minmax", "torchao_histogram"))
    assert made.percentile == tmp_cfg.torch.percentile
    tmp_cfg.torch.percentile = 20.0
    with pytest.raises(SuiteError, match="--percentile"):
        make_quantizer("torch_pt2e", tmp_cfg).activation_observer()


def test_a_correction_made_on_the_onnx_graph_exports_the_model_without_it(tmp_cfg):
    """An FP32 export is named by what is in it: with the correction pending (made on the ONNX graph) the export is
    the reference itself, or with --cle the CLE-only model; a toolchain that corrects in PyTorch first (ORT entropy)
    exports the corrected model under its own name, so neither reuses the other's file."""
    tmp_cfg.calibration.size = tmp_cfg.data.limit = 32
    prepared = prepare(tmp_cfg)
    pending = make_quantizer("ort", tmp_cfg)
    model = prepared.model_for(pending)
    assert model.bias_correction_pending and model.module is prepared.model.module  # nothing to copy
    assert pending.source_onnx(model).path == pending.export_fp32(prepared.model).path
    tmp_cfg.transforms.cle = True
    with_cle = make_quantizer("ort", tmp_cfg)
    model = prepared.model_for(with_cle)
    assert model.bias_correction_pending and model.transforms == ["cle", "bias_correction"]
    assert with_cle.source_onnx(model).path.name.endswith("_fp32_opset17_cle.onnx")
    tmp_cfg.ort.calibration_method = "entropy"  # calibrates in ORT's own session: the separate PyTorch pass
    separate = make_quantizer("ort", tmp_cfg)
    model = prepared.model_for(separate)
    assert not model.bias_correction_pending
    assert separate.source_onnx(model).path.name.endswith("_fp32_opset17_cle_bc.onnx")
