"""Full-INT8 accuracy on EfficientNet-Lite0: each toolchain's defaults, this suite's best-accuracy
recipe, and OpenVINO NNCF side by side, on the same images.

Split (issue #9): ``numpy.random.default_rng(0).permutation(1300)`` over ../shared/assets/imagenet-val-1300;
the first 300 calibrate, the other 1000 are evaluated. Every INT8 artifact is scored on every CPU
runtime that runs it, against FP32 on the same runtime (accuracy depends on the runtime's kernels).
Latency: batch 1, FP32 / default INT8 / recipe INT8 of a toolchain interleaved in one process,
medians, to show that the recipe's transforms cost no speed.

    pip install -r bench/requirements.txt          # nncf (not in base)
    .venv/bin/python bench/accuracy_recipes.py [--recipe best-accuracy] [--no-nncf] [--rounds 20]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402

from bench.common import efficientnet_prepared, nncf_artifact, require_nncf  # noqa: E402
from evaluation.pipelines.base import runner_class  # noqa: E402
from evaluation.pipelines.loop import collect_logits, evaluation_batches, open_runners  # noqa: E402
from quantization.registry import quantizer_class  # noqa: E402
from quantization.workflow import make_quantizer, run_toolchain  # noqa: E402
from utils.benchmark import interleaved_latency  # noqa: E402
from utils.cli import csv_list, quiet_known_warnings, setup_logging  # noqa: E402
from utils.config import load_recipe, resolve_path, with_overrides  # noqa: E402
from utils.data import sample_batch  # noqa: E402
from utils.hardware import cpu_isa, cpu_model_name  # noqa: E402

ONNX_RUNTIMES = ["onnxruntime", "openvino"]

# (label, toolchain, overrides, runtimes): each toolchain as a user gets it out of the box.
DEFAULTS = [
    ("torch.ao FX, x86 default qconfig (histogram, 7-bit activations, per-channel weights)", "torch_fx",
     {"torch": {"observer": "histogram", "reduce_range": "on", "weight_bits": "8", "granularity": "per_channel",
                "clamp_observers": "shared"}}, ["torch"]),
    ("this suite's FX defaults (minmax, per-channel, 8/8 bits with VNNI, ReLU6 outputs observed clamped)",
     "torch_fx", {"torch": {"observer": "minmax", "granularity": "per_channel"}}, ["torch"]),
    ("this suite's FX with the fast histogram observer (torch.ao's L2 range search)",
     "torch_fx", {"torch": {"observer": "histogram", "granularity": "per_channel"}}, ["torch"]),
    ("this suite's PT2E defaults (X86InductorQuantizer, torchao)", "torch_pt2e", {}, ["torch_compile"]),
    ("ModelOpt ONNX int8, max", "modelopt", {"modelopt": {"calibration_method": "max"}}, ONNX_RUNTIMES),
    ("ModelOpt ONNX int8, entropy", "modelopt", {"modelopt": {"calibration_method": "entropy"}}, ONNX_RUNTIMES),
    ("ORT quantize_static QDQ u8/s8 per-channel, MinMax", "ort",
     {"ort": {"calibration_method": "minmax", "granularity": "per_channel"}}, ONNX_RUNTIMES),
    ("ORT quantize_static QDQ u8/s8 per-channel, Entropy", "ort",
     {"ort": {"calibration_method": "entropy", "granularity": "per_channel"}}, ONNX_RUNTIMES),
    ("ORT quantize_static QDQ u8/s8 per-channel, Percentile", "ort",
     {"ort": {"calibration_method": "percentile", "granularity": "per_channel"}}, ONNX_RUNTIMES),
]
# ORT's HistogramCalibrater (entropy, percentile) keeps every intermediate output of every calibration
# image in memory before building histograms: 300 EfficientNet-Lite0 images took it past 24 GB (OOM).
HISTOGRAM_ROWS_NEED = "ORT entropy/percentile calibration holds all 300 images' activations at once (> 24 GB here)"


def cpu_runtimes(toolchain: str) -> list[str]:
    """The toolchain class's runtimes that run INT8 kernels on this CPU (not the reference runtime)."""
    return [r for r in quantizer_class(toolchain).runtimes if not runner_class(r).reference]


def cpu_summary() -> str:
    dots = [name for name, present in cpu_isa().items() if present and ("vnni" in name or "amx" in name)]
    return f"{cpu_model_name()}, int8 dot product: {', '.join(dots) or 'none (AVX2 16-bit pair sums)'}"


def logits_per_pair(runners: dict, prepared) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One pass over the evaluation images; every (artifact, runtime) runner predicts each batch.
    Returns each pair's logits, and the labels."""
    batches = evaluation_batches(prepared.splits, 50)
    logits = collect_logits({key: runner.predict for key, runner in runners.items()}, batches, desc="accuracy")
    return logits, batches.labels


def predictions_per_pair(runners: dict, prepared) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """:func:`logits_per_pair` as each pair's top-1 class per image, and the labels."""
    logits, labels = logits_per_pair(runners, prepared)
    return {key: out.argmax(1) for key, out in logits.items()}, labels


def top1_of(predicted: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, float]:
    return {key: 100.0 * int(np.sum(p == labels)) / len(labels) for key, p in predicted.items()}


def top1_per_pair(runners: dict, prepared) -> dict[str, float]:
    """Top-1 % of every (artifact, runtime) pair on the evaluation images."""
    return top1_of(*predictions_per_pair(runners, prepared))


def p50_latencies(runners: dict, prepared, rounds: int) -> dict[str, float]:
    """Median batch-1 latency (ms) of ``runners``, interleaved in one process."""
    batch = sample_batch(prepared.splits, 1).numpy()
    stats = interleaved_latency({k: r.timed_call(batch) for k, r in runners.items()}, 1, warmup=3, rounds=rounds)
    return {k: s.summary()["p50_ms"] for k, s in stats.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="best-accuracy")
    parser.add_argument("--no-nncf", action="store_true", help="leave the NNCF peer out")
    parser.add_argument("--ort-histogram", action="store_true", help="also run ORT Entropy/Percentile (needs RAM: "
                        + HISTOGRAM_ROWS_NEED + ")")
    parser.add_argument("--no-bias-correction", action="store_true",
                        help="every default row without bias correction (the defaults before issue #32)")
    parser.add_argument("--toolchains", type=csv_list(), default=None,
                        help="only these toolchains' rows (comma-separated; default: all)")
    parser.add_argument("--rounds", type=int, default=20, help="latency rounds at batch 1 (0: no latency)")
    parser.add_argument("--out", default="results/bench/accuracy_recipes.json")
    args = parser.parse_args()
    quiet_known_warnings()
    setup_logging()
    cfg, prepared = efficientnet_prepared()
    if args.no_bias_correction:
        cfg = with_overrides(cfg, {"transforms": {"bias_correction": False}})
    recipe = load_recipe(args.recipe)
    defaults = [d for d in DEFAULTS if args.ort_histogram or not (d[1] == "ort" and
                                                                  d[2]["ort"]["calibration_method"] != "minmax")]
    if args.toolchains:
        defaults = [d for d in defaults if d[1] in args.toolchains]
    if len(defaults) < len(DEFAULTS) and not args.toolchains:
        print(f"skipped: ORT Entropy and Percentile rows ({HISTOGRAM_ROWS_NEED}; --ort-histogram runs them)")
    rows = [(label, tc, with_overrides(cfg, o), rts, "default") for label, tc, o, rts in defaults]
    rows += [(f"this suite, {args.recipe}: {tc}", tc, with_overrides(cfg, o), cpu_runtimes(tc), "recipe")
             for tc, o in recipe.items() if tc in ("torch_fx", "ort", "modelopt")
             and (not args.toolchains or tc in args.toolchains)]
    pairs: dict[str, tuple] = {}
    fp32_of: dict[tuple[str, str], str] = {}
    table = []
    for label, toolchain, variant, runtimes, kind in rows:
        fp32, int8, *_ = run_toolchain(toolchain, variant, prepared)
        for runtime in runtimes:
            fp32_key = f"FP32 {fp32.path.name} @ {runtime}"
            pairs[fp32_key] = (fp32, runtime)
            key = f"{int8.path.name} @ {runtime}"
            pairs[key] = (int8, runtime)
            fp32_of[(toolchain, runtime)] = fp32_key
            table.append({"label": label, "toolchain": toolchain, "kind": kind, "artifact": int8.path.name,
                          "runtime": runtime, "key": key, "fp32_key": fp32_key,
                          "transforms": int8.manifest.get("transforms", []), "settings": int8.manifest["settings"]})
    if not args.no_nncf:
        require_nncf()
        onnx_fp32 = make_quantizer("ort", cfg).export_fp32(prepared.model)
        peer = nncf_artifact(onnx_fp32, prepared.calibration.as_array(),
                             resolve_path(cfg.models_dir) / "nncf" / "efficientnet_lite0_nncf_int8.xml")
        pairs["NNCF @ openvino"] = (peer, "openvino")
        nncf_fp32_key = fp32_of.get(("ort", "openvino"), f"FP32 {onnx_fp32.path.name} @ openvino")
        pairs.setdefault(nncf_fp32_key, (onnx_fp32, "openvino"))
        table.append({"label": "OpenVINO NNCF nncf.quantize (defaults: fast bias correction on)", "toolchain": "nncf",
                      "kind": "peer", "artifact": peer.path.name, "runtime": "openvino", "key": "NNCF @ openvino",
                      "fp32_key": nncf_fp32_key, "transforms": [], "settings": {}})
    runners = open_runners(pairs)
    predicted, labels = predictions_per_pair(runners, prepared)
    top1 = top1_of(predicted, labels)
    p50 = {}
    if args.rounds:
        for toolchain in ("torch_fx", "torch_pt2e", "ort", "modelopt"):
            for runtime in cpu_runtimes(toolchain):
                keys = {r["fp32_key"] for r in table if r["toolchain"] == toolchain and r["runtime"] == runtime}
                keys |= {r["key"] for r in table if r["toolchain"] == toolchain and r["runtime"] == runtime}
                p50.update(p50_latencies({k: runners[k] for k in sorted(keys)}, prepared, args.rounds))
    print(f"\nEfficientNet-Lite0, 1000 evaluation images, 300 calibration images; CPU: {cpu_summary()}\n")
    print("| toolchain and settings | runtime | FP32 top-1 % | INT8 top-1 % | drop pp | agreement with FP32 % "
          "| p50 b1 ms (FP32 -> INT8) |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        r["fp32_top1"], r["int8_top1"] = top1[r["fp32_key"]], top1[r["key"]]
        r["drop_pp"] = r["fp32_top1"] - r["int8_top1"]
        # top-1 on 1,000 images moves by 0.1 pp per image either way; agreement counts every changed answer
        r["agreement_pct"] = 100.0 * float(np.mean(predicted[r["key"]] == predicted[r["fp32_key"]]))
        lat = (f"{p50[r['fp32_key']]:.1f} -> {p50[r['key']]:.1f}" if r["key"] in p50 else "-")
        r["p50_ms"] = {"fp32": p50.get(r["fp32_key"]), "int8": p50.get(r["key"])}
        name = r["label"] + (f" [{'+'.join(r['transforms'])}]" if r["transforms"] else "")
        print(f"| {name} | {r['runtime']} | {r['fp32_top1']:.2f} | {r['int8_top1']:.2f} | {r['drop_pp']:+.2f} "
              f"| {r['agreement_pct']:.1f} | {lat} |")
    out = resolve_path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu": cpu_summary(), "rows": table}, indent=2, default=str), encoding="utf-8")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
