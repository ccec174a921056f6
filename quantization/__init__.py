"""Toolchains: each one a Quantizer that turns an FP32 model + calibration set into artifacts."""
