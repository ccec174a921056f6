"""FX static PTQ on the x86 and the oneDNN quantized engine, otherwise at the suite's defaults: the CIFAR half of the
evidence behind ``--backend auto`` (docs/accuracy_recovery.md; the EfficientNet-Lite0 half is the FX row of
bench/peer_openvino_nncf.py).

The pretrained CIFAR-10 ResNet-20/32/44/56 of ../shared/assets/cifar10, calibrated on a seeded, class-stratified
sample of the training images per ``--seeds`` value, scored on the test images (all 10,000 by default) against FP32
on torch. Prints the top-1 drop per run, then mean ± sd per model and over all runs, per engine.

    .venv/bin/python bench/fx_engines_cifar.py [--arch resnet20,resnet56] [--seeds 0,1,2] [--limit N]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.accuracy_recipes import cpu_summary, top1_per_pair  # noqa: E402
from bench.bias_correction_defaults import cifar_config, spread  # noqa: E402
from bench.torch_modes_cifar import WEIGHTS, parse_cifar_bench_args  # noqa: E402
from evaluation.pipelines.loop import open_runners  # noqa: E402
from quantization.workflow import prepare, run_toolchain  # noqa: E402
from utils.cli import csv_list  # noqa: E402
from utils.config import replace_section  # noqa: E402

ENGINES = ("x86", "onednn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=csv_list(), default=sorted(WEIGHTS))
    parser.add_argument("--seeds", type=csv_list(int), default=[0, 1, 2])
    parser.add_argument("--limit", type=int, default=None, help="a seeded N of the test images (default: all)")
    parser.add_argument("--models-dir", default="models/bench_fx_engines")
    args = parse_cifar_bench_args(parser)
    drops: dict[tuple[str, str], list[float]] = {}
    for arch in args.arch:
        for seed in args.seeds:
            cfg = cifar_config(arch, seed, args.limit, args.models_dir)
            prepared = prepare(cfg)
            pairs = {}
            for engine in ENGINES:
                fp32, int8, *_ = run_toolchain("torch_fx", replace_section(cfg, "torch", backend=engine), prepared)
                pairs["fp32"], pairs[engine] = (fp32, "torch"), (int8, "torch")
            top1 = top1_per_pair(open_runners(pairs), prepared)
            for engine in ENGINES:
                drops.setdefault((arch, engine), []).append(top1["fp32"] - top1[engine])
            print(f"{arch} seed {seed}: " + ", ".join(f"{e} {top1['fp32'] - top1[e]:+.2f} pp" for e in ENGINES))
    print(f"\nFX top-1 drop vs FP32 on torch, pp, mean ± sd over seeds; CPU: {cpu_summary()}\n")
    print("| engine | " + " | ".join(args.arch) + " | all runs |\n|---|" + "---|" * (len(args.arch) + 1))
    for engine in ENGINES:
        runs = [d for arch in args.arch for d in drops[(arch, engine)]]
        print(f"| {engine} | " + " | ".join(spread(drops[(a, engine)]) for a in args.arch)
              + f" | {statistics.mean(runs):+.3f} ± {statistics.stdev(runs) if len(runs) > 1 else 0.0:.2f} |")


if __name__ == "__main__":
    main()
