"""``python -m resnet.train``: train a registry architecture (default: ResNet-18 with the CIFAR stem on
CIFAR-10, configs/train_resnet18_cifar10.yaml) with a checkpoint each epoch; rerunning resumes.

The result, ``models/training/<arch>_<dataset>/<arch>_<dataset>.pth`` with its manifest, is what the
quantization scripts take as ``--weights``. ``--epochs 1 --limit 256`` makes a short run.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from quantization.run_config import config_from_args
from resnet.training_recipe import train_from_config
from utils import cli
from utils.config import resolve_path

DEFAULT_CONFIG = "configs/train_resnet18_cifar10.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m resnet.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_config_arg(parser)
    parser.set_defaults(config=str(resolve_path(DEFAULT_CONFIG)))
    g = parser.add_argument_group("training")
    cli.option(g, "--epochs", "training.epochs", "epochs (cosine decay spans all of them)", type=int)
    cli.option(g, "--lr", "training.lr", "initial SGD learning rate", type=float)
    cli.option(g, "--momentum", "training.momentum", "SGD momentum", type=float)
    cli.option(g, "--weight-decay", "training.weight_decay", "SGD weight decay", type=float)
    cli.option(g, "--train-batch-size", "training.batch_size", "training batch size", type=int)
    cli.option(g, "--seed", "training.seed", "seed of initialisation and shuffling", type=int)
    cli.option(g, "--limit", "training.limit", "train on the first N training images only", type=int)
    g.add_argument("--no-resume", dest="training.resume", action="store_false", default=None,
                   help="start over instead of resuming from the run's last checkpoint")
    g.add_argument("--no-augment", dest="training.augment", action="store_false", default=None,
                   help="no random 2-pixel shifts")
    cli.add_model_args(parser)
    d = parser.add_argument_group("data")
    cli.option(d, "--dataset", "data.dataset", "demo or cifar10 (a dataset with a training split)",
               choices=["demo", "cifar10"])
    cli.option(d, "--data-root", "data.root", "dataset folder (CIFAR-10 python batches or .npz pair)")
    cli.option(d, "--eval-limit", "data.limit", "report top-1 on the first N evaluation images only", type=int)
    cli.add_output_args(parser, reports=False)  # writes models/training/, no report
    return parser


def train(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    path = train_from_config(config_from_args(args))
    print(f"weights: {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_cli(train, argv)


if __name__ == "__main__":
    sys.exit(main())
