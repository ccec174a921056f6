"""INT8 vs FP32 sentence embeddings of all-MiniLM-L6-v2: cosine agreement, latency, size.

A sentence encoder has no labels to score, so INT8 is judged by how close each INT8 embedding is
to the FP32 one of the same sentence (cosine similarity; 1.0 is identical). The sentences are real
English prose that ships with every CPython: the language reference in ``pydoc_data.topics``.
Latency: FP32 and INT8 interleaved in one process on the same runtime, medians, batch 1 and 32.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation.pipelines.loop import collect_logits
from utils.benchmark import interleaved_latency
from utils.errors import SuiteError

log = logging.getLogger(__name__)

Encode = Callable[[dict[str, np.ndarray]], np.ndarray]


def reference_sentences(count: int) -> list[str]:
    """``count`` distinct prose sentences (8-40 words) of the Python language reference, spread evenly."""
    from pydoc_data.topics import topics

    text = re.sub(r"\s+", " ", " ".join(topics[k] for k in sorted(topics)))
    pieces = re.split(r"(?<=[.!?])\s+", text)
    prose = [p for p in pieces if 8 <= len(p.split()) <= 40 and p[0].isupper() and not any(c in p for c in "*=>{}[]`|\\")]
    prose = list(dict.fromkeys(prose))
    if not 1 <= count <= len(prose):
        raise SuiteError(f"--sentences must be between 1 and the {len(prose)} sentences available (got {count})")
    step = len(prose) / count
    return [prose[int(i * step)] for i in range(count)]


def torch_encoder(module: torch.nn.Module) -> Encode:
    def encode(batch: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return module(*(torch.from_numpy(batch[k]) for k in ("input_ids", "attention_mask"))).numpy()
    return encode


def ort_encoder(path: Path, threads: int | None = None) -> Encode:
    from evaluation.pipelines.onnxruntime_runner import make_session

    session = make_session(str(path), threads, ["CPUExecutionProvider"])

    def encode(batch: dict[str, np.ndarray]) -> np.ndarray:
        return session.run(None, {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")})[0]
    return encode


def cosine_agreement(fp32: np.ndarray, int8: np.ndarray) -> dict[str, float]:
    a = fp32 / np.linalg.norm(fp32, axis=1, keepdims=True)
    b = int8 / np.linalg.norm(int8, axis=1, keepdims=True)
    cos = np.sum(a * b, axis=1)
    return {"mean": float(cos.mean()), "min": float(cos.min()), "p5": float(np.percentile(cos, 5)),
            "sentences": int(len(cos))}


def latency_ratio(fp32: Encode, int8: Encode, batch: dict[str, np.ndarray], rounds: int) -> dict[str, Any]:
    """Median ms of FP32 and INT8 on ``batch``, interleaved; speedup = FP32 / INT8."""
    size = len(batch["input_ids"])
    stats = interleaved_latency({"fp32": lambda: fp32(batch), "int8": lambda: int8(batch)}, size,
                                warmup=3, rounds=rounds, desc=f"latency b{size}")
    p50 = {k: s.summary()["p50_ms"] for k, s in stats.items()}
    return {"batch": size, "tokens": int(batch["input_ids"].shape[1]), "fp32_p50_ms": p50["fp32"],
            "int8_p50_ms": p50["int8"], "speedup": p50["fp32"] / p50["int8"]}


def run_minilm(count: int, rounds: int, models_dir: Path, threads: int | None = None) -> dict[str, Any]:
    """Quantize MiniLM both ways, write the artifacts to ``models_dir``, and measure each INT8 against
    its FP32 on the same runtime. Returns the report (JSON-ready)."""
    from quantization.Torch import sentence_encoder as se

    if threads:
        torch.set_num_threads(threads)
    tokenizer, fp32 = se.load_minilm()
    int8 = se.quantize_torch(fp32)
    sentences = reference_sentences(count)
    batches = [{k: v.numpy() for k, v in se.tokenize(tokenizer, sentences[i:i + 32]).items()}
               for i in range(0, len(sentences), 32)]
    one = {k: v.numpy() for k, v in se.tokenize(tokenizer, sentences[:1]).items()}
    sizes = {"torch_fp32": se.save_state_dict(fp32, models_dir / "minilm_fp32.pth").stat().st_size,
             "torch_int8": se.save_state_dict(int8, models_dir / "minilm_dynamic_int8.pth").stat().st_size}
    onnx_fp32 = se.export_onnx(fp32, se.tokenize(tokenizer, sentences[:2]), models_dir / "minilm_fp32.onnx")
    onnx_int8 = se.quantize_onnx(onnx_fp32, models_dir / "minilm_int8_dynamic.onnx")
    sizes.update(onnx_fp32=onnx_fp32.size_bytes(), onnx_int8=onnx_int8.size_bytes())
    pairs = {"torch": (torch_encoder(fp32), torch_encoder(int8)),
             "onnxruntime": (ort_encoder(onnx_fp32.path, threads), ort_encoder(onnx_int8.path, threads))}
    report: dict[str, Any] = {"model": "all-MiniLM-L6-v2", "package": se.PACKAGE, "sentences": len(sentences),
                              "sentence_source": "pydoc_data.topics (CPython's language reference)",
                              "linear_layers": len(se.dynamic_layers(fp32)), "sizes_bytes": sizes, "runtimes": {}}
    embeddings = {}
    for runtime, (f, q) in pairs.items():  # the evaluation loop's one pass, on token batches
        out = collect_logits({"fp32": f, "int8": q}, batches, desc=f"embeddings on {runtime}")
        embeddings[runtime] = (out["fp32"], out["int8"])
    reference = embeddings["torch"][0]  # PyTorch FP32: the ONNX export is checked against it
    for runtime, (f, q) in pairs.items():
        fp32_emb, int8_emb = embeddings[runtime]
        report["runtimes"][runtime] = {
            "cosine_int8_vs_fp32": cosine_agreement(fp32_emb, int8_emb),
            "cosine_fp32_vs_torch_fp32": cosine_agreement(reference, fp32_emb)["mean"],
            "latency": [latency_ratio(f, q, one, rounds), latency_ratio(f, q, batches[0], rounds)] if rounds else [],
        }
    return report


def report_markdown(report: dict[str, Any]) -> str:
    sizes = report["sizes_bytes"]
    lines = [f"# {report['model']}: dynamic INT8 vs FP32", "",
             f"{report['sentences']} sentences from {report['sentence_source']}; {report['linear_layers']} Linear layers.",
             "", "| runtime | mean cosine | min cosine | b1 p50 ms FP32 -> INT8 (speedup) | b32 p50 ms FP32 -> INT8 (speedup) "
             "| size MB FP32 -> INT8 |", "|---|---|---|---|---|---|"]
    for runtime, r in report["runtimes"].items():
        lat = [f"{x['fp32_p50_ms']:.1f} -> {x['int8_p50_ms']:.1f} ({x['speedup']:.2f}x)" for x in r["latency"]] or ["-", "-"]
        key = "torch" if runtime == "torch" else "onnx"
        size = f"{sizes[key + '_fp32'] / 1e6:.1f} -> {sizes[key + '_int8'] / 1e6:.1f}"
        cos = r["cosine_int8_vs_fp32"]
        lines.append(f"| {runtime} | {cos['mean']:.4f} | {cos['min']:.4f} | {lat[0]} | {lat[1]} | {size} |")
    return "\n".join(lines) + "\n"
