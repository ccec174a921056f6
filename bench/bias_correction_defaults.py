"""Bias correction off, fast and sequential, per toolchain, over models nobody tuned for and several calibration
samples: the evidence behind the default (issue #32; NNCF's defaults include its fast bias correction).

The pretrained CIFAR-10 ResNet-20/32/44/56 of ../shared/assets/cifar10, every toolchain at its default settings,
calibrated on a seeded, class-stratified sample of the 5,000 training images (one sample per ``--seeds`` value)
and scored on all 10,000 test images against FP32 on the same runtime: torch for FX and PT2E, ONNX Runtime and
OpenVINO for the ONNX toolchains (OpenVINO's FP32 opened in true FP32, not its BF16 default). A setting that only
fits one calibration sample shows up as spread across seeds. Prints the drop per (toolchain, runtime, setting):
mean and standard deviation over the seeds, per model and over all of them, and the quantize time.

    .venv/bin/python bench/bias_correction_defaults.py [--arch resnet20,resnet56] [--seeds 0,1,2]
        [--toolchains torch_fx,torch_pt2e,ort,modelopt] [--settings off,fast,sequential] [--limit N]
        [--set torch.observer=minmax ...]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import yaml

sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.accuracy_recipes import cpu_runtimes, cpu_summary, top1_per_pair  # noqa: E402
from bench.torch_modes_cifar import CIFAR, WEIGHTS, parse_cifar_bench_args  # noqa: E402
from evaluation.pipelines.loop import open_runners  # noqa: E402
from quantization.run_config import RunConfig  # noqa: E402
from quantization.workflow import make_quantizer, prepare, run_toolchain  # noqa: E402
from utils.cli import csv_list  # noqa: E402
from utils.config import load_into, resolve_path, with_overrides  # noqa: E402

# setting -> transforms overrides: the correction off, and each of its methods
SETTINGS = {"off": {"bias_correction": False},
            "fast": {"bias_correction": True, "bias_correction_method": "fast"},
            "sequential": {"bias_correction": True, "bias_correction_method": "sequential"}}


def cifar_config(arch: str, seed: int, limit: int | None, models_dir: str) -> RunConfig:
    """Suite defaults for every toolchain; only the model, the data and the calibration seed are set."""
    cfg = RunConfig()
    cfg.model.arch, cfg.model.weights = arch, str(CIFAR / WEIGHTS[arch])
    cfg.data.dataset, cfg.data.root, cfg.data.batch_size, cfg.data.limit = "cifar10", str(CIFAR), 250, limit
    cfg.calibration.seed = seed
    cfg.models_dir = models_dir
    return cfg


def one_sample(arch: str, seed: int, toolchains: list[str], args: argparse.Namespace) -> list[dict]:
    """Every toolchain at each setting, calibrated on one seed's sample; one pass over the test images."""
    cfg = load_into(cifar_config(arch, seed, args.limit, args.models_dir), None, args.overrides)
    prepared = prepare(cfg)
    pairs, rows = {}, []
    for toolchain in toolchains:
        make_quantizer(toolchain, cfg).export_fp32(prepared.model)  # the FP32 export, outside both timings
        for setting in args.settings:
            start = time.perf_counter()  # wall time: the correction runs before the toolchain's own quantize
            fp32, int8, *_ = run_toolchain(toolchain, with_overrides(cfg, {"transforms": SETTINGS[setting]}), prepared)
            seconds = time.perf_counter() - start
            expected = f"applied ({setting})" if setting != "off" else "off"
            assert int8.manifest["bias_correction"] == expected, int8.manifest["bias_correction"]
            for runtime in cpu_runtimes(toolchain):
                pairs[("fp32", toolchain, runtime)] = (fp32, runtime)
                pairs[(setting, toolchain, runtime)] = (int8, runtime)
                rows.append({"arch": arch, "seed": seed, "toolchain": toolchain, "runtime": runtime,
                             "bias_correction": setting, "quantize_s": seconds, "artifact": int8.path.name})
    top1 = top1_per_pair(open_runners(pairs), prepared)
    for row in rows:
        row["fp32_top1"] = top1[("fp32", row["toolchain"], row["runtime"])]
        row["int8_top1"] = top1[(row["bias_correction"], row["toolchain"], row["runtime"])]
        row["drop_pp"] = row["fp32_top1"] - row["int8_top1"]
        row["images"] = len(prepared.splits.evaluation)
    return rows


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):+.2f} ± {sd:.2f}"


def print_tables(rows: list[dict], archs: list[str], settings: list[str]) -> None:
    keys = sorted({(r["toolchain"], r["runtime"]) for r in rows})
    print(f"\nTop-1 drop vs FP32 on the same runtime, pp: mean ± sd over calibration seeds; CPU: {cpu_summary()}\n")
    print("| toolchain | runtime | bias correction | " + " | ".join(archs) + " | all models | quantize s (mean) |")
    print("|---|---|---|" + "---|" * (len(archs) + 2))
    for toolchain, runtime in keys:
        for setting in settings:
            mine = [r for r in rows if (r["toolchain"], r["runtime"], r["bias_correction"]) == (toolchain, runtime, setting)]
            cells = [spread([r["drop_pp"] for r in mine if r["arch"] == a]) for a in archs]
            print(f"| {toolchain} | {runtime} | {setting} | " + " | ".join(cells)
                  + f" | {spread([r['drop_pp'] for r in mine])} | {statistics.mean(r['quantize_s'] for r in mine):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=csv_list(), default=sorted(WEIGHTS))
    parser.add_argument("--seeds", type=csv_list(int), default=[0, 1, 2])
    parser.add_argument("--toolchains", type=csv_list(), default=["torch_fx", "torch_pt2e", "ort", "modelopt"])
    parser.add_argument("--settings", type=csv_list(), default=list(SETTINGS), help="off, fast, sequential")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a config value for every run, e.g. torch.observer=minmax (repeatable)")
    parser.add_argument("--limit", type=int, default=None, help="a seeded N of the test images (default: all)")
    parser.add_argument("--models-dir", default="models/bench_bias_correction")
    parser.add_argument("--out", default="results/bench/bias_correction_defaults.json")
    args = parse_cifar_bench_args(parser)
    if unknown := set(args.settings) - set(SETTINGS):
        parser.error(f"unknown setting(s) {sorted(unknown)}: choose from {', '.join(SETTINGS)}")
    args.overrides = {}  # dotted, as the CLI's flags (utils.config.load_into)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            parser.error(f"--set {item}: expected SECTION.KEY=VALUE")
        args.overrides[key] = yaml.safe_load(value)
    rows = []
    for arch in args.arch:
        for seed in args.seeds:
            rows += one_sample(arch, seed, args.toolchains, args)
    print_tables(rows, args.arch, args.settings)
    out = resolve_path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu": cpu_summary(), "rows": rows}, indent=2), encoding="utf-8")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
