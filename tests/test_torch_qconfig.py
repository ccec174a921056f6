import pytest
import torch

from quantization.Torch import qconfig as qc
from utils.config import TorchQuantConfig
from utils.errors import SuiteError


@pytest.mark.parametrize("vnni, backend, expected", [
    (False, "x86", (False, 7)), (False, "fbgemm", (False, 7)), (True, "x86", (False, 8)),
    (False, "qnnpack", (False, 8)), (False, "onednn", (False, 8)),
])
def test_auto_bit_widths_follow_the_cpu(monkeypatch, vnni, backend, expected):
    monkeypatch.setattr(qc, "has_int8_dot_product", lambda: vnni)
    cfg = TorchQuantConfig(backend=backend)
    assert (qc.use_reduce_range(cfg), qc.weight_bits(cfg)) == expected
    weight = qc.build_qconfig(cfg).weight()
    assert (weight.quant_min, weight.quant_max) == ((-64, 63) if expected[1] == 7 else (-128, 127))


def test_user_overrides_win(monkeypatch):
    monkeypatch.setattr(qc, "has_int8_dot_product", lambda: False)
    cfg = TorchQuantConfig(reduce_range="on", weight_bits="auto")
    assert qc.use_reduce_range(cfg) and qc.weight_bits(cfg) == 8  # the activation already gave up its bit
    assert qc.build_qconfig(cfg).activation().reduce_range
    with pytest.raises(SuiteError, match="--weight-bits"):
        qc.weight_bits(TorchQuantConfig(weight_bits="6"))


def test_percentile_observer_clips_outliers():
    obs = qc.PercentileObserver(percentile=99.0, dtype=torch.quint8)
    x = torch.cat([torch.rand(100_000), torch.tensor([50.0])])
    obs(x)
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

    cfg = TorchQuantConfig(observer="minmax", clamp_observers=clamp)
    prepared = prepare_fx(model, qc.build_qconfig_mapping(cfg), example_inputs=(x[:1],))
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
