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
from pathlib import Path

from evaluation.cluster.sharded import ShardedAccuracy
from evaluation.pipelines.base import runner_class
from evaluation.pipelines.loop import Skipped, local_accuracy
from evaluation.pipelines.workflow import evaluate_and_report, run_folder
from evaluation.report.summary import print_summary
from quantization.registry import TOOLCHAINS, add_toolchain_flags, quantizer_class
from quantization.run_config import RunConfig, config_from_args
from quantization.sweep import sweep_configs
from quantization.workflow import check_model_source, prepare, run_toolchain
from utils import cli, console
from utils.artifacts import Artifact, check_writable
from utils.cluster import Cluster, check_readable, connect
from utils.config import load_recipe, resolve_path, with_overrides
from utils.errors import SuiteError, ToolchainUnavailable

log = logging.getLogger("resnet.run")


def default_toolchains() -> list[str]:
    """The toolchains whose class says it runs by default, in registry order."""
    return [name for name in TOOLCHAINS if quantizer_class(name).runs_by_default]


class _RefuseMode(argparse.Action):
    """``--mode`` picks the Torch toolchain of torch_PTQ.py; here it would be ignored, so it is refused."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error("--mode is a torch_PTQ.py flag: resnet.run picks toolchains with --toolchains "
                     f"({', '.join(n for n in TOOLCHAINS if n.startswith('torch_'))})")


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
    g.add_argument("--mode", nargs="?", action=_RefuseMode, help=argparse.SUPPRESS)
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
    add_toolchain_flags(parser)  # every registered toolchain's flag group, in registry order
    cli.add_benchmark_args(parser)
    cli.add_output_args(parser)
    cli.add_cluster_args(parser)
    return parser


def run_all(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    cfg = config_from_args(args)
    names = cfg.toolchains or default_toolchains()
    for name in names:
        quantizer_class(name)  # unknown names fail before any work
    for runtime in cfg.runtimes or []:
        runner_class(runtime)
    recipe = load_recipe(args.recipe) if args.recipe else {}
    check_writable(resolve_path(cfg.models_dir), "--models-dir")
    check_writable(resolve_path(cfg.results_dir), "--results-dir")
    out_dir = run_folder(cfg, None)  # a folder the suite did not write is refused before any work
    check_model_source(cfg)  # a missing or foreign model file: one line, before the banner
    run_log = out_dir.with_name(out_dir.name + ".log")  # beside the folder, which is written whole at the end
    console.setup_console(args.verbose, args.quiet, run_log)
    console.print_banner(console.run_facts(cfg, names, out_dir, run_log))
    if args.workers is not None and not args.cluster:
        raise SuiteError("--workers needs --cluster (local, auto or ray://HOST:PORT)")
    cluster = connect(args.cluster, 2 if args.workers is None else args.workers) if args.cluster else None
    try:
        return _run(args, cfg, names, recipe, cluster, out_dir)
    finally:
        if cluster:
            cluster.close()


def _run(args: argparse.Namespace, cfg: RunConfig, names: list[str], recipe: dict, cluster: Cluster | None,
         out_dir: Path) -> int:
    if cluster:
        for path, what in ((cfg.data.root, "--data-root"), (cfg.data.calib_root, "--calib-root"),
                           (cfg.model.weights, "--weights")):
            check_readable(resolve_path(path) if path else None, what)
    prepared = prepare(cfg)
    artifacts: dict[str, Artifact] = {}
    skipped: list[Skipped] = []
    tuning: list[dict] = []
    plan = [(name, *_variants(name, cfg, recipe)) for name in names]
    built = _build_on_cluster(plan, prepared) if cluster else {}
    for name, variants, not_run in plan:
        skipped.extend(not_run)  # in toolchain order, as the artifacts
        if variants is None:
            log.warning("toolchain %s skipped: %s", name, not_run[0].reason)
            continue
        try:
            for index, variant in enumerate(variants):
                produced = built[(name, index)] if (name, index) in built else run_toolchain(name, variant, prepared)
                if isinstance(produced, ToolchainUnavailable):
                    raise produced
                for artifact in produced:
                    artifacts[str(artifact.path)] = artifact
            tuned = cfg.tuning.toolchains or [n for n in names if quantizer_class(n).has_layer_fallback()]
            if (cfg.tuning.sensitivity or cfg.tuning.max_drop is not None) and name in tuned:
                tuning.append(_recover(name, cfg, prepared, artifacts, cluster is not None))
        except ToolchainUnavailable as exc:
            log.warning("toolchain %s skipped: %s", name, exc)
            skipped.append(Skipped(f"toolchain {name}", str(exc)))
    if not artifacts:
        raise SuiteError("no toolchain could run on this machine: " + "; ".join(s.reason for s in skipped))
    accuracy = ShardedAccuracy(cluster, prepared.splits, cfg.benchmark.threads) if cluster else local_accuracy
    report = evaluate_and_report("End-to-end INT8 comparison", list(artifacts.values()), prepared.splits, cfg,
                                 out_dir, skipped=skipped, context={"toolchains": ", ".join(names),
                                                                   "recipe": args.recipe or "none"}, tuning=tuning,
                                 accuracy=accuracy)
    print_summary(report, out_dir)
    return 0


Plan = list[tuple[str, list[RunConfig] | None, list[Skipped]]]


def _variants(name: str, cfg: RunConfig, recipe: dict) -> tuple[list[RunConfig] | None, list[Skipped]]:
    """The configs toolchain ``name`` runs (None: it cannot run here) and what it skips, with why."""
    reason = quantizer_class(name).unavailable_reason()
    if reason:
        return None, [Skipped(f"toolchain {name}", reason)]
    variants, unsupported = sweep_configs(name, cfg)
    if name in recipe:
        variants.append(with_overrides(cfg, recipe[name]))
    return variants, [Skipped(f"sweep {label}", why) for label, why in unsupported]


def _build_on_cluster(plan: Plan, prepared) -> dict[tuple[str, int], object]:
    """Every (toolchain, variant) of the plan as one parallel task, except those of a toolchain whose class
    says it must be built on the driver (``driver_only``: the run loop builds those as one process does).
    The results are read in plan order, so the artifacts and the report's rows keep a single process's order."""
    from quantization.parallel import quantize_on_cluster

    for name, variants, _ in plan:
        if variants and quantizer_class(name).driver_only:
            log.info("toolchain %s is built on the driver: %s", name, quantizer_class(name).driver_only)
    keys = [(name, index) for name, variants, _ in plan for index in range(len(variants or []))
            if not quantizer_class(name).driver_only]
    variants_of = {name: variants or [] for name, variants, _ in plan}
    jobs = [(name, variants_of[name][index]) for name, index in keys]
    results = quantize_on_cluster(jobs, prepared)
    for (name, _), (_, node) in zip(keys, results, strict=True):
        log.info("toolchain %s built on %s (%s)", name, node["hostname"], node["isa_class"])
    return {key: produced for key, (produced, _) in zip(keys, results, strict=True)}


def _recover(name: str, cfg, prepared, artifacts: dict[str, Artifact], on_cluster: bool = False) -> dict:
    """Sensitivity ranking and layer fallback for toolchain ``name``; the fallback artifact joins the run.
    ``on_cluster``: the per-layer trials run as parallel Ray tasks (the fallback steps stay here)."""
    from evaluation.accuracy_recovery import recover
    from evaluation.cluster.sensitivity import cluster_trial_map
    from quantization.workflow import make_quantizer

    quantizer = make_quantizer(name, cfg)
    fp32 = quantizer.export_fp32(prepared.model)
    result = recover(name, quantizer, prepared, fp32, sensitivity=cfg.tuning.sensitivity,
                     max_drop=cfg.tuning.max_drop, budget=cfg.tuning.max_float_layers,
                     heldout_size=cfg.tuning.heldout_size, trial_map=cluster_trial_map if on_cluster else None)
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

        return trt_main(argv[1:], prog="python -m resnet.run trt-ptq")
    return run_all(argv)


if __name__ == "__main__":
    raise SystemExit(cli.run_cli(main))
