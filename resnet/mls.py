"""``mls``: the suite's one command; each subcommand is an existing entry point, with that entry point's flags.

  mls compare [flags]             FP32 vs INT8 of every toolchain runnable here, one report (python -m resnet.run)
  mls quantize TOOLCHAIN [flags]  one INT8 artifact: torch (--mode fx|pt2e|dynamic|eager|qat), modelopt, ort,
                                  tensorrt (the *_PTQ*.py scripts)
  mls evaluate TOOLCHAIN [flags]  FP32 vs INT8 of one toolchain: torch, modelopt, tensorrt
                                  (the comprehensive_evaluation_* scripts)
  mls deploy [flags]              classify images with an artifact (python -m resnet.deploy)
  mls calib-images [flags]        a calibration image folder (python -m resnet.calib_images)
  mls train [flags]               train a model for the suite (python -m resnet.train)

``mls SUBCOMMAND --help`` lists that entry point's flags. Installed by ``pip install -e .`` (pyproject.toml).
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

from utils.errors import SuiteError

#: subcommand -> "module:function" taking argv (the entry point before utils.cli.run_cli, which mls applies once)
COMMANDS: dict[str, str] = {
    "compare": "resnet.run:run_all",
    "deploy": "resnet.deploy:deploy",
    "calib-images": "resnet.calib_images:main",
    "train": "resnet.train:train",
}
QUANTIZE: dict[str, tuple[str, list[str]]] = {
    "torch": ("quantization.Torch.cli:main", []),
    "modelopt": ("quantization.ModelOpt.cli:main", []),
    "ort": ("quantization.ModelOpt.cli:main", ["--engine", "ort"]),
    "tensorrt": ("quantization.TensorRT.cli:main", []),
}
EVALUATE: dict[str, str] = {
    "torch": "evaluation.comprehensive_evaluation_torch_int8:main",
    "modelopt": "evaluation.comprehensive_evaluation_modelopt_int8:main",
    "tensorrt": "evaluation.comprehensive_evaluation_tensorrt_int8:main",
}


def _load(target: str) -> Callable[[Sequence[str] | None], int]:
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def dispatch(argv: Sequence[str]) -> tuple[Callable[[Sequence[str] | None], int], list[str]]:
    """The entry point a command line names, and the arguments it gets."""
    command, rest = argv[0], list(argv[1:])
    if command in COMMANDS:
        return _load(COMMANDS[command]), rest
    table = {"quantize": {k: v[0] for k, v in QUANTIZE.items()}, "evaluate": EVALUATE}.get(command)
    if table is None:
        raise SuiteError(f"unknown command '{command}' (mls --help lists them)")
    if not rest or rest[0] not in table:
        raise SuiteError(f"mls {command} needs a toolchain first: {', '.join(table)} (e.g. mls {command} "
                         f"{next(iter(table))} --help)")
    extra = QUANTIZE[rest[0]][1] if command == "quantize" else []
    return _load(table[rest[0]]), [*extra, *rest[1:]]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    from utils.cli import run_cli

    return run_cli(_run, argv)


def _run(argv: Sequence[str] | None) -> int:
    entry, rest = dispatch(list(argv or []))
    return int(entry(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
