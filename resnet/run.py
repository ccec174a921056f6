"""``python -m resnet.run``: FP32 baseline, every toolchain runnable here, one comparison report.

With no arguments it runs on the embedded default: the built-in demo digits and the demo ResNet-20
(trained on first use). Toolchains that cannot run on this machine are listed as skipped with the
reason. Subcommands keep the original suite's commands: ``calib-images`` and ``trt-ptq``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from evaluation.pipelines.base import runner_class
from evaluation.pipelines.loop import Skipped
from evaluation.pipelines.workflow import evaluate_and_report, run_folder
from quantization.base import TOOLCHAINS, quantizer_class
from quantization.sweep import sweep_configs
from quantization.workflow import prepare, run_toolchain
from utils import cli
from utils.artifacts import Artifact, check_writable
from utils.config import load_recipe, resolve_path, with_overrides
from utils.errors import SuiteError, ToolchainUnavailable

log = logging.getLogger("resnet.run")


def default_toolchains() -> list[str]:
    """The toolchains whose class says it runs by default, in registry order."""
    return [name for name in TOOLCHAINS if quantizer_class(name).runs_by_default]


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m resnet.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_config_arg(parser)
    g = parser.add_argument_group("run")
    cli.option(g, "--toolchains", "toolchains", f"toolchains to run, comma-separated: {', '.join(TOOLCHAINS)} "
               f"(default: every runnable one of {','.join(default_toolchains())})", type=cli.csv_list())
    g.add_argument("--recipe", default=None, metavar="NAME",
                   help="also run each toolchain with the named recipe in configs/recipes/ (best-accuracy: "
                        "the most accurate full-INT8 settings measured on EfficientNet-Lite0) beside its defaults")
    t = parser.add_argument_group("calibration sweep and accuracy recovery")
    cli.option(t, "--calibration", "tuning.calibrations", "sweep: minmax,percentile,entropy,mse (each toolchain "
               "runs the ones it supports; the others are listed as skipped)", type=cli.csv_list())
    cli.option(t, "--granularity-sweep", "tuning.granularities", "sweep: per_tensor,per_channel", type=cli.csv_list())
    cli.option(t, "--sensitivity", "tuning.sensitivity", "rank layers by keeping each one in float at a time "
               "(top-1 and logit SQNR on a held-out slice)", action="store_true")
    cli.option(t, "--max-drop", "tuning.max_drop", "accuracy target in pp: keep the most sensitive layers in float "
               "one by one until the held-out drop is within it", type=float)
    cli.option(t, "--max-float-layers", "tuning.max_float_layers", "layer budget of --max-drop", type=int)
    cli.option(t, "--heldout-size", "tuning.heldout_size", "held-out images for --sensitivity/--max-drop "
               "(never evaluation images)", type=int)
    cli.option(t, "--tuning-toolchains", "tuning.toolchains", "toolchains that get sensitivity/fallback (none: "
               "every toolchain of the run that supports per-layer fallback)",
               type=cli.csv_list())
    cli.add_model_args(parser)
    cli.add_data_args(parser)
    cli.add_calibration_args(parser)
    cli.add_target_args(parser)
    cli.add_transform_args(parser)
    cli.add_torch_args(parser)
    cli.add_onnx_args(parser)
    cli.add_modelopt_args(parser)
    cli.add_ort_args(parser)
    cli.add_tensorrt_args(parser)
    cli.add_benchmark_args(parser)
    cli.add_output_args(parser)
    return parser


def run_all(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    cfg = cli.config_from_args(args)
    names = cfg.toolchains or default_toolchains()
    for name in names:
        quantizer_class(name)  # unknown names fail before any work
    for runtime in cfg.runtimes or []:
        runner_class(runtime)
    recipe = load_recipe(args.recipe) if args.recipe else {}
    check_writable(resolve_path(cfg.models_dir), "--models-dir")
    check_writable(resolve_path(cfg.results_dir), "--results-dir")
    prepared = prepare(cfg)
    artifacts: dict[str, Artifact] = {}
    skipped: list[Skipped] = []
    tuning: list[dict] = []
    for name in names:
        reason = quantizer_class(name).unavailable_reason()
        if reason:
            log.warning("toolchain %s skipped: %s", name, reason)
            skipped.append(Skipped(f"toolchain {name}", reason))
            continue
        variants, unsupported = sweep_configs(name, cfg)
        if name in recipe:
            variants.append(with_overrides(cfg, recipe[name]))
        skipped.extend(Skipped(f"sweep {label}", why) for label, why in unsupported)
        try:
            for variant in variants:
                for artifact in run_toolchain(name, variant, prepared):
                    artifacts[str(artifact.path)] = artifact
            tuned = cfg.tuning.toolchains or [n for n in names if quantizer_class(n).has_layer_fallback()]
            if (cfg.tuning.sensitivity or cfg.tuning.max_drop is not None) and name in tuned:
                tuning.append(_recover(name, cfg, prepared, artifacts))
        except ToolchainUnavailable as exc:
            log.warning("toolchain %s skipped: %s", name, exc)
            skipped.append(Skipped(f"toolchain {name}", str(exc)))
    if not artifacts:
        raise SuiteError("no toolchain could run on this machine: " + "; ".join(s.reason for s in skipped))
    out_dir = run_folder(cfg, None)
    report = evaluate_and_report("End-to-end INT8 comparison", list(artifacts.values()), prepared.splits, cfg,
                                 out_dir, skipped=skipped, context={"toolchains": ", ".join(names),
                                                                   "recipe": args.recipe or "none"}, tuning=tuning)
    for row in report["rows"]:
        drop = "" if row["top1_drop_pp"] is None else f" (drop {row['top1_drop_pp']:+.2f} pp)"
        print(f"{row['artifact']:<60} {row['runtime']:<13} top-1 {100 * row['top1']:6.2f}%{drop}")
    print(f"report: {out_dir / 'report.md'}")
    return 0


def _recover(name: str, cfg, prepared, artifacts: dict[str, Artifact]) -> dict:
    """Sensitivity ranking and layer fallback for toolchain ``name``; the fallback artifact joins the run."""
    from evaluation.accuracy_recovery import recover
    from quantization.workflow import make_quantizer

    quantizer = make_quantizer(name, cfg)
    fp32 = quantizer.export_fp32(prepared.model)
    result = recover(name, quantizer, prepared, fp32, sensitivity=cfg.tuning.sensitivity,
                     max_drop=cfg.tuning.max_drop, budget=cfg.tuning.max_float_layers,
                     heldout_size=cfg.tuning.heldout_size)
    if result.artifact is not None:
        artifacts[str(result.artifact.path)] = result.artifact
    return result.to_dict()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "calib-images":
        from resnet.calib_images import main as calib_main

        return calib_main(argv[1:])
    if argv and argv[0] == "trt-ptq":
        from quantization.TensorRT.cli import main as trt_main

        return trt_main(argv[1:])
    return run_all(argv)


if __name__ == "__main__":
    raise SystemExit(cli.run_cli(main))
