"""torch.ao FX tracing without per-node Python stack traces.

torch.ao's ``QuantizationTracer`` records the Python stack of every node it creates (``node.stack_trace``, for
error messages), and symbolising the first one imports ``torch._dynamo`` and ``torch._inductor``: about 1.5 s of
each FX run on 2 cores, plus a ``torchinductor_<user>`` cache folder in the system temp folder. That import runs
inside a C++ call (``torch._C._profiler.symbolize_tracebacks``), which drops a KeyboardInterrupt raised there:
a SIGTERM landing in that second was lost and the stopped run went on to write its artifact (issue #30's
reliability test caught it). The suite never shows those traces, so FX prepares without them.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch.fx.config


@contextlib.contextmanager
def without_stack_traces() -> Iterator[None]:
    """Within the block, FX tracers record no stack traces (``torch.fx.config.do_not_emit_stack_traces``)."""
    previous = torch.fx.config.do_not_emit_stack_traces
    torch.fx.config.do_not_emit_stack_traces = True
    try:
        yield
    finally:
        torch.fx.config.do_not_emit_stack_traces = previous
