"""One Runner per runtime and the shared evaluation loop.

A runtime is a choice separate from the artifact: the same Q/DQ ONNX file can run on ONNX Runtime
and on OpenVINO, with different speed and even different accuracy, so every figure belongs to an
(artifact, runtime) pair.
"""
from evaluation.pipelines.base import RUNTIMES, Runner, runner_class  # noqa: F401
