"""The comprehensive evaluation scripts: FP32 vs INT8 of one toolchain, through the shared loop.

Without ``--artifact`` the toolchain quantizes first (same settings flags as its quantization
script); with it, the given INT8 artifact is evaluated after checking that it was not calibrated on
the evaluation images. The FP32 reference is always rebuilt from the model, in the artifact's kind.
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence

from evaluation.pipelines.loop import check_disjoint
from evaluation.pipelines.workflow import evaluate_and_report, run_folder
from evaluation.report.summary import print_summary
from quantization.cli import add_quantize_args
from quantization.run_config import RunConfig, config_from_args
from quantization.workflow import make_quantizer, prepare, run_toolchain
from utils import cli
from utils.artifacts import Artifact, check_writable, load_artifact, sha256_file
from utils.config import resolve_path
from utils.errors import SuiteError
from utils.models import LoadedModel

log = logging.getLogger(__name__)


def build_parser(prog: str, description: str, toolchains: Sequence[str],
                 script_args: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.ArgumentParser:
    """The flags of ``toolchains`` (registry names), ``script_args`` (the script's own), evaluation and report."""
    parser = cli.ArgumentParser(prog=prog, description=description)
    cli.add_config_arg(parser)
    parser.add_argument("--artifact", action="append", default=None, metavar="PATH",
                        help="INT8 artifact(s) to evaluate (repeatable); default: quantize now with the flags below")
    parser.add_argument("--allow-model-mismatch", action="store_true",
                        help="evaluate an --artifact whose manifest names another architecture or other source "
                             "weights than --arch/--weights (the comparison is then meaningless)")
    add_quantize_args(parser, toolchains, script_args)
    cli.add_benchmark_args(parser)
    cli.add_output_args(parser)
    return parser


def check_same_model(artifact: Artifact, model: LoadedModel, weights_sha256: str | None, force: bool = False) -> None:
    """Refuse to compare an INT8 artifact with an FP32 model it was not made from (other arch or weights).

    ``weights_sha256`` is the model's weights file hash (None: random init), computed once per run."""
    manifest = artifact.manifest
    problems = []
    if manifest.get("arch") and manifest["arch"] != model.arch:
        problems.append(f"architecture {manifest['arch']}, not {model.arch}")
    recorded, current = manifest.get("source_weights_sha256"), weights_sha256
    if recorded != current:
        problems.append(f"source weights {str(recorded)[:12] if recorded else 'random init'}, not "
                        f"{current[:12] if current else 'random init'}")
    if not problems:
        return
    message = f"{artifact.path.name} was made from {' and '.join(problems)}"
    if not force:
        raise SuiteError(f"{message}: it cannot be compared with this FP32 model (--allow-model-mismatch to force)")
    log.warning("%s: the comparison is meaningless (--allow-model-mismatch)", message)


def evaluation_main(argv: Sequence[str] | None, *, prog: str, description: str, folder: str,
                    toolchains: Sequence[str], toolchain_for: Callable[[RunConfig], str],
                    script_args: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    args = build_parser(prog, description, toolchains, script_args).parse_args(argv)
    cli.setup_logging(args.verbose)
    cfg = config_from_args(args)
    check_writable(resolve_path(cfg.models_dir), "--models-dir")
    check_writable(resolve_path(cfg.results_dir), "--results-dir")
    out_dir = run_folder(cfg, folder)  # a folder the suite did not write is refused before any work
    prepared = prepare(cfg)
    toolchain = toolchain_for(cfg)
    if args.artifact:
        int8 = [load_artifact(p) for p in args.artifact]
        weights_sha256 = sha256_file(prepared.model.weights_path)
        for artifact in int8:
            check_same_model(artifact, prepared.model, weights_sha256, args.allow_model_mismatch)
            check_disjoint(artifact, prepared.splits, cfg.data.allow_overlap)
        artifacts = [make_quantizer(toolchain, cfg).export_fp32(prepared.model), *int8]
    else:
        artifacts = list(run_toolchain(toolchain, cfg, prepared))
    report = evaluate_and_report(f"{prog}: FP32 vs INT8", artifacts, prepared.splits, cfg, out_dir)
    print_summary(report, out_dir)
    return 0
