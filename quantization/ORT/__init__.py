"""ONNX Runtime static quantization (``ort``): FP32 ONNX -> QDQ ONNX with ``quantize_static``."""
