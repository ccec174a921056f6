"""Quantize time per toolchain and stage, NNCF beside it in the same run, peak RSS per toolchain.

Models: ResNet-50 (random weights: speed only) and EfficientNet-Lite0 (real weights), both calibrated
on real images of ../shared/assets/imagenet-val-1300 (a seeded sample). Each toolchain quantizes in
its own spawned child process, so its peak RSS (VmHWM, utils.benchmark.peak_rss_bytes) is its own
and a toolchain that patches libraries (ModelOpt) cannot affect the next. Stages come from the
artifact manifest (``quantize_seconds_by_stage``, utils/stages.py); ModelOpt calibrates and inserts Q/DQ
inside one library call, so its is one "quantize" stage (ORT's: prepare, calibrate, quantize). The
rows run in plain children, as the CLI would run them: ModelOpt's max calibration on the CPU runs in the row's
process, its entropy/GPU path in a child of its own (utils/child_process.py). The FP32 ONNX export is timed
once per model (the "export" stage of the ONNX rows is then the reuse check). The suite's defaults include bias
correction: its own column, inside the quantize time (the transforms' time, a separate pass over the calibration
images where the toolchain cannot gather its statistics in its own calibration pass, plus the fold in the
toolchain where it can; ModelOpt's fold is inside its "quantize" stage). NNCF: OpenVINO model
read (conversion) and ``nncf.quantize`` (its defaults, fast bias correction on). Library imports are timed apart
on both sides ("imports s": for NNCF ``import nncf, openvino`` and the OpenVINO backend nncf.quantize loads on
its first call; for the suite the toolchain's ``Quantizer.library_modules``), after the data and model are
prepared; "x NNCF" is given without them and with them.

Times depend on the machine and its load: the header says which CPU and how many threads.

    pip install -r bench/requirements.txt     # nncf
    .venv/bin/python bench/quantize_time.py [--images 300] [--archs efficientnet_lite0,resnet50]
        [--toolchains torch_fx,modelopt,ort] [--rounds 3] [--out results/bench/quantize_time.md]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import importlib
import multiprocessing
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.common import ASSETS  # noqa: E402
from quantization.run_config import RunConfig  # noqa: E402
from utils.cli import csv_list  # noqa: E402

NNCF_LABEL = "NNCF nncf.quantize"
STAGES = ("bias correction", "export", "feed", "prepare", "calibrate", "statistics", "convert", "quantize", "save")
# (row label, toolchain, config overrides)
ROWS = {"torch_fx": ("FX minmax (the default)", "torch_fx", {"observer": "minmax"}),
        "torch_fx_histogram": ("FX histogram (fast)", "torch_fx", {"observer": "histogram"}),
        "torch_fx_torchao": ("FX histogram (torch.ao)", "torch_fx", {"observer": "torchao_histogram"}),
        "torch_pt2e": ("PT2E X86InductorQuantizer", "torch_pt2e", {}),
        "modelopt": ("ModelOpt int8 max", "modelopt", {"calibration_method": "max"}),
        "ort": ("ORT MinMax", "ort", {"calibration_method": "minmax"}),
        "ort_entropy": ("ORT Entropy", "ort", {"calibration_method": "entropy"}),
        "ort_percentile": ("ORT Percentile", "ort", {"calibration_method": "percentile"})}


def config_for(arch: str, images: int, models_dir: str) -> RunConfig:
    cfg = RunConfig()
    cfg.model.arch, cfg.models_dir = arch, models_dir
    cfg.data.dataset, cfg.data.root, cfg.data.limit = "imagenet", str(ASSETS), 10  # evaluation is not run
    cfg.calibration.size, cfg.calibration.seed = images, 0
    if arch.startswith("efficientnet_lite"):
        cfg.data.mean, cfg.data.std = [0.498] * 3, [0.502] * 3
    return cfg


def _peak_rss_mib() -> float:
    from utils.benchmark import peak_rss_bytes

    return peak_rss_bytes() / 2**20


def _quantize_child(arch: str, images: int, models_dir: str, row: str) -> dict:
    """One toolchain on one model, in a fresh process: wall seconds, stages, peak RSS."""
    from quantization.workflow import make_quantizer, prepare
    from utils.cli import quiet_known_warnings

    quiet_known_warnings()
    _, toolchain, overrides = ROWS[row]
    cfg = config_for(arch, images, models_dir)
    from quantization.registry import quantizer_class

    section = quantizer_class(toolchain).section  # the class names its own config section
    for key, value in overrides.items():
        setattr(getattr(cfg, section), key, value)
    prepared = prepare(cfg)
    base_rss = _peak_rss_mib()
    quantizer = make_quantizer(toolchain, cfg)
    start = time.perf_counter()
    for name in type(quantizer).library_modules:  # timed apart, as NNCF's import is
        importlib.import_module(name)
    imports = time.perf_counter() - start
    export = 0.0
    if section != "torch":  # the one FP32 export of the run (a cached file is reused by later rows)
        start = time.perf_counter()
        quantizer.export_fp32(prepared.model)
        export = time.perf_counter() - start
    start = time.perf_counter()
    model = prepared.model_for(quantizer)  # the transforms: bias correction (on by default) runs here
    transforms = time.perf_counter() - start
    int8 = quantizer.quantize(model, prepared.calibration)
    wall = time.perf_counter() - start
    stages = dict(int8.manifest.get("quantize_seconds_by_stage", {}))
    if model.transforms:  # the transforms' own time (a separate pass, or only the BN fold) plus the fold in the toolchain
        stages["bias correction"] = round(transforms + stages.get("bias correction", 0.0), 3)
    return {"wall": wall, "imports": imports, "fp32_export": export, "stages": stages,
            "peak_rss_mib": _peak_rss_mib(), "rss_before_mib": base_rss}


def _nncf_child(arch: str, images: int, models_dir: str) -> dict:
    from quantization.workflow import make_quantizer, prepare

    cfg = config_for(arch, images, models_dir)
    prepared = prepare(cfg)
    start = time.perf_counter()
    import nncf
    import nncf.openvino.quantization.quantize_model  # noqa: F401  (nncf.quantize imports it on its first call)
    import openvino as ov
    imports = time.perf_counter() - start
    fp32 = make_quantizer("ort", cfg).export_fp32(prepared.model)
    calibration = prepared.calibration.as_array()
    base_rss = _peak_rss_mib()
    start = time.perf_counter()
    model = ov.Core().read_model(str(fp32.path))
    convert = time.perf_counter() - start
    dataset = nncf.Dataset([calibration[i:i + 1] for i in range(len(calibration))])
    start = time.perf_counter()
    nncf.quantize(model, dataset, subset_size=len(calibration))
    wall = time.perf_counter() - start
    return {"wall": wall, "imports": imports, "fp32_export": 0.0, "stages": {"convert (read_model)": round(convert, 3),
                                                         "quantize": round(wall, 3)},
            "peak_rss_mib": _peak_rss_mib(), "rss_before_mib": base_rss}


def _in_child(fn, *args) -> dict:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


def _ratios(rows: list[dict], peers: list[dict | None], key: Callable[[dict], float]) -> list[float]:
    return [key(r) / key(p) for r, p in zip(rows, peers, strict=True) if p]


def _cell(ratios: list[float]) -> str:
    """The median of the per-round ratios, with their range where there are several."""
    if not ratios:
        return "-"
    spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
    return f"{statistics.median(ratios):.2f}{spread}"


def aggregate(rounds: list[list[tuple[str, str, dict]]]) -> list[tuple[str, str, dict]]:
    """Per (model, toolchain) over the rounds: median seconds (wall, imports, each stage), the largest peak RSS,
    and each round's ratio to NNCF's time on the same model in the same round, without and with the imports."""
    order = [(arch, label) for arch, label, _ in rounds[0]]
    by_key = {key: [next(r for a, lab, r in one if (a, lab) == key) for one in rounds] for key in order}
    out = []
    for arch, label in order:
        rows = by_key[(arch, label)]
        peers = by_key.get((arch, NNCF_LABEL), [None] * len(rows))
        stages = {s: statistics.median([r["stages"][s] for r in rows if s in r["stages"]])
                  for s in {s for r in rows for s in r["stages"]}}
        out.append((arch, label, {
            "wall": statistics.median(r["wall"] for r in rows),
            "imports": statistics.median(r["imports"] for r in rows),
            "fp32_export": statistics.median(r["fp32_export"] for r in rows), "stages": stages,
            "peak_rss_mib": max(r["peak_rss_mib"] for r in rows),
            "x_nncf": _ratios(rows, peers, lambda r: r["wall"]),
            "x_nncf_with_imports": _ratios(rows, peers, lambda r: r["wall"] + r["imports"])}))
    return out


def table(results: list[tuple[str, str, dict]]) -> str:
    """One row per (model, toolchain) from :func:`aggregate`: median seconds; "x NNCF" is the median of the
    rounds' ratios to NNCF on the same model (their range in brackets), without the library imports on both
    sides and with them."""
    stages = [s for s in STAGES if any(s in r["stages"] for _, _, r in results)]
    stages += sorted({s for _, _, r in results for s in r["stages"]} - set(stages))
    lines = ["| model | toolchain | quantize s | x NNCF | imports s | x NNCF with imports | "
             "FP32 ONNX export s (once per run) | " + " | ".join(stages) + " | peak RSS MiB |",
             "|---|---|---|---|---|---|---|" + "---|" * len(stages) + "---|"]
    for arch, label, r in results:
        cells = [f"{r['stages'][s]:.2f}" if s in r["stages"] else "-" for s in stages]
        export = f"{r['fp32_export']:.2f}" if r["fp32_export"] else "-"
        lines.append(f"| {arch} | {label} | {r['wall']:.1f} | {_cell(r['x_nncf'])} | {r['imports']:.2f} | "
                     f"{_cell(r['x_nncf_with_imports'])} | {export} | " + " | ".join(cells)
                     + f" | {r['peak_rss_mib']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--archs", type=csv_list(), default=["efficientnet_lite0", "resnet50"])
    parser.add_argument("--toolchains", type=csv_list(), default=list(ROWS),
                        help=f"rows to run (known: {', '.join(ROWS)})")
    parser.add_argument("--no-nncf", action="store_true")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every row this many times, in turn; the table gives medians (this machine's "
                             "timings move by up to 30%% from one minute to the next)")
    parser.add_argument("--models-dir", default="models/bench_quantize_time")
    parser.add_argument("--out", default="results/bench/quantize_time.md")
    args = parser.parse_args()
    if not ASSETS.is_dir():
        raise SystemExit(f"needs {ASSETS} (real calibration images)")
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    unknown = sorted(set(args.toolchains) - set(ROWS))
    if unknown:
        raise SystemExit(f"unknown rows {unknown} (known: {', '.join(ROWS)})")
    import torch

    from utils.hardware import cpu_model_name
    from utils.targets import resolve_target

    header = (f"{cpu_model_name() or platform.machine()}, CPU class {resolve_target('auto').name}, "
              f"{torch.get_num_threads()} torch threads, {args.images} calibration images")
    rounds = []
    for round_ in range(args.rounds):  # each round runs every row once, NNCF right after a model's rows
        results = []
        for arch in args.archs:
            for row in args.toolchains:
                r = _in_child(_quantize_child, arch, args.images, args.models_dir, row)
                results.append((arch, ROWS[row][0], r))
                print(f"round {round_ + 1} {arch} {ROWS[row][0]}: {r['wall']:.1f} s {r['stages']} "
                      f"peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
            if not args.no_nncf:
                r = _in_child(_nncf_child, arch, args.images, args.models_dir)
                results.append((arch, NNCF_LABEL, r))
                print(f"round {round_ + 1} {arch} NNCF: {r['wall']:.1f} s {r['stages']}", flush=True)
        rounds.append(results)
    header += f", {args.rounds} round{'s' if args.rounds > 1 else ''} (medians; ratios paired within a round)"
    text = f"# Quantize time per stage\n\n{header}\n\n{table(aggregate(rounds))}\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
