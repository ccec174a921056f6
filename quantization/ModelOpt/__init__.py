"""NVIDIA ModelOpt ONNX PTQ (``modelopt``): FP32 ONNX -> TensorRT-style INT8 Q/DQ ONNX."""
