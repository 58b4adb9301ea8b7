"""Pieces that DeepPatch and the baseline correctors (``baselines/*.py``) share, so no corrector
copies another.

* `maintenance_batches`, `perturbed_val`, `append_validator`, `train_model`: the maintenance
  stream, the fixed perturbed validation sets, the reference's selection rule (clean + every
  perturbed val image) and the shared training loop bound to a task (device, seed, resume).

* `SGDParams` / `FinetuneParams` / `SelectionParams`: the SGD hyperparameters every peer of the
  reference shares (docs/deeppatch.md, The reference's defaults: lr 0.01, momentum 0.9, weight decay 5e-4, batch 256,
  CosineAnnealingLR(T_max=200) per epoch; 40 epochs for the selection baselines). Baselines
  subclass them and add their own fields.
* `perturbed_pool`: ONE fixed perturbed copy of the training data, drawn once from a seeded
  generator. Selection baselines (DeepGini, RobOT, Apricot) score and train on the very same images;
  the reference re-augmented a selected sample when it was used (reference bug 21).
* `fixed_batches`: seeded, shuffled batches of fixed data (no re-perturbation).
* `fine_tune_all`: every parameter trainable, the shared training loop, best epoch on append-val;
  `fine_tune`: the whole fine-tuning repair (copy, data, stream, loop, record) that finetune,
  AugMix, adversarial training and SENSEI differ from only in their step, batches or selection;
  `Selection` + `retrain_on_selection`: fine-tune on exactly the selected pool images.
* `EpochGenerator`: a generator reseeded at the start of every epoch, for randomness inside a
  training step (PGD starts, AugMix chains), so a resumed run draws the same numbers.
* `training_details`, `diagnostic`: what a repair records beside its model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from deeppatch.corrector import Repaired, RepairTask
from deeppatch.data import TensorSplit, to_float
from deeppatch.errors import DeepPatchError
from deeppatch.evaluation import accuracy
from deeppatch.results import SuiteRow
from deeppatch.seeding import derive_seed, make_generator
from deeppatch.training import Batch, BatchSource, OptimConfig, StepFn, TrainLoop, TrainResult, cross_entropy_step

# --------------------------------------------------------------------------------------------
# the maintenance stream, validation and the training loop, bound to a task


def maintenance_batches(task: RepairTask, data: TensorSplit, batch_size: int, *, p_clean: float = 0.5,
                        purpose: str = "maintenance") -> BatchSource:
    """Per epoch: shuffled batches, each image clean with probability `p_clean`, else perturbed at a
    uniformly drawn condition of the task's family (the reference's ``random`` mode), all seeded."""
    family = task.perturbation

    def batches(epoch: int):
        order = make_generator(task.seed, purpose, "order", epoch)
        noise = make_generator(task.seed, purpose, "noise", epoch)
        for x, y in data.batches(batch_size, device=task.device, shuffle=True, generator=order):
            if p_clean < 1.0:
                x, _ = family.random_mix(x, noise, p_clean)
            yield x, y

    return batches


@dataclass
class PerturbedVal:
    """Fixed validation sets: clean val and each condition of the family (generated once)."""

    clean: TensorSplit
    perturbed: TensorSplit  # all conditions concatenated ("expand" mode)

    @property
    def append(self) -> TensorSplit:
        """Clean followed by every condition: the reference's ``append`` selection set."""
        return TensorSplit(torch.cat([to_float(self.clean.x), self.perturbed.x]),
                           torch.cat([self.clean.y, self.perturbed.y]))


def perturbed_val(task: RepairTask) -> PerturbedVal:
    val = task.splits.val.to(task.device)
    gen = make_generator(task.seed, "perturbed-val")
    return PerturbedVal(val, task.perturbation.expand(val, device=task.device, generator=gen))


def append_validator(task: RepairTask, pv: PerturbedVal | None = None) -> Callable[[nn.Module], float]:
    """Validation accuracy on clean + all perturbed val images (the reference's selection rule)."""
    data = (pv or perturbed_val(task)).append

    def validate(model: nn.Module) -> float:
        return accuracy(model, data, batch_size=task.eval_batch_size, device=task.device)

    return validate


def train_model(
    task: RepairTask, model: nn.Module, params: list[nn.Parameter], *, tag: str, epochs: int,
    batches: BatchSource, num_batches: int, optim: OptimConfig | None = None, step: StepFn = cross_entropy_step,
    validate: Callable[[nn.Module], float] | None = None, select: str = "auto",
    set_train_mode: Callable[[nn.Module], None] | None = None,
) -> TrainResult:
    """Run the shared training loop with the task's device, seed, checkpoints and resume."""
    loop = TrainLoop(
        model=model, params=params, batches=batches, num_batches=num_batches, epochs=epochs,
        optim=optim or OptimConfig(), device=task.device, step=step, validate=validate, select=select,
        checkpoint_path=task.workspace.state_path(tag), resume=task.workspace.resume, seed=task.seed, desc=tag,
        show_progress=task.show_progress, on_checkpoint=task.clock.save,
        **({"set_train_mode": set_train_mode} if set_train_mode is not None else {}),
    )
    return loop.run()


# --------------------------------------------------------------------------------------------
# the corrector base and hyperparameters


@dataclass
class SGDParams:
    """SGD over every parameter with the reference's settings for its peers (docs/deeppatch.md)."""

    epochs: int = field(default=20, metadata={"help": "training epochs (the budget's epochs override it)", "min": 0})
    batch_size: int = field(default=256, metadata={"help": "training batch size (the budget's overrides it)",
                                                   "min": 1})
    lr: float = field(default=0.01, metadata={"help": "SGD learning rate", "min": 0.0})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum", "min": 0.0, "max": 0.999})
    weight_decay: float = field(default=5e-4, metadata={"help": "SGD weight decay", "min": 0.0})

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise DeepPatchError(f"parameter 'lr' must be > 0, got {self.lr!r}")

    def optim(self, **overrides: Any) -> OptimConfig:
        return OptimConfig(lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay, **overrides)


@dataclass
class FinetuneParams(SGDParams):
    """`SGDParams` with the reference's per-epoch CosineAnnealingLR(T_max=200)."""

    t_max: int = field(default=200, metadata={
        "help": "CosineAnnealingLR T_max in epochs, stepped once per epoch (the reference's 200 keeps lr "
                "nearly constant over 20 epochs)", "min": 1})

    def optim(self, **overrides: Any) -> OptimConfig:
        return super().optim(**{"t_max": self.t_max, **overrides})


P_CLEAN_HELP = ("probability that a training image stays clean; otherwise it is perturbed at a uniformly drawn "
                "condition of the maintenance family (the reference's 'random' mode: 0.5)")


def p_clean_field(default: float = 0.5, help: str = P_CLEAN_HELP) -> Any:
    return field(default=default, metadata={"help": help, "min": 0.0, "max": 1.0})


RETRAIN_ON = ("selected", "train+selected")


@dataclass
class SelectionParams(FinetuneParams):
    """Fine-tuning on selected samples: 40 epochs (the reference's RETRAIN_EPOCHS for RobOT and DeepGini)."""

    epochs: int = field(default=40, metadata={"help": "training epochs (the budget's epochs override it)", "min": 0})
    p_clean: float = field(default=0.5, metadata={
        "help": "probability that a candidate stays clean in the fixed perturbed pool the selection scores "
                "(the reference's 'random' mode: 0.5)", "min": 0.0, "max": 1.0})
    retrain_on: str = field(default="selected", metadata={
        "help": "selected: fine-tune on the selected samples only (the DeepPatch reference); train+selected: "
                "on the clean training data plus the selected samples (how the RobOT paper retrains)",
        "choices": RETRAIN_ON})


# --------------------------------------------------------------------------------------------
# data


@dataclass
class PerturbedPool:
    """A fixed perturbed copy of training data: `x[i]` is generated from the clean seed `seeds[i]`."""

    x: torch.Tensor  # float [0, 1] images, the generated (perturbed or clean) version
    seeds: torch.Tensor  # float [0, 1] images, the clean originals
    y: torch.Tensor
    condition: torch.Tensor  # condition index of the family per image, -1 for clean

    def __len__(self) -> int:
        return len(self.y)

    @property
    def split(self) -> TensorSplit:
        return TensorSplit(self.x, self.y)

    def subset(self, index: torch.Tensor) -> PerturbedPool:
        index = index.to(self.x.device)
        return PerturbedPool(self.x[index], self.seeds[index], self.y[index.to(self.y.device)],
                             self.condition[index.to(self.condition.device)])


def perturbed_pool(task: RepairTask, data: TensorSplit, p_clean: float, purpose: str,
                   batch_size: int = 1024) -> PerturbedPool:
    """Each image clean with probability `p_clean`, else perturbed at a uniform condition; drawn once."""
    gen = make_generator(task.seed, purpose, "pool")
    xs, seeds, conds = [], [], []
    for start in range(0, len(data), batch_size):
        xb = to_float(data.x[start:start + batch_size].to(task.device))
        if p_clean < 1.0:
            xp, cond = task.perturbation.random_mix(xb, gen, p_clean)
        else:
            xp, cond = xb.clone(), torch.full((len(xb),), -1, dtype=torch.long, device=xb.device)
        xs.append(xp)
        seeds.append(xb)
        conds.append(cond)
    empty = torch.empty(0, *data.x.shape[1:], device=task.device)
    return PerturbedPool(torch.cat(xs) if xs else empty, torch.cat(seeds) if seeds else empty,
                         data.y.to(task.device), torch.cat(conds) if conds else torch.empty(0, dtype=torch.long))


def fixed_batches(task: RepairTask, split: TensorSplit, batch_size: int, purpose: str) -> tuple[BatchSource, int]:
    """Shuffled batches of fixed images, a new seeded order every epoch (no re-perturbation)."""

    def batches(epoch: int) -> Iterator[Batch]:
        order = make_generator(task.seed, purpose, "order", epoch)
        yield from split.batches(batch_size, device=task.device, shuffle=True, generator=order)

    return batches, split.num_batches(batch_size)


def with_clean_train(task: RepairTask, selected: TensorSplit) -> TensorSplit:
    """The clean training data followed by `selected` (how RobOT's paper retrains; float images)."""
    train = task.train_data()
    return TensorSplit(torch.cat([to_float(train.x), to_float(selected.x)]), torch.cat([train.y, selected.y]))


@dataclass
class Selection:
    """Which candidates of a fixed pool a selection baseline trains on, and their scores."""

    pool: PerturbedPool
    scores: torch.Tensor  # one per pool image
    index: torch.Tensor  # selected positions in the pool, in selection order

    @property
    def selected(self) -> TensorSplit:
        return self.pool.subset(self.index).split


def retrain_on_selection(task: RepairTask, model: nn.Module, selection: Selection, p: SelectionParams,
                         tag: str) -> Repaired:
    """Fine-tune every parameter of `model` on exactly the selected images (plus clean train if asked)."""
    data = selection.selected
    if p.retrain_on == "train+selected":
        data = with_clean_train(task, data)
    batches, _ = fixed_batches(task, data, task.batch_size(p.batch_size), tag)
    return fine_tune(task, p, tag=tag, model=model, data=data, batches=batches)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits of `model` in eval mode for float images `x` (fp32, on x's device)."""
    model.eval()
    outs = [model(x[i:i + batch_size]).float() for i in range(0, len(x), batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


# --------------------------------------------------------------------------------------------
# training


class EpochGenerator:
    """A generator for randomness inside training steps, reseeded from (seed, purpose, epoch).

    `wrap(batches)` returns a batch source that reseeds it when an epoch starts, so an epoch's draws
    do not depend on what earlier epochs drew (and resuming after epoch k reproduces them).
    """

    def __init__(self, seed: int, purpose: str, device: torch.device) -> None:
        self.seed, self.purpose = seed, purpose
        self.generator = torch.Generator(device=device)

    def wrap(self, batches: BatchSource) -> BatchSource:
        def reseeding(epoch: int) -> Iterator[Batch]:
            self.generator.manual_seed(derive_seed(self.seed, self.purpose, "step", epoch))
            yield from batches(epoch)

        return reseeding


def fine_tune_all(
    task: RepairTask, model: nn.Module, *, tag: str, epochs: int, batches: BatchSource, num_batches: int,
    optim: OptimConfig, step: StepFn = cross_entropy_step, validate: Callable[[nn.Module], float] | None = None,
    select: str = "best",
) -> TrainResult:
    """Train every parameter of `model` (in place); best epoch on append-val unless `validate` is given."""
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    if validate is None and select == "best":
        validate = append_validator(task)
    return train_model(task, model, params, tag=tag, epochs=epochs, batches=batches, num_batches=num_batches,
                       optim=optim, step=step, validate=validate, select=select)


def fine_tune(
    task: RepairTask, p: SGDParams, *, tag: str, model: nn.Module | None = None,
    data: TensorSplit | None = None, batches: BatchSource | None = None, step: StepFn = cross_entropy_step,
    optim: OptimConfig | None = None, validate: Callable[[nn.Module], float] | None = None, select: str = "best",
    diagnostics: Callable[[], list[SuiteRow]] | None = None, **details: Any,
) -> Repaired:
    """The fine-tuning repair every fine-tuning baseline shares: train a copy of the model (or
    `model`) on `data` (default: the task's training data) from `batches` (default: the
    maintenance stream with ``p.p_clean``), `step` as the loss, best epoch on append-val."""
    model = task.copy_model() if model is None else model
    data = task.train_data() if data is None else data
    batch_size = task.batch_size(p.batch_size)
    if batches is None:
        batches = maintenance_batches(task, data, batch_size, p_clean=getattr(p, "p_clean", 0.5), purpose=tag)
    epochs = task.epochs(p.epochs)
    result = fine_tune_all(task, model, tag=tag, epochs=epochs, batches=batches,
                           num_batches=data.num_batches(batch_size), optim=optim or p.optim(), step=step,
                           validate=validate, select=select)
    return Repaired(model, epochs=result.epochs_run + result.resumed_from,
                    details=training_details(result, train_size=len(data), **details),
                    diagnostics=diagnostics() if diagnostics is not None else [])


# --------------------------------------------------------------------------------------------
# records


def training_details(result: TrainResult | None, **details: Any) -> dict[str, Any]:
    """The cost record's details: the training loop's selection outcome plus the corrector's facts."""
    if result is None:
        return details
    return {"kept": result.kept, "best_epoch": result.best_epoch, "best_val": result.best_score,
            "start_val": result.start_score, **details}


def diagnostic(corrector: str, what: str, value: float, n: int, metric: str = "count", **settings: Any) -> SuiteRow:
    """One diagnostics row, e.g. ("deepgini", "selected", 490, 4900)."""
    return SuiteRow(suite="diagnostics", condition=f"{corrector}/{what}", value=float(value), n=int(n),
                    group=corrector, metric=metric, source="repair", settings=dict(settings))
