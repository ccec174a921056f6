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
