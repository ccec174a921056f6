"""Bias correction off, fast and sequential, per toolchain, over models nobody tuned for and several calibration
samples: the evidence behind the default (issue #32; NNCF's defaults include its fast bias correction).

The pretrained CIFAR-10 ResNet-20/32/44/56 of ../shared/assets/cifar10, every toolchain at its default settings,
calibrated on a seeded, class-stratified sample of the 5,000 training images (one sample per ``--seeds`` value)
and scored on all 10,000 test images against FP32 on the same runtime: torch for FX and PT2E, ONNX Runtime and
OpenVINO for the ONNX toolchains (OpenVINO's FP32 opened in true FP32, not its BF16 default). A setting that only
fits one calibration sample shows up as spread across seeds. Prints per (toolchain, runtime, setting) the top-1
drop, the agreement with FP32 and the relative logit MSE (mean and standard deviation over the seeds, per model
and over all of them) and the quantize time; then each setting against "off" paired by (model, seed), with the
standard error of the mean difference. Top-1 nets fixes against breaks and moves by whole images; the logit error
moves with every image, so it tells a setting that is better from one that is lucky. ``--merge`` prints an
earlier run's rows (other seeds) with this run's.

    .venv/bin/python bench/bias_correction_defaults.py [--arch resnet20,resnet56] [--seeds 0,1,2]
        [--toolchains torch_fx,torch_pt2e,ort,modelopt] [--settings off,fast,sequential] [--limit N]
        [--set torch.observer=minmax ...] [--merge results/bench/earlier.json]
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

from bench.accuracy_recipes import cpu_runtimes, cpu_summary, logits_per_pair, top1_of  # noqa: E402
from bench.torch_modes_cifar import CIFAR, WEIGHTS, parse_cifar_bench_args  # noqa: E402
from evaluation.pipelines.loop import open_runners  # noqa: E402
from quantization.run_config import RunConfig  # noqa: E402
from quantization.workflow import make_quantizer, prepare, run_toolchain  # noqa: E402
from utils.cli import csv_list  # noqa: E402
from utils.config import load_into, resolve_path, with_overrides  # noqa: E402
from utils.metrics import agreement, relative_logit_mse  # noqa: E402

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
    logits, labels = logits_per_pair(open_runners(pairs), prepared)
    top1 = top1_of({key: out.argmax(1) for key, out in logits.items()}, labels)
    for row in rows:
        fp32_key = ("fp32", row["toolchain"], row["runtime"])
        int8_key = (row["bias_correction"], row["toolchain"], row["runtime"])
        row["fp32_top1"], row["int8_top1"] = top1[fp32_key], top1[int8_key]
        row["drop_pp"] = row["fp32_top1"] - row["int8_top1"]
        row["agreement_pct"] = 100.0 * agreement(logits[fp32_key].argmax(1), logits[int8_key].argmax(1))
        row["relative_logit_mse"] = relative_logit_mse(logits[fp32_key], logits[int8_key])
        row["images"] = len(prepared.splits.evaluation)
    return rows


#: metric -> (title, format of a mean, scale printed): top-1 nets fixes against breaks; agreement and the logit
#: error measure fidelity to FP32, which moves with far less noise than top-1 on 10,000 images
METRICS = {"drop_pp": ("Top-1 drop vs FP32 on the same runtime, pp", "{:+.3f}", 1.0),
           "agreement_pct": ("Agreement with FP32 on the same runtime, %", "{:.2f}", 1.0),
           "relative_logit_mse": ("Relative logit MSE vs FP32 on the same runtime (x1e-3)", "{:.3f}", 1e3)}


#: what every row has, this run's or a merged one's (the metrics may be missing from rows before stop 42)
ROW_KEYS = {"arch", "seed", "toolchain", "runtime", "bias_correction", "quantize_s", "drop_pp", "images"}


def spread(values: list[float], fmt: str = "{:+.2f}") -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(sd).lstrip('+')}"


def _scaled(row: dict, metric: str) -> float:
    return row[metric] * METRICS[metric][2]


def print_tables(rows: list[dict], archs: list[str], settings: list[str]) -> None:
    """Per metric: mean ± sd over the seeds per model and over all runs; then each setting against "off",
    paired by (model, seed): the mean difference and its standard error, the figure that says whether a default
    is worse or only noisier."""
    keys = sorted({(r["toolchain"], r["runtime"]) for r in rows})
    for metric, (title, fmt, _) in METRICS.items():
        if not all(metric in r for r in rows):
            continue  # rows written before the metric existed
        print(f"\n{title}: mean ± sd over calibration seeds; CPU: {cpu_summary()}\n")
        print("| toolchain | runtime | bias correction | " + " | ".join(archs) + " | all models | quantize s (mean) |")
        print("|---|---|---|" + "---|" * (len(archs) + 2))
        for toolchain, runtime in keys:
            for setting in settings:
                mine = [r for r in rows if (r["toolchain"], r["runtime"], r["bias_correction"]) == (toolchain, runtime, setting)]
                if not mine:
                    continue
                cells = [spread([_scaled(r, metric) for r in mine if r["arch"] == a], fmt) for a in archs]
                print(f"| {toolchain} | {runtime} | {setting} | " + " | ".join(cells)
                      + f" | {spread([_scaled(r, metric) for r in mine], fmt)}"
                      + f" | {statistics.mean(r['quantize_s'] for r in mine):.1f} |")
    print_paired(rows, [s for s in settings if s != "off"] if "off" in settings else [])


def print_paired(rows: list[dict], settings: list[str]) -> None:
    """Each setting minus "off" on the same (toolchain, runtime, model, seed): mean ± standard error."""
    if not settings:
        return
    print("\nAgainst off, paired by (model, seed): mean difference ± standard error (negative drop and logit error, "
          "positive agreement: better)\n")
    print("| toolchain | runtime | setting | pairs | drop pp | agreement % | relative logit MSE (x1e-3) |")
    print("|---|---|---|---|---|---|---|")
    off = {(r["toolchain"], r["runtime"], r["arch"], r["seed"]): r for r in rows if r["bias_correction"] == "off"}
    for toolchain, runtime in sorted({(r["toolchain"], r["runtime"]) for r in rows}):
        for setting in settings:
            pairs = [(r, off[(toolchain, runtime, r["arch"], r["seed"])]) for r in rows
                     if (r["toolchain"], r["runtime"], r["bias_correction"]) == (toolchain, runtime, setting)
                     and (toolchain, runtime, r["arch"], r["seed"]) in off]
            cells = []
            for metric, (_, fmt, _) in METRICS.items():
                diffs = [_scaled(a, metric) - _scaled(b, metric) for a, b in pairs if metric in a and metric in b]
                se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0.0
                signed = fmt if "+" in fmt else fmt.replace("{:", "{:+")
                cells.append(f"{signed.format(statistics.mean(diffs)) if diffs else '-'} ± {se:.3f}")
            print(f"| {toolchain} | {runtime} | {setting} | {len(pairs)} | " + " | ".join(cells) + " |")


def load_rows(paths: list[str]) -> list[dict]:
    """Rows of earlier runs (``--merge``), so seeds run apart are printed and paired as one set."""
    rows = []
    for path in paths:
        rows += json.loads(resolve_path(path).read_text(encoding="utf-8"))["rows"]
    for row in rows:
        if missing := sorted(ROW_KEYS - set(row)):
            raise KeyError(f"a row without {', '.join(missing)}: not this bench's file")
    return rows


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
    parser.add_argument("--merge", type=csv_list(), default=[], metavar="JSON,...",
                        help="also print the rows of these earlier runs' files with this run's (they are not rerun)")
    args = parse_cifar_bench_args(parser)
    if unknown := set(args.settings) - set(SETTINGS):
        parser.error(f"unknown setting(s) {sorted(unknown)}: choose from {', '.join(SETTINGS)}")
    args.overrides = {}  # dotted, as the CLI's flags (utils.config.load_into)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            parser.error(f"--set {item}: expected SECTION.KEY=VALUE")
        args.overrides[key] = yaml.safe_load(value)
    try:
        merged = load_rows(args.merge)
    except (OSError, ValueError, KeyError) as error:  # missing file, not JSON, not this bench's
        parser.error(f"--merge: cannot read the rows of {args.merge} ({type(error).__name__}: {error})")
    planned = {(t, s, a, seed) for t in args.toolchains for s in args.settings for a in args.arch for seed in args.seeds}
    if again := sorted({(r["toolchain"], r["bias_correction"], r["arch"], r["seed"]) for r in merged} & planned):
        parser.error(f"--merge: {again[0]} would run again here; pairs must be one run each (merge other seeds)")
    rows = []
    for arch in args.arch:
        for seed in args.seeds:
            rows += one_sample(arch, seed, args.toolchains, args)
    out = resolve_path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu": cpu_summary(), "rows": rows}, indent=2), encoding="utf-8")
    print(f"\nwritten: {out}")
    every = rows + merged
    if len({r["images"] for r in every}) > 1:
        parser.error(f"--merge: the runs scored different numbers of test images {sorted({r['images'] for r in every})}")
    archs = args.arch + sorted({r["arch"] for r in every} - set(args.arch))
    print_tables(every, archs, [s for s in SETTINGS if any(r["bias_correction"] == s for r in every)])


if __name__ == "__main__":
    main()
