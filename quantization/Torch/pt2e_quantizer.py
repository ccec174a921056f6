"""PT2E PTQ: torch.export -> torchao X86InductorQuantizer -> ExportedProgram, run with torch.compile.

The forward-compatible PyTorch path (torch.ao.quantization is deprecated upstream). Every export is the
non-strict one with the source metadata the quantizer needs (pt2e_export.py: a third to a half of the strict
export's time; the same quantized graph on every model tested). The FP32 reference is the same model exported
without quantization, so both are compiled by Inductor and compared fairly.
"""
from __future__ import annotations

import contextlib
import copy
import logging
from typing import Any

import torch

from quantization.base import Quantizer
from quantization.Torch.calibration import calibrate
from quantization.Torch.pt2e_export import export, graph_to_quantize
from quantization.Torch.pt2e_input_sums import summing_inputs
from quantization.transforms.bn_fold import fold_batchnorm_if_traceable
from quantization.transforms.weight_scheme import WeightScheme
from utils.artifacts import Artifact, build_manifest, write_artifact, write_saved
from utils.data import CalibrationSet
from utils.errors import SuiteError
from utils.models import LoadedModel
from utils.packages import missing_reason
from utils.stages import StageTimer

log = logging.getLogger(__name__)


class PT2EQuantizer(Quantizer):
    toolchain = "torch_pt2e"
    folder = "torch"
    section = "torch"
    runtimes = ("torch_compile",)
    runs_by_default = True
    library_modules = ("torchao.quantization.pt2e.quantize_pt2e",
                       "torchao.quantization.pt2e.quantizer.x86_inductor_quantizer")

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return missing_reason("toolchain torch_pt2e", {"torchao": "torchao"})

    def weight_bits(self) -> int:
        """X86InductorQuantizer does nothing for CPUs without VNNI (its docstring only suggests 7-bit
        activations there); oneDNN's AVX2 u8 x s8 kernels add pairs in 16 bits, so for such a target the
        weights take 7 bits ([-64, 63]), as in the FX path."""
        return self.target.weight_bits()

    def gathers_bias_statistics(self) -> bool:
        """Its calibration pass runs the FP32 layers (pt2e_input_sums.summing_inputs), as FX's and NNCF's do.
        With the histogram observer that was less accurate than a separate pass (CIFAR-10 ResNet-20/32/44/56 x 3
        seeds, x86-vnni: +0.135 against +0.090 pp); with the min/max observer, the default since, it is the most
        accurate of the four (+0.038: paired -0.052 against the separate pass with the histogram, -0.071
        against no correction; docs/accuracy_recovery.md) and saves a pass over the images."""
        return True

    def activation_observer(self) -> Any:
        """``--observer`` for PT2E's activations, as FX's: minmax (the default), moving_average_minmax, histogram
        (the fast exact histogram with the L2 search), torchao_histogram (torchao's own), percentile; each the
        torchao observer class (prepare_pt2e accepts those only), with torchao's x86 default eps."""
        from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver

        from quantization.Torch.histogram_observer import pt2e_fast_histogram_observer
        from quantization.Torch.qconfig import pt2e_percentile_observer, validate

        t = self.cfg.torch
        validate(t)
        if t.observer == "percentile":
            return pt2e_percentile_observer().with_args(percentile=t.percentile, eps=2**-12)
        return {"minmax": MinMaxObserver, "moving_average_minmax": MovingAverageMinMaxObserver,
                "histogram": pt2e_fast_histogram_observer(), "torchao_histogram": HistogramObserver,
                }[t.observer].with_args(eps=2**-12)

    def weight_scheme(self) -> WeightScheme:
        """X86InductorQuantizer's default: per-channel symmetric qint8 over [-128, 127] (torch.ao observer);
        7-bit weights for a saturating target: [-64, 63]."""
        if self.weight_bits() == 7:
            return WeightScheme(per_channel=True, qmin=-64, qmax=63, divisor=63.5)
        return WeightScheme(per_channel=True, qmin=-128, qmax=127, divisor=127.5)

    def quantization_config(self) -> Any:
        """torchao's x86 default config with two changes: the weight range of :meth:`weight_bits`, and the
        activation observer of :meth:`activation_observer` (torchao's default is its HistogramObserver,
        re-binned per batch: EfficientNet-Lite0, 300 images, AVX2: calibration 36 s; "histogram" is the same L2
        search on a fast exact histogram; min/max calibrates EfficientNet-Lite0 in about 0.6x its time)."""
        import dataclasses

        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            get_default_x86_inductor_quantization_config,
        )

        config = get_default_x86_inductor_quantization_config()
        activation = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=self.activation_observer())
        config = dataclasses.replace(config, input_activation=activation, output_activation=activation)
        if self.weight_bits() == 8:
            return config
        return dataclasses.replace(config, weight=dataclasses.replace(config.weight, quant_min=-64, quant_max=63))

    def ranges_depend_on_batching(self) -> bool:
        """As FX's (qconfig.BATCH_INDEPENDENT_OBSERVERS): min/max, the fast histogram and the percentile do not
        depend on how the sample is batched; torchao's histogram and the moving average do."""
        from quantization.Torch.qconfig import BATCH_INDEPENDENT_OBSERVERS

        return self.cfg.torch.observer not in BATCH_INDEPENDENT_OBSERVERS

    def settings(self) -> dict[str, Any]:
        return {"mode": "pt2e", "quantizer": "X86InductorQuantizer", "granularity": "per_channel",
                "observer": self.cfg.torch.observer, "is_dynamic": False,
                **({"percentile": self.cfg.torch.percentile} if self.cfg.torch.observer == "percentile" else {}),
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
        program = export(copy.deepcopy(model.module).eval(), example)
        return self._write(program, model, "fp32_exported", "fp32", {"mode": "fp32"}, None, {})

    def quantize(self, model: LoadedModel, calibration: CalibrationSet) -> Artifact:
        """Stages: export, prepare, calibrate, bias correction (the fold, where pending), convert
        (convert_pt2e and the re-export of the converted graph, which the artifact needs)."""
        timer = StageTimer(self.toolchain)
        example = torch.randn(2, *model.input_shape)
        converted = self.converted_module(model, calibration, timer)
        with timer.stage("convert"):
            program = export(converted, example)
        tag = f"pt2e_x86inductor_{self.cfg.torch.observer}" + ("_w7" if self.weight_bits() == 7 else "")
        return self._write(program, model, tag, "int8", self.settings(), calibration.ids,
                           {"quantize_seconds": timer.total(), "quantize_seconds_by_stage": dict(timer.seconds)})

    def converted_module(self, model: LoadedModel, calibration: CalibrationSet, timer: StageTimer) -> torch.fx.GraphModule:
        """The calibrated, converted GraphModule (Q/DQ ops and int8 weights), before its re-export."""
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer

        example = torch.randn(2, *model.input_shape)
        self.activation_observer()  # a bad --percentile: one line before any work
        module = copy.deepcopy(model.module).eval()
        if model.bias_correction_pending:  # BN folded as the separate pass folds it: the same weights, the same grid
            fold_batchnorm_if_traceable(module)
        with timer.stage("export"):
            graph = graph_to_quantize(module, example)
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
