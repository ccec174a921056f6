"""``python -m resnet.deploy [ARTIFACT] [IMAGE|FOLDER ...]``: classify images with an INT8 artifact.

Prints the top-5 class names with probabilities and the latency of each image. ARTIFACT is any
model file the suite wrote (its manifest beside it supplies preprocessing and class names); with
none, the demo model is quantized with Torch FX first. With no image, a demo evaluation digit is used.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from evaluation.deploy import DEFAULT_RUNTIME, classify, demo_sample, image_files, open_runner
from evaluation.pipelines.base import RUNTIMES
from quantization.run_config import RunConfig
from utils import cli
from utils.artifacts import Artifact, load_artifact
from utils.config import resolve_path

log = logging.getLogger("resnet.deploy")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m resnet.deploy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact", nargs="?", type=Path,
                        help="model file with its .manifest.json (default: the demo model, quantized with Torch FX)")
    parser.add_argument("images", nargs="*", type=Path, help="image files or folders (default: a demo digit)")
    parser.add_argument("--runtime", choices=sorted(RUNTIMES), help="runtime to run on (default by artifact kind: "
                        + ", ".join(f"{k} -> {v}" for k, v in DEFAULT_RUNTIME.items()) + ")")
    parser.add_argument("--top", type=int, default=5, help="classes to print per image (default: 5)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per image after the first (default: 10)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def demo_artifact() -> Artifact:
    from quantization.workflow import prepare, run_toolchain

    log.info("no artifact given: quantizing the demo model with Torch FX")
    return run_toolchain("torch_fx", RunConfig(), prepare(RunConfig()))[1]


def deploy(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    artifact = load_artifact(args.artifact) if args.artifact else demo_artifact()
    if args.images:
        images = [path for target in args.images for path in image_files(target)]
    else:
        path, label = demo_sample(resolve_path("results") / "deploy")
        log.info("no image given: a demo evaluation digit (true class %s), %s", label, path)
        images = [path]
    runner = open_runner(artifact, args.runtime, args.threads)
    print(f"{artifact.path.name} ({artifact.precision}, {artifact.kind}) on {runner.runtime} [{runner.device}]")
    for result in classify(runner, images, args.top, args.repeats):
        classes = ", ".join(f"{name} {100 * p:.1f}%" for name, p in result.top)
        print(f"{result.image}: {classes} | {result.latency_ms:.2f} ms (median of {args.repeats}; "
              f"first call {result.first_ms:.2f} ms)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_cli(deploy, argv)


if __name__ == "__main__":
    sys.exit(main())
