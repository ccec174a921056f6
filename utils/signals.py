"""SIGTERM and SIGHUP handled as Ctrl-C: the interrupted run unwinds, so every ``finally`` of the suite runs.

``timeout``, CI cancellation, ``docker stop``, Slurm and Kubernetes stop a process with SIGTERM, and a closed
terminal sends SIGHUP. Python's default for both is to die on the spot: no message, ``.tmp-*`` files left in
``models/``, the ``mls-modelopt-*`` copy left in the system temp folder, and ModelOpt's spawned child (about
900 MB) and multiprocessing's resource tracker kept running as orphans (issue #30). Here each raises
:class:`Terminated`, a KeyboardInterrupt, in the main thread: the same path as Ctrl-C, so temporaries are
removed on the way out, :func:`utils.child_process.run_in_spawned_child` terminates and joins its child, and
the CLI exits with the shell's ``128 + N`` (143 for SIGTERM, 129 for SIGHUP, 130 for Ctrl-C).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """The run was stopped by ``signum``: unwinds like Ctrl-C, exits with ``128 + signum``."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(interrupt: BaseException) -> int:
    """The shell's code for a run ended by a signal: 128 + its number (Ctrl-C: 130)."""
    return 128 + int(getattr(interrupt, "signum", signal.SIGINT))


_received: list[int] = []
_active: list[bool] = []  # inside termination_as_interrupt


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise Terminated(signum)


def received() -> int | None:
    """The first termination signal this process got inside :func:`termination_as_interrupt`, if any: a library
    that turns the KeyboardInterrupt into an exception of its own (an import cut short, then an AttributeError
    from a half-imported module) must not turn a stopped run into an error."""
    return _received[0] if _received else None


def raise_if_swallowed() -> None:
    """Raise :class:`Terminated` if a termination signal arrived and its KeyboardInterrupt never reached the
    suite. Python code that C++ runs (a callback, an import triggered inside a torch or ONNX Runtime call) can
    drop the exception: the stopped run would go on to write its artifact. :class:`utils.stages.StageTimer`
    calls this at the end of every stage, ``utils.artifacts.write_artifact`` before it commits a file, and
    ``utils.cli.run_cli`` when the run returns, so such a run stops at the next of those instead."""
    if _active and _received:
        raise Terminated(_received[0])


@contextlib.contextmanager
def termination_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread; outside it, what was
    there before. A signal the process was started ignoring (``nohup``: SIGHUP) stays ignored. Off the main
    thread (signal handlers can only be set there) the block changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    _received.clear()
    for signum in TERMINATION_SIGNALS:
        if signal.getsignal(signum) is signal.SIG_IGN:
            continue
        previous[signum] = signal.signal(signum, _raise_terminated)
    _active.append(True)
    try:
        yield
    finally:
        _active.pop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def install_in_child() -> None:
    """A spawned child's SIGTERM and SIGHUP raise :class:`Terminated` too, so when its parent terminates it,
    its own ``finally`` blocks (ModelOpt's temporary files) run before it exits."""
    for signum in TERMINATION_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _raise_terminated)
