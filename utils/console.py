"""What a run shows on the console, and what goes to its log file instead.

The console gets the suite's own lines: a banner (what runs on what, where results go), progress, skips and
the closing summary. Library chatter -- Python warnings, ModelOpt's own logger (on a CPU host it reports
"Failed to get GPU count" on every run) -- goes to the run's log file unless ``-v``. Progress bars are drawn
only on a terminal (tqdm's ``disable=None``) and never with ``-q``, which also keeps only warnings and errors.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

#: the run log's path, inherited by child processes (ModelOpt's entropy/GPU path) so their library output goes there too
RUN_LOG_ENV = "MLS_RUN_LOG"
LIBRARY_LOGGERS = ("modelopt", "modelopt.onnx", "py.warnings")
_quiet = False


def progress_disabled() -> bool | None:
    """tqdm's ``disable``: True with -q, else None (tqdm then draws only where its stream is a terminal)."""
    return True if _quiet else None


def setup_console(verbose: bool = False, quiet: bool = False, run_log: Path | None = None) -> None:
    """Console level (-v: debug, -q: warnings), and library output into ``run_log`` unless -v."""
    global _quiet
    _quiet = quiet and not verbose
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if _quiet else logging.INFO)
    if verbose or run_log is None:
        return
    os.environ[RUN_LOG_ENV] = str(run_log)
    logging.captureWarnings(True)
    file_handler = RunLogHandler(run_log)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root.addHandler(file_handler)  # the suite's own lines, complete, beside the console's
    route_library_logs()


class RunLogHandler(logging.FileHandler):
    """The run log, created at its first line: a run refused before any work leaves no file and no folder."""

    def __init__(self, path: Path):
        super().__init__(path, encoding="utf-8", delay=True)

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def route_library_logs() -> None:
    """Library loggers write only to the run log (this process's, or the parent's through RUN_LOG_ENV); called
    in the parent at start and in a child after it imports the library (ModelOpt adds its stdout handler then)."""
    path = os.environ.get(RUN_LOG_ENV)
    if not path:
        return
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()  # called once per in-process ModelOpt run: no open file left behind per call
        logger.addHandler(RunLogHandler(Path(path)))
        logger.propagate = False


@contextlib.contextmanager
def library_output_to_run_log() -> Iterator[None]:
    """Around a library call (ModelOpt's, in this process or in its child): its stdout (where ModelOpt's logger
    writes, re-created by every ``quantize`` call) goes to the run log while the call runs; without a run log
    (-v), nothing changes."""
    path = os.environ.get(RUN_LOG_ENV)
    if not path:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as log_file, contextlib.redirect_stdout(log_file):
        route_library_logs()
        yield


def banner_lines(facts: Sequence[tuple[str, str]]) -> list[str]:
    width = max(len(key) for key, _ in facts) + 1
    return [f"{key + ':':<{width}} {value}" for key, value in facts]


def print_banner(facts: Sequence[tuple[str, str]]) -> None:
    """The run's first lines on stdout (not with -q): model, data, toolchains, runtimes, target, results."""
    if not _quiet:
        print("\n".join(banner_lines(facts)), file=sys.stdout, flush=True)


def run_facts(cfg, toolchains: Sequence[str], out_dir: Path, run_log: Path | None) -> list[tuple[str, str]]:
    """The banner of ``python -m resnet.run`` / ``mls compare`` (``cfg``: the run's RunConfig)."""
    from utils.config import resolve_path
    from utils.targets import resolve_target

    data = cfg.data.dataset + (f" ({cfg.data.root})" if cfg.data.root else "")
    if cfg.data.limit:
        data += f", {cfg.data.limit} evaluation images"
    target = cfg.target + (f" (this CPU: {resolve_target('auto').name})" if cfg.target == "auto" else "")
    return [("model", cfg.model.arch + (f" + {cfg.model.weights}" if cfg.model.weights else "")),
            ("data", f"{data}; calibration {cfg.calibration.size} images (seed {cfg.calibration.seed})"),
            ("toolchains", ", ".join(toolchains)),
            ("runtimes", ", ".join(cfg.runtimes) if cfg.runtimes else "every installed one that runs an artifact"),
            ("target", target),
            ("artifacts", str(resolve_path(cfg.models_dir))),
            ("report", str(out_dir) + (f" (library output: {run_log})" if run_log and RUN_LOG_ENV in os.environ else ""))]
