"""Every way to run a model here, beside OpenVINO + NNCF INT8, interleaved in one process: the table of
docs/benchmarks.md ("True FP32, BF16, INT8 and the peer").

Rows: true FP32 on OpenVINO (``INFERENCE_PRECISION_HINT=f32``), on ONNX Runtime and on torch (TorchScript, matmul
precision "highest"); BF16 on OpenVINO and torch where the CPU has AMX-BF16/AVX512-BF16; the peer (``nncf.quantize``
defaults, fast bias correction on, same FP32 ONNX and calibration images) on OpenVINO; and the suite's INT8
artifacts with default settings: ModelOpt and ORT QDQ on OpenVINO and on ONNX Runtime, FX on torch, PT2E on
torch.compile. Latency: every row interleaved, p50 of ``--rounds``; the header names the CPU class. Accuracy:
EfficientNet-Lite0 (real weights) on the 1,000 evaluation images of ../shared/assets/imagenet-val-1300 (the other
300 calibrate); ResNets have random weights, so only their speed is shown.

    pip install -r bench/requirements.txt
    .venv/bin/python bench/peer_openvino_nncf.py [--archs resnet50,efficientnet_lite0] [--no-pt2e]
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402

from bench.common import ASSETS, nncf_artifact, require_nncf  # noqa: E402
from evaluation.pipelines.loop import collect_logits, evaluation_batches, open_runners  # noqa: E402
from quantization.run_config import RunConfig  # noqa: E402
from quantization.workflow import prepare, run_toolchain  # noqa: E402
from utils.benchmark import interleaved_latency  # noqa: E402
from utils.cli import csv_list, quiet_known_warnings, setup_logging  # noqa: E402
from utils.config import resolve_path  # noqa: E402
from utils.data import sample_batch  # noqa: E402
from utils.hardware import cpu_model_name, native_bf16_reason  # noqa: E402
from utils.targets import resolve_target  # noqa: E402


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


def rows_for(arch: str, pt2e: bool) -> tuple[dict[str, tuple], object]:
    """name -> (artifact, runtime, precision), and the prepared run."""
    cfg = config_for(arch)
    prepared = prepare(cfg)
    fx_fp32, fx_int8, *_ = run_toolchain("torch_fx", cfg, prepared)
    onnx_fp32, ort_int8, *_ = run_toolchain("ort", cfg, prepared)
    _, mo_int8, *_ = run_toolchain("modelopt", cfg, prepared)
    peer = nncf_artifact(onnx_fp32, prepared.calibration.as_array(),
                         resolve_path(cfg.models_dir) / "nncf" / f"{arch}_nncf_int8.xml")
    rows = {"OpenVINO true FP32": (onnx_fp32, "openvino", "fp32"),
            "ONNX Runtime FP32": (onnx_fp32, "onnxruntime", "fp32"),
            "torch FP32 (TorchScript)": (fx_fp32, "torch", "fp32")}
    if native_bf16_reason() is None:
        rows |= {"OpenVINO BF16": (onnx_fp32, "openvino", "bf16"), "torch BF16 (autocast)": (fx_fp32, "torch", "bf16")}
    rows |= {"NNCF INT8 on OpenVINO (peer)": (peer, "openvino", "int8"),
             "suite ModelOpt INT8 on OpenVINO": (mo_int8, "openvino", "int8"),
             "suite ORT QDQ INT8 on OpenVINO": (ort_int8, "openvino", "int8"),
             "suite FX INT8 on torch": (fx_int8, "torch", "int8"),
             "suite ORT QDQ INT8 on ONNX Runtime": (ort_int8, "onnxruntime", "int8"),
             "suite ModelOpt INT8 on ONNX Runtime": (mo_int8, "onnxruntime", "int8")}
    if pt2e:
        _, pt2e_int8, *_ = run_toolchain("torch_pt2e", cfg, prepared)
        rows["suite PT2E INT8 on torch.compile"] = (pt2e_int8, "torch_compile", "int8")
    return rows, prepared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", type=csv_list(), default=["resnet50", "efficientnet_lite0"])
    parser.add_argument("--batch-sizes", type=csv_list(int), default=[1, 16])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--no-pt2e", action="store_true", help="leave out PT2E (its torch.compile takes minutes)")
    args = parser.parse_args()
    quiet_known_warnings()
    setup_logging()
    if not ASSETS.is_dir():
        raise SystemExit(f"needs {ASSETS} (real calibration and evaluation images)")
    require_nncf()
    print(f"CPU: {cpu_model_name() or platform.machine()}, class {resolve_target('auto').name}, "
          f"BF16: {native_bf16_reason() or 'native'}; p50 ms, every row interleaved, {args.rounds} rounds")
    for arch in args.archs:
        rows, prepared = rows_for(arch, pt2e=not args.no_pt2e)
        runners = open_runners(rows)
        ran_in = {name: r.ran_in for name, r in runners.items()}
        top1: dict[str, float] = {}
        if arch.startswith("efficientnet_lite"):
            batches = evaluation_batches(prepared.splits, 50)
            logits = collect_logits({name: r.predict for name, r in runners.items()}, batches, desc="accuracy")
            top1 = {name: 100 * float(np.mean(v.argmax(1) == batches.labels)) for name, v in logits.items()}
        p50: dict[int, dict[str, float]] = {}
        for batch_size in args.batch_sizes:
            batch = sample_batch(prepared.splits, batch_size).numpy()
            stats = interleaved_latency({n: r.timed_call(batch) for n, r in runners.items()}, batch_size,
                                        warmup=3, rounds=args.rounds, desc=f"{arch} b{batch_size}")
            p50[batch_size] = {n: s.summary()["p50_ms"] for n, s in stats.items()}
        print(f"\n{arch}\n\n| path | ran in | top-1 % | " + " | ".join(f"b{b} p50 ms" for b in args.batch_sizes)
              + " | " + " | ".join(f"b{b} vs OV true FP32" for b in args.batch_sizes) + " |")
        print("|---|---|---|" + "---|" * (2 * len(args.batch_sizes)))
        for name in rows:
            acc = f"{top1[name]:.2f}" if top1 else "-"
            times = " | ".join(f"{p50[b][name]:.1f}" for b in args.batch_sizes)
            ratios = " | ".join(f"{p50[b]['OpenVINO true FP32'] / p50[b][name]:.2f}x" for b in args.batch_sizes)
            print(f"| {name} | {ran_in[name]} | {acc} | {times} | {ratios} |", flush=True)
        del runners


if __name__ == "__main__":
    main()
