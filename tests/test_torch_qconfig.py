import copy

import pytest
import torch

from quantization.Torch import qconfig as qc
from quantization.Torch.config import TorchQuantConfig
from utils.errors import SuiteError
from utils.targets import TARGETS, resolve_target

VNNI, AVX2 = TARGETS["x86-vnni"], TARGETS["x86-avx2"]


@pytest.mark.parametrize("target, backend, expected", [
    ("x86-avx2", "x86", (False, 7)), ("x86-avx2", "fbgemm", (False, 7)), ("x86-vnni", "x86", (False, 8)),
    ("x86-avx2", "qnnpack", (False, 8)), ("x86-avx2", "onednn", (False, 8)), ("arm64", "qnnpack", (False, 8)),
])
def test_auto_bit_widths_follow_the_target(target, backend, expected):
    cfg = TorchQuantConfig(backend=backend)
    assert (qc.use_reduce_range(cfg), qc.weight_bits(cfg, TARGETS[target])) == expected
    weight = qc.build_qconfig(cfg, TARGETS[target]).weight()
    assert (weight.quant_min, weight.quant_max) == ((-64, 63) if expected[1] == 7 else (-128, 127))


def test_user_overrides_win():
    cfg = TorchQuantConfig(reduce_range="on", weight_bits="auto")
    assert qc.use_reduce_range(cfg) and qc.weight_bits(cfg, AVX2) == 8  # the activation already gave up its bit
    assert qc.build_qconfig(cfg, AVX2).activation().reduce_range
    assert qc.weight_bits(TorchQuantConfig(weight_bits="8"), AVX2) == 8
    with pytest.raises(SuiteError, match="--weight-bits"):
        qc.weight_bits(TorchQuantConfig(weight_bits="6"), AVX2)


def test_percentile_observer_clips_outliers():
    obs = qc.PercentileObserver(percentile=99.0, dtype=torch.quint8)
    x = torch.cat([torch.rand(100_000), torch.tensor([50.0])])
    obs(x)
    obs.fold_histogram()  # calculate_qparams does this before the search
    _, max_val = obs._non_linear_param_search()
    assert 0.9 < float(max_val) < 2.0  # the 50.0 outlier is clipped away
    minmax = torch.ao.quantization.MinMaxObserver(dtype=torch.quint8)
    minmax(x)
    assert obs.calculate_qparams()[0] < minmax.calculate_qparams()[0] / 10


def _relu6_net() -> torch.nn.Module:
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU6(),
                          nn.Conv2d(16, 16, 3, groups=16), nn.BatchNorm2d(16), nn.ReLU6(),
                          nn.Conv2d(16, 8, 1)).eval()
    with torch.no_grad():  # pre-activations far beyond 6 on both sides, as in trained MobileNets
        for bn in (model[1], model[4]):
            bn.weight.mul_(8.0)
    return model


def _fx_int8(model: torch.nn.Module, x: torch.Tensor, clamp: str):
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from quantization.Torch.fx_quantizer import observe_clamped_ranges

    cfg = TorchQuantConfig(observer="minmax", clamp_observers=clamp, backend="x86")
    # the INT8 model runs on this machine's kernels, so it is built for this machine's target
    prepared = prepare_fx(model, qc.build_qconfig_mapping(cfg, resolve_target("auto")), example_inputs=(x[:1],))
    tightened = observe_clamped_ranges(prepared) if clamp == "clamped" else 0
    prepared(x)
    ranges = [(float(m.min_val), float(m.max_val)) for n, m in prepared.named_modules()
              if "activation_post_process" in n and hasattr(m, "min_val")]
    return convert_fx(prepared), tightened, ranges


def test_relu6_fed_observers_take_the_clamped_range_and_cut_the_error():
    """torch.ao shares one observer between a conv output and its ReLU6, so the INT8 range covers the
    unclamped values; observing the clamped values keeps the function and the bits."""
    model = _relu6_net()
    x = torch.randn(32, 3, 20, 20) * 4
    with torch.no_grad():
        reference = model(x)
    clamped, tightened, clamped_ranges = _fx_int8(model, x, "clamped")
    shared, _, shared_ranges = _fx_int8(model, x, "shared")
    assert tightened == 2
    assert sum(lo >= 0.0 and hi <= 6.0 for lo, hi in clamped_ranges) >= 2
    assert min(lo for lo, _ in shared_ranges[1:3]) < 0.0  # torch.ao as is: the pre-ReLU6 range
    with torch.no_grad():
        err_clamped = float(((clamped(x) - reference) ** 2).mean())
        err_shared = float(((shared(x) - reference) ** 2).mean())
    assert err_clamped < 0.5 * err_shared, (err_clamped, err_shared)


def test_stride2_same_depthwise_runs_as_stride1_plus_subsample_exactly():
    """EfficientNet's stride-2 'SAME' depthwise convs (explicit asymmetric pad, conv padding 0) miss
    FBGEMM's fast depthwise kernel; the rewrite computes the same function with the conv's own padding."""
    from torch import nn

    from quantization.Torch.depthwise_fast_path import subsample_strided_depthwise

    torch.manual_seed(0)
    for k, pad in ((3, (0, 1, 0, 1)), (5, (1, 2, 1, 2))):
        model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Sequential(nn.ZeroPad2d(pad), nn.Conv2d(8, 8, k, 2, groups=8)),
                              nn.BatchNorm2d(8), nn.ReLU6(), nn.Conv2d(8, 4, 1)).eval()
        model[2].running_mean.uniform_(-1, 1)
        x = torch.randn(2, 3, 16, 16)
        rewritten, count = subsample_strided_depthwise(copy.deepcopy(model))
        assert count == 1 and rewritten.get_submodule("1.conv").stride == (1, 1)
        with torch.no_grad():
            assert torch.allclose(rewritten(x), model(x), atol=1e-6)
        # the subsample moved past BN and ReLU6, so conv + BN still fuse and ReLU6 keeps its clamp
        order = [n.op + ":" + str(n.target) for n in rewritten.graph.nodes if n.op in ("call_module", "call_function")]
        assert order.index("call_module:2") < len(order) - 2 and "getitem" in order[-2]


def test_depthwise_convs_get_seven_bit_weights_on_fbgemm():
    from torch import nn

    cfg = TorchQuantConfig(backend="x86")
    # on a VNNI target only the depthwise convs need 7 bits (FBGEMM's depthwise kernel sums pairs in 16 bits)
    assert qc.depthwise_weight_bits(cfg, VNNI) == 7 and qc.weight_bits(cfg, VNNI) == 8
    assert qc.depthwise_weight_bits(TorchQuantConfig(backend="x86", weight_bits="8"), VNNI) == 8
    assert qc.depthwise_weight_bits(cfg, TARGETS["arm64"]) == 8
    model = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 8, 1))
    assert qc.depthwise_convs(model) == ["0"]
    mapping = qc.build_qconfig_mapping(cfg, VNNI, qc.depthwise_convs(model))
    assert mapping.module_name_qconfigs["0"].weight().quant_max == 63
    assert mapping.global_qconfig.weight().quant_max == 127
    # on an AVX2 target every weight is 7-bit, so no per-module entry is needed
    avx2 = qc.build_qconfig_mapping(cfg, AVX2, qc.depthwise_convs(model))
    assert "0" not in avx2.module_name_qconfigs and avx2.global_qconfig.weight().quant_max == 63


@pytest.mark.parametrize("observer,batch", [("histogram", 4), ("minmax", 4), ("percentile", 4),
                                             ("torchao_histogram", 32), ("moving_average_minmax", 32)])
def test_default_calibration_batch_follows_whether_the_observer_depends_on_batching(observer, batch):
    """torch.ao's histogram re-bins per batch and a moving average weights batches: they keep the larger step;
    exact min/max and the fast histogram take the small, faster one. A user's --calib-batch-size always wins."""
    from quantization.run_config import RunConfig
    from quantization.Torch.fx_quantizer import FxQuantizer

    cfg = RunConfig()
    cfg.torch.observer = observer
    assert FxQuantizer(cfg).calibration_batch_size() == batch
    cfg.calibration.batch_size = 7
    assert FxQuantizer(cfg).calibration_batch_size() == 7


@pytest.mark.parametrize("mode, target, expected", [
    ("fx", "x86-vnni", "onednn"), ("fx", "x86-amx", "onednn"), ("fx", "x86-avx2", "x86"), ("fx", "arm64", "x86"),
    ("fx", "tensorrt", "x86"), ("eager", "x86-vnni", "x86"), ("qat", "x86-amx", "x86"), ("dynamic", "x86-vnni", "x86"),
])
def test_backend_auto_follows_the_mode_and_the_target(mode, target, expected):
    """oneDNN where FBGEMM's depthwise kernel would cost the FX depthwise weights a bit (VNNI/AMX), else x86."""
    assert qc.resolve_backend("auto", mode, TARGETS[target]) == expected
    assert qc.resolve_backend("x86", mode, TARGETS[target]) == "x86"  # a named engine is kept


@pytest.mark.parametrize("target, engine, depthwise_bits", [("x86-vnni", "onednn", 8), ("x86-avx2", "x86", 7)])
def test_the_fx_quantizer_runs_the_resolved_engine_everywhere(tmp_cfg, target, engine, depthwise_bits):
    from quantization.workflow import make_quantizer

    tmp_cfg.target = target
    assert tmp_cfg.torch.backend == "auto"
    quantizer = make_quantizer("torch_fx", tmp_cfg)
    assert quantizer.cfg.torch.backend == engine and tmp_cfg.torch.backend == "auto"  # the caller's config untouched
    assert quantizer.settings()["backend"] == engine and quantizer.tag().startswith(f"fx_{engine}_")
    assert quantizer.settings()["depthwise_weight_bits"] == depthwise_bits
