"""PT2E PTQ: torch.export -> torchao X86InductorQuantizer -> ExportedProgram, run with torch.compile.

The forward-compatible PyTorch path (torch.ao.quantization is deprecated upstream). Export uses
``strict=True``: with torchao 0.18 the default non-strict export of torchvision ResNets makes
``prepare_pt2e`` fail ("Input partition has more than one output node"). The FP32 reference is the
same model exported without quantization, so both are compiled by Inductor and compared fairly.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.utils import skip_init

from quantization.base import Quantizer
from quantization.Torch.calibration import calibrate
from quantization.transforms.bias_correction import InputSums
from quantization.transforms.bn_fold import fold_batchnorm_if_traceable
from quantization.transforms.weight_scheme import WeightScheme
from utils.artifacts import Artifact, build_manifest, write_artifact, write_saved
from utils.data import CalibrationSet
from utils.errors import SuiteError
from utils.models import LoadedModel
from utils.packages import missing_reason
from utils.stages import StageTimer

log = logging.getLogger(__name__)
#: the aten calls the fast bias correction measures in a prepared PT2E graph
LAYER_OPS = (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)


def _export(module: torch.nn.Module, example: torch.Tensor, strict: bool = True) -> torch.export.ExportedProgram:
    """``strict=False`` only for a module torch.export has traced already (the converted graph): see quantize."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    try:
        return torch.export.export(module, (example,), dynamic_shapes=({0: batch},), strict=strict)
    except Exception as exc:  # export raises many internal types for unsupported Python
        raise SuiteError(f"torch.export cannot export this model: {str(exc).splitlines()[0][:200]}") from exc


def _tensor(graph: torch.fx.GraphModule, node: Any) -> torch.Tensor | None:
    """The constant behind ``node``: a get_attr, or a get_attr seen through its (weight) observer."""
    if isinstance(node, torch.fx.Node) and node.op == "call_module" and node.args:
        node = node.args[0]
    if not (isinstance(node, torch.fx.Node) and node.op == "get_attr"):
        return None
    return functools.reduce(getattr, str(node.target).split("."), graph)


def _stand_in(node: torch.fx.Node, weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    """An nn.Conv2d / nn.Linear of an aten conv2d / linear node whose weight and bias are the graph's own tensors
    (shared storage: a bias folded into it is folded into the graph)."""
    if node.target is torch.ops.aten.linear.default:
        layer = skip_init(nn.Linear, weight.shape[1], weight.shape[0])
    else:
        stride, padding, dilation, groups = (list(node.args[3:7]) + [1, 0, 1, 1][len(node.args[3:7]):])
        layer = skip_init(nn.Conv2d, weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]),
                          stride=stride, padding=padding, dilation=dilation, groups=groups)
    layer.weight, layer.bias = nn.Parameter(weight, requires_grad=False), nn.Parameter(bias, requires_grad=False)
    return layer


class _SumInput(nn.Module):
    """An identity in the graph that counts its input for the layers in ``names`` (InputSums.add)."""

    def __init__(self, sums: InputSums, names: list[str]):
        super().__init__()
        self.sums, self.names = sums, names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sums.add(self.names, x)
        return x


@contextlib.contextmanager
def summing_inputs(prepared: torch.fx.GraphModule) -> Iterator[InputSums]:
    """The fast bias correction's statistics for a prepared PT2E graph, gathered while the block runs.

    The graph has no conv modules to hook: its convs and linears are aten calls. Each one's input (an
    observer's output, the unchanged FP32 value) goes through a counting identity inserted for the block and
    removed after it, so convert_pt2e sees the graph it prepared. One identity per input and kind of layer: a
    residual block's input feeds its first conv and its downsample, summed once. A layer without a bias in the
    graph is left out."""
    graph = prepared.graph
    layers: dict[str, nn.Module] = {}
    fed: dict[tuple[torch.fx.Node, bool], list[torch.fx.Node]] = {}
    for node in graph.nodes:
        if node.op != "call_function" or node.target not in LAYER_OPS or not isinstance(node.args[0], torch.fx.Node):
            continue
        weight, bias = _tensor(prepared, node.args[1]), _tensor(prepared, node.args[2] if len(node.args) > 2 else None)
        if weight is None or bias is None:
            continue
        layers[node.name] = _stand_in(node, weight, bias)
        fed.setdefault((node.args[0], node.target is torch.ops.aten.linear.default), []).append(node)
    sums = InputSums(layers)
    inserted = []
    for i, ((source, _), users) in enumerate(fed.items()):
        name = f"bias_correction_sum_{i}"
        prepared.add_submodule(name, _SumInput(sums, [n.name for n in users]))
        with graph.inserting_after(source):
            counter = graph.call_module(name, (source,))
        for user in users:
            user.replace_input_with(source, counter)
        inserted.append((name, source, counter))
    prepared.recompile()
    log.info("PT2E bias correction: %d conv/linear inputs summed in the calibration pass", len(layers))
    try:
        yield sums
    finally:
        for name, source, counter in inserted:
            counter.replace_all_uses_with(source)
            graph.erase_node(counter)
            prepared.delete_submodule(name)
        prepared.recompile()


class PT2EQuantizer(Quantizer):
    toolchain = "torch_pt2e"
    folder = "torch"
    section = "torch"
    runtimes = ("torch_compile",)
    runs_by_default = True

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return missing_reason("toolchain torch_pt2e", {"torchao": "torchao"})

    def weight_bits(self) -> int:
        """X86InductorQuantizer does nothing for CPUs without VNNI (its docstring only suggests 7-bit
        activations there); oneDNN's AVX2 u8 x s8 kernels add pairs in 16 bits, so for such a target the
        weights take 7 bits ([-64, 63]), as in the FX path."""
        return self.target.weight_bits()

    def gathers_bias_statistics(self) -> bool:
        return True  # its calibration pass runs the FP32 layers (summing_inputs)

    def weight_scheme(self) -> WeightScheme:
        """X86InductorQuantizer's default: per-channel symmetric qint8 over [-128, 127] (torch.ao observer);
        7-bit weights for a saturating target: [-64, 63]."""
        if self.weight_bits() == 7:
            return WeightScheme(per_channel=True, qmin=-64, qmax=63, divisor=63.5)
        return WeightScheme(per_channel=True, qmin=-128, qmax=127, divisor=127.5)

    def quantization_config(self) -> Any:
        """torchao's x86 default config with two changes: the weight range of :meth:`weight_bits`, and the
        activations observed by the fast exact histogram (torchao's L2 range search over a histogram that
        is not re-binned per batch: EfficientNet-Lite0, 300 images, AVX2: calibration 36 s with torchao's)."""
        import dataclasses

        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            get_default_x86_inductor_quantization_config,
        )

        from quantization.Torch.histogram_observer import pt2e_fast_histogram_observer

        config = get_default_x86_inductor_quantization_config()
        activation = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=(
            pt2e_fast_histogram_observer().with_args(eps=2**-12)))  # torchao's x86 default eps
        config = dataclasses.replace(config, input_activation=activation, output_activation=activation)
        if self.weight_bits() == 8:
            return config
        return dataclasses.replace(config, weight=dataclasses.replace(config.weight, quant_min=-64, quant_max=63))

    def ranges_depend_on_batching(self) -> bool:
        """The fast histogram and the weights' min/max do not depend on how the sample is batched."""
        return False

    def settings(self) -> dict[str, Any]:
        return {"mode": "pt2e", "quantizer": "X86InductorQuantizer", "granularity": "per_channel",
                "observer": "histogram (fast exact histogram, torchao's L2 search)", "is_dynamic": False,
                "target": self.target.name, "weight_bits": self.weight_bits(),
                "calibration_size": self.cfg.calibration.size, "calibration_seed": self.cfg.calibration.seed,
                "calibration_batch_size": self.calibration_batch_size()}

    def _write(self, program: torch.export.ExportedProgram, model: LoadedModel, tag: str, precision: str,
               settings: dict[str, Any], calibration_ids: list[str] | None, extra: dict[str, Any]) -> Artifact:
        final = self.output_dir() / f"{self.artifact_stem(model, tag)}.pt2"
        manifest = build_manifest(name=f"{model.arch} {tag}", toolchain=self.toolchain if precision == "int8"
                                  else "torch", kind="exported_program", precision=precision, settings=settings,
                                  source_weights=model.weights_path, calibration_ids=calibration_ids,
                                  extra={**self.model_facts(model), **extra})
        return write_artifact(final, lambda tmp: write_saved(tmp, torch.export.save, program), manifest,
                              toolchain=manifest["toolchain"], kind="exported_program", precision=precision)

    def export_fp32(self, model: LoadedModel) -> Artifact:
        example = torch.randn(2, *model.input_shape)
        program = _export(copy.deepcopy(model.module).eval(), example)
        return self._write(program, model, "fp32_exported", "fp32", {"mode": "fp32"}, None, {})

    def quantize(self, model: LoadedModel, calibration: CalibrationSet) -> Artifact:
        """Stages: export (strict), prepare, calibrate, convert (convert_pt2e and the re-export).

        The re-export is non-strict: the converted module is the GraphModule of a strict export, plain
        aten calls with nothing left for Dynamo's bytecode tracing to check, and the non-strict trace
        gives the same calls and outputs (tests/test_torch_modes.py) in a third of the time
        (EfficientNet-Lite0, AVX2: 6.4 -> 2.3 s)."""
        timer = StageTimer(self.toolchain)
        example = torch.randn(2, *model.input_shape)
        converted = self.converted_module(model, calibration, timer)
        with timer.stage("convert"):
            program = _export(converted, example, strict=False)
        tag = "pt2e_x86inductor" + ("_w7" if self.weight_bits() == 7 else "")
        return self._write(program, model, tag, "int8", self.settings(), calibration.ids,
                           {"quantize_seconds": timer.total(), "quantize_seconds_by_stage": dict(timer.seconds)})

    def converted_module(self, model: LoadedModel, calibration: CalibrationSet, timer: StageTimer) -> torch.fx.GraphModule:
        """The calibrated, converted GraphModule (Q/DQ ops and int8 weights), before its re-export."""
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer

        example = torch.randn(2, *model.input_shape)
        module = copy.deepcopy(model.module).eval()
        if model.bias_correction_pending:  # BN folded as the separate pass folds it: the same weights, the same grid
            fold_batchnorm_if_traceable(module)
        with timer.stage("export"):
            graph = _export(module, example).module()
        with timer.stage("prepare"):
            quantizer = X86InductorQuantizer().set_global(self.quantization_config())
            try:
                prepared = prepare_pt2e(graph, quantizer)
            except Exception as exc:
                raise SuiteError(f"PT2E prepare failed on {model.arch}: {str(exc).splitlines()[0][:200]}") from exc
        counting = summing_inputs(prepared) if model.bias_correction_pending else contextlib.nullcontext()
        with timer.stage("calibrate"), counting as sums:
            calibrate(prepared, calibration, self.calibration_batch_size(), "calibrating (PT2E)")
        if sums is not None:  # the fast correction, from the calibration pass's own FP32 inputs
            with timer.stage("bias correction"):
                sums.fold(self.weight_scheme())
        with timer.stage("convert"):
            return convert_pt2e(prepared)
