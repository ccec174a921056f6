"""This suite's INT8 artifacts against OpenVINO + NNCF INT8, side by side in one process.

Peer: ``nncf.quantize`` (OpenVINO's post-training quantizer, fast bias correction on) on the same FP32
ONNX and the same seeded calibration images, run on the OpenVINO CPU runtime. Ours: FX INT8
(TorchScript), ORT QDQ INT8 (ONNX Runtime), ModelOpt INT8 (OpenVINO). Latency: every model
interleaved, medians; speedups against OpenVINO FP32 (the fastest FP32 here) and against FP32 on the
artifact's own runtime. Accuracy: EfficientNet-Lite0 (real ImageNet weights) on the 1,000 evaluation
images of ../shared/assets/imagenet-val-1300 (the other 300 calibrate); the ResNets have random
weights, so only their speed is reported.

    pip install -r bench/requirements.txt
    .venv/bin/python bench/peer_openvino_nncf.py [--archs resnet50,resnet18,efficientnet_lite0]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402

from bench.common import ASSETS, nncf_artifact  # noqa: E402
from evaluation.pipelines.loop import collect_logits, evaluation_batches, open_runners  # noqa: E402
from quantization.run_config import RunConfig  # noqa: E402
from quantization.workflow import prepare, run_toolchain  # noqa: E402
from utils.benchmark import interleaved_latency  # noqa: E402
from utils.cli import csv_list, quiet_known_warnings, setup_logging  # noqa: E402
from utils.config import resolve_path  # noqa: E402
from utils.data import sample_batch  # noqa: E402


def config_for(arch: str) -> RunConfig:
    cfg = RunConfig()
    cfg.model.arch = arch
    cfg.data.dataset, cfg.data.root = "imagenet", str(ASSETS)
    cfg.calibration.size, cfg.calibration.seed = 300, 0
    if arch.startswith("efficientnet_lite"):
        cfg.data.mean, cfg.data.std = [0.498] * 3, [0.502] * 3
    else:
        cfg.calibration.size, cfg.data.limit = 64, 64  # random weights: speed only
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", type=csv_list(), default=["resnet50", "resnet18", "efficientnet_lite0"])
    parser.add_argument("--batch-sizes", type=csv_list(int), default=[1, 16])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    quiet_known_warnings()
    setup_logging()
    if not ASSETS.is_dir():
        raise SystemExit(f"needs {ASSETS} (real calibration and evaluation images)")
    print("| model | INT8 artifact | runtime | top-1 % (FP32 same runtime) | batch | p50 ms | vs OV FP32 "
          "| vs FP32 same runtime |")
    print("|---|---|---|---|---|---|---|---|")
    for arch in args.archs:
        cfg = config_for(arch)
        prepared = prepare(cfg)
        fx_fp32, fx_int8, *_ = run_toolchain("torch_fx", cfg, prepared)
        onnx_fp32, ort_int8, *_ = run_toolchain("ort", cfg, prepared)
        cfg.modelopt.calibration_method = "max"
        _, mo_int8, *_ = run_toolchain("modelopt", cfg, prepared)
        out = resolve_path(cfg.models_dir) / "nncf" / f"{arch}_nncf_int8.xml"
        peer = nncf_artifact(onnx_fp32, prepared.calibration.as_array(), out)
        pairs = {  # name -> (artifact, runtime, its FP32 twin name)
            "OV FP32": (onnx_fp32, "openvino", "OV FP32"), "ORT FP32": (onnx_fp32, "onnxruntime", "ORT FP32"),
            "torch FP32": (fx_fp32, "torch", "torch FP32"),
            "NNCF INT8": (peer, "openvino", "OV FP32"), "ModelOpt INT8": (mo_int8, "openvino", "OV FP32"),
            "ORT QDQ INT8": (ort_int8, "onnxruntime", "ORT FP32"), "FX INT8": (fx_int8, "torch", "torch FP32"),
        }
        runners = open_runners({name: (art, rt) for name, (art, rt, _) in pairs.items()})
        top1 = {}
        if arch.startswith("efficientnet_lite"):
            batches = evaluation_batches(prepared.splits, 50)
            logits = collect_logits({name: r.predict for name, r in runners.items()}, batches, desc="accuracy")
            top1 = {name: 100 * float(np.mean(v.argmax(1) == batches.labels)) for name, v in logits.items()}
        for batch_size in args.batch_sizes:
            batch = sample_batch(prepared.splits, batch_size).numpy()
            stats = interleaved_latency({n: r.timed_call(batch) for n, r in runners.items()}, batch_size,
                                        warmup=3, rounds=args.rounds)
            p50 = {n: s.summary()["p50_ms"] for n, s in stats.items()}
            for name, (_, runtime, twin) in pairs.items():
                if "INT8" not in name:
                    continue
                acc = f"{top1[name]:.2f} ({top1[twin]:.2f})" if top1 else "-"
                print(f"| {arch} | {name} | {runtime} | {acc} | {batch_size} | {p50[name]:.1f} | "
                      f"{p50['OV FP32'] / p50[name]:.2f}x | {p50[twin] / p50[name]:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
