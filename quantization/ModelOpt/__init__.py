"""ONNX PTQ toolchains: NVIDIA ModelOpt (``modelopt``) and ONNX Runtime quantize_static (``ort``)."""
