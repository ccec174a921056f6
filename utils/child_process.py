"""Child processes for libraries that must not run in this one, started with a better malloc setting.

ModelOpt runs in a spawned child (it leaves onnxruntime patched, see quantization/ModelOpt). Its
calibration session also turns onnxruntime's memory arena off, so every intermediate tensor of every
calibration batch is a fresh mmap that the kernel faults in 4 KiB at a time: on EfficientNet-Lite0
(batch 4, AMD EPYC AVX2) 17,000 page faults and 85 ms per image, against 46 ms with the arena. With
glibc's ``glibc.malloc.hugetlb=1`` malloc asks for transparent huge pages on its mappings, so a buffer
faults in 2 MiB at a time (83 faults and 54 ms per image; ModelOpt's whole quantize of 300 images
39.3 -> 23.9 s). glibc reads ``GLIBC_TUNABLES`` only when a process starts, hence the child. Where
transparent huge pages are off (``/sys/kernel/mm/transparent_hugepage/enabled`` = never) or glibc is
older than 2.35 the setting is ignored and nothing changes but the speed.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import threading
from collections.abc import Callable
from typing import Any

HUGE_PAGE_MALLOC = "glibc.malloc.hugetlb=1"
_ENVIRON_LOCK = threading.Lock()


def child_tunables(current: str | None) -> str:
    """``GLIBC_TUNABLES`` for the child: the user's own settings kept, huge-page malloc added unless set."""
    if not current:
        return HUGE_PAGE_MALLOC
    if "glibc.malloc.hugetlb=" in current:
        return current
    return f"{current}:{HUGE_PAGE_MALLOC}"


def run_in_spawned_child(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a fresh spawned process with huge-page malloc; its result, or its exception.

    The child takes this process's environment when it starts (on submit), so the variable is set
    around the submit and put back after; the lock keeps two threads from interleaving that."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        with _ENVIRON_LOCK:
            before = os.environ.get("GLIBC_TUNABLES")
            os.environ["GLIBC_TUNABLES"] = child_tunables(before)
            try:
                future = pool.submit(fn, *args)
            finally:
                if before is None:
                    os.environ.pop("GLIBC_TUNABLES", None)
                else:
                    os.environ["GLIBC_TUNABLES"] = before
        return future.result()
