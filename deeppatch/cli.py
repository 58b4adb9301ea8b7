"""The `deeppatch` command: the four stages of the original project, plus list/bench/report.

    deeppatch list {models,datasets,correctors,suites}
    deeppatch pretrain -m MODEL -d DATASET
    deeppatch assess   -m MODEL -d DATASET -f perfloss
    deeppatch correct  -m MODEL -d DATASET -f perfloss -c patch --crt_type replace
    deeppatch evaluate -m MODEL -d DATASET -f perfloss -c patch --crt_type replace

User errors print one line (``error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from deeppatch.commands import bench as bench_commands
from deeppatch.commands import maintenance as maintenance_commands
from deeppatch.commands import report as report_commands
from deeppatch.corrector import corrector_registry
from deeppatch.data import dataset_registry
from deeppatch.errors import DeepPatchError
from deeppatch.models import MODELS
from deeppatch.models.pretrained import RELEASE_FILES
from deeppatch.perturbations import perturbation_names
from deeppatch.pretrain import PretrainConfig, run_pretrain
from deeppatch.suites import SUITES
from deeppatch.versions import __version__

Handler = Callable[[argparse.Namespace], int]


def _add_common(p: argparse.ArgumentParser, *, model_required: bool = True) -> None:
    """Flags shared by the stages, named as in the original README (dashes also accepted)."""
    p.add_argument("--data_dir", "--data-dir", default=None,
                   help="data folder (default: $DEEPPATCH_DATA_DIR or ./data)")
    p.add_argument("--output_dir", "--output-dir", default="output", help="where results go (default: output)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    p.add_argument("--gpu", type=int, default=None, help="GPU index with --device cuda (default: 0)")
    p.add_argument("-b", "--batch_size", "--batch-size", type=int, default=None, help="training batch size")
    p.add_argument("-m", "--model", required=model_required, help="model name (see: deeppatch list models)")
    p.add_argument("-d", "--dataset", default="fashion_mnist",
                   help="data set name (default: fashion_mnist; see: deeppatch list datasets)")
    p.add_argument("-n", "--noise_type", "--noise-type", default="blur",
                   help="maintenance perturbation family (default: blur; 'gaussian'/'gaussion' = blur)")
    p.add_argument("--lr", type=float, default=None, help="learning rate")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight_decay", "--weight-decay", type=float, default=5e-4)
    p.add_argument("-e", "--max_epoch", "--epochs", dest="max_epoch", type=int, default=None,
                   help="training epochs")
    p.add_argument("-r", "--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--seed", type=int, default=2021, help="run seed (default: 2021, the reference's)")
    p.add_argument("--download", action="store_true", help="download the data set if it is missing")
    p.add_argument("--val_fraction", "--val-fraction", type=float, default=0.02,
                   help="fraction of the training split held out as validation (default: 0.02)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every epoch")


def _positive(kind: str, value: int | float | None) -> None:
    if value is not None and value <= 0:
        raise DeepPatchError(f"{kind} must be positive, got {value}")


def cmd_list(args: argparse.Namespace) -> int:
    what = args.what
    if what == "models":
        for name in sorted(MODELS):
            entry = MODELS[name]
            pre = sorted(d for d, m in RELEASE_FILES if m == name)
            tag = f"pretrained: {', '.join(pre)}" if pre else "train from scratch"
            print(f"{name:20s} {entry.family:13s} {entry.description} [{tag}]")
        print("robustbench:<name>   robustbench   any RobustBench model zoo entry (e.g. robustbench:Standard)")
    elif what == "datasets":
        for name, cls in sorted(dataset_registry().items()):
            print(f"{name:15s} {cls.description}")
    elif what == "correctors":
        for _, cls in sorted(corrector_registry().items()):
            print(f"{cls.display_name():24s} {cls.summary()}")
            if cls.stand_in:
                print(f"{'':24s}   stand-in: {cls.stand_in}")
    elif what == "suites":
        for name, cls in sorted(SUITES.items()):
            doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
            print(f"{name:12s} {doc[0] if doc else cls.__name__}")
    elif what == "perturbations":
        print("\n".join(perturbation_names()))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    for kind, v in (("-b/--batch_size", args.batch_size), ("--lr", args.lr), ("-e/--max_epoch", args.max_epoch),
                    ("--train-subset", args.train_subset)):
        _positive(kind, v)
    cfg = PretrainConfig(
        model=args.model, dataset=args.dataset, data_dir=args.data_dir, output_dir=args.output_dir,
        device=args.device, gpu=args.gpu, batch_size=args.batch_size or 128, lr=args.lr or 0.05,
        momentum=args.momentum, weight_decay=args.weight_decay, epochs=args.max_epoch, resume=args.resume,
        seed=args.seed, weights=args.weights, train_if_missing=args.train_if_missing, download=args.download,
        noise_type=args.noise_type, val_fraction=args.val_fraction, train_subset=args.train_subset,
    )
    metrics = run_pretrain(cfg)
    _print_report(metrics["test"], title=f"{cfg.model} on {cfg.dataset} ({metrics['source']})")
    print(f"checkpoint: {metrics['checkpoint']}")
    return 0


def _print_report(report: dict[str, float], title: str) -> None:
    print(title)
    for key, value in report.items():
        print(f"  {key:>14s}: {value:6.2f} %")


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors ("error: ...; see: deeppatch COMMAND --help"), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {' '.join(message.split())}; see: {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="deeppatch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"deeppatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("list", help="list models, data sets, correctors, suites or perturbations")
    p.add_argument("what", choices=["models", "datasets", "correctors", "suites", "perturbations"])
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("pretrain", help="load release weights or train from scratch, then evaluate",
                       description="Get the model under maintenance: chenyaofo release weights for CIFAR, "
                                   "training from scratch otherwise; then clean + blur test accuracy.")
    _add_common(p)
    p.add_argument("--weights", default="auto", help="auto (release weights where they exist), pretrained, scratch")
    p.add_argument("--train-if-missing", "--train_if_missing", action="store_true",
                   help="train from scratch when release weights cannot be downloaded")
    p.add_argument("--train-subset", "--train_subset", type=int, default=None,
                   help="train on a seeded, stratified subset of this many images")
    p.set_defaults(func=cmd_pretrain)

    for register in (maintenance_commands.register, bench_commands.register, report_commands.register):
        register(sub, _add_common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except DeepPatchError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, always
        return 2
    except OSError as exc:  # disk full, read-only folder, a folder where a file was expected, ...
        where = f": {exc.filename!r}" if exc.filename else ""
        print(f"error: {exc.strerror or type(exc).__name__}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun with -r/--resume to continue", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and friends
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
