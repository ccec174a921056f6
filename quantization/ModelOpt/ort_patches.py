"""Undo what ModelOpt's ``quantize()`` leaves patched in ``onnxruntime.quantization``, so it can run in this process.

ModelOpt 0.47 (``modelopt/onnx/quantization/ort_patching.py``, ``patch_ort_modules``) replaces methods of ONNX
Runtime's calibrators, histogram collector and quantizers (``MinMaxCalibrater.collect_data``,
``CalibraterBase.__init__``, ``BaseQuantizer.adjust_tensor_ranges``, ...) and ``calibrate.create_calibrator``, and
edits the op registries in place (``QDQRegistry["BatchNormalization"] = ...``, ``del QDQRegistry[op]``), and
never puts them back: a later ``quantize_static`` in the same process failed ("Quantization parameters are not
specified for param input") or placed Q/DQ on other ops. That is why ModelOpt used to run in a spawned child, whose start (a fresh
interpreter importing torch and ModelOpt, the calibration images pickled across) cost EfficientNet-Lite0 7-8 s of
its 17 s quantize on x86-vnni. Rather than list ModelOpt's targets (a new version may patch others), the block
records every attribute of every ``onnxruntime.quantization`` module and of every class defined there, with a
copy of the contents of each dict, list and set among them, and afterwards restores each one that changed
(containers in place, as other modules hold them by reference) and removes each one that was added.
"""
from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator
from typing import Any

PACKAGE = "onnxruntime.quantization"


def _namespaces() -> list[Any]:
    """The modules of ``onnxruntime.quantization`` loaded now, and the classes each defines."""
    modules = [m for name, m in list(sys.modules.items())
               if m is not None and (name == PACKAGE or name.startswith(PACKAGE + "."))]
    classes = {id(v): v for m in modules for v in vars(m).values()
               if isinstance(v, type) and getattr(v, "__module__", "").startswith(PACKAGE)}
    return modules + list(classes.values())


#: attribute values whose contents are recorded too: a registry is edited in place, not replaced
CONTAINERS = (dict, list, set)


def _attributes(namespace: Any) -> dict[str, Any]:
    """A namespace's own attributes (``__init__`` too: ModelOpt replaces ``CalibraterBase.__init__``), without a
    module's ``__builtins__``: the interpreter's builtins dict, which restoring in place would empty for a moment
    under every other thread."""
    return {key: value for key, value in vars(namespace).items() if key != "__builtins__"}


def _contents(attributes: dict[str, Any]) -> dict[str, Any]:
    return {key: value.copy() for key, value in attributes.items() if type(value) in CONTAINERS}


def _restore(namespace: Any, before: dict[str, Any], contents: dict[str, Any]) -> None:
    now = _attributes(namespace)
    for key, value in before.items():
        if now.get(key, before) is not value:
            setattr(namespace, key, value)
        if key in contents and value != contents[key]:  # edited in place: put the contents back in place
            value.clear()
            if isinstance(value, list):
                value.extend(contents[key])
            else:
                value.update(contents[key])
    for key in now.keys() - before.keys():
        if not isinstance(now[key], types.ModuleType):  # a submodule loaded meanwhile stays reachable
            delattr(namespace, key)


@contextlib.contextmanager
def restored_onnxruntime_quantization() -> Iterator[None]:
    """Within the block anything may patch ``onnxruntime.quantization``; after it, every module and class
    there is as before. Import the patching library before the block: modules first loaded inside it are not
    recorded."""
    import onnxruntime.quantization  # noqa: F401 - its modules must be loaded to be recorded

    recorded = [(namespace, _attributes(namespace)) for namespace in _namespaces()]
    contents = [_contents(before) for _, before in recorded]
    try:
        yield
    finally:
        failed: list[Exception] = []
        for (namespace, before), inside in zip(recorded, contents, strict=True):
            try:  # one namespace that cannot be put back must not leave the others patched
                _restore(namespace, before, inside)
            except Exception as exc:  # noqa: BLE001 - raised below, after every namespace was tried
                failed.append(exc)
        if failed:
            raise RuntimeError(f"could not undo ModelOpt's patches of onnxruntime.quantization: {failed[0]}") from failed[0]
