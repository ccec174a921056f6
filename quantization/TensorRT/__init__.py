"""The TensorRT toolchain: .pth -> FP32 ONNX -> Q/DQ ONNX (ModelOpt) -> explicitly quantized engine."""
