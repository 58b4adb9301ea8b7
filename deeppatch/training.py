"""The one training loop every stage and corrector shares.

It owns: the device and (on CUDA) bf16 autocast, channels_last, the SGD optimiser and schedule,
a seeded data order per epoch, a progress bar, a checkpoint after every epoch, resuming, and
best-epoch selection on a validation score. Callers supply what differs: which parameters learn,
how batches are made (clean, perturbed, adversarial, augmented) and the loss of one batch.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deeppatch.errors import DeepPatchError, unknown_choice
from deeppatch.progress import progress
from deeppatch.seeding import derive_seed
from deeppatch.storage import atomic_torch_save, safe_torch_load

log = logging.getLogger(__name__)

STATE_FORMAT = "deeppatch.train-state/1"
SCHEDULES = ("cosine", "constant", "cosine-steps")

Batch = tuple[torch.Tensor, torch.Tensor]
BatchSource = Callable[[int], Iterable[Batch]]
StepFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
ValidateFn = Callable[[nn.Module], float]


@dataclass(frozen=True)
class OptimConfig:
    """SGD settings. The reference's defaults: lr 0.01, momentum 0.9, wd 5e-4, cosine T_max 200.

    `schedule`: "cosine" steps CosineAnnealingLR(T_max = t_max or epochs) once per epoch;
    "cosine-steps" anneals per batch down to `eta_min` (AugMix); "constant" keeps lr.
    """

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "cosine"
    t_max: int | None = None
    eta_min: float = 0.0

    def validate(self) -> None:
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise DeepPatchError(f"learning rate must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise DeepPatchError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise DeepPatchError(f"weight decay must be >= 0, got {self.weight_decay}")
        if self.schedule not in SCHEDULES:
            raise unknown_choice("schedule", self.schedule, SCHEDULES)
        if self.nesterov and self.momentum == 0:
            raise DeepPatchError("nesterov needs momentum > 0")


@dataclass
class TrainResult:
    epochs_run: int
    best_epoch: int | None  # 1-based; None when no epoch beat the start
    best_score: float | None
    start_score: float | None
    kept: str  # "best", "last" or "last (no epoch beat the start)"
    history: list[dict[str, float]] = field(default_factory=list)
    wall_time_s: float = 0.0
    resumed_from: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cross_entropy_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def autocast_context(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA; a no-op context on the CPU (fp32 there)."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return torch.autocast(device_type="cpu", enabled=False)


@dataclass
class TrainLoop:
    """Configure once, then `run()`. See the module docstring for who owns what."""

    model: nn.Module
    params: list[nn.Parameter]
    batches: BatchSource
    num_batches: int
    epochs: int
    optim: OptimConfig = field(default_factory=OptimConfig)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    step: StepFn = cross_entropy_step
    validate: ValidateFn | None = None
    select: str = "auto"  # "best" on `validate`, "last", or "auto": best when `validate` is given, else last
    compare_to_start: bool = True  # score the starting model too (the reference's rule)
    checkpoint_path: Path | None = None
    resume: bool = False
    seed: int = 0
    desc: str = "train"
    set_train_mode: Callable[[nn.Module], None] = field(default=lambda m: m.train())
    amp: bool = True
    channels_last: bool = True
    show_progress: bool | None = None
    on_checkpoint: Callable[[], None] | None = None  # called after each epoch's checkpoint is written

    def __post_init__(self) -> None:
        if self.select == "auto":
            self.select = "best" if self.validate is not None else "last"

    def _check(self) -> None:
        self.optim.validate()
        if self.epochs < 0:
            raise DeepPatchError(f"epochs must be >= 0, got {self.epochs}")
        if self.select not in ("best", "last"):
            raise unknown_choice("selection rule", self.select, ("auto", "best", "last"))
        if self.select == "best" and self.validate is None:
            raise DeepPatchError("best-epoch selection needs a validation function")
        if not self.params:
            raise DeepPatchError("nothing to train: no trainable parameters")

    def _make_optimizer(self) -> tuple[torch.optim.Optimizer, Any]:
        o = self.optim
        opt = torch.optim.SGD(self.params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                              nesterov=o.nesterov)
        if o.schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=o.t_max or max(self.epochs, 1),
                                                               eta_min=o.eta_min)
        elif o.schedule == "cosine-steps":
            total = max(self.epochs * self.num_batches, 1)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=o.eta_min)
        else:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        return opt, sched

    def _score(self) -> float:
        assert self.validate is not None
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():  # not inference_mode: a validator may re-enable grad (PGD on val)
            score = float(self.validate(self.model))
        self.model.train(was_training)
        return score

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def run(self) -> TrainResult:
        self._check()
        t0 = time.perf_counter()
        model = self.model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        opt, sched = self._make_optimizer()
        state = self._load_state() if self.resume else None
        history: list[dict[str, float]] = []
        start_epoch, best_score, best_state, best_epoch, start_score = 0, None, None, None, None
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start_epoch = int(state["epoch"])
            history = list(state["history"])
            best_score, best_epoch, start_score = state["best_score"], state["best_epoch"], state["start_score"]
            best_state = state.get("best_model")
            log.info("%s: resuming after epoch %d of %d", self.desc, start_epoch, self.epochs)
        elif self.select == "best" and self.compare_to_start:
            start_score = self._score()
            log.info("%s: validation score before training %.4f", self.desc, start_score)

        for epoch in range(start_epoch, self.epochs):
            torch.manual_seed(derive_seed(self.seed, "train-loop", epoch))  # dropout etc.
            self.set_train_mode(model)
            stats = self._train_epoch(model, opt, sched, epoch)
            if self.optim.schedule == "cosine" or self.optim.schedule == "constant":
                sched.step()
            record = {"epoch": epoch + 1, **stats, "lr": opt.param_groups[0]["lr"]}
            if self.validate is not None:
                score = self._score()
                record["val"] = score
                beats_start = start_score is None or score > start_score
                if beats_start and (best_score is None or score > best_score):
                    best_score, best_epoch, best_state = score, epoch + 1, self._snapshot()
            history.append(record)
            log.info("%s: epoch %d/%d %s", self.desc, epoch + 1, self.epochs,
                     " ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"))
            self._save_state(model, opt, sched, epoch + 1, history, best_score, best_epoch, best_state,
                             start_score)
            if self.on_checkpoint is not None and self.checkpoint_path is not None:
                self.on_checkpoint()

        kept = "last"
        if self.select == "best":
            if best_state is not None:
                model.load_state_dict(best_state)
                kept = "best"
            else:
                kept = "last (no epoch beat the start)" if self.epochs else "start (0 epochs)"
                if self.epochs:
                    log.warning("%s: no epoch beat the starting score %.4f; keeping the last epoch",
                                self.desc, start_score if start_score is not None else float("nan"))
        if self.channels_last:
            model.to(memory_format=torch.contiguous_format)
        model.eval()
        return TrainResult(
            epochs_run=self.epochs - start_epoch, best_epoch=best_epoch, best_score=best_score,
            start_score=start_score, kept=kept, history=history, wall_time_s=time.perf_counter() - t0,
            resumed_from=start_epoch,
        )

    def _train_epoch(self, model: nn.Module, opt: torch.optim.Optimizer, sched: Any, epoch: int) -> dict[str, float]:
        total_loss, seen, t0 = 0.0, 0, time.perf_counter()
        bar = progress(total=self.num_batches, desc=f"{self.desc} {epoch + 1}/{self.epochs}",
                       unit="batch", enable=self.show_progress)
        for x, y in self.batches(epoch):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_context(self.device, self.amp):
                loss = self.step(model, x, y)
            if not torch.isfinite(loss):
                bar.close()
                raise DeepPatchError(f"{self.desc}: loss became {loss.item()} in epoch {epoch + 1}; "
                                     "lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if self.optim.schedule == "cosine-steps":
                sched.step()
            total_loss += loss.detach().item() * len(y)
            seen += len(y)
            bar.update(1)
            bar.set_postfix(loss=f"{total_loss / max(seen, 1):.4f}", refresh=False)
        bar.close()
        dt = time.perf_counter() - t0
        return {"loss": total_loss / max(seen, 1), "samples": float(seen), "seconds": dt,
                "images_per_s": seen / dt if dt > 0 else 0.0}

    def _save_state(self, model, opt, sched, epoch, history, best_score, best_epoch, best_state, start_score) -> None:
        if self.checkpoint_path is None:
            return
        atomic_torch_save({
            "format": STATE_FORMAT, "desc": self.desc, "epoch": epoch, "epochs": self.epochs,
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "history": history, "best_score": best_score, "best_epoch": best_epoch, "best_model": best_state,
            "start_score": start_score,
        }, self.checkpoint_path)

    def _load_state(self) -> dict[str, Any] | None:
        if self.checkpoint_path is None or not Path(self.checkpoint_path).is_file():
            return None
        state = safe_torch_load(self.checkpoint_path)
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise DeepPatchError(f"{self.checkpoint_path} is not a training-state checkpoint")
        if int(state["epochs"]) != self.epochs:
            raise DeepPatchError(
                f"{self.checkpoint_path} was written for {state['epochs']} epochs, this run asks for "
                f"{self.epochs}; use the same -e or delete the file to start over"
            )
        if int(state["epoch"]) > self.epochs:
            raise DeepPatchError(f"{self.checkpoint_path} is past epoch {self.epochs}")
        return state
