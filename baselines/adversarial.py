"""PGD adversarial training (Madry et al., ICLR 2018) and TRADES (Zhang et al., ICML 2019).

Fine-tunes every parameter of the model under maintenance (not training from scratch):

* loss "pgd" (Madry): cross-entropy on PGD-k examples that maximise the cross-entropy inside the
  eps-ball (uniform random start, k = 7 steps of eps/4 by default, Madry's CIFAR setting).
* loss "trades": CE(f(x), y) + beta * KL(p(x) || p(x')), the TRADES objective, with x' found by
  PGD on the same KL (the TRADES inner maximisation) and beta 6 (the TRADES CIFAR value). The
  starting point is the uniform random start of `deeppatch.attacks.pgd`; the TRADES code starts
  at x + 0.001 * N(0, I) instead.

Adversarial examples are generated with the model in eval mode (BatchNorm statistics and dropout
fixed, as the TRADES code does); the update runs in train mode.

Default eps: 8/255 (Linf) or 0.5 (L2) for colour images, the CIFAR convention; 0.1 (Linf) or 1.5
(L2) for grey images (MNIST-like 28x28 digits and clothes, where 8/255 is far below a
perceptible change and 0.3 is the MNIST challenge's large budget). Override with `eps`.

Model selection (`select`): "robust" (default) keeps the epoch with the best mean of clean val
accuracy and PGD val accuracy (PGD-`val_steps` at the training eps, fixed random starts), the
early stopping of Rice et al. (ICML 2020) that adversarial training needs; "append" uses the
clean + all perturbed val accuracy like the other baselines; "last" keeps the last epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from deeppatch.attacks import NORMS, pgd
from deeppatch.corrector import Corrector, Repaired, RepairTask
from deeppatch.errors import DeepPatchError
from deeppatch.evaluation import accuracy
from deeppatch.repair_tools import (
    EpochGenerator,
    FinetuneParams,
    append_validator,
    fine_tune,
    maintenance_batches,
    p_clean_field,
)
from deeppatch.seeding import make_generator

LOSSES = ("pgd", "trades")
SELECTIONS = ("robust", "append", "last")
DEFAULT_EPS = {("Linf", 3): 8 / 255, ("L2", 3): 0.5, ("Linf", 1): 0.1, ("L2", 1): 1.5}


@dataclass
class Params(FinetuneParams):
    loss: str = field(default="pgd", metadata={"help": "pgd (Madry: CE on PGD examples) or trades (CE + beta KL)",
                                              "choices": LOSSES})
    eps: float | None = field(default=None, metadata={
        "help": "perturbation radius in [0, 1] pixels; default 8/255 (Linf) / 0.5 (L2) for colour, "
                "0.1 (Linf) / 1.5 (L2) for grey images", "min": 0.0})
    step_size: float | None = field(default=None, metadata={"help": "PGD step size; default eps / 4", "min": 0.0})
    steps: int = field(default=7, metadata={"help": "PGD steps during training (Madry's CIFAR PGD-7)", "min": 1})
    norm: str = field(default="Linf", metadata={"help": "threat model of the ball", "choices": NORMS})
    beta: float = field(default=6.0, metadata={"help": "TRADES weight of the KL term", "min": 0.0})
    select: str = field(default="robust", metadata={
        "help": "epoch selection: robust (mean of clean and PGD val accuracy), append (clean + perturbed val), "
                "last", "choices": SELECTIONS})
    val_steps: int = field(default=10, metadata={"help": "PGD steps of the robust validation", "min": 1})
    p_clean: float = p_clean_field(1.0, "probability that a training image is clean rather than perturbed by the "
                                        "maintenance family before the attack (1.0: Madry's clean data)")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("eps", "step_size"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise DeepPatchError(f"parameter {name!r} must be > 0, got {value!r}")

    def radius(self, channels: int) -> float:
        return self.eps if self.eps is not None else DEFAULT_EPS[(self.norm, 3 if channels >= 3 else 1)]


def kl_clean_adv(logits_adv: torch.Tensor, p_clean: torch.Tensor) -> torch.Tensor:
    """KL(p_clean || softmax(logits_adv)) averaged over the batch (TRADES's robust term)."""
    return F.kl_div(F.log_softmax(logits_adv.float(), dim=1), p_clean.float(), reduction="batchmean")


class AdversarialStep:
    """One training step: attack in eval mode, then the Madry or TRADES loss in train mode."""

    def __init__(self, p: Params, eps: float, alpha: float, gen: EpochGenerator) -> None:
        self.p, self.eps, self.alpha, self.gen = p, eps, alpha, gen

    def attack(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, loss_fn=None) -> torch.Tensor:
        return pgd(model, x, target, eps=self.eps, alpha=self.alpha, steps=self.p.steps, norm=self.p.norm,
                   generator=self.gen.generator, loss_fn=loss_fn)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        was_training = model.training
        model.eval()
        if self.p.loss == "pgd":
            x_adv = self.attack(model, x, y)
            model.train(was_training)
            return F.cross_entropy(model(x_adv), y)
        with torch.no_grad():
            p_fixed = F.softmax(model(x).float(), dim=1)
        x_adv = self.attack(model, x, p_fixed, loss_fn=kl_clean_adv)
        model.train(was_training)
        logits = model(x)
        p_clean = F.softmax(logits.float(), dim=1)
        return F.cross_entropy(logits, y) + self.p.beta * kl_clean_adv(model(x_adv), p_clean)


def robust_validator(task: RepairTask, eps: float, alpha: float, p: Params):
    """Mean of clean val accuracy and PGD val accuracy (fixed random starts: same attack every epoch)."""
    val = task.splits.val.to(task.device)

    def validate(model: nn.Module) -> float:
        with torch.enable_grad():  # the loop validates under no_grad
            gen = make_generator(task.seed, "adversarial", "val-start", device=task.device)
            correct, n = 0, 0
            for x, y in val.batches(task.eval_batch_size, device=task.device):
                x_adv = pgd(model, x, y, eps=eps, alpha=alpha, steps=p.val_steps, norm=p.norm, generator=gen)
                with torch.no_grad():
                    correct += (model(x_adv).argmax(1) == y).sum().item()
                n += len(y)
        robust = 100.0 * correct / max(n, 1)
        clean = accuracy(model, val, batch_size=task.eval_batch_size, device=task.device)
        return (clean + robust) / 2

    return validate


class AdversarialTraining(Corrector):
    """Fine-tune every parameter on PGD (Madry) or TRADES adversarial examples."""

    name = "adversarial"
    description = "PGD adversarial training (Madry et al. 2018) or TRADES (Zhang et al. 2019), fine-tuning"
    paper = "Madry et al., ICLR 2018, doi 10.48550/arXiv.1706.06083; Zhang et al., ICML 2019 (TRADES)"
    Params = Params
    test_params = {"epochs": 1, "steps": 2, "val_steps": 2}

    def repair(self, task: RepairTask) -> Repaired:
        p = self.params
        eps = p.radius(task.splits.info.in_channels)
        alpha = p.step_size if p.step_size is not None else eps / 4
        data = task.train_data()
        gen = EpochGenerator(task.seed, "adversarial", task.device)
        batches = maintenance_batches(task, data, task.batch_size(p.batch_size), p_clean=p.p_clean,
                                      purpose="adversarial")
        validate = {"robust": robust_validator(task, eps, alpha, p), "append": append_validator(task),
                    "last": None}[p.select]
        return fine_tune(task, p, tag="adversarial", data=data, batches=gen.wrap(batches),
                         step=AdversarialStep(p, eps, alpha, gen), validate=validate,
                         select="last" if p.select == "last" else "best", loss=p.loss, norm=p.norm, eps=eps,
                         step_size=alpha, steps=p.steps, select_rule=p.select)
