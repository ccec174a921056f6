"""Quantization-aware training: a short fine-tune from the FP32 weights with fake quantization in the
forward pass, then convert. Recovers what PTQ loses where rounding hurts most (per-tensor weights).

FX (``prepare_qat_fx``, no model changes) or eager (``prepare_qat`` on the quantizable variant). BN
statistics and then the fake-quant ranges are frozen after configurable steps, the usual recipe.
Trains on the dataset's training split (never on evaluation images); the ids used are recorded.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch.ao.quantization import disable_observer

from quantization.Torch.config import TorchQuantConfig
from quantization.Torch.fx_tracing import without_stack_traces
from quantization.Torch.qconfig import build_qat_qconfig, build_qconfig_mapping, weight_bits
from quantization.Torch.torchscript_quantizer import TorchScriptQuantizer
from utils.config import SgdRecipe
from utils.data import CalibrationSet
from utils.errors import SuiteError
from utils.models import LoadedModel
from utils.training import batches_forever, optimizer_and_schedule, run_steps

ENGINES = ("fx", "eager")


def freeze_bn_stats(module: torch.nn.Module) -> None:
    """Stop BN running statistics (fused QAT conv-bn modules and plain BN alike)."""
    from torch.ao.nn.intrinsic.qat import freeze_bn_stats as freeze_fused

    module.apply(freeze_fused)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()


def fine_tune(module: torch.nn.Module, dataset: Any, t: TorchQuantConfig, seed: int, desc: str) -> torch.nn.Module:
    """The QAT recipe's training steps. Run on a plain FP32 copy it is the control that separates what
    QAT recovers from what the same fine-tune alone changes (e.g. adapting to the training images)."""
    recipe = SgdRecipe(lr=t.qat_lr, momentum=0.9, weight_decay=0.0, batch_size=t.qat_batch_size, seed=seed)
    optimizer, scheduler = optimizer_and_schedule(module, recipe, t.qat_steps)

    def on_step(step: int) -> None:
        if step == t.qat_freeze_bn_after:
            freeze_bn_stats(module)
        if step == t.qat_freeze_observers_after:
            module.apply(disable_observer)

    torch.manual_seed(recipe.seed)
    run_steps(module, batches_forever(dataset, recipe.batch_size, recipe.seed), optimizer, scheduler,
              t.qat_steps, desc=desc, on_step=on_step)
    return module.eval()


class QatQuantizer(TorchScriptQuantizer):
    toolchain = "torch_qat"
    mode = "qat"
    needs_training_data = True

    def settings(self) -> dict[str, Any]:
        t = self.cfg.torch
        static = self.static_settings()
        static["observer"] = "moving_average_minmax (fake-quant)"
        del static["calibration_batch_size"]  # QAT fine-tunes in qat_batch_size; it runs no calibration pass
        return {"mode": f"qat_{t.qat_engine}", **static, "qat_steps": t.qat_steps, "qat_lr": t.qat_lr,
                "qat_batch_size": t.qat_batch_size, "qat_freeze_bn_after": t.qat_freeze_bn_after,
                "qat_freeze_observers_after": t.qat_freeze_observers_after}

    def tag(self) -> str:
        t = self.cfg.torch
        bits = "_w7" if weight_bits(t, self.target) == 7 else ""
        return f"qat_{t.qat_engine}_{t.backend}_{t.granularity}{bits}_{t.qat_steps}steps"

    def bias_correction_excluded(self) -> str | None:
        # the correction folds BN into the conv and leaves an identity BN, which training mode would turn back into
        # batch normalisation; and fine-tuning learns the biases the correction would set
        return "QAT fine-tunes weights and biases on the training images, which replaces the correction"

    def _prepared(self, model: LoadedModel) -> torch.nn.Module:
        t = self.cfg.torch
        if t.qat_engine == "fx":
            from torch.ao.quantization.quantize_fx import prepare_qat_fx

            mapping = build_qconfig_mapping(t, self.target, qat=True)
            try:
                with without_stack_traces():
                    return prepare_qat_fx(copy.deepcopy(model.module).train(), mapping,
                                          example_inputs=(self.example(model),))
            except Exception as exc:
                raise SuiteError(f"FX cannot trace {model.arch}: {str(exc).splitlines()[0]}") from exc
        if t.qat_engine == "eager":
            from torch.ao.quantization import prepare_qat

            from quantization.Torch.eager_models import quantizable_twin

            twin = quantizable_twin(model).train()
            twin.fuse_model(is_qat=True)
            twin.qconfig = build_qat_qconfig(t, self.target)
            return prepare_qat(twin, inplace=True)
        raise SuiteError(f"--qat-engine must be one of {', '.join(ENGINES)} (got {t.qat_engine})")

    def _quantized_module(self, model: LoadedModel, calibration: CalibrationSet) -> tuple[torch.nn.Module, list[str]]:
        t = self.cfg.torch
        if self.train_data is None:
            raise SuiteError("QAT needs training images: quantization.workflow.run_toolchain gives it the "
                             "dataset's training split")
        dataset, ids = self.train_data
        prepared = self._prepared(model)
        fine_tune(prepared, dataset, t, self.cfg.calibration.seed, desc=f"QAT ({t.qat_engine})")
        if t.qat_engine == "fx":
            from torch.ao.quantization.quantize_fx import convert_fx

            return convert_fx(prepared), ids
        from torch.ao.quantization import convert

        return convert(prepared), ids
