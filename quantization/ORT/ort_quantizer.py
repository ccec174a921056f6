"""ONNX Runtime static quantization (``quantize_static``, QDQ format), configured by ``cfg.ort``.

Defaults follow what runs fast on x86 CPUs: unsigned 8-bit activations with signed per-channel
weights (ORT's CPU EP fuses u8 x s8 QDQ into integer kernels; s8 activations ran at FP32 speed).
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from quantization.onnx_quantizer import OnnxQuantizer, calibration_step
from quantization.ORT.ort_calibration import calibrated_ranges, default_op_types, load_for_quantization, write_qdq
from quantization.transforms.onnx_bias_correction import fold_shifts
from quantization.transforms.weight_scheme import WeightScheme
from utils.packages import missing_reason
from utils.stages import StageTimer

#: ort.calibration_method -> onnxruntime's CalibrationMethod (the config's choices are these keys)
METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


class OrtQuantizer(OnnxQuantizer):
    toolchain = "ort"
    folder = "ort"
    section = "ort"
    runs_by_default = True
    library_modules = ("onnxruntime.quantization", "onnxruntime.quantization.qdq_quantizer")
    calibrations = {"minmax": "minmax", "percentile": "percentile", "entropy": "entropy"}
    unsupported_calibrations = {"mse": "onnxruntime's calibrators are MinMax, Entropy, Percentile and Distribution"}
    granularities = ("per_tensor", "per_channel")
    calibration_fields = ("calibration_method", "granularity")

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return missing_reason("toolchain ort", {"onnx": "onnx", "onnxruntime": "onnxruntime-gpu"})

    def method(self) -> str:
        return self.options.calibration_method  # minmax | entropy | percentile, checked when the config was built

    def ranges_depend_on_batching(self) -> bool:
        """MinMax merges each batch's ranges exactly; Entropy and Percentile size their histograms from the first."""
        return self.method() != "minmax"

    def activation_type(self) -> str:
        choice = self.options.activation_type
        return "uint8" if choice == "auto" else choice  # ORT's x86 kernels are u8 x s8, with or without VNNI

    def settings(self) -> dict[str, Any]:
        m = self.options
        return {"mode": "ort quantize_static QDQ", "calibration_method": self.method(),
                "granularity": m.granularity, "activation_type": self.activation_type(), "weight_type": "int8",
                "reduce_range": self.weight_bits() == 7, **self.common_settings()}

    def weight_scheme(self) -> WeightScheme:
        """quantize_static's symmetric int8 weights: [-127, 127], scale = absmax / 127; with reduce_range
        (7-bit weights) [-64, 64], scale = absmax / 64."""
        per_channel = self.options.granularity == "per_channel"
        if self.weight_bits() == 7:
            return WeightScheme(per_channel=per_channel, qmin=-64, qmax=64, divisor=64.0)
        return dataclasses.replace(super().weight_scheme(), per_channel=per_channel)

    def tag(self) -> str:
        act = "u8" if self.activation_type() == "uint8" else "s8"
        return f"ort_qdq_{self.method()}_{self.options.granularity}_{act}s8{self.bits_tag()}"

    def gathers_bias_statistics(self) -> bool:
        """MinMax calibrates in the suite's own session, where the fast correction's input sums come along."""
        return self.method() == "minmax"

    def _quantize_file(self, fp32: Path, feed: dict[str, np.ndarray], exclude: list[str], out: Path,
                       timer: StageTimer, pending_correction: bool) -> None:
        """quantize_static's steps with ORT's own pieces (quantization/ORT/ort_calibration.py): pre-process,
        calibrate (ranges shared by every variant of the run on the same model and images), write Q/DQ."""
        from onnxruntime.quantization import QuantType
        from onnxruntime.quantization.shape_inference import quant_pre_process

        m = self.options
        with tempfile.TemporaryDirectory(prefix="ort.quantize.") as scratch:
            prepped = Path(scratch) / "prepped.onnx"
            weight_type = QuantType.QInt8
            with timer.stage("prepare"):
                quant_pre_process(str(fp32), str(prepped), skip_symbolic_shape=True)
                model, calibrate_from = load_for_quantization(prepped, weight_type, Path(scratch))
            op_types = default_op_types()
            if m.exclude_op_types:
                op_types = sorted({n.op_type for n in model.graph.node} - set(m.exclude_op_types))
            step = calibration_step(len(next(iter(feed.values()))), self.calibration_batch_size(),
                                    self.ranges_depend_on_batching())
            with timer.stage("calibrate"):
                calibration = calibrated_ranges(calibrate_from, feed, step, METHODS[self.method()], op_types,
                                                input_sums=pending_correction)
            if pending_correction:  # into the graph write_qdq quantizes, whose weights the sums met
                with timer.stage("bias correction"):
                    fold_shifts(model, calibration.input_sums, calibration.samples, self.weight_scheme(), set(exclude),
                                {n.op_type for n in model.graph.node} - set(op_types))
            with timer.stage("quantize"):
                write_qdq(model, calibration.ranges, out, per_channel=m.granularity == "per_channel",
                          reduce_range=self.weight_bits() == 7,
                          activation_type=QuantType.QUInt8 if self.activation_type() == "uint8" else QuantType.QInt8,
                          weight_type=weight_type, nodes_to_exclude=exclude, op_types=op_types)
