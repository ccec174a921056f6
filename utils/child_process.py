"""Child processes for libraries that must not run in this one, started with a better malloc setting.

ModelOpt's entropy and GPU calibration run in a spawned child (ModelOpt leaves onnxruntime patched: its
default max calibration on the CPU runs in this process and undoes the patches, quantization/ModelOpt/
ort_patches.py). Its own calibration session, which those paths keep, turns onnxruntime's memory arena off, so
every intermediate tensor of every calibration batch is a fresh mmap that the kernel faults in 4 KiB at a
time: on EfficientNet-Lite0 (batch 4, AMD EPYC AVX2) 17,000 page faults and 85 ms per image, against 46 ms
with the arena. With glibc's ``glibc.malloc.hugetlb=1`` malloc asks for transparent huge pages on its
mappings, so a buffer faults in 2 MiB at a time (83 faults and 54 ms per image; ModelOpt's whole quantize of
300 images 39.3 -> 23.9 s). glibc reads ``GLIBC_TUNABLES`` only when a process starts, hence the child. Where
transparent huge pages are off (``/sys/kernel/mm/transparent_hugepage/enabled`` = never) or glibc is older
than 2.35 the setting is ignored and nothing changes but the speed.

The child is never left behind: whatever ends the wait for it (an exception, Ctrl-C, SIGTERM through
utils.signals) terminates it (SIGTERM, which it turns into an exception so its own clean-up runs), then kills
it if it has not exited within :data:`TERMINATE_GRACE_S`, and joins it before the caller goes on.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from utils.errors import SuiteError

log = logging.getLogger(__name__)

HUGE_PAGE_MALLOC = "glibc.malloc.hugetlb=1"
TERMINATE_GRACE_S = 10.0
_ENVIRON_LOCK = threading.Lock()


class ChildTraceback(Exception):
    """The child's own traceback, chained as the cause of the exception it raised (shown with ``-v``)."""


def child_tunables(current: str | None) -> str:
    """``GLIBC_TUNABLES`` for the child: the user's own settings kept, huge-page malloc added unless set."""
    if not current:
        return HUGE_PAGE_MALLOC
    if "glibc.malloc.hugetlb=" in current:
        return current
    return f"{current}:{HUGE_PAGE_MALLOC}"


def _die_with_parent(parent: int) -> None:
    """Linux: this child gets SIGTERM when its parent dies, even of a SIGKILL that leaves it no clean-up
    (``prctl(PR_SET_PDEATHSIG)``); a parent already gone by now ends the child at once."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def _child_main(conn: Connection, parent: int) -> None:
    """Receive the work over ``conn`` (not as Process arguments: a large pickle written at start-up is what
    a parent stopped during ``start()`` truncates), run it, send the outcome back. A child its parent stops
    (SIGTERM: :class:`utils.signals.Terminated`) or leaves exits quietly: the parent says why."""
    from utils.signals import Terminated, install_in_child

    install_in_child()
    try:
        _die_with_parent(parent)
        try:
            fn, args = conn.recv()
        except (EOFError, OSError, pickle.UnpicklingError):
            return  # the parent went away while it handed over the work
        try:
            outcome: tuple[bool, Any, str] = (True, fn(*args), "")
        except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
            outcome = (False, exc, traceback.format_exc())
        try:
            conn.send(outcome)
        except (BrokenPipeError, EOFError):
            return  # the parent is gone: nobody to tell
        except Exception as exc:  # an unpicklable result or exception: say what it was
            conn.send((False, RuntimeError(f"{type(outcome[1]).__name__} from the child could not be sent back: "
                                           f"{exc}"), outcome[2]))
    except Terminated:
        return  # stopped by the parent; every finally of the work has run
    finally:
        conn.close()


def stop_child(process: multiprocessing.process.BaseProcess, grace_s: float = TERMINATE_GRACE_S) -> None:
    """Terminate ``process`` (SIGTERM: its clean-up runs), kill it if it is still alive after ``grace_s``, and
    join it: no orphan is left running."""
    if process.is_alive():
        process.terminate()
        process.join(grace_s)
    if process.is_alive():
        log.warning("child process %d did not stop within %.0f s of SIGTERM: killing it", process.pid, grace_s)
        process.kill()
    process.join()


def run_in_spawned_child(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a fresh spawned process with huge-page malloc; its result, or its exception.

    The child takes this process's environment when it starts, so the variable is set around the start and
    put back after; the lock keeps two threads from interleaving that. Anything that interrupts the wait
    (Ctrl-C, SIGTERM, an exception) stops and joins the child before it propagates."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=_child_main, args=(theirs, os.getpid()))  # not daemonic: it may start its own
    finished = False
    try:
        with _ENVIRON_LOCK:
            before = os.environ.get("GLIBC_TUNABLES")
            os.environ["GLIBC_TUNABLES"] = child_tunables(before)
            try:
                process.start()
            finally:
                if before is None:
                    os.environ.pop("GLIBC_TUNABLES", None)
                else:
                    os.environ["GLIBC_TUNABLES"] = before
        theirs.close()  # the child holds the only other end: its death is an EOF here
        try:
            ours.send((fn, args))
            ok, value, child_traceback = ours.recv()
            finished = True
        except (EOFError, BrokenPipeError):
            process.join()
            code = process.exitcode
            how = (f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0
                   else f"exited with code {code}")
            raise SuiteError(f"the child process running {getattr(fn, '__name__', fn)} {how} before it finished "
                             "(out of memory? try a smaller --calib-size)") from None
    finally:
        theirs.close()
        ours.close()
        if process.pid is not None:
            if finished:  # it has sent its outcome and is exiting: give it the time to
                process.join(TERMINATE_GRACE_S)
            stop_child(process)
    if ok:
        return value
    raise value from ChildTraceback(child_traceback)
