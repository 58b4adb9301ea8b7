"""The pretrain stage: get the model under maintenance (release weights or training from scratch)
and measure its clean and blurred test accuracy."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deeppatch.data import (
    DEFAULT_SPLIT_SEED,
    DEFAULT_VAL_FRACTION,
    Splits,
    get_dataset_source,
    load_splits,
    stratified_subset,
)
from deeppatch.device import resolve_device
from deeppatch.errors import DeepPatchError, unknown_choice
from deeppatch.evaluation import accuracy, perturbation_report
from deeppatch.models import create_model
from deeppatch.models.checkpoint import load_model, save_model
from deeppatch.models.pretrained import has_pretrained, load_pretrained
from deeppatch.models.registry import check_model_name
from deeppatch.models.robustbench_models import (
    default_model_dir,
    load_robustbench_model,
    parse_model_spec,
    robustbench_extra,
)
from deeppatch.paths import pretrained_path, run_dir
from deeppatch.perturbations import get_perturbation
from deeppatch.seeding import make_generator, seed_everything
from deeppatch.storage import atomic_write_json, ensure_writable_dir
from deeppatch.training import OptimConfig, TrainLoop
from deeppatch.versions import environment_versions

log = logging.getLogger(__name__)

WEIGHTS_CHOICES = ("auto", "pretrained", "scratch")


@dataclass
class PretrainConfig:
    model: str
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    output_dir: str = "output"
    device: str = "auto"
    gpu: int | None = None
    batch_size: int = 128
    eval_batch_size: int = 512
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int | None = None  # None: the data set's default
    resume: bool = False
    seed: int = 2021
    weights: str = "auto"  # auto: release weights where they exist, else train
    train_if_missing: bool = False
    download: bool = False
    noise_type: str = "blur"
    val_fraction: float = DEFAULT_VAL_FRACTION
    split_seed: int = DEFAULT_SPLIT_SEED
    train_subset: int | None = None  # train on a seeded subset (quick runs)


def train_from_scratch(model: nn.Module, splits: Splits, cfg: PretrainConfig, device: torch.device,
                       state_path: Path | None, epochs: int) -> dict[str, Any]:
    """Plain supervised training of `model` on clean train data, best epoch on val accuracy."""
    train = splits.train
    if cfg.train_subset:
        train = stratified_subset(train, cfg.train_subset, cfg.seed)
    train = train.to(device)

    def batches(epoch: int):
        return train.batches(cfg.batch_size, device=device, shuffle=True,
                             generator=make_generator(cfg.seed, "pretrain-order", epoch))

    val = splits.val.to(device)
    loop = TrainLoop(
        model=model, params=[p for p in model.parameters() if p.requires_grad], batches=batches,
        num_batches=train.num_batches(cfg.batch_size), epochs=epochs,
        optim=OptimConfig(lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay),
        device=device, validate=lambda m: accuracy(m, val, batch_size=cfg.eval_batch_size, device=device),
        compare_to_start=False, checkpoint_path=state_path, resume=cfg.resume, seed=cfg.seed,
        desc=f"pretrain {cfg.model}",
    )
    return loop.run().to_dict()


def obtain_model(cfg: PretrainConfig, splits: Splits, device: torch.device, state_path: Path | None,
                 epochs: int) -> tuple[nn.Module, str, dict[str, Any] | None]:
    """Release weights where they exist (and cfg.weights allows), else training from scratch.

    Returns (model, where it came from, the training summary or None).
    """
    if cfg.model.startswith("robustbench:"):
        name, threat = parse_model_spec(cfg.model)
        model = load_robustbench_model(name, cfg.dataset, default_model_dir(), threat, download=cfg.download)
        return model, f"RobustBench model zoo ({threat})", None
    model = create_model(cfg.model, splits.info)
    use_release = cfg.weights == "pretrained" or (cfg.weights == "auto" and has_pretrained(cfg.dataset, cfg.model))
    if use_release:
        try:
            load_pretrained(model, cfg.dataset, cfg.model)
            return model, "release weights (chenyaofo/pytorch-cifar-models)", None
        except DeepPatchError:
            if not cfg.train_if_missing:
                raise
            log.warning("release weights unavailable; training %s from scratch (--train-if-missing)", cfg.model)
    return model, "scratch", train_from_scratch(model, splits, cfg, device, state_path, epochs)


def run_pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Load or train the model, evaluate clean + blur, write checkpoint and metrics JSON."""
    if cfg.weights not in WEIGHTS_CHOICES:
        raise unknown_choice("--weights", cfg.weights, WEIGHTS_CHOICES)
    check_model_name(cfg.model)  # unknown names fail before anything is read or written
    get_dataset_source(cfg.dataset)
    device = resolve_device(cfg.device, cfg.gpu)
    out = ensure_writable_dir(run_dir(cfg.output_dir, cfg.dataset, cfg.model))
    family = get_perturbation(cfg.noise_type)
    seed_everything(cfg.seed)
    t0 = time.perf_counter()
    splits = load_splits(cfg.dataset, cfg.data_dir, download=cfg.download, val_fraction=cfg.val_fraction,
                         split_seed=cfg.split_seed)
    ckpt = pretrained_path(cfg.output_dir, cfg.dataset, cfg.model)
    state_path = out / "pretrain.state.pt"
    epochs = cfg.epochs if cfg.epochs is not None else default_epochs(cfg.dataset)
    if cfg.resume and ckpt.is_file() and not state_path.is_file():
        model = load_model(ckpt, expect_arch=cfg.model, expect_dataset=cfg.dataset).model
        source, training = "existing checkpoint", None
    else:
        model, source, training = obtain_model(cfg, splits, device, state_path, epochs)

    model = model.to(device).eval()
    report = perturbation_report(model, splits.test, family, batch_size=cfg.eval_batch_size, device=device,
                                 desc="test")
    val_acc = accuracy(model, splits.val, batch_size=cfg.eval_batch_size, device=device)
    metrics = {
        "stage": "pretrain", "model": cfg.model, "dataset": cfg.dataset, "source": source,
        "test": report, "val_clean": val_acc, "n_test": len(splits.test), "n_val": len(splits.val),
        "n_train": len(splits.train), "training": training, "config": asdict(cfg), "device": str(device),
        "wall_time_s": time.perf_counter() - t0, "versions": environment_versions(),
    }
    save_model(ckpt, model, arch=cfg.model, info=splits.info, kind=checkpoint_kind(cfg.model),
               extra=checkpoint_extra(cfg.model, cfg.dataset),
               meta={"stage": "pretrain", "source": source, "test": report, "seed": cfg.seed})
    state_path.unlink(missing_ok=True)  # finished: the checkpoint above supersedes the training state
    atomic_write_json(metrics, out / "pretrain_metrics.json")
    metrics["checkpoint"] = str(ckpt)
    return metrics


def checkpoint_kind(model: str) -> str:
    return "robustbench" if model.startswith("robustbench:") else "plain"


def checkpoint_extra(model: str, dataset: str) -> dict[str, Any]:
    """What a checkpoint of a model under maintenance needs to rebuild it."""
    if not model.startswith("robustbench:"):
        return {}

    name, threat = parse_model_spec(model)
    return robustbench_extra(name, dataset, threat)


def default_epochs(dataset: str) -> int:
    return int(get_dataset_source(dataset).default_epochs)
