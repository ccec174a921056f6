"""Static saturation check: can an INT8 artifact's integer kernels clip on a deployment target?

On targets whose u8 x s8 kernels add each pair of products into a saturating 16-bit lane (x86 AVX2
without VNNI; FBGEMM's depthwise kernel on every x86 CPU), a pair sum a0*w0 + a1*w1 clips once it
leaves [-32768, 32767]. The kernels pack the reduction axis in their own order, so which two weights
share a lane is not known from the file; the check takes the worst case: per output channel, the two
largest same-sign weights against the largest activation value the kernel sees. Activations are u8
there (0..255; runtimes turn s8 activations into u8 by adding 128, so the range stays 0..255), or
0..127 where the artifact uses 7-bit activations (torch ``reduce_range``). A layer passes when
255 x (|w0| + |w1|) <= 32767 for every channel, i.e. |w0| + |w1| <= 128: 7-bit weights always pass.

The verdict is a worst case, not a measurement: a layer flagged here clips only for inputs that
drive both activations of a lane to the top of their range. Where the agreement of a runtime with
the reference runtime (exact Q/DQ math) collapses, this is why.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from utils.artifacts import Artifact
from utils.onnx_qdq import node_attr, quantize_constant
from utils.onnx_qdq import producers as graph_producers
from utils.targets import INT16_MAX, Target

log = logging.getLogger(__name__)


@dataclass
class LayerWeights:
    name: str
    weight: np.ndarray  # int8 values, output channels first
    depthwise: bool


@dataclass
class SaturationVerdict:
    """How many INT8 layers of one artifact can clip 16-bit pair sums on one target."""

    target: str
    checked: bool  # False where the artifact kind cannot be read (``reason`` says why)
    layers: int = 0
    at_risk: list[str] = field(default_factory=list)
    activation_max: int = 255
    worst_pair_sum: int = 0
    reason: str | None = None

    @property
    def safe(self) -> bool:
        return self.checked and not self.at_risk

    def summary(self) -> str:
        if not self.checked:
            return f"not checked ({self.reason})"
        if not self.at_risk:
            return f"0 of {self.layers} layers can saturate on {self.target}"
        return (f"{len(self.at_risk)} of {self.layers} layers can saturate on {self.target} "
                f"(worst pair sum {self.worst_pair_sum} > {INT16_MAX})")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary(), "safe": self.safe}


def worst_pair_sum(weight: np.ndarray, activation_max: int) -> int:
    """The largest |a0*w0 + a1*w1| any two weights of one output channel can reach (a in 0..activation_max)."""
    rows = weight.reshape(weight.shape[0], -1).astype(np.int64)
    if rows.shape[1] < 2:
        return int(activation_max * np.abs(rows).max(initial=0))
    positive = -np.sort(-np.clip(rows, 0, None), axis=1)[:, :2].sum(axis=1)
    negative = -np.sort(-np.clip(-rows, 0, None), axis=1)[:, :2].sum(axis=1)
    return int(activation_max * max(positive.max(initial=0), negative.max(initial=0)))


def _kernels_at_risk(target: Target, layer: LayerWeights, runtime_family: str) -> bool:
    """Which kernels add pairs in 16 bits on ``target`` for this layer."""
    if target.pair_sums_saturate:
        # ONNX Runtime's depthwise kernels widen to 32 bits before adding (MLAS ConvSymDepthwise); OpenVINO's
        # and FBGEMM's may not, so ONNX files are judged for the strictest CPU runtime that runs them
        return True
    return runtime_family == "fbgemm" and layer.depthwise and target.fbgemm_depthwise_saturates


def check_layers(layers: list[LayerWeights], target: Target, activation_max: int, runtime_family: str) -> SaturationVerdict:
    verdict = SaturationVerdict(target=target.name, checked=True, layers=len(layers), activation_max=activation_max)
    for layer in layers:
        total = worst_pair_sum(layer.weight, activation_max)
        if total > INT16_MAX and _kernels_at_risk(target, layer, runtime_family):
            verdict.at_risk.append(layer.name)
            verdict.worst_pair_sum = max(verdict.worst_pair_sum, total)
    return verdict


# ---------------------------------------------------------------------------------------- readers
def onnx_int8_layers(path: Path) -> list[LayerWeights]:
    """Conv/Gemm/MatMul nodes of a Q/DQ ONNX whose weights are INT8 (stored, or a QuantizeLinear of a constant)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    producers = graph_producers(model.graph)

    def int8_weight(name: str) -> np.ndarray | None:
        dq = producers.get(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            return None
        source = dq.input[0]
        if source in inits:
            values = numpy_helper.to_array(inits[source])
            return values if values.dtype == np.int8 else None
        q = producers.get(source)
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] not in inits or q.input[1] not in inits:
            return None
        weight = numpy_helper.to_array(inits[q.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(inits[q.input[1]]).astype(np.float32)
        return quantize_constant(weight, scale, node_attr(q, "axis", 1))

    layers = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        weight = int8_weight(node.input[1])
        if weight is None:
            continue
        if node.op_type == "Gemm" and not node_attr(node, "transB", 0):
            weight = weight.T
        elif node.op_type == "MatMul":
            weight = weight.reshape(-1, weight.shape[-1]).T
        depthwise = node.op_type == "Conv" and node_attr(node, "group", 1) > 1 and weight.shape[1] == 1
        layers.append(LayerWeights(node.name or node.output[0], weight, depthwise))
    return layers


def torchscript_int8_layers(path: Path) -> list[LayerWeights]:
    """Quantized conv/linear ops of a (traced) TorchScript artifact, with their unpacked INT8 weights.

    Tracing stores each layer's packed weights as a constant of its ``quantized::conv2d*`` /
    ``quantized::linear*`` call; unpacking them gives the qint8 values the kernel multiplies."""
    import torch

    module = torch.jit.load(str(path), map_location="cpu")
    layers = []
    for index, node in enumerate(module.inlined_graph.nodes()):
        kind = node.kind()
        if not (kind.startswith("quantized::conv") or kind.startswith("quantized::linear")) or "dynamic" in kind:
            continue
        packed = list(node.inputs())[1].toIValue()
        if not hasattr(packed, "unpack"):
            continue
        weight, _ = packed.unpack()
        if not weight.is_quantized:
            continue
        values = weight.int_repr().numpy()
        groups = packed.groups() if kind.startswith("quantized::conv") and hasattr(packed, "groups") else 1
        depthwise = values.ndim == 4 and values.shape[1] == 1 and groups > 1
        layers.append(LayerWeights(f"{kind.split('::')[1]}#{index}", values, depthwise))
    return layers


def exported_program_int8_layers(path: Path) -> list[LayerWeights]:
    """INT8 weight tensors of a PT2E ExportedProgram (constants and buffers of dtype int8, rank >= 2)."""
    import torch

    from evaluation.pipelines.torch_runner import load_exported_program

    program = load_exported_program(str(path))
    tensors = {**program.state_dict, **getattr(program, "constants", {})}
    layers = []
    for name, tensor in tensors.items():
        if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.int8 and tensor.dim() >= 2:
            values = tensor.numpy()
            layers.append(LayerWeights(name, values, values.ndim == 4 and values.shape[1] == 1 and values.shape[0] > 1))
    return layers


def activation_max(artifact: Artifact) -> int:
    """The largest u8 activation value the kernels see: 127 with 7-bit activations, else 255."""
    return 127 if artifact.manifest.get("settings", {}).get("reduce_range") is True and \
        artifact.toolchain.startswith("torch") else 255


def check_artifact(artifact: Artifact, targets: Sequence[Target]) -> dict[str, SaturationVerdict]:
    """The static verdict of one INT8 artifact for each of ``targets`` (keyed by target name); the file is
    read once, whatever the number of targets."""
    def unchecked(reason: str) -> dict[str, SaturationVerdict]:
        return {t.name: SaturationVerdict(target=t.name, checked=False, reason=reason) for t in targets}

    if artifact.precision != "int8":
        return unchecked("not an INT8 artifact")
    readers = {"onnx_qdq": (onnx_int8_layers, "onnx"), "torchscript": (torchscript_int8_layers, "fbgemm"),
               "exported_program": (exported_program_int8_layers, "onednn")}
    if artifact.kind not in readers:
        return unchecked(f"{artifact.kind} weights are not readable here")
    reader, family = readers[artifact.kind]
    if family == "fbgemm" and artifact.manifest.get("settings", {}).get("backend") not in ("x86", "fbgemm"):
        family = "other"
    try:
        layers = reader(artifact.path)
    except Exception as exc:  # a reader that cannot parse the file: say so, never guess a verdict
        log.debug("saturation check of %s failed", artifact.path, exc_info=True)
        return unchecked(f"unreadable: {str(exc).splitlines()[0][:120]}")
    if not layers:
        return unchecked("no INT8 weights found")
    return {t.name: check_layers(layers, t, activation_max(artifact), family) for t in targets}
