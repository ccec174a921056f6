"""The AVX2 lane: check each toolchain's default artifact against AVX2 kernels on any x86 machine.

Accuracy depends on the CPU's INT8 kernels, and a developer rarely has every CPU class. Under QEMU
user-mode emulation (``qemu-x86_64 -cpu Haswell``, Debian package ``qemu-user``) the libraries' CPU
detection sees AVX2 + FMA and no AVX-512/VNNI, so ONNX Runtime, FBGEMM and oneDNN pick their AVX2
kernels (measured bit-identical to a real AVX2 CPU), at about 75x the time: the lane keeps to a few
dozen demo images.

``build`` (native, fast): quantizes the demo model with torch_fx, ort and modelopt for ``--target
x86-avx2`` (the saturation-safe artifacts) and for ``--target x86-vnni`` (the unsafe baseline, to show
the lane catches saturation), and stores a stratified sample of evaluation images and each
artifact's native predictions. ``check`` (under QEMU): prints the ISA this process sees, runs each
artifact on its CPU runtime with AVX2 kernels and compares with the exact math (ONNX: the reference
runtime, graph optimisations off; TorchScript: no reference exists, so the FP32 model), and fails
where an artifact built for x86-avx2 disagrees or where the static check misjudges either kind.

PT2E is left out: torch.compile would compile C++ under emulation (many minutes).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger("avx2_lane")

TOOLCHAINS = ("torch_fx", "ort", "modelopt")
TARGETS = ("x86-avx2", "x86-vnni")
IMAGES = 48
#: an artifact built for x86-avx2 must agree with the exact math on at least this share of the images ...
MIN_AGREEMENT = 0.95
#: ... and stay within this relative logit error of it (measured on AVX2: 0.005-0.026; saturated: 0.15)
MAX_LOGIT_ERROR = 0.05
#: the 8-bit ORT artifact must show at least this many times its 7-bit twin's error: proof that the
#: kernels really were the AVX2 ones (on VNNI kernels both errors are alike)
MIN_SATURATION_RATIO = 5.0


def seen_isa() -> dict[str, bool]:
    """The CPU features this process's libraries detect (CPUID, as numpy reads it): what the kernels see."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # pragma: no cover - numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as features
    return {name: bool(features.get(name, False)) for name in ("AVX2", "FMA3", "AVX512F", "AVX512_VNNI",
                                                               "AVX512_SPR")}


def build(out: Path) -> int:
    from quantization.run_config import RunConfig
    from quantization.workflow import prepare, run_toolchain
    from utils.data import stratified_indices

    cfg = RunConfig()
    cfg.models_dir = str(out / "models")
    prepared = prepare(cfg)
    labels = [int(prepared.splits.evaluation[i][1]) for i in range(len(prepared.splits.evaluation))]
    picks = stratified_indices(labels, IMAGES, seed=0)
    images = np.stack([prepared.splits.evaluation[i][0].numpy() for i in picks]).astype(np.float32)
    entries = []
    for target in TARGETS:
        cfg.target = target
        for toolchain in TOOLCHAINS:
            fp32, int8, *_ = run_toolchain(toolchain, cfg, prepared)
            entries.append({"toolchain": toolchain, "target": target, "kind": int8.kind, "path": str(int8.path),
                            "fp32": str(fp32.path)})
    np.savez(out / "images.npz", x=images, y=np.asarray([labels[i] for i in picks]))
    for entry in entries:
        entry["native"] = _predict(entry["path"], entry["kind"], images, optimize=True).argmax(1).tolist()
    (out / "lane.json").write_text(json.dumps({"native_isa": seen_isa(), "artifacts": entries}, indent=1))
    print(f"lane artifacts in {out} (native ISA: {seen_isa()})")
    return 0


def _predict(path: str, kind: str, images: np.ndarray, optimize: bool) -> np.ndarray:
    if kind in ("onnx", "onnx_qdq"):
        from evaluation.pipelines.onnxruntime_runner import make_session

        session = make_session(path, None, ["CPUExecutionProvider"], optimize=optimize)
        return session.run(None, {session.get_inputs()[0].name: images})[0]
    import torch

    from utils.artifacts import load_artifact

    # the engine the artifact was built for (FX on x86-vnni: oneDNN), as the torch runner sets it before loading
    torch.backends.quantized.engine = load_artifact(Path(path)).manifest.get("settings", {}).get("backend") or "x86"
    module = torch.jit.load(path, map_location="cpu").eval()
    with torch.inference_mode():
        return module(torch.from_numpy(images)).float().numpy()


def relative_error(logits: np.ndarray, exact: np.ndarray) -> float:
    """||logits - exact|| / ||exact||: saturated pair sums show here before they flip a top-1 class."""
    return float(np.linalg.norm(logits - exact) / max(np.linalg.norm(exact), 1e-12))


def check(folder: Path) -> int:
    from evaluation.saturation_check import check_artifact
    from utils.artifacts import load_artifact
    from utils.targets import TARGETS as KNOWN

    isa = seen_isa()
    print(f"ISA seen by this process (CPUID): {isa}; emulator: {os.environ.get('MLS_EMULATOR', 'none (native)')}")
    if isa["AVX512_VNNI"] or not isa["AVX2"]:
        print("error: the AVX2 lane must run where the CPU reports AVX2 and no VNNI "
              "(qemu-x86_64 -cpu Haswell .venv/bin/python -m evaluation.avx2_lane check ...)", file=sys.stderr)
        return 2
    lane = json.loads((folder / "lane.json").read_text())
    with np.load(folder / "images.npz") as data:
        images = data["x"]
    failures = []
    errors: dict[tuple[str, str], float] = {}
    print(f"{'toolchain':<10} {'built for':<9} {'static check on x86-avx2':<70} {'agree w/ exact':>14} "
          f"{'logit error':>11} {'agree w/ native':>15}")
    for entry in lane["artifacts"]:
        verdict = check_artifact(load_artifact(Path(entry["path"])), [KNOWN["x86-avx2"]])["x86-avx2"]
        avx2 = _predict(entry["path"], entry["kind"], images, optimize=True)
        if entry["kind"] == "onnx_qdq":
            exact = _predict(entry["path"], entry["kind"], images, optimize=False)
        else:  # TorchScript INT8 has no unfused twin: the FP32 model is the yardstick
            exact = _predict(entry["fp32"], entry["kind"], images, optimize=True)
        agree = float(np.mean(avx2.argmax(1) == exact.argmax(1)))
        error = relative_error(avx2, exact)
        native = float(np.mean(avx2.argmax(1) == np.asarray(entry["native"])))
        print(f"{entry['toolchain']:<10} {entry['target']:<9} {verdict.summary():<70} {100 * agree:13.1f}% "
              f"{error:11.4f} {100 * native:14.1f}%")
        errors[(entry["toolchain"], entry["target"])] = error
        if entry["target"] == "x86-avx2":
            if error > MAX_LOGIT_ERROR:
                failures.append(f"{entry['toolchain']} built for x86-avx2: logit error {error:.4f} against the exact "
                                f"math under AVX2 kernels (more than {MAX_LOGIT_ERROR})")
            if not verdict.safe:
                failures.append(f"{entry['toolchain']} built for x86-avx2 fails the static check: {verdict.summary()}")
            if agree < MIN_AGREEMENT:
                failures.append(f"{entry['toolchain']} built for x86-avx2 agrees with the exact math on only "
                                f"{100 * agree:.1f}% of {len(images)} images under AVX2 kernels")
        elif entry["toolchain"] != "torch_fx" and verdict.safe:
            failures.append(f"{entry['toolchain']} built for x86-vnni (8-bit weights) passes the x86-avx2 static "
                            "check: the check misses full-range pair sums")
    ratio = errors[("ort", "x86-vnni")] / max(errors[("ort", "x86-avx2")], 1e-12)
    print(f"saturation reproduced: the 8-bit ORT artifact's logit error is {ratio:.1f}x its 7-bit twin's")
    if ratio < MIN_SATURATION_RATIO:
        failures.append(f"the 8-bit ORT artifact's error is only {ratio:.1f}x the 7-bit one's: these were not "
                        "AVX2 kernels (run the check under qemu-x86_64 -cpu Haswell)")
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    print("AVX2 lane: " + ("FAILED" if failures else f"passed ({len(lane['artifacts'])} artifacts, {len(images)} images)"))
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    from utils import cli

    parser = cli.ArgumentParser(prog="python -m evaluation.avx2_lane", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["build", "check"])
    parser.add_argument("--dir", default="models/avx2_lane", help="where the lane's artifacts and images go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from utils.config import resolve_path

    folder = resolve_path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    return build(folder) if args.step == "build" else check(folder)


if __name__ == "__main__":
    from utils.cli import run_cli

    raise SystemExit(run_cli(main))
