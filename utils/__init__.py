"""Toolchain-agnostic building blocks shared by every quantizer, runner and report.

Nothing here imports a toolchain package (onnx, modelopt, openvino, tensorrt) at import time, so
the spine works on any machine and a missing toolchain fails only where it is used.
"""
