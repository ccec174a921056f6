"""Deployment targets on EfficientNet-Lite0: the ONNX toolchains built for x86-vnni and for x86-avx2,
measured on this machine's CPU runtimes, beside the reference runtime and OpenVINO NNCF.

Same split as bench/accuracy_recipes.py (300 calibration, 1000 evaluation images of
../shared/assets/imagenet-val-1300). For each artifact: top-1 on onnxruntime and openvino (this CPU's
kernels), on onnxruntime_reference (exact Q/DQ math: what VNNI kernels and TensorRT compute, up to
rounding), the static saturation verdict for this CPU, the file size against FP32, and batch-1 latency
of the 8-bit and 7-bit files interleaved in one process (the overflow fix must cost no speed).
Every figure is measured on this machine; the header line says which CPU class that is.

    pip install -r bench/requirements.txt     # nncf, for the peer row
    .venv/bin/python bench/cpu_targets.py [--no-nncf] [--rounds 30]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.accuracy_recipes import cpu_summary, p50_latencies, top1_per_pair  # noqa: E402
from bench.common import efficientnet_prepared, nncf_artifact, require_nncf  # noqa: E402
from evaluation.pipelines.loop import open_runners  # noqa: E402
from evaluation.saturation_check import check_artifact  # noqa: E402
from quantization.workflow import make_quantizer, run_toolchain  # noqa: E402
from utils.cli import quiet_known_warnings, setup_logging  # noqa: E402
from utils.config import resolve_path, with_overrides  # noqa: E402
from utils.targets import resolve_target  # noqa: E402

ROWS = [("ModelOpt int8 max", "modelopt", {"modelopt": {"calibration_method": "max"}}),
        ("ORT quantize_static MinMax", "ort", {"ort": {"calibration_method": "minmax"}})]
TARGETS = ("x86-vnni", "x86-avx2")
RUNTIMES = ("onnxruntime", "openvino", "onnxruntime_reference")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-nncf", action="store_true")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", default="results/bench/cpu_targets.json")
    args = parser.parse_args()
    quiet_known_warnings()
    setup_logging()
    cfg, prepared = efficientnet_prepared()
    here = resolve_target("auto")
    fp32 = make_quantizer("ort", cfg).export_fp32(prepared.model)
    pairs = {f"FP32 @ {rt}": (fp32, rt) for rt in RUNTIMES}
    table = []
    for label, toolchain, overrides in ROWS:
        for target in TARGETS:
            variant = with_overrides(cfg, {**overrides, "target": target})
            int8 = run_toolchain(toolchain, variant, prepared)[1]
            verdict = check_artifact(int8, [here])[here.name]
            for runtime in RUNTIMES:
                pairs[f"{int8.path.name} @ {runtime}"] = (int8, runtime)
            table.append({"label": label, "toolchain": toolchain, "target": target, "artifact": int8.path.name,
                          "weight_bits": int8.manifest["settings"]["weight_bits"], "verdict_here": verdict.summary(),
                          "size_ratio": fp32.size_bytes() / int8.size_bytes(),
                          "quantize_seconds": int8.manifest.get("quantize_seconds")})
    if not args.no_nncf:
        require_nncf()
        peer = nncf_artifact(fp32, prepared.calibration.as_array(),
                             resolve_path(cfg.models_dir) / "nncf" / "efficientnet_lite0_nncf_int8.xml")
        pairs["NNCF @ openvino"] = (peer, "openvino")
    runners = open_runners(pairs)
    top1 = top1_per_pair(runners, prepared)
    latency = {}
    if args.rounds:
        for _label, toolchain, _ in ROWS:
            for runtime in ("onnxruntime", "openvino"):
                keys = [f"FP32 @ {runtime}"] + [f"{r['artifact']} @ {runtime}" for r in table
                                                if r["toolchain"] == toolchain]
                latency.update({(k, runtime): v for k, v in p50_latencies({k: runners[k] for k in keys}, prepared,
                                                                          args.rounds).items()})
    print(f"\nEfficientNet-Lite0, 1000 evaluation images, 300 calibration images; CPU: {cpu_summary()}; "
          f"target class of this CPU: {here.name}\n")
    print("FP32 top-1: " + ", ".join(f"{rt} {top1[f'FP32 @ {rt}']:.2f}" for rt in RUNTIMES) + "\n")
    print("| toolchain | built for | weight bits | static check (this CPU) | FP32/INT8 size | ORT top-1 (drop) "
          "| OpenVINO top-1 (drop) | reference top-1 (drop) | p50 b1 ms ORT FP32 -> INT8 | p50 b1 ms OV FP32 -> INT8 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        cells = []
        for rt in RUNTIMES:
            value = top1[f"{r['artifact']} @ {rt}"]
            r[f"top1_{rt}"] = value
            r[f"drop_{rt}"] = top1[f"FP32 @ {rt}"] - value
            cells.append(f"{value:.2f} ({r[f'drop_{rt}']:+.2f})")
        lat = []
        for rt in ("onnxruntime", "openvino"):
            f, q = latency.get((f"FP32 @ {rt}", rt)), latency.get((f"{r['artifact']} @ {rt}", rt))
            r[f"p50_ms_{rt}"] = {"fp32": f, "int8": q}
            lat.append(f"{f:.2f} -> {q:.2f}" if f and q else "-")
        print(f"| {r['label']} | {r['target']} | {r['weight_bits']} | {r['verdict_here']} | {r['size_ratio']:.2f}x | "
              + " | ".join(cells) + " | " + " | ".join(lat) + " |")
    if "NNCF @ openvino" in top1:
        print(f"| OpenVINO NNCF nncf.quantize (defaults) | - | 8 (overflow fix: first layer) | - | - | - | "
              f"{top1['NNCF @ openvino']:.2f} ({top1['FP32 @ openvino'] - top1['NNCF @ openvino']:+.2f}) | - | - | - |")
    out = resolve_path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu": cpu_summary(), "cpu_target_class": here.name, "fp32_top1": {
        rt: top1[f"FP32 @ {rt}"] for rt in RUNTIMES}, "nncf_top1": top1.get("NNCF @ openvino"), "rows": table},
        indent=2, default=str), encoding="utf-8")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
