"""Shared command-line plumbing: option groups, config building, and the error boundary.

Every entry script builds its parser from these groups, so a flag means the same thing everywhere,
and runs through :func:`run_cli`, which turns a SuiteError into one line on stderr and exit code 2 (any other
exception: one line too, utils.boundary).
Options default to None so that only flags the user gave override the YAML recipe.
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from utils.config import CommonConfig, Section, field_choices, field_of
from utils.errors import USAGE_EXIT_CODE

_DEFAULTS = CommonConfig()  # the common sections' defaults; a toolchain's group carries its own


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the suite's error boundary: a usage error is one line naming ``--help``, exit code 2
    (argparse's own prints the whole usage block, 23 lines for resnet.run)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_EXIT_CODE, f"error: {message} (see {self.prog} --help)\n")


def csv_list(cast: Callable[[str], Any] = str) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            return [cast(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got '{text}'") from exc
    return parse


def _shown(value: Any) -> Any:
    return ",".join(str(v) for v in value) if isinstance(value, list) else value


def section_group(parser: argparse.ArgumentParser, title: str, section: Section) -> argparse._ArgumentGroup:
    """A flag group writing into a toolchain's own section: :func:`option` reads that section's defaults and
    choices from the group, so the toolchain's folder declares both and utils/ knows no toolchain."""
    group = parser.add_argument_group(title)
    group.config_defaults = CommonConfig(sections={section.name: section.settings()})  # type: ignore[attr-defined]
    return group


def option(group: argparse._ArgumentGroup, flag: str, dest: str, help: str, **kwargs: Any) -> None:
    """Add ``flag`` writing to config key ``dest``; the help text shows the config default, and a key with
    choices in the config (:func:`utils.config.choice`) offers exactly those."""
    defaults = getattr(group, "config_defaults", _DEFAULTS)
    if "choices" not in kwargs and "." in dest and field_choices(defaults, dest):
        kwargs["choices"] = list(field_choices(defaults, dest))
    if kwargs.get("action") is argparse.BooleanOptionalAction:  # --x / --no-x: the default as on or off
        help = f"{help} (default: {'on' if field_of(defaults, dest)[0] else 'off'})"
    elif kwargs.get("action") != "store_true":
        help = f"{help} (default: {_shown(field_of(defaults, dest)[0])})"
        kwargs.setdefault("metavar", None if "choices" in kwargs else flag.lstrip("-").upper().replace("-", "_"))
    group.add_argument(flag, dest=dest, default=None, help=help, **kwargs)


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, metavar="YAML",
                        help="recipe in configs/*.yaml; flags given on the command line override it")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, library output on the console")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings, errors and the closing summary")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model")
    option(g, "--arch", "model.arch", "the model: a registry name (demo, resnet20/32/44/56, efficientnet_lite0..4, "
           "any torchvision classifier), torchvision:NAME, timm:NAME, package.module:callable (your code, from "
           "the current folder or PYTHONPATH), a TorchScript .pt, a torch.export .pt2 or an .onnx file")
    g.add_argument("--model", dest="model.arch", default=None, metavar="SOURCE", help="the same as --arch")
    option(g, "--interpolation", "data.interpolation", "resize interpolation (default: the model source's, "
           "else bilinear)", choices=["bilinear", "bicubic", "nearest"])
    option(g, "--weights", "model.weights", ".pth state_dict or {'state_dict': ...} checkpoint "
           "(none: the demo model for --arch demo, random init otherwise)")
    option(g, "--num-classes", "model.num_classes", "classifier size; replaces the head before loading "
           "fine-tuned weights (none: read from the weights, else the dataset's)", type=int)
    option(g, "--allow-unsafe-load", "model.allow_unsafe_load",
           "load weights with weights_only=False (runs pickled code: only for files you trust)",
           action="store_true")


def add_data_args(parser: argparse.ArgumentParser, evaluates: bool = True) -> None:
    """``evaluates``: the script evaluates, so it offers --limit (a quantize-only script does not)."""
    g = parser.add_argument_group("data")
    option(g, "--dataset", "data.dataset", "demo (built-in digits), imagenet (folder), cifar10 (batches or npz)",
           choices=["demo", "imagenet", "cifar10"])
    option(g, "--data-root", "data.root", "dataset folder")
    option(g, "--calib-root", "data.calib_root", "separate calibration image folder (imagenet layout)")
    option(g, "--allow-overlap", "data.allow_overlap", "allow calibration images that are also evaluation "
           "images (the accuracy figures are then optimistic)", action="store_true")
    option(g, "--batch-size", "data.batch_size", "evaluation batch size", type=int)
    if evaluates:
        option(g, "--limit", "data.limit", "evaluate on N evaluation images: a seeded (--calib-seed) "
               "class-stratified subset", type=int)
    option(g, "--image-size", "data.image_size", "centre-crop size (dataset default)", type=int)
    option(g, "--resize", "data.resize", "resize before the crop (dataset default)", type=int)
    option(g, "--mean", "data.mean", "per-channel normalisation mean, e.g. 0.485,0.456,0.406", type=csv_list(float))
    option(g, "--std", "data.std", "per-channel normalisation std", type=csv_list(float))


def add_calibration_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("calibration")
    option(g, "--calib-size", "calibration.size", "number of calibration images (seeded sample)", type=int)
    option(g, "--calib-seed", "calibration.seed", "seed of the calibration sample and split", type=int)
    option(g, "--calib-batch-size", "calibration.batch_size",
           "images per calibration forward pass (default: 4 where the batching cannot change the ranges, "
           "min/max and exact histograms; 32 for histograms sized from the first batch. ONNX toolchains: the "
           "largest divisor of --calib-size up to this; ModelOpt's entropy searches thresholds from the first "
           "batch's range up)", type=int)


def add_target_args(parser: argparse.ArgumentParser) -> None:
    from utils.targets import TARGET_CHOICES

    g = parser.add_argument_group("deployment target")
    option(g, "--target", "target", "the machine class the INT8 artifacts are built for: auto (this machine's "
           "CPU), x86-amx (AMX-INT8: Sapphire Rapids and later), x86-vnni (AVX-512 VNNI / AVX-VNNI), "
           "x86-avx2 (AVX2 + FMA, no VNNI: 16-bit pair sums, so 7-bit weights), arm64, tensorrt (GPU: 8-bit, never the "
           "CPU fix)", choices=list(TARGET_CHOICES))


def add_benchmark_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("benchmark")
    option(g, "--bench-batch-sizes", "benchmark.batch_sizes", "latency batch sizes", type=csv_list(int))
    option(g, "--warmup", "benchmark.warmup", "warm-up calls per model and batch size", type=int)
    option(g, "--rounds", "benchmark.rounds", "timed interleaved rounds per batch size", type=int)
    option(g, "--threads", "benchmark.threads", "intra-op threads for every runtime (all cores)", type=int)
    option(g, "--eval-precisions", "benchmark.eval_precisions", "compute precisions to measure: fp32 (true FP32, "
           "always measured), bf16 (where the CPU has AMX-BF16/AVX512-BF16), int8 (every one this CPU runs natively)",
           type=csv_list(), metavar="fp32,bf16,int8")
    option(g, "--runtimes", "runtimes", "runtimes to evaluate on: torch, torch_compile, onnxruntime, "
           "openvino, tensorrt (every installed one that can run the artifact)", type=csv_list())


def add_output_args(parser: argparse.ArgumentParser, reports: bool = True) -> None:
    """``reports``: the script writes a report, so it offers --results-dir and --run-name."""
    g = parser.add_argument_group("output")
    option(g, "--models-dir", "models_dir", "where artifacts go (relative: under the repository)")
    if reports:
        option(g, "--results-dir", "results_dir", "where reports go (relative: under the repository)")
        option(g, "--run-name", "run_name", "report folder name (a timestamp)")


def add_cluster_args(parser: argparse.ArgumentParser) -> None:
    """Where the work runs, not what it computes: these flags never enter the RunConfig (the figures are the
    same with and without them, docs/cluster.md)."""
    g = parser.add_argument_group("cluster (Ray; pip install -r requirements/cluster.txt)")
    g.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="run the toolchains and the accuracy passes as Ray tasks: local (a Ray instance here), "
                        "auto (the cluster of this node), ray://HOST:PORT (default: one process, no Ray)")
    g.add_argument("--workers", default=None, type=int, metavar="N",
                   help="--cluster local: CPUs of the local Ray instance, and the shards per accuracy pass "
                        "(default: 2)")


def add_transform_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("transforms (on the FP32 model, before any toolchain quantizes it)")
    option(g, "--cle", "transforms.cle", "cross-layer equalization of conv -> ReLU -> conv pairs (BN folded first; "
           "the FP32 outputs are unchanged)", action="store_true")
    option(g, "--cle-relu6", "transforms.cle_relu6", "conv pairs through ReLU6: skip (exact) or relu (replace ReLU6 "
           "by ReLU as in DFQ/AIMET; changes the FP32 model)", choices=["skip", "relu"])
    option(g, "--bias-correction", "transforms.bias_correction", "empirical bias correction: fold each layer's mean "
           "weight-rounding error, measured on the calibration images, into its bias; --no-bias-correction turns "
           "it off (a PyTorch source only: an ONNX source is quantized as it is)",
           action=argparse.BooleanOptionalAction)
    option(g, "--bias-correction-method", "transforms.bias_correction_method", "fast: one FP32 pass, each layer "
           "corrected for its own weight rounding on FP32 inputs (NNCF's default kind); sequential: each layer "
           "corrected given the quantized layers before it (a second pass and several GB more memory)")


def quiet_known_warnings() -> None:
    """torch.ao and TorchScript are deprecated upstream; say so once in docs, not per call."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
    warnings.filterwarnings("ignore", message=r".*(deprecated|reduce_range will be deprecated).*",
                            category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main``; any exception becomes one line on stderr (utils.boundary): exit code 2 for bad input, 1 for
    an internal error, 128+N for Ctrl-C, SIGTERM, SIGHUP (utils.signals). ``-v`` adds the traceback."""
    from utils.boundary import describe
    from utils.signals import Terminated, raise_if_swallowed, received, termination_as_interrupt

    quiet_known_warnings()
    for stream in (sys.stdout, sys.stderr):  # a non-UTF-8 file name in a message must not fail the message
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        with termination_as_interrupt():
            code = int(main(argv) or 0)
            raise_if_swallowed()  # a stop swallowed after the last stage: the run did not finish as asked
            return code
    except (Exception, KeyboardInterrupt) as exc:
        signum = received()
        code, line = describe(Terminated(signum) if signum is not None else exc)
        if logging.getLogger().isEnabledFor(logging.DEBUG):  # -v: the cause too, for a bug report
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
        print(line if code > 128 else f"error: {line}", file=sys.stderr)
        return code
