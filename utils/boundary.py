"""The CLI's last line of defence: any exception that reaches it becomes one line and an exit code.

Library code raises :class:`~utils.errors.SuiteError` for bad input it knows about. What escapes anyway is
sorted here: a few library exceptions that are really bad input (an image header claiming 30000x30000
pixels, a file or name that is not UTF-8, a file name too long, a full disk, memory a batch or calibration
size cannot get) keep exit code 2 with a line saying what to change; anything else is an internal error,
exit code 1, one line naming its type and pointing to ``-v`` for the traceback. Ctrl-C, SIGTERM and SIGHUP
exit with ``128 + N``. By the time an exception reaches the boundary, every ``finally`` of the suite has run
(temporaries removed, children joined), so there is nothing left to clean here.
"""
from __future__ import annotations

import errno
import signal

from utils.errors import USAGE_EXIT_CODE, SuiteError
from utils.signals import exit_code

INTERNAL_ERROR_EXIT_CODE = 1
VERBOSE_HINT = "run again with -v for the traceback"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _bad_input_line(exc: BaseException) -> str | None:
    """The one line for a library exception that is the user's input, not a bug; None for anything else."""
    try:
        from PIL.Image import DecompressionBombError
    except ImportError:  # Pillow is a dependency; without it this kind cannot occur
        DecompressionBombError = ()  # noqa: N806
    if isinstance(exc, DecompressionBombError):
        return (f"an image is larger than Pillow's decompression-bomb limit ({_first_line(exc)}); "
                "remove it from the dataset")
    if isinstance(exc, UnicodeDecodeError):
        return (f"a file or name is not valid UTF-8 ({exc.reason} at byte {exc.start}); save configs, labels.tsv "
                "and manifests as UTF-8 and give files UTF-8 names")
    if isinstance(exc, UnicodeEncodeError):
        return f"a name cannot be encoded as UTF-8 ({exc.reason} at position {exc.start}); rename it"
    if isinstance(exc, OSError) and exc.errno is not None:
        from utils.artifacts import DISK_ERRNOS

        if exc.errno in DISK_ERRNOS or exc.errno == errno.ENAMETOOLONG:
            where = f" ({exc.filename})" if exc.filename else ""
            reason = DISK_ERRNOS.get(exc.errno, "file name too long (pick a shorter name or folder)")
            return f"cannot use a file{where}: {reason}"
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or (
            isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)):
        return ("out of memory (" + (_first_line(exc) or type(exc).__name__)[:160] + "); lower --batch-size, "
                "--calib-size, --calib-batch-size or --bench-batch-sizes")
    return None


def describe(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one line on stderr for ``exc`` (without the ``error:`` prefix)."""
    if isinstance(exc, KeyboardInterrupt):
        signum = getattr(exc, "signum", signal.SIGINT)
        return exit_code(exc), "interrupted" if signum == signal.SIGINT else f"terminated by {signal.Signals(signum).name}"
    if isinstance(exc, SuiteError):
        return USAGE_EXIT_CODE, str(exc)
    line = _bad_input_line(exc)
    if line is not None:
        return USAGE_EXIT_CODE, line
    detail = _first_line(exc)
    return INTERNAL_ERROR_EXIT_CODE, (f"internal error: {type(exc).__name__}" + (f": {detail[:300]}" if detail else "")
                                      + f" ({VERBOSE_HINT}, and please report it)")
